-- Finding the user an event is about, rejecting events that name a user or
-- price we cannot accept, parking events until what they wait for appears
-- (the customer's user, the purchase a payment was for), and the
-- customer-to-user link, stored only from objects the product made.

-- An event that cannot be applied as sent: the dispatcher records it as
-- rejected with this message as its reason. SQLSTATE TL001 is ours.
create function tally.reject(p_reason text) returns void
language plpgsql
as $$
begin
  raise exception using errcode = 'TL001', message = p_reason;
end;
$$;

revoke all on function tally.reject(text) from public, anon, authenticated;

-- The user id an event names outright, in order: the Checkout Session's
-- client_reference_id, its metadata.user_id, the subscription's metadata
-- (on the subscription or its snapshot on the invoice), the charge's.
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

create function tally.is_uuid(p_text text) returns boolean
language sql
immutable
as $$
  select p_text ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$';
$$;

revoke all on function tally.is_uuid(text) from public, anon, authenticated;

-- Did the product make the object, so that the user and customer it names
-- belong together? A Checkout Session the sidecar created carries
-- metadata.price_id and the same user in metadata.user_id and
-- client_reference_id; a subscription it created carries metadata.user_id.
-- A Payment Link or Pricing Table lets the payer choose
-- client_reference_id: such a session never links a customer.
create function tally.is_product_made(p_event jsonb) returns boolean
language sql
immutable
as $$
  select case
    when p_event ? 'checkout_session' then
      (p_event -> 'checkout_session' ->> 'metadata_price_id') is not null
      and (p_event -> 'checkout_session' ->> 'client_reference_id')
          = (p_event -> 'checkout_session' ->> 'metadata_user_id')
    when p_event ? 'subscription' then
      (p_event -> 'subscription' ->> 'metadata_user_id') is not null
    when p_event ? 'invoice' then
      (p_event -> 'invoice' ->> 'subscription_metadata_user_id') is not null
    else false
  end;
$$;

revoke all on function tally.is_product_made(jsonb) from public, anon, authenticated;

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
    p_event -> 'dispute' ->> 'payment_intent_id',
    p_event -> 'invoice_payment' ->> 'payment_intent_id'
  );
$$;

revoke all on function tally.event_payment_intent_id(jsonb) from public, anon, authenticated;

create function tally.event_charge_id(p_event jsonb) returns text
language sql
immutable
as $$
  select coalesce(p_event -> 'charge' ->> 'id', p_event -> 'dispute' ->> 'charge_id');
$$;

revoke all on function tally.event_charge_id(jsonb) from public, anon, authenticated;

-- What a payment (payment intent, else charge) paid for, as far as tally
-- knows: a pack ('pack', its Checkout Session) or a subscription invoice
-- ('invoice', its id), or null.
create function tally.payment_target(p_payment_intent_id text, p_charge_id text,
                                     p_invoice_id text default null)
returns table (kind text, id text, user_id uuid)
language plpgsql
stable
as $$
declare
  v_invoice_id text := p_invoice_id;
begin
  if p_payment_intent_id is not null then
    return query select 'pack'::text, p.checkout_session_id, p.user_id
                   from tally.pack_purchases p
                  where p.payment_intent_id = p_payment_intent_id
                  order by p.checkout_session_id
                  limit 1;
    if found then
      return;
    end if;
  end if;
  if v_invoice_id is null then
    select ip.invoice_id into v_invoice_id from tally.invoice_payments ip
     where ip.payment_key in ('payment_intent:' || p_payment_intent_id, 'charge:' || p_charge_id)
     order by ip.payment_key
     limit 1;
  end if;
  if v_invoice_id is null and p_charge_id is not null then
    select c.invoice_id into v_invoice_id from tally.charges c where c.charge_id = p_charge_id;
  end if;
  if v_invoice_id is not null then
    return query select 'invoice'::text, v_invoice_id, i.user_id
                   from tally.invoices i where i.invoice_id = v_invoice_id
                 union all
                 select 'invoice'::text, v_invoice_id, null::uuid
                  where not exists (select 1 from tally.invoices i
                                     where i.invoice_id = v_invoice_id);
  end if;
end;
$$;

revoke all on function tally.payment_target(text, text, text) from public, anon, authenticated;

-- The user of an event: its hint, else the stored customer link, else what
-- tally already knows of the object (its subscription, the purchase its
-- payment was for). Null means "not yet": the event is parked. Rejects
-- hints that are not a UUID and users that do not exist.
create function tally.resolve_user(p_event jsonb) returns uuid
language plpgsql
stable
as $$
declare
  v_hint text := tally.user_hint(p_event);
  v_customer_id text := tally.event_customer_id(p_event);
  v_user_id uuid;
begin
  if v_hint is not null then
    if not tally.is_uuid(v_hint) then
      perform tally.reject(format('user id %L is not a UUID', left(v_hint, 80)));
    end if;
    v_user_id := v_hint::uuid;
  end if;
  -- A refund or dispute belongs to whoever bought what it pays back.
  if p_event ? 'charge' or p_event ? 'dispute' then
    v_user_id := coalesce(
      (select t.user_id
         from tally.payment_target(tally.event_payment_intent_id(p_event),
                                   tally.event_charge_id(p_event),
                                   p_event -> 'charge' ->> 'invoice_id') t
        where t.user_id is not null),
      v_user_id);
  end if;
  if v_user_id is null and v_customer_id is not null then
    select c.user_id into v_user_id from tally.customers c where c.customer_id = v_customer_id;
  end if;
  if v_user_id is null then
    select s.user_id into v_user_id from tally.subscriptions s
     where s.subscription_id = coalesce(p_event -> 'invoice' ->> 'subscription_id',
                                         p_event -> 'subscription' ->> 'id');
  end if;
  if v_user_id is null and p_event ? 'dispute' then
    select c.user_id into v_user_id from tally.charges c
     where c.charge_id = p_event -> 'dispute' ->> 'charge_id';
  end if;
  if v_user_id is not null and not exists (select 1 from auth.users u where u.id = v_user_id) then
    perform tally.reject(format('unknown user %s: no such row in auth.users', v_user_id));
  end if;
  return v_user_id;
end;
$$;

revoke all on function tally.resolve_user(jsonb) from public, anon, authenticated;

-- What a parked event without a user waits for: its customer's link, else
-- the purchase its payment intent or charge paid for.
create function tally.user_wait_key(p_event jsonb) returns text
language sql
immutable
as $$
  select coalesce('customer:' || tally.event_customer_id(p_event),
                  'payment_intent:' || tally.event_payment_intent_id(p_event),
                  'charge:' || tally.event_charge_id(p_event));
$$;

revoke all on function tally.user_wait_key(jsonb) from public, anon, authenticated;

-- Serialises everything that parks or wakes events of one key, so an event
-- cannot park just as what it waits for is being stored.
create function tally.lock_key(p_key text) returns void
language sql
as $$
  select pg_advisory_xact_lock(hashtextextended('tally.' || p_key, 0));
$$;

revoke all on function tally.lock_key(text) from public, anon, authenticated;

-- How many woken events one transaction re-applies; the rest are applied by
-- public.apply_ready_stripe_events, a batch per transaction.
create function tally.wake_batch_size() returns integer
language sql
immutable
as $$
  select 50;
$$;

revoke all on function tally.wake_batch_size() from public, anon, authenticated;

-- What an event parked on p_key waited for has appeared: mark its events
-- ready and re-apply the oldest of them now. Returns how many were applied.
create function tally.wake(p_key text) returns integer
language plpgsql
as $$
declare
  v_event_id text;
  v_count integer := 0;
begin
  if p_key is null then
    return 0;
  end if;
  update tally.stripe_events e set is_ready = true
   where e.waiting_on = p_key and e.outcome = 'parked' and not e.is_ready;
  if not found then
    return 0;
  end if;
  for v_event_id in
    select e.event_id from tally.stripe_events e
     where e.waiting_on = p_key and e.outcome = 'parked' and e.is_ready
     order by e.stripe_created_at, e.event_id
     limit tally.wake_batch_size()
     for update skip locked
  loop
    perform tally.process_event(v_event_id);
    v_count := v_count + 1;
  end loop;
  return v_count;
end;
$$;

revoke all on function tally.wake(text) from public, anon, authenticated;

-- Store the link (a customer's first link stays) and wake the events that
-- waited for it. Returns false when the customer was already linked.
create function tally.link_customer(p_customer_id text, p_user_id uuid, p_source text)
returns boolean
language plpgsql
as $$
begin
  perform tally.lock_key('customer:' || p_customer_id);
  insert into tally.customers (customer_id, user_id, source)
  values (p_customer_id, p_user_id, p_source)
  on conflict (customer_id) do nothing;
  if not found then
    return false;
  end if;
  perform tally.wake('customer:' || p_customer_id);
  return true;
end;
$$;

revoke all on function tally.link_customer(text, uuid, text) from public, anon, authenticated;
