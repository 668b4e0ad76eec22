"""POST /billing/plan ``{"plan": "<key>"}``: change the plan of the user's active subscription.

- Upgrade (a plan with more monthly credits, or any plan when the current
  price is not in the catalog): at once, billed at once
  (``proration_behavior=always_invoice``, ``payment_behavior=pending_if_incomplete``:
  nothing changes unless that invoice is paid). A scheduled downgrade is
  dropped first. Answer ``{"status": "upgraded", "plan"}``.
- Downgrade (fewer or as many credits): from the end of the current period,
  with a subscription schedule. Answer ``{"status": "scheduled", "plan",
  "effective_at"}`` (Unix seconds).
- The plan the subscription already bills: 200 ``{"status": "unchanged"}``,
  and a downgrade scheduled earlier is dropped (asking for the current plan
  means keeping it). A repeated request is therefore harmless.

409 without an active subscription (or one not in good standing), 400 for an
unknown or inactive plan, 401 without a valid token, 429 past the rate limit,
502 when Stripe fails. The subscription's price, item and period are read
from Stripe, not from the database, which may lag behind webhooks. The
plan is the item whose price is in the catalog: other items (a metered
price, say) are left as they are, and a scheduled downgrade keeps them in
both of its phases.
"""

from __future__ import annotations

from aiohttp import web

from sidecar.billing_guard import (
    Caller,
    Refusal,
    answers_refusals,
    caller,
    is_catalog_key,
    read_json_object,
)
from sidecar.context import CONFIG, DATABASE, STRIPE
from sidecar.db import Plan
from sidecar.leases import LeaseBusy, billing_lease
from sidecar.observability import logger
from sidecar.responses import ok
from sidecar.stripe_api import StripeApi, SubscriptionState

CHANGEABLE_STATUSES = ("active", "trialing")


@answers_refusals
async def change_plan(request: web.Request) -> web.Response:
    user = await caller(request)
    target = await _target_plan(request)
    subscription = _active_subscription(user)
    config = request.app[CONFIG]
    try:
        async with billing_lease(
            request.app[DATABASE],
            user.user_id,
            ttl_seconds=int(6 * config.stripe_timeout) + 5,
            wait_seconds=2 * config.stripe_timeout,
        ):
            answer = await _change(request, subscription, target)
    except LeaseBusy:
        raise Refusal(409, "another billing change for this user is in progress") from None
    logger().info(
        "plan change",
        extra={"user_id": user.user_id, "plan": target.key, "status": answer["status"]},
    )
    return ok(answer)


async def _target_plan(request: web.Request) -> Plan:
    document = await read_json_object(request, '{"plan": "<key>"}')
    key = document.get("plan")
    if set(document) != {"plan"} or not is_catalog_key(key):
        raise Refusal(400, 'body must be {"plan": "<key>"}')
    plans = {plan.key: plan for plan in await request.app[DATABASE].plans()}
    if key not in plans or not plans[key].active:
        raise Refusal(400, "unknown or inactive plan")
    return plans[key]


def _active_subscription(user: Caller) -> str:
    subscription = user.active_subscription
    if subscription is None:
        raise Refusal(409, "no active subscription; subscribe with /billing/checkout first")
    if subscription.get("status") not in CHANGEABLE_STATUSES:
        raise Refusal(
            409, f"the subscription is {subscription.get('status')}; settle it in the portal first"
        )
    return str(subscription["id"])


async def _change(request: web.Request, subscription_id: str, target: Plan) -> dict[str, object]:
    stripe = request.app[STRIPE]
    plans = {plan.price_id: plan for plan in await request.app[DATABASE].plans()}
    sub = await stripe.subscription(subscription_id, plan_prices=plans)
    if sub.status not in CHANGEABLE_STATUSES:
        raise Refusal(409, f"the subscription is {sub.status}; settle it in the portal first")
    if sub.price_id == target.price_id:
        await _drop_scheduled_change(stripe, sub)
        return {"status": "unchanged", "plan": target.key}
    current = plans.get(sub.price_id)
    key = f"tally-plan-{sub.id}-{target.price_id}-{sub.current_period_end}"
    if current is None or target.monthly_credits > current.monthly_credits:
        await _drop_scheduled_change(stripe, sub)
        await stripe.change_price_now(sub, target.price_id, idempotency_key=key)
        return {"status": "upgraded", "plan": target.key}
    await stripe.schedule_price_change(sub, target.price_id, idempotency_key=key)
    return {"status": "scheduled", "plan": target.key, "effective_at": sub.current_period_end}


async def _drop_scheduled_change(stripe: StripeApi, sub: SubscriptionState) -> None:
    if sub.schedule_id is not None:
        await stripe.release_schedule(sub.schedule_id)
