"""Housekeeping the engine leaves to the sidecar (it has no scheduler of its own).

- Expired holds: a hold stops counting at its expiry by itself; marking it
  ``expired`` (``public.expire_holds``) only tidies what is listed as held.
- Ready Stripe events: when a link or a payment wakes more parked events
  than one transaction applies, the rest wait, ready, for
  ``public.apply_ready_stripe_events``, called until it returns 0.

Both functions lock with ``skip locked``: every machine may run them.
"""

from __future__ import annotations

from aiohttp import web

from sidecar.context import DATABASE, METRICS
from sidecar.jobs.loop import Job

HOLD_EXPIRY_SECONDS = 60.0
HOLDS_PER_ROUND = 500
READY_EVENTS_SECONDS = 5.0
READY_EVENTS_PER_ROUND = 100


def hold_expiry_job(app: web.Application) -> Job:
    database, metrics = app[DATABASE], app[METRICS]

    async def step() -> bool:
        expired = await database.expire_holds(HOLDS_PER_ROUND)
        metrics.housekeeping.labels(job="expire_holds").inc(expired)
        return expired == HOLDS_PER_ROUND

    return Job("expire_holds", step, HOLD_EXPIRY_SECONDS, metrics)


def ready_events_job(app: web.Application) -> Job:
    database, metrics = app[DATABASE], app[METRICS]

    async def step() -> bool:
        applied = await database.apply_ready_stripe_events(READY_EVENTS_PER_ROUND)
        metrics.housekeeping.labels(job="apply_ready_stripe_events").inc(applied)
        return applied > 0

    return Job("apply_ready_stripe_events", step, READY_EVENTS_SECONDS, metrics)
