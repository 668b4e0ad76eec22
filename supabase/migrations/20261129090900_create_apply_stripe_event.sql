-- public.apply_stripe_event: the one RPC the sidecar calls. In one
-- transaction it records the event id (the idempotency key) with the raw
-- payload, checks the typed event, resolves the user, applies the effect
-- through the handler of the event's kind, and stores the outcome:
-- applied, parked (waiting for a customer link or for what a payment paid
-- for) or rejected (with its reason). Nothing signed is refused: an event
-- the sidecar or the database cannot read is stored as rejected, and an
-- operator re-applies it after the fix.

create function tally.is_handled_type(p_type text) returns boolean
language sql
immutable
as $$
  select p_type in (
    'checkout.session.completed', 'checkout.session.async_payment_succeeded',
    'checkout.session.async_payment_failed', 'invoice.paid', 'invoice.payment_failed',
    'customer.subscription.created', 'customer.subscription.updated',
    'customer.subscription.deleted', 'charge.refunded', 'charge.dispute.created',
    'charge.dispute.closed', 'invoice_payment.paid');
$$;

revoke all on function tally.is_handled_type(text) from public, anon, authenticated;

-- Route an event to the handler of its kind; returns a note or null.
create function tally.dispatch_event(p_event jsonb, p_user_id uuid) returns text
language plpgsql
as $$
begin
  return case
    when p_event ? 'checkout_session' then tally.apply_checkout_session(p_event, p_user_id)
    when p_event ? 'invoice' then tally.apply_invoice(p_event, p_user_id)
    when p_event ? 'subscription' then tally.apply_subscription(p_event, p_user_id)
    when p_event ? 'charge' then tally.apply_charge_refunded(p_event, p_user_id)
    when p_event ? 'dispute' then tally.apply_dispute(p_event, p_user_id)
  end;
end;
$$;

revoke all on function tally.dispatch_event(jsonb, uuid) from public, anon, authenticated;

-- Every key an event may park on or wake, sorted: they are locked in this
-- order before any account, so concurrent events never deadlock on them.
create function tally.event_lock_keys(p_event jsonb) returns text[]
language plpgsql
immutable
as $$
begin
  return (
    select coalesce(array_agg(distinct k order by k), '{}')
      from unnest(array[
        'customer:' || tally.event_customer_id(p_event),
        'payment_intent:' || tally.event_payment_intent_id(p_event),
        'payment_intent:' || (p_event -> 'invoice' ->> 'payment_intent_id'),
        'charge:' || tally.event_charge_id(p_event),
        'charge:' || (p_event -> 'invoice' ->> 'charge_id'),
        'charge:' || (p_event -> 'invoice_payment' ->> 'charge_id'),
        'invoice:' || (p_event -> 'invoice' ->> 'id'),
        'invoice:' || (p_event -> 'charge' ->> 'invoice_id'),
        'invoice:' || (p_event -> 'invoice_payment' ->> 'invoice_id')]) as k
     where k is not null);
end;
$$;

revoke all on function tally.event_lock_keys(jsonb) from public, anon, authenticated;

-- Link the customer of an applied event to its user, when the product made
-- the object (see tally.is_product_made); never from a rejected event.
create function tally.link_event_customer(p_event jsonb, p_user_id uuid) returns void
language plpgsql
as $$
declare
  v_customer_id text := tally.event_customer_id(p_event);
begin
  if v_customer_id is null or not tally.is_product_made(p_event)
     or tally.user_hint(p_event) is distinct from p_user_id::text then
    return;
  end if;
  -- Most events are of a customer already linked: one probe, nothing to do
  -- (its key is locked already: tally.event_lock_keys). Apart from the test
  -- above, whose expressions must not enter a planned query: there the
  -- planner would fold them for each event and never reuse the plan.
  if not exists (select 1 from tally.customers c where c.customer_id = v_customer_id) then
    perform tally.link_customer(v_customer_id, p_user_id, 'event');
  end if;
end;
$$;

revoke all on function tally.link_event_customer(jsonb, uuid) from public, anon, authenticated;

-- The invoice a refund or dispute pays back, when tally knows the link
-- (charge.invoice, invoice_payment.paid) but not yet the invoice.
create function tally.unrecorded_invoice_of(p_event jsonb) returns text
language sql
stable
as $$
  select t.id
    from tally.payment_target(tally.event_payment_intent_id(p_event),
                              tally.event_charge_id(p_event),
                              p_event -> 'charge' ->> 'invoice_id') t
   where (p_event ? 'charge' or p_event ? 'dispute') and t.kind = 'invoice'
     and t.user_id is null;
$$;

revoke all on function tally.unrecorded_invoice_of(jsonb) from public, anon, authenticated;

-- Apply what a stored event says, or raise TL001 (reject) / TL002 (park).
create function tally.apply_payload(p_event jsonb) returns table (user_id uuid, note text)
language plpgsql
as $$
declare
  -- The raw payload is stored apart (an object: checked on receipt).
  v_problem text := tally.typed_event_problem(p_event || '{"raw": {}}'::jsonb);
  v_user_id uuid;
  v_invoice_id text;
begin
  if v_problem is not null then
    perform tally.reject('the typed event is malformed: ' || v_problem);
  end if;
  -- What the sidecar could not read, or must not apply (another livemode).
  if p_event ->> 'problem' is not null then
    perform tally.reject(p_event ->> 'problem');
  end if;
  if p_event ? 'invoice_payment' then
    return query select null::uuid, tally.apply_invoice_payment(p_event);
    return;
  end if;
  v_user_id := tally.resolve_user(p_event);
  if v_user_id is null then
    v_invoice_id := tally.unrecorded_invoice_of(p_event);
  end if;
  if v_invoice_id is not null then
    -- The payment is known to pay an invoice tally has not recorded yet: wait
    -- for the invoice itself. Its key is locked, then the user read again, so
    -- an invoice committed meanwhile is seen and one still to come wakes us.
    perform tally.lock_key('invoice:' || v_invoice_id);
    v_user_id := tally.resolve_user(p_event);
    if v_user_id is null then
      perform tally.park('invoice:' || v_invoice_id,
                         format('no user yet: applied once invoice %s is recorded', v_invoice_id));
    end if;
  end if;
  if v_user_id is null then
    perform tally.park(tally.user_wait_key(p_event),
                       format('no user yet: applied once %s is linked to a user',
                              coalesce('customer ' || tally.event_customer_id(p_event),
                                       'the purchase of payment '
                                       || coalesce(tally.event_payment_intent_id(p_event),
                                                   tally.event_charge_id(p_event)))));
  end if;
  -- Lock the account; open it first only when it is missing (rarely: the
  -- signup trigger opens it).
  if (tally.lock_account(v_user_id)).user_id is null then
    perform tally.open_account(v_user_id);
    perform tally.lock_account(v_user_id);
  end if;
  return query select v_user_id, tally.dispatch_event(p_event, v_user_id);
  perform tally.link_event_customer(p_event, v_user_id);
end;
$$;

revoke all on function tally.apply_payload(jsonb) from public, anon, authenticated;

-- The user a rejected event is about, where it says so without doubt: the
-- operator sees whose event waits for a fix.
create function tally.user_of_rejected(p_event jsonb) returns uuid
language plpgsql
stable
as $$
begin
  return tally.resolve_user(p_event);
exception
  when sqlstate 'TL001' then
    return null;
end;
$$;

revoke all on function tally.user_of_rejected(jsonb) from public, anon, authenticated;

-- Apply a typed event (its raw payload aside) already stored under its id,
-- and record its outcome. Used on first receipt, when what a parked event
-- waited for appears, and when an operator retries rejected events. The
-- typed reading is kept only while it may be needed again (parked or
-- rejected). A data error inside a handler (a value it cannot use) rejects
-- the event rather than refusing it: Stripe's retries could never fix it,
-- and it must not be lost.
create function tally.process(p_event_id text, p_event jsonb) returns jsonb
language plpgsql
as $$
declare
  v_key text;
  v_user_id uuid;
  v_outcome text := 'applied';
  v_reason text;
  v_waiting_on text;
begin
  foreach v_key in array tally.event_lock_keys(p_event) loop
    perform tally.lock_key(v_key);
  end loop;
  begin
    select a.user_id, a.note into v_user_id, v_reason from tally.apply_payload(p_event) a;
  exception
    when sqlstate 'TL001' then
      v_outcome := 'rejected';
      v_reason := sqlerrm;
      v_user_id := tally.user_of_rejected(p_event);
    when sqlstate 'TL002' then
      v_outcome := 'parked';
      v_reason := sqlerrm;
      get stacked diagnostics v_waiting_on = pg_exception_detail;
    when data_exception or integrity_constraint_violation then
      v_outcome := 'rejected';
      v_reason := format('the database could not apply it (%s): %s', sqlstate, sqlerrm);
  end;
  update tally.stripe_events
     set outcome = v_outcome,
         reason = v_reason,
         user_id = coalesce(v_user_id, user_id),
         waiting_on = v_waiting_on,
         is_ready = false,
         payload = case when v_outcome = 'applied' then null else p_event end,
         applied_at = case when v_outcome = 'applied' then now() end
   where event_id = p_event_id;
  return jsonb_build_object('status', v_outcome, 'event_id', p_event_id, 'reason', v_reason,
                            'user_id', v_user_id);
end;
$$;

revoke all on function tally.process(text, jsonb) from public, anon, authenticated;

-- Re-apply a stored event that waits or was rejected, from its kept reading.
create function tally.process_event(p_event_id text) returns jsonb
language plpgsql
as $$
declare
  v_payload jsonb;
begin
  select e.payload into v_payload from tally.stripe_events e
   where e.event_id = p_event_id and e.payload is not null
   for update;
  if not found then
    return jsonb_build_object('status', 'applied', 'event_id', p_event_id);
  end if;
  return tally.process(p_event_id, v_payload);
end;
$$;

revoke all on function tally.process_event(text) from public, anon, authenticated;

-- Stripe's created, when the event carries a readable one.
create function tally.readable_time(p_value jsonb) returns timestamptz
language sql
immutable
as $$
  select case when jsonb_typeof(p_value) = 'number'
                   and (p_value #>> '{}')::numeric between 0 and 253402300799
              then to_timestamp((p_value #>> '{}')::numeric) end;
$$;

revoke all on function tally.readable_time(jsonb) from public, anon, authenticated;

create function public.apply_stripe_event(event jsonb) returns jsonb
language plpgsql
security definer
set search_path = ''
set lock_timeout = '5s'
as $$
declare
  v_event_id text := event ->> 'id';
  v_type text := event ->> 'type';
  v_duplicate_of text;
begin
  if jsonb_typeof(event) is distinct from 'object'
     or jsonb_typeof(event -> 'id') is distinct from 'string'
     or length(v_event_id) not between 1 and 1000
     or jsonb_typeof(event -> 'type') is distinct from 'string'
     or jsonb_typeof(event -> 'raw') is distinct from 'object' then
    raise exception using errcode = '22023',
      message = 'invalid typed event: it needs an id, a type and the raw Stripe event',
      hint = 'apply_stripe_event takes the typed event of schema/typed_event.schema.json';
  end if;
  if not tally.is_handled_type(v_type) then
    return jsonb_build_object('status', 'ignored', 'event_id', v_event_id, 'type', v_type);
  end if;

  insert into tally.stripe_events (event_id, type, stripe_created_at, livemode, api_version,
                                   layout, customer_id, payment_intent_id, outcome, raw)
  values (v_event_id, v_type, tally.readable_time(event -> 'created'),
          case when jsonb_typeof(event -> 'livemode') = 'boolean'
               then (event ->> 'livemode')::boolean end,
          left(event ->> 'api_version', 64), left(event ->> 'layout', 16),
          tally.event_customer_id(event), tally.event_payment_intent_id(event), 'processing',
          event -> 'raw')
  on conflict (event_id) do nothing;
  if not found then
    select outcome into v_duplicate_of from tally.stripe_events where event_id = v_event_id;
    return jsonb_build_object('status', 'duplicate', 'event_id', v_event_id, 'type', v_type,
                              'original_status', v_duplicate_of);
  end if;
  return tally.process(v_event_id, event - 'raw') || jsonb_build_object('type', v_type);
end;
$$;

comment on function public.apply_stripe_event(jsonb) is
  'Apply one typed Stripe event (schema/typed_event.schema.json) exactly once.';

revoke all on function public.apply_stripe_event(jsonb) from public, anon, authenticated;
grant execute on function public.apply_stripe_event(jsonb) to service_role;

-- Group commit: several typed events in one transaction, each in a
-- subtransaction of its own, so a failure of one (an error, a lock wait
-- over lock_timeout, a deadlock) undoes that one only and the others
-- commit together, with one commit (and one round trip) for all. The
-- sidecar gathers the webhooks that arrive while its connections are busy
-- (sidecar/db/group_commit.py) and answers each sender from its own
-- result: what apply_stripe_event returns, or {"status": "error",
-- "sqlstate", "message"} for an event it refused, in the given order.
create function public.apply_stripe_events(events jsonb) returns jsonb
language plpgsql
security definer
set search_path = ''
set lock_timeout = '5s'
as $$
declare
  v_event jsonb;
  v_result jsonb;
  v_results jsonb := '[]'::jsonb;
begin
  if jsonb_typeof(events) is distinct from 'array'
     or jsonb_array_length(events) not between 1 and 100 then
    raise exception using errcode = '22023',
      message = 'events must be an array of 1 to 100 typed events';
  end if;
  for v_event in select e from jsonb_array_elements(events) as e loop
    begin
      v_result := public.apply_stripe_event(v_event);
    exception
      when others then
        v_result := jsonb_build_object('status', 'error', 'event_id', v_event ->> 'id',
                                       'sqlstate', sqlstate, 'message', sqlerrm);
    end;
    v_results := v_results || jsonb_build_array(v_result);
  end loop;
  return v_results;
end;
$$;

comment on function public.apply_stripe_events(jsonb) is
  'Apply typed Stripe events in one transaction, each alone: one result per event, in order.';

revoke all on function public.apply_stripe_events(jsonb) from public, anon, authenticated;
grant execute on function public.apply_stripe_events(jsonb) to service_role;

-- Re-apply a rejected event with a new reading of it: after a fix of the
-- sidecar's normaliser, `tally ops retry` reads the stored raw payload again
-- and hands the new typed event here (same id, same raw payload).
create function public.reapply_stripe_event(event jsonb) returns jsonb
language plpgsql
security definer
set search_path = ''
set lock_timeout = '5s'
as $$
declare
  v_event_id text := event ->> 'id';
begin
  update tally.stripe_events e
     set attempts = e.attempts + 1
   where e.event_id = v_event_id and e.outcome = 'rejected'
     and e.raw = event -> 'raw';
  if not found then
    raise exception using errcode = 'PT404',
      message = format('no rejected event %s with this raw payload', v_event_id);
  end if;
  return tally.process(v_event_id, event - 'raw');
end;
$$;

comment on function public.reapply_stripe_event(jsonb) is
  'Re-apply a rejected event with a new typed reading of its stored raw payload.';

revoke all on function public.reapply_stripe_event(jsonb) from public, anon, authenticated;
grant execute on function public.reapply_stripe_event(jsonb) to service_role;

-- Re-apply rejected events (all, or one) as stored, after the operator
-- fixed what the database needed (a price added to the catalog, a user).
create function public.retry_rejected_stripe_events(event_id text default null)
returns jsonb
language plpgsql
security definer
set search_path = ''
set lock_timeout = '5s'
as $$
declare
  v_event_id text;
  v_result jsonb;
  v_results jsonb := '[]'::jsonb;
begin
  for v_event_id in
    select e.event_id from tally.stripe_events e
     where e.outcome = 'rejected'
       and (retry_rejected_stripe_events.event_id is null
            or e.event_id = retry_rejected_stripe_events.event_id)
     order by e.stripe_created_at, e.event_id
  loop
    update tally.stripe_events set attempts = attempts + 1 where stripe_events.event_id = v_event_id;
    v_result := tally.process_event(v_event_id);
    v_results := v_results || jsonb_build_array(v_result);
  end loop;
  return jsonb_build_object(
    'retried', jsonb_array_length(v_results),
    'applied', (select count(*) from jsonb_array_elements(v_results) r where r ->> 'status' = 'applied'),
    'parked', (select count(*) from jsonb_array_elements(v_results) r where r ->> 'status' = 'parked'),
    'rejected', (select count(*) from jsonb_array_elements(v_results) r where r ->> 'status' = 'rejected'),
    'results', v_results);
end;
$$;

revoke all on function public.retry_rejected_stripe_events(text) from public, anon, authenticated;
grant execute on function public.retry_rejected_stripe_events(text) to service_role;

-- Apply parked events whose wait is over (their customer linked, their
-- payment known) that the transaction which woke them left for later:
-- at most max_events, oldest first, in this call's own transaction. The
-- sidecar calls it until it returns 0.
create function public.apply_ready_stripe_events(max_events integer default 100)
returns integer
language plpgsql
security definer
set search_path = ''
set lock_timeout = '5s'
as $$
declare
  v_event_id text;
  v_count integer := 0;
begin
  if max_events is null or max_events not between 1 and 1000 then
    raise exception using errcode = '22023', message = 'max_events must be 1 to 1000';
  end if;
  for v_event_id in
    select e.event_id from tally.stripe_events e
     where e.outcome = 'parked' and e.is_ready
     order by e.stripe_created_at, e.event_id
     limit max_events
     for update skip locked
  loop
    perform tally.process_event(v_event_id);
    v_count := v_count + 1;
  end loop;
  return v_count;
end;
$$;

comment on function public.apply_ready_stripe_events(integer) is
  'Apply up to max_events parked events whose wait is over; returns how many.';

revoke all on function public.apply_ready_stripe_events(integer) from public, anon, authenticated;
grant execute on function public.apply_ready_stripe_events(integer) to service_role;
