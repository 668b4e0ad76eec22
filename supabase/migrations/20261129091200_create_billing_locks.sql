-- Leases that serialise one user's plan checkouts across sidecar machines.
-- A plan checkout lists the user's open Checkout Sessions, expires or reuses
-- them and creates one: two machines doing that at once for one user could
-- each create a session, and the user could pay both (two subscriptions).
-- The sidecar holds the user's lease for the whole sequence; a lease expires
-- by itself (ttl_seconds), so a machine that dies holding one blocks nobody
-- for long. Acquire and release are each one short statement: no
-- transaction stays open across the calls to Stripe.

create table tally.billing_locks (
  user_id uuid primary key,
  holder text not null,
  expires_at timestamptz not null
);

comment on table tally.billing_locks is
  'One lease per user for billing sequences that must not overlap (plan checkouts).';

alter table tally.billing_locks enable row level security;

revoke all on table tally.billing_locks from public, anon, authenticated;

-- True when `holder` now holds the user's lease: it was free, expired, or
-- already this holder's (then it is extended).
create function public.acquire_billing_lock(user_id uuid, holder text, ttl_seconds integer default 30)
returns boolean
language plpgsql
security definer
set search_path = ''
as $$
begin
  if acquire_billing_lock.user_id is null then
    raise exception using errcode = '22023', message = 'user_id is required';
  end if;
  if acquire_billing_lock.holder is null or length(acquire_billing_lock.holder) not between 1 and 200 then
    raise exception using errcode = '22023', message = 'holder is required (1 to 200 characters)';
  end if;
  if acquire_billing_lock.ttl_seconds is null or acquire_billing_lock.ttl_seconds not between 1 and 600 then
    raise exception using errcode = '22023', message = 'ttl_seconds must be between 1 and 600';
  end if;
  insert into tally.billing_locks as l (user_id, holder, expires_at)
  values (acquire_billing_lock.user_id, acquire_billing_lock.holder,
          clock_timestamp() + make_interval(secs => acquire_billing_lock.ttl_seconds))
  on conflict on constraint billing_locks_pkey do update
    set holder = excluded.holder, expires_at = excluded.expires_at
    where l.expires_at <= clock_timestamp() or l.holder = excluded.holder;
  return found;
end;
$$;

comment on function public.acquire_billing_lock(uuid, text, integer) is
  'Take (or extend) the user''s billing lease for holder; false while another holder has it.';

revoke all on function public.acquire_billing_lock(uuid, text, integer) from public, anon, authenticated;
grant execute on function public.acquire_billing_lock(uuid, text, integer) to service_role;

-- Gives the lease back if `holder` still has it; true when it did.
create function public.release_billing_lock(user_id uuid, holder text) returns boolean
language plpgsql
security definer
set search_path = ''
as $$
begin
  delete from tally.billing_locks l
   where l.user_id = release_billing_lock.user_id and l.holder = release_billing_lock.holder;
  return found;
end;
$$;

comment on function public.release_billing_lock(uuid, text) is
  'Release the user''s billing lease if holder still holds it.';

revoke all on function public.release_billing_lock(uuid, text) from public, anon, authenticated;
grant execute on function public.release_billing_lock(uuid, text) to service_role;
