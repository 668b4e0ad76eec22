"""POST /billing/checkout and /billing/portal for signed-in users.

The user id comes from the verified token only. Checkout writes the user id
everywhere a later webhook may look for it (client_reference_id, session
metadata, subscription or payment-intent metadata) and the bought price in
``metadata.price_id``, which the engine needs for packs (Checkout webhooks
carry no line items).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from stripe.params.checkout import SessionCreateParams as CheckoutSessionParams

from sidecar.auth import KeysUnavailable, TokenError
from sidecar.config import Config
from sidecar.context import CONFIG, DATABASE, STRIPE, TOKENS
from sidecar.db import CatalogKind, DatabaseError, DatabaseUnavailable
from sidecar.observability import logger
from sidecar.responses import error, ok
from sidecar.stripe_api import StripeUnavailable

MAX_REQUEST_BYTES = 4096
Handler = Callable[[web.Request], Awaitable[web.Response]]


class Refusal(Exception):
    """A deliberate non-200 answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Purchase:
    kind: CatalogKind
    key: str


def answers_refusals(handler: Handler) -> Handler:
    """Turn the failures every billing handler shares into their statuses."""

    async def wrapped(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except Refusal as refusal:
            return error(refusal.status, refusal.reason)
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


async def read_purchase(request: web.Request) -> Purchase:
    """``{"plan": key}`` or ``{"pack": key}``, and nothing else."""
    body = await request.read()  # already read, in time and within 1 MiB (sidecar.bodies)
    if len(body) > MAX_REQUEST_BYTES:
        raise Refusal(413, "request body too large")
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise Refusal(400, 'body must be JSON: {"plan": "<key>"} or {"pack": "<key>"}') from None
    if not isinstance(document, dict) or len(document) != 1:
        raise Refusal(400, 'body must name exactly one of "plan" or "pack"')
    ((kind, key),) = document.items()
    if kind not in ("plan", "pack") or not isinstance(key, str) or not 0 < len(key) <= 100:
        raise Refusal(400, 'body must name exactly one of "plan" or "pack" by its key')
    return Purchase(kind, key)


async def _user(request: web.Request) -> tuple[str, dict[str, Any]]:
    """The verified user id and their billing profile."""
    user_id = await request.app[TOKENS].user_id(request.headers.get("Authorization"))
    profile = await request.app[DATABASE].get_billing_profile(user_id)
    if not profile.get("user_exists"):
        raise TokenError("user does not exist")
    return user_id, profile


@answers_refusals
async def checkout(request: web.Request) -> web.Response:
    user_id, profile = await _user(request)
    purchase = await read_purchase(request)
    price_id = await _active_price(request, purchase)
    if purchase.kind == "plan" and profile.get("has_active_subscription"):
        raise Refusal(409, "already subscribed; change plans in the customer portal")
    customer_id = profile.get("customer_id") or await _new_customer(request, user_id)
    params = checkout_params(request.app[CONFIG], purchase, price_id, user_id, customer_id)
    session = await request.app[STRIPE].create_checkout_session(
        params, idempotency_key=f"tally-checkout-{user_id}-{uuid.uuid4()}"
    )
    url = session.url
    logger().info(
        "checkout session created",
        extra={"user_id": user_id, "kind": purchase.kind, "key": purchase.key},
    )
    return ok({"url": url})


async def _active_price(request: web.Request, purchase: Purchase) -> str:
    entry = await request.app[DATABASE].catalog_price(purchase.kind, purchase.key)
    if entry is None or not entry[1]:
        raise Refusal(400, f"unknown or inactive {purchase.kind}")
    return entry[0]


async def _new_customer(request: web.Request, user_id: str) -> str:
    """Create the Stripe customer and store the link before anyone pays."""
    customer_id = await request.app[STRIPE].create_customer(user_id)
    await request.app[DATABASE].link_stripe_customer(user_id, customer_id)
    return customer_id


def checkout_params(
    config: Config, purchase: Purchase, price_id: str, user_id: str, customer_id: str
) -> CheckoutSessionParams:
    """The Checkout Session: user id in every place a webhook may read it."""
    params: CheckoutSessionParams = {
        "mode": "subscription" if purchase.kind == "plan" else "payment",
        "customer": customer_id,
        "client_reference_id": user_id,
        "line_items": [{"price": price_id, "quantity": 1}],
        "metadata": {"user_id": user_id, "price_id": price_id},
        "success_url": config.success_url,
        "cancel_url": config.cancel_url,
    }
    if purchase.kind == "plan":
        params["subscription_data"] = {"metadata": {"user_id": user_id}}
    else:
        params["payment_intent_data"] = {"metadata": {"user_id": user_id}}
    return params


@answers_refusals
async def portal(request: web.Request) -> web.Response:
    user_id, profile = await _user(request)
    customer_id = profile.get("customer_id")
    if not customer_id:
        raise Refusal(404, "no Stripe customer for this user; buy something first")
    url = await request.app[STRIPE].create_portal_session(
        customer_id, request.app[CONFIG].portal_return_url
    )
    logger().info("portal session created", extra={"user_id": user_id})
    return ok({"url": url})
