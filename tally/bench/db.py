"""Direct database access for the benchmark: connections, users, balances, checks.

Timed calls go over a fixed set of asyncpg connections, one per sender,
each acting as `service_role` as the app's backend and the sidecar do.
Set-up and checks use psycopg and are never timed.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import psycopg

from sidecar.db.postgres import APPLY_SQL
from tally.bench.drive import CpuMeter, Item, Run, drive
from tally.ops import balance_mismatches

OK = "ok"


class ConnectionBank:
    """`size` open connections lent one per call; no reset between calls.

    With as many connections as senders one is always free, so this adds no
    waiting and no round trip (a pool's reset on release would add one).
    """

    def __init__(self, connections: list[asyncpg.Connection]) -> None:
        self.free = list(connections)
        self.all = list(connections)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        conn = self.free.pop()
        try:
            yield conn
        finally:
            self.free.append(conn)


@asynccontextmanager
async def bank(
    url: str, size: int, role: str | None = "service_role"
) -> AsyncIterator[ConnectionBank]:
    connections = [await asyncpg.connect(url) for _ in range(size)]
    try:
        for conn in connections:
            if role:
                await conn.execute(f"set role {role}")
        yield ConnectionBank(connections)
    finally:
        for conn in connections:
            await conn.close()


async def call_sql(bank: ConnectionBank, sql: str, args: Sequence[Any]) -> str:
    """One statement; its outcome label (OK or the SQLSTATE)."""
    async with bank.connection() as conn:
        try:
            await conn.fetchval(sql, *args)
        except asyncpg.PostgresError as error:
            return str(getattr(error, "sqlstate", None) or type(error).__name__)
        except (OSError, asyncpg.InterfaceError) as error:
            return type(error).__name__
    return OK


def sql_caller(bank: ConnectionBank, sql: str) -> Callable[[Sequence[Any]], Awaitable[str]]:
    return lambda args: call_sql(bank, sql, args)


async def run_direct(
    url: str,
    senders: int,
    items: Sequence[Item],
    call: Callable[[ConnectionBank, Item], Awaitable[str]],
    *,
    warmup: int = 0,
    meter: CpuMeter | None = None,
    before_timing: Callable[[], Awaitable[None]] | None = None,
) -> Run:
    """Drive `call` over `senders` open connections (see drive.drive)."""
    async with bank(url, senders) as connections:
        return await drive(
            items,
            senders,
            lambda item: call(connections, item),
            warmup=warmup,
            meter=meter,
            before_timing=before_timing,
        )


# The statement the sidecar's Postgres transport sends, byte for byte, so that
# pg_stat_statements counts direct calls and the sidecar's under one entry.


async def call_apply(bank: ConnectionBank, typed: str) -> str:
    """apply_stripe_event on one typed event: OK when applied, else the outcome."""
    async with bank.connection() as conn:
        try:
            result = await conn.fetchval(APPLY_SQL, typed)
        except asyncpg.PostgresError as error:
            return str(getattr(error, "sqlstate", None) or type(error).__name__)
        except (OSError, asyncpg.InterfaceError) as error:
            return type(error).__name__
    status = json.loads(result).get("status") if result else None
    return OK if status == "applied" else f"outcome {status}"


# --------------------------------------------------------------------------
# Users, catalog and balances
# --------------------------------------------------------------------------


def create_users(url: str, count: int, label: str) -> list[uuid.UUID]:
    """Rows in auth.users, as Supabase Auth writes on sign-up (each gets an account)."""
    users = [uuid.uuid4() for _ in range(count)]
    with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany(
            "insert into auth.users (id, aud, role, email)"
            " values (%s, 'authenticated', 'authenticated', %s)",
            [(user, f"bench-{label}-{user}@example.test") for user in users],
        )
    return users


def starter_plan(url: str) -> tuple[str, int]:
    """The Starter plan's Stripe price id and monthly credits, from the catalog."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "select stripe_price_id, monthly_credits from public.plans where key = 'starter'"
        ).fetchone()
    if row is None:
        raise RuntimeError("the catalog has no 'starter' plan (is the seed applied?)")
    return row[0], row[1]


def fund(url: str, users: Sequence[uuid.UUID], credits: int) -> None:
    """Add-on credits by operator adjustment (a ledger entry each)."""
    with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("set role service_role")
        cur.executemany(
            "select public.adjust_credits(%s, %s, 'benchmark funding', %s)",
            [(user, credits, f"bench-fund-{uuid.uuid4()}") for user in users],
        )


def spend_each(url: str, users: Sequence[uuid.UUID | str], amount: int) -> None:
    """Spend from each user, so that a later reset of plan credits is visible."""
    with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("set role service_role")
        cur.executemany(
            "select public.spend_credits(%s, %s, %s, 'benchmark draw-down')",
            [(user, amount, f"bench-draw-{uuid.uuid4()}") for user in users],
        )


def balances(url: str, users: Sequence[uuid.UUID | str]) -> dict[str, tuple[int, int]]:
    """user id -> (plan credits, add-on credits)."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "select user_id::text, plan_credits, addon_credits from tally.accounts"
            " where user_id = any(%s::uuid[])",
            ([str(u) for u in users],),
        ).fetchall()
    return {row[0]: (row[1], row[2]) for row in rows}


def ledger_mismatches(url: str, users: Sequence[uuid.UUID | str] | None = None) -> int:
    """Accounts (of `users`, or all) whose balance is not their ledger sum, or negative."""
    with psycopg.connect(url, autocommit=True) as conn:
        if users is None:
            return len(balance_mismatches(conn))
        row = conn.execute(
            """
            select count(*)
              from tally.accounts a
              join unnest(%s::uuid[]) as u(user_id) using (user_id)
              left join lateral (
                select coalesce(sum(plan_delta), 0) as plan_sum,
                       coalesce(sum(addon_delta), 0) as addon_sum
                  from tally.ledger_entries l where l.user_id = a.user_id) l on true
             where a.plan_credits <> l.plan_sum or a.addon_credits <> l.addon_sum
                or a.plan_credits < 0 or a.addon_credits < 0
            """,
            ([str(u) for u in users],),
        ).fetchone()
    return row[0] if row else -1


def applied_events(url: str, event_ids: Sequence[str]) -> int:
    """How many of `event_ids` tally.stripe_events holds with outcome applied."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "select count(*) from tally.stripe_events"
            " where event_id = any(%s) and outcome = 'applied'",
            (list(event_ids),),
        ).fetchone()
    return row[0] if row else 0


def periods_entered(url: str, newest: dict[str, int]) -> int:
    """How many users' current plan period starts at their newest renewal."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "select count(*) from tally.accounts a"
            " join unnest(%s::uuid[], %s::bigint[]) as n(user_id, period_start) using (user_id)"
            " where a.period_start = to_timestamp(n.period_start)",
            (list(newest), list(newest.values())),
        ).fetchone()
    return row[0] if row else 0


async def apply_in_order(url: str, per_user: list[list[str]], senders: int) -> None:
    """Apply each user's typed events in order (users in parallel); untimed set-up."""
    async with bank(url, senders) as connections:

        async def apply_all(events: list[str]) -> str:
            for event in events:
                outcome = await call_apply(connections, event)
                if outcome != OK:
                    return outcome
            return OK

        run = await drive(per_user, senders, apply_all)
    if set(run.outcomes) != {OK}:
        raise RuntimeError(f"setting up subscriptions failed: {dict(run.outcomes)}")
