-- What tally knows about Stripe: every received event (the audit record and
-- the idempotency key), the customer-to-user links, a mirror of each
-- subscription, the paid periods and the invoices behind them, pack
-- purchases, charges, refunds and disputes. Each effect has a business key
-- of its own (subscription + period, invoice, Checkout Session, charge,
-- dispute), so two event ids announcing one change still apply it once.
-- Every table carries user_id where a user is known, so all contention
-- stays per user.

-- Domains, not table CHECKs, as for accounts (20261129090200): their checks
-- stay compiled instead of being read back for every statement that writes
-- these tables (two per event for stripe_events).
create domain tally.event_outcome as text
  check (value in ('processing', 'applied', 'parked', 'rejected'));

create domain tally.observation_source as text check (value in ('subscription', 'invoice'));

create domain tally.invoice_kind as text check (value in ('period', 'proration'));

create domain tally.money_amount as bigint check (value >= 0);

create table tally.stripe_events (
  event_id text primary key,
  type text not null,
  stripe_created_at timestamptz,
  livemode boolean,
  api_version text,
  layout text,
  customer_id text,
  payment_intent_id text,
  -- A parked event waits for this key ('customer:cus_..', 'payment_intent:pi_..',
  -- 'charge:ch_..', 'invoice:in_..') and is applied when it appears.
  waiting_on text,
  is_ready boolean not null default false,
  user_id uuid,
  outcome tally.event_outcome not null,
  reason text,
  -- The typed reading, kept while it may be applied again (parked or
  -- rejected); the raw payload is the record of what Stripe sent.
  payload jsonb,
  raw jsonb not null,
  received_at timestamptz not null default now(),
  applied_at timestamptz,
  attempts integer not null default 1
);

create index stripe_events_waiting_idx
  on tally.stripe_events (waiting_on) where outcome = 'parked';
create index stripe_events_ready_idx
  on tally.stripe_events (stripe_created_at, event_id) where outcome = 'parked' and is_ready;
create index stripe_events_rejected_idx
  on tally.stripe_events (received_at) where outcome = 'rejected';
create index stripe_events_user_id_idx on tally.stripe_events (user_id);

-- Raw payloads are the bulk of what is stored: LZ4 compresses them several
-- times faster than the default where the server has it.
do $$
begin
  alter table tally.stripe_events alter column raw set compression lz4;
exception
  when feature_not_supported or invalid_parameter_value then
    raise notice 'raw payloads keep the default compression: %', sqlerrm;
end
$$;

create table tally.customers (
  customer_id text primary key,
  user_id uuid not null,
  -- 'link_stripe_customer' (the sidecar made it for the user, or an
  -- operator linked it) or 'event' (an object the product made named both).
  source text not null,
  linked_at timestamptz not null default now()
);

create index customers_user_id_idx on tally.customers (user_id);

create table tally.subscriptions (
  subscription_id text primary key,
  user_id uuid not null,
  customer_id text,
  status text not null,
  price_id text,
  current_period_start timestamptz,
  current_period_end timestamptz,
  cancel_at_period_end boolean not null default false,
  canceled_at timestamptz,
  ended_at timestamptz,
  subscription_created_at timestamptz,
  -- Stripe created of the observations the fields and the status come from
  -- ('-infinity' while only invoices named the subscription).
  state_created_at timestamptz not null,
  status_observed_at timestamptz not null,
  updated_at timestamptz not null default now()
);

create index subscriptions_user_id_idx on tally.subscriptions (user_id);

-- Every subscription event and every invoice of a subscription, as
-- observed. The mirror above and each period's allowance are folded from
-- these (20261129090700), so they depend on the set of events, not their
-- order.
create table tally.subscription_observations (
  subscription_id text not null,
  stripe_event_id text not null,
  user_id uuid not null,
  source tally.observation_source not null,
  observed_at timestamptz not null,
  customer_id text,
  -- Subscription events: the state they announce and the state they left
  -- (previous: status, cancel_at_period_end, price_id, current_period_*,
  -- only what changed).
  status text,
  previous jsonb,
  cancel_at_period_end boolean,
  canceled_at timestamptz,
  ended_at timestamptz,
  subscription_created_at timestamptz,
  -- The plan (catalog price) and its period; invoices: of their plan line.
  price_id text,
  current_period_start timestamptz,
  current_period_end timestamptz,
  -- Invoices: how the payment went and why the invoice was made.
  is_paid boolean,
  billing_reason text,
  primary key (subscription_id, stripe_event_id)
);

create index subscription_observations_order_idx
  on tally.subscription_observations (subscription_id, observed_at);
create index subscription_observations_period_idx
  on tally.subscription_observations (subscription_id, current_period_start);

-- Business key of a period grant: subscription + period start. price_id is
-- the plan its invoice billed (the earliest such invoice, if several).
create table tally.paid_periods (
  subscription_id text not null,
  period_start timestamptz not null,
  period_end timestamptz not null,
  user_id uuid not null,
  price_id text not null,
  invoice_id text not null,
  invoice_created_at timestamptz not null,
  stripe_event_id text not null,
  paid_at timestamptz not null default now(),
  -- Plan credits spent in this period, recorded when the account moves on.
  plan_spent tally.credit_count not null default 0,
  primary key (subscription_id, period_start)
);

create index paid_periods_user_id_idx on tally.paid_periods (user_id, period_start desc);

-- Business key of an invoice's grant: the invoice. What a paid subscription
-- invoice paid for: a period (its plan's monthly credits) or an upgrade
-- (its proration lines' share), and so what its refunds and disputes take
-- back. The period of a proration invoice is the paid period that contains
-- its lines; until that period is known, granted stays null.
create table tally.invoices (
  invoice_id text not null,
  user_id uuid not null,
  subscription_id text not null,
  kind tally.invoice_kind not null,
  invoice_created_at timestamptz not null,
  amount_paid tally.money_amount not null,
  currency text,
  -- Proration invoices: [{price_id, is_credit, period_start, period_end}] of
  -- the catalog plans' proration lines.
  proration_lines jsonb,
  period_start timestamptz,
  granted tally.credit_count,
  stripe_event_id text not null,
  recorded_at timestamptz not null default now(),
  primary key (invoice_id, kind)
);

create index invoices_period_idx on tally.invoices (subscription_id, period_start);

-- Which invoice a payment paid ('payment_intent:pi_..' or 'charge:ch_..'):
-- from invoice_payment.paid (basil and later) or the legacy invoice and charge.
create table tally.invoice_payments (
  payment_key text primary key,
  invoice_id text not null,
  recorded_at timestamptz not null default now()
);

-- Business key of a pack grant: the Checkout Session.
create table tally.pack_purchases (
  checkout_session_id text primary key,
  user_id uuid not null,
  pack_key text not null,
  price_id text not null,
  credits integer not null check (credits > 0),
  payment_intent_id text,
  amount_total bigint,
  currency text,
  -- Credits targeted by refund clawbacks so far (cumulative).
  refund_clawback_target integer not null default 0,
  stripe_event_id text not null,
  purchased_at timestamptz not null default now()
);

create index pack_purchases_payment_intent_idx on tally.pack_purchases (payment_intent_id);
create index pack_purchases_user_id_idx on tally.pack_purchases (user_id);

-- Business key of a refund: the charge; amount_refunded only grows.
create table tally.charges (
  charge_id text primary key,
  payment_intent_id text,
  customer_id text,
  invoice_id text,
  user_id uuid,
  amount bigint not null,
  amount_refunded bigint not null,
  currency text,
  updated_at timestamptz not null default now()
);

create index charges_payment_intent_idx on tally.charges (payment_intent_id);
create index charges_invoice_id_idx on tally.charges (invoice_id);

-- Business key of a dispute: the dispute id.
create table tally.disputes (
  dispute_id text primary key,
  charge_id text,
  payment_intent_id text,
  user_id uuid,
  -- What the disputed payment paid for: a pack or a subscription invoice.
  checkout_session_id text,
  invoice_id text,
  status text not null,
  amount bigint not null,
  -- Packs: credits this dispute meant to claw back, what it took at once,
  -- and whether that (and what was collected later) was given back.
  clawback_target integer not null default 0,
  clawed_back integer not null default 0,
  is_clawed boolean not null default false,
  is_reinstated boolean not null default false,
  state_created_at timestamptz,
  updated_at timestamptz not null default now()
);

create index disputes_payment_intent_idx on tally.disputes (payment_intent_id);
create index disputes_charge_id_idx on tally.disputes (charge_id);
create index disputes_invoice_id_idx on tally.disputes (invoice_id);

-- Add-on credits a clawback could not take (already spent): owed, and paid
-- back first from add-on credits that a reversed spend returns. A won
-- dispute gives back what it took at once and what was collected later,
-- and forgives the rest.
create table tally.addon_debts (
  debt_key text primary key,
  user_id uuid not null,
  owed integer not null check (owed >= 0),
  collected integer not null default 0 check (collected >= 0 and collected <= owed),
  created_at timestamptz not null default clock_timestamp()
);

create index addon_debts_open_idx on tally.addon_debts (user_id, created_at) where collected < owed;

-- Things an operator must look at: refunds and disputes of a subscription
-- period that is no longer current, a second paid subscription of a user.
create table tally.operator_reviews (
  id bigint generated always as identity primary key,
  kind text not null,
  object_id text not null,
  user_id uuid,
  stripe_event_id text,
  details jsonb not null,
  created_at timestamptz not null default now(),
  resolved_at timestamptz,
  unique (kind, object_id)
);

revoke all on table tally.stripe_events, tally.customers, tally.subscriptions,
  tally.subscription_observations, tally.paid_periods, tally.invoices, tally.invoice_payments,
  tally.pack_purchases, tally.charges, tally.disputes, tally.addon_debts, tally.operator_reviews
  from public, anon, authenticated;

alter table tally.stripe_events enable row level security;
alter table tally.customers enable row level security;
alter table tally.subscriptions enable row level security;
alter table tally.subscription_observations enable row level security;
alter table tally.paid_periods enable row level security;
alter table tally.invoices enable row level security;
alter table tally.invoice_payments enable row level security;
alter table tally.pack_purchases enable row level security;
alter table tally.charges enable row level security;
alter table tally.disputes enable row level security;
alter table tally.addon_debts enable row level security;
alter table tally.operator_reviews enable row level security;
