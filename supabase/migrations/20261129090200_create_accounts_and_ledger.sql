-- Accounts (one per user) and the append-only ledger. Every change of a
-- balance is one ledger entry written by tally.post_entry in the same
-- transaction, so each balance always equals the sum of its entries.
-- Clients read both through the views in public under row-level security.

-- Counts of credits that can never be negative, and the kinds of ledger
-- entry. Domains rather than table CHECK constraints: PostgreSQL 15 reads a
-- table's CHECK expressions back from their stored text for every statement
-- that writes the table (a spend writes accounts and ledger_entries once
-- each, a renewal writes accounts four times), while a domain's checks stay
-- compiled in the type cache. Same rules, same SQLSTATE (23514) when broken.
-- Measured by instruction counts, the re-reading was about a sixth of a
-- spend's work in the database (docs/benchmarks.md). Clients see the base
-- types: PostgreSQL describes a domain column by its base type.
create domain tally.credit_count as integer check (value >= 0);

create domain tally.ledger_kind as text check (value in (
  'signup', 'subscription_period', 'plan_change', 'addon_purchase',
  'refund_clawback', 'dispute_clawback', 'dispute_reinstated',
  'subscription_refund', 'subscription_dispute',
  'spend', 'spend_reversal', 'hold_commit', 'adjustment'
));

create table tally.accounts (
  user_id uuid primary key,
  plan_credits tally.credit_count not null default 0,
  addon_credits tally.credit_count not null default 0,
  -- The plan period the plan credits belong to: the signup grant (no
  -- subscription) or the newest paid period of one of the user's
  -- subscriptions. Plan credits are max(0, plan_allowance - plan_clawed -
  -- plan_spent): the allowance the period's payments bought (its invoice
  -- and paid upgrades, lowered by immediate downgrades), less what refunds
  -- and open disputes of those payments took back, less what was drawn.
  period_subscription_id text,
  period_start timestamptz,
  period_end timestamptz,
  plan_allowance tally.credit_count not null default 0,
  plan_refunded tally.credit_count not null default 0,
  plan_disputed tally.credit_count not null default 0,
  plan_spent tally.credit_count not null default 0,
  has_signup_grant boolean not null default false,
  -- What credit_balances shows about the user's most relevant subscription,
  -- kept up to date by tally.refresh_subscription_summary.
  subscription_id text,
  subscription_status text,
  plan_key text,
  current_period_start timestamptz,
  current_period_end timestamptz,
  cancel_at_period_end boolean not null default false,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

alter table tally.accounts enable row level security;

revoke all on table tally.accounts from public, anon, authenticated;
grant select on table tally.accounts to authenticated, service_role;

create policy "Users can read their own account"
  on tally.accounts for select
  to authenticated
  using (user_id = (select auth.uid()));

create table tally.ledger_entries (
  id bigint generated always as identity primary key,
  user_id uuid not null references tally.accounts (user_id),
  kind tally.ledger_kind not null,
  plan_delta integer not null,
  addon_delta integer not null,
  -- Credits a clawback could not take because they were already spent.
  shortfall tally.credit_count not null default 0,
  plan_after tally.credit_count not null,
  addon_after tally.credit_count not null,
  -- What caused it: the Stripe event and the Stripe object behind the row
  -- (invoice, Checkout Session, charge, dispute, subscription), or the
  -- idempotency key of a spend, hold or adjustment.
  stripe_event_id text,
  stripe_object_id text,
  checkout_session_id text,
  spend_key text,
  business_key text,
  description text not null,
  reason text,
  created_at timestamptz not null default clock_timestamp()
);

create index ledger_entries_user_id_created_at_idx
  on tally.ledger_entries (user_id, created_at desc, id desc);

alter table tally.ledger_entries enable row level security;

revoke all on table tally.ledger_entries from public, anon, authenticated, service_role;
grant select on table tally.ledger_entries to authenticated, service_role;

create policy "Users can read their own ledger entries"
  on tally.ledger_entries for select
  to authenticated
  using (user_id = (select auth.uid()));

-- Entries are never updated or deleted: a correction is a new entry.
create function tally.forbid_ledger_rewrite() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  raise exception using
    errcode = '42501',
    message = 'the credit ledger is append-only',
    detail = format('%s on tally.ledger_entries is not allowed; post a correcting entry', tg_op);
end;
$$;

revoke all on function tally.forbid_ledger_rewrite() from public, anon, authenticated;

create trigger ledger_entries_are_append_only
  before update or delete on tally.ledger_entries
  for each row execute function tally.forbid_ledger_rewrite();

create trigger ledger_entries_are_never_truncated
  before truncate on tally.ledger_entries
  for each statement execute function tally.forbid_ledger_rewrite();

-- What every entry records beyond its amounts.
create type tally.entry_cause as (
  description text,
  stripe_event_id text,
  stripe_object_id text,
  checkout_session_id text,
  spend_key text,
  business_key text,
  reason text
);

-- A cause in one call: the sentence first, then whatever ids apply.
create function tally.cause(
  p_description text,
  p_stripe_event_id text default null,
  p_stripe_object_id text default null,
  p_checkout_session_id text default null,
  p_spend_key text default null,
  p_business_key text default null,
  p_reason text default null
) returns tally.entry_cause
language sql
immutable
as $$
  select row(p_description, p_stripe_event_id, p_stripe_object_id, p_checkout_session_id,
             p_spend_key, p_business_key, p_reason)::tally.entry_cause;
$$;

revoke all on function tally.cause(text, text, text, text, text, text, text)
  from public, anon, authenticated;

-- Apply a change to a locked account and record it; plan_spent moves with
-- draws on plan credits and their reversals. The caller holds the account
-- row lock (tally.lock_account). Then the hooks every change shares: holds
-- still fit, balance events for the app, the live balance broadcast.
create function tally.post_entry(
  p_user_id uuid,
  p_kind text,
  p_plan_delta integer,
  p_addon_delta integer,
  p_cause tally.entry_cause,
  p_shortfall integer default 0,
  p_plan_spent_delta integer default 0
) returns tally.ledger_entries
language plpgsql
as $$
declare
  v_account tally.accounts;
  v_entry tally.ledger_entries;
begin
  update tally.accounts
     set plan_credits = plan_credits + p_plan_delta,
         addon_credits = addon_credits + p_addon_delta,
         plan_spent = plan_spent + p_plan_spent_delta,
         updated_at = now()
   where user_id = p_user_id
  returning * into v_account;

  insert into tally.ledger_entries (
    user_id, kind, plan_delta, addon_delta, shortfall, plan_after, addon_after,
    stripe_event_id, stripe_object_id, checkout_session_id, spend_key, business_key,
    description, reason
  ) values (
    p_user_id, p_kind, p_plan_delta, p_addon_delta, p_shortfall,
    v_account.plan_credits, v_account.addon_credits,
    p_cause.stripe_event_id, p_cause.stripe_object_id, p_cause.checkout_session_id,
    p_cause.spend_key, p_cause.business_key, p_cause.description, p_cause.reason
  ) returning * into v_entry;
  perform tally.after_balance_change(v_account, v_entry);
  return v_entry;
end;
$$;

revoke all on function tally.post_entry(uuid, text, integer, integer, tally.entry_cause, integer, integer)
  from public, anon, authenticated;

-- Lock a user's account row; every credit change of a user goes through
-- here first, so changes of one user serialise and never deadlock.
create function tally.lock_account(p_user_id uuid) returns tally.accounts
language plpgsql
as $$
declare
  v_row tally.accounts;
begin
  select * into v_row from tally.accounts where user_id = p_user_id for update;
  return v_row;
end;
$$;

revoke all on function tally.lock_account(uuid) from public, anon, authenticated;

create view public.credit_ledger
  with (security_invoker = true)
as
select id,
       user_id,
       kind,
       plan_delta,
       addon_delta,
       plan_delta + addon_delta as total_delta,
       shortfall,
       plan_after,
       addon_after,
       plan_after + addon_after as total_after,
       description,
       stripe_event_id,
       stripe_object_id,
       checkout_session_id,
       spend_key as idempotency_key,
       business_key,
       reason,
       created_at
  from tally.ledger_entries
 order by created_at desc, id desc;

comment on view public.credit_ledger is
  'Every change of the user''s balance, newest first, in words and with its Stripe object. Each user sees only their own entries.';

revoke all on table public.credit_ledger from public, anon, authenticated;
grant select on table public.credit_ledger to authenticated, service_role;
