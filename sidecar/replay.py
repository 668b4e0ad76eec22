"""Events Stripe could not deliver, applied through the webhook's own path.

Stripe retries a failed webhook for three days, then gives up. The Events API
still lists such events (``delivery_success=false``, 30 days back); a replay
reads them, page by page, and hands each to the same normaliser and the same
RPC (``public.apply_stripe_event``) as a webhook. Event ids make it
idempotent: an event already applied answers ``duplicate``.

Two callers: ``tally ops replay`` (docs/operations.md) and the sidecar itself,
every ``REPLAY_INTERVAL`` seconds (0: never). Machines share one lease row in
the database (``public.try_replay_lease``): a lease is a window of
``REPLAY_INTERVAL`` seconds, and one machine replays per window. A run looks
back 72 hours (Stripe's retries), or further, to the start of the last run
that finished, when that is older (a sidecar that was down too), never past
the Events API's 30 days.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web

from sidecar import events
from sidecar.context import CONFIG, DATABASE, METRICS, STRIPE
from sidecar.db import JSON, Database, DatabaseError, DatabaseUnavailable
from sidecar.event_reading import read_event
from sidecar.observability import Stopwatch, logger
from sidecar.stripe_api import StripeApi, StripeUnavailable

# What apply_stripe_event answers once an outcome is durably recorded.
RECORDED = frozenset({"applied", "duplicate", "parked", "rejected", "ignored"})
HOUR = 3600
DEFAULT_LOOKBACK = 72 * HOUR  # Stripe retries a failed delivery for three days
MAX_LOOKBACK = 30 * 24 * HOUR  # the Events API lists the last 30 days
CLOCK_SLACK = 300  # the database's clock against Stripe's
FIRST_RUN_DELAY = 60.0  # seconds after start-up before the first periodic run

REPLAY_TASK = web.AppKey("replay_task", asyncio.Task[None])


@dataclass(frozen=True)
class Replayed:
    """What one event became."""

    event_id: str
    type: str
    created: int | None
    outcome: str  # an apply_stripe_event status, or 'unreadable' / 'refused'
    reason: str | None = None

    @property
    def is_recorded(self) -> bool:
        return self.outcome in RECORDED


def counts(results: Iterable[Replayed]) -> dict[str, int]:
    """How many events each outcome had."""
    return dict(Counter(result.outcome for result in results))


# -- one event -------------------------------------------------------------------------------


async def apply_raw_event(
    database: Database, stripe: StripeApi, raw: JSON, key_is_live: bool | None
) -> Replayed:
    """Apply one raw Stripe event as the webhook would.

    Raises StripeUnavailable and DatabaseUnavailable (nothing was recorded:
    the caller stops, a later run retries); a refusal of the database is
    this event's outcome, so the others still go through.
    """
    try:
        envelope = events.read_envelope(raw)
    except events.Unreadable as unreadable:
        return Replayed(
            str(raw.get("id")), str(raw.get("type")), None, "unreadable", unreadable.reason
        )
    if not envelope.is_handled:
        return Replayed(envelope.id, envelope.type, envelope.created, "ignored")
    typed = await read_event(envelope, stripe, key_is_live)
    try:
        result = await database.apply_stripe_event(typed)
    except DatabaseError as refused:
        reason = f"[{refused.sqlstate}] {refused.message}"
        return Replayed(envelope.id, envelope.type, envelope.created, "refused", reason)
    outcome = str(result.get("status"))
    return Replayed(envelope.id, envelope.type, envelope.created, outcome, result.get("reason"))


# -- a replay ----------------------------------------------------------------------------------


async def replay(
    database: Database, stripe: StripeApi, *, since: int, key_is_live: bool | None
) -> AsyncIterator[Replayed]:
    """Every undelivered event of a handled type created since ``since``, applied as listed.

    Results come as each event is applied, so a caller that meets an outage
    half-way still knows what was done.
    """
    listed = stripe.list_undelivered_events(sorted(events.HANDLED_TYPES), since)
    async for raw in listed:
        yield await apply_raw_event(database, stripe, raw, key_is_live)


def lookback_start(last_replay: JSON, now: float) -> int:
    """Where a periodic run starts: 72 hours back, or the last finished run's start if older."""
    start = now - DEFAULT_LOOKBACK
    last_success = last_replay.get("last_success_started_at")
    if isinstance(last_success, str):
        start = min(start, datetime.fromisoformat(last_success).timestamp() - CLOCK_SLACK)
    return int(max(start, now - MAX_LOOKBACK))


# -- the sidecar's periodic run ------------------------------------------------------------


async def periodic_replay(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: a task replaying every REPLAY_INTERVAL seconds; 0 starts none."""
    interval = app[CONFIG].replay_interval
    if interval > 0:
        app[REPLAY_TASK] = asyncio.create_task(_run_every(app, interval))
    yield
    if REPLAY_TASK in app:
        app[REPLAY_TASK].cancel()
        with suppress(asyncio.CancelledError):
            await app[REPLAY_TASK]


async def _run_every(app: web.Application, interval: int) -> None:
    holder = f"{socket.gethostname()}:{uuid.uuid4().hex[:12]}"
    await asyncio.sleep(min(float(interval), FIRST_RUN_DELAY))
    while True:
        await run_once(app, holder, interval)
        await asyncio.sleep(interval)


async def run_once(app: web.Application, holder: str, interval: int) -> str:
    """One periodic run if this machine gets the window's lease: 'done', 'skipped' or 'failed'."""
    watch = Stopwatch()
    try:
        result, fields = await _leased_replay(app, holder, interval)
    except (DatabaseUnavailable, DatabaseError, StripeUnavailable) as problem:
        result, fields = "failed", {"error": str(problem)}
    except Exception as bug:  # a bug must not end the runs to come; the log says what
        result, fields = "failed", {"error": type(bug).__name__}
    app[METRICS].replay_runs.labels(result=result).inc()
    if result != "skipped":
        log = logger().info if result == "done" else logger().warning
        log("stripe replay", extra={"result": result, "duration_ms": watch.ms, **fields})
    return result


async def _leased_replay(app: web.Application, holder: str, interval: int) -> tuple[str, JSON]:
    database = app[DATABASE]
    lease = {"holder": holder, "ttl_seconds": interval}
    if not await database.call("try_replay_lease", lease):
        return "skipped", {}
    since = lookback_start(await database.call("last_replay", {}), time.time())
    results = []
    async for result in replay(
        database, app[STRIPE], since=since, key_is_live=app[CONFIG].stripe_key_is_live
    ):
        app[METRICS].replayed_events.labels(outcome=result.outcome).inc()
        results.append(result)
    tally = counts(results)
    # A run that could not record every event does not count as finished:
    # the next one looks as far back again.
    if all(result.is_recorded for result in results):
        await database.call("finish_replay", {"holder": holder, "counts": tally})
    fields: dict[str, Any] = {"since": since, "listed": len(results), **tally}
    return "done", fields
