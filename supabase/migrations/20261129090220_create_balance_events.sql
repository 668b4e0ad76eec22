-- Balance events for the app's backend: credits.low (available credits
-- fall below the low_balance_threshold setting, once per crossing),
-- credits.depleted (they reach zero) and credits.granted (a grant). They
-- are written to this outbox in the transaction of the change, so none is
-- lost and none is sent for a change that rolled back; the sidecar
-- delivers them (signed the Standard Webhooks way) at least once, claiming
-- a batch with `for update skip locked` so that one machine sends each.

create domain tally.balance_event_type as text
  check (value in ('credits.low', 'credits.depleted', 'credits.granted'));

create table tally.balance_events (
  id bigint generated always as identity primary key,
  user_id uuid not null,
  type tally.balance_event_type not null,
  -- The JSON body delivered: {"type", "timestamp", "data": {...}}.
  payload jsonb not null,
  created_at timestamptz not null default now(),
  attempts integer not null default 0,
  next_attempt_at timestamptz not null default now(),
  delivered_at timestamptz,
  last_error text
);

create index balance_events_pending_idx
  on tally.balance_events (next_attempt_at, id) where delivered_at is null;
create index balance_events_user_id_idx on tally.balance_events (user_id);

alter table tally.balance_events enable row level security;
revoke all on table tally.balance_events from public, anon, authenticated;

create function tally.is_grant(p_kind text) returns boolean
language sql
immutable
as $$
  select p_kind in ('signup', 'subscription_period', 'plan_change', 'addon_purchase',
                    'dispute_reinstated', 'adjustment');
$$;

revoke all on function tally.is_grant(text) from public, anon, authenticated;

-- The user's public.credit_balances row, column for column, from the
-- account and what is held: what every broadcast and balance event carries.
create function tally.balance_snapshot(p_account tally.accounts, p_held integer) returns jsonb
language sql
stable
as $$
  select jsonb_build_object(
    'user_id', p_account.user_id,
    'plan_credits', p_account.plan_credits,
    'addon_credits', p_account.addon_credits,
    'total_credits', p_account.plan_credits + p_account.addon_credits,
    'held_credits', p_held,
    'available_credits', p_account.plan_credits + p_account.addon_credits - p_held,
    'plan_key', p_account.plan_key,
    'subscription_status', p_account.subscription_status,
    'current_period_start', p_account.current_period_start,
    'current_period_end', p_account.current_period_end,
    'cancel_at_period_end', p_account.cancel_at_period_end,
    'updated_at', p_account.updated_at);
$$;

revoke all on function tally.balance_snapshot(tally.accounts, integer)
  from public, anon, authenticated;

create function tally.queue_balance_event(p_type text, p_data jsonb) returns void
language plpgsql
as $$
begin
  insert into tally.balance_events (user_id, type, payload)
  values ((p_data ->> 'user_id')::uuid, p_type,
          jsonb_build_object('type', p_type,
                             'timestamp', to_char(now() at time zone 'utc',
                                                  'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                             'data', p_data));
end;
$$;

revoke all on function tally.queue_balance_event(text, jsonb) from public, anon, authenticated;

-- Queue what a change of available credits from p_before to the account's
-- present state means for the app (p_granted: how many a grant added, null
-- when the change is no grant).
create function tally.emit_balance_events(
  p_account tally.accounts, p_held integer, p_before integer, p_granted integer, p_why text
) returns void
language plpgsql
as $$
declare
  v_after integer := p_account.plan_credits + p_account.addon_credits - p_held;
  v_threshold integer;
  v_is_low boolean;
  v_is_depleted boolean;
  v_data jsonb;
begin
  if p_granted is null and v_after >= p_before then
    return;
  end if;
  select low_balance_threshold into v_threshold from tally.settings;
  v_is_low := p_before >= v_threshold and v_after < v_threshold;
  v_is_depleted := p_before > 0 and v_after = 0;
  -- Most spends cross nothing: no snapshot is built for them.
  if p_granted is null and not v_is_low and not v_is_depleted then
    return;
  end if;
  v_data := tally.balance_snapshot(p_account, p_held) || jsonb_build_object('reason', p_why);
  if p_granted is not null then
    perform tally.queue_balance_event('credits.granted',
                                      v_data || jsonb_build_object('granted', p_granted));
  end if;
  if v_is_low then
    perform tally.queue_balance_event('credits.low',
                                      v_data || jsonb_build_object('threshold', v_threshold));
  end if;
  if v_is_depleted then
    perform tally.queue_balance_event('credits.depleted', v_data);
  end if;
end;
$$;

revoke all on function tally.emit_balance_events(tally.accounts, integer, integer, integer, text)
  from public, anon, authenticated;

-- For the sidecar: claim up to max_events due events for lease_seconds (no
-- other machine gets them meanwhile), oldest first.
create function public.claim_balance_events(max_events integer default 50,
                                            lease_seconds integer default 30)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_claimed jsonb;
begin
  if max_events is null or max_events not between 1 and 1000
     or lease_seconds is null or lease_seconds not between 1 and 3600 then
    raise exception using errcode = '22023',
      message = 'max_events must be 1 to 1000 and lease_seconds 1 to 3600';
  end if;
  with due as (
    select e.id from tally.balance_events e
     where e.delivered_at is null and e.next_attempt_at <= now()
     order by e.next_attempt_at, e.id
     limit max_events
     for update skip locked
  ), claimed as (
    update tally.balance_events e
       set next_attempt_at = now() + make_interval(secs => lease_seconds)
      from due
     where e.id = due.id
    returning e.id, e.payload, e.attempts
  )
  select coalesce(jsonb_agg(jsonb_build_object('id', c.id, 'payload', c.payload,
                                               'attempts', c.attempts) order by c.id),
                  '[]'::jsonb)
    into v_claimed
    from claimed c;
  return v_claimed;
end;
$$;

comment on function public.claim_balance_events(integer, integer) is
  'For the sidecar: lease a batch of due balance events to deliver to the app.';

revoke all on function public.claim_balance_events(integer, integer) from public, anon, authenticated;
grant execute on function public.claim_balance_events(integer, integer) to service_role;

-- For the sidecar: the outcome of one delivery. A failure is retried with
-- exponential backoff (2^attempts seconds, at most an hour).
create function public.finish_balance_event(event_id bigint, delivered boolean,
                                            error text default null)
returns void
language sql
security definer
set search_path = ''
as $$
  update tally.balance_events e
     set delivered_at = case when finish_balance_event.delivered then now() end,
         attempts = e.attempts + 1,
         next_attempt_at = case when finish_balance_event.delivered then e.next_attempt_at
                                else now() + make_interval(secs => least(3600, power(2, least(e.attempts, 12))))
                           end,
         last_error = case when finish_balance_event.delivered then null
                           else left(finish_balance_event.error, 500) end
   where e.id = finish_balance_event.event_id and e.delivered_at is null;
$$;

comment on function public.finish_balance_event(bigint, boolean, text) is
  'For the sidecar: record a delivery (or a failed attempt, retried later with backoff).';

revoke all on function public.finish_balance_event(bigint, boolean, text) from public, anon, authenticated;
grant execute on function public.finish_balance_event(bigint, boolean, text) to service_role;

-- What is waiting to be delivered, for /metrics and `tally ops`.
create function public.balance_event_backlog() returns jsonb
language sql
stable
security definer
set search_path = ''
as $$
  select jsonb_build_object(
    'pending', count(*),
    'failing', count(*) filter (where e.attempts > 0),
    'oldest_seconds', coalesce(extract(epoch from now() - min(e.created_at)), 0)::bigint)
    from tally.balance_events e
   where e.delivered_at is null;
$$;

comment on function public.balance_event_backlog() is
  'How many balance events wait for delivery, how many failed at least once, and the oldest age.';

revoke all on function public.balance_event_backlog() from public, anon, authenticated;
grant execute on function public.balance_event_backlog() to service_role;
