-- Holds: credits set aside for a job whose cost is known only at its end
-- (public.reserve_credits, commit_hold, release_hold in the spend
-- migration). A hold is not a ledger movement: the balance stays, what is
-- *available* to new spends and holds shrinks. A hold past its expiry no
-- longer counts, computed whenever it is read (no scheduler needed).
-- Held credits are always covered by the balance: when a period reset, a
-- downgrade or a clawback leaves the balance below what is held, the
-- newest holds shrink to fit (tally.fit_holds). And credit_balances, the
-- view every client reads, with its held and available credits.

-- Domains, not table CHECKs, as for accounts (20261129090200): their checks
-- stay compiled instead of being read back for every statement.
create domain tally.positive_credits as integer check (value > 0);

create domain tally.hold_status as text
  check (value in ('held', 'committed', 'released', 'expired'));

create table tally.holds (
  user_id uuid not null references tally.accounts (user_id),
  idempotency_key text not null,
  -- Credits set aside now: what was asked, less what a shrink took.
  amount tally.credit_count not null,
  requested tally.positive_credits not null,
  expires_at timestamptz not null,
  status tally.hold_status not null,
  reason text,
  reserve_result jsonb,
  finish_result jsonb,
  created_at timestamptz not null default now(),
  finished_at timestamptz,
  primary key (user_id, idempotency_key)
);

create index holds_active_idx on tally.holds (user_id, expires_at) where status = 'held';

alter table tally.holds enable row level security;

revoke all on table tally.holds from public, anon, authenticated;
grant select on table tally.holds to authenticated, service_role;

create policy "Users can read their own holds"
  on tally.holds for select
  to authenticated
  using (user_id = (select auth.uid()));

create function tally.is_live_hold(p_hold tally.holds) returns boolean
language sql
stable
as $$
  select p_hold.status = 'held' and p_hold.expires_at > now();
$$;

revoke all on function tally.is_live_hold(tally.holds) from public, anon, authenticated;

-- Credits held by a user's live holds.
create function tally.held_credits(p_user_id uuid) returns integer
language plpgsql
stable
as $$
begin
  return (select coalesce(sum(h.amount), 0)::integer
    from tally.holds h
   where h.user_id = p_user_id and h.status = 'held' and h.expires_at > now());
end;
$$;

revoke all on function tally.held_credits(uuid) from public, anon, authenticated;

-- Shrink the newest live holds until what is held fits in p_total.
-- The caller holds the account lock. Returns what stays held.
create function tally.fit_holds(p_user_id uuid, p_total integer) returns integer
language plpgsql
as $$
declare
  v_hold tally.holds;
  v_excess integer := tally.held_credits(p_user_id) - p_total;
  v_cut integer;
begin
  for v_hold in
    select * from tally.holds h
     where h.user_id = p_user_id and h.status = 'held' and h.expires_at > now()
     order by h.created_at desc, h.idempotency_key desc
  loop
    exit when v_excess <= 0;
    v_cut := least(v_hold.amount, v_excess);
    update tally.holds h set amount = h.amount - v_cut
     where h.user_id = p_user_id and h.idempotency_key = v_hold.idempotency_key;
    v_excess := v_excess - v_cut;
  end loop;
  return tally.held_credits(p_user_id);
end;
$$;

revoke all on function tally.fit_holds(uuid, integer) from public, anon, authenticated;

create view public.credit_balances
  with (security_invoker = true)
as
select a.user_id,
       a.plan_credits,
       a.addon_credits,
       a.plan_credits + a.addon_credits as total_credits,
       (select least(coalesce(sum(h.amount), 0), a.plan_credits + a.addon_credits)::integer
          from tally.holds h
         where h.user_id = a.user_id and h.status = 'held' and h.expires_at > now())
         as held_credits,
       (select a.plan_credits + a.addon_credits
               - least(coalesce(sum(h.amount), 0), a.plan_credits + a.addon_credits)::integer
          from tally.holds h
         where h.user_id = a.user_id and h.status = 'held' and h.expires_at > now())
         as available_credits,
       a.plan_key,
       a.subscription_status,
       a.current_period_start,
       a.current_period_end,
       a.cancel_at_period_end,
       a.updated_at
  from tally.accounts a;

comment on view public.credit_balances is
  'One row per user: plan and add-on credits, what live holds set aside, what is available, and their subscription. Each user sees only their own row.';

revoke all on table public.credit_balances from public, anon, authenticated;
grant select on table public.credit_balances to authenticated, service_role;
