"""POST /webhooks/stripe: verify, normalise, apply, answer.

Statuses tell Stripe what to do next: 400/413 for a body that is not a
signed Stripe event (nothing is stored), 200 once the outcome is durably
recorded (or the type is ignored), 503 when the database or Stripe (for the
rest of an invoice's lines) is away: Stripe retries later. A signed event
that cannot be read is never refused: it is recorded as rejected with its
reason (docs/operations.md says how to re-apply it after a fix), including
one the normaliser cannot take whole (sidecar/salvage.py: an integer of
thousands of digits, nesting deeper than 64 levels, an id over 1000
characters, numbers beyond what a Python document writes back exactly).
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from sidecar import events, salvage, signature
from sidecar.context import CONFIG, DATABASE, METRICS, STRIPE
from sidecar.db import DatabaseError, DatabaseUnavailable
from sidecar.event_reading import read_event
from sidecar.observability import Stopwatch, logger
from sidecar.responses import error, ok
from sidecar.stripe_api import StripeUnavailable

MAX_BODY_BYTES = 1024 * 1024


async def read_body(request: web.Request) -> bytes | None:
    """The raw body, or None when it exceeds MAX_BODY_BYTES."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        return None
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        return None


async def stripe_webhook(request: web.Request) -> web.Response:
    watch = Stopwatch()
    body = await read_body(request)
    if body is None:
        return _refused(413, "body larger than 1 MiB", watch)
    config = request.app[CONFIG]
    try:
        signature.verify(
            body,
            request.headers.get("Stripe-Signature"),
            config.webhook_secrets,
            now=time.time(),
            tolerance=signature.TOLERANCE_SECONDS,
        )
    except signature.SignatureError as problem:
        return _refused(400, problem.reason, watch)
    try:
        envelope = events.read_body(body)
    except events.Unreadable as problem:
        # Signed: a Stripe event the normaliser cannot take whole is kept, not refused.
        exact = salvage.signed_event(body)
        if exact is None:
            return _refused(400, problem.reason, watch)
        envelope = exact.envelope
    else:
        exact = salvage.exact_raw(body, envelope)
    if not envelope.is_handled:
        _record(request, envelope, "ignored", watch)
        return ok({"status": "ignored", "event_id": envelope.id})
    if exact is not None and exact.problem is not None:
        # Rejected whatever its object says: no call to Stripe for the rest of its lines.
        typed = events.normalise(envelope, key_is_live=config.stripe_key_is_live)
        return await _apply(request, envelope, salvage.rejected(typed, exact), watch)
    try:
        typed = await read_event(envelope, request.app[STRIPE], config.stripe_key_is_live)
    except StripeUnavailable as problem:
        _record(request, envelope, "stripe_unavailable", watch, detail=problem.reason)
        return error(503, "Stripe unavailable while reading the invoice's lines; retry later")
    if exact is not None:
        typed = salvage.rejected(typed, exact)
    return await _apply(request, envelope, typed, watch)


async def _apply(
    request: web.Request, envelope: events.Envelope, typed: dict[str, Any], watch: Stopwatch
) -> web.Response:
    metrics = request.app[METRICS]
    try:
        with metrics.apply_seconds.time():
            result = await request.app[DATABASE].apply_stripe_event(typed)
    except DatabaseUnavailable as problem:
        _record(request, envelope, "unavailable", watch, detail=str(problem))
        return error(503, "database unavailable; retry later")
    except DatabaseError as problem:
        # The database records whatever it cannot read; an error here is
        # one a later attempt may not meet (Stripe retries for three days).
        _record(request, envelope, "db_error", watch, sqlstate=problem.sqlstate)
        return error(503, "database error; retry later")
    outcome = str(result.get("status", "unknown"))
    _record(request, envelope, outcome, watch, reason=result.get("reason"))
    answer = {"status": outcome, "event_id": result.get("event_id", envelope.id)}
    if result.get("reason") is not None:
        answer["reason"] = result["reason"]
    return ok(answer)


def _record(
    request: web.Request,
    envelope: events.Envelope,
    outcome: str,
    watch: Stopwatch,
    **fields: object,
) -> None:
    request.app[METRICS].events.labels(type=envelope.type, outcome=outcome).inc()
    logger().info(
        "stripe event",
        extra={
            "event_id": envelope.id,
            "event_type": envelope.type,
            "outcome": outcome,
            "duration_ms": watch.ms,
            **{k: v for k, v in fields.items() if v is not None},
        },
    )


def _refused(
    status: int, reason: str, watch: Stopwatch, envelope: events.Envelope | None = None
) -> web.Response:
    logger().info(
        "stripe webhook refused",
        extra={
            "status": status,
            "reason": reason,
            "event_id": envelope.id if envelope else None,
            "event_type": envelope.type if envelope else None,
            "duration_ms": watch.ms,
        },
    )
    return error(status, reason)
