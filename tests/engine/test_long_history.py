"""Issue 13: a renewal costs the same after years of renewals as after the first.

The benchmark's flatness figure grows history across many users; this grows
one subscriber's own: two years of monthly periods. The rows a renewal reads
from each tally table are counted in its own transaction
(`pg_stat_xact_user_tables`), so nothing else running meanwhile is counted.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from tests.engine.conftest import Engine, new_user
from tests.support import typed_events as te


def rows_read_by(database_url: str, event: dict[str, Any]) -> tuple[str, dict[str, int]]:
    """Apply one event as the sidecar does; its outcome and the rows it read, per table."""
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        # Statistics as autovacuum keeps them. A test database is small enough for
        # the planner to read whole tables or index ranges; in a large one it walks
        # an index: so it must here.
        conn.execute("analyze tally.paid_periods, tally.subscription_observations")
        conn.execute("set enable_seqscan = off")
        conn.execute("set enable_bitmapscan = off")
        conn.execute("set role service_role")
        result = conn.execute(
            "select public.apply_stripe_event(%s) as result", (Jsonb(event),)
        ).fetchone()["result"]
        conn.execute("reset role")
        rows = conn.execute(
            "select relname as name,"
            "       coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) as tuples"
            "  from pg_stat_xact_user_tables where schemaname = 'tally'"
        ).fetchall()
        conn.commit()
    return result["status"], {row["name"]: row["tuples"] for row in rows if row["tuples"]}


def test_a_renewal_reads_no_more_rows_after_two_years_of_renewals_than_after_two_months(
    database_url, engine: Engine
):
    subscription = te.Buyer.new(new_user(engine)).subscription("starter")
    engine.apply_all(
        subscription.checkout(),
        subscription.created(created=te.at(0, 1)),
        subscription.invoice_paid(period=0),
        subscription.invoice_paid(period=1),
    )
    status, early = rows_read_by(database_url, subscription.invoice_paid(period=2))
    assert status == "applied"
    engine.apply_all(*(subscription.invoice_paid(period=n) for n in range(3, 24)))
    status, late = rows_read_by(database_url, subscription.invoice_paid(period=24))
    assert status == "applied"
    assert "paid_periods" in early, "statistics were not counted"
    grown = {
        table: (early.get(table, 0), rows)
        for table, rows in late.items()
        if rows > early.get(table, 0)
    }
    assert grown == {}, "rows read per table (after 2 periods, after 24)"
