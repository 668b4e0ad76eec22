-- Reserve, then commit or release: for jobs whose cost is known only at
-- the end. reserve_credits sets credits aside (PT402 when fewer are
-- available); commit_hold spends up to what is held (plan credits first,
-- as a spend) and frees the rest; release_hold frees it all. Each finishes
-- a hold once; a hold past its ttl no longer counts and cannot be
-- committed (PT410). Holds live in tally.holds (20261129090210).

-- What a hold call says of the hold itself, beside the balance parts.
create function tally.hold_details(p_key text, p_status text, p_held integer,
                                   p_expires_at timestamptz)
returns jsonb
language sql
stable  -- as jsonb_build_object is: an immutable body would not be inlined
as $$
  select jsonb_build_object(
    'idempotency_key', p_key,
    'status', p_status,
    'held', case when p_status = 'held' then p_held else 0 end,
    'expires_at', p_expires_at,
    'replayed', false);
$$;

revoke all on function tally.hold_details(text, text, integer, timestamptz)
  from public, anon, authenticated;

-- The result of a hold call: the hold and the balance parts after it.
create function tally.hold_result(p_hold tally.holds, p_status text) returns jsonb
language sql
stable
as $$
  select tally.balance_result(p_hold.user_id)
         || tally.hold_details(p_hold.idempotency_key, p_status, p_hold.amount,
                               p_hold.expires_at);
$$;

revoke all on function tally.hold_result(tally.holds, text) from public, anon, authenticated;

-- A change of what is available that moved no balance (a hold set or
-- freed): the app's balance events and the live balance, as for entries.
create function tally.after_hold_change(p_user_id uuid, p_available_before integer)
returns void
language plpgsql
as $$
declare
  v_account tally.accounts;
  v_held integer := tally.held_credits(p_user_id);
begin
  select * into v_account from tally.accounts where user_id = p_user_id;
  perform tally.emit_balance_events(v_account, v_held, p_available_before, null, 'hold');
  perform tally.broadcast_balance(v_account, v_held);
end;
$$;

revoke all on function tally.after_hold_change(uuid, integer) from public, anon, authenticated;

create function public.reserve_credits(
  user_id uuid, amount integer, idempotency_key text, ttl_seconds integer default 900,
  reason text default null
) returns jsonb
language plpgsql
security definer
set search_path = ''
set lock_timeout = '5s'
as $$
declare
  v_user_id uuid := reserve_credits.user_id;
  v_amount integer := reserve_credits.amount;
  v_key text := reserve_credits.idempotency_key;
  v_first tally.holds;
  v_account tally.accounts;
  v_held integer;
  v_available integer;
  v_expires_at timestamptz;
  v_result jsonb;
begin
  if v_amount is null or v_amount <= 0 then
    raise exception using errcode = '22023',
      message = format('amount must be a positive whole number of credits, got %s', v_amount);
  end if;
  if ttl_seconds is null or ttl_seconds not between 1 and 604800 then
    raise exception using errcode = '22023',
      message = 'ttl_seconds must be between 1 and 604800 (a week)';
  end if;
  v_expires_at := now() + make_interval(secs => ttl_seconds);
  perform tally.require_key(v_key);
  v_account := tally.lock_existing_account(v_user_id);

  select * into v_first from tally.holds h
   where h.user_id = v_user_id and h.idempotency_key = v_key;
  if found then
    -- The first result, whatever this call asks (as for spends).
    return v_first.reserve_result || jsonb_build_object('replayed', true);
  end if;
  v_held := tally.held_credits(v_user_id);
  v_available := tally.available_of(v_account.plan_credits + v_account.addon_credits, v_held);
  if v_available < v_amount then
    perform tally.raise_insufficient(v_account, v_amount, v_available);
  end if;
  -- The hold is written once, with its result: under the account lock, what
  -- is held after it is what was held plus it (it fits: it was available).
  v_result := tally.balance_parts(v_user_id, v_account.plan_credits, v_account.addon_credits,
                                  v_held + v_amount)
              || tally.hold_details(v_key, 'held', v_amount, v_expires_at);
  insert into tally.holds (user_id, idempotency_key, amount, requested, expires_at, status,
                           reason, reserve_result)
  values (v_user_id, v_key, v_amount, v_amount, v_expires_at, 'held', reserve_credits.reason,
          v_result);
  perform tally.after_hold_change(v_user_id, v_available);
  return v_result;
end;
$$;

comment on function public.reserve_credits(uuid, integer, text, integer, text) is
  'Set credits aside for a job (PT402 when fewer are available); commit or release it later.';

revoke all on function public.reserve_credits(uuid, integer, text, integer, text)
  from public, anon, authenticated;
grant execute on function public.reserve_credits(uuid, integer, text, integer, text) to service_role;

-- The hold of a user and key, locked with its account; PT404 when none.
create function tally.lock_hold(p_user_id uuid, p_key text) returns tally.holds
language plpgsql
as $$
declare
  v_hold tally.holds;
begin
  perform tally.require_key(p_key);
  perform tally.lock_existing_account(p_user_id);
  select * into v_hold from tally.holds h
   where h.user_id = p_user_id and h.idempotency_key = p_key
   for update;
  if not found then
    raise exception using errcode = 'PT404',
      message = format('no hold of user %s with idempotency key %s', p_user_id, p_key);
  end if;
  return v_hold;
end;
$$;

revoke all on function tally.lock_hold(uuid, text) from public, anon, authenticated;

-- Finish a hold: record its status and first result.
create function tally.finish_hold(p_hold tally.holds, p_status text, p_result jsonb)
returns jsonb
language sql
as $$
  update tally.holds h
     set status = p_status, amount = 0, finished_at = now(), finish_result = p_result
   where h.user_id = p_hold.user_id and h.idempotency_key = p_hold.idempotency_key
  returning h.finish_result;
$$;

revoke all on function tally.finish_hold(tally.holds, text, jsonb) from public, anon, authenticated;

create function public.commit_hold(user_id uuid, idempotency_key text,
                                   amount integer default null)
returns jsonb
language plpgsql
security definer
set search_path = ''
set lock_timeout = '5s'
as $$
declare
  v_hold tally.holds := tally.lock_hold(commit_hold.user_id, commit_hold.idempotency_key);
  v_amount integer;
  v_account tally.accounts;
  v_available_before integer;
  v_entry tally.ledger_entries;
  v_result jsonb;
begin
  if v_hold.status not in ('held', 'expired') then
    return v_hold.finish_result || jsonb_build_object('replayed', true);
  end if;
  if not tally.is_live_hold(v_hold) then
    raise exception using errcode = 'PT410',
      message = format('hold %s expired at %s: nothing was spent', v_hold.idempotency_key,
                       v_hold.expires_at),
      hint = 'reserve again, or spend with spend_credits';
  end if;
  if commit_hold.amount is not null and commit_hold.amount < 0 then
    raise exception using errcode = '22023', message = 'amount must be zero or more';
  end if;
  -- At most what is held; the rest is freed.
  v_amount := least(coalesce(commit_hold.amount, v_hold.amount), v_hold.amount);
  select * into v_account from tally.accounts a where a.user_id = v_hold.user_id;
  v_available_before := tally.available_credits(v_account);
  -- Free the hold first, then spend from what it freed.
  perform tally.finish_hold(v_hold, 'committed', null);
  if v_amount > 0 then
    v_entry := tally.draw_credits(v_account, v_amount, 'hold_commit', tally.cause(
      format('Spent %s of %s held credits%s', v_amount, v_hold.amount,
             coalesce(': ' || v_hold.reason, '')),
      p_spend_key => v_hold.idempotency_key, p_reason => v_hold.reason));
  else
    perform tally.after_hold_change(v_hold.user_id, v_available_before);
  end if;
  v_result := tally.hold_result(v_hold, 'committed')
              || jsonb_build_object('committed', v_amount, 'released', v_hold.amount - v_amount,
                                    'ledger_entry_id', v_entry.id);
  if v_amount > 0 then
    -- What was committed is a spend: public.reverse_spend gives it back (the
    -- app's job failed) under the hold's key, unless a spend has that key.
    insert into tally.spends (user_id, idempotency_key, amount, reason, from_plan, from_addon,
                              period_subscription_id, period_start, result)
    values (v_hold.user_id, v_hold.idempotency_key, v_amount, v_hold.reason,
            -v_entry.plan_delta, -v_entry.addon_delta, v_account.period_subscription_id,
            v_account.period_start, v_result)
    on conflict do nothing;
  end if;
  return tally.finish_hold(v_hold, 'committed', v_result);
end;
$$;

comment on function public.commit_hold(uuid, text, integer) is
  'Spend up to what a hold set aside (null: all of it) and free the rest, once; PT410 once expired.';

revoke all on function public.commit_hold(uuid, text, integer) from public, anon, authenticated;
grant execute on function public.commit_hold(uuid, text, integer) to service_role;

create function public.release_hold(user_id uuid, idempotency_key text) returns jsonb
language plpgsql
security definer
set search_path = ''
set lock_timeout = '5s'
as $$
declare
  v_hold tally.holds := tally.lock_hold(release_hold.user_id, release_hold.idempotency_key);
  v_account tally.accounts;
  v_available_before integer;
  v_result jsonb;
begin
  if v_hold.status <> 'held' then
    return v_hold.finish_result || jsonb_build_object('replayed', true);
  end if;
  select * into v_account from tally.accounts a where a.user_id = v_hold.user_id;
  v_available_before := tally.available_credits(v_account);
  perform tally.finish_hold(v_hold, 'released', null);
  if tally.is_live_hold(v_hold) then
    perform tally.after_hold_change(v_hold.user_id, v_available_before);
  end if;
  v_result := tally.hold_result(v_hold, 'released')
              || jsonb_build_object('released', case when tally.is_live_hold(v_hold)
                                                     then v_hold.amount else 0 end);
  return tally.finish_hold(v_hold, 'released', v_result);
end;
$$;

comment on function public.release_hold(uuid, text) is
  'Free everything a hold set aside, once.';

revoke all on function public.release_hold(uuid, text) from public, anon, authenticated;
grant execute on function public.release_hold(uuid, text) to service_role;

-- Housekeeping for the sidecar: mark holds past their expiry as expired
-- (they already stopped counting when they expired), at most max_holds.
create function public.expire_holds(max_holds integer default 500) returns integer
language plpgsql
security definer
set search_path = ''
set lock_timeout = '5s'
as $$
declare
  v_count integer;
  v_users uuid[];
begin
  with due as (
    select h.user_id, h.idempotency_key from tally.holds h
     where h.status = 'held' and h.expires_at <= now()
     order by h.expires_at
     limit greatest(1, least(coalesce(max_holds, 500), 5000))
     for update skip locked
  ), expired as (
    update tally.holds h
       set status = 'expired', finished_at = now(),
           finish_result = tally.balance_result(h.user_id) || jsonb_build_object(
             'idempotency_key', h.idempotency_key, 'status', 'expired', 'held', 0,
             'released', h.amount, 'expires_at', h.expires_at, 'replayed', false),
           amount = 0
      from due
     where h.user_id = due.user_id and h.idempotency_key = due.idempotency_key
    returning h.user_id
  )
  select count(*), coalesce(array_agg(distinct e.user_id), '{}') into v_count, v_users
    from expired e;
  -- An expired hold no longer counts: the browser hears of the credits it
  -- gave back (within the sidecar's housekeeping interval of the expiry).
  perform tally.broadcast_balance(a, tally.held_credits(a.user_id))
     from tally.accounts a
    where a.user_id = any(v_users);
  return v_count;
end;
$$;

comment on function public.expire_holds(integer) is
  'Mark expired holds as such (they stopped counting at expiry); returns how many.';

revoke all on function public.expire_holds(integer) from public, anon, authenticated;
grant execute on function public.expire_holds(integer) to service_role;
