-- What a payment bought, and what its refunds and disputes take back.
-- Packs: a paid Checkout Session adds the pack's credits once; refunds and
-- disputes of its payment claw them back from add-on credits only, and
-- what they cannot take (already spent) is owed and collected from add-on
-- credits that reversed spends give back. Subscription invoices: refunds
-- and disputes lower the plan credits of the period the invoice paid for,
-- by what the invoice still adds to its allowance, while that period is
-- current (tally.period_allowance and tally.settle_plan do the arithmetic);
-- for an older period they are recorded and listed for the operator.
-- Refund and dispute states are stored per charge and dispute and settled
-- whenever either side arrives, so the order of arrival never matters. A
-- refund or dispute whose payment is not known yet is parked on it.

create function tally.is_open_dispute(p_status text) returns boolean
language sql
immutable
as $$
  -- Lost disputes keep what was taken, as open ones do.
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

-- Park the event being applied: it waits for p_key (see tally.wake).
-- SQLSTATE TL002 is ours; the dispatcher records the outcome.
create function tally.park(p_key text, p_reason text) returns void
language plpgsql
as $$
begin
  raise exception using errcode = 'TL002', message = p_reason, detail = p_key;
end;
$$;

revoke all on function tally.park(text, text) from public, anon, authenticated;

-- What refunds and open (or lost) disputes target of a period's invoices:
-- per invoice, round(granted * refunded / paid) and, of what refunds left,
-- round(granted * disputed / paid) for each dispute. The period's own
-- invoices are summed; each upgrade invoice is given apart, as what it
-- still adds once its refunds (after_refunds) and also its disputes
-- (kept) are taken from what it granted: tally.period_allowance folds
-- that where it folds the upgrade, so a refund or dispute never takes back
-- what a later downgrade already removed from the allowance.
create function tally.period_clawbacks(p_subscription_id text, p_period_start timestamptz,
                                       out refunded integer, out disputed integer,
                                       out upgrade_ids text[],
                                       out upgrade_after_refunds integer[],
                                       out upgrade_kept integer[])
language plpgsql
stable
as $$
begin
  select coalesce(sum(t.refund_target) filter (where t.kind = 'period'), 0)::integer,
         coalesce(sum(t.dispute_target) filter (where t.kind = 'period'), 0)::integer,
         -- One aggregate step feeds the three arrays the same rows in the same
         -- order, so they line up (no ORDER BY: a sort each, on every renewal).
         array_agg(t.invoice_id) filter (where t.kind = 'proration'),
         array_agg(t.granted - t.refund_target) filter (where t.kind = 'proration'),
         array_agg(t.granted - t.refund_target - t.dispute_target)
           filter (where t.kind = 'proration')
    into refunded, disputed, upgrade_ids, upgrade_after_refunds, upgrade_kept
    from (
      select r.invoice_id, r.kind, r.granted, r.refund_target,
             least(r.granted - r.refund_target, r.dispute_target) as dispute_target
        from (
          select i.invoice_id, i.kind, i.granted,
                 least(i.granted, coalesce(round(i.granted::numeric
                   * (select coalesce(sum(c.amount_refunded), 0) from tally.charges c
                       where c.invoice_id = i.invoice_id)
                   / nullif(i.amount_paid, 0)), 0))::integer as refund_target,
                 coalesce((select sum(round(i.granted::numeric * d.amount
                                            / nullif(i.amount_paid, 0)))
                             from tally.disputes d
                            where d.invoice_id = i.invoice_id and tally.is_open_dispute(d.status)),
                          0)::integer as dispute_target
            from tally.invoices i
           where i.subscription_id = p_subscription_id and i.period_start = p_period_start
             and i.granted is not null
          offset 0) as r  -- kept a subquery: each invoice's refunds and disputes read once
    ) as t;
end;
$$;

revoke all on function tally.period_clawbacks(text, timestamptz) from public, anon, authenticated;

-- Clawbacks take add-on credits only, down to zero; the rest is owed under
-- p_debt_key. Returns what was taken.
create function tally.claw_back_addon(
  p_user_id uuid, p_credits integer, p_kind text, p_debt_key text, p_cause tally.entry_cause
) returns integer
language plpgsql
as $$
declare
  v_taken integer;
begin
  select least(p_credits, addon_credits) into v_taken
    from tally.accounts where user_id = p_user_id;
  if p_credits > v_taken then
    insert into tally.addon_debts as d (debt_key, user_id, owed)
    values (p_debt_key, p_user_id, p_credits - v_taken)
    on conflict (debt_key) do update set owed = d.owed + excluded.owed;
  end if;
  perform tally.post_entry(p_user_id, p_kind, 0, -v_taken, p_cause,
                           p_shortfall => p_credits - v_taken);
  return v_taken;
end;
$$;

revoke all on function tally.claw_back_addon(uuid, integer, text, text, tally.entry_cause)
  from public, anon, authenticated;

-- Pay what clawbacks are owed, oldest first, out of p_credits add-on
-- credits coming back; returns how many went to the debts.
create function tally.pay_addon_debts(p_user_id uuid, p_credits integer) returns integer
language plpgsql
as $$
declare
  v_debt tally.addon_debts;
  v_left integer := p_credits;
  v_paid integer;
begin
  for v_debt in
    select * from tally.addon_debts d
     where d.user_id = p_user_id and d.collected < d.owed
     order by d.created_at, d.debt_key
     for update
  loop
    exit when v_left <= 0;
    v_paid := least(v_left, v_debt.owed - v_debt.collected);
    update tally.addon_debts d set collected = d.collected + v_paid
     where d.debt_key = v_debt.debt_key;
    v_left := v_left - v_paid;
  end loop;
  return p_credits - v_left;
end;
$$;

revoke all on function tally.pay_addon_debts(uuid, integer) from public, anon, authenticated;

-- Mark what was listed for the operator as a subscription refund or dispute
-- but turned out to belong to a pack.
create function tally.resolve_reviews_claimed_by_pack(p_checkout_session_id text,
                                                      p_payment_intent_id text)
returns void
language sql
as $$
  update tally.operator_reviews r
     set resolved_at = now(),
         details = r.details || jsonb_build_object('claimed_by_checkout_session',
                                                   p_checkout_session_id)
   where r.resolved_at is null
     and ((r.kind = 'subscription_refund'
           and r.object_id in (select c.charge_id from tally.charges c
                                where c.payment_intent_id = p_payment_intent_id))
          or (r.kind = 'subscription_dispute'
              and r.object_id in (select d.dispute_id from tally.disputes d
                                   where d.payment_intent_id = p_payment_intent_id)));
$$;

revoke all on function tally.resolve_reviews_claimed_by_pack(text, text)
  from public, anon, authenticated;

-- Bring a pack's clawbacks in line with its disputes and refunds. Open or
-- lost disputes claw back what refunds have not; won ones give back what
-- they took, at once and later (collected from reversed spends), and
-- forgive what is still owed; refunds claw back round(credits * refunded /
-- amount), cumulatively. Locks the buyer's account.
create function tally.settle_pack(p_checkout_session_id text, p_event_id text) returns void
language plpgsql
as $$
declare
  v_pack tally.pack_purchases;
  v_dispute tally.disputes;
  v_held integer;
  v_target integer;
  v_taken integer;
  v_collected integer;
begin
  select * into v_pack from tally.pack_purchases
   where checkout_session_id = p_checkout_session_id
   for update;
  if v_pack.payment_intent_id is null then
    return;
  end if;
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
      v_taken := tally.claw_back_addon(
        v_pack.user_id, v_target, 'dispute_clawback', 'dispute:' || v_dispute.dispute_id,
        tally.cause(format('Dispute of the %s pack payment: its credits taken back while it is open',
                           v_pack.pack_key),
                    p_event_id, v_dispute.dispute_id, v_pack.checkout_session_id,
                    p_business_key => 'dispute:' || v_dispute.dispute_id));
      update tally.disputes
         set clawback_target = v_target, clawed_back = v_taken, is_clawed = true,
             user_id = v_pack.user_id, updated_at = now()
       where dispute_id = v_dispute.dispute_id;
    elsif not tally.is_open_dispute(v_dispute.status) and tally.is_final_dispute(v_dispute.status)
          and v_dispute.is_clawed and not v_dispute.is_reinstated then
      -- Won: what it took at once and what reversed spends paid for it
      -- since come back; what is still owed is forgiven.
      update tally.addon_debts d set owed = d.collected
       where d.debt_key = 'dispute:' || v_dispute.dispute_id
      returning d.collected into v_collected;
      perform tally.post_entry(
        v_pack.user_id, 'dispute_reinstated', 0, v_dispute.clawed_back + coalesce(v_collected, 0),
        tally.cause(format('Dispute of the %s pack payment closed in your favour: credits given back',
                           v_pack.pack_key),
                    p_event_id, v_dispute.dispute_id, v_pack.checkout_session_id,
                    p_business_key => 'dispute_won:' || v_dispute.dispute_id));
      update tally.disputes set is_reinstated = true, updated_at = now()
       where dispute_id = v_dispute.dispute_id;
    end if;
  end loop;

  select coalesce(round(v_pack.credits::numeric
                        * least(sum(c.amount_refunded), sum(c.amount))
                        / nullif(sum(c.amount), 0))::integer, 0)
    into v_target
    from tally.charges c
   where c.payment_intent_id = v_pack.payment_intent_id;
  select coalesce(sum(clawback_target), 0) into v_held from tally.disputes
   where payment_intent_id = v_pack.payment_intent_id and is_clawed and not is_reinstated;
  v_target := least(v_target, v_pack.credits - v_held);
  if v_target > v_pack.refund_clawback_target then
    perform tally.claw_back_addon(
      v_pack.user_id, v_target - v_pack.refund_clawback_target, 'refund_clawback',
      format('refund:%s:%s', v_pack.checkout_session_id, v_target),
      tally.cause(format('Refund of the %s pack payment: %s of its %s credits taken back in all',
                         v_pack.pack_key, v_target, v_pack.credits),
                  p_event_id,
                  (select min(c.charge_id) from tally.charges c
                    where c.payment_intent_id = v_pack.payment_intent_id),
                  v_pack.checkout_session_id,
                  p_business_key => format('refund:%s:%s', v_pack.checkout_session_id, v_target)));
    update tally.pack_purchases set refund_clawback_target = v_target
     where checkout_session_id = v_pack.checkout_session_id;
  end if;
end;
$$;

revoke all on function tally.settle_pack(text, text) from public, anon, authenticated;

-- checkout.session.completed / async_payment_succeeded / async_payment_failed.
create function tally.apply_checkout_session(p_event jsonb, p_user_id uuid) returns text
language plpgsql
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
          v_session ->> 'payment_intent_id', tally.to_bigint(v_session -> 'amount_total'),
          v_session ->> 'currency', p_event ->> 'id')
  on conflict (checkout_session_id) do nothing;
  if not found then
    return 'pack already granted for this Checkout Session';
  end if;
  perform tally.post_entry(
    p_user_id, 'addon_purchase', 0, v_pack.credits,
    tally.cause(format('%s pack: %s credits', v_pack.name, v_pack.credits), p_event ->> 'id',
                v_session ->> 'id', v_session ->> 'id',
                p_business_key => 'pack:' || (v_session ->> 'id'), p_reason => v_pack.key));
  perform tally.settle_pack(v_session ->> 'id', p_event ->> 'id');
  perform tally.wake('payment_intent:' || (v_session ->> 'payment_intent_id'));
  return null;
end;
$$;

revoke all on function tally.apply_checkout_session(jsonb, uuid) from public, anon, authenticated;

-- A refund or dispute of a period that is no longer current moves no
-- credits: a zero entry on the ledger and a row for the operator, once per
-- object.
create function tally.record_for_operator(
  p_user_id uuid, p_kind text, p_object_id text, p_event_id text, p_details jsonb,
  p_description text
) returns void
language plpgsql
as $$
declare
  v_is_new boolean;
begin
  insert into tally.operator_reviews (kind, object_id, user_id, stripe_event_id, details)
  values (p_kind, p_object_id, p_user_id, p_event_id, p_details)
  on conflict (kind, object_id) do update set details = excluded.details
  returning xmax = 0 into v_is_new;
  if not v_is_new then
    return;
  end if;
  perform tally.post_entry(p_user_id, p_kind, 0, 0,
                           tally.cause(p_description, p_event_id, p_object_id,
                                       p_business_key => p_kind || ':' || p_object_id,
                                       p_reason => 'recorded for the operator: no automatic change'));
end;
$$;

revoke all on function tally.record_for_operator(uuid, text, text, text, jsonb, text)
  from public, anon, authenticated;

-- A refund or dispute of a subscription invoice: settle the plan credits
-- when the invoice's period is the account's current one, else record it
-- for the operator. Returns a note, or null when credits were settled.
create function tally.settle_invoice_reversal(
  p_invoice_id text, p_kind text, p_object_id text, p_event_id text, p_details jsonb
) returns text
language plpgsql
as $$
declare
  v_user_id uuid;
  v_account tally.accounts;
  v_is_current boolean;
  v_is_placed boolean;
begin
  select i.user_id into v_user_id from tally.invoices i where i.invoice_id = p_invoice_id limit 1;
  v_account := tally.lock_account(v_user_id);
  select bool_or(i.subscription_id = v_account.period_subscription_id
                 and i.period_start = v_account.period_start),
         bool_and(i.period_start is not null)
    into v_is_current, v_is_placed
    from tally.invoices i where i.invoice_id = p_invoice_id;
  if v_is_current then
    perform tally.settle_plan(v_user_id, row(p_event_id, p_object_id,
      format('%s of invoice %s', replace(p_kind, 'subscription_', ''), p_invoice_id)
    )::tally.plan_context);
    return null;
  end if;
  if not v_is_placed then
    return format('invoice %s pays for an upgrade whose period is not known yet: taken back when it is',
                  p_invoice_id);
  end if;
  perform tally.record_for_operator(
    v_user_id, p_kind, p_object_id, p_event_id, p_details || jsonb_build_object('invoice_id', p_invoice_id),
    format('%s of invoice %s, whose period is no longer current: listed for the operator',
           initcap(replace(p_kind, 'subscription_', '')), p_invoice_id));
  return 'the invoice''s period is no longer current: recorded for the operator';
end;
$$;

revoke all on function tally.settle_invoice_reversal(text, text, text, text, jsonb)
  from public, anon, authenticated;

-- What a refund or dispute's payment paid for, or park the event on what
-- would tell (the invoice a legacy charge names, else the payment).
create function tally.payment_target_or_park(p_event jsonb, p_payment_intent_id text,
                                             p_charge_id text, p_invoice_id text,
                                             out kind text, out id text)
language plpgsql
as $$
declare
  v_user_id uuid;
begin
  select t.kind, t.id, t.user_id into kind, id, v_user_id
    from tally.payment_target(p_payment_intent_id, p_charge_id, p_invoice_id) t;
  if kind = 'invoice' and v_user_id is null then
    perform tally.park('invoice:' || id,
                       format('waiting for invoice %s, which this payment paid', id));
  end if;
  if kind is null then
    perform tally.park(
      coalesce('payment_intent:' || p_payment_intent_id, 'charge:' || p_charge_id),
      format('waiting to learn what payment %s paid for (a pack, or an invoice through invoice_payment.paid)',
             coalesce(p_payment_intent_id, p_charge_id)));
  end if;
end;
$$;

revoke all on function tally.payment_target_or_park(jsonb, text, text, text)
  from public, anon, authenticated;

-- charge.refunded
create function tally.apply_charge_refunded(p_event jsonb, p_user_id uuid) returns text
language plpgsql
as $$
declare
  v_charge jsonb := p_event -> 'charge';
  v_target record;
begin
  if v_charge ->> 'payment_intent_id' is null and v_charge ->> 'invoice_id' is null then
    -- A bare charge (made outside Checkout and invoices): not a tally purchase.
    return 'the charge names neither a payment intent nor an invoice: not a tally purchase';
  end if;
  select * into v_target
    from tally.payment_target_or_park(p_event, v_charge ->> 'payment_intent_id',
                                      v_charge ->> 'id', v_charge ->> 'invoice_id');
  insert into tally.charges as c (charge_id, payment_intent_id, customer_id, invoice_id, user_id,
                                  amount, amount_refunded, currency)
  values (v_charge ->> 'id', v_charge ->> 'payment_intent_id', v_charge ->> 'customer_id',
          case when v_target.kind = 'invoice' then v_target.id end, p_user_id,
          tally.to_bigint(v_charge -> 'amount'), tally.to_bigint(v_charge -> 'amount_refunded'),
          v_charge ->> 'currency')
  on conflict (charge_id) do update
     set amount_refunded = greatest(c.amount_refunded, excluded.amount_refunded),
         payment_intent_id = coalesce(c.payment_intent_id, excluded.payment_intent_id),
         invoice_id = coalesce(c.invoice_id, excluded.invoice_id),
         user_id = coalesce(c.user_id, excluded.user_id),
         updated_at = now();
  if v_target.kind = 'pack' then
    perform tally.settle_pack(v_target.id, p_event ->> 'id');
    return null;
  end if;
  return tally.settle_invoice_reversal(
    v_target.id, 'subscription_refund', v_charge ->> 'id', p_event ->> 'id',
    jsonb_build_object('amount', v_charge -> 'amount',
                       'amount_refunded', v_charge -> 'amount_refunded',
                       'payment_intent_id', v_charge -> 'payment_intent_id'));
end;
$$;

revoke all on function tally.apply_charge_refunded(jsonb, uuid) from public, anon, authenticated;

-- charge.dispute.created / charge.dispute.closed. A dispute's state only
-- moves forward: once won or lost, a late `created` changes nothing.
create function tally.apply_dispute(p_event jsonb, p_user_id uuid) returns text
language plpgsql
as $$
declare
  v_dispute jsonb := p_event -> 'dispute';
  v_payment_intent_id text := coalesce(
    v_dispute ->> 'payment_intent_id',
    (select c.payment_intent_id from tally.charges c where c.charge_id = v_dispute ->> 'charge_id'));
  v_target record;
begin
  select * into v_target
    from tally.payment_target_or_park(p_event, v_payment_intent_id, v_dispute ->> 'charge_id',
                                      null);
  insert into tally.disputes as d (dispute_id, charge_id, payment_intent_id, user_id, status,
                                   amount, state_created_at, checkout_session_id, invoice_id)
  values (v_dispute ->> 'id', v_dispute ->> 'charge_id', v_payment_intent_id, p_user_id,
          v_dispute ->> 'status', tally.to_bigint(v_dispute -> 'amount'),
          tally.to_time(p_event -> 'created'),
          case when v_target.kind = 'pack' then v_target.id end,
          case when v_target.kind = 'invoice' then v_target.id end)
  on conflict (dispute_id) do update
     set status = excluded.status,
         state_created_at = excluded.state_created_at,
         payment_intent_id = coalesce(d.payment_intent_id, excluded.payment_intent_id),
         checkout_session_id = coalesce(d.checkout_session_id, excluded.checkout_session_id),
         invoice_id = coalesce(d.invoice_id, excluded.invoice_id),
         updated_at = now()
   where not tally.is_final_dispute(d.status)
     and (tally.is_final_dispute(excluded.status)
          or excluded.state_created_at >= d.state_created_at);
  if v_target.kind = 'pack' then
    perform tally.settle_pack(v_target.id, p_event ->> 'id');
    return null;
  end if;
  return tally.settle_invoice_reversal(
    v_target.id, 'subscription_dispute', v_dispute ->> 'id', p_event ->> 'id',
    jsonb_build_object('status', v_dispute -> 'status', 'amount', v_dispute -> 'amount',
                       'reason', v_dispute -> 'reason', 'charge_id', v_dispute -> 'charge_id'));
end;
$$;

revoke all on function tally.apply_dispute(jsonb, uuid) from public, anon, authenticated;

-- invoice_payment.paid (basil and later): which payment paid which
-- invoice. It needs no user: it wakes the refunds and disputes of that
-- payment that waited to learn what it paid for.
create function tally.apply_invoice_payment(p_event jsonb) returns text
language plpgsql
as $$
declare
  v_payment jsonb := p_event -> 'invoice_payment';
begin
  if v_payment ->> 'payment_intent_id' is null and v_payment ->> 'charge_id' is null then
    return 'the invoice payment names no payment intent or charge: nothing to link';
  end if;
  perform tally.record_invoice_payment('payment_intent:' || (v_payment ->> 'payment_intent_id'),
                                       v_payment ->> 'invoice_id');
  perform tally.record_invoice_payment('charge:' || (v_payment ->> 'charge_id'),
                                       v_payment ->> 'invoice_id');
  return null;
end;
$$;

revoke all on function tally.apply_invoice_payment(jsonb) from public, anon, authenticated;
