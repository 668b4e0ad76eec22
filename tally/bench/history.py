"""Grow the database's history fast, with set-based inserts, keeping it consistent.

Synthetic users sign up (so each has an account and its signup entry, as
the trigger on auth.users makes them); each then gets ENTRIES_PER_USER
ledger entries (operator grants of 3 add-on credits alternating with spends
of 1) and their accounts move by the same sum, so every balance still
equals its ledger sum. Stripe events are stored as applied events of those
users with random-looking ids, as Stripe's are (an index on sequential ids
would flatter the insert path). Payloads are small: the measurement is about
index depth and plans, not about TOAST.
"""

from __future__ import annotations

import time

import psycopg

ENTRIES_PER_USER = 100
GRANT, SPEND = 3, 1

HISTORY_USERS_SQL = """
insert into auth.users (id, aud, role, email)
select gen_random_uuid(), 'authenticated', 'authenticated',
       'history-' || g || '-' || %(run)s || '@example.test'
  from generate_series(1, %(users)s) g
returning id
"""

# Entry g (1-based) of a user: odd g grant GRANT, even g spend SPEND, so after
# entry g the add-on balance has grown by GRANT*ceil(g/2) - SPEND*floor(g/2).
LEDGER_SQL = """
insert into tally.ledger_entries (user_id, kind, plan_delta, addon_delta, plan_after,
                                  addon_after, description, reason, created_at)
select a.user_id,
       case when g %% 2 = 1 then 'adjustment' else 'spend' end,
       0,
       case when g %% 2 = 1 then %(grant)s else -%(spend)s end,
       a.plan_credits,
       a.addon_credits + %(grant)s * ((g + 1) / 2) - %(spend)s * (g / 2),
       'Benchmark history',
       'benchmark history',
       now() - make_interval(mins => %(per_user)s - g)
  from tally.accounts a
  join unnest(%(ids)s::uuid[]) as h(user_id) using (user_id)
 cross join generate_series(1, %(per_user)s) g
"""

ACCOUNTS_SQL = """
update tally.accounts a
   set addon_credits = a.addon_credits + %(grant)s * ((%(per_user)s + 1) / 2)
                       - %(spend)s * (%(per_user)s / 2)
  from unnest(%(ids)s::uuid[]) as h(user_id)
 where a.user_id = h.user_id
"""

EVENTS_SQL = """
insert into tally.stripe_events (event_id, type, stripe_created_at, livemode, api_version,
                                 layout, customer_id, user_id, outcome, payload, raw,
                                 received_at, applied_at)
select 'evt_' || substr(md5(%(run)s || g), 1, 24),
       'invoice.paid',
       now() - make_interval(secs => g),
       false,
       '2025-03-31.basil',
       'basil',
       'cus_h' || substr(md5('c' || (g %% %(users)s)), 1, 19),
       (%(ids)s::uuid[])[1 + g %% %(users)s],
       'applied',
       null,  -- an applied event keeps only its raw payload
       jsonb_build_object('object', 'event', 'type', 'invoice.paid'),
       now() - make_interval(secs => g),
       now() - make_interval(secs => g)
  from generate_series(1, %(events)s) g
"""


def grow(url: str, ledger_rows: int, events: int) -> float:
    """Add about `ledger_rows` ledger entries and `events` stored events; seconds taken."""
    started = time.perf_counter()
    run = str(int(time.time()))
    users = max(1, ledger_rows // ENTRIES_PER_USER)
    params: dict[str, object] = {
        "run": run,
        "users": users,
        "per_user": ENTRIES_PER_USER,
        "grant": GRANT,
        "spend": SPEND,
        "events": events,
    }
    with psycopg.connect(url, autocommit=True) as conn:
        with conn.transaction():
            ids = [row[0] for row in conn.execute(HISTORY_USERS_SQL, params)]
            params["ids"] = ids
            conn.execute(LEDGER_SQL, params)
            conn.execute(ACCOUNTS_SQL, params)
        if events:
            conn.execute(EVENTS_SQL, params)
        # What autovacuum and a checkpoint would have done by the time a real
        # database had grown this far; not part of any measurement.
        conn.execute("vacuum analyze tally.ledger_entries, tally.stripe_events, tally.accounts")
        conn.execute("checkpoint")
    return time.perf_counter() - started


def history_size(url: str) -> tuple[int, int]:
    """(ledger entries, stored events): exact counts."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "select (select count(*) from tally.ledger_entries),"
            " (select count(*) from tally.stripe_events)"
        ).fetchone()
    return (row[0], row[1]) if row else (0, 0)
