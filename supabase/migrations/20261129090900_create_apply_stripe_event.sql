-- public.apply_stripe_event: the one RPC the sidecar calls. In one
-- transaction it records the event id (the idempotency key), resolves the
-- user, applies the effect through the handler of the event's kind, and
-- stores the outcome: applied, parked (no user yet) or rejected (with its
-- reason; re-applied by retry_rejected_stripe_events once fixed).

create function tally.is_handled_type(p_type text) returns boolean
language sql
immutable
as $$
  select p_type in (
    'checkout.session.completed', 'checkout.session.async_payment_succeeded',
    'checkout.session.async_payment_failed', 'invoice.paid', 'invoice.payment_failed',
    'customer.subscription.created', 'customer.subscription.updated',
    'customer.subscription.deleted', 'charge.refunded', 'charge.dispute.created',
    'charge.dispute.closed');
$$;

revoke all on function tally.is_handled_type(text) from public, anon, authenticated;

-- Route an event to the handler of its kind; returns a note or null.
create function tally.dispatch_event(p_event jsonb, p_user_id uuid) returns text
language plpgsql
set search_path = ''
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

-- Store the link an event states outright (a user hint naming an existing
-- user, and a customer), whatever else is wrong with the event.
create function tally.link_named_customer(p_event jsonb, p_customer_id text) returns void
language plpgsql
set search_path = ''
as $$
declare
  v_hint text := tally.user_hint(p_event);
begin
  if p_customer_id is null
     or v_hint !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
     or not exists (select 1 from auth.users u where u.id = v_hint::uuid) then
    return;
  end if;
  perform tally.open_account(v_hint::uuid);
  perform tally.link_customer(p_customer_id, v_hint::uuid, 'event');
end;
$$;

revoke all on function tally.link_named_customer(jsonb, text) from public, anon, authenticated;

-- Apply (or re-apply) a stored event and record its outcome. Used on first
-- receipt, when a parked event's link appears, and when an operator retries
-- rejected events.
-- Locks in a fixed order: customer, payment intent, then the account.
create function tally.process_event(p_event_id text) returns jsonb
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
    -- The user stays recorded when it was resolved before the rejection.
    v_outcome := 'rejected';
    v_reason := sqlerrm;
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

revoke all on function tally.process_event(text) from public, anon, authenticated;

create function public.apply_stripe_event(event jsonb) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_event_id text := event ->> 'id';
  v_type text := event ->> 'type';
  v_duplicate_of text;
begin
  if jsonb_typeof(event) is distinct from 'object' then
    raise exception using errcode = '22023', message = 'invalid typed event: not a JSON object';
  end if;
  if jsonb_typeof(event -> 'type') = 'string' and not tally.is_handled_type(v_type) then
    return jsonb_build_object('status', 'ignored', 'event_id', v_event_id, 'type', v_type);
  end if;
  perform tally.validate_typed_event(event);

  insert into tally.stripe_events (event_id, type, stripe_created_at, livemode, api_version,
                                   layout, customer_id, payment_intent_id, outcome, payload, raw)
  values (v_event_id, v_type, tally.to_time(event -> 'created'),
          (event ->> 'livemode')::boolean, event ->> 'api_version', event ->> 'layout',
          tally.event_customer_id(event), tally.event_payment_intent_id(event), 'processing',
          event - 'raw', event -> 'raw')
  on conflict (event_id) do nothing;
  if not found then
    select outcome into v_duplicate_of from tally.stripe_events where event_id = v_event_id;
    return jsonb_build_object('status', 'duplicate', 'event_id', v_event_id, 'type', v_type,
                              'original_status', v_duplicate_of);
  end if;
  return tally.process_event(v_event_id) || jsonb_build_object('type', v_type);
end;
$$;

comment on function public.apply_stripe_event(jsonb) is
  'Apply one typed Stripe event (schema/typed_event.schema.json) exactly once.';

revoke all on function public.apply_stripe_event(jsonb) from public, anon, authenticated;
grant execute on function public.apply_stripe_event(jsonb) to service_role;

-- Re-apply rejected events (all, or one) after the operator fixed the cause.
create function public.retry_rejected_stripe_events(event_id text default null)
returns jsonb
language plpgsql
security definer
set search_path = ''
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
