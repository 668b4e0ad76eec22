-- What tally knows about Stripe: every received event (the audit record and
-- the idempotency key), the customer-to-user links, a mirror of each
-- subscription, the paid periods, pack purchases, refunds and disputes.
-- Each effect has a business key of its own (subscription + period,
-- Checkout Session, charge, dispute), so two event ids announcing one change
-- still apply it once. Every table carries user_id where a user is known,
-- so all contention stays per user.

create table tally.stripe_events (
  event_id text primary key,
  type text not null,
  stripe_created_at timestamptz not null,
  livemode boolean not null,
  api_version text,
  layout text not null,
  -- Keys that park and un-park the event.
  customer_id text,
  payment_intent_id text,
  user_id uuid,
  outcome text not null check (outcome in ('processing', 'applied', 'parked', 'rejected')),
  reason text,
  payload jsonb not null,
  raw jsonb not null,
  received_at timestamptz not null default now(),
  applied_at timestamptz,
  attempts integer not null default 1
);

create index stripe_events_parked_customer_idx
  on tally.stripe_events (customer_id) where outcome = 'parked';
create index stripe_events_parked_payment_intent_idx
  on tally.stripe_events (payment_intent_id) where outcome = 'parked';
create index stripe_events_rejected_idx
  on tally.stripe_events (received_at) where outcome = 'rejected';

create table tally.customers (
  customer_id text primary key,
  user_id uuid not null,
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
-- observed. The mirror above and each period's plan are folded from these
-- (20261129090700), so they depend on the set of events, not their order.
create table tally.subscription_observations (
  subscription_id text not null,
  stripe_event_id text not null,
  user_id uuid not null,
  source text not null check (source in ('subscription', 'invoice')),
  observed_at timestamptz not null,
  customer_id text,
  -- Subscription events: the state they announce and the state they left.
  status text,
  previous jsonb,
  cancel_at_period_end boolean,
  canceled_at timestamptz,
  ended_at timestamptz,
  subscription_created_at timestamptz,
  -- Both: the plan and period (invoices: of their non-proration line).
  price_id text,
  current_period_start timestamptz,
  current_period_end timestamptz,
  -- Invoices: how the payment went, what paid it (legacy layout), and when
  -- the invoice and so its line were created.
  is_paid boolean,
  billing_reason text,
  charge_id text,
  payment_intent_id text,
  line_observed_at timestamptz,
  primary key (subscription_id, stripe_event_id)
);

create index subscription_observations_order_idx
  on tally.subscription_observations (subscription_id, observed_at);
create index subscription_observations_period_idx
  on tally.subscription_observations (subscription_id, current_period_start);
create index subscription_observations_charge_idx
  on tally.subscription_observations (charge_id) where charge_id is not null;
create index subscription_observations_payment_intent_idx
  on tally.subscription_observations (payment_intent_id) where payment_intent_id is not null;

-- The plan of each subscription period, folded from the observations.
create table tally.period_plans (
  subscription_id text not null,
  period_start timestamptz not null,
  user_id uuid not null,
  price_id text not null,
  primary key (subscription_id, period_start)
);

-- Business key of a period grant: subscription + period start.
create table tally.paid_periods (
  subscription_id text not null,
  period_start timestamptz not null,
  period_end timestamptz not null,
  user_id uuid not null,
  invoice_id text not null,
  stripe_event_id text not null,
  paid_at timestamptz not null default now(),
  -- Plan credits spent in this period, recorded when the account moves on.
  plan_spent integer not null default 0 check (plan_spent >= 0),
  primary key (subscription_id, period_start)
);

create index paid_periods_user_id_idx on tally.paid_periods (user_id, period_start desc);

-- Business key of a pack grant: the Checkout Session.
create table tally.pack_purchases (
  checkout_session_id text primary key,
  user_id uuid not null,
  pack_key text not null,
  price_id text not null,
  credits integer not null check (credits > 0),
  payment_intent_id text,
  amount_total integer,
  currency text,
  -- Credits targeted by refund clawbacks so far (cumulative).
  refund_clawback_target integer not null default 0,
  stripe_event_id text not null,
  purchased_at timestamptz not null default now()
);

create index pack_purchases_payment_intent_idx on tally.pack_purchases (payment_intent_id);
create index pack_purchases_user_id_idx on tally.pack_purchases (user_id);

-- Business key of a refund: the charge; amount_refunded only grows.
create table tally.charge_refunds (
  charge_id text primary key,
  payment_intent_id text,
  customer_id text,
  invoice_id text,
  user_id uuid,
  amount integer not null,
  amount_refunded integer not null,
  updated_at timestamptz not null default now()
);

create index charge_refunds_payment_intent_idx on tally.charge_refunds (payment_intent_id);

-- Business key of a dispute: the dispute id.
create table tally.disputes (
  dispute_id text primary key,
  charge_id text,
  payment_intent_id text,
  user_id uuid,
  status text not null,
  amount integer not null,
  -- Credits this dispute meant to claw back, what it actually took, and
  -- whether that was given back when the dispute was won.
  clawback_target integer not null default 0,
  clawed_back integer not null default 0,
  is_clawed boolean not null default false,
  is_reinstated boolean not null default false,
  state_created_at timestamptz not null,
  updated_at timestamptz not null default now()
);

create index disputes_payment_intent_idx on tally.disputes (payment_intent_id);

-- Things an operator must look at (refunds and disputes of subscription
-- invoices, which change no credits automatically).
create table tally.operator_reviews (
  id bigint generated always as identity primary key,
  kind text not null,
  object_id text not null,
  user_id uuid,
  stripe_event_id text not null,
  details jsonb not null,
  created_at timestamptz not null default now(),
  resolved_at timestamptz,
  unique (kind, object_id)
);

revoke all on table tally.stripe_events, tally.customers, tally.subscriptions,
  tally.subscription_observations, tally.period_plans, tally.paid_periods, tally.pack_purchases, tally.charge_refunds,
  tally.disputes, tally.operator_reviews
  from public, anon, authenticated;

alter table tally.stripe_events enable row level security;
alter table tally.customers enable row level security;
alter table tally.subscriptions enable row level security;
alter table tally.subscription_observations enable row level security;
alter table tally.period_plans enable row level security;
alter table tally.paid_periods enable row level security;
alter table tally.pack_purchases enable row level security;
alter table tally.charge_refunds enable row level security;
alter table tally.disputes enable row level security;
alter table tally.operator_reviews enable row level security;
