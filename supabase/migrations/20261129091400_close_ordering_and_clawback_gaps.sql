-- Closes gaps the engine tests and the chaos runs found against SPEC 2/3:
--
-- * A dispute names no customer: it parks on its payment intent. Parking and
--   the pack purchase that un-parks it now serialise on a lock of the
--   payment intent, so a dispute cannot park unseen while its pack commits.
-- * Legacy invoices name their charge and payment intent: a refund or
--   dispute of a subscription invoice finds its user through them.
-- * An invoice's line is as old as the invoice (its own `created`), not as
--   the event that says it was paid: a plan change made while a renewal was
--   unpaid stays the period's plan when the retry succeeds.
-- * A period that starts at or after its subscription's end never counts,
--   whichever of the invoice and the cancellation arrives first.
-- * What a clawback could not take (its shortfall) is owed: add-on credits
--   that come back with a reversed spend pay it first, and a won dispute
--   forgives what it could not take.
-- * A refund or dispute recorded for the operator before its pack purchase
--   arrived is marked resolved once the pack claims it.
-- * Whole numbers sent as 5.0 are read as integers everywhere.
-- * A paid invoice pays a period only when its line names a whole period
--   (start and end), as docs/engine.md says.

alter table tally.accounts
  add column addon_debt integer not null default 0 check (addon_debt >= 0);

comment on column tally.accounts.addon_debt is
  'Add-on credits clawed back but already spent (shortfalls), collected from reversed spends';

alter table tally.subscription_observations
  add column charge_id text,
  add column payment_intent_id text,
  add column line_observed_at timestamptz;

comment on column tally.subscription_observations.line_observed_at is
  'Invoices: when the invoice (and so its line) was created';

create index subscription_observations_charge_idx
  on tally.subscription_observations (charge_id) where charge_id is not null;
create index subscription_observations_payment_intent_idx
  on tally.subscription_observations (payment_intent_id) where payment_intent_id is not null;

create function tally.to_integer(p_value jsonb) returns integer
language sql
immutable
set search_path = ''
as $$
  select (p_value #>> '{}')::numeric::integer;
$$;

revoke all on function tally.to_integer(jsonb) from public, anon, authenticated;

create function tally.lock_payment_intent(p_payment_intent_id text) returns void
language sql
set search_path = ''
as $$
  select pg_advisory_xact_lock(hashtextextended('tally.payment_intent:' || p_payment_intent_id, 0));
$$;

revoke all on function tally.lock_payment_intent(text) from public, anon, authenticated;

create or replace function tally.process_event(p_event_id text) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_stored tally.stripe_events;
  v_outer_event_id text := current_setting('tally.event_id', true);
  v_user_id uuid;
  v_outcome text;
  v_reason text;
begin
  select * into v_stored from tally.stripe_events where event_id = p_event_id for update;
  perform set_config('tally.event_id', p_event_id, true);
  -- Fixed order: customer, then payment intent, then the account.
  if v_stored.customer_id is not null then
    perform tally.lock_customer(v_stored.customer_id);
  end if;
  if v_stored.payment_intent_id is not null then
    perform tally.lock_payment_intent(v_stored.payment_intent_id);
  end if;
  begin
    v_user_id := tally.resolve_user(v_stored.payload);
    if v_user_id is null then
      v_outcome := 'parked';
      v_reason := format('no user yet: applied when customer %s is linked to a user',
                         coalesce(v_stored.customer_id, v_stored.payment_intent_id, 'unknown'));
    else
      perform tally.open_account(v_user_id);
      perform tally.lock_account(v_user_id);
      v_reason := tally.dispatch_event(v_stored.payload, v_user_id);
      v_outcome := 'applied';
      perform tally.link_named_customer(v_stored.payload, v_stored.customer_id);
    end if;
  exception when sqlstate 'TL001' then
    v_outcome := 'rejected';
    v_reason := sqlerrm;
    v_user_id := null;
    perform tally.link_named_customer(v_stored.payload, v_stored.customer_id);
  end;
  update tally.stripe_events
     set outcome = v_outcome,
         reason = v_reason,
         user_id = v_user_id,
         applied_at = case when v_outcome = 'applied' then now() end
   where event_id = p_event_id;
  perform set_config('tally.event_id', coalesce(v_outer_event_id, ''), true);
  return jsonb_build_object('status', v_outcome, 'event_id', p_event_id, 'reason', v_reason,
                            'user_id', v_user_id);
end;
$$;

create or replace function tally.resolve_user(p_event jsonb) returns uuid
language plpgsql
stable
set search_path = ''
as $$
declare
  v_hint text := tally.user_hint(p_event);
  v_customer_id text := tally.event_customer_id(p_event);
  v_payment_intent_id text := tally.event_payment_intent_id(p_event);
  v_charge_id text := coalesce(p_event -> 'dispute' ->> 'charge_id', p_event -> 'charge' ->> 'id');
  v_user_id uuid;
begin
  if v_hint is not null then
    if v_hint !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then
      perform tally.reject(format('user id %L is not a UUID', left(v_hint, 80)));
    end if;
    v_user_id := v_hint::uuid;
  end if;
  if v_user_id is null and v_customer_id is not null then
    select c.user_id into v_user_id from tally.customers c where c.customer_id = v_customer_id;
  end if;
  if v_user_id is null then
    select s.user_id into v_user_id from tally.subscriptions s
     where s.subscription_id = coalesce(p_event -> 'invoice' ->> 'subscription_id',
                                         p_event -> 'subscription' ->> 'id');
  end if;
  if v_user_id is null and v_payment_intent_id is not null then
    select p.user_id into v_user_id from tally.pack_purchases p
     where p.payment_intent_id = v_payment_intent_id
     limit 1;
  end if;
  if v_user_id is null and v_charge_id is not null then
    select r.user_id into v_user_id from tally.charge_refunds r where r.charge_id = v_charge_id;
  end if;
  -- A legacy invoice named the charge and payment intent that paid it.
  if v_user_id is null and v_charge_id is not null then
    select o.user_id into v_user_id from tally.subscription_observations o
     where o.charge_id = v_charge_id
     limit 1;
  end if;
  if v_user_id is null and v_payment_intent_id is not null then
    select o.user_id into v_user_id from tally.subscription_observations o
     where o.payment_intent_id = v_payment_intent_id
     limit 1;
  end if;
  if v_user_id is not null and not exists (select 1 from auth.users u where u.id = v_user_id) then
    perform tally.reject(format('unknown user %s: no such row in auth.users', v_user_id));
  end if;
  return v_user_id;
end;
$$;

create or replace function tally.resolve_subscription(p_subscription_id text) returns void
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

drop index tally.subscription_observations_period_idx;
create index subscription_observations_period_idx
  on tally.subscription_observations (subscription_id, current_period_start);

-- As before, but an invoice line is placed at the invoice's own created.
create or replace function tally.resolve_period_plan(
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

create or replace function tally.apply_invoice(p_event jsonb, p_user_id uuid) returns text
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
    tally.to_time(v_subscription -> 'current_period_end'), null, null, null, null, null
  )::tally.subscription_observations);
  perform tally.settle_plan_period(p_user_id);
  perform tally.refresh_subscription_summary(p_user_id);
  return null;
end;
$$;

-- Does a paid period count? Not if it starts at or after its
-- subscription's end.
create function tally.is_period_eligible(p_subscription_id text, p_period_start timestamptz)
returns boolean
language sql
stable
set search_path = ''
as $$
  select not coalesce(
    (select p_period_start >= tally.subscription_end(s)
       from tally.subscriptions s where s.subscription_id = p_subscription_id),
    false);
$$;

revoke all on function tally.is_period_eligible(text, timestamptz) from public, anon, authenticated;

-- The newest eligible paid period sets the plan credits: a newer one resets
-- them, the same one follows its plan changes, and an older one (the
-- current period turned out to start after its subscription's end) takes
-- its place without adding credits.
create or replace function tally.settle_plan_period(p_user_id uuid) returns void
language plpgsql
set search_path = ''
as $$
declare
  v_account tally.accounts;
  v_period tally.paid_periods;
  v_allowance integer;
  v_plan_credits integer;
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
  v_allowance := tally.period_allowance(v_period.subscription_id, v_period.period_start);

  if v_account.period_start is null
     or (v_period.period_start, v_period.subscription_id)
        > (v_account.period_start, v_account.period_subscription_id) then
    v_allowance := coalesce(v_allowance, 0);
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
    if v_allowance is not null and v_allowance <> v_account.plan_allowance then
      update tally.accounts set plan_allowance = v_allowance where user_id = p_user_id;
      perform tally.post_entry(
        p_user_id, 'plan_change',
        greatest(0, v_allowance - v_account.plan_spent) - v_account.plan_credits, 0,
        p_business_key => format('plan:%s:%s:%s', v_period.subscription_id,
                                 extract(epoch from v_period.period_start)::bigint, v_allowance));
    end if;
  else
    v_allowance := coalesce(v_allowance, 0);
    v_plan_credits := least(v_account.plan_credits, v_allowance);
    update tally.accounts
       set period_subscription_id = v_period.subscription_id,
           period_start = v_period.period_start,
           period_end = v_period.period_end,
           plan_allowance = v_allowance,
           plan_spent = v_allowance - v_plan_credits
     where user_id = p_user_id;
    perform tally.post_entry(
      p_user_id, 'subscription_period', v_plan_credits - v_account.plan_credits, 0,
      p_business_key => format('period:%s:%s', v_period.subscription_id,
                               extract(epoch from v_period.period_start)::bigint),
      p_reason => format('period of %s starting %s withdrawn: the subscription ended before it',
                         v_account.period_subscription_id, v_account.period_start));
  end if;
end;
$$;

-- Clawbacks take add-on credits only, down to zero; the rest is owed.
create or replace function tally.claw_back_addon(
  p_user_id uuid, p_credits integer, p_kind text, p_business_key text,
  p_checkout_session_id text
) returns integer
language plpgsql
set search_path = ''
as $$
declare
  v_taken integer;
begin
  select least(p_credits, addon_credits) into v_taken
    from tally.accounts where user_id = p_user_id;
  update tally.accounts set addon_debt = addon_debt + (p_credits - v_taken)
   where user_id = p_user_id;
  perform tally.post_entry(p_user_id, p_kind, 0, -v_taken, p_credits - v_taken,
                           p_business_key => p_business_key,
                           p_checkout_session_id => p_checkout_session_id);
  return v_taken;
end;
$$;

-- Mark what was listed for the operator as a subscription refund or dispute
-- but turned out to belong to a pack.
create function tally.resolve_reviews_claimed_by_pack(p_checkout_session_id text,
                                                      p_payment_intent_id text)
returns void
language sql
set search_path = ''
as $$
  update tally.operator_reviews r
     set resolved_at = now(),
         details = r.details || jsonb_build_object('claimed_by_checkout_session',
                                                   p_checkout_session_id)
   where r.resolved_at is null
     and ((r.kind = 'subscription_refund'
           and r.object_id in (select c.charge_id from tally.charge_refunds c
                                where c.payment_intent_id = p_payment_intent_id))
          or (r.kind = 'subscription_dispute'
              and r.object_id in (select d.dispute_id from tally.disputes d
                                   where d.payment_intent_id = p_payment_intent_id)));
$$;

revoke all on function tally.resolve_reviews_claimed_by_pack(text, text)
  from public, anon, authenticated;

create or replace function tally.settle_pack(p_checkout_session_id text) returns void
language plpgsql
set search_path = ''
as $$
declare
  v_pack tally.pack_purchases;
  v_dispute tally.disputes;
  v_held integer;
  v_target integer;
  v_taken integer;
begin
  select * into v_pack from tally.pack_purchases
   where checkout_session_id = p_checkout_session_id
   for update;
  if v_pack.payment_intent_id is null then
    return;
  end if;
  -- The event may have been resolved to another user (a shared customer).
  perform tally.lock_account(v_pack.user_id);
  perform tally.resolve_reviews_claimed_by_pack(v_pack.checkout_session_id,
                                                v_pack.payment_intent_id);

  for v_dispute in
    select * from tally.disputes
     where payment_intent_id = v_pack.payment_intent_id
     order by dispute_id
     for update
  loop
    if tally.is_open_dispute(v_dispute.status) and not v_dispute.is_clawed then
      select coalesce(sum(clawback_target), 0) into v_held from tally.disputes
       where payment_intent_id = v_pack.payment_intent_id and is_clawed and not is_reinstated;
      v_target := greatest(0, v_pack.credits - v_pack.refund_clawback_target - v_held);
      v_taken := tally.claw_back_addon(v_pack.user_id, v_target, 'dispute_clawback',
                                       'dispute:' || v_dispute.dispute_id,
                                       v_pack.checkout_session_id);
      update tally.disputes
         set clawback_target = v_target, clawed_back = v_taken, is_clawed = true,
             user_id = v_pack.user_id, updated_at = now()
       where dispute_id = v_dispute.dispute_id;
    elsif not tally.is_open_dispute(v_dispute.status) and tally.is_final_dispute(v_dispute.status)
          and v_dispute.is_clawed and not v_dispute.is_reinstated then
      -- Won: give back what was taken, and forgive what could not be.
      update tally.accounts
         set addon_debt = addon_debt - least(addon_debt,
                                             v_dispute.clawback_target - v_dispute.clawed_back)
       where user_id = v_pack.user_id;
      perform tally.post_entry(v_pack.user_id, 'dispute_reinstated', 0, v_dispute.clawed_back,
                               p_business_key => 'dispute_won:' || v_dispute.dispute_id,
                               p_checkout_session_id => v_pack.checkout_session_id);
      update tally.disputes set is_reinstated = true, updated_at = now()
       where dispute_id = v_dispute.dispute_id;
    end if;
  end loop;

  select coalesce(round(v_pack.credits::numeric
                        * least(sum(r.amount_refunded), sum(r.amount))
                        / nullif(sum(r.amount), 0))::integer, 0)
    into v_target
    from tally.charge_refunds r
   where r.payment_intent_id = v_pack.payment_intent_id;
  select coalesce(sum(clawback_target), 0) into v_held from tally.disputes
   where payment_intent_id = v_pack.payment_intent_id and is_clawed and not is_reinstated;
  v_target := least(v_target, v_pack.credits - v_held);
  if v_target > v_pack.refund_clawback_target then
    perform tally.claw_back_addon(v_pack.user_id, v_target - v_pack.refund_clawback_target,
                                  'refund_clawback',
                                  format('refund:%s:%s', v_pack.checkout_session_id, v_target),
                                  v_pack.checkout_session_id);
    update tally.pack_purchases set refund_clawback_target = v_target
     where checkout_session_id = v_pack.checkout_session_id;
  end if;
end;
$$;

create or replace function tally.apply_checkout_session(p_event jsonb, p_user_id uuid)
returns text
language plpgsql
set search_path = ''
as $$
declare
  v_session jsonb := p_event -> 'checkout_session';
  v_pack public.credit_packs;
begin
  if v_session ->> 'mode' <> 'payment' then
    return format('%s-mode checkout: credits come from its paid invoice, not the session',
                  v_session ->> 'mode');
  end if;
  if p_event ->> 'type' = 'checkout.session.async_payment_failed' then
    return 'payment failed: no credits';
  end if;
  if v_session ->> 'payment_status' <> 'paid' then
    return 'payment not completed: no credits until it succeeds';
  end if;
  if v_session ->> 'metadata_price_id' is null then
    perform tally.reject('paid checkout session has no metadata.price_id'
                         || ' (it was not created by tally): no pack to grant');
  end if;
  select * into v_pack from public.credit_packs
   where stripe_price_id = v_session ->> 'metadata_price_id';
  if not found then
    perform tally.reject(format('unknown price %s: no credit pack has it',
                                v_session ->> 'metadata_price_id'));
  end if;

  insert into tally.pack_purchases (checkout_session_id, user_id, pack_key, price_id, credits,
                                    payment_intent_id, amount_total, currency, stripe_event_id)
  values (v_session ->> 'id', p_user_id, v_pack.key, v_pack.stripe_price_id, v_pack.credits,
          v_session ->> 'payment_intent_id', tally.to_integer(v_session -> 'amount_total'),
          v_session ->> 'currency', p_event ->> 'id')
  on conflict (checkout_session_id) do nothing;
  if not found then
    return 'pack already granted for this Checkout Session';
  end if;
  perform tally.post_entry(p_user_id, 'addon_purchase', 0, v_pack.credits,
                           p_business_key => 'pack:' || (v_session ->> 'id'),
                           p_checkout_session_id => v_session ->> 'id',
                           p_reason => v_pack.key);
  perform tally.settle_pack(v_session ->> 'id');
  if v_session ->> 'payment_intent_id' is not null then
    perform tally.unpark_events(null, v_session ->> 'payment_intent_id');
  end if;
  return null;
end;
$$;

create or replace function tally.apply_charge_refunded(p_event jsonb, p_user_id uuid) returns text
language plpgsql
set search_path = ''
as $$
declare
  v_charge jsonb := p_event -> 'charge';
  v_session_id text;
begin
  insert into tally.charge_refunds as r (charge_id, payment_intent_id, customer_id, invoice_id,
                                         user_id, amount, amount_refunded)
  values (v_charge ->> 'id', v_charge ->> 'payment_intent_id', v_charge ->> 'customer_id',
          v_charge ->> 'invoice_id', p_user_id, tally.to_integer(v_charge -> 'amount'),
          tally.to_integer(v_charge -> 'amount_refunded'))
  on conflict (charge_id) do update
     set amount_refunded = greatest(r.amount_refunded, excluded.amount_refunded),
         payment_intent_id = coalesce(r.payment_intent_id, excluded.payment_intent_id),
         user_id = coalesce(r.user_id, excluded.user_id),
         updated_at = now();

  select checkout_session_id into v_session_id from tally.pack_purchases
   where payment_intent_id = v_charge ->> 'payment_intent_id';
  if v_session_id is not null then
    perform tally.settle_pack(v_session_id);
    return null;
  end if;
  perform tally.record_for_operator(p_user_id, 'subscription_refund', v_charge ->> 'id',
                                    jsonb_build_object(
                                      'amount', v_charge -> 'amount',
                                      'amount_refunded', v_charge -> 'amount_refunded',
                                      'invoice_id', v_charge -> 'invoice_id',
                                      'payment_intent_id', v_charge -> 'payment_intent_id'));
  return 'not a credit pack payment: recorded for the operator';
end;
$$;

create or replace function tally.apply_dispute(p_event jsonb, p_user_id uuid) returns text
language plpgsql
set search_path = ''
as $$
declare
  v_dispute jsonb := p_event -> 'dispute';
  v_payment_intent_id text;
  v_session_id text;
begin
  v_payment_intent_id := coalesce(
    v_dispute ->> 'payment_intent_id',
    (select payment_intent_id from tally.charge_refunds where charge_id = v_dispute ->> 'charge_id'));
  insert into tally.disputes as d (dispute_id, charge_id, payment_intent_id, user_id, status,
                                   amount, state_created_at)
  values (v_dispute ->> 'id', v_dispute ->> 'charge_id', v_payment_intent_id, p_user_id,
          v_dispute ->> 'status', tally.to_integer(v_dispute -> 'amount'),
          tally.to_time(p_event -> 'created'))
  on conflict (dispute_id) do update
     set status = excluded.status,
         state_created_at = excluded.state_created_at,
         payment_intent_id = coalesce(d.payment_intent_id, excluded.payment_intent_id),
         updated_at = now()
   where not tally.is_final_dispute(d.status)
     and (tally.is_final_dispute(excluded.status)
          or excluded.state_created_at >= d.state_created_at);

  select checkout_session_id into v_session_id from tally.pack_purchases
   where payment_intent_id = v_payment_intent_id;
  if v_session_id is not null then
    perform tally.settle_pack(v_session_id);
    return null;
  end if;
  perform tally.record_for_operator(p_user_id, 'subscription_dispute', v_dispute ->> 'id',
                                    jsonb_build_object(
                                      'status', v_dispute -> 'status',
                                      'amount', v_dispute -> 'amount',
                                      'reason', v_dispute -> 'reason',
                                      'charge_id', v_dispute -> 'charge_id'));
  return 'not a credit pack payment: recorded for the operator';
end;
$$;

-- As before, but add-on credits coming back pay what clawbacks are owed.
create or replace function public.reverse_spend(idempotency_key text, reason text default null)
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

revoke all on function public.reverse_spend(text, text) from public, anon, authenticated;
grant execute on function public.reverse_spend(text, text) to service_role;

revoke all on all functions in schema tally from public, anon, authenticated;
