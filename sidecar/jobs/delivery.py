"""Delivering balance events to the app's backend (APP_WEBHOOK_URL).

The engine writes each event to its outbox in the transaction of the change
(docs/app-integration.md lists them). Each round claims a batch of due
events with a lease (``public.claim_balance_events``: ``for update skip
locked``, so several machines never claim the same event while its lease
runs), POSTs each one signed the Standard Webhooks way, and records the
outcome (``public.finish_balance_event``): a 2xx answer is a delivery;
anything else, a timeout or a connection error is a failed attempt, which
the database schedules again with exponential backoff. An event whose
outcome could not be recorded (the database went away) is claimed again
when its lease ends: delivery is at least once, and the receiver drops
repeats by ``webhook-id``.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from standardwebhooks import Webhook

from sidecar.context import CONFIG, DATABASE, HTTP, METRICS
from sidecar.db import ClaimedBalanceEvent, Database
from sidecar.jobs.loop import Job
from sidecar.jobs.signing import sign_request, webhook_id
from sidecar.observability import Metrics, logger

BATCH_SIZE = 20
CONCURRENT_POSTS = 10
IDLE_SECONDS = 1.0
BACKLOG_SECONDS = 5.0
LEASE_MARGIN_SECONDS = 10


@dataclass(frozen=True)
class Delivery:
    database: Database
    http: aiohttp.ClientSession
    url: str
    webhook: Webhook
    post_timeout: float
    db_timeout: float
    metrics: Metrics

    @property
    def lease_seconds(self) -> int:
        """Twice the longest a batch can take, so no lease ends while its events are in flight."""
        rounds = math.ceil(BATCH_SIZE / CONCURRENT_POSTS)
        slowest = rounds * (self.post_timeout + self.db_timeout)
        return math.ceil(2 * slowest) + LEASE_MARGIN_SECONDS

    async def step(self) -> bool:
        """Deliver one batch; True when it was full (more may be due)."""
        batch = await self.database.claim_balance_events(BATCH_SIZE, self.lease_seconds)
        slots = asyncio.Semaphore(CONCURRENT_POSTS)
        outcomes = await asyncio.gather(
            *(self.deliver(event, slots) for event in batch), return_exceptions=True
        )
        # Every event got its attempt; a failure to record one fails the round.
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return len(batch) == BATCH_SIZE

    async def deliver(self, event: ClaimedBalanceEvent, slots: asyncio.Semaphore) -> None:
        async with slots:
            failure = await self.post(event)
        outcome = "delivered" if failure is None else "failed"
        self.metrics.balance_deliveries.labels(type=event.type, outcome=outcome).inc()
        if failure is not None:
            log_failed_attempt(event, failure)
        await self.database.finish_balance_event(event.outbox_id, failure is None, failure)

    async def post(self, event: ClaimedBalanceEvent) -> str | None:
        """None when the app's backend took the event, else why not (kept as last_error)."""
        request = sign_request(
            self.webhook, webhook_id(event.outbox_id), event.payload, time.time()
        )
        try:
            async with self.http.post(
                self.url,
                data=request.body,
                headers=request.headers,
                timeout=aiohttp.ClientTimeout(total=self.post_timeout),
                # A redirect is an answer other than 2xx: following it could leak the event.
                allow_redirects=False,
            ) as response:
                return None if 200 <= response.status < 300 else f"HTTP {response.status}"
        except TimeoutError:
            return f"no answer within {self.post_timeout:g} s"
        except aiohttp.ClientError as problem:
            return f"connection failed ({type(problem).__name__})"


def log_failed_attempt(event: ClaimedBalanceEvent, failure: str) -> None:
    """One line per failed attempt: ids, type and why; never the payload or the URL."""
    data = event.payload.get("data")
    logger().warning(
        "balance event delivery failed",
        extra={
            "webhook_id": webhook_id(event.outbox_id),
            "type": event.type,
            "user_id": data.get("user_id") if isinstance(data, dict) else None,
            "attempt": event.attempts + 1,
            "reason": failure,
        },
    )


def delivery_job(app: web.Application) -> Job:
    config = app[CONFIG]
    assert config.app_webhook_url and config.app_webhook_secret  # only installed when set
    delivery = Delivery(
        database=app[DATABASE],
        http=app[HTTP],
        url=config.app_webhook_url,
        webhook=Webhook(config.app_webhook_secret),
        post_timeout=config.app_webhook_timeout,
        db_timeout=config.db_timeout,
        metrics=app[METRICS],
    )
    return Job("balance_event_delivery", delivery.step, IDLE_SECONDS, app[METRICS])


def backlog_job(app: web.Application) -> Job:
    """Keeps the backlog gauges of /metrics current."""
    database, metrics = app[DATABASE], app[METRICS]

    async def step() -> bool:
        backlog = await database.balance_event_backlog()
        metrics.balance_pending.set(backlog.pending)
        metrics.balance_failing.set(backlog.failing)
        metrics.balance_oldest_seconds.set(backlog.oldest_seconds)
        return False

    return Job("balance_event_backlog", step, BACKLOG_SECONDS, metrics)
