-- Order-independence for updates that share Stripe's one-second `created`.
-- Comparing two states pairwise cannot order an upgrade and its undo made in
-- the same second (each one's previous_attributes names the other's state);
-- only the state before that second can. So every subscription and invoice
-- observation is now kept, and the subscription mirror and each period's
-- plan are folded from all of them in a canonical order: by `created`, and
-- within one second by following previous_attributes from the state before
-- it. The result depends on the set of events, never on their arrival.

create table tally.subscription_observations (
  subscription_id text not null,
  stripe_event_id text not null,
  user_id uuid not null,
  source text not null check (source in ('subscription', 'invoice')),
  observed_at timestamptz not null,
  customer_id text,
  -- Subscription events: the state they announce and the state they left.
  status text,
  previous jsonb,
  cancel_at_period_end boolean,
  canceled_at timestamptz,
  ended_at timestamptz,
  subscription_created_at timestamptz,
  -- Both: the plan and period (invoices: of their non-proration line).
  price_id text,
  current_period_start timestamptz,
  current_period_end timestamptz,
  -- Invoices: how the payment went.
  is_paid boolean,
  billing_reason text,
  primary key (subscription_id, stripe_event_id)
);

create index subscription_observations_order_idx
  on tally.subscription_observations (subscription_id, observed_at);
create index subscription_observations_period_idx
  on tally.subscription_observations (subscription_id, current_period_start, observed_at);

alter table tally.subscription_observations enable row level security;
revoke all on table tally.subscription_observations from public, anon, authenticated;

-- Observations already applied before this migration.
insert into tally.subscription_observations (
  subscription_id, stripe_event_id, user_id, source, observed_at, customer_id, status, previous,
  cancel_at_period_end, canceled_at, ended_at, subscription_created_at, price_id,
  current_period_start, current_period_end
)
select e.payload -> 'subscription' ->> 'id', e.event_id, e.user_id, 'subscription',
       e.stripe_created_at, e.payload -> 'subscription' ->> 'customer_id',
       e.payload -> 'subscription' ->> 'status', e.payload -> 'subscription' -> 'previous',
       (e.payload -> 'subscription' ->> 'cancel_at_period_end')::boolean,
       tally.to_time(e.payload -> 'subscription' -> 'canceled_at'),
       tally.to_time(e.payload -> 'subscription' -> 'ended_at'),
       tally.to_time(e.payload -> 'subscription' -> 'created'),
       e.payload -> 'subscription' ->> 'price_id',
       tally.to_time(e.payload -> 'subscription' -> 'current_period_start'),
       tally.to_time(e.payload -> 'subscription' -> 'current_period_end')
  from tally.stripe_events e
 where e.outcome = 'applied' and e.payload ? 'subscription';

insert into tally.subscription_observations (
  subscription_id, stripe_event_id, user_id, source, observed_at, customer_id, price_id,
  current_period_start, current_period_end, is_paid, billing_reason
)
select e.payload -> 'invoice' ->> 'subscription_id', e.event_id, e.user_id, 'invoice',
       e.stripe_created_at, e.payload -> 'invoice' ->> 'customer_id',
       e.payload -> 'invoice' ->> 'price_id',
       tally.to_time(e.payload -> 'invoice' -> 'period_start'),
       tally.to_time(e.payload -> 'invoice' -> 'period_end'),
       e.type = 'invoice.paid' and e.payload -> 'invoice' ->> 'status' = 'paid',
       e.payload -> 'invoice' ->> 'billing_reason'
  from tally.stripe_events e
 where e.outcome = 'applied' and e.payload ? 'invoice'
   and e.payload -> 'invoice' ->> 'subscription_id' is not null;

-- The pairwise machinery this replaces.
drop function tally.observe_subscription(uuid, jsonb, timestamptz, text);
drop function tally.observe_invoice(uuid, jsonb, boolean, timestamptz, text);
drop function tally.record_period_plan(text, timestamptz, uuid, text, text, timestamptz, smallint, text);
drop function tally.is_newer_state(tally.subscriptions, tally.subscriptions);
drop function tally.left_state(jsonb, tally.subscriptions);

alter table tally.period_plans
  drop column previous_price_id,
  drop column source_created_at,
  drop column source_rank,
  drop column source_event_id;

alter table tally.subscriptions
  drop column state_event_id,
  drop column state_previous,
  drop column status_source,
  drop column status_event_id;

comment on column tally.subscriptions.state_created_at is
  'Stripe created of the observation the fields come from';
comment on column tally.subscriptions.status_observed_at is
  'Stripe created of the observation the status comes from';

-- Did the update whose previous_attributes are p_previous leave this state?
create function tally.left_state(
  p_previous jsonb, p_status text, p_state tally.subscription_observations
) returns boolean
language sql
immutable
set search_path = ''
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
language sql
immutable
set search_path = ''
as $$
  select c
    from unnest(p_candidates) as c
   order by tally.left_state(c.previous, p_status, p_state) desc,
            exists (select 1 from unnest(p_candidates) as other
                     where other.stripe_event_id <> c.stripe_event_id
                       and tally.left_state(other.previous, c.status, c)) desc,
            tally.status_rank(c.status), c.stripe_event_id
   limit 1;
$$;

revoke all on function
  tally.next_in_second(tally.subscription_observations, text, tally.subscription_observations[])
  from public, anon, authenticated;

-- What a paid or failed invoice does to a subscription's status.
create function tally.status_after_invoice(
  p_status text, p_is_paid boolean, p_billing_reason text
) returns text
language sql
immutable
set search_path = ''
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

revoke all on function tally.status_after_invoice(text, boolean, text)
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
  v_last_invoice tally.subscription_observations;
  v_status text;
  v_status_at timestamptz;
  v_fields tally.subscription_observations;
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
      v_last_invoice := v_invoice;
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
  -- invoice that has a subscription line.
  v_fields := coalesce(v_state, v_last_invoice);
  if v_state is null then
    select * into v_fields from tally.subscription_observations o
     where o.subscription_id = p_subscription_id and o.price_id is not null
     order by o.observed_at desc, o.stripe_event_id desc
     limit 1;
    v_fields := coalesce(v_fields, v_last_invoice);
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

-- Fold the observations that name a period into its plan: by created;
-- within a second the invoice line first (it was billed from the state
-- before any change in that second), then the updates, each one leaving the
-- price the previous one set.
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
begin
  for v_second in
    select distinct o.observed_at from tally.subscription_observations o
     where o.subscription_id = p_subscription_id and o.current_period_start = p_period_start
       and o.price_id is not null
     order by 1
  loop
    select coalesce(
             (select o.price_id from tally.subscription_observations o
               where o.subscription_id = p_subscription_id
                 and o.current_period_start = p_period_start and o.observed_at = v_second
                 and o.price_id is not null and o.source = 'invoice'
               order by o.stripe_event_id desc
               limit 1),
             v_price_id)
      into v_price_id;
    select array_agg(o) into v_pending from tally.subscription_observations o
     where o.subscription_id = p_subscription_id and o.current_period_start = p_period_start
       and o.observed_at = v_second and o.price_id is not null and o.source = 'subscription';
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

revoke all on function tally.resolve_period_plan(text, timestamptz, uuid)
  from public, anon, authenticated;

create or replace function tally.subscription_end(p_subscription tally.subscriptions)
returns timestamptz
language sql
immutable
set search_path = ''
as $$
  select case when tally.is_final_status(p_subscription.status)
              then coalesce(p_subscription.ended_at, p_subscription.canceled_at,
                            p_subscription.status_observed_at)
         end;
$$;

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

create or replace function tally.apply_invoice(p_event jsonb, p_user_id uuid) returns text
language plpgsql
set search_path = ''
as $$
declare
  v_invoice jsonb := p_event -> 'invoice';
  v_is_paid boolean := p_event ->> 'type' = 'invoice.paid' and v_invoice ->> 'status' = 'paid';
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
  perform tally.observe(row(
    v_subscription_id, p_event ->> 'id', p_user_id, 'invoice', tally.to_time(p_event -> 'created'),
    v_invoice ->> 'customer_id', null, null, null, null, null, null,
    v_invoice ->> 'price_id', v_period_start, tally.to_time(v_invoice -> 'period_end'),
    v_is_paid, v_invoice ->> 'billing_reason'
  )::tally.subscription_observations);
  perform tally.refresh_subscription_summary(p_user_id);
  if not v_is_paid then
    return 'payment not completed: no credits';
  end if;
  if v_invoice ->> 'price_id' is null or v_period_start is null then
    return 'no subscription line: no period to grant';
  end if;

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

create or replace function tally.apply_subscription(p_event jsonb, p_user_id uuid) returns text
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
    tally.to_time(v_subscription -> 'current_period_end'), null, null
  )::tally.subscription_observations);
  perform tally.settle_plan_period(p_user_id);
  perform tally.refresh_subscription_summary(p_user_id);
  return null;
end;
$$;

revoke all on all functions in schema tally from public, anon, authenticated;
