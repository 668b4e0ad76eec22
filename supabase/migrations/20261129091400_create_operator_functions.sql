-- What `tally ops` and the sidecar's periodic replay need from the
-- database, as public functions: operators may reach the database only
-- through PostgREST (SUPABASE_URL + the service role key), which cannot read
-- the private schema. Each function reads (or, for the replay lease, writes
-- its own row) and changes no credits; all are security definer with an
-- empty search_path, executable by service_role only.
--
-- - the replay lease: one sidecar machine at a time replays the events
--   Stripe could not deliver, and the start of the last successful replay
--   tells the next one how far back to look;
-- - events: parked and rejected events with their reasons, and the raw
--   payloads of rejected ones (re-read by `ops retry`);
-- - a user's balance as a story (`ops explain`), the ledger check, the
--   operator's reviews, and what tally recorded under each Stripe business
--   key (`ops reconcile --stripe`).

-- -----------------------------------------------------------------------------
-- The replay lease
-- -----------------------------------------------------------------------------

-- One row: who replays now (until expires_at), and the last run that finished.
create table tally.replay_lease (
  id boolean primary key default true check (id),
  holder text not null,
  expires_at timestamptz not null,
  started_at timestamptz not null,
  last_success_started_at timestamptz,
  last_success_finished_at timestamptz,
  last_counts jsonb
);

comment on table tally.replay_lease is
  'Which sidecar machine replays undelivered Stripe events in this window, and the last run that finished.';

alter table tally.replay_lease enable row level security;

revoke all on table tally.replay_lease from public, anon, authenticated;

-- True when `holder` takes the lease for ttl_seconds: it was never taken or
-- has expired. A holder does not extend its own lease: the lease is a
-- window, and one replay per window is the point.
create function public.try_replay_lease(holder text, ttl_seconds integer)
returns boolean
language plpgsql
security definer
set search_path = ''
as $$
begin
  if try_replay_lease.holder is null or length(try_replay_lease.holder) not between 1 and 200 then
    raise exception using errcode = '22023', message = 'holder is required (1 to 200 characters)';
  end if;
  if try_replay_lease.ttl_seconds is null or try_replay_lease.ttl_seconds not between 1 and 86400 then
    raise exception using errcode = '22023', message = 'ttl_seconds must be between 1 and 86400';
  end if;
  insert into tally.replay_lease as l (id, holder, expires_at, started_at)
  values (true, try_replay_lease.holder,
          clock_timestamp() + make_interval(secs => try_replay_lease.ttl_seconds),
          clock_timestamp())
  on conflict (id) do update
    set holder = excluded.holder, expires_at = excluded.expires_at,
        started_at = excluded.started_at
    where l.expires_at <= clock_timestamp();
  return found;
end;
$$;

comment on function public.try_replay_lease(text, integer) is
  'Take the replay lease for ttl_seconds; false while another run holds it.';

revoke all on function public.try_replay_lease(text, integer) from public, anon, authenticated;
grant execute on function public.try_replay_lease(text, integer) to service_role;

-- Record that the holder's run finished: its start (when it took the lease,
-- on the database's clock) becomes the last successful replay, never moving
-- back. False when another holder has taken the lease since (the run is not
-- recorded; the next one looks further back, which is safe).
create function public.finish_replay(holder text, counts jsonb default '{}'::jsonb)
returns boolean
language plpgsql
security definer
set search_path = ''
as $$
begin
  update tally.replay_lease l
     set last_success_started_at = greatest(l.last_success_started_at, l.started_at),
         last_success_finished_at = clock_timestamp(),
         last_counts = coalesce(finish_replay.counts, '{}'::jsonb)
   where l.holder = finish_replay.holder;
  return found;
end;
$$;

comment on function public.finish_replay(text, jsonb) is
  'Record the holder''s replay as finished, with its counts; false if the lease changed hands.';

revoke all on function public.finish_replay(text, jsonb) from public, anon, authenticated;
grant execute on function public.finish_replay(text, jsonb) to service_role;

-- The lease and the last successful replay ({} before the first run).
create function public.last_replay() returns jsonb
language sql
stable
security definer
set search_path = ''
as $$
  select coalesce(
    (select jsonb_build_object(
              'holder', l.holder, 'expires_at', l.expires_at, 'started_at', l.started_at,
              'last_success_started_at', l.last_success_started_at,
              'last_success_finished_at', l.last_success_finished_at,
              'last_counts', l.last_counts)
       from tally.replay_lease l),
    '{}'::jsonb);
$$;

comment on function public.last_replay() is
  'Who holds the replay lease, and when the last successful replay started and finished.';

revoke all on function public.last_replay() from public, anon, authenticated;
grant execute on function public.last_replay() to service_role;

-- -----------------------------------------------------------------------------
-- Parked and rejected events
-- -----------------------------------------------------------------------------

-- Parked and rejected events (or only `outcome`), oldest first, with why.
-- found_by says who found the reason: the sidecar (the typed event's
-- problem: unreadable, another livemode) or the database.
create function public.list_unapplied_stripe_events(outcome text default null,
                                                    max_rows integer default 200)
returns jsonb
language sql
stable
security definer
set search_path = ''
as $$
  select coalesce(jsonb_agg(to_jsonb(x) order by x.received_at, x.event_id), '[]'::jsonb)
    from (
      select e.event_id, e.type, e.outcome, e.reason,
             case when e.payload ->> 'problem' is not null then 'sidecar' else 'database' end
               as found_by,
             e.waiting_on, e.customer_id, e.user_id, e.stripe_created_at, e.received_at,
             e.attempts
        from tally.stripe_events e
       where e.outcome in ('parked', 'rejected')
         and (list_unapplied_stripe_events.outcome is null
              or e.outcome = list_unapplied_stripe_events.outcome)
       order by e.received_at, e.event_id
       limit greatest(coalesce(list_unapplied_stripe_events.max_rows, 200), 0)
    ) x;
$$;

comment on function public.list_unapplied_stripe_events(text, integer) is
  'Parked and rejected Stripe events, oldest first, with their reasons.';

revoke all on function public.list_unapplied_stripe_events(text, integer)
  from public, anon, authenticated;
grant execute on function public.list_unapplied_stripe_events(text, integer) to service_role;

-- Rejected events with their raw payloads, by event id after `after_event_id`
-- (pages), or just `event_id`: what `ops retry` reads again with the
-- sidecar's current normaliser.
create function public.read_rejected_stripe_events(event_id text default null,
                                                   after_event_id text default null,
                                                   max_rows integer default 100)
returns jsonb
language sql
stable
security definer
set search_path = ''
as $$
  select coalesce(jsonb_agg(to_jsonb(x) order by x.event_id), '[]'::jsonb)
    from (
      select e.event_id, e.type, e.reason, e.payload ->> 'problem' as problem, e.raw
        from tally.stripe_events e
       where e.outcome = 'rejected'
         and (read_rejected_stripe_events.event_id is null
              or e.event_id = read_rejected_stripe_events.event_id)
         and (read_rejected_stripe_events.after_event_id is null
              or e.event_id > read_rejected_stripe_events.after_event_id)
       order by e.event_id
       limit least(greatest(coalesce(read_rejected_stripe_events.max_rows, 100), 0), 1000)
    ) x;
$$;

comment on function public.read_rejected_stripe_events(text, text, integer) is
  'Rejected Stripe events with their raw payloads, in pages by event id.';

revoke all on function public.read_rejected_stripe_events(text, text, integer)
  from public, anon, authenticated;
grant execute on function public.read_rejected_stripe_events(text, text, integer) to service_role;

-- -----------------------------------------------------------------------------
-- Balances, the ledger and reviews
-- -----------------------------------------------------------------------------

-- A user's balance as a story: the newest max_rows ledger entries (oldest
-- first), what came before them, the balance now with its live holds, and
-- the events about the user that wait (parked, also those of the user's
-- Stripe customers) or were rejected.
create function public.explain_balance(user_id uuid, max_rows integer default 500)
returns jsonb
language sql
stable
security definer
set search_path = ''
as $$
  with shown as (
    select l.* from tally.ledger_entries l
     where l.user_id = explain_balance.user_id
     order by l.created_at desc, l.id desc
     limit greatest(coalesce(explain_balance.max_rows, 500), 1)
  ), customer_ids as (
    select c.customer_id from tally.customers c where c.user_id = explain_balance.user_id
  )
  select jsonb_build_object(
    'user_id', explain_balance.user_id,
    'user_exists', exists (select 1 from auth.users u where u.id = explain_balance.user_id),
    'balance', (select to_jsonb(b) from public.credit_balances b
                 where b.user_id = explain_balance.user_id),
    'entries_before', (select count(*) from tally.ledger_entries l
                        where l.user_id = explain_balance.user_id)
                      - (select count(*) from shown),
    'entries', coalesce((select jsonb_agg(jsonb_build_object(
                 'id', s.id, 'created_at', s.created_at, 'kind', s.kind,
                 'plan_delta', s.plan_delta, 'addon_delta', s.addon_delta,
                 'plan_after', s.plan_after, 'addon_after', s.addon_after,
                 'shortfall', s.shortfall, 'description', s.description, 'reason', s.reason,
                 'stripe_object_id', s.stripe_object_id, 'stripe_event_id', s.stripe_event_id,
                 'checkout_session_id', s.checkout_session_id, 'idempotency_key', s.spend_key)
                 order by s.created_at, s.id) from shown s), '[]'::jsonb),
    'holds', coalesce((select jsonb_agg(jsonb_build_object(
               'idempotency_key', h.idempotency_key, 'amount', h.amount,
               'expires_at', h.expires_at, 'reason', h.reason) order by h.created_at)
               from tally.holds h
              where h.user_id = explain_balance.user_id and h.status = 'held'
                and h.expires_at > now()), '[]'::jsonb),
    'customers', coalesce((select jsonb_agg(c.customer_id order by c.customer_id)
                             from customer_ids c), '[]'::jsonb),
    'events', coalesce((select jsonb_agg(jsonb_build_object(
                'event_id', e.event_id, 'type', e.type, 'outcome', e.outcome,
                'reason', e.reason, 'received_at', e.received_at)
                order by e.received_at, e.event_id)
                from tally.stripe_events e
               where e.outcome in ('parked', 'rejected')
                 and (e.user_id = explain_balance.user_id
                      or e.customer_id in (select c.customer_id from customer_ids c))),
              '[]'::jsonb));
$$;

comment on function public.explain_balance(uuid, integer) is
  'A user''s ledger (newest max_rows, oldest first), balance, live holds and waiting events.';

revoke all on function public.explain_balance(uuid, integer) from public, anon, authenticated;
grant execute on function public.explain_balance(uuid, integer) to service_role;

-- Accounts whose balance differs from the sum of their ledger entries or is
-- negative, and ledger entries of users with no account. No mismatch means
-- every balance is proven by its ledger.
create function public.reconcile_balances(max_rows integer default 1000) returns jsonb
language sql
stable
security definer
set search_path = ''
as $$
  select jsonb_build_object(
    'accounts', (select count(*) from tally.accounts),
    'mismatches', coalesce((select jsonb_agg(to_jsonb(m) order by m.user_id) from (
      select coalesce(a.user_id, l.user_id) as user_id,
             a.plan_credits, a.addon_credits,
             coalesce(l.plan_sum, 0) as ledger_plan, coalesce(l.addon_sum, 0) as ledger_addon
        from tally.accounts a
        full join (select e.user_id, sum(e.plan_delta) as plan_sum,
                          sum(e.addon_delta) as addon_sum
                     from tally.ledger_entries e group by e.user_id) l using (user_id)
       where a.user_id is null
          or a.plan_credits is distinct from coalesce(l.plan_sum, 0)
          or a.addon_credits is distinct from coalesce(l.addon_sum, 0)
          or a.plan_credits < 0 or a.addon_credits < 0
       order by 1
       limit greatest(coalesce(reconcile_balances.max_rows, 1000), 1)) m), '[]'::jsonb));
$$;

comment on function public.reconcile_balances(integer) is
  'The number of accounts, and those whose balance differs from their ledger sum.';

revoke all on function public.reconcile_balances(integer) from public, anon, authenticated;
grant execute on function public.reconcile_balances(integer) to service_role;

-- What waits for the operator's decision (refunds and disputes of an older
-- period, second subscriptions), oldest first.
create function public.list_operator_reviews(include_resolved boolean default false,
                                             max_rows integer default 200)
returns jsonb
language sql
stable
security definer
set search_path = ''
as $$
  select coalesce(jsonb_agg(to_jsonb(r) order by r.created_at, r.id), '[]'::jsonb)
    from (
      select o.id, o.kind, o.object_id, o.user_id, o.stripe_event_id, o.details, o.created_at,
             o.resolved_at
        from tally.operator_reviews o
       where coalesce(list_operator_reviews.include_resolved, false) or o.resolved_at is null
       order by o.created_at, o.id
       limit greatest(coalesce(list_operator_reviews.max_rows, 200), 0)
    ) r;
$$;

comment on function public.list_operator_reviews(boolean, integer) is
  'Refunds, disputes and second subscriptions recorded for the operator, oldest first.';

revoke all on function public.list_operator_reviews(boolean, integer)
  from public, anon, authenticated;
grant execute on function public.list_operator_reviews(boolean, integer) to service_role;

-- -----------------------------------------------------------------------------
-- Truth against Stripe
-- -----------------------------------------------------------------------------

-- The ids of one kind named in `objects` ({"invoices": [...], ...}).
create function tally.ids_in(p_objects jsonb, p_kind text) returns text[]
language sql
immutable
as $$
  select coalesce(array_agg(x.id), '{}')
    from jsonb_array_elements_text(
           case when jsonb_typeof(p_objects -> p_kind) = 'array'
                then p_objects -> p_kind else '[]'::jsonb end) as x(id);
$$;

revoke all on function tally.ids_in(jsonb, text) from public, anon, authenticated;

-- What tally recorded under each business key that `objects` names, and
-- every grant recorded since `since` (so grants Stripe does not list show
-- up): `objects` holds lists of Stripe ids: invoices, checkout_sessions,
-- charges, disputes, customers, and payments ([{payment_intent_id,
-- charge_id}]) whose purchase is asked for. Also the parked and rejected
-- events about those objects, which tell why something is missing.
create function public.reconcile_records(since timestamptz, objects jsonb)
returns jsonb
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  v_invoices text[] := tally.ids_in(objects, 'invoices');
  v_sessions text[] := tally.ids_in(objects, 'checkout_sessions');
  v_charges text[] := tally.ids_in(objects, 'charges');
  v_disputes text[] := tally.ids_in(objects, 'disputes');
  v_customers text[] := tally.ids_in(objects, 'customers');
  v_all text[] := v_invoices || v_sessions || v_charges || v_disputes;
begin
  if since is null then
    raise exception using errcode = '22023', message = 'since is required';
  end if;
  return jsonb_build_object(
    'invoices', coalesce((select jsonb_agg(to_jsonb(i) order by i.invoice_id) from (
        select r.invoice_id, min(r.user_id::text)::uuid as user_id,
               min(r.subscription_id) as subscription_id,
               array_agg(r.kind order by r.kind) as kinds, max(r.amount_paid) as amount_paid,
               sum(r.granted) as granted, min(r.recorded_at) as recorded_at,
               min(r.stripe_event_id) as stripe_event_id
          from tally.invoices r
         where r.invoice_id = any(v_invoices) or r.recorded_at >= since
         group by r.invoice_id) i), '[]'::jsonb),
    'packs', coalesce((select jsonb_agg(jsonb_build_object(
        'checkout_session_id', p.checkout_session_id, 'user_id', p.user_id,
        'pack_key', p.pack_key, 'credits', p.credits, 'payment_intent_id', p.payment_intent_id,
        'amount_total', p.amount_total, 'purchased_at', p.purchased_at,
        'stripe_event_id', p.stripe_event_id) order by p.checkout_session_id)
        from tally.pack_purchases p
       where p.checkout_session_id = any(v_sessions) or p.purchased_at >= since), '[]'::jsonb),
    'charges', coalesce((select jsonb_agg(jsonb_build_object(
        'charge_id', c.charge_id, 'user_id', c.user_id, 'payment_intent_id', c.payment_intent_id,
        'invoice_id', c.invoice_id, 'amount', c.amount, 'amount_refunded', c.amount_refunded)
        order by c.charge_id)
        from tally.charges c where c.charge_id = any(v_charges)), '[]'::jsonb),
    'disputes', coalesce((select jsonb_agg(jsonb_build_object(
        'dispute_id', d.dispute_id, 'user_id', d.user_id, 'charge_id', d.charge_id,
        'status', d.status, 'amount', d.amount) order by d.dispute_id)
        from tally.disputes d where d.dispute_id = any(v_disputes)), '[]'::jsonb),
    'customers', coalesce((select jsonb_agg(jsonb_build_object(
        'customer_id', c.customer_id, 'user_id', c.user_id) order by c.customer_id)
        from tally.customers c where c.customer_id = any(v_customers)), '[]'::jsonb),
    'payments', coalesce((select jsonb_agg(jsonb_build_object(
        'payment_intent_id', p.payment ->> 'payment_intent_id',
        'charge_id', p.payment ->> 'charge_id', 'kind', t.kind, 'id', t.id,
        'user_id', t.user_id))
        from jsonb_array_elements(
               case when jsonb_typeof(objects -> 'payments') = 'array'
                    then objects -> 'payments' else '[]'::jsonb end) as p(payment)
        cross join lateral tally.payment_target(p.payment ->> 'payment_intent_id',
                                                 p.payment ->> 'charge_id') t),
      '[]'::jsonb),
    'events', coalesce((select jsonb_agg(jsonb_build_object(
        'event_id', e.event_id, 'type', e.type, 'outcome', e.outcome, 'reason', e.reason,
        'object_id', e.raw -> 'data' -> 'object' ->> 'id') order by e.received_at, e.event_id)
        from tally.stripe_events e
       where e.outcome in ('parked', 'rejected')
         and e.raw -> 'data' -> 'object' ->> 'id' = any(v_all)), '[]'::jsonb));
end;
$$;

comment on function public.reconcile_records(timestamptz, jsonb) is
  'What tally recorded for the named Stripe objects (and every grant since `since`), for reconciliation.';

revoke all on function public.reconcile_records(timestamptz, jsonb) from public, anon, authenticated;
grant execute on function public.reconcile_records(timestamptz, jsonb) to service_role;
