-- Spending and operator adjustments. Each call is one transaction that locks
-- the user's account row, so concurrent spends on one account serialise: no
-- lost update, no negative balance, and a short balance raises PT402
-- (PostgREST answers HTTP 402) with nothing spent. Idempotency keys make a
-- retried call return its first result.

create table tally.spends (
  idempotency_key text primary key,
  user_id uuid not null,
  amount integer not null check (amount > 0),
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
  reversal_result jsonb
);

create index spends_user_id_idx on tally.spends (user_id);

alter table tally.spends enable row level security;
revoke all on table tally.spends from public, anon, authenticated;

create table tally.adjustments (
  idempotency_key text primary key,
  user_id uuid not null,
  amount integer not null check (amount <> 0),
  reason text not null,
  result jsonb,
  adjusted_at timestamptz not null default now()
);

create index adjustments_user_id_idx on tally.adjustments (user_id);

alter table tally.adjustments enable row level security;
revoke all on table tally.adjustments from public, anon, authenticated;

create function tally.require_key(p_key text) returns void
language plpgsql
immutable
set search_path = ''
as $$
begin
  if p_key is null or btrim(p_key) = '' or length(p_key) > 255 then
    raise exception using errcode = '22023',
      message = 'idempotency_key is required (1 to 255 characters)';
  end if;
end;
$$;

revoke all on function tally.require_key(text) from public, anon, authenticated;

-- Lock the account of a user or raise PT404 (PostgREST answers HTTP 404).
create function tally.lock_existing_account(p_user_id uuid) returns tally.accounts
language plpgsql
set search_path = ''
as $$
declare
  v_account tally.accounts;
begin
  if p_user_id is null then
    raise exception using errcode = '22023', message = 'user_id is required';
  end if;
  v_account := tally.lock_account(p_user_id);
  if v_account.user_id is null then
    raise exception using errcode = 'PT404', message = format('unknown user %s', p_user_id),
      detail = 'no credit account exists for this user id';
  end if;
  return v_account;
end;
$$;

revoke all on function tally.lock_existing_account(uuid) from public, anon, authenticated;

create function tally.raise_insufficient(p_account tally.accounts, p_amount integer)
returns void
language plpgsql
set search_path = ''
as $$
begin
  raise exception using errcode = 'PT402',
    message = format('insufficient credits: %s requested, %s available', p_amount,
                     p_account.plan_credits + p_account.addon_credits),
    detail = format('user %s has %s plan and %s add-on credits', p_account.user_id,
                    p_account.plan_credits, p_account.addon_credits);
end;
$$;

revoke all on function tally.raise_insufficient(tally.accounts, integer)
  from public, anon, authenticated;

-- Take credits the way a spend does: plan credits first, then add-on
-- credits, all or nothing (PT402 when short); the plan part counts against
-- the period. The caller holds the account lock.
create function tally.draw_credits(
  p_account tally.accounts, p_amount integer, p_kind text, p_business_key text,
  p_spend_key text, p_reason text
) returns tally.ledger_entries
language plpgsql
set search_path = ''
as $$
declare
  v_from_plan integer := least(p_account.plan_credits, p_amount);
begin
  if p_account.plan_credits + p_account.addon_credits < p_amount then
    perform tally.raise_insufficient(p_account, p_amount);
  end if;
  return tally.post_entry(p_account.user_id, p_kind, -v_from_plan, v_from_plan - p_amount,
                          p_business_key => p_business_key, p_spend_key => p_spend_key,
                          p_reason => p_reason, p_plan_spent_delta => v_from_plan);
end;
$$;

revoke all on function tally.draw_credits(tally.accounts, integer, text, text, text, text)
  from public, anon, authenticated;

create function tally.balance_result(p_entry tally.ledger_entries) returns jsonb
language sql
immutable
as $$
  select jsonb_build_object(
    'user_id', p_entry.user_id,
    'plan_credits', p_entry.plan_after,
    'addon_credits', p_entry.addon_after,
    'total_credits', p_entry.plan_after + p_entry.addon_after,
    'ledger_entry_id', p_entry.id);
$$;

revoke all on function tally.balance_result(tally.ledger_entries) from public, anon, authenticated;

create function public.spend_credits(
  user_id uuid, amount integer, idempotency_key text, reason text default null
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_user_id uuid := spend_credits.user_id;
  v_amount integer := spend_credits.amount;
  v_key text := spend_credits.idempotency_key;
  v_first tally.spends;
  v_account tally.accounts;
  v_from_plan integer;
  v_entry tally.ledger_entries;
  v_result jsonb;
begin
  if v_amount is null or v_amount <= 0 then
    raise exception using errcode = '22023',
      message = format('amount must be a positive whole number of credits, got %s', v_amount);
  end if;
  perform tally.require_key(v_key);
  if v_user_id is null then
    raise exception using errcode = '22023', message = 'user_id is required';
  end if;

  -- Claim the key first: a concurrent call with the same key waits here and
  -- then returns this call's result.
  insert into tally.spends (idempotency_key, user_id, amount, reason)
  values (v_key, v_user_id, v_amount, spend_credits.reason)
  on conflict do nothing;
  if not found then
    select * into v_first from tally.spends s where s.idempotency_key = v_key;
    if v_first.user_id <> v_user_id or v_first.amount <> v_amount then
      raise exception using errcode = '23505',
        message = format('idempotency key %s was already used for another spend', v_key);
    end if;
    return v_first.result || jsonb_build_object('replayed', true);
  end if;

  v_account := tally.lock_existing_account(v_user_id);
  v_entry := tally.draw_credits(v_account, v_amount, 'spend', null, v_key, spend_credits.reason);
  v_from_plan := -v_entry.plan_delta;
  v_result := tally.balance_result(v_entry) || jsonb_build_object(
    'idempotency_key', v_key, 'amount', v_amount,
    'from_plan', v_from_plan, 'from_addon', v_amount - v_from_plan, 'replayed', false);
  update tally.spends s
     set from_plan = v_from_plan,
         from_addon = v_amount - v_from_plan,
         period_subscription_id = v_account.period_subscription_id,
         period_start = v_account.period_start,
         result = v_result
   where s.idempotency_key = v_key;
  return v_result;
end;
$$;

comment on function public.spend_credits(uuid, integer, text, text) is
  'Spend credits (plan first, then add-on), all or nothing; PT402 when short; idempotent by key.';

revoke all on function public.spend_credits(uuid, integer, text, text)
  from public, anon, authenticated;
grant execute on function public.spend_credits(uuid, integer, text, text) to service_role;

-- Give a spend back to the parts it came from, once. Plan credits come back
-- only within the same plan period; add-on credits first pay what earlier
-- clawbacks could not take.
create function public.reverse_spend(idempotency_key text, reason text default null)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_key text := reverse_spend.idempotency_key;
  v_spend tally.spends;
  v_account tally.accounts;
  v_plan_back integer := 0;
  v_spent_back integer := 0;
  v_debt_paid integer;
  v_entry tally.ledger_entries;
  v_result jsonb;
begin
  perform tally.require_key(v_key);
  select * into v_spend from tally.spends s where s.idempotency_key = v_key for update;
  if not found then
    raise exception using errcode = 'PT404',
      message = format('no spend with idempotency key %s', v_key);
  end if;
  if v_spend.reversed_at is not null then
    return v_spend.reversal_result || jsonb_build_object('replayed', true);
  end if;

  v_account := tally.lock_existing_account(v_spend.user_id);
  -- Plan credits come back only to the period they were spent in; after a
  -- reset that allowance is gone, as it would be had they not been spent.
  if v_account.period_subscription_id is not distinct from v_spend.period_subscription_id
     and v_account.period_start is not distinct from v_spend.period_start then
    v_spent_back := least(v_spend.from_plan, v_account.plan_spent);
    v_plan_back := greatest(0, v_account.plan_allowance - (v_account.plan_spent - v_spent_back))
                   - v_account.plan_credits;
  end if;
  v_debt_paid := least(v_spend.from_addon, v_account.addon_debt);
  update tally.accounts set addon_debt = addon_debt - v_debt_paid
   where user_id = v_spend.user_id;
  v_entry := tally.post_entry(
    v_spend.user_id, 'spend_reversal', v_plan_back, v_spend.from_addon - v_debt_paid,
    p_spend_key => v_key,
    p_reason => concat_ws('; ', coalesce(reverse_spend.reason, v_spend.reason),
                          case when v_debt_paid > 0
                               then format('%s add-on credits kept for earlier clawbacks',
                                           v_debt_paid) end),
    p_plan_spent_delta => -v_spent_back);
  v_result := tally.balance_result(v_entry) || jsonb_build_object(
    'idempotency_key', v_key, 'plan_returned', v_plan_back,
    'addon_returned', v_spend.from_addon - v_debt_paid, 'replayed', false);
  update tally.spends s set reversed_at = now(), reversal_result = v_result
   where s.idempotency_key = v_key;
  return v_result;
end;
$$;

comment on function public.reverse_spend(text, text) is
  'Give a spend back to the parts it came from (plan credits only within the same period), once.';

revoke all on function public.reverse_spend(text, text) from public, anon, authenticated;
grant execute on function public.reverse_spend(text, text) to service_role;

create function public.adjust_credits(
  user_id uuid, amount integer, reason text, idempotency_key text
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_user_id uuid := adjust_credits.user_id;
  v_amount integer := adjust_credits.amount;
  v_key text := adjust_credits.idempotency_key;
  v_first tally.adjustments;
  v_account tally.accounts;
  v_entry tally.ledger_entries;
  v_result jsonb;
begin
  if v_amount is null or v_amount = 0 then
    raise exception using errcode = '22023', message = 'amount must be a non-zero whole number';
  end if;
  if adjust_credits.reason is null or btrim(adjust_credits.reason) = '' then
    raise exception using errcode = '22023', message = 'a written reason is required';
  end if;
  perform tally.require_key(v_key);
  if v_user_id is null then
    raise exception using errcode = '22023', message = 'user_id is required';
  end if;

  insert into tally.adjustments (idempotency_key, user_id, amount, reason)
  values (v_key, v_user_id, v_amount, adjust_credits.reason)
  on conflict do nothing;
  if not found then
    select * into v_first from tally.adjustments a where a.idempotency_key = v_key;
    if v_first.user_id <> v_user_id or v_first.amount <> v_amount then
      raise exception using errcode = '23505',
        message = format('idempotency key %s was already used for another adjustment', v_key);
    end if;
    return v_first.result || jsonb_build_object('replayed', true);
  end if;

  v_account := tally.lock_existing_account(v_user_id);
  if v_amount < 0 then
    -- A removal is taken like a spend, so it also counts against the period.
    v_entry := tally.draw_credits(v_account, -v_amount, 'adjustment', 'adjustment:' || v_key,
                                  null, adjust_credits.reason);
  else
    v_entry := tally.post_entry(v_user_id, 'adjustment', 0, v_amount,
                                p_business_key => 'adjustment:' || v_key,
                                p_reason => adjust_credits.reason);
  end if;
  v_result := tally.balance_result(v_entry) || jsonb_build_object(
    'idempotency_key', v_key, 'amount', v_amount, 'replayed', false);
  update tally.adjustments a set result = v_result where a.idempotency_key = v_key;
  return v_result;
end;
$$;

comment on function public.adjust_credits(uuid, integer, text, text) is
  'Operator grant (to add-on credits) or removal (like a spend), with a reason; never below zero.';

revoke all on function public.adjust_credits(uuid, integer, text, text)
  from public, anon, authenticated;
grant execute on function public.adjust_credits(uuid, integer, text, text) to service_role;
