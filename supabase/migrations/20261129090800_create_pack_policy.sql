-- Credit packs: a paid Checkout Session adds the pack's credits once; refunds
-- and disputes of its payment claw them back from add-on credits only.
-- Refund and dispute states are stored per charge and dispute and settled
-- against the pack whenever either side arrives, so a refund that arrives
-- before its purchase ends the same as one that arrives after.

-- Clawbacks take add-on credits only, down to zero; the rest is owed.
create function tally.claw_back_addon(
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

revoke all on function tally.claw_back_addon(uuid, integer, text, text, text)
  from public, anon, authenticated;

create function tally.is_open_dispute(p_status text) returns boolean
language sql
immutable
as $$
  select p_status in ('warning_needs_response', 'warning_under_review', 'needs_response',
                      'under_review', 'lost');
$$;

revoke all on function tally.is_open_dispute(text) from public, anon, authenticated;

create function tally.is_final_dispute(p_status text) returns boolean
language sql
immutable
as $$
  select p_status in ('won', 'lost', 'warning_closed', 'prevented');
$$;

revoke all on function tally.is_final_dispute(text) from public, anon, authenticated;

-- Mark what was listed for the operator as a subscription refund or dispute
-- but turned out to belong to a pack.
create function tally.resolve_reviews_claimed_by_pack(p_checkout_session_id text,
                                                      p_payment_intent_id text)
returns void
language plpgsql
set search_path = ''
as $$
begin
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
end;
$$;

revoke all on function tally.resolve_reviews_claimed_by_pack(text,text)
  from public, anon, authenticated;

-- Bring a pack's clawbacks in line with its disputes and refunds. Open or
-- lost disputes claw back what refunds have not; won ones give back exactly
-- what they took; refunds claw back round(credits * refunded / amount),
-- cumulatively. Caller holds the account lock.
create function tally.settle_pack(p_checkout_session_id text) returns void
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

revoke all on function tally.settle_pack(text) from public, anon, authenticated;

-- checkout.session.completed / async_payment_succeeded / async_payment_failed.
create function tally.apply_checkout_session(p_event jsonb, p_user_id uuid)
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

revoke all on function tally.apply_checkout_session(jsonb, uuid) from public, anon, authenticated;

-- Refunds and disputes of a payment that is not a pack (a subscription
-- invoice's charge) move no credits: a zero entry on the ledger and a row
-- for the operator, once per object.
create function tally.record_for_operator(
  p_user_id uuid, p_kind text, p_object_id text, p_details jsonb
) returns void
language plpgsql
set search_path = ''
as $$
declare
  v_is_new boolean;
begin
  insert into tally.operator_reviews (kind, object_id, user_id, stripe_event_id, details)
  values (p_kind, p_object_id, p_user_id, current_setting('tally.event_id', true), p_details)
  on conflict (kind, object_id) do update set details = excluded.details
  returning xmax = 0 into v_is_new;
  if not v_is_new then
    return;
  end if;
  perform tally.post_entry(p_user_id, p_kind, 0, 0, p_business_key => p_kind || ':' || p_object_id,
                           p_reason => 'recorded for the operator: no automatic change');
end;
$$;

revoke all on function tally.record_for_operator(uuid, text, text, jsonb)
  from public, anon, authenticated;

-- charge.refunded
create function tally.apply_charge_refunded(p_event jsonb, p_user_id uuid) returns text
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

revoke all on function tally.apply_charge_refunded(jsonb, uuid) from public, anon, authenticated;

-- charge.dispute.created / charge.dispute.closed. A dispute's state only
-- moves forward: once won or lost, a late `created` changes nothing.
create function tally.apply_dispute(p_event jsonb, p_user_id uuid) returns text
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

revoke all on function tally.apply_dispute(jsonb, uuid) from public, anon, authenticated;
