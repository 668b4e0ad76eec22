"""Figures 1 to 3: a stream of signed renewals, through each receiver.

- tally's sidecar (`python -m sidecar`, direct Postgres transport) at one
  sender and at `senders`;
- apply_stripe_event called directly with the typed events (the engine
  alone: what the sidecar adds is the difference);
- the floor, directly and behind a trivial aiohttp service;
- @supabase/stripe-sync-engine behind a small Node server.

The webhook receivers get the same signed bodies; every one is signed right
before its run. Each run is checked afterwards against the database.
"""

from __future__ import annotations

import asyncio
import os
import sys
from contextlib import ExitStack

from tally.bench import db, floor, sync_engine
from tally.bench.context import Context
from tally.bench.http import accepted, applied, deliver, server_process
from tally.bench.renewals import Batch, Subscribers
from tally.bench.report import Check, Figure, Skipped
from tally.bench.server import SYNC_ENGINE_DATABASE, create_database, drop_database
from tally.bench.statements import ApplyStatements
from tally.dev import SidecarSettings, running_sidecar
from tally.paths import ROOT
from tally.pg import free_port

# Spent from every subscriber before a batch, so that the reset is visible.
DRAW_DOWN = 7


def plural(senders: int) -> str:
    return "sender" if senders == 1 else "senders"


def renewal_checks(ctx: Context, batch: Batch) -> list[Check]:
    """Every event applied, every user reset to the plan, on its newest period."""
    users = list(batch.newest_period)
    stored = db.applied_events(ctx.url, batch.event_ids)
    credits = db.balances(ctx.url, users)
    off_plan = sum(1 for plan, _ in credits.values() if plan != ctx.monthly)
    entered = db.periods_entered(ctx.url, batch.newest_period)
    mismatches = db.ledger_mismatches(ctx.url, users)
    return [
        Check("events stored as applied", stored == len(batch), f"{stored} of {len(batch)}"),
        Check(
            "plan credits reset to the plan's monthly credits",
            off_plan == 0 and len(credits) == len(users),
            f"{off_plan} of {len(users)} users not at {ctx.monthly}",
        ),
        Check(
            "current period is the newest renewal",
            entered == len(users),
            f"{entered} of {len(users)} users",
        ),
        Check("balances equal ledger sums", mismatches == 0, f"{mismatches} mismatches"),
    ]


# --------------------------------------------------------------------------
# tally: through the sidecar, and the engine alone
# --------------------------------------------------------------------------


def sidecar_figures(ctx: Context, subscribers: Subscribers) -> tuple[list[Figure], Batch]:
    """The sidecar at one sender and at `senders`; returns the larger batch too."""
    statements = ApplyStatements(ctx.url)
    settings = SidecarSettings(
        ctx.url,
        [ctx.secret],
        port=free_port(),
        extra={"DB_POOL_SIZE": str(ctx.senders)},  # one connection per sender, as the floor
    )
    url = f"http://127.0.0.1:{settings.port}/webhooks/stripe"
    figures: list[Figure] = []
    batches: list[Batch] = []
    with (ctx.workdir / "sidecar.log").open("w") as log, running_sidecar(settings, log) as process:
        meter = ctx.cpu_meter(sidecar=process.pid)
        for senders, rounds in ((1, ctx.sizes.rounds_one), (ctx.senders, ctx.sizes.rounds_many)):
            batch = subscribers.batch(rounds)
            batches.append(batch)
            db.spend_each(ctx.url, subscribers.users, DRAW_DOWN)
            deliveries = batch.signed(ctx.secret)
            warmup = ctx.warmup(senders, len(batch))
            run = asyncio.run(
                deliver(
                    url,
                    deliveries,
                    senders,
                    applied,
                    warmup=warmup,
                    meter=meter,
                    before_timing=statements.reset if ctx.server.statements else None,
                )
            )
            key = "sidecar_1" if senders == 1 else "sidecar_many"
            title = f"tally sidecar, signed webhook to commit ({senders} {plural(senders)})"
            figure = Figure.of_run(key, title, senders, run, renewal_checks(ctx, batch))
            if ctx.server.statements:
                figure.db_ms = statements.apply_ms_per_event(len(run.latencies))
            figures.append(figure)
    return figures, batches[-1]


def engine_figure(ctx: Context, subscribers: Subscribers) -> Figure:
    """apply_stripe_event with the typed events, over `senders` direct connections."""
    batch = subscribers.batch(ctx.sizes.rounds_many)
    typed = batch.typed()  # normalising is the sidecar's work, not the engine's
    db.spend_each(ctx.url, subscribers.users, DRAW_DOWN)
    warmup = ctx.warmup(ctx.senders, len(batch))
    run = asyncio.run(
        db.run_direct(
            ctx.url, ctx.senders, typed, db.call_apply, warmup=warmup, meter=ctx.cpu_meter()
        )
    )
    title = f"apply_stripe_event direct, typed events ({ctx.senders} conns)"
    return Figure.of_run("engine_direct", title, ctx.senders, run, renewal_checks(ctx, batch))


# --------------------------------------------------------------------------
# The floor
# --------------------------------------------------------------------------


def floor_checks(ctx: Context, batch: Batch) -> list[Check]:
    events, ledger, off = floor.floor_counts(ctx.url, ctx.monthly)
    return [
        Check("events stored", events == len(batch), f"{events} of {len(batch)}"),
        Check("ledger rows written", ledger == len(batch), f"{ledger} of {len(batch)}"),
        Check("accounts set to the plan's credits", off == 0, f"{off} accounts off"),
    ]


def floor_direct_figure(ctx: Context, subscribers: Subscribers, batch: Batch) -> Figure:
    floor.create_floor(ctx.url, subscribers.users)
    items = [
        (event_id, user, body.decode(), ctx.monthly)
        for event_id, user, body in zip(batch.event_ids, batch.user_ids, batch.bodies, strict=True)
    ]

    async def call(connections: db.ConnectionBank, item: tuple[str, str, str, int]) -> str:
        return await db.call_sql(connections, floor.FLOOR_SQL, item)

    warmup = ctx.warmup(ctx.senders, len(batch))
    run = asyncio.run(
        db.run_direct(ctx.url, ctx.senders, items, call, warmup=warmup, meter=ctx.cpu_meter())
    )
    title = f"floor, one statement direct ({ctx.senders} conns)"
    return Figure.of_run("floor_direct", title, ctx.senders, run, floor_checks(ctx, batch))


def floor_http_figure(ctx: Context, subscribers: Subscribers, batch: Batch) -> Figure:
    floor.create_floor(ctx.url, subscribers.users)
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": ctx.url,
        "PORT": str(port),
        "DB_POOL_SIZE": str(ctx.senders),
        "STRIPE_WEBHOOK_SECRETS": ctx.secret,
        "FLOOR_BALANCE": str(ctx.monthly),
    }
    command = [sys.executable, "-m", "tally.bench.floor_server"]
    with server_process(command, env, port, ctx.workdir / "floor_server.log") as process:
        deliveries = batch.signed(ctx.secret)
        url = f"http://127.0.0.1:{port}/webhooks/stripe"
        meter = ctx.cpu_meter(floor_service=process.pid)
        warmup = ctx.warmup(ctx.senders, len(batch))
        run = asyncio.run(
            deliver(url, deliveries, ctx.senders, applied, warmup=warmup, meter=meter)
        )
    title = f"floor behind a trivial aiohttp service ({ctx.senders} senders)"
    checks = floor_checks(ctx, batch)
    floor.drop_floor(ctx.url)
    return Figure.of_run("floor_http", title, ctx.senders, run, checks)


# --------------------------------------------------------------------------
# @supabase/stripe-sync-engine
# --------------------------------------------------------------------------

SYNC_ENGINE_TITLE = f"{sync_engine.PACKAGE}@{sync_engine.VERSION} via Node"


def sync_engine_figure(ctx: Context, batch: Batch) -> Figure | Skipped:
    try:
        engine = sync_engine.install()
        database_url = create_database(ctx.server, SYNC_ENGINE_DATABASE)
    except (sync_engine.SyncEngineUnavailable, OSError) as problem:
        return Skipped("sync_engine", SYNC_ENGINE_TITLE, str(problem))
    try:
        return run_sync_engine(ctx, engine, database_url, batch)
    except sync_engine.SyncEngineUnavailable as problem:
        return Skipped("sync_engine", SYNC_ENGINE_TITLE, str(problem))
    finally:
        drop_database(ctx.server, SYNC_ENGINE_DATABASE)


def run_sync_engine(
    ctx: Context, engine: sync_engine.SyncEngine, database_url: str, batch: Batch
) -> Figure:
    sync_engine.migrate(engine, database_url)
    port = free_port()
    env = engine.environment(
        database_url,
        PORT=str(port),
        DB_POOL_SIZE=str(ctx.senders),
        STRIPE_WEBHOOK_SECRET=ctx.secret,
    )
    log = ctx.workdir / "sync_engine.log"
    with ExitStack() as stack:
        process = stack.enter_context(server_process(engine.command("serve"), env, port, log))
        deliveries = batch.signed(ctx.secret)
        url = f"http://127.0.0.1:{port}/webhooks/stripe"
        meter = ctx.cpu_meter(node=process.pid)
        warmup = ctx.warmup(ctx.senders, len(batch))
        run = asyncio.run(
            deliver(url, deliveries, ctx.senders, accepted, warmup=warmup, meter=meter)
        )
    invoices = [event["data"]["object"]["id"] for event in batch.events]
    stored = sync_engine.stored_invoices(database_url, invoices)
    checks = [Check("invoices stored", stored == len(invoices), f"{stored} of {len(invoices)}")]
    title = f"{SYNC_ENGINE_TITLE} ({ctx.senders} senders)"
    result = Figure.of_run("sync_engine", title, ctx.senders, run, checks)
    result.notes.append(f"stripe (node) {engine.stripe_version}; it stores, grants nothing")
    return result
