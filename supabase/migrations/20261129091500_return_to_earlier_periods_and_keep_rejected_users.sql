-- Two refinements of 20261129091400:
--
-- * When a deletion shows that the account's current period started after
--   its subscription's end, the account returns to the newest eligible
--   period with that period's allowance less what was spent in it (kept on
--   the period when the account left it) and since: the same plan credits
--   as if the withdrawn period had never been paid, whatever the order.
-- * A rejected event keeps the user it was resolved to (before, e.g., its
--   price was found unknown), so operators see whose event it is.

alter table tally.paid_periods
  add column plan_spent integer not null default 0 check (plan_spent >= 0);

comment on column tally.paid_periods.plan_spent is
  'Plan credits spent in this period, recorded when the account moved on to a newer one';

create or replace function tally.settle_plan_period(p_user_id uuid) returns void
language plpgsql
set search_path = ''
as $$
declare
  v_account tally.accounts;
  v_period tally.paid_periods;
  v_allowance integer;
  v_plan_credits integer;
  v_plan_spent integer;
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
    -- Remember what was spent in the period we leave, in case it comes back.
    update tally.paid_periods set plan_spent = v_account.plan_spent
     where subscription_id = v_account.period_subscription_id
       and period_start = v_account.period_start;
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
    -- Back to the older period, as if the withdrawn one had never been
    -- paid: its allowance less what was spent in it and since.
    v_allowance := coalesce(v_allowance, 0);
    v_plan_spent := v_period.plan_spent + v_account.plan_spent;
    v_plan_credits := greatest(0, v_allowance - v_plan_spent);
    update tally.accounts
       set period_subscription_id = v_period.subscription_id,
           period_start = v_period.period_start,
           period_end = v_period.period_end,
           plan_allowance = v_allowance,
           plan_spent = v_plan_spent
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

revoke all on all functions in schema tally from public, anon, authenticated;
