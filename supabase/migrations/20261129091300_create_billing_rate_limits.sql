-- A per-user limit on /billing/* calls, counted in the database so that every
-- sidecar machine behind the one URL shares it (a count per machine would let
-- a user make N times the limit on N machines). A fixed window per user: the
-- first call opens it, every call counts, and the window restarts once it is
-- over. One upsert per call, contended only by the user's own calls.

create table tally.billing_rate_limits (
  user_id uuid primary key,
  window_started_at timestamptz not null,
  calls integer not null check (calls > 0)
);

comment on table tally.billing_rate_limits is
  'Calls to /billing/* per user in the current window (sidecar rate limit).';

alter table tally.billing_rate_limits enable row level security;

revoke all on table tally.billing_rate_limits from public, anon, authenticated;

-- Counts one call; {"allowed": calls in this window <= max_calls,
-- "retry_after": whole seconds until the window restarts}.
create function public.hit_billing_rate_limit(user_id uuid, max_calls integer, window_seconds integer)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_now timestamptz := clock_timestamp();
  v_window interval;
  v_row tally.billing_rate_limits;
begin
  if hit_billing_rate_limit.user_id is null then
    raise exception using errcode = '22023', message = 'user_id is required';
  end if;
  if coalesce(hit_billing_rate_limit.max_calls, 0) < 1
     or coalesce(hit_billing_rate_limit.window_seconds, 0) not between 1 and 86400 then
    raise exception using errcode = '22023',
      message = 'max_calls must be positive and window_seconds between 1 and 86400';
  end if;
  v_window := make_interval(secs => hit_billing_rate_limit.window_seconds);
  insert into tally.billing_rate_limits as r (user_id, window_started_at, calls)
  values (hit_billing_rate_limit.user_id, v_now, 1)
  on conflict on constraint billing_rate_limits_pkey do update
    set window_started_at = case when r.window_started_at + v_window <= v_now
                                 then v_now else r.window_started_at end,
        -- Capped one past the limit: a hammering client cannot overflow it.
        calls = case when r.window_started_at + v_window <= v_now then 1
                     else least(r.calls + 1, hit_billing_rate_limit.max_calls + 1) end
  returning * into v_row;
  return jsonb_build_object(
    'allowed', v_row.calls <= hit_billing_rate_limit.max_calls,
    'retry_after', greatest(1, ceil(extract(epoch from v_row.window_started_at + v_window - v_now)))::integer);
end;
$$;

comment on function public.hit_billing_rate_limit(uuid, integer, integer) is
  'Count one /billing/* call of the user; whether it is within max_calls per window_seconds.';

revoke all on function public.hit_billing_rate_limit(uuid, integer, integer) from public, anon, authenticated;
grant execute on function public.hit_billing_rate_limit(uuid, integer, integer) to service_role;
