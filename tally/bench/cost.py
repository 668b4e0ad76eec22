"""Figures 6 and 7: what one apply_stripe_event costs the database, empty and grown.

At one sender, renewals go straight to apply_stripe_event with the statement
the sidecar sends; pg_stat_statements (track = top) gives the server's mean
execution time of that statement over exactly these calls. Without
pg_stat_statements the client-side mean latency stands in (it includes the
round trip, so it overstates the cost), and the report says so.

Then the history grows (history.py) and the same measurement runs again:
the ratio grown/empty says whether per-event cost stays flat.
"""

from __future__ import annotations

import asyncio
import statistics
from typing import Any

import asyncpg
import psycopg

from tally.bench import db, history
from tally.bench.context import Context
from tally.bench.renewals import Subscribers
from tally.bench.report import Check, Figure
from tally.bench.statements import ApplyStatements
from tally.bench.webhooks import DRAW_DOWN, renewal_checks


def cost_figure(ctx: Context, subscribers: Subscribers, key: str, title: str) -> Figure:
    """Renewals applied directly at one connection; the database's cost per call."""
    batch = subscribers.batch(ctx.sizes.cost_rounds)
    typed = batch.typed()
    db.spend_each(ctx.url, subscribers.users, DRAW_DOWN)
    statements = ctx.server.statements
    counters = ApplyStatements(ctx.url)
    run = asyncio.run(
        db.run_direct(
            ctx.url,
            1,
            typed,
            db.call_apply,
            warmup=ctx.warmup(1, len(typed)),
            meter=ctx.cpu_meter(),
            before_timing=counters.reset if statements else None,
        )
    )
    result = Figure.of_run(key, title, 1, run, renewal_checks(ctx, batch))
    if statements:
        calls, total_ms = counters.totals()
        result.db_ms = total_ms / calls if calls else None
        timed_calls = len(run.latencies)
        result.checks.append(
            Check(
                "pg_stat_statements saw every timed call",
                calls == timed_calls,
                f"{calls} of {timed_calls} calls",
            )
        )
    else:
        result.db_ms = statistics.fmean(run.latencies) * 1000
        result.notes.append(
            f"client-side mean latency, round trip included: {ctx.server.statements_note}"
        )
    return result


def grown_figure(ctx: Context, subscribers: Subscribers) -> Figure:
    """Grow the history to `history_rows` ledger rows and stored events; measure again."""
    rows = ctx.sizes.history_rows
    entries, events = history.history_size(ctx.url)
    seconds = history.grow(ctx.url, max(0, rows - entries), max(0, rows - events))
    entries, events = history.history_size(ctx.url)
    title = f"same, after growing to {entries:,} ledger rows, {events:,} events"
    result = cost_figure(ctx, subscribers, "apply_cost_grown", title)
    mismatches = db.ledger_mismatches(ctx.url)
    result.checks += [
        Check(
            "history reached its size",
            entries >= rows and events >= rows,
            f"{entries:,} ledger rows, {events:,} events",
        ),
        Check("every balance equals its ledger sum", mismatches == 0, f"{mismatches} mismatches"),
    ]
    result.notes.append(
        f"history grown in {seconds:.0f} s (set-based inserts, then vacuum analyze)"
    )
    return result


# --------------------------------------------------------------------------
# Diagnostics: where inside apply_stripe_event the database spends its time
# --------------------------------------------------------------------------


async def apply_tracking_nested(url: str, typed: list[str], warmup: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        # Settable by a superuser only, so before giving up the session's rights.
        await conn.execute("set pg_stat_statements.track = 'all'")
        await conn.execute("set role service_role")
        for event in typed[:warmup]:
            await conn.fetchval(db.APPLY_SQL, event)
        await ApplyStatements(url).reset()
        for event in typed[warmup:]:
            await conn.fetchval(db.APPLY_SQL, event)
    finally:
        await conn.close()


def nested_statements(ctx: Context, subscribers: Subscribers, limit: int = 8) -> dict[str, Any]:
    """One round of renewals with nested statements tracked: the costliest ones.

    Tracking nested statements slows every call, so this is a separate run
    whose times are only compared with each other.
    """
    if not ctx.server.statements:
        return {"skipped": ctx.server.statements_note}
    batch = subscribers.batch(1)
    typed = batch.typed()
    db.spend_each(ctx.url, subscribers.users, DRAW_DOWN)
    warmup = ctx.warmup(1, len(typed))
    asyncio.run(apply_tracking_nested(ctx.url, typed, warmup))
    with psycopg.connect(ctx.url, autocommit=True) as conn:
        rows = conn.execute(
            "select regexp_replace(query, '\\s+', ' ', 'g'), calls, total_exec_time"
            "  from pg_stat_statements s join pg_database d on d.oid = s.dbid"
            " where d.datname = current_database() and query <> %s"
            "   and query not like 'select pg_stat_statements_reset%%'"
            " order by total_exec_time desc limit %s",
            (db.APPLY_SQL, limit),
        ).fetchall()
    top_calls, top_ms = ApplyStatements(ctx.url).totals()
    events = len(batch) - warmup
    return {
        "events": events,
        "apply_ms_per_event_while_tracking": round(top_ms / max(1, top_calls), 4),
        "statements": [
            {
                "query": query[:160],
                "calls_per_event": round(calls / events, 2),
                "ms_per_event": round(total / events, 4),
            }
            for query, calls, total in rows
        ],
    }
