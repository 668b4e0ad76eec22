-- Subscriptions and the rule that sets plan credits. Every subscription
-- event and every invoice of a subscription is kept as an observation; the
-- subscription mirror and each period's plan are folded from all of them in
-- a canonical order (by Stripe's created; within one second by following
-- data.previous_attributes from the state before it), so they are a
-- function of the set of events, never of their arrival order. A newly paid
-- period resets plan credits to its plan's monthly credits; a plan change
-- within the current period gives max(0, new allowance - plan credits spent).

-- Whole numbers may arrive as 5.0: read them as such.
create function tally.to_time(p_seconds jsonb) returns timestamptz
language sql
immutable
as $$
  select case when p_seconds is null or p_seconds = 'null'::jsonb then null
              else to_timestamp((p_seconds #>> '{}')::numeric) end;
$$;

revoke all on function tally.to_time(jsonb)
  from public, anon, authenticated;

create function tally.to_integer(p_value jsonb) returns integer
language sql
immutable
as $$
  select (p_value #>> '{}')::numeric::integer;
$$;

revoke all on function tally.to_integer(jsonb)
  from public, anon, authenticated;

create function tally.is_final_status(p_status text) returns boolean
language sql
immutable
as $$
  select p_status in ('canceled', 'incomplete_expired');
$$;

revoke all on function tally.is_final_status(text)
  from public, anon, authenticated;

-- Breaks ties between two states of one second by how far along they are.
create function tally.status_rank(p_status text) returns integer
language sql
immutable
as $$
  select array_position(
    array['incomplete', 'trialing', 'active', 'past_due', 'unpaid', 'paused',
          'incomplete_expired', 'canceled'], p_status);
$$;

revoke all on function tally.status_rank(text)
  from public, anon, authenticated;

-- Did the update whose previous_attributes are p_previous leave this state?
create function tally.left_state(
  p_previous jsonb, p_status text, p_state tally.subscription_observations
) returns boolean
language sql
immutable
as $$
  select p_previous is not null and p_previous <> '{}'::jsonb
     and p_state.subscription_id is not null
     and (not p_previous ? 'status' or p_previous ->> 'status' = p_status)
     and (not p_previous ? 'price_id'
          or p_previous ->> 'price_id' is not distinct from p_state.price_id)
     and (not p_previous ? 'current_period_start'
          or tally.to_time(p_previous -> 'current_period_start')
             is not distinct from p_state.current_period_start)
     and (not p_previous ? 'current_period_end'
          or tally.to_time(p_previous -> 'current_period_end')
             is not distinct from p_state.current_period_end)
     and (not p_previous ? 'cancel_at_period_end'
          or (p_previous ->> 'cancel_at_period_end')::boolean
             is not distinct from p_state.cancel_at_period_end);
$$;

revoke all on function tally.left_state(jsonb,text,tally.subscription_observations)
  from public, anon, authenticated;

-- Which of the same-second updates comes next after p_state: the one that
-- left it; if none did, one that another of them left (it must come before
-- that one); then the least far-along status, then the event id.
create function tally.next_in_second(
  p_state tally.subscription_observations, p_status text,
  p_candidates tally.subscription_observations[]
) returns tally.subscription_observations
language plpgsql
immutable
set search_path = ''
as $$
declare
  v_row tally.subscription_observations;
begin
  select c.* into v_row
    from unnest(p_candidates) as c
   order by tally.left_state(c.previous, p_status, p_state) desc,
            exists (select 1 from unnest(p_candidates) as other
                     where other.stripe_event_id <> c.stripe_event_id
                       and tally.left_state(other.previous, c.status, c)) desc,
            tally.status_rank(c.status), c.stripe_event_id
   limit 1;
  return v_row;
end;
$$;

revoke all on function tally.next_in_second(tally.subscription_observations,text,tally.subscription_observations[])
  from public, anon, authenticated;

-- What a paid or failed invoice does to a subscription's status.
create function tally.status_after_invoice(
  p_status text, p_is_paid boolean, p_billing_reason text
) returns text
language sql
immutable
as $$
  select case
    when p_status is null and p_is_paid then 'active'
    when p_status is null and p_billing_reason = 'subscription_create' then 'incomplete'
    when p_status is null then 'past_due'
    when p_is_paid and p_status in ('incomplete', 'past_due', 'unpaid') then 'active'
    when not p_is_paid and p_status in ('active', 'trialing') then 'past_due'
    else p_status
  end;
$$;

revoke all on function tally.status_after_invoice(text,boolean,text)
  from public, anon, authenticated;

-- Fold a subscription's observations into its mirror row. Within a second,
-- subscription events go first (chained by previous_attributes), then the
-- invoices' payment results. Once canceled, nothing un-cancels it.
create function tally.resolve_subscription(p_subscription_id text) returns void
language plpgsql
set search_path = ''
as $$
declare
  v_second timestamptz;
  v_pending tally.subscription_observations[];
  v_next tally.subscription_observations;
  v_invoice tally.subscription_observations;
  v_state tally.subscription_observations;
  v_fields tally.subscription_observations;
  v_status text;
  v_status_at timestamptz;
begin
  for v_second in
    select distinct o.observed_at from tally.subscription_observations o
     where o.subscription_id = p_subscription_id
     order by 1
  loop
    select array_agg(o) into v_pending from tally.subscription_observations o
     where o.subscription_id = p_subscription_id and o.observed_at = v_second
       and o.source = 'subscription';
    while coalesce(cardinality(v_pending), 0) > 0 loop
      v_next := tally.next_in_second(v_state, v_status, v_pending);
      v_pending := array(select c from unnest(v_pending) as c
                          where c.stripe_event_id <> v_next.stripe_event_id);
      if not coalesce(tally.is_final_status(v_status), false)
         or tally.is_final_status(v_next.status) then
        v_state := v_next;
        v_status := v_next.status;
        v_status_at := v_second;
      end if;
    end loop;
    for v_invoice in
      select * from tally.subscription_observations o
       where o.subscription_id = p_subscription_id and o.observed_at = v_second
         and o.source = 'invoice'
       order by o.stripe_event_id
    loop
      if not coalesce(tally.is_final_status(v_status), false) then
        v_status := tally.status_after_invoice(v_status, v_invoice.is_paid,
                                               v_invoice.billing_reason);
        v_status_at := v_second;
      end if;
    end loop;
  end loop;
  if v_status is null then
    return;
  end if;

  -- Fields come from subscription events; with none yet, from the newest
  -- invoice line, else the newest invoice.
  if v_state.subscription_id is not null then
    v_fields := v_state;
  else
    select * into v_fields from tally.subscription_observations o
     where o.subscription_id = p_subscription_id
     order by (o.price_id is not null) desc, o.observed_at desc, o.stripe_event_id desc
     limit 1;
  end if;
  insert into tally.subscriptions as s (
    subscription_id, user_id, customer_id, status, price_id, current_period_start,
    current_period_end, cancel_at_period_end, canceled_at, ended_at, subscription_created_at,
    state_created_at, status_observed_at, updated_at
  ) values (
    p_subscription_id, v_fields.user_id, v_fields.customer_id, v_status, v_fields.price_id,
    v_fields.current_period_start, v_fields.current_period_end,
    coalesce(v_fields.cancel_at_period_end, false), v_fields.canceled_at, v_fields.ended_at,
    v_fields.subscription_created_at, coalesce(v_state.observed_at, '-infinity'), v_status_at,
    now()
  )
  on conflict (subscription_id) do update
     set user_id = excluded.user_id,
         customer_id = coalesce(excluded.customer_id, s.customer_id),
         status = excluded.status,
         price_id = excluded.price_id,
         current_period_start = excluded.current_period_start,
         current_period_end = excluded.current_period_end,
         cancel_at_period_end = excluded.cancel_at_period_end,
         canceled_at = excluded.canceled_at,
         ended_at = excluded.ended_at,
         subscription_created_at = coalesce(excluded.subscription_created_at,
                                            s.subscription_created_at),
         state_created_at = excluded.state_created_at,
         status_observed_at = excluded.status_observed_at,
         updated_at = now();
end;
$$;

revoke all on function tally.resolve_subscription(text)
  from public, anon, authenticated;

-- Fold the observations that name a period into its plan: by time, an
-- invoice line dated by the invoice's own created (it was billed from the
-- state of that moment), a subscription event by the event's created;
-- within a second the invoice line first, then the updates, each next one
-- being the update that left the price reached so far.
create function tally.resolve_period_plan(
  p_subscription_id text, p_period_start timestamptz, p_user_id uuid
) returns void
language plpgsql
set search_path = ''
as $$
declare
  v_second timestamptz;
  v_price_id text;
  v_pending tally.subscription_observations[];
  v_next tally.subscription_observations;
  v_observations tally.subscription_observations[];
begin
  select array_agg(o) into v_observations from tally.subscription_observations o
   where o.subscription_id = p_subscription_id and o.current_period_start = p_period_start
     and o.price_id is not null;
  for v_second in
    select distinct coalesce(o.line_observed_at, o.observed_at) from unnest(v_observations) o
     order by 1
  loop
    select coalesce(
             (select o.price_id from unnest(v_observations) o
               where o.source = 'invoice'
                 and coalesce(o.line_observed_at, o.observed_at) = v_second
               order by o.stripe_event_id desc
               limit 1),
             v_price_id)
      into v_price_id;
    v_pending := array(select o from unnest(v_observations) o
                        where o.source = 'subscription' and o.observed_at = v_second);
    while coalesce(cardinality(v_pending), 0) > 0 loop
      select c.* into v_next from unnest(v_pending) as c
       order by coalesce(c.previous ->> 'price_id' = v_price_id and c.price_id <> v_price_id,
                         false) desc,
                exists (select 1 from unnest(v_pending) as other
                         where other.stripe_event_id <> c.stripe_event_id
                           and other.previous ->> 'price_id' = c.price_id
                           and other.price_id <> c.price_id) desc,
                c.stripe_event_id
       limit 1;
      v_pending := array(select c from unnest(v_pending) as c
                          where c.stripe_event_id <> v_next.stripe_event_id);
      v_price_id := v_next.price_id;
    end loop;
  end loop;
  if v_price_id is null then
    return;
  end if;
  insert into tally.period_plans (subscription_id, period_start, user_id, price_id)
  values (p_subscription_id, p_period_start, p_user_id, v_price_id)
  on conflict (subscription_id, period_start) do update set price_id = excluded.price_id;
end;
$$;

revoke all on function tally.resolve_period_plan(text,timestamp with time zone,uuid)
  from public, anon, authenticated;

-- Record what an event says about its subscription, then re-fold the
-- mirror and the plan of the period it names.
create function tally.observe(
  p_observation tally.subscription_observations
) returns void
language plpgsql
set search_path = ''
as $$
begin
  insert into tally.subscription_observations select p_observation.*
  on conflict do nothing;
  perform tally.resolve_subscription(p_observation.subscription_id);
  if p_observation.price_id is not null and p_observation.current_period_start is not null then
    perform tally.resolve_period_plan(p_observation.subscription_id,
                                      p_observation.current_period_start,
                                      p_observation.user_id);
  end if;
end;
$$;

revoke all on function tally.observe(tally.subscription_observations)
  from public, anon, authenticated;

-- Monthly credits of the newest known plan of a period (null if unknown).
create function tally.period_allowance(p_subscription_id text, p_period_start timestamptz)
returns integer
language plpgsql
stable
set search_path = ''
as $$
begin
  return (select pl.monthly_credits
            from tally.period_plans pp
            join public.plans pl on pl.stripe_price_id = pp.price_id
           where pp.subscription_id = p_subscription_id and pp.period_start = p_period_start);
end;
$$;

revoke all on function tally.period_allowance(text,timestamp with time zone)
  from public, anon, authenticated;

-- When a subscription stops earning periods: periods that start at or after
-- it are never granted.
create function tally.subscription_end(p_subscription tally.subscriptions)
returns timestamptz
language sql
immutable
as $$
  select case when tally.is_final_status(p_subscription.status)
              then coalesce(p_subscription.ended_at, p_subscription.canceled_at,
                            p_subscription.status_observed_at)
         end;
$$;

revoke all on function tally.subscription_end(tally.subscriptions)
  from public, anon, authenticated;

-- Does a paid period count? Not if it starts at or after its
-- subscription's end.
create function tally.is_period_eligible(p_subscription_id text, p_period_start timestamptz)
returns boolean
language plpgsql
stable
set search_path = ''
as $$
begin
  return not coalesce((select p_period_start >= tally.subscription_end(s)
                         from tally.subscriptions s
                        where s.subscription_id = p_subscription_id), false);
end;
$$;

revoke all on function tally.is_period_eligible(text,timestamp with time zone)
  from public, anon, authenticated;

-- Make p_period the account's plan period with p_plan_spent already spent
-- in it: plan credits become max(0, its allowance - p_plan_spent).
create function tally.enter_period(
  p_account tally.accounts, p_period tally.paid_periods, p_plan_spent integer, p_reason text
) returns void
language plpgsql
set search_path = ''
as $$
declare
  v_allowance integer := coalesce(
    tally.period_allowance(p_period.subscription_id, p_period.period_start), 0);
begin
  update tally.accounts
     set period_subscription_id = p_period.subscription_id,
         period_start = p_period.period_start,
         period_end = p_period.period_end,
         plan_allowance = v_allowance,
         plan_spent = p_plan_spent
   where user_id = p_account.user_id;
  perform tally.post_entry(
    p_account.user_id, 'subscription_period',
    greatest(0, v_allowance - p_plan_spent) - p_account.plan_credits, 0,
    p_business_key => format('period:%s:%s', p_period.subscription_id,
                             extract(epoch from p_period.period_start)::bigint),
    p_reason => p_reason);
end;
$$;

revoke all on function tally.enter_period(tally.accounts, tally.paid_periods, integer, text)
  from public, anon, authenticated;

-- The newest eligible paid period sets the plan credits: a newer one resets
-- them to its plan's monthly credits; the same one follows its plan changes
-- (max(0, new allowance - plan credits spent in it)); an older one (the
-- current period turned out to start after its subscription's end) takes
-- its place again with its allowance less what was spent in it and since.
-- The caller holds the account lock.
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
  select pp.* into v_period from tally.paid_periods pp
   where pp.user_id = p_user_id
     and tally.is_period_eligible(pp.subscription_id, pp.period_start)
   order by pp.period_start desc, pp.subscription_id desc
   limit 1;
  if not found then
    return;
  end if;

  if v_account.period_start is null
     or (v_period.period_start, v_period.subscription_id)
        > (v_account.period_start, v_account.period_subscription_id) then
    -- Remember what was spent in the period we leave, in case it comes back.
    update tally.paid_periods set plan_spent = v_account.plan_spent
     where subscription_id = v_account.period_subscription_id
       and period_start = v_account.period_start;
    perform tally.enter_period(v_account, v_period, 0, null);
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
  else
    -- Back to the older period, as if the withdrawn one had never been
    -- paid: its allowance less what was spent in it and since.
    perform tally.enter_period(
      v_account, v_period, v_period.plan_spent + v_account.plan_spent,
      format('period of %s starting %s withdrawn: the subscription ended before it',
             v_account.period_subscription_id, v_account.period_start));
  end if;
end;
$$;

revoke all on function tally.settle_plan_period(uuid)
  from public, anon, authenticated;

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

revoke all on function tally.refresh_subscription_summary(uuid)
  from public, anon, authenticated;

-- invoice.paid / invoice.payment_failed. Returns a note when nothing was
-- granted, null when a period was.
create function tally.apply_invoice(p_event jsonb, p_user_id uuid) returns text
language plpgsql
set search_path = ''
as $$
declare
  v_invoice jsonb := p_event -> 'invoice';
  v_is_paid boolean := p_event ->> 'type' = 'invoice.paid' and v_invoice ->> 'status' = 'paid';
  v_subscription_id text := v_invoice ->> 'subscription_id';
  v_period_start timestamptz := tally.to_time(v_invoice -> 'period_start');
  v_is_new_period boolean;
  v_note text;
begin
  if v_subscription_id is null then
    return 'not a subscription invoice: nothing to grant';
  end if;
  if v_invoice ->> 'price_id' is not null and not exists (
       select 1 from public.plans where stripe_price_id = v_invoice ->> 'price_id') then
    perform tally.reject(format('unknown price %s: no plan has it', v_invoice ->> 'price_id'));
  end if;
  perform tally.observe(row(
    v_subscription_id, p_event ->> 'id', p_user_id, 'invoice', tally.to_time(p_event -> 'created'),
    v_invoice ->> 'customer_id', null, null, null, null, null, null,
    v_invoice ->> 'price_id', v_period_start, tally.to_time(v_invoice -> 'period_end'),
    v_is_paid, v_invoice ->> 'billing_reason', v_invoice ->> 'charge_id',
    v_invoice ->> 'payment_intent_id',
    coalesce(tally.to_time(v_invoice -> 'created'), tally.to_time(p_event -> 'created'))
  )::tally.subscription_observations);

  if not v_is_paid then
    v_note := 'payment not completed: no credits';
  elsif v_invoice ->> 'price_id' is null or v_period_start is null
        or v_invoice ->> 'period_end' is null then
    v_note := 'no subscription line with a whole period: no period to grant';
  else
    insert into tally.paid_periods (subscription_id, period_start, period_end, user_id,
                                    invoice_id, stripe_event_id)
    values (v_subscription_id, v_period_start,
            tally.to_time(v_invoice -> 'period_end'), p_user_id, v_invoice ->> 'id',
            p_event ->> 'id')
    on conflict do nothing;
    v_is_new_period := found;
    if not tally.is_period_eligible(v_subscription_id, v_period_start) then
      v_note := 'the subscription ended before this period: no grant';
    elsif not v_is_new_period then
      v_note := 'period already granted';
    end if;
    perform tally.settle_plan_period(p_user_id);
  end if;
  perform tally.refresh_subscription_summary(p_user_id);
  return v_note;
end;
$$;

revoke all on function tally.apply_invoice(jsonb,uuid)
  from public, anon, authenticated;

-- customer.subscription.created / updated / deleted.
create function tally.apply_subscription(p_event jsonb, p_user_id uuid) returns text
language plpgsql
set search_path = ''
as $$
declare
  v_subscription jsonb := p_event -> 'subscription';
begin
  if v_subscription ->> 'price_id' is not null and not exists (
       select 1 from public.plans where stripe_price_id = v_subscription ->> 'price_id') then
    perform tally.reject(format('unknown price %s: no plan has it',
                                v_subscription ->> 'price_id'));
  end if;
  perform tally.observe(row(
    v_subscription ->> 'id', p_event ->> 'id', p_user_id, 'subscription',
    tally.to_time(p_event -> 'created'), v_subscription ->> 'customer_id',
    v_subscription ->> 'status', v_subscription -> 'previous',
    (v_subscription ->> 'cancel_at_period_end')::boolean,
    tally.to_time(v_subscription -> 'canceled_at'), tally.to_time(v_subscription -> 'ended_at'),
    tally.to_time(v_subscription -> 'created'), v_subscription ->> 'price_id',
    tally.to_time(v_subscription -> 'current_period_start'),
    tally.to_time(v_subscription -> 'current_period_end'), null, null, null, null, null
  )::tally.subscription_observations);
  perform tally.settle_plan_period(p_user_id);
  perform tally.refresh_subscription_summary(p_user_id);
  return null;
end;
$$;

revoke all on function tally.apply_subscription(jsonb,uuid)
  from public, anon, authenticated;
