"""What every /billing/* handler shares: the caller, the rate limit, the body, the statuses.

The user id comes from the verified token only. Every call of a signed-in
user counts against their rate limit (``BILLING_RATE_LIMIT`` calls per
``BILLING_RATE_WINDOW`` seconds), counted in the database so that all
machines share it. Failures every handler can meet become their statuses in
one place (``answers_refusals``).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from sidecar.auth import KeysUnavailable, TokenError
from sidecar.context import CONFIG, DATABASE, TOKENS
from sidecar.db import DatabaseError, DatabaseUnavailable
from sidecar.observability import logger
from sidecar.responses import error
from sidecar.stripe_api import StripeUnavailable

MAX_REQUEST_BYTES = 4096
Handler = Callable[[web.Request], Awaitable[web.Response]]


class Refusal(Exception):
    """A deliberate non-200 answer."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}


@dataclass(frozen=True)
class Caller:
    user_id: str
    profile: dict[str, Any] = field(repr=False)

    @property
    def customer_id(self) -> str | None:
        customer = self.profile.get("customer_id")
        return customer if isinstance(customer, str) else None

    @property
    def active_subscription(self) -> dict[str, Any] | None:
        subscription = self.profile.get("active_subscription")
        return subscription if isinstance(subscription, dict) else None


def answers_refusals(handler: Handler) -> Handler:
    """Turn the failures every billing handler shares into their statuses."""

    async def wrapped(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except Refusal as refusal:
            response = error(refusal.status, refusal.reason)
            response.headers.update(refusal.headers)
            return response
        except TokenError as problem:
            return error(401, problem.reason)
        except KeysUnavailable:
            return error(503, "cannot verify tokens right now; retry later")
        except StripeUnavailable as problem:
            return error(502, problem.reason)
        except DatabaseUnavailable:
            return error(503, "database unavailable; retry later")
        except DatabaseError as problem:
            logger().warning(
                "database refused a billing call", extra={"sqlstate": problem.sqlstate}
            )
            return error(503, "database error; retry later")

    return wrapped


async def caller(request: web.Request) -> Caller:
    """The verified user, within their rate limit, with their billing profile."""
    user_id = await request.app[TOKENS].user_id(request.headers.get("Authorization"))
    await within_rate_limit(request, user_id)
    return await billing_profile(request, user_id)


async def billing_profile(request: web.Request, user_id: str) -> Caller:
    profile = await request.app[DATABASE].get_billing_profile(user_id)
    if not profile.get("user_exists"):
        raise TokenError("user does not exist")
    return Caller(user_id, profile)


async def within_rate_limit(request: web.Request, user_id: str) -> None:
    config = request.app[CONFIG]
    limit = await request.app[DATABASE].hit_billing_rate_limit(
        user_id, config.billing_rate_limit, config.billing_rate_window
    )
    if not limit.allowed:
        logger().info("billing rate limit reached", extra={"user_id": user_id})
        raise Refusal(
            429,
            f"too many billing requests: at most {config.billing_rate_limit} every"
            f" {config.billing_rate_window} s; retry in {limit.retry_after} s",
            {"Retry-After": str(limit.retry_after)},
        )


async def read_json_object(request: web.Request, shape: str) -> dict[str, Any]:
    """The body as one JSON object, or a 400 naming the expected ``shape``."""
    body = await request.read()  # already read, in time and within 1 MiB (sidecar.bodies)
    if len(body) > MAX_REQUEST_BYTES:
        raise Refusal(413, "request body too large")
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise Refusal(400, f"body must be JSON: {shape}") from None
    if not isinstance(document, dict):
        raise Refusal(400, f"body must be JSON: {shape}")
    return document


def is_catalog_key(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 100
