"""Issue 2, Speed: no query on the apply or spend path scans a table.

With `enable_seqscan = off` the planner still falls back to a sequential
scan where no index can serve a query, so any sequential scan counted on a
tally table during one user's calls means a missing index. And with a few
hundred other users' history in the tables, the tuples read per call stay
far below what scanning any table would read.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.engine.conftest import Engine, new_user
from tests.support import typed_events as te

OTHER_USERS = 40
STORY_EVENTS = 9  # each other user's history, so every table holds hundreds of rows


def story(buyer: te.Buyer) -> list[dict[str, Any]]:
    sub = buyer.subscription("starter")
    pack = buyer.pack_purchase("pack_2000")
    return [
        sub.checkout(),
        sub.created(created=te.at(0, 1)),
        sub.invoice_paid(period=0),
        pack.completed(created=te.at(0, 100)),
        pack.refunded(amount_refunded=300, created=te.at(0, 200)),
        pack.dispute(dispute_id=te.new_id("dp"), created=te.at(0, 300)),
        sub.invoice_paid(period=1),
        *sub.upgrade(period=1, plan="pro", at_time=te.at(1, 600)),
    ]


@pytest.fixture
def busy_engine(engine: Engine) -> Engine:
    for _ in range(OTHER_USERS):
        buyer = te.Buyer.new(new_user(engine))
        engine.apply_all(*story(buyer))
        engine.spend(buyer.user_id, 10)
    return engine


def calls_of_one_user(database_url: str, engine: Engine) -> tuple[int, dict]:
    """Apply one user's story and spend, on a connection that forbids seq scans.

    All in one transaction, whose own table reads (pg_stat_xact_user_tables)
    are returned: what other backends do meanwhile (a test's leftover
    sidecar, autovacuum) is not counted.
    """
    buyer = te.Buyer.new(new_user(engine))
    events = story(buyer)
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        conn.execute("set role service_role")
        conn.execute("set enable_seqscan = off")
        for event in events:
            conn.execute("select public.apply_stripe_event(%s)", (psycopg.types.json.Jsonb(event),))
        for n in range(5):
            key = f"scan-{uuid.uuid4()}-{n}"
            conn.execute("select public.spend_credits(%s::uuid, 10, %s)", (buyer.user_id, key))
        conn.execute("select public.reverse_spend(%s::uuid, %s)", (buyer.user_id, key))
        conn.execute(
            "select public.adjust_credits(%s::uuid, 5, 'scan check', %s)",
            (buyer.user_id, f"scan-{uuid.uuid4()}"),
        )
        conn.execute("reset role")
        rows = conn.execute(
            "select schemaname || '.' || relname as name, coalesce(seq_scan, 0) as seq_scan,"
            " coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) as tuples"
            " from pg_stat_xact_user_tables where schemaname in ('tally', 'public')"
        ).fetchall()
        conn.commit()
    reads = {row["name"]: (row["seq_scan"], row["tuples"]) for row in rows}
    return len(events) + 7, reads


def test_one_users_calls_scan_no_table_sequentially(database_url, busy_engine):
    _, delta = calls_of_one_user(database_url, busy_engine)
    assert any(tuples for _, tuples in delta.values()), "statistics were not flushed"
    scanned = {name: scans for name, (scans, _) in delta.items() if scans}
    # tally.settings is one row by construction (a checked singleton).
    scanned.pop("tally.settings", None)
    assert scanned == {}


def test_one_users_calls_read_few_tuples_whatever_the_history(database_url, busy_engine):
    calls, delta = calls_of_one_user(database_url, busy_engine)
    history = OTHER_USERS * STORY_EVENTS  # rows in stripe_events alone
    per_call = {name: tuples / calls for name, (_, tuples) in delta.items() if tuples}
    assert max(per_call.values()) < history / 10, per_call
