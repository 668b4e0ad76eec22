-- Spending, holds and operator adjustments. Each call is one transaction
-- that locks the user's account row, so concurrent calls on one account
-- serialise: no lost update, no negative balance, no overbooked hold. A
-- spend or hold larger than the available credits (balance less live
-- holds) raises PT402 (PostgREST answers HTTP 402) and changes nothing.
-- Idempotency keys belong to their user: repeating a call with the same
-- user and key returns its first result and changes nothing.

create table tally.spends (
  user_id uuid not null,
  idempotency_key text not null,
  amount tally.positive_credits not null,
  from_plan integer,
  from_addon integer,
  -- The plan period the plan part came from: a reversal gives plan credits
  -- back only while that period is current.
  period_subscription_id text,
  period_start timestamptz,
  reason text,
  result jsonb,
  spent_at timestamptz not null default now(),
  reversed_at timestamptz,
  reversal_result jsonb,
  primary key (user_id, idempotency_key)
);

alter table tally.spends enable row level security;
revoke all on table tally.spends from public, anon, authenticated;

create table tally.adjustments (
  user_id uuid not null,
  idempotency_key text not null,
  amount integer not null check (amount <> 0),
  reason text not null,
  result jsonb,
  adjusted_at timestamptz not null default now(),
  primary key (user_id, idempotency_key)
);

alter table tally.adjustments enable row level security;
revoke all on table tally.adjustments from public, anon, authenticated;

create function tally.require_key(p_key text) returns void
language plpgsql
immutable
as $$
begin
  if p_key is null or btrim(p_key) = '' or length(p_key) > 255 then
    raise exception using errcode = '22023',
      message = 'idempotency_key is required (1 to 255 characters)';
  end if;
end;
$$;

revoke all on function tally.require_key(text) from public, anon, authenticated;

create function tally.require_user(p_user_id uuid) returns void
language plpgsql
immutable
as $$
begin
  if p_user_id is null then
    raise exception using errcode = '22023', message = 'user_id is required';
  end if;
end;
$$;

revoke all on function tally.require_user(uuid) from public, anon, authenticated;

-- Lock the account of a user or raise PT404 (PostgREST answers HTTP 404).
create function tally.lock_existing_account(p_user_id uuid) returns tally.accounts
language plpgsql
as $$
declare
  v_account tally.accounts;
begin
  perform tally.require_user(p_user_id);
  v_account := tally.lock_account(p_user_id);
  if v_account.user_id is null then
    raise exception using errcode = 'PT404', message = format('unknown user %s', p_user_id),
      detail = 'no credit account exists for this user id';
  end if;
  return v_account;
end;
$$;

revoke all on function tally.lock_existing_account(uuid) from public, anon, authenticated;

-- What a balance of p_total credits with p_held held leaves available
-- (public.credit_balances counts the same way).
create function tally.available_of(p_total integer, p_held integer) returns integer
language sql
immutable
as $$
  select p_total - least(p_held, p_total);
$$;

revoke all on function tally.available_of(integer, integer) from public, anon, authenticated;

-- Credits a spend or a new hold may use: the balance less live holds.
create function tally.available_credits(p_account tally.accounts) returns integer
language sql
stable
as $$
  select tally.available_of(p_account.plan_credits + p_account.addon_credits,
                            tally.held_credits(p_account.user_id));
$$;

revoke all on function tally.available_credits(tally.accounts) from public, anon, authenticated;

create function tally.raise_insufficient(p_account tally.accounts, p_amount integer,
                                         p_available integer)
returns void
language plpgsql
as $$
begin
  raise exception using errcode = 'PT402',
    message = format('insufficient credits: %s requested, %s available', p_amount, p_available),
    detail = format('user %s has %s plan and %s add-on credits, %s of them held',
                    p_account.user_id, p_account.plan_credits, p_account.addon_credits,
                    p_account.plan_credits + p_account.addon_credits - p_available);
end;
$$;

revoke all on function tally.raise_insufficient(tally.accounts, integer, integer)
  from public, anon, authenticated;

-- Take credits the way a spend does: plan credits first, then add-on
-- credits; the plan part counts against the period. The caller holds the
-- account lock and has checked that they are available.
create function tally.draw_credits(
  p_account tally.accounts, p_amount integer, p_kind text, p_cause tally.entry_cause
) returns tally.ledger_entries
language plpgsql
as $$
declare
  v_from_plan integer := least(p_account.plan_credits, p_amount);
begin
  return tally.post_entry(p_account.user_id, p_kind, -v_from_plan, v_from_plan - p_amount,
                          p_cause, p_plan_spent_delta => v_from_plan);
end;
$$;

revoke all on function tally.draw_credits(tally.accounts, integer, text, tally.entry_cause)
  from public, anon, authenticated;

-- The balance parts a call returns, from what the call knows (the balance
-- it left and what is held): the same figures as public.credit_balances,
-- without reading it again.
create function tally.balance_parts(p_user_id uuid, p_plan integer, p_addon integer,
                                    p_held integer)
returns jsonb
language sql
stable  -- as jsonb_build_object is: an immutable body would not be inlined
as $$
  select jsonb_build_object(
    'user_id', p_user_id,
    'plan_credits', p_plan,
    'addon_credits', p_addon,
    'total_credits', p_plan + p_addon,
    'held_credits', least(p_held, p_plan + p_addon),
    'available_credits', tally.available_of(p_plan + p_addon, p_held));
$$;

revoke all on function tally.balance_parts(uuid, integer, integer, integer)
  from public, anon, authenticated;

-- The same after an entry was posted.
create function tally.balance_after(p_entry tally.ledger_entries, p_held integer)
returns jsonb
language sql
stable
as $$
  select tally.balance_parts(p_entry.user_id, p_entry.plan_after, p_entry.addon_after, p_held);
$$;

revoke all on function tally.balance_after(tally.ledger_entries, integer)
  from public, anon, authenticated;

-- The balance parts a call returns.
create function tally.balance_result(p_user_id uuid) returns jsonb
language plpgsql
stable
as $$
begin
  return (select jsonb_build_object(
    'user_id', b.user_id,
    'plan_credits', b.plan_credits,
    'addon_credits', b.addon_credits,
    'total_credits', b.total_credits,
    'held_credits', b.held_credits,
    'available_credits', b.available_credits)
    from public.credit_balances b
   where b.user_id = p_user_id);
end;
$$;

revoke all on function tally.balance_result(uuid) from public, anon, authenticated;

create function public.spend_credits(
  user_id uuid, amount integer, idempotency_key text, reason text default null
) returns jsonb
language plpgsql
security definer
set search_path = ''
set lock_timeout = '5s'
as $$
declare
  v_user_id uuid := spend_credits.user_id;
  v_amount integer := spend_credits.amount;
  v_key text := spend_credits.idempotency_key;
  v_first tally.spends;
  v_account tally.accounts;
  v_held integer;
  v_available integer;
  v_entry tally.ledger_entries;
  v_result jsonb;
begin
  if v_amount is null or v_amount <= 0 then
    raise exception using errcode = '22023',
      message = format('amount must be a positive whole number of credits, got %s', v_amount);
  end if;
  perform tally.require_key(v_key);
  perform tally.require_user(v_user_id);

  -- The account lock first: a concurrent call with the same key waits here,
  -- then finds this call's spend (committed) and returns its result. The
  -- spend is written once, whole, at the end.
  v_account := tally.lock_existing_account(v_user_id);
  select * into v_first from tally.spends s
   where s.user_id = v_user_id and s.idempotency_key = v_key;
  if found then
    -- The first result, whatever this call asks (another amount too): a
    -- key names one operation, and repeating it changes nothing.
    return v_first.result || jsonb_build_object('replayed', true);
  end if;

  -- A spend leaves holds as they are (it draws only on what they leave
  -- available), so what is held before is what is held after.
  v_held := tally.held_credits(v_user_id);
  v_available := tally.available_of(v_account.plan_credits + v_account.addon_credits, v_held);
  if v_available < v_amount then
    perform tally.raise_insufficient(v_account, v_amount, v_available);
  end if;
  v_entry := tally.draw_credits(v_account, v_amount, 'spend', tally.cause(
    coalesce(format('Spent %s credits: %s', v_amount, spend_credits.reason),
             format('Spent %s credits', v_amount)),
    p_spend_key => v_key, p_reason => spend_credits.reason));
  v_result := tally.balance_after(v_entry, v_held) || jsonb_build_object(
    'idempotency_key', v_key, 'amount', v_amount, 'ledger_entry_id', v_entry.id,
    'from_plan', -v_entry.plan_delta, 'from_addon', -v_entry.addon_delta, 'replayed', false);
  insert into tally.spends (user_id, idempotency_key, amount, reason, from_plan, from_addon,
                            period_subscription_id, period_start, result)
  values (v_user_id, v_key, v_amount, spend_credits.reason, -v_entry.plan_delta,
          -v_entry.addon_delta, v_account.period_subscription_id, v_account.period_start,
          v_result);
  return v_result;
end;
$$;

comment on function public.spend_credits(uuid, integer, text, text) is
  'Spend credits (plan first, then add-on), all or nothing; PT402 when short; idempotent per user and key.';

revoke all on function public.spend_credits(uuid, integer, text, text)
  from public, anon, authenticated;
grant execute on function public.spend_credits(uuid, integer, text, text) to service_role;

-- Give a spend back to the parts it came from, once. Plan credits come back
-- only within the same plan period; add-on credits first pay what earlier
-- clawbacks could not take.
create function public.reverse_spend(user_id uuid, idempotency_key text,
                                     reason text default null)
returns jsonb
language plpgsql
security definer
set search_path = ''
set lock_timeout = '5s'
as $$
declare
  v_user_id uuid := reverse_spend.user_id;
  v_key text := reverse_spend.idempotency_key;
  v_spend tally.spends;
  v_account tally.accounts;
  v_plan_back integer := 0;
  v_spent_back integer := 0;
  v_debt_paid integer;
  v_entry tally.ledger_entries;
  v_result jsonb;
begin
  perform tally.require_user(v_user_id);
  perform tally.require_key(v_key);
  v_account := tally.lock_existing_account(v_user_id);
  select * into v_spend from tally.spends s
   where s.user_id = v_user_id and s.idempotency_key = v_key
   for update;
  if not found or v_spend.result is null then
    raise exception using errcode = 'PT404',
      message = format('no spend of user %s with idempotency key %s', v_user_id, v_key);
  end if;
  if v_spend.reversed_at is not null then
    return v_spend.reversal_result || jsonb_build_object('replayed', true);
  end if;

  -- Plan credits come back only to the period they were spent in; after a
  -- reset that allowance is gone, as it would be had they not been spent.
  if v_account.period_subscription_id is not distinct from v_spend.period_subscription_id
     and v_account.period_start is not distinct from v_spend.period_start then
    v_spent_back := least(v_spend.from_plan, v_account.plan_spent);
    v_plan_back := greatest(0, v_account.plan_allowance - v_account.plan_refunded
                               - v_account.plan_disputed
                               - (v_account.plan_spent - v_spent_back))
                   - v_account.plan_credits;
  end if;
  v_debt_paid := tally.pay_addon_debts(v_user_id, v_spend.from_addon);
  v_entry := tally.post_entry(
    v_user_id, 'spend_reversal', v_plan_back, v_spend.from_addon - v_debt_paid,
    tally.cause(
      concat_ws('; ', format('Spend of %s credits given back', v_spend.amount),
                case when v_debt_paid > 0
                     then format('%s add-on credits kept for earlier clawbacks', v_debt_paid) end),
      p_spend_key => v_key, p_reason => coalesce(reverse_spend.reason, v_spend.reason)),
    p_plan_spent_delta => -v_spent_back);
  v_result := tally.balance_result(v_user_id) || jsonb_build_object(
    'idempotency_key', v_key, 'ledger_entry_id', v_entry.id, 'plan_returned', v_plan_back,
    'addon_returned', v_spend.from_addon - v_debt_paid, 'replayed', false);
  update tally.spends s set reversed_at = now(), reversal_result = v_result
   where s.user_id = v_user_id and s.idempotency_key = v_key;
  return v_result;
end;
$$;

comment on function public.reverse_spend(uuid, text, text) is
  'Give a spend back to the parts it came from (plan credits only within the same period), once.';

revoke all on function public.reverse_spend(uuid, text, text) from public, anon, authenticated;
grant execute on function public.reverse_spend(uuid, text, text) to service_role;

create function public.adjust_credits(
  user_id uuid, amount integer, reason text, idempotency_key text
) returns jsonb
language plpgsql
security definer
set search_path = ''
set lock_timeout = '5s'
as $$
declare
  v_user_id uuid := adjust_credits.user_id;
  v_amount integer := adjust_credits.amount;
  v_key text := adjust_credits.idempotency_key;
  v_first tally.adjustments;
  v_account tally.accounts;
  v_available integer;
  v_entry tally.ledger_entries;
  v_cause tally.entry_cause;
  v_result jsonb;
begin
  if v_amount is null or v_amount = 0 then
    raise exception using errcode = '22023', message = 'amount must be a non-zero whole number';
  end if;
  if adjust_credits.reason is null or btrim(adjust_credits.reason) = '' then
    raise exception using errcode = '22023', message = 'a written reason is required';
  end if;
  perform tally.require_key(v_key);
  perform tally.require_user(v_user_id);

  insert into tally.adjustments (user_id, idempotency_key, amount, reason)
  values (v_user_id, v_key, v_amount, adjust_credits.reason)
  on conflict do nothing;
  if not found then
    select * into v_first from tally.adjustments a
     where a.user_id = v_user_id and a.idempotency_key = v_key;
    -- The first result, whatever this call asks (as for spends).
    return v_first.result || jsonb_build_object('replayed', true);
  end if;

  v_account := tally.lock_existing_account(v_user_id);
  v_cause := tally.cause(
    format('Adjusted by the operator: %s%s credits (%s)',
           case when v_amount > 0 then '+' else '' end, v_amount, adjust_credits.reason),
    p_spend_key => v_key, p_business_key => 'adjustment:' || v_key,
    p_reason => adjust_credits.reason);
  if v_amount < 0 then
    -- A removal is taken like a spend, so it also counts against the period.
    v_available := tally.available_credits(v_account);
    if v_available < -v_amount then
      perform tally.raise_insufficient(v_account, -v_amount, v_available);
    end if;
    v_entry := tally.draw_credits(v_account, -v_amount, 'adjustment', v_cause);
  else
    v_entry := tally.post_entry(v_user_id, 'adjustment', 0, v_amount, v_cause);
  end if;
  v_result := tally.balance_result(v_user_id) || jsonb_build_object(
    'idempotency_key', v_key, 'amount', v_amount, 'ledger_entry_id', v_entry.id,
    'replayed', false);
  update tally.adjustments a set result = v_result
   where a.user_id = v_user_id and a.idempotency_key = v_key;
  return v_result;
end;
$$;

comment on function public.adjust_credits(uuid, integer, text, text) is
  'Operator grant (to add-on credits) or removal (like a spend), with a reason; never below zero.';

revoke all on function public.adjust_credits(uuid, integer, text, text)
  from public, anon, authenticated;
grant execute on function public.adjust_credits(uuid, integer, text, text) to service_role;
