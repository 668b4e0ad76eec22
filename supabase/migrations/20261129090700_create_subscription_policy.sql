-- Subscriptions and the rule that sets plan credits. Every subscription
-- event and every invoice of a subscription is kept as an observation; the
-- subscription mirror is folded from all of them in a canonical order (by
-- Stripe's created; within one second by following
-- data.previous_attributes from the state before it), so it is a function
-- of the set of events, never of their arrival order.
--
-- Plan credits follow verified money. A period's allowance is folded in
-- Stripe time order from what was paid for it: the plan its invoice billed,
-- plus what each paid upgrade invoice (billing_reason subscription_update)
-- pays for with its proration lines, lowered at once to the new plan's
-- credits by a downgrade. Plan credits are max(0, allowance - taken back by
-- refunds and open disputes of those invoices - spent in the period), where
-- they take back only what their invoice still adds to the allowance (what
-- a downgrade removed is not taken again).

-- Whole numbers may arrive as 5.0: read them as such.
create function tally.to_time(p_seconds jsonb) returns timestamptz
language sql
immutable
as $$
  select case when p_seconds is null or p_seconds = 'null'::jsonb then null
              else to_timestamp((p_seconds #>> '{}')::numeric) end;
$$;

revoke all on function tally.to_time(jsonb) from public, anon, authenticated;

create function tally.to_bigint(p_value jsonb) returns bigint
language sql
immutable
as $$
  select (p_value #>> '{}')::numeric::bigint;
$$;

revoke all on function tally.to_bigint(jsonb) from public, anon, authenticated;

-- Monthly credits of a plan's Stripe price, or null when no plan has it
-- (active or not: a customer on a retired plan keeps getting it).
create function tally.plan_credits_of(p_price_id text) returns integer
language plpgsql
stable
as $$
begin
  return (select pl.monthly_credits from public.plans pl where pl.stripe_price_id = p_price_id);
end;
$$;

revoke all on function tally.plan_credits_of(text) from public, anon, authenticated;

create function tally.plan_name_of(p_price_id text) returns text
language plpgsql
stable
as $$
begin
  return (select coalesce((select pl.name from public.plans pl where pl.stripe_price_id = p_price_id),
                  p_price_id));
end;
$$;

revoke all on function tally.plan_name_of(text) from public, anon, authenticated;

-- The item of a subscription (or of its previous state) that is the plan:
-- the one whose price is in the catalog; other items (a metered price, say)
-- are ignored. With p_strict, two different catalog plans, or prices of
-- which none is a plan, are rejected.
create function tally.plan_item(p_items jsonb, p_strict boolean) returns jsonb
language plpgsql
stable
as $$
declare
  v_plans jsonb;
  v_unknown text;
begin
  select jsonb_agg(item order by item ->> 'price_id'),
         min(item ->> 'price_id') filter (where not exists (
           select 1 from public.plans pl where pl.stripe_price_id = item ->> 'price_id'))
    into v_plans, v_unknown
    from jsonb_array_elements(coalesce(p_items, '[]'::jsonb)) as item
   where item ->> 'price_id' is not null;
  select jsonb_agg(item) into v_plans
    from jsonb_array_elements(coalesce(v_plans, '[]'::jsonb)) as item
   where exists (select 1 from public.plans pl where pl.stripe_price_id = item ->> 'price_id');
  if p_strict and v_plans is null and v_unknown is not null then
    perform tally.reject(format('unknown price %s: no plan has it', v_unknown));
  end if;
  if p_strict and (select count(distinct item ->> 'price_id')
                     from jsonb_array_elements(coalesce(v_plans, '[]'::jsonb)) as item) > 1 then
    perform tally.reject(format('two catalog plans on one subscription: %s',
                                (select string_agg(distinct item ->> 'price_id', ', ')
                                   from jsonb_array_elements(v_plans) as item)));
  end if;
  return v_plans -> 0;
end;
$$;

revoke all on function tally.plan_item(jsonb, boolean) from public, anon, authenticated;

create function tally.is_final_status(p_status text) returns boolean
language sql
immutable
as $$
  select p_status in ('canceled', 'incomplete_expired');
$$;

revoke all on function tally.is_final_status(text) from public, anon, authenticated;

-- Breaks ties between two states of one second by how far along they are.
create function tally.status_rank(p_status text) returns integer
language sql
immutable
as $$
  select array_position(
    array['incomplete', 'trialing', 'active', 'past_due', 'unpaid', 'paused',
          'incomplete_expired', 'canceled'], p_status);
$$;

revoke all on function tally.status_rank(text) from public, anon, authenticated;

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

revoke all on function tally.left_state(jsonb, text, tally.subscription_observations)
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

revoke all on function tally.next_in_second(tally.subscription_observations, text,
                                            tally.subscription_observations[])
  from public, anon, authenticated;

-- What a paid or failed invoice does to a subscription's status. A failed
-- upgrade invoice (billing_reason subscription_update) moves nothing: with
-- payment_behavior pending_if_incomplete (what /billing/plan uses) Stripe
-- keeps the subscription as it was, with a pending_update, and with the
-- other behaviours Stripe sends the subscription's own past_due or
-- incomplete state; either way its subscription events say what it is.
create function tally.status_after_invoice(
  p_status text, p_is_paid boolean, p_billing_reason text
) returns text
language sql
immutable
as $$
  select case
    when not p_is_paid and p_billing_reason = 'subscription_update' then p_status
    when p_status is null and p_is_paid then 'active'
    when p_status is null and p_billing_reason = 'subscription_create' then 'incomplete'
    when p_status is null then 'past_due'
    when p_is_paid and p_status in ('incomplete', 'past_due', 'unpaid') then 'active'
    when not p_is_paid and p_status in ('active', 'trialing') then 'past_due'
    else p_status
  end;
$$;

revoke all on function tally.status_after_invoice(text, boolean, text)
  from public, anon, authenticated;

-- Fold a subscription's observations into its mirror row. Within a second,
-- subscription events go first (chained by previous_attributes), then the
-- invoices' payment results. Once canceled, nothing un-cancels it.
create function tally.resolve_subscription(p_subscription_id text) returns void
language plpgsql
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
    return;  -- nothing says what it is yet (only failed upgrade invoices)
  end if;

  -- Fields come from subscription events; with none yet, from the newest
  -- invoice with a plan line, else the newest invoice.
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

revoke all on function tally.resolve_subscription(text) from public, anon, authenticated;

-- Record what an event says about its subscription and re-fold the mirror.
-- Events mostly arrive in Stripe's order: then the newest observation moves
-- the mirror one step, as the fold would, instead of re-folding the whole
-- history (a cost that would grow with every renewal). Anything else (an
-- older or same-second observation, no subscription event yet) re-folds.
create function tally.observe(p_observation tally.subscription_observations) returns void
language plpgsql
as $$
declare
  v_mirror tally.subscriptions;
  o tally.subscription_observations := p_observation;
begin
  insert into tally.subscription_observations select o.*
  on conflict do nothing;
  if not found then
    return;  -- already observed: the mirror already folds it
  end if;
  select * into v_mirror from tally.subscriptions s where s.subscription_id = o.subscription_id;
  if not found or v_mirror.state_created_at = '-infinity'
     or exists (select 1 from tally.subscription_observations x
                 where x.subscription_id = o.subscription_id and x.observed_at >= o.observed_at
                   and x.stripe_event_id <> o.stripe_event_id) then
    perform tally.resolve_subscription(o.subscription_id);
    return;
  end if;
  if tally.is_final_status(v_mirror.status) and not tally.is_final_status(o.status) then
    return;  -- nothing moves a subscription out of canceled
  end if;
  if o.source = 'invoice' then
    update tally.subscriptions s
       set status = tally.status_after_invoice(s.status, o.is_paid, o.billing_reason),
           status_observed_at = o.observed_at, updated_at = now()
     where s.subscription_id = o.subscription_id;
    return;
  end if;
  update tally.subscriptions s
     set user_id = o.user_id,
         customer_id = coalesce(o.customer_id, s.customer_id),
         status = o.status,
         price_id = o.price_id,
         current_period_start = o.current_period_start,
         current_period_end = o.current_period_end,
         cancel_at_period_end = coalesce(o.cancel_at_period_end, false),
         canceled_at = o.canceled_at,
         ended_at = o.ended_at,
         subscription_created_at = coalesce(o.subscription_created_at, s.subscription_created_at),
         state_created_at = o.observed_at,
         status_observed_at = o.observed_at,
         updated_at = now()
   where s.subscription_id = o.subscription_id;
end;
$$;

revoke all on function tally.observe(tally.subscription_observations)
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

create function tally.is_period_eligible(p_subscription_id text, p_period_start timestamptz)
returns boolean
language plpgsql
stable
as $$
begin
  return not coalesce((select p_period_start >= tally.subscription_end(s)
                         from tally.subscriptions s
                        where s.subscription_id = p_subscription_id), false);
end;
$$;

revoke all on function tally.is_period_eligible(text, timestamptz)
  from public, anon, authenticated;

-- What an upgrade invoice's proration lines pay for in a period: the sum
-- over its lines of the line plan's monthly credits times the share of the
-- period the line covers, credit lines (unused time of the old plan)
-- negative; rounded down; never below zero.
create function tally.proration_credits(
  p_lines jsonb, p_period_start timestamptz, p_period_end timestamptz
) returns integer
language plpgsql
stable
as $$
begin
  return (
    select greatest(0, coalesce(floor(sum(
             case when (line ->> 'is_credit')::boolean then -1 else 1 end
             * tally.plan_credits_of(line ->> 'price_id')
             * greatest(0, extract(epoch from least(tally.to_time(line -> 'period_end'),
                                                    p_period_end)
                                           - greatest(tally.to_time(line -> 'period_start'),
                                                      p_period_start)))
             / nullif(extract(epoch from p_period_end - p_period_start), 0))), 0))::integer
      from jsonb_array_elements(p_lines) as line);
end;
$$;

revoke all on function tally.proration_credits(jsonb, timestamptz, timestamptz)
  from public, anon, authenticated;

-- Place the subscription's paid upgrade invoices whose period was not known
-- yet in the paid period that contains their lines, and say what they add.
create function tally.place_prorations(p_subscription_id text) returns void
language plpgsql
as $$
begin
  -- Most invoices find none waiting: one index probe, then nothing.
  if not exists (select 1 from tally.invoices i
                  where i.subscription_id = p_subscription_id and i.period_start is null) then
    return;
  end if;
  update tally.invoices i
     set period_start = p.period_start,
         granted = tally.proration_credits(i.proration_lines, p.period_start, p.period_end)
    from tally.paid_periods p
   where i.subscription_id = p_subscription_id and i.kind = 'proration'
     and i.period_start is null
     and p.subscription_id = i.subscription_id
     and p.period_start <= (select min(tally.to_time(line -> 'period_start'))
                              from jsonb_array_elements(i.proration_lines) as line)
     and p.period_end > (select min(tally.to_time(line -> 'period_start'))
                           from jsonb_array_elements(i.proration_lines) as line);
end;
$$;

revoke all on function tally.place_prorations(text) from public, anon, authenticated;

-- The price a paid upgrade invoice moves to: its proration line that is
-- not a credit.
create function tally.upgrade_price(p_invoice tally.invoices) returns text
language plpgsql
immutable
as $$
begin
  return (select min(line ->> 'price_id')
    from jsonb_array_elements(p_invoice.proration_lines) as line
   where not (line ->> 'is_credit')::boolean);
end;
$$;

revoke all on function tally.upgrade_price(tally.invoices) from public, anon, authenticated;

-- A paid period's allowance, folded in Stripe time order: its invoice's
-- plan, plus what each paid upgrade invoice placed in it pays for (at the
-- invoice's created), lowered to the new plan of each change of plan naming
-- the period (at the update's created). Within one second the updates
-- follow their chain of previous_attributes from the plan the invoice
-- billed, as for the mirror, and an upgrade comes right after the change
-- that moved to its plan; one whose change is not in that second comes
-- first. Either way a same-second upgrade and downgrade never add more than
-- was paid.
--
-- Refunds and open (or lost) disputes are folded alongside: two more
-- running values start from the plan less what they target of the period's
-- own invoices (tally.period_clawbacks), add what each upgrade still adds
-- after them, and are lowered by the same changes of plan. What refunds
-- take back (refunded) is the allowance less the first; what disputes take
-- back (disputed), the first less the second. So money given back takes
-- back what its invoice still adds to the allowance, never what a
-- downgrade already removed: a refunded upgrade followed by a downgrade to
-- the old plan leaves the old plan's period whole, whatever the order.
create function tally.period_allowance(p_subscription_id text, p_period_start timestamptz,
                                       out allowance integer, out refunded integer,
                                       out disputed integer)
language plpgsql
stable
as $$
declare
  v_period tally.paid_periods;
  v_allowance integer;
  v_clawbacks record;
  v_after_refunds integer;  -- the allowance with each invoice adding what its refunds left
  v_kept integer;  -- ... what its refunds and open or lost disputes left
  v_at integer;  -- where an upgrade invoice is in v_clawbacks' arrays
  v_credits integer;
  v_second timestamptz;
  v_pending tally.subscription_observations[];
  v_upgrades tally.invoices[];
  v_state tally.subscription_observations;
  v_next tally.subscription_observations;
  v_upgrade tally.invoices;
  v_plan text;  -- the plan reached, as far as the walk has gone
  v_plan_since timestamptz;  -- the second it was reached
begin
  select * into v_period from tally.paid_periods p
   where p.subscription_id = p_subscription_id and p.period_start = p_period_start;
  if not found then
    return;
  end if;
  v_allowance := coalesce(tally.plan_credits_of(v_period.price_id), 0);
  -- Assigned, not selected from: a call in FROM starts an executor each time.
  v_clawbacks := tally.period_clawbacks(p_subscription_id, p_period_start);
  v_after_refunds := v_allowance - v_clawbacks.refunded;
  v_kept := v_after_refunds - v_clawbacks.disputed;
  v_plan := v_period.price_id;
  v_plan_since := v_period.invoice_created_at;
  -- The chain of same-second updates starts from the plan the invoice billed.
  v_state.subscription_id := p_subscription_id;
  v_state.price_id := v_period.price_id;
  for v_second in
    select i.invoice_created_at from tally.invoices i
     where i.subscription_id = p_subscription_id and i.period_start = p_period_start
       and i.kind = 'proration' and i.granted is not null
    union
    select o.observed_at from tally.subscription_observations o
     where o.subscription_id = p_subscription_id and o.current_period_start = p_period_start
       and o.source = 'subscription' and o.price_id is not null
       and o.observed_at >= v_period.invoice_created_at
    order by 1
  loop
    v_pending := array(
      select o from tally.subscription_observations o
       where o.subscription_id = p_subscription_id and o.current_period_start = p_period_start
         and o.source = 'subscription' and o.price_id is not null
         and o.observed_at = v_second and o.observed_at >= v_period.invoice_created_at);
    v_upgrades := array(
      select i from tally.invoices i
       where i.subscription_id = p_subscription_id and i.period_start = p_period_start
         and i.kind = 'proration' and i.granted is not null and i.invoice_created_at = v_second
       order by i.invoice_id);
    -- Upgrades whose change is not among this second's events come first.
    foreach v_upgrade in array v_upgrades loop
      if not exists (select 1 from unnest(v_pending) o
                      where o.price_id = tally.upgrade_price(v_upgrade)) then
        v_at := array_position(v_clawbacks.upgrade_ids, v_upgrade.invoice_id);
        v_allowance := v_allowance + v_upgrade.granted;
        v_after_refunds := v_after_refunds
                           + coalesce(v_clawbacks.upgrade_after_refunds[v_at], v_upgrade.granted);
        v_kept := v_kept + coalesce(v_clawbacks.upgrade_kept[v_at], v_upgrade.granted);
        v_upgrades := array(select u from unnest(v_upgrades) u
                             where u.invoice_id <> v_upgrade.invoice_id);
      end if;
    end loop;
    while coalesce(cardinality(v_pending), 0) > 0 loop
      v_next := tally.next_in_second(v_state, v_state.status, v_pending);
      v_pending := array(select c from unnest(v_pending) as c
                          where c.stripe_event_id <> v_next.stripe_event_id);
      -- A change of plan lowers the allowance (a downgrade at once): an
      -- update whose previous_attributes name the plan, or an event of a
      -- later second than the plan reached showing another plan (the
      -- change's own update not delivered yet, say a cancellation after a
      -- downgrade). An event showing the plan reached (a pending update
      -- waiting for its payment, a cancellation) says nothing about it, nor
      -- does one of the same second, whose order against the change is
      -- unknown (a subscription's created event, say).
      if v_next.previous ? 'price_id'
         or (v_next.price_id is distinct from v_plan and v_second > v_plan_since) then
        v_credits := tally.plan_credits_of(v_next.price_id);
        v_allowance := least(v_allowance, coalesce(v_credits, v_allowance));
        v_after_refunds := least(v_after_refunds, coalesce(v_credits, v_after_refunds));
        v_kept := least(v_kept, coalesce(v_credits, v_kept));
        if v_next.price_id is distinct from v_plan then
          v_plan := v_next.price_id;
          v_plan_since := v_second;
        end if;
      end if;
      v_state := v_next;
      select u.* into v_upgrade from unnest(v_upgrades) u
       where tally.upgrade_price(u) = v_next.price_id
       order by u.invoice_id
       limit 1;
      if found then
        v_at := array_position(v_clawbacks.upgrade_ids, v_upgrade.invoice_id);
        v_allowance := v_allowance + v_upgrade.granted;
        v_after_refunds := v_after_refunds
                           + coalesce(v_clawbacks.upgrade_after_refunds[v_at], v_upgrade.granted);
        v_kept := v_kept + coalesce(v_clawbacks.upgrade_kept[v_at], v_upgrade.granted);
        v_upgrades := array(select u from unnest(v_upgrades) u
                             where u.invoice_id <> v_upgrade.invoice_id);
      end if;
    end loop;
    foreach v_upgrade in array v_upgrades loop
      v_at := array_position(v_clawbacks.upgrade_ids, v_upgrade.invoice_id);
      v_allowance := v_allowance + v_upgrade.granted;
      v_after_refunds := v_after_refunds
                         + coalesce(v_clawbacks.upgrade_after_refunds[v_at], v_upgrade.granted);
      v_kept := v_kept + coalesce(v_clawbacks.upgrade_kept[v_at], v_upgrade.granted);
    end loop;
  end loop;
  allowance := v_allowance;
  refunded := v_allowance - v_after_refunds;
  disputed := v_after_refunds - v_kept;
end;
$$;

revoke all on function tally.period_allowance(text, timestamptz) from public, anon, authenticated;

-- What the ledger says about a change of plan credits.
create type tally.plan_context as (
  stripe_event_id text,
  stripe_object_id text,
  why text
);

-- Move a locked account to plan credits max(0, allowance - refunded -
-- disputed - spent) with the values given, in one entry of p_kind; the
-- shortfall is what a clawback could not take because it was spent.
create function tally.post_plan_change(
  p_account tally.accounts, p_kind text, p_allowance integer, p_refunded integer,
  p_disputed integer, p_context tally.plan_context, p_description text,
  p_always boolean default false
) returns tally.accounts
language plpgsql
as $$
declare
  v_target integer := greatest(0, p_allowance - p_refunded - p_disputed - p_account.plan_spent);
  v_taken_back integer := (p_refunded + p_disputed)
                          - (p_account.plan_refunded + p_account.plan_disputed);
  v_account tally.accounts := p_account;
  v_entry tally.ledger_entries;
begin
  if (p_allowance, p_refunded, p_disputed)
     is distinct from (p_account.plan_allowance, p_account.plan_refunded,
                       p_account.plan_disputed) then
    update tally.accounts
       set plan_allowance = p_allowance, plan_refunded = p_refunded, plan_disputed = p_disputed
     where user_id = p_account.user_id
    returning * into v_account;
  end if;
  if v_target <> p_account.plan_credits or p_always or v_taken_back > 0 then
    v_entry := tally.post_entry(
      p_account.user_id, p_kind, v_target - p_account.plan_credits, 0,
      tally.cause(p_description, p_context.stripe_event_id, p_context.stripe_object_id,
                  p_business_key => format('%s:%s:%s', p_kind, v_account.period_subscription_id,
                                           extract(epoch from v_account.period_start)::bigint),
                  p_reason => p_context.why),
      p_shortfall => case when v_taken_back > 0
                          then greatest(0, v_taken_back - greatest(0, p_account.plan_credits - v_target))
                          else 0 end);
    -- What post_entry's update wrote (nothing else writes the locked row),
    -- instead of reading the row back.
    v_account.plan_credits := v_entry.plan_after;
    v_account.addon_credits := v_entry.addon_after;
    v_account.updated_at := now();
  end if;
  return v_account;
end;
$$;

revoke all on function tally.post_plan_change(tally.accounts, text, integer, integer, integer,
                                              tally.plan_context, text, boolean)
  from public, anon, authenticated;

-- Make p_period the account's plan period with p_plan_spent already spent
-- in it: plan credits become its allowance (p_allowance, as
-- tally.period_allowance says) less that (clawbacks follow).
create function tally.enter_period(
  p_account tally.accounts, p_period tally.paid_periods, p_allowance integer,
  p_plan_spent integer, p_context tally.plan_context, p_withdrawn boolean
) returns tally.accounts
language plpgsql
as $$
declare
  v_allowance integer := coalesce(p_allowance, 0);
  v_account tally.accounts;
begin
  -- The allowance too, so post_plan_change below has no row to write
  -- before its entry.
  update tally.accounts
     set period_subscription_id = p_period.subscription_id,
         period_start = p_period.period_start,
         period_end = p_period.period_end,
         plan_allowance = v_allowance,
         plan_refunded = 0,
         plan_disputed = 0,
         plan_spent = p_plan_spent
   where user_id = p_account.user_id
  returning * into v_account;
  return tally.post_plan_change(
    v_account, 'subscription_period', v_allowance, 0, 0, p_context,
    case when p_withdrawn then
      format('Back to the %s period from %s: the later period was withdrawn (its subscription ended before it)',
             tally.plan_name_of(p_period.price_id), to_char(p_period.period_start, 'YYYY-MM-DD'))
    else
      format('%s plan: %s credits for the period from %s to %s, paid by invoice %s',
             tally.plan_name_of(p_period.price_id), v_allowance,
             to_char(p_period.period_start, 'YYYY-MM-DD'), to_char(p_period.period_end, 'YYYY-MM-DD'),
             p_period.invoice_id)
    end,
    p_always => true);
end;
$$;

revoke all on function tally.enter_period(tally.accounts, tally.paid_periods, integer, integer,
                                          tally.plan_context, boolean)
  from public, anon, authenticated;

-- Bring a locked account's plan credits in line with what was paid: the
-- newest eligible paid period is the current one (a newer one resets plan
-- credits; an older one takes the place of a withdrawn one, with what was
-- spent in it and since); then its allowance, refunds and disputes, as
-- tally.period_allowance folds them. A change of the allowance is one
-- plan_change entry, which also carries what refunds and disputes no
-- longer take back because the change removed it first (a downgrade below
-- a refunded upgrade); what they take back anew is their own entry.
create function tally.settle_plan(p_user_id uuid, p_context tally.plan_context) returns void
language plpgsql
as $$
declare
  v_account tally.accounts;
  v_period tally.paid_periods;
  v_fold record;
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
  -- Folded once: entering the period and the changes below all use it.
  v_fold := tally.period_allowance(v_period.subscription_id, v_period.period_start);
  v_allowance := v_fold.allowance;

  if v_account.period_start is null
     or (v_period.period_start, v_period.subscription_id)
        > (v_account.period_start, v_account.period_subscription_id) then
    -- Remember what was spent in the period we leave, in case it comes back.
    update tally.paid_periods set plan_spent = v_account.plan_spent
     where subscription_id = v_account.period_subscription_id
       and period_start = v_account.period_start;
    v_account := tally.enter_period(v_account, v_period, v_allowance, 0, p_context, false);
  elsif (v_period.period_start, v_period.subscription_id)
        < (v_account.period_start, v_account.period_subscription_id) then
    v_account := tally.enter_period(v_account, v_period, v_allowance,
                                    v_period.plan_spent + v_account.plan_spent, p_context, true);
  end if;

  if v_allowance <> v_account.plan_allowance then
    v_account := tally.post_plan_change(
      v_account, 'plan_change', v_allowance, least(v_account.plan_refunded, v_fold.refunded),
      least(v_account.plan_disputed, v_fold.disputed), p_context,
      format('Allowance of this period now %s credits (%s)', v_allowance,
             coalesce(p_context.why, 'plan changed'))
      || case when v_fold.refunded + v_fold.disputed
                   < v_account.plan_refunded + v_account.plan_disputed
              then format('; refunds and disputes now take back %s of it: the change removed the rest of what they gave back',
                          v_fold.refunded + v_fold.disputed)
              else '' end);
  end if;
  if v_fold.refunded <> v_account.plan_refunded then
    v_account := tally.post_plan_change(
      v_account, 'refund_clawback', v_allowance, v_fold.refunded, v_account.plan_disputed,
      p_context,
      format('Refund of this period''s payments: %s plan credits taken back in all',
             v_fold.refunded));
  end if;
  if v_fold.disputed <> v_account.plan_disputed then
    v_account := tally.post_plan_change(
      v_account,
      case when v_fold.disputed > v_account.plan_disputed then 'dispute_clawback'
           else 'dispute_reinstated' end,
      v_allowance, v_account.plan_refunded, v_fold.disputed, p_context,
      case when v_fold.disputed > v_account.plan_disputed
           then format('Dispute of this period''s payment: %s plan credits taken back while it is open',
                       v_fold.disputed)
           else 'Dispute closed in your favour: plan credits given back' end);
  end if;
end;
$$;

revoke all on function tally.settle_plan(uuid, tally.plan_context) from public, anon, authenticated;

-- Copy the user's most relevant subscription (not ended first, then newest
-- period, then newest) onto the account, for credit_balances.
create function tally.refresh_subscription_summary(p_user_id uuid) returns void
language plpgsql
as $$
declare
  v_subscription tally.subscriptions;
begin
  select * into v_subscription from tally.subscriptions
   where user_id = p_user_id
   order by tally.is_final_status(status), current_period_start desc nulls last,
            subscription_created_at desc nulls last, subscription_id desc
   limit 1;
  if not found then
    return;
  end if;
  update tally.accounts a
     set subscription_id = v_subscription.subscription_id,
         subscription_status = v_subscription.status,
         plan_key = (select pl.key from public.plans pl
                      where pl.stripe_price_id = v_subscription.price_id),
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

-- List a second paid subscription of one user for the operator (checkout
-- prevents it; a subscription made elsewhere can still appear).
create function tally.review_second_subscription(p_user_id uuid, p_subscription_id text,
                                                 p_event_id text)
returns void
language plpgsql
as $$
declare
  v_others jsonb;
begin
  select jsonb_agg(s.subscription_id order by s.subscription_id) into v_others
    from tally.subscriptions s
   where s.user_id = p_user_id and s.subscription_id <> p_subscription_id
     and not tally.is_final_status(s.status)
     and exists (select 1 from tally.paid_periods p where p.subscription_id = s.subscription_id);
  if v_others is not null then
    insert into tally.operator_reviews (kind, object_id, user_id, stripe_event_id, details)
    values ('second_subscription', p_subscription_id, p_user_id, p_event_id,
            jsonb_build_object('other_subscriptions', v_others))
    on conflict (kind, object_id) do nothing;
  end if;
end;
$$;

revoke all on function tally.review_second_subscription(uuid, text, text)
  from public, anon, authenticated;

-- The lines of an invoice that belong to its subscription, read once:
-- the prices of its catalog plan lines (not prorations), the newest of
-- those lines, its catalog proration lines, and a price no plan has.
-- One row; a SQL function returning a table, so the planner inlines it
-- into the caller's query (no call of its own per invoice).
create function tally.invoice_lines(p_invoice jsonb)
returns table (plan_prices text[], plan_line jsonb, proration_lines jsonb,
               unknown_price text, line_count integer)
language sql
stable
as $$
  select array_agg(distinct l.price_id) filter (where l.is_plan and not l.is_proration),
         (array_agg(l.line order by l.period_start desc nulls last)
            filter (where l.is_plan and not l.is_proration))[1],
         jsonb_agg(jsonb_build_object('price_id', l.price_id,
                                      'is_credit', l.line -> 'is_credit',
                                      'period_start', l.line -> 'period_start',
                                      'period_end', l.line -> 'period_end'))
           filter (where l.is_plan and l.is_proration),
         min(l.price_id) filter (where not l.is_plan),
         count(*)::integer
    from (select line, line ->> 'price_id' as price_id,
                 coalesce((line ->> 'is_proration')::boolean, false) as is_proration,
                 (line ->> 'period_start')::bigint as period_start,
                 exists (select 1 from public.plans pl
                          where pl.stripe_price_id = line ->> 'price_id') as is_plan
            from jsonb_array_elements(coalesce(p_invoice -> 'lines', '[]'::jsonb)) as line
           where coalesce(line ->> 'subscription_id', p_invoice ->> 'subscription_id')
                 = p_invoice ->> 'subscription_id'
          offset 0) as l;  -- kept a subquery: each line's plan lookup runs once
$$;

revoke all on function tally.invoice_lines(jsonb) from public, anon, authenticated;

-- Which invoice a payment paid; wakes the refunds and disputes that
-- waited for it.
create function tally.record_invoice_payment(p_payment_key text, p_invoice_id text)
returns void
language plpgsql
as $$
begin
  if p_payment_key is null or p_invoice_id is null then
    return;
  end if;
  perform tally.lock_key(p_payment_key);
  insert into tally.invoice_payments (payment_key, invoice_id)
  values (p_payment_key, p_invoice_id)
  on conflict (payment_key) do nothing;
  if found then
    perform tally.wake(p_payment_key);
  end if;
end;
$$;

revoke all on function tally.record_invoice_payment(text, text) from public, anon, authenticated;

-- A paid invoice's plan line pays its period: the business key is the
-- subscription and the period's start; if two invoices claim one period,
-- the earliest decides its plan, whatever the arrival order.
create function tally.record_paid_period(p_event jsonb, p_user_id uuid, p_line jsonb,
                                         p_created timestamptz)
returns boolean
language plpgsql
as $$
declare
  v_invoice jsonb := p_event -> 'invoice';
  v_is_new boolean;
begin
  insert into tally.paid_periods as p (subscription_id, period_start, period_end, user_id,
                                       price_id, invoice_id, invoice_created_at,
                                       stripe_event_id)
  values (v_invoice ->> 'subscription_id', tally.to_time(p_line -> 'period_start'),
          tally.to_time(p_line -> 'period_end'), p_user_id, p_line ->> 'price_id',
          v_invoice ->> 'id', p_created, p_event ->> 'id')
  on conflict (subscription_id, period_start) do update
     set price_id = excluded.price_id, invoice_id = excluded.invoice_id,
         invoice_created_at = excluded.invoice_created_at, period_end = excluded.period_end
   where (excluded.invoice_created_at, excluded.invoice_id)
         < (p.invoice_created_at, p.invoice_id)
  returning xmax = 0 into v_is_new;
  insert into tally.invoices (invoice_id, kind, user_id, subscription_id, invoice_created_at,
                              amount_paid, currency, period_start, granted, stripe_event_id)
  values (v_invoice ->> 'id', 'period', p_user_id, v_invoice ->> 'subscription_id', p_created,
          tally.to_bigint(v_invoice -> 'amount_paid'), v_invoice ->> 'currency',
          tally.to_time(p_line -> 'period_start'),
          coalesce(tally.plan_credits_of(p_line ->> 'price_id'), 0), p_event ->> 'id')
  on conflict (invoice_id, kind) do nothing;
  return coalesce(v_is_new, false);
end;
$$;

revoke all on function tally.record_paid_period(jsonb, uuid, jsonb, timestamptz)
  from public, anon, authenticated;

-- A paid upgrade invoice (billing_reason subscription_update): what its
-- proration lines pay for is added to the period that contains them, once
-- that period is known. Business key: the invoice.
create function tally.record_proration_invoice(p_event jsonb, p_user_id uuid,
                                               p_lines jsonb, p_created timestamptz)
returns void
language plpgsql
as $$
begin
  insert into tally.invoices (invoice_id, kind, user_id, subscription_id, invoice_created_at,
                              amount_paid, currency, proration_lines, stripe_event_id)
  values (p_event -> 'invoice' ->> 'id', 'proration', p_user_id,
          p_event -> 'invoice' ->> 'subscription_id', p_created,
          tally.to_bigint(p_event -> 'invoice' -> 'amount_paid'),
          p_event -> 'invoice' ->> 'currency', p_lines, p_event ->> 'id')
  on conflict (invoice_id, kind) do nothing;
end;
$$;

revoke all on function tally.record_proration_invoice(jsonb, uuid, jsonb, timestamptz)
  from public, anon, authenticated;

-- invoice.paid / invoice.payment_failed. Returns a note when nothing was
-- granted, null when something was.
create function tally.apply_invoice(p_event jsonb, p_user_id uuid) returns text
language plpgsql
as $$
declare
  v_invoice jsonb := p_event -> 'invoice';
  v_invoice_id text := v_invoice ->> 'id';
  v_subscription_id text := v_invoice ->> 'subscription_id';
  v_reason text := v_invoice ->> 'billing_reason';
  v_is_paid boolean := p_event ->> 'type' = 'invoice.paid' and v_invoice ->> 'status' = 'paid';
  v_created timestamptz := coalesce(tally.to_time(v_invoice -> 'created'),
                                    tally.to_time(p_event -> 'created'));
  v_lines record;
  v_is_upgrade boolean;
  v_is_other_only boolean;
  v_note text;
begin
  if v_subscription_id is null then
    return 'not a subscription invoice: nothing to grant';
  end if;
  select * into v_lines from tally.invoice_lines(v_invoice);
  if cardinality(v_lines.plan_prices) > 1 then
    perform tally.reject(format('two catalog plans on one invoice: %s',
                                array_to_string(v_lines.plan_prices, ', ')));
  end if;
  -- Never null (an invoice without billing_reason is no upgrade): a null here
  -- would let a paid invoice without a plan line pass the check below.
  v_is_upgrade := v_reason is not distinct from 'subscription_update'
                  and v_lines.proration_lines is not null;
  if v_lines.plan_line is null and v_lines.proration_lines is null
     and v_lines.unknown_price is not null then
    -- Only prices no plan has (a metered one, say). They are ignored once
    -- something has shown the subscription's plan; before that it is a
    -- subscription with no catalog price at all.
    if not exists (select 1 from tally.subscription_observations o
                    where o.subscription_id = v_subscription_id and o.price_id is not null) then
      perform tally.reject(format('unknown price %s: no plan has it', v_lines.unknown_price));
    end if;
    -- Paid outside the subscription's periods (a usage threshold, a manual
    -- invoice, a change adding an item): nothing to grant. A period invoice
    -- (create, cycle, or no reason given) is not: a renewal whose plan line
    -- is missing is rejected below, never silently applied.
    v_is_other_only := v_reason not in ('subscription', 'subscription_create',
                                        'subscription_cycle');
  end if;
  if v_is_paid and v_lines.plan_line is null and not v_is_upgrade
     and v_is_other_only is not true then
    perform tally.reject(format(
      'paid invoice %s has no plan line (billing_reason %s, %s line(s) read): nothing to grant it for',
      v_invoice_id, coalesce(v_reason, 'none'), v_lines.line_count));
  end if;
  perform tally.observe(row(
    v_subscription_id, p_event ->> 'id', p_user_id, 'invoice', tally.to_time(p_event -> 'created'),
    v_invoice ->> 'customer_id', null, null, null, null, null, null,
    v_lines.plan_line ->> 'price_id', tally.to_time(v_lines.plan_line -> 'period_start'),
    tally.to_time(v_lines.plan_line -> 'period_end'), v_is_paid, v_reason
  )::tally.subscription_observations);

  if not v_is_paid then
    v_note := 'payment not completed: no credits';
  else
    -- Only for the ids it has (basil invoices name neither).
    if v_invoice ->> 'payment_intent_id' is not null then
      perform tally.record_invoice_payment('payment_intent:' || (v_invoice ->> 'payment_intent_id'),
                                           v_invoice_id);
    end if;
    if v_invoice ->> 'charge_id' is not null then
      perform tally.record_invoice_payment('charge:' || (v_invoice ->> 'charge_id'), v_invoice_id);
    end if;
    if v_lines.plan_line is not null then
      if not tally.record_paid_period(p_event, p_user_id, v_lines.plan_line, v_created) then
        v_note := 'period already granted';
      end if;
      if not tally.is_period_eligible(v_subscription_id,
                                      tally.to_time(v_lines.plan_line -> 'period_start')) then
        v_note := 'the subscription ended before this period: no grant';
      end if;
    elsif v_is_other_only then
      v_note := format('no plan line, only prices no plan has (%s): nothing to grant',
                       v_lines.unknown_price);
    end if;
    if v_is_upgrade then
      perform tally.record_proration_invoice(p_event, p_user_id, v_lines.proration_lines,
                                             v_created);
    elsif v_lines.proration_lines is not null then
      v_note := concat_ws('; ', v_note,
                          'its proration lines are billed with the renewal: they add nothing to the past period');
    end if;
    perform tally.place_prorations(v_subscription_id);
    perform tally.wake('invoice:' || v_invoice_id);
    perform tally.review_second_subscription(p_user_id, v_subscription_id, p_event ->> 'id');
  end if;
  perform tally.settle_plan(p_user_id, row(p_event ->> 'id', v_invoice_id,
    case when v_is_upgrade then format('upgrade paid by invoice %s', v_invoice_id) end
  )::tally.plan_context);
  perform tally.refresh_subscription_summary(p_user_id);
  return v_note;
end;
$$;

revoke all on function tally.apply_invoice(jsonb, uuid) from public, anon, authenticated;

-- The previous state an update left, as observations keep it: status,
-- cancel_at_period_end, and the plan's price and period where they changed.
create function tally.previous_state(p_previous jsonb, p_item jsonb) returns jsonb
language plpgsql
stable
as $$
declare
  v_result jsonb := '{}'::jsonb;
  v_before jsonb;
  v_key text;
begin
  if p_previous is null or jsonb_typeof(p_previous) <> 'object' then
    return null;
  end if;
  if jsonb_typeof(p_previous -> 'status') = 'string' then
    v_result := v_result || jsonb_build_object('status', p_previous -> 'status');
  end if;
  if jsonb_typeof(p_previous -> 'cancel_at_period_end') = 'boolean' then
    v_result := v_result || jsonb_build_object('cancel_at_period_end',
                                               p_previous -> 'cancel_at_period_end');
  end if;
  if jsonb_typeof(p_previous -> 'items') = 'array' then
    v_before := coalesce(tally.plan_item(p_previous -> 'items', false), '{}'::jsonb);
    foreach v_key in array array['price_id', 'current_period_start', 'current_period_end'] loop
      if (v_before -> v_key) is distinct from (p_item -> v_key)
         and jsonb_typeof(v_before -> v_key) is distinct from 'null' and v_before ? v_key then
        v_result := v_result || jsonb_build_object(v_key, v_before -> v_key);
      end if;
    end loop;
  end if;
  return nullif(v_result, '{}'::jsonb);
end;
$$;

revoke all on function tally.previous_state(jsonb, jsonb) from public, anon, authenticated;

-- customer.subscription.created / updated / deleted.
create function tally.apply_subscription(p_event jsonb, p_user_id uuid) returns text
language plpgsql
as $$
declare
  v_subscription jsonb := p_event -> 'subscription';
  v_item jsonb := tally.plan_item(v_subscription -> 'items', true);
  v_period jsonb := coalesce(v_item, v_subscription -> 'items' -> 0, '{}'::jsonb);
  v_previous jsonb := tally.previous_state(v_subscription -> 'previous', v_item);
begin
  perform tally.observe(row(
    v_subscription ->> 'id', p_event ->> 'id', p_user_id, 'subscription',
    tally.to_time(p_event -> 'created'), v_subscription ->> 'customer_id',
    v_subscription ->> 'status', v_previous,
    (v_subscription ->> 'cancel_at_period_end')::boolean,
    tally.to_time(v_subscription -> 'canceled_at'), tally.to_time(v_subscription -> 'ended_at'),
    tally.to_time(v_subscription -> 'created'), v_item ->> 'price_id',
    tally.to_time(v_period -> 'current_period_start'),
    tally.to_time(v_period -> 'current_period_end'), null, null
  )::tally.subscription_observations);
  perform tally.settle_plan(p_user_id, row(
    p_event ->> 'id', v_subscription ->> 'id',
    case when v_previous ? 'price_id'
         then format('plan changed to %s', tally.plan_name_of(v_item ->> 'price_id')) end
  )::tally.plan_context);
  perform tally.refresh_subscription_summary(p_user_id);
  return null;
end;
$$;

revoke all on function tally.apply_subscription(jsonb, uuid) from public, anon, authenticated;
