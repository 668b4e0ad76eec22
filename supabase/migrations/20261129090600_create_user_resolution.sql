-- Finding the user an event is about (SPEC 3.5), rejecting events that name
-- a user or price we cannot accept, and the customer-to-user link whose
-- arrival re-applies the events parked for that customer.

-- An event that cannot be applied as sent: the dispatcher records it as
-- rejected with this message as its reason. SQLSTATE TL001 is ours.
create function tally.reject(p_reason text) returns void
language plpgsql
set search_path = ''
as $$
begin
  raise exception using errcode = 'TL001', message = p_reason;
end;
$$;

revoke all on function tally.reject(text) from public, anon, authenticated;

-- The user id an event names outright, in SPEC 3.5 order.
create function tally.user_hint(p_event jsonb) returns text
language sql
immutable
as $$
  select coalesce(
    p_event -> 'checkout_session' ->> 'client_reference_id',
    p_event -> 'checkout_session' ->> 'metadata_user_id',
    p_event -> 'subscription' ->> 'metadata_user_id',
    p_event -> 'invoice' ->> 'subscription_metadata_user_id',
    p_event -> 'charge' ->> 'metadata_user_id'
  );
$$;

revoke all on function tally.user_hint(jsonb) from public, anon, authenticated;

create function tally.event_customer_id(p_event jsonb) returns text
language sql
immutable
as $$
  select coalesce(
    p_event -> 'checkout_session' ->> 'customer_id',
    p_event -> 'invoice' ->> 'customer_id',
    p_event -> 'subscription' ->> 'customer_id',
    p_event -> 'charge' ->> 'customer_id'
  );
$$;

revoke all on function tally.event_customer_id(jsonb) from public, anon, authenticated;

create function tally.event_payment_intent_id(p_event jsonb) returns text
language sql
immutable
as $$
  select coalesce(
    p_event -> 'checkout_session' ->> 'payment_intent_id',
    p_event -> 'charge' ->> 'payment_intent_id',
    p_event -> 'dispute' ->> 'payment_intent_id'
  );
$$;

revoke all on function tally.event_payment_intent_id(jsonb) from public, anon, authenticated;

-- The user of an event: its hint, else the stored customer link, else what
-- tally already knows of the object (subscription, pack payment, charge).
-- Null means "not yet": the event is parked. Rejects hints that are not a
-- UUID and users that do not exist.
-- Legacy invoices also name the charge and payment intent that paid them.
create function tally.resolve_user(p_event jsonb) returns uuid
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

revoke all on function tally.resolve_user(jsonb) from public, anon, authenticated;

-- Serialises everything that parks or links events of one customer, so an
-- event cannot park just as its link is being stored.
create function tally.lock_customer(p_customer_id text) returns void
language sql
as $$
  select pg_advisory_xact_lock(hashtextextended('tally.customer:' || p_customer_id, 0));
$$;

revoke all on function tally.lock_customer(text) from public, anon, authenticated;

create function tally.lock_payment_intent(p_payment_intent_id text) returns void
language sql
as $$
  select pg_advisory_xact_lock(hashtextextended('tally.payment_intent:' || p_payment_intent_id, 0));
$$;

revoke all on function tally.lock_payment_intent(text)
  from public, anon, authenticated;

-- Re-apply the events parked for a customer or a payment intent, oldest
-- first. Returns how many were tried.
create function tally.unpark_events(p_customer_id text, p_payment_intent_id text)
returns integer
language plpgsql
set search_path = ''
as $$
declare
  v_parked record;
  v_count integer := 0;
begin
  for v_parked in
    select e.stripe_created_at, e.event_id from tally.stripe_events e
     where e.outcome = 'parked' and e.customer_id = p_customer_id
    union
    select e.stripe_created_at, e.event_id from tally.stripe_events e
     where e.outcome = 'parked' and e.payment_intent_id = p_payment_intent_id
    order by 1, 2
  loop
    perform tally.process_event(v_parked.event_id);
    v_count := v_count + 1;
  end loop;
  return v_count;
end;
$$;

revoke all on function tally.unpark_events(text, text) from public, anon, authenticated;

-- Store the link (the first link of a customer stays) and re-apply its
-- parked events. Returns false when the customer was already linked.
create function tally.link_customer(p_customer_id text, p_user_id uuid, p_source text)
returns boolean
language plpgsql
set search_path = ''
as $$
begin
  perform tally.lock_customer(p_customer_id);
  insert into tally.customers (customer_id, user_id, source)
  values (p_customer_id, p_user_id, p_source)
  on conflict (customer_id) do nothing;
  if not found then
    return false;
  end if;
  perform tally.unpark_events(p_customer_id, null);
  return true;
end;
$$;

revoke all on function tally.link_customer(text, uuid, text) from public, anon, authenticated;
