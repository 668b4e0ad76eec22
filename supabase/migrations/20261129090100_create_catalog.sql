-- The catalog: subscription plans and one-off credit packs, looked up by
-- Stripe price id. Credit amounts always come from here, never from event
-- metadata. Readable by everyone (the pricing page), writable by no client.
-- Also the settings row: the signup grant and the low-balance threshold.

create table public.plans (
  key text primary key check (key ~ '^[a-z0-9_-]{1,64}$'),
  name text not null check (length(name) between 1 and 200),
  stripe_price_id text not null unique check (stripe_price_id <> ''),
  monthly_credits integer not null check (monthly_credits >= 0),
  active boolean not null default true,
  created_at timestamptz not null default now()
);

comment on table public.plans is
  'Subscription plans. A subscription period grants monthly_credits of the plan whose price it bills.';

alter table public.plans enable row level security;

revoke all on table public.plans from public, anon, authenticated;
grant select on table public.plans to anon, authenticated;
grant select, insert, update on table public.plans to service_role;

create policy "Anyone can read plans"
  on public.plans for select
  to anon, authenticated
  using (true);

create table public.credit_packs (
  key text primary key check (key ~ '^[a-z0-9_-]{1,64}$'),
  name text not null check (length(name) between 1 and 200),
  stripe_price_id text not null unique check (stripe_price_id <> ''),
  credits integer not null check (credits > 0),
  active boolean not null default true,
  created_at timestamptz not null default now()
);

comment on table public.credit_packs is
  'One-off credit packs. A paid Checkout Session adds credits of the pack named by metadata.price_id.';

alter table public.credit_packs enable row level security;

revoke all on table public.credit_packs from public, anon, authenticated;
grant select on table public.credit_packs to anon, authenticated;
grant select, insert, update on table public.credit_packs to service_role;

create policy "Anyone can read credit packs"
  on public.credit_packs for select
  to anon, authenticated
  using (true);

-- One row of settings; the check on `singleton` keeps it one row.
create table tally.settings (
  singleton boolean primary key default true check (singleton),
  -- Plan credits of the free grant every (non-anonymous) user gets once.
  signup_credits integer not null check (signup_credits >= 0),
  -- Available credits below this emit credits.low to the app's backend.
  low_balance_threshold integer not null default 100 check (low_balance_threshold >= 0)
);

insert into tally.settings (singleton, signup_credits) values (true, 500);

alter table tally.settings enable row level security;

revoke all on table tally.settings from public, anon, authenticated;
