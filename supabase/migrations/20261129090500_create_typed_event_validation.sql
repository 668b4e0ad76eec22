-- The typed event that public.apply_stripe_event accepts, and its strict
-- check. The shape is defined once, in schema/typed_event.schema.json (the
-- sidecar's normaliser is tested against the same file); the functions
-- between the markers below are generated from it by tally/typed_event_sql.py
-- (straight-line checks, no query per field), and a test regenerates them
-- and compares. An event that fails the check is not refused: it is stored
-- as rejected with the first problem as its reason (nothing signed by
-- Stripe is lost), and can be re-applied after a fix.

-- generated:begin (python -m tally.typed_event_sql; do not edit by hand)

create function tally.typed_envelope_problem(p jsonb, p_path text) returns text
language plpgsql
immutable
as $$
declare
  v jsonb;
  v_problem text;
  i integer;
begin
  if jsonb_typeof(p) is distinct from 'object' then
    return p_path || ': expected object, got ' || coalesce(jsonb_typeof(p), 'nothing');
  end if;
  if (p - array['api_version', 'charge', 'checkout_session', 'created', 'dispute', 'id', 'invoice', 'invoice_payment', 'layout', 'livemode', 'problem', 'raw', 'schema_version', 'subscription', 'type']::text[]) <> '{}'::jsonb then
    return p_path || '.' || (select left(k, 80) from jsonb_object_keys(p - array['api_version', 'charge', 'checkout_session', 'created', 'dispute', 'id', 'invoice', 'invoice_payment', 'layout', 'livemode', 'problem', 'raw', 'schema_version', 'subscription', 'type']::text[]) as k order by k limit 1) || ': unexpected field';
  end if;
  v := p -> 'schema_version';
  if v is null then return p_path || '.schema_version' || ': required'; end if;
  if not ((jsonb_typeof(v) = 'number' and (v::text)::numeric % 1 = 0)) then
    return p_path || '.schema_version' || ': expected integer, got ' || jsonb_typeof(v);
  end if;
  if v <> '2'::jsonb then
    return p_path || '.schema_version' || ': must be 2';
  end if;
  v := p -> 'id';
  if v is null then return p_path || '.id' || ': required'; end if;
  if not (jsonb_typeof(v) = 'string') then
    return p_path || '.id' || ': expected string, got ' || jsonb_typeof(v);
  end if;
  if jsonb_typeof(v) = 'string' and length(v #>> '{}') not between 1 and 1000 then
    return p_path || '.id' || ': length out of range';
  end if;
  v := p -> 'type';
  if v is null then return p_path || '.type' || ': required'; end if;
  if not (jsonb_typeof(v) = 'string') then
    return p_path || '.type' || ': expected string, got ' || jsonb_typeof(v);
  end if;
  if not '["checkout.session.completed", "checkout.session.async_payment_succeeded", "checkout.session.async_payment_failed", "invoice.paid", "invoice.payment_failed", "customer.subscription.created", "customer.subscription.updated", "customer.subscription.deleted", "charge.refunded", "charge.dispute.created", "charge.dispute.closed", "invoice_payment.paid"]'::jsonb @> jsonb_build_array(v) then
    return p_path || '.type' || ': ' || left(v::text, 80) || ' is not one of checkout.session.completed, checkout.session.async_payment_succeeded, checkout.session.async_payment_failed, invoice.paid, invoice.payment_failed, customer.subscription.created, customer.subscription.updated, customer.subscription.deleted, charge.refunded, charge.dispute.created, charge.dispute.closed, invoice_payment.paid';
  end if;
  v := p -> 'created';
  if v is null then return p_path || '.created' || ': required'; end if;
  if jsonb_typeof(v) <> 'null' then
    if not ((jsonb_typeof(v) = 'number' and (v::text)::numeric % 1 = 0)) then
      return p_path || '.created' || ': expected integer, got ' || jsonb_typeof(v);
    end if;
    if jsonb_typeof(v) = 'number' and ((v::text)::numeric < 0 or (v::text)::numeric > 253402300799) then
      return p_path || '.created' || ': out of range';
    end if;
  end if;
  v := p -> 'livemode';
  if v is null then return p_path || '.livemode' || ': required'; end if;
  if jsonb_typeof(v) <> 'null' then
    if not (jsonb_typeof(v) = 'boolean') then
      return p_path || '.livemode' || ': expected boolean, got ' || jsonb_typeof(v);
    end if;
  end if;
  v := p -> 'api_version';
  if v is null then return p_path || '.api_version' || ': required'; end if;
  if jsonb_typeof(v) <> 'null' then
    if not (jsonb_typeof(v) = 'string') then
      return p_path || '.api_version' || ': expected string, got ' || jsonb_typeof(v);
    end if;
    if jsonb_typeof(v) = 'string' and length(v #>> '{}') not between 1 and 64 then
      return p_path || '.api_version' || ': length out of range';
    end if;
  end if;
  v := p -> 'layout';
  if v is null then return p_path || '.layout' || ': required'; end if;
  if not (jsonb_typeof(v) = 'string') then
    return p_path || '.layout' || ': expected string, got ' || jsonb_typeof(v);
  end if;
  if not '["legacy", "basil"]'::jsonb @> jsonb_build_array(v) then
    return p_path || '.layout' || ': ' || left(v::text, 80) || ' is not one of legacy, basil';
  end if;
  v := p -> 'problem';
  if v is null then return p_path || '.problem' || ': required'; end if;
  if jsonb_typeof(v) <> 'null' then
    if not (jsonb_typeof(v) = 'string') then
      return p_path || '.problem' || ': expected string, got ' || jsonb_typeof(v);
    end if;
    if jsonb_typeof(v) = 'string' and length(v #>> '{}') not between 1 and 1000 then
      return p_path || '.problem' || ': length out of range';
    end if;
  end if;
  v := p -> 'raw';
  if v is null then return p_path || '.raw' || ': required'; end if;
  if not (jsonb_typeof(v) = 'object') then
    return p_path || '.raw' || ': expected object, got ' || jsonb_typeof(v);
  end if;
  return null;
end;
$$;

revoke all on function tally.typed_envelope_problem(jsonb, text) from public, anon, authenticated;

create function tally.typed_checkout_session_problem(p jsonb, p_path text) returns text
language plpgsql
immutable
as $$
declare
  v jsonb;
  v_problem text;
  i integer;
begin
  if jsonb_typeof(p) is distinct from 'object' then
    return p_path || ': expected object, got ' || coalesce(jsonb_typeof(p), 'nothing');
  end if;
  if (p - array['amount_total', 'client_reference_id', 'currency', 'customer_id', 'id', 'metadata_price_id', 'metadata_user_id', 'mode', 'payment_intent_id', 'payment_status', 'status', 'subscription_id']::text[]) <> '{}'::jsonb then
    return p_path || '.' || (select left(k, 80) from jsonb_object_keys(p - array['amount_total', 'client_reference_id', 'currency', 'customer_id', 'id', 'metadata_price_id', 'metadata_user_id', 'mode', 'payment_intent_id', 'payment_status', 'status', 'subscription_id']::text[]) as k order by k limit 1) || ': unexpected field';
  end if;
  v := p -> 'id';
  if v is null then return p_path || '.id' || ': required'; end if;
  if not (jsonb_typeof(v) = 'string') then
    return p_path || '.id' || ': expected string, got ' || jsonb_typeof(v);
  end if;
  if jsonb_typeof(v) = 'string' and length(v #>> '{}') not between 1 and 255 then
    return p_path || '.id' || ': length out of range';
  end if;
  v := p -> 'mode';
  if v is null then return p_path || '.mode' || ': required'; end if;
  if not (jsonb_typeof(v) = 'string') then
    return p_path || '.mode' || ': expected string, got ' || jsonb_typeof(v);
  end if;
  if not '["payment", "subscription", "setup"]'::jsonb @> jsonb_build_array(v) then
    return p_path || '.mode' || ': ' || left(v::text, 80) || ' is not one of payment, subscription, setup';
  end if;
  v := p -> 'status';
  if v is null then return p_path || '.status' || ': required'; end if;
  if jsonb_typeof(v) <> 'null' then
    if not (jsonb_typeof(v) = 'string') then
      return p_path || '.status' || ': expected string, got ' || jsonb_typeof(v);
    end if;
    if jsonb_typeof(v) = 'string' and length(v #>> '{}') not between 1 and 64 then
      return p_path || '.status' || ': length out of range';
    end if;
  end if;
  v := p -> 'payment_status';
  if v is null then return p_path || '.payment_status' || ': required'; end if;
  if not (jsonb_typeof(v) = 'string') then
    return p_path || '.payment_status' || ': expected string, got ' || jsonb_typeof(v);
  end if;
  if not '["paid", "unpaid", "no_payment_required"]'::jsonb @> jsonb_build_array(v) then
    return p_path || '.payment_status' || ': ' || left(v::text, 80) || ' is not one of paid, unpaid, no_payment_required';
  end if;
  v := p -> 'customer_id';
  if v is null then return p_path || '.customer_id' || ': required'; end if;
  if jsonb_typeof(v) <> 'null' then
    if not (jsonb_typeof(v) = 'string') then
      return p_path || '.customer_id' || ': expected string, got ' || jsonb_typeof(v);
    end if;
    if jsonb_typeof(v) = 'string' and length(v #>> '{}') not between 1 and 255 then
      return p_path || '.customer_id' || ': length out of range';
    end if;
  end if;
  v := p -> 'client_reference_id';
  if v is null then return p_path || '.client_reference_id' || ': required'; end if;
  if jsonb_typeof(v) <> 'null' then
    if not (jsonb_typeof(v) = 'string') then
      return p_path || '.client_reference_id' || ': expected string, got ' || jsonb_typeof(v);
    end if;
    if jsonb_typeof(v) = 'string' and length(v #>> '{}') not between 1 and 255 then
      return p_path || '.client_reference_id' || ': length out of range';
    end if;
  end if;
  v := p -> 'metadata_user_id';
  if v is null then return p_path || '.metadata_user_id' || ': required'; end if;
  if jsonb_typeof(v) <> 'null' then
    if not (jsonb_typeof(v) = 'string') then
      return p_path || '.metadata_user_id' || ': expected string, got ' || jsonb_typeof(v);
    end if;
    if jsonb_typeof(v) = 'string' and length(v #>> '{}') not between 1 and 255 then
      return p_path || '.metadata_user_id' || ': length out of range';
    end if;
  end if;
  v := p -> 'metadata_price_id';
  if v is null then return p_path || '.metadata_price_id' || ': required'; end if;
  if jsonb_typeof(v) <> 'null' then
    if not (jsonb_typeof(v) = 'string') then
      return p_path || '.metadata_price_id' || ': expected string, got ' || jsonb_typeof(v);
    end if;
    if jsonb_typeof(v) = 'string' and length(v #>> '{}') not between 1 and 255 then
      return p_path || '.metadata_price_id' || ': length out of range';
    end if;
  end if;
  v := p -> 'subscription_id';
  if v is null then return p_path || '.subscription_id' || ': required'; end if;
  if jsonb_typeof(v) <> 'null' then
    if not (jsonb_typeof(v) = 'string') then
      return p_path || '.subscription_id' || ': expected string, got ' || jsonb_typeof(v);
    end if;
    if jsonb_typeof(v) = 'string' and length(v #>> '{}') not between 1 and 255 then
      return p_path || '.subscription_id' || ': length out of range';
    end if;
  end if;
  v := p -> 'payment_intent_id';
  if v is null then return p_path || '.payment_intent_id' || ': required'; end if;
  if jsonb_typeof(v) <> 'null' then
    if not (jsonb_typeof(v) = 'string') then
      return p_path || '.payment_intent_id' || ': expected string, got ' || jsonb_typeof(v);
    end if;
    if jsonb_typeof(v) = 'string' and length(v #>> '{}') not between 1 and 255 then
      return p_path || '.payment_intent_id' || ': length out of range';
    end if;
  end if;
  v := p -> 'amount_total';
  if v is null then return p_path || '.amount_total' || ': required'; end if;
  if jsonb_typeof(v) <> 'null' then
    if not ((jsonb_typeof(v) = 'number' and (v::text)::numeric % 1 = 0)) then
      return p_path || '.amount_total' || ': expected integer, got ' || jsonb_typeof(v);
    end if;
    if jsonb_typeof(v) = 'number' and ((v::text)::numeric < 0 or (v::text)::numeric > 9223372036854775807) then
      return p_path || '.amount_total' || ': out of range';
    end if;
  end if;
  v := p -> 'currency';
  if v is null then return p_path || '.currency' || ': required'; end if;
  if jsonb_typeof(v) <> 'null' then
    if not (jsonb_typeof(v) = 'string') then
      return p_path || '.currency' || ': expected string, got ' || jsonb_typeof(v);
    end if;
    if jsonb_typeof(v) = 'string' and length(v #>> '{}') not between 1 and 16 then
      return p_path || '.currency' || ': length out of range';
    end if;
  end if;
  return null;
end;
$$;

revoke all on function tally.typed_checkout_session_problem(jsonb, text) from public, anon, authenticated;

create function tally.typed_invoice_problem(p jsonb, p_path text) returns text
language plpgsql
immutable
as $$
declare
  v jsonb;
  v_problem text;
  i integer;
begin
  if jsonb_typeof(p) is distinct from 'object' then
    return p_path || ': expected object, got ' || coalesce(jsonb_typeof(p), 'nothing');
  end if;
  if (p - array['amount_due', 'amount_paid', 'billing_reason', 'charge_id', 'created', 'currency', 'customer_id', 'id', 'lines', 'payment_intent_id', 'status', 'subscription_id', 'subscription_metadata_user_id']::text[]) <> '{}'::jsonb then
    return p_path || '.' || (select left(k, 80) from jsonb_object_keys(p - array['amount_due', 'amount_paid', 'billing_reason', 'charge_id', 'created', 'currency', 'customer_id', 'id', 'lines', 'payment_intent_id', 'status', 'subscription_id', 'subscription_metadata_user_id']::text[]) as k order by k limit 1) || ': unexpected field';
  end if;
  v := p -> 'id';
  if v is null then return p_path || '.id' || ': required'; end if;
  if not (jsonb_typeof(v) = 'string') then
    return p_path || '.id' || ': expected string, got ' || jsonb_typeof(v);
  end if;
  if jsonb_typeof(v) = 'string' and length(v #>> '{}') not between 1 and 255 then
    return p_path || '.id' || ': length out of range';
  end if;
  v := p -> 'customer_id';
  if v is null then return p_path || '.customer_id' || ': required'; end if;
  if jsonb_typeof(v) <> 'null' then
    if not (jsonb_typeof(v) = 'string') then
      return p_path || '.customer_id' || ': expected string, got ' || jsonb_typeof(v);
    end if;
    if jsonb_typeof(v) = 'string' and length(v #>> '{}') not between 1 and 255 then
      return p_path || '.customer_id' || ': length out of range';
    end if;
  end if;
  v := p -> 'subscription_id';
  if v is null then return p_path || '.subscription_id' || ': required'; end if;
  if jsonb_typeof(v) <> 'null' then
    if not (jsonb_typeof(v) = 'string') then
      return p_path || '.subscription_id' || ': expected string, got ' || jsonb_typeof(v);
    end if;
    if jsonb_typeof(v) = 'string' and length(v #>> '{}') not between 1 and 255 then
      return p_path || '.subscription_id' || ': length out of range';
    end if;
  end if;
  v := p -> 'status';
  if v is null then return p_path || '.status' || ': required'; end if;
  if not (jsonb_typeof(v) = 'string') then
    return p_path || '.status' || ': expected string, got ' || jsonb_typeof(v);
  end if;
  if jsonb_typeof(v) = 'string' and length(v #>> '{}') not between 1 and 64 then
    return p_path || '.status' || ': length out of range';
  end if;
  v := p -> 'billing_reason';
  if v is null then return p_path || '.billing_reason' || ': required'; end if;
  if jsonb_typeof(v) <> 'null' then
    if not (jsonb_typeof(v) = 'string') then
      return p_path || '.billing_reason' || ': expected string, got ' || jsonb_typeof(v);
    end if;
    if jsonb_typeof(v) = 'string' and length(v #>> '{}') not between 1 and 64 then
      return p_path || '.billing_reason' || ': length out of range';
    end if;
  end if;
  v := p -> 'amount_paid';
  if v is null then return p_path || '.amount_paid' || ': required'; end if;
  if not ((jsonb_typeof(v) = 'number' and (v::text)::numeric % 1 = 0)) then
    return p_path || '.amount_paid' || ': expected integer, got ' || jsonb_typeof(v);
  end if;
  if jsonb_typeof(v) = 'number' and ((v::text)::numeric < 0 or (v::text)::numeric > 9223372036854775807) then
    return p_path || '.amount_paid' || ': out of range';
  end if;
  v := p -> 'amount_due';
  if v is null then return p_path || '.amount_due' || ': required'; end if;
  if not ((jsonb_typeof(v) = 'number' and (v::text)::numeric % 1 = 0)) then
    return p_path || '.amount_due' || ': expected integer, got ' || jsonb_typeof(v);
  end if;
  if jsonb_typeof(v) = 'number' and ((v::text)::numeric < 0 or (v::text)::numeric > 9223372036854775807) then
    return p_path || '.amount_due' || ': out of range';
  end if;
  v := p -> 'currency';
  if v is null then return p_path || '.currency' || ': required'; end if;
  if jsonb_typeof(v) <> 'null' then
    if not (jsonb_typeof(v) = 'string') then
      return p_path || '.currency' || ': expected string, got ' || jsonb_typeof(v);
    end if;
    if jsonb_typeof(v) = 'string' and length(v #>> '{}') not between 1 and 16 then
      return p_path || '.currency' || ': length out of range';
    end if;
  end if;
  v := p -> 'created';
  if v is null then return p_path || '.created' || ': required'; end if;
  if jsonb_typeof(v) <> 'null' then
    if not ((jsonb_typeof(v) = 'number' and (v::text)::numeric % 1 = 0)) then
      return p_path || '.created' || ': expected integer, got ' || jsonb_typeof(v);
    end if;
    if jsonb_typeof(v) = 'number' and ((v::text)::numeric < 0 or (v::text)::numeric > 253402300799) then
      return p_path || '.created' || ': out of range';
    end if;
  end if;
  v := p -> 'subscription_metadata_user_id';
  if v is null then return p_path || '.subscription_metadata_user_id' || ': required'; end if;
  if jsonb_typeof(v) <> 'null' then
    if not (jsonb_typeof(v) = 'string') then
      return p_path || '.subscription_metadata_user_id' || ': expected string, got ' || jsonb_typeof(v);
    end if;
    if jsonb_typeof(v) = 'string' and length(v #>> '{}') not between 1 and 255 then
      return p_path || '.subscription_metadata_user_id' || ': length out of range';
    end if;
  end if;
  v := p -> 'charge_id';
  if v is null then return p_path || '.charge_id' || ': required'; end if;
  if jsonb_typeof(v) <> 'null' then
    if not (jsonb_typeof(v) = 'string') then
      return p_path || '.charge_id' || ': expected string, got ' || jsonb_typeof(v);
    end if;
    if jsonb_typeof(v) = 'string' and length(v #>> '{}') not between 1 and 255 then
      return p_path || '.charge_id' || ': length out of range';
    end if;
  end if;
  v := p -> 'payment_intent_id';
  if v is null then return p_path || '.payment_intent_id' || ': required'; end if;
  if jsonb_typeof(v) <> 'null' then
    if not (jsonb_typeof(v) = 'string') then
      return p_path || '.payment_intent_id' || ': expected string, got ' || jsonb_typeof(v);
    end if;
    if jsonb_typeof(v) = 'string' and length(v #>> '{}') not between 1 and 255 then
      return p_path || '.payment_intent_id' || ': length out of range';
    end if;
  end if;
  v := p -> 'lines';
  if v is null then return p_path || '.lines' || ': required'; end if;
  if not (jsonb_typeof(v) = 'array') then
    return p_path || '.lines' || ': expected array, got ' || jsonb_typeof(v);
  end if;
  if jsonb_typeof(v) = 'array' and jsonb_array_length(v) > 10000 then
    return p_path || '.lines' || ': too many items';
  end if;
  if jsonb_typeof(v) = 'array' then
    for i in 0 .. jsonb_array_length(v) - 1 loop
      v_problem := tally.typed_invoice_problem__lines_item(v -> i, p_path || '.lines' || '[' || i || ']');
      if v_problem is not null then return v_problem; end if;
    end loop;
  end if;
  return null;
end;
$$;

revoke all on function tally.typed_invoice_problem(jsonb, text) from public, anon, authenticated;

create function tally.typed_invoice_problem__lines_item(p jsonb, p_path text) returns text
language plpgsql
immutable
as $$
declare
  v jsonb;
  v_problem text;
  i integer;
begin
  if jsonb_typeof(p) is distinct from 'object' then
    return p_path || ': expected object, got ' || coalesce(jsonb_typeof(p), 'nothing');
  end if;
  if (p - array['amount', 'id', 'is_credit', 'is_proration', 'period_end', 'period_start', 'price_id', 'subscription_id']::text[]) <> '{}'::jsonb then
    return p_path || '.' || (select left(k, 80) from jsonb_object_keys(p - array['amount', 'id', 'is_credit', 'is_proration', 'period_end', 'period_start', 'price_id', 'subscription_id']::text[]) as k order by k limit 1) || ': unexpected field';
  end if;
  v := p -> 'id';
  if v is null then return p_path || '.id' || ': required'; end if;
  if jsonb_typeof(v) <> 'null' then
    if not (jsonb_typeof(v) = 'string') then
      return p_path || '.id' || ': expected string, got ' || jsonb_typeof(v);
    end if;
    if jsonb_typeof(v) = 'string' and length(v #>> '{}') not between 1 and 255 then
      return p_path || '.id' || ': length out of range';
    end if;
  end if;
  v := p -> 'price_id';
  if v is null then return p_path || '.price_id' || ': required'; end if;
  if jsonb_typeof(v) <> 'null' then
    if not (jsonb_typeof(v) = 'string') then
      return p_path || '.price_id' || ': expected string, got ' || jsonb_typeof(v);
    end if;
    if jsonb_typeof(v) = 'string' and length(v #>> '{}') not between 1 and 255 then
      return p_path || '.price_id' || ': length out of range';
    end if;
  end if;
  v := p -> 'subscription_id';
  if v is null then return p_path || '.subscription_id' || ': required'; end if;
  if jsonb_typeof(v) <> 'null' then
    if not (jsonb_typeof(v) = 'string') then
      return p_path || '.subscription_id' || ': expected string, got ' || jsonb_typeof(v);
    end if;
    if jsonb_typeof(v) = 'string' and length(v #>> '{}') not between 1 and 255 then
      return p_path || '.subscription_id' || ': length out of range';
    end if;
  end if;
  v := p -> 'is_proration';
  if v is null then return p_path || '.is_proration' || ': required'; end if;
  if not (jsonb_typeof(v) = 'boolean') then
    return p_path || '.is_proration' || ': expected boolean, got ' || jsonb_typeof(v);
  end if;
  v := p -> 'is_credit';
  if v is null then return p_path || '.is_credit' || ': required'; end if;
  if not (jsonb_typeof(v) = 'boolean') then
    return p_path || '.is_credit' || ': expected boolean, got ' || jsonb_typeof(v);
  end if;
  v := p -> 'amount';
  if v is null then return p_path || '.amount' || ': required'; end if;
  if not ((jsonb_typeof(v) = 'number' and (v::text)::numeric % 1 = 0)) then
    return p_path || '.amount' || ': expected integer, got ' || jsonb_typeof(v);
  end if;
  if jsonb_typeof(v) = 'number' and ((v::text)::numeric < -9223372036854775807 or (v::text)::numeric > 9223372036854775807) then
    return p_path || '.amount' || ': out of range';
  end if;
  v := p -> 'period_start';
  if v is null then return p_path || '.period_start' || ': required'; end if;
  if jsonb_typeof(v) <> 'null' then
    if not ((jsonb_typeof(v) = 'number' and (v::text)::numeric % 1 = 0)) then
      return p_path || '.period_start' || ': expected integer, got ' || jsonb_typeof(v);
    end if;
    if jsonb_typeof(v) = 'number' and ((v::text)::numeric < 0 or (v::text)::numeric > 253402300799) then
      return p_path || '.period_start' || ': out of range';
    end if;
  end if;
  v := p -> 'period_end';
  if v is null then return p_path || '.period_end' || ': required'; end if;
  if jsonb_typeof(v) <> 'null' then
    if not ((jsonb_typeof(v) = 'number' and (v::text)::numeric % 1 = 0)) then
      return p_path || '.period_end' || ': expected integer, got ' || jsonb_typeof(v);
    end if;
    if jsonb_typeof(v) = 'number' and ((v::text)::numeric < 0 or (v::text)::numeric > 253402300799) then
      return p_path || '.period_end' || ': out of range';
    end if;
  end if;
  return null;
end;
$$;

revoke all on function tally.typed_invoice_problem__lines_item(jsonb, text) from public, anon, authenticated;

create function tally.typed_subscription_problem(p jsonb, p_path text) returns text
language plpgsql
immutable
as $$
declare
  v jsonb;
  v_problem text;
  i integer;
begin
  if jsonb_typeof(p) is distinct from 'object' then
    return p_path || ': expected object, got ' || coalesce(jsonb_typeof(p), 'nothing');
  end if;
  if (p - array['cancel_at_period_end', 'canceled_at', 'created', 'customer_id', 'ended_at', 'id', 'items', 'metadata_user_id', 'previous', 'status']::text[]) <> '{}'::jsonb then
    return p_path || '.' || (select left(k, 80) from jsonb_object_keys(p - array['cancel_at_period_end', 'canceled_at', 'created', 'customer_id', 'ended_at', 'id', 'items', 'metadata_user_id', 'previous', 'status']::text[]) as k order by k limit 1) || ': unexpected field';
  end if;
  v := p -> 'id';
  if v is null then return p_path || '.id' || ': required'; end if;
  if not (jsonb_typeof(v) = 'string') then
    return p_path || '.id' || ': expected string, got ' || jsonb_typeof(v);
  end if;
  if jsonb_typeof(v) = 'string' and length(v #>> '{}') not between 1 and 255 then
    return p_path || '.id' || ': length out of range';
  end if;
  v := p -> 'customer_id';
  if v is null then return p_path || '.customer_id' || ': required'; end if;
  if jsonb_typeof(v) <> 'null' then
    if not (jsonb_typeof(v) = 'string') then
      return p_path || '.customer_id' || ': expected string, got ' || jsonb_typeof(v);
    end if;
    if jsonb_typeof(v) = 'string' and length(v #>> '{}') not between 1 and 255 then
      return p_path || '.customer_id' || ': length out of range';
    end if;
  end if;
  v := p -> 'status';
  if v is null then return p_path || '.status' || ': required'; end if;
  if not (jsonb_typeof(v) = 'string') then
    return p_path || '.status' || ': expected string, got ' || jsonb_typeof(v);
  end if;
  if not '["incomplete", "incomplete_expired", "trialing", "active", "past_due", "canceled", "unpaid", "paused"]'::jsonb @> jsonb_build_array(v) then
    return p_path || '.status' || ': ' || left(v::text, 80) || ' is not one of incomplete, incomplete_expired, trialing, active, past_due, canceled, unpaid, paused';
  end if;
  v := p -> 'created';
  if v is null then return p_path || '.created' || ': required'; end if;
  if jsonb_typeof(v) <> 'null' then
    if not ((jsonb_typeof(v) = 'number' and (v::text)::numeric % 1 = 0)) then
      return p_path || '.created' || ': expected integer, got ' || jsonb_typeof(v);
    end if;
    if jsonb_typeof(v) = 'number' and ((v::text)::numeric < 0 or (v::text)::numeric > 253402300799) then
      return p_path || '.created' || ': out of range';
    end if;
  end if;
  v := p -> 'cancel_at_period_end';
  if v is null then return p_path || '.cancel_at_period_end' || ': required'; end if;
  if not (jsonb_typeof(v) = 'boolean') then
    return p_path || '.cancel_at_period_end' || ': expected boolean, got ' || jsonb_typeof(v);
  end if;
  v := p -> 'canceled_at';
  if v is null then return p_path || '.canceled_at' || ': required'; end if;
  if jsonb_typeof(v) <> 'null' then
    if not ((jsonb_typeof(v) = 'number' and (v::text)::numeric % 1 = 0)) then
      return p_path || '.canceled_at' || ': expected integer, got ' || jsonb_typeof(v);
    end if;
    if jsonb_typeof(v) = 'number' and ((v::text)::numeric < 0 or (v::text)::numeric > 253402300799) then
      return p_path || '.canceled_at' || ': out of range';
    end if;
  end if;
  v := p -> 'ended_at';
  if v is null then return p_path || '.ended_at' || ': required'; end if;
  if jsonb_typeof(v) <> 'null' then
    if not ((jsonb_typeof(v) = 'number' and (v::text)::numeric % 1 = 0)) then
      return p_path || '.ended_at' || ': expected integer, got ' || jsonb_typeof(v);
    end if;
    if jsonb_typeof(v) = 'number' and ((v::text)::numeric < 0 or (v::text)::numeric > 253402300799) then
      return p_path || '.ended_at' || ': out of range';
    end if;
  end if;
  v := p -> 'metadata_user_id';
  if v is null then return p_path || '.metadata_user_id' || ': required'; end if;
  if jsonb_typeof(v) <> 'null' then
    if not (jsonb_typeof(v) = 'string') then
      return p_path || '.metadata_user_id' || ': expected string, got ' || jsonb_typeof(v);
    end if;
    if jsonb_typeof(v) = 'string' and length(v #>> '{}') not between 1 and 255 then
      return p_path || '.metadata_user_id' || ': length out of range';
    end if;
  end if;
  v := p -> 'items';
  if v is null then return p_path || '.items' || ': required'; end if;
  if not (jsonb_typeof(v) = 'array') then
    return p_path || '.items' || ': expected array, got ' || jsonb_typeof(v);
  end if;
  if jsonb_typeof(v) = 'array' and jsonb_array_length(v) > 1000 then
    return p_path || '.items' || ': too many items';
  end if;
  if jsonb_typeof(v) = 'array' then
    for i in 0 .. jsonb_array_length(v) - 1 loop
      v_problem := tally.typed_subscription_problem__items_item(v -> i, p_path || '.items' || '[' || i || ']');
      if v_problem is not null then return v_problem; end if;
    end loop;
  end if;
  v := p -> 'previous';
  if v is null then return p_path || '.previous' || ': required'; end if;
  if jsonb_typeof(v) <> 'null' then
    if not (jsonb_typeof(v) = 'object') then
      return p_path || '.previous' || ': expected object, got ' || jsonb_typeof(v);
    end if;
    if jsonb_typeof(v) = 'object' then
      v_problem := tally.typed_subscription_problem__previous(v, p_path || '.previous');
      if v_problem is not null then return v_problem; end if;
    end if;
  end if;
  return null;
end;
$$;

revoke all on function tally.typed_subscription_problem(jsonb, text) from public, anon, authenticated;

create function tally.typed_subscription_problem__items_item(p jsonb, p_path text) returns text
language plpgsql
immutable
as $$
declare
  v jsonb;
  v_problem text;
  i integer;
begin
  if jsonb_typeof(p) is distinct from 'object' then
    return p_path || ': expected object, got ' || coalesce(jsonb_typeof(p), 'nothing');
  end if;
  if (p - array['current_period_end', 'current_period_start', 'price_id']::text[]) <> '{}'::jsonb then
    return p_path || '.' || (select left(k, 80) from jsonb_object_keys(p - array['current_period_end', 'current_period_start', 'price_id']::text[]) as k order by k limit 1) || ': unexpected field';
  end if;
  v := p -> 'price_id';
  if v is null then return p_path || '.price_id' || ': required'; end if;
  if jsonb_typeof(v) <> 'null' then
    if not (jsonb_typeof(v) = 'string') then
      return p_path || '.price_id' || ': expected string, got ' || jsonb_typeof(v);
    end if;
    if jsonb_typeof(v) = 'string' and length(v #>> '{}') not between 1 and 255 then
      return p_path || '.price_id' || ': length out of range';
    end if;
  end if;
  v := p -> 'current_period_start';
  if v is null then return p_path || '.current_period_start' || ': required'; end if;
  if jsonb_typeof(v) <> 'null' then
    if not ((jsonb_typeof(v) = 'number' and (v::text)::numeric % 1 = 0)) then
      return p_path || '.current_period_start' || ': expected integer, got ' || jsonb_typeof(v);
    end if;
    if jsonb_typeof(v) = 'number' and ((v::text)::numeric < 0 or (v::text)::numeric > 253402300799) then
      return p_path || '.current_period_start' || ': out of range';
    end if;
  end if;
  v := p -> 'current_period_end';
  if v is null then return p_path || '.current_period_end' || ': required'; end if;
  if jsonb_typeof(v) <> 'null' then
    if not ((jsonb_typeof(v) = 'number' and (v::text)::numeric % 1 = 0)) then
      return p_path || '.current_period_end' || ': expected integer, got ' || jsonb_typeof(v);
    end if;
    if jsonb_typeof(v) = 'number' and ((v::text)::numeric < 0 or (v::text)::numeric > 253402300799) then
      return p_path || '.current_period_end' || ': out of range';
    end if;
  end if;
  return null;
end;
$$;

revoke all on function tally.typed_subscription_problem__items_item(jsonb, text) from public, anon, authenticated;

create function tally.typed_subscription_problem__previous(p jsonb, p_path text) returns text
language plpgsql
immutable
as $$
declare
  v jsonb;
  v_problem text;
  i integer;
begin
  if jsonb_typeof(p) is distinct from 'object' then
    return p_path || ': expected object, got ' || coalesce(jsonb_typeof(p), 'nothing');
  end if;
  if (p - array['cancel_at_period_end', 'items', 'status']::text[]) <> '{}'::jsonb then
    return p_path || '.' || (select left(k, 80) from jsonb_object_keys(p - array['cancel_at_period_end', 'items', 'status']::text[]) as k order by k limit 1) || ': unexpected field';
  end if;
  v := p -> 'status';
  if v is null then return p_path || '.status' || ': required'; end if;
  if jsonb_typeof(v) <> 'null' then
    if not (jsonb_typeof(v) = 'string') then
      return p_path || '.status' || ': expected string, got ' || jsonb_typeof(v);
    end if;
    if jsonb_typeof(v) = 'string' and length(v #>> '{}') not between 1 and 64 then
      return p_path || '.status' || ': length out of range';
    end if;
  end if;
  v := p -> 'cancel_at_period_end';
  if v is null then return p_path || '.cancel_at_period_end' || ': required'; end if;
  if jsonb_typeof(v) <> 'null' then
    if not (jsonb_typeof(v) = 'boolean') then
      return p_path || '.cancel_at_period_end' || ': expected boolean, got ' || jsonb_typeof(v);
    end if;
  end if;
  v := p -> 'items';
  if v is null then return p_path || '.items' || ': required'; end if;
  if jsonb_typeof(v) <> 'null' then
    if not (jsonb_typeof(v) = 'array') then
      return p_path || '.items' || ': expected array, got ' || jsonb_typeof(v);
    end if;
    if jsonb_typeof(v) = 'array' and jsonb_array_length(v) > 1000 then
      return p_path || '.items' || ': too many items';
    end if;
    if jsonb_typeof(v) = 'array' then
      for i in 0 .. jsonb_array_length(v) - 1 loop
        v_problem := tally.typed_subscription_problem__previous__items_item(v -> i, p_path || '.items' || '[' || i || ']');
        if v_problem is not null then return v_problem; end if;
      end loop;
    end if;
  end if;
  return null;
end;
$$;

revoke all on function tally.typed_subscription_problem__previous(jsonb, text) from public, anon, authenticated;

create function tally.typed_subscription_problem__previous__items_item(p jsonb, p_path text) returns text
language plpgsql
immutable
as $$
declare
  v jsonb;
  v_problem text;
  i integer;
begin
  if jsonb_typeof(p) is distinct from 'object' then
    return p_path || ': expected object, got ' || coalesce(jsonb_typeof(p), 'nothing');
  end if;
  if (p - array['current_period_end', 'current_period_start', 'price_id']::text[]) <> '{}'::jsonb then
    return p_path || '.' || (select left(k, 80) from jsonb_object_keys(p - array['current_period_end', 'current_period_start', 'price_id']::text[]) as k order by k limit 1) || ': unexpected field';
  end if;
  v := p -> 'price_id';
  if v is null then return p_path || '.price_id' || ': required'; end if;
  if jsonb_typeof(v) <> 'null' then
    if not (jsonb_typeof(v) = 'string') then
      return p_path || '.price_id' || ': expected string, got ' || jsonb_typeof(v);
    end if;
    if jsonb_typeof(v) = 'string' and length(v #>> '{}') not between 1 and 255 then
      return p_path || '.price_id' || ': length out of range';
    end if;
  end if;
  v := p -> 'current_period_start';
  if v is null then return p_path || '.current_period_start' || ': required'; end if;
  if jsonb_typeof(v) <> 'null' then
    if not ((jsonb_typeof(v) = 'number' and (v::text)::numeric % 1 = 0)) then
      return p_path || '.current_period_start' || ': expected integer, got ' || jsonb_typeof(v);
    end if;
    if jsonb_typeof(v) = 'number' and ((v::text)::numeric < 0 or (v::text)::numeric > 253402300799) then
      return p_path || '.current_period_start' || ': out of range';
    end if;
  end if;
  v := p -> 'current_period_end';
  if v is null then return p_path || '.current_period_end' || ': required'; end if;
  if jsonb_typeof(v) <> 'null' then
    if not ((jsonb_typeof(v) = 'number' and (v::text)::numeric % 1 = 0)) then
      return p_path || '.current_period_end' || ': expected integer, got ' || jsonb_typeof(v);
    end if;
    if jsonb_typeof(v) = 'number' and ((v::text)::numeric < 0 or (v::text)::numeric > 253402300799) then
      return p_path || '.current_period_end' || ': out of range';
    end if;
  end if;
  return null;
end;
$$;

revoke all on function tally.typed_subscription_problem__previous__items_item(jsonb, text) from public, anon, authenticated;

create function tally.typed_charge_problem(p jsonb, p_path text) returns text
language plpgsql
immutable
as $$
declare
  v jsonb;
  v_problem text;
  i integer;
begin
  if jsonb_typeof(p) is distinct from 'object' then
    return p_path || ': expected object, got ' || coalesce(jsonb_typeof(p), 'nothing');
  end if;
  if (p - array['amount', 'amount_refunded', 'currency', 'customer_id', 'id', 'invoice_id', 'metadata_user_id', 'payment_intent_id']::text[]) <> '{}'::jsonb then
    return p_path || '.' || (select left(k, 80) from jsonb_object_keys(p - array['amount', 'amount_refunded', 'currency', 'customer_id', 'id', 'invoice_id', 'metadata_user_id', 'payment_intent_id']::text[]) as k order by k limit 1) || ': unexpected field';
  end if;
  v := p -> 'id';
  if v is null then return p_path || '.id' || ': required'; end if;
  if not (jsonb_typeof(v) = 'string') then
    return p_path || '.id' || ': expected string, got ' || jsonb_typeof(v);
  end if;
  if jsonb_typeof(v) = 'string' and length(v #>> '{}') not between 1 and 255 then
    return p_path || '.id' || ': length out of range';
  end if;
  v := p -> 'customer_id';
  if v is null then return p_path || '.customer_id' || ': required'; end if;
  if jsonb_typeof(v) <> 'null' then
    if not (jsonb_typeof(v) = 'string') then
      return p_path || '.customer_id' || ': expected string, got ' || jsonb_typeof(v);
    end if;
    if jsonb_typeof(v) = 'string' and length(v #>> '{}') not between 1 and 255 then
      return p_path || '.customer_id' || ': length out of range';
    end if;
  end if;
  v := p -> 'payment_intent_id';
  if v is null then return p_path || '.payment_intent_id' || ': required'; end if;
  if jsonb_typeof(v) <> 'null' then
    if not (jsonb_typeof(v) = 'string') then
      return p_path || '.payment_intent_id' || ': expected string, got ' || jsonb_typeof(v);
    end if;
    if jsonb_typeof(v) = 'string' and length(v #>> '{}') not between 1 and 255 then
      return p_path || '.payment_intent_id' || ': length out of range';
    end if;
  end if;
  v := p -> 'invoice_id';
  if v is null then return p_path || '.invoice_id' || ': required'; end if;
  if jsonb_typeof(v) <> 'null' then
    if not (jsonb_typeof(v) = 'string') then
      return p_path || '.invoice_id' || ': expected string, got ' || jsonb_typeof(v);
    end if;
    if jsonb_typeof(v) = 'string' and length(v #>> '{}') not between 1 and 255 then
      return p_path || '.invoice_id' || ': length out of range';
    end if;
  end if;
  v := p -> 'metadata_user_id';
  if v is null then return p_path || '.metadata_user_id' || ': required'; end if;
  if jsonb_typeof(v) <> 'null' then
    if not (jsonb_typeof(v) = 'string') then
      return p_path || '.metadata_user_id' || ': expected string, got ' || jsonb_typeof(v);
    end if;
    if jsonb_typeof(v) = 'string' and length(v #>> '{}') not between 1 and 255 then
      return p_path || '.metadata_user_id' || ': length out of range';
    end if;
  end if;
  v := p -> 'amount';
  if v is null then return p_path || '.amount' || ': required'; end if;
  if not ((jsonb_typeof(v) = 'number' and (v::text)::numeric % 1 = 0)) then
    return p_path || '.amount' || ': expected integer, got ' || jsonb_typeof(v);
  end if;
  if jsonb_typeof(v) = 'number' and ((v::text)::numeric < 0 or (v::text)::numeric > 9223372036854775807) then
    return p_path || '.amount' || ': out of range';
  end if;
  v := p -> 'amount_refunded';
  if v is null then return p_path || '.amount_refunded' || ': required'; end if;
  if not ((jsonb_typeof(v) = 'number' and (v::text)::numeric % 1 = 0)) then
    return p_path || '.amount_refunded' || ': expected integer, got ' || jsonb_typeof(v);
  end if;
  if jsonb_typeof(v) = 'number' and ((v::text)::numeric < 0 or (v::text)::numeric > 9223372036854775807) then
    return p_path || '.amount_refunded' || ': out of range';
  end if;
  v := p -> 'currency';
  if v is null then return p_path || '.currency' || ': required'; end if;
  if jsonb_typeof(v) <> 'null' then
    if not (jsonb_typeof(v) = 'string') then
      return p_path || '.currency' || ': expected string, got ' || jsonb_typeof(v);
    end if;
    if jsonb_typeof(v) = 'string' and length(v #>> '{}') not between 1 and 16 then
      return p_path || '.currency' || ': length out of range';
    end if;
  end if;
  return null;
end;
$$;

revoke all on function tally.typed_charge_problem(jsonb, text) from public, anon, authenticated;

create function tally.typed_dispute_problem(p jsonb, p_path text) returns text
language plpgsql
immutable
as $$
declare
  v jsonb;
  v_problem text;
  i integer;
begin
  if jsonb_typeof(p) is distinct from 'object' then
    return p_path || ': expected object, got ' || coalesce(jsonb_typeof(p), 'nothing');
  end if;
  if (p - array['amount', 'charge_id', 'currency', 'id', 'payment_intent_id', 'reason', 'status']::text[]) <> '{}'::jsonb then
    return p_path || '.' || (select left(k, 80) from jsonb_object_keys(p - array['amount', 'charge_id', 'currency', 'id', 'payment_intent_id', 'reason', 'status']::text[]) as k order by k limit 1) || ': unexpected field';
  end if;
  v := p -> 'id';
  if v is null then return p_path || '.id' || ': required'; end if;
  if not (jsonb_typeof(v) = 'string') then
    return p_path || '.id' || ': expected string, got ' || jsonb_typeof(v);
  end if;
  if jsonb_typeof(v) = 'string' and length(v #>> '{}') not between 1 and 255 then
    return p_path || '.id' || ': length out of range';
  end if;
  v := p -> 'charge_id';
  if v is null then return p_path || '.charge_id' || ': required'; end if;
  if jsonb_typeof(v) <> 'null' then
    if not (jsonb_typeof(v) = 'string') then
      return p_path || '.charge_id' || ': expected string, got ' || jsonb_typeof(v);
    end if;
    if jsonb_typeof(v) = 'string' and length(v #>> '{}') not between 1 and 255 then
      return p_path || '.charge_id' || ': length out of range';
    end if;
  end if;
  v := p -> 'payment_intent_id';
  if v is null then return p_path || '.payment_intent_id' || ': required'; end if;
  if jsonb_typeof(v) <> 'null' then
    if not (jsonb_typeof(v) = 'string') then
      return p_path || '.payment_intent_id' || ': expected string, got ' || jsonb_typeof(v);
    end if;
    if jsonb_typeof(v) = 'string' and length(v #>> '{}') not between 1 and 255 then
      return p_path || '.payment_intent_id' || ': length out of range';
    end if;
  end if;
  v := p -> 'amount';
  if v is null then return p_path || '.amount' || ': required'; end if;
  if not ((jsonb_typeof(v) = 'number' and (v::text)::numeric % 1 = 0)) then
    return p_path || '.amount' || ': expected integer, got ' || jsonb_typeof(v);
  end if;
  if jsonb_typeof(v) = 'number' and ((v::text)::numeric < 0 or (v::text)::numeric > 9223372036854775807) then
    return p_path || '.amount' || ': out of range';
  end if;
  v := p -> 'currency';
  if v is null then return p_path || '.currency' || ': required'; end if;
  if jsonb_typeof(v) <> 'null' then
    if not (jsonb_typeof(v) = 'string') then
      return p_path || '.currency' || ': expected string, got ' || jsonb_typeof(v);
    end if;
    if jsonb_typeof(v) = 'string' and length(v #>> '{}') not between 1 and 16 then
      return p_path || '.currency' || ': length out of range';
    end if;
  end if;
  v := p -> 'status';
  if v is null then return p_path || '.status' || ': required'; end if;
  if not (jsonb_typeof(v) = 'string') then
    return p_path || '.status' || ': expected string, got ' || jsonb_typeof(v);
  end if;
  if jsonb_typeof(v) = 'string' and length(v #>> '{}') not between 1 and 64 then
    return p_path || '.status' || ': length out of range';
  end if;
  v := p -> 'reason';
  if v is null then return p_path || '.reason' || ': required'; end if;
  if jsonb_typeof(v) <> 'null' then
    if not (jsonb_typeof(v) = 'string') then
      return p_path || '.reason' || ': expected string, got ' || jsonb_typeof(v);
    end if;
    if jsonb_typeof(v) = 'string' and length(v #>> '{}') not between 1 and 64 then
      return p_path || '.reason' || ': length out of range';
    end if;
  end if;
  return null;
end;
$$;

revoke all on function tally.typed_dispute_problem(jsonb, text) from public, anon, authenticated;

create function tally.typed_invoice_payment_problem(p jsonb, p_path text) returns text
language plpgsql
immutable
as $$
declare
  v jsonb;
  v_problem text;
  i integer;
begin
  if jsonb_typeof(p) is distinct from 'object' then
    return p_path || ': expected object, got ' || coalesce(jsonb_typeof(p), 'nothing');
  end if;
  if (p - array['amount_paid', 'charge_id', 'currency', 'id', 'invoice_id', 'payment_intent_id', 'status']::text[]) <> '{}'::jsonb then
    return p_path || '.' || (select left(k, 80) from jsonb_object_keys(p - array['amount_paid', 'charge_id', 'currency', 'id', 'invoice_id', 'payment_intent_id', 'status']::text[]) as k order by k limit 1) || ': unexpected field';
  end if;
  v := p -> 'id';
  if v is null then return p_path || '.id' || ': required'; end if;
  if not (jsonb_typeof(v) = 'string') then
    return p_path || '.id' || ': expected string, got ' || jsonb_typeof(v);
  end if;
  if jsonb_typeof(v) = 'string' and length(v #>> '{}') not between 1 and 255 then
    return p_path || '.id' || ': length out of range';
  end if;
  v := p -> 'invoice_id';
  if v is null then return p_path || '.invoice_id' || ': required'; end if;
  if not (jsonb_typeof(v) = 'string') then
    return p_path || '.invoice_id' || ': expected string, got ' || jsonb_typeof(v);
  end if;
  if jsonb_typeof(v) = 'string' and length(v #>> '{}') not between 1 and 255 then
    return p_path || '.invoice_id' || ': length out of range';
  end if;
  v := p -> 'payment_intent_id';
  if v is null then return p_path || '.payment_intent_id' || ': required'; end if;
  if jsonb_typeof(v) <> 'null' then
    if not (jsonb_typeof(v) = 'string') then
      return p_path || '.payment_intent_id' || ': expected string, got ' || jsonb_typeof(v);
    end if;
    if jsonb_typeof(v) = 'string' and length(v #>> '{}') not between 1 and 255 then
      return p_path || '.payment_intent_id' || ': length out of range';
    end if;
  end if;
  v := p -> 'charge_id';
  if v is null then return p_path || '.charge_id' || ': required'; end if;
  if jsonb_typeof(v) <> 'null' then
    if not (jsonb_typeof(v) = 'string') then
      return p_path || '.charge_id' || ': expected string, got ' || jsonb_typeof(v);
    end if;
    if jsonb_typeof(v) = 'string' and length(v #>> '{}') not between 1 and 255 then
      return p_path || '.charge_id' || ': length out of range';
    end if;
  end if;
  v := p -> 'amount_paid';
  if v is null then return p_path || '.amount_paid' || ': required'; end if;
  if jsonb_typeof(v) <> 'null' then
    if not ((jsonb_typeof(v) = 'number' and (v::text)::numeric % 1 = 0)) then
      return p_path || '.amount_paid' || ': expected integer, got ' || jsonb_typeof(v);
    end if;
    if jsonb_typeof(v) = 'number' and ((v::text)::numeric < 0 or (v::text)::numeric > 9223372036854775807) then
      return p_path || '.amount_paid' || ': out of range';
    end if;
  end if;
  v := p -> 'currency';
  if v is null then return p_path || '.currency' || ': required'; end if;
  if jsonb_typeof(v) <> 'null' then
    if not (jsonb_typeof(v) = 'string') then
      return p_path || '.currency' || ': expected string, got ' || jsonb_typeof(v);
    end if;
    if jsonb_typeof(v) = 'string' and length(v #>> '{}') not between 1 and 16 then
      return p_path || '.currency' || ': length out of range';
    end if;
  end if;
  v := p -> 'status';
  if v is null then return p_path || '.status' || ': required'; end if;
  if jsonb_typeof(v) <> 'null' then
    if not (jsonb_typeof(v) = 'string') then
      return p_path || '.status' || ': expected string, got ' || jsonb_typeof(v);
    end if;
    if jsonb_typeof(v) = 'string' and length(v #>> '{}') not between 1 and 64 then
      return p_path || '.status' || ': length out of range';
    end if;
  end if;
  return null;
end;
$$;

revoke all on function tally.typed_invoice_payment_problem(jsonb, text) from public, anon, authenticated;

-- Which object key an event type carries.
create function tally.typed_object_key(p_type text) returns text
language sql
immutable
as $$
  select case
    when p_type in ('checkout.session.completed', 'checkout.session.async_payment_succeeded', 'checkout.session.async_payment_failed') then 'checkout_session'
    when p_type in ('invoice.paid', 'invoice.payment_failed') then 'invoice'
    when p_type in ('customer.subscription.created', 'customer.subscription.updated', 'customer.subscription.deleted') then 'subscription'
    when p_type in ('charge.refunded') then 'charge'
    when p_type in ('charge.dispute.created', 'charge.dispute.closed') then 'dispute'
    when p_type in ('invoice_payment.paid') then 'invoice_payment'
  end;
$$;

revoke all on function tally.typed_object_key(text) from public, anon, authenticated;

-- The checker of one object key.
create function tally.typed_object_problem(p_key text, p jsonb, p_path text)
returns text
language sql
immutable
as $$
  select case p_key
    when 'checkout_session' then tally.typed_checkout_session_problem(p, p_path)
    when 'invoice' then tally.typed_invoice_problem(p, p_path)
    when 'subscription' then tally.typed_subscription_problem(p, p_path)
    when 'charge' then tally.typed_charge_problem(p, p_path)
    when 'dispute' then tally.typed_dispute_problem(p, p_path)
    when 'invoice_payment' then tally.typed_invoice_payment_problem(p, p_path)
  end;
$$;

revoke all on function tally.typed_object_problem(text, jsonb, text)
  from public, anon, authenticated;

-- generated:end

-- The first problem of a typed event, or null: the envelope, then the one
-- object its type names (none when the sidecar says what its problem is).
create function tally.typed_event_problem(p_event jsonb) returns text
language plpgsql
immutable
as $$
declare
  v_problem text := tally.typed_envelope_problem(p_event, 'event');
  v_key text;
  v_extra text;
begin
  if v_problem is not null then
    return v_problem;
  end if;
  v_key := tally.typed_object_key(p_event ->> 'type');
  select k into v_extra
    from unnest(array['checkout_session', 'invoice', 'subscription', 'charge', 'dispute',
                      'invoice_payment']) as k
   where p_event ? k and (k <> v_key or jsonb_typeof(p_event -> 'problem') = 'string')
   limit 1;
  if v_extra is not null then
    return format('event.%s: not expected for %s%s', v_extra, p_event ->> 'type',
                  case when jsonb_typeof(p_event -> 'problem') = 'string'
                       then ' with a problem' else '' end);
  end if;
  if jsonb_typeof(p_event -> 'problem') = 'string' then
    return null;
  end if;
  if not p_event ? v_key then
    return format('event.%s: required for %s', v_key, p_event ->> 'type');
  end if;
  return tally.typed_object_problem(v_key, p_event -> v_key, 'event.' || v_key);
end;
$$;

revoke all on function tally.typed_event_problem(jsonb) from public, anon, authenticated;
