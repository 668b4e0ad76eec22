"""Figures 4 and 5: spending, on many accounts and on one hot account.

- `spend_credits` (and `reserve_credits` where the database has it) on many
  accounts, each call on a random account, beside a one-statement floor
  (`update ... set balance = balance - x where user_id = $1 and balance >= x`
  on a plain table holding the same accounts and balances), over the same
  connections and the same sequence of accounts;
- one hot account with `hot_senders` concurrent callers, funded for about
  nine calls in ten, so the last ones must be refused with PT402.

Every call is made as service_role. Afterwards each account must hold its
starting balance less exactly what the successful calls took.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import Sequence

import psycopg

from tally.bench import db, floor
from tally.bench.context import Context
from tally.bench.drive import Run
from tally.bench.report import Check, Figure, Skipped

SPEND_SQL = "select public.spend_credits($1::text::uuid, $2, $3)"
RESERVE_SQL = "select public.reserve_credits($1::text::uuid, $2, $3)"
RESERVE_SIGNATURE = "public.reserve_credits(uuid,integer,text,integer,text)"
INSUFFICIENT = "PT402"
AMOUNT = 1


def totals(url: str, users: Sequence[str]) -> dict[str, int]:
    return {user: plan + addon for user, (plan, addon) in db.balances(url, users).items()}


def spend_calls(ctx: Context, sql: str, users: list[str], senders: int, taken: Counter[str]) -> Run:
    """One call per entry of `users`; `taken` counts successes per user (warm-up too)."""
    run_id = uuid.uuid4().hex[:8]
    work = [(user, f"bench-{run_id}-{n}") for n, user in enumerate(users)]

    async def call(connections: db.ConnectionBank, item: tuple[str, str]) -> str:
        outcome = await db.call_sql(connections, sql, (item[0], AMOUNT, item[1]))
        if outcome == db.OK:
            taken[item[0]] += AMOUNT
        return outcome

    warmup = ctx.warmup(senders, len(work))
    return asyncio.run(
        db.run_direct(ctx.url, senders, work, call, warmup=warmup, meter=ctx.cpu_meter())
    )


def floor_calls(ctx: Context, users: list[str], senders: int, taken: Counter[str]) -> Run:
    async def call(connections: db.ConnectionBank, user: str) -> str:
        async with connections.connection() as conn:
            left = await conn.fetchval(floor.SPEND_FLOOR_SQL, user, AMOUNT)
        if left is None:
            return INSUFFICIENT  # no row: the balance was short, as PT402
        taken[user] += AMOUNT
        return db.OK

    warmup = ctx.warmup(senders, len(users))
    return asyncio.run(
        db.run_direct(ctx.url, senders, users, call, warmup=warmup, meter=ctx.cpu_meter())
    )


def kept_accounts(start: dict[str, int], end: dict[str, int], taken: Counter[str]) -> Check:
    """Each account ends at its start less what the successful calls took."""
    wrong = [user for user, credits in start.items() if end.get(user) != credits - taken[user]]
    return Check(
        "no lost update: balance = start - successful spends",
        not wrong,
        f"{len(wrong)} of {len(start)} accounts off",
    )


def ledger_check(ctx: Context, users: Sequence[str]) -> Check:
    mismatches = db.ledger_mismatches(ctx.url, users)
    return Check("balances equal ledger sums", mismatches == 0, f"{mismatches} mismatches")


def many_accounts(ctx: Context) -> list[Figure | Skipped]:
    """spend_credits, the floor, and reserve_credits when it exists, on many accounts."""
    count = ctx.sizes.spends
    users = [str(u) for u in db.create_users(ctx.url, ctx.sizes.spend_accounts, "spend")]
    db.fund(ctx.url, users, 3 * count // len(users) + 10)  # never short: a pure speed run
    sequence = [random.choice(users) for _ in range(count)]

    start, taken = totals(ctx.url, users), Counter[str]()
    run = spend_calls(ctx, SPEND_SQL, sequence, ctx.senders, taken)
    spend = Figure.of_run(
        "spend_many",
        f"spend_credits, {len(users):,} accounts ({ctx.senders} conns)",
        ctx.senders,
        run,
        [kept_accounts(start, totals(ctx.url, users), taken), ledger_check(ctx, users)],
    )

    floor.create_spend_floor(ctx.url, start)
    floor_taken = Counter[str]()
    run = floor_calls(ctx, sequence, ctx.senders, floor_taken)
    floor_figure = Figure.of_run(
        "spend_floor",
        f"floor: one-statement update, same accounts ({ctx.senders} conns)",
        ctx.senders,
        run,
        [kept_accounts(start, floor.spend_floor_balances(ctx.url), floor_taken)],
    )
    return [spend, floor_figure, reserve(ctx, users, sequence)]


def has_reserve(url: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "select to_regprocedure(%s) is not null", (RESERVE_SIGNATURE,)
        ).fetchone()
    return bool(row and row[0])


def reserve(ctx: Context, users: list[str], sequence: list[str]) -> Figure | Skipped:
    """reserve_credits on the same accounts, when another change has added it."""
    title = f"reserve_credits, {len(users):,} accounts ({ctx.senders} conns)"
    if not has_reserve(ctx.url):
        return Skipped("reserve_many", title, f"{RESERVE_SIGNATURE} is not in this database")
    taken = Counter[str]()
    run = spend_calls(ctx, RESERVE_SQL, sequence, ctx.senders, taken)
    figure = Figure.of_run("reserve_many", title, ctx.senders, run, [ledger_check(ctx, users)])
    figure.notes.append("checked: no error, balances equal ledger sums (holds not inspected)")
    return figure


def hot_account(ctx: Context) -> Figure:
    """`hot_senders` callers on one account funded for about nine calls in ten."""
    count = ctx.sizes.hot_spends
    (user,) = [str(u) for u in db.create_users(ctx.url, 1, "hot")]
    signup = totals(ctx.url, [user])[user]
    db.fund(ctx.url, [user], max(1, count * 9 // 10 - signup))
    start, taken = totals(ctx.url, [user]), Counter[str]()
    run = spend_calls(ctx, SPEND_SQL, [user] * count, ctx.hot_senders, taken)
    end = totals(ctx.url, [user])
    successes = taken[user] // AMOUNT  # warm-up calls included: they spent too
    checks = [
        kept_accounts(start, end, taken),
        Check(
            "every call that could succeed did (refused only when empty)",
            successes == min(count, start[user]) and end[user] == max(0, start[user] - count),
            f"{successes} spent of {start[user]} credits, {end[user]} left",
        ),
        ledger_check(ctx, [user]),
    ]
    return Figure.of_run(
        "spend_hot",
        f"spend_credits, one hot account ({ctx.hot_senders} conns)",
        ctx.hot_senders,
        run,
        checks,
        expected=frozenset({INSUFFICIENT}),
    )
