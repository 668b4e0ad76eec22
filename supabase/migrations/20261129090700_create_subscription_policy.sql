-- Subscriptions: the mirror that only moves forward, the newest known plan of
-- each period, and the rule that sets plan credits: a newly paid period
-- resets them to its plan's monthly credits; a plan change within the
-- current period gives max(0, new allowance - plan credits spent).
-- Everything here is a function of the set of events seen, not of their
-- order, so any delivery order ends in the same balances.

create function tally.to_time(p_seconds jsonb) returns timestamptz
language sql
immutable
set search_path = ''
as $$
  select case when p_seconds is null or p_seconds = 'null'::jsonb then null
              else to_timestamp((p_seconds #>> '{}')::bigint) end;
$$;

revoke all on function tally.to_time(jsonb) from public, anon, authenticated;

create function tally.is_final_status(p_status text) returns boolean
language sql
immutable
set search_path = ''
as $$
  select p_status in ('canceled', 'incomplete_expired');
$$;

revoke all on function tally.is_final_status(text) from public, anon, authenticated;

-- Breaks ties between two states of one second by how far along they are.
create function tally.status_rank(p_status text) returns integer
language sql
immutable
set search_path = ''
as $$
  select array_position(
    array['incomplete', 'trialing', 'active', 'past_due', 'unpaid', 'paused',
          'incomplete_expired', 'canceled'], p_status);
$$;

revoke all on function tally.status_rank(text) from public, anon, authenticated;

-- Did an update whose data.previous_attributes are p_previous leave p_state?
create function tally.left_state(p_previous jsonb, p_state tally.subscriptions) returns boolean
language sql
immutable
set search_path = ''
as $$
  select p_previous is not null and p_previous <> '{}'::jsonb
     and (not p_previous ? 'status' or p_previous ->> 'status' = p_state.status)
     and (not p_previous ? 'price_id'
          or p_previous ->> 'price_id' is not distinct from p_state.price_id)
     and (not p_previous ? 'current_period_start'
          or tally.to_time(p_previous -> 'current_period_start')
             is not distinct from p_state.current_period_start)
     and (not p_previous ? 'current_period_end'
          or tally.to_time(p_previous -> 'current_period_end')
             is not distinct from p_state.current_period_end)
     and (not p_previous ? 'cancel_at_period_end'
          or (p_previous ->> 'cancel_at_period_end')::boolean = p_state.cancel_at_period_end);
$$;

revoke all on function tally.left_state(jsonb, tally.subscriptions) from public, anon, authenticated;

-- Is the candidate subscription state newer than the stored one? Final
-- states win and stay; then Stripe's created; at a tie, the update that left
-- the other state, then the further-along status, then the event id.
create function tally.is_newer_state(p_candidate tally.subscriptions, p_stored tally.subscriptions)
returns boolean
language plpgsql
immutable
set search_path = ''
as $$
begin
  if tally.is_final_status(p_candidate.status) <> tally.is_final_status(p_stored.status) then
    return tally.is_final_status(p_candidate.status);
  end if;
  if p_candidate.state_created_at <> p_stored.state_created_at then
    return p_candidate.state_created_at > p_stored.state_created_at;
  end if;
  if tally.left_state(p_candidate.state_previous, p_stored) then
    return true;
  end if;
  if tally.left_state(p_stored.state_previous, p_candidate) then
    return false;
  end if;
  if tally.status_rank(p_candidate.status) <> tally.status_rank(p_stored.status) then
    return tally.status_rank(p_candidate.status) > tally.status_rank(p_stored.status);
  end if;
  return p_candidate.state_event_id > p_stored.state_event_id;
end;
$$;

revoke all on function tally.is_newer_state(tally.subscriptions, tally.subscriptions)
  from public, anon, authenticated;

-- Record a subscription event's state in the mirror if it is newer.
create function tally.observe_subscription(
  p_user_id uuid, p_subscription jsonb, p_created_at timestamptz, p_event_id text
) returns void
language plpgsql
set search_path = ''
as $$
declare
  v_stored tally.subscriptions;
  v_candidate tally.subscriptions;
  v_status_is_newer boolean;
begin
  v_candidate := row(
    p_subscription ->> 'id', p_user_id, p_subscription ->> 'customer_id',
    p_subscription ->> 'status', p_subscription ->> 'price_id',
    tally.to_time(p_subscription -> 'current_period_start'),
    tally.to_time(p_subscription -> 'current_period_end'),
    (p_subscription ->> 'cancel_at_period_end')::boolean,
    tally.to_time(p_subscription -> 'canceled_at'),
    tally.to_time(p_subscription -> 'ended_at'),
    tally.to_time(p_subscription -> 'created'),
    p_created_at, p_event_id, p_subscription -> 'previous',
    p_created_at, 'subscription', p_event_id, now()
  )::tally.subscriptions;

  select * into v_stored from tally.subscriptions
   where subscription_id = v_candidate.subscription_id
   for update;
  if not found then
    insert into tally.subscriptions select v_candidate.*;
    return;
  end if;

  -- The status has its own clock, since invoices observe it too.
  v_status_is_newer := case
    when tally.is_final_status(v_stored.status) then
      tally.is_final_status(v_candidate.status) and tally.is_newer_state(v_candidate, v_stored)
    when tally.is_final_status(v_candidate.status) then true
    when p_created_at <> v_stored.status_observed_at then p_created_at > v_stored.status_observed_at
    when v_stored.status_source = 'invoice' then true
    else tally.is_newer_state(v_candidate, v_stored)
  end;

  if tally.is_newer_state(v_candidate, v_stored) then
    update tally.subscriptions s
       set user_id = v_candidate.user_id,
           customer_id = coalesce(v_candidate.customer_id, s.customer_id),
           price_id = coalesce(v_candidate.price_id, s.price_id),
           current_period_start = coalesce(v_candidate.current_period_start, s.current_period_start),
           current_period_end = coalesce(v_candidate.current_period_end, s.current_period_end),
           cancel_at_period_end = v_candidate.cancel_at_period_end,
           canceled_at = v_candidate.canceled_at,
           ended_at = v_candidate.ended_at,
           subscription_created_at = coalesce(v_candidate.subscription_created_at,
                                              s.subscription_created_at),
           state_created_at = v_candidate.state_created_at,
           state_event_id = v_candidate.state_event_id,
           state_previous = v_candidate.state_previous,
           updated_at = now()
     where s.subscription_id = v_candidate.subscription_id;
  end if;
  if v_status_is_newer then
    update tally.subscriptions s
       set status = v_candidate.status,
           status_observed_at = p_created_at,
           status_source = 'subscription',
           status_event_id = p_event_id,
           updated_at = now()
     where s.subscription_id = v_candidate.subscription_id;
  end if;
end;
$$;

revoke all on function tally.observe_subscription(uuid, jsonb, timestamptz, text)
  from public, anon, authenticated;

-- What an invoice says about its subscription's status: a paid one
-- completes or recovers it, a failed one makes it past_due (or leaves a
-- first payment incomplete). Only a strictly newer observation counts.
create function tally.observe_invoice(
  p_user_id uuid, p_invoice jsonb, p_is_paid boolean, p_created_at timestamptz, p_event_id text
) returns void
language plpgsql
set search_path = ''
as $$
declare
  v_stored tally.subscriptions;
  v_status text;
begin
  select * into v_stored from tally.subscriptions
   where subscription_id = p_invoice ->> 'subscription_id'
   for update;
  if not found then
    v_status := case
      when p_is_paid then 'active'
      when p_invoice ->> 'billing_reason' = 'subscription_create' then 'incomplete'
      else 'past_due' end;
    insert into tally.subscriptions (
      subscription_id, user_id, customer_id, status, price_id,
      current_period_start, current_period_end,
      state_created_at, state_event_id,
      status_observed_at, status_source, status_event_id
    ) values (
      p_invoice ->> 'subscription_id', p_user_id, p_invoice ->> 'customer_id', v_status,
      p_invoice ->> 'price_id',
      tally.to_time(p_invoice -> 'period_start'), tally.to_time(p_invoice -> 'period_end'),
      '-infinity', p_event_id,
      p_created_at, 'invoice', p_event_id
    );
    return;
  end if;

  if tally.is_final_status(v_stored.status)
     or p_created_at < v_stored.status_observed_at
     or (p_created_at = v_stored.status_observed_at
         and (v_stored.status_source = 'subscription' or p_event_id <= v_stored.status_event_id))
  then
    return;
  end if;
  v_status := case
    when p_is_paid and v_stored.status in ('incomplete', 'past_due', 'unpaid') then 'active'
    when not p_is_paid and v_stored.status in ('active', 'trialing') then 'past_due'
    else v_stored.status end;
  update tally.subscriptions
     set status = v_status,
         status_observed_at = p_created_at,
         status_source = 'invoice',
         status_event_id = p_event_id,
         updated_at = now()
   where subscription_id = v_stored.subscription_id;
end;
$$;

revoke all on function tally.observe_invoice(uuid, jsonb, boolean, timestamptz, text)
  from public, anon, authenticated;

-- Remember a plan for a period if this observation is the newest for it:
-- later Stripe created wins; at a tie a subscription state (rank 1) beats an
-- invoice (rank 0), then the update that left the other's price, then the
-- event id.
create function tally.record_period_plan(
  p_subscription_id text, p_period_start timestamptz, p_user_id uuid, p_price_id text,
  p_previous_price_id text, p_created_at timestamptz, p_rank smallint, p_event_id text
) returns void
language sql
set search_path = ''
as $$
  insert into tally.period_plans as p (
    subscription_id, period_start, user_id, price_id, previous_price_id,
    source_created_at, source_rank, source_event_id
  ) values (
    p_subscription_id, p_period_start, p_user_id, p_price_id, p_previous_price_id,
    p_created_at, p_rank, p_event_id
  )
  on conflict (subscription_id, period_start) do update
     set price_id = excluded.price_id,
         previous_price_id = excluded.previous_price_id,
         source_created_at = excluded.source_created_at,
         source_rank = excluded.source_rank,
         source_event_id = excluded.source_event_id
   where (excluded.source_created_at, excluded.source_rank)
           > (p.source_created_at, p.source_rank)
      or ((excluded.source_created_at, excluded.source_rank)
            = (p.source_created_at, p.source_rank)
          and ((excluded.previous_price_id = p.price_id and excluded.price_id <> p.price_id)
               or (not coalesce(p.previous_price_id = excluded.price_id
                                and p.price_id <> excluded.price_id, false)
                   and excluded.source_event_id > p.source_event_id)));
$$;

revoke all on function
  tally.record_period_plan(text, timestamptz, uuid, text, text, timestamptz, smallint, text)
  from public, anon, authenticated;

-- Monthly credits of the newest known plan of a period (null if unknown).
create function tally.period_allowance(p_subscription_id text, p_period_start timestamptz)
returns integer
language sql
stable
set search_path = ''
as $$
  select pl.monthly_credits
    from tally.period_plans pp
    join public.plans pl on pl.stripe_price_id = pp.price_id
   where pp.subscription_id = p_subscription_id and pp.period_start = p_period_start;
$$;

revoke all on function tally.period_allowance(text, timestamptz) from public, anon, authenticated;

-- When a subscription stops earning periods: periods that start at or after
-- it are never granted.
create function tally.subscription_end(p_subscription tally.subscriptions) returns timestamptz
language sql
immutable
set search_path = ''
as $$
  select case when tally.is_final_status(p_subscription.status)
              then coalesce(p_subscription.ended_at, p_subscription.canceled_at,
                            p_subscription.status_observed_at)
         end;
$$;

revoke all on function tally.subscription_end(tally.subscriptions) from public, anon, authenticated;

-- Bring the user's plan credits in line with their newest paid period and
-- its newest plan. The caller holds the account lock.
create function tally.settle_plan_period(p_user_id uuid) returns void
language plpgsql
set search_path = ''
as $$
declare
  v_account tally.accounts;
  v_period tally.paid_periods;
  v_allowance integer;
begin
  select * into v_account from tally.accounts where user_id = p_user_id;
  select * into v_period from tally.paid_periods
   where user_id = p_user_id
   order by period_start desc, subscription_id desc
   limit 1;
  if not found then
    return;
  end if;

  if v_account.period_start is null
     or (v_period.period_start, v_period.subscription_id)
        > (v_account.period_start, v_account.period_subscription_id) then
    -- A new period: plan credits are set, whatever was left is gone.
    v_allowance := coalesce(tally.period_allowance(v_period.subscription_id,
                                                   v_period.period_start), 0);
    update tally.accounts
       set period_subscription_id = v_period.subscription_id,
           period_start = v_period.period_start,
           period_end = v_period.period_end,
           plan_allowance = v_allowance,
           plan_spent = 0
     where user_id = p_user_id;
    perform tally.post_entry(
      p_user_id, 'subscription_period', v_allowance - v_account.plan_credits, 0,
      p_business_key => format('period:%s:%s', v_period.subscription_id,
                               extract(epoch from v_period.period_start)::bigint));
  elsif (v_period.period_start, v_period.subscription_id)
        = (v_account.period_start, v_account.period_subscription_id) then
    v_allowance := tally.period_allowance(v_period.subscription_id, v_period.period_start);
    if v_allowance is not null and v_allowance <> v_account.plan_allowance then
      update tally.accounts set plan_allowance = v_allowance where user_id = p_user_id;
      perform tally.post_entry(
        p_user_id, 'plan_change',
        greatest(0, v_allowance - v_account.plan_spent) - v_account.plan_credits, 0,
        p_business_key => format('plan:%s:%s:%s', v_period.subscription_id,
                                 extract(epoch from v_period.period_start)::bigint, v_allowance));
    end if;
  end if;
end;
$$;

revoke all on function tally.settle_plan_period(uuid) from public, anon, authenticated;

-- Copy the user's most relevant subscription (not ended first, then newest
-- period, then newest) onto the account, for credit_balances.
create function tally.refresh_subscription_summary(p_user_id uuid) returns void
language plpgsql
set search_path = ''
as $$
declare
  v_subscription tally.subscriptions;
  v_price_id text;
begin
  select * into v_subscription from tally.subscriptions
   where user_id = p_user_id
   order by tally.is_final_status(status), current_period_start desc nulls last,
            subscription_created_at desc nulls last, subscription_id desc
   limit 1;
  if not found then
    return;
  end if;
  select pp.price_id into v_price_id from tally.period_plans pp
   where pp.subscription_id = v_subscription.subscription_id
   order by pp.period_start desc
   limit 1;
  update tally.accounts a
     set subscription_id = v_subscription.subscription_id,
         subscription_status = v_subscription.status,
         plan_key = (select pl.key from public.plans pl
                      where pl.stripe_price_id = coalesce(v_price_id, v_subscription.price_id)),
         current_period_start = greatest(
           v_subscription.current_period_start,
           case when a.period_subscription_id = v_subscription.subscription_id
                then a.period_start end),
         current_period_end = greatest(
           v_subscription.current_period_end,
           case when a.period_subscription_id = v_subscription.subscription_id
                then a.period_end end),
         cancel_at_period_end = v_subscription.cancel_at_period_end,
         updated_at = now()
   where a.user_id = p_user_id;
end;
$$;

revoke all on function tally.refresh_subscription_summary(uuid) from public, anon, authenticated;

-- invoice.paid / invoice.payment_failed. Returns a note when nothing was
-- granted, null when a period was.
create function tally.apply_invoice(p_event jsonb, p_user_id uuid) returns text
language plpgsql
set search_path = ''
as $$
declare
  v_invoice jsonb := p_event -> 'invoice';
  v_is_paid boolean := p_event ->> 'type' = 'invoice.paid' and v_invoice ->> 'status' = 'paid';
  v_created_at timestamptz := tally.to_time(p_event -> 'created');
  v_subscription_id text := v_invoice ->> 'subscription_id';
  v_period_start timestamptz := tally.to_time(v_invoice -> 'period_start');
  v_end timestamptz;
  v_is_new_period boolean;
begin
  if v_subscription_id is null then
    return 'not a subscription invoice: nothing to grant';
  end if;
  if v_invoice ->> 'price_id' is not null and not exists (
       select 1 from public.plans where stripe_price_id = v_invoice ->> 'price_id') then
    perform tally.reject(format('unknown price %s: no plan has it', v_invoice ->> 'price_id'));
  end if;
  perform tally.observe_invoice(p_user_id, v_invoice, v_is_paid, v_created_at, p_event ->> 'id');
  perform tally.refresh_subscription_summary(p_user_id);
  if not v_is_paid then
    return 'payment not completed: no credits';
  end if;
  if v_invoice ->> 'price_id' is null or v_period_start is null then
    return 'no subscription line: no period to grant';
  end if;

  perform tally.record_period_plan(v_subscription_id, v_period_start, p_user_id,
                                   v_invoice ->> 'price_id', null, v_created_at, 0::smallint,
                                   p_event ->> 'id');
  select tally.subscription_end(s) into v_end from tally.subscriptions s
   where s.subscription_id = v_subscription_id;
  if v_period_start >= v_end then
    return 'the subscription ended before this period: no grant';
  end if;
  insert into tally.paid_periods (subscription_id, period_start, period_end, user_id,
                                  invoice_id, stripe_event_id)
  values (v_subscription_id, v_period_start,
          coalesce(tally.to_time(v_invoice -> 'period_end'), v_period_start),
          p_user_id, v_invoice ->> 'id', p_event ->> 'id')
  on conflict do nothing;
  v_is_new_period := found;
  perform tally.settle_plan_period(p_user_id);
  perform tally.refresh_subscription_summary(p_user_id);
  if not v_is_new_period then
    return 'period already granted';
  end if;
  return null;
end;
$$;

revoke all on function tally.apply_invoice(jsonb, uuid) from public, anon, authenticated;

-- customer.subscription.created / updated / deleted.
create function tally.apply_subscription(p_event jsonb, p_user_id uuid) returns text
language plpgsql
set search_path = ''
as $$
declare
  v_subscription jsonb := p_event -> 'subscription';
  v_created_at timestamptz := tally.to_time(p_event -> 'created');
  v_period_start timestamptz := tally.to_time(v_subscription -> 'current_period_start');
begin
  if v_subscription ->> 'price_id' is not null and not exists (
       select 1 from public.plans where stripe_price_id = v_subscription ->> 'price_id') then
    perform tally.reject(format('unknown price %s: no plan has it',
                                v_subscription ->> 'price_id'));
  end if;
  perform tally.observe_subscription(p_user_id, v_subscription, v_created_at, p_event ->> 'id');
  if v_subscription ->> 'price_id' is not null and v_period_start is not null then
    perform tally.record_period_plan(v_subscription ->> 'id', v_period_start, p_user_id,
                                     v_subscription ->> 'price_id',
                                     v_subscription -> 'previous' ->> 'price_id',
                                     v_created_at, 1::smallint, p_event ->> 'id');
  end if;
  perform tally.settle_plan_period(p_user_id);
  perform tally.refresh_subscription_summary(p_user_id);
  return null;
end;
$$;

revoke all on function tally.apply_subscription(jsonb, uuid) from public, anon, authenticated;
