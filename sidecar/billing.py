"""POST /billing/checkout and /billing/portal for signed-in users.

Checkout writes the user id everywhere a later webhook may look for it
(client_reference_id, session metadata, subscription or payment-intent
metadata) and the bought price in ``metadata.price_id``, which the engine
needs for packs (Checkout webhooks carry no line items).

One subscription per user: plan checkouts of one user run one at a time
across machines (``leases``); each looks at the customer's open sessions,
answers the open one for the same plan again (a double click gets the same
URL), expires open subscription sessions for other plans (only the newest
plan asked for can be paid), and refuses (409) once the user has an active
subscription, as the database records it or as Stripe lists it for the
customer (a paid session whose webhooks have not arrived yet counts). A
pack reuses the open session of the same pack, so a double click buys
once; different packs may be bought side by side.

Idempotency keys are derived from the logical request: the user, the price,
the newest session Stripe lists for the customer (it changes whenever a
session is made) and a ten-minute window (so a failure Stripe recorded for a
key is not replayed to the user for long).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from aiohttp import web
from stripe.params.checkout import SessionCreateParams as CheckoutSessionParams

from sidecar.billing_guard import (
    Caller,
    Refusal,
    answers_refusals,
    billing_profile,
    caller,
    is_catalog_key,
    read_json_object,
)
from sidecar.config import Config
from sidecar.context import CONFIG, DATABASE, STRIPE
from sidecar.db import CatalogKind
from sidecar.leases import LeaseBusy, billing_lease
from sidecar.observability import logger
from sidecar.responses import ok
from sidecar.stripe_api import CheckoutSession

PURCHASE_SHAPE = '{"plan": "<key>"} or {"pack": "<key>"}'
# A session about to expire is not handed out again: the user needs time to pay.
REUSE_MARGIN_SECONDS = 600
KEY_WINDOW_SECONDS = 600


@dataclass(frozen=True)
class Purchase:
    kind: CatalogKind
    key: str

    @property
    def mode(self) -> str:
        return "subscription" if self.kind == "plan" else "payment"


async def read_purchase(request: web.Request) -> Purchase:
    """``{"plan": key}`` or ``{"pack": key}``, and nothing else."""
    document = await read_json_object(request, PURCHASE_SHAPE)
    if len(document) != 1:
        raise Refusal(400, 'body must name exactly one of "plan" or "pack"')
    ((kind, key),) = document.items()
    if not is_catalog_key(key):
        raise Refusal(400, 'body must name exactly one of "plan" or "pack" by its key')
    if kind == "plan":
        return Purchase("plan", key)
    if kind == "pack":
        return Purchase("pack", key)
    raise Refusal(400, 'body must name exactly one of "plan" or "pack" by its key')


@answers_refusals
async def checkout(request: web.Request) -> web.Response:
    user = await caller(request)
    purchase = await read_purchase(request)
    price_id = await _active_price(request, purchase)
    if purchase.kind == "plan":
        session = await _plan_checkout(request, user, purchase, price_id)
    else:
        session = await _checkout(request, user, purchase, price_id)
    logger().info(
        "checkout session answered",
        extra={"user_id": user.user_id, "kind": purchase.kind, "key": purchase.key},
    )
    return ok({"url": session.url})


async def _plan_checkout(
    request: web.Request, user: Caller, purchase: Purchase, price_id: str
) -> CheckoutSession:
    config = request.app[CONFIG]
    try:
        async with billing_lease(
            request.app[DATABASE],
            user.user_id,
            ttl_seconds=int(6 * config.stripe_timeout) + 5,
            wait_seconds=2 * config.stripe_timeout,
        ):
            # Read again under the lease: a subscription may have started meanwhile.
            current = await billing_profile(request, user.user_id)
            if current.profile.get("has_active_subscription") or (
                # Stripe may know of one whose webhooks are still on their way.
                current.customer_id
                and await request.app[STRIPE].has_live_subscription(current.customer_id)
            ):
                raise Refusal(
                    409, "already subscribed; change plans with /billing/plan or in the portal"
                )
            return await _checkout(request, current, purchase, price_id)
    except LeaseBusy:
        raise Refusal(409, "another checkout for this user is in progress; retry shortly") from None


async def _checkout(
    request: web.Request, user: Caller, purchase: Purchase, price_id: str
) -> CheckoutSession:
    stripe = request.app[STRIPE]
    customer_id = user.customer_id or await _new_customer(request, user.user_id)
    sessions = await stripe.customer_checkout_sessions(customer_id)
    ours = [s for s in sessions if _is_open_session_of(s, user.user_id, purchase.mode)]
    reusable = [s for s in ours if s.metadata.get("price_id") == price_id and _fresh(s)]
    # Only one plan (and one session per pack) can stay payable.
    stale = [s for s in ours if s.metadata.get("price_id") == price_id or purchase.kind == "plan"]
    for session in stale:
        if not reusable or session.id != reusable[0].id:
            await stripe.expire_checkout_session(session.id)
    if reusable:
        return reusable[0]
    params = checkout_params(request.app[CONFIG], purchase, price_id, user.user_id, customer_id)
    key = checkout_key(user.user_id, price_id, sessions[0].id if sessions else None)
    return await stripe.create_checkout_session(params, idempotency_key=key)


def _is_open_session_of(session: CheckoutSession, user_id: str, mode: str) -> bool:
    return (
        session.status == "open"
        and session.mode == mode
        and session.metadata.get("user_id") == user_id
    )


def _fresh(session: CheckoutSession) -> bool:
    return session.url is not None and session.expires_at > time.time() + REUSE_MARGIN_SECONDS


def checkout_key(user_id: str, price_id: str, newest_session_id: str | None) -> str:
    """The same for one logical request; new once a session was made or ten minutes passed."""
    window = int(time.time() // KEY_WINDOW_SECONDS)
    digest = hashlib.sha256(f"{price_id}|{newest_session_id}|{window}".encode()).hexdigest()
    return f"tally-checkout-{user_id}-{digest[:32]}"


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
    user = await caller(request)
    if not user.customer_id:
        raise Refusal(404, "no Stripe customer for this user; buy something first")
    config = request.app[CONFIG]
    url = await request.app[STRIPE].create_portal_session(
        user.customer_id, config.portal_return_url, config.stripe_portal_configuration
    )
    logger().info("portal session created", extra={"user_id": user.user_id})
    return ok({"url": url})
