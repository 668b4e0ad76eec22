"""`tally stripe-setup`: make the Stripe account match what tally expects, idempotently.

Two objects, each found again on the next run (by its ``metadata[tally]``
tag, or the endpoint by its URL) and updated rather than duplicated:

- the Customer Portal configuration: plan changes among the catalog's active
  plans (``public.plans``), upgrades invoiced at once, downgrades at the end
  of the period, cancellation at the end of the period without proration,
  invoice history, customer and payment method updates;
- the webhook endpoint for ``--webhook-url`` with exactly the handled event
  types and the pinned API version. Its signing secret is printed only when
  the endpoint is created: it is the one time Stripe returns it.

Needs STRIPE_SECRET_KEY and the database (DATABASE_URL or --database-url) for
the catalog; STRIPE_API_BASE points at a Stripe stand-in (development only).
Prints what it did to each object: created, updated or unchanged.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
import stripe

from sidecar.stripe_api import STRIPE_API_VERSION

TAG = "tally"
PORTAL_TAG = "portal"
WEBHOOK_TAG = "webhook"
MAX_PORTAL_PRODUCTS = 10  # Stripe's limit for subscription_update.products
# The event types the sidecar handles (docs/event-flow.md), and no other.
WEBHOOK_EVENTS = (
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "invoice.paid",
    "invoice.payment_failed",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "charge.refunded",
    "charge.dispute.created",
    "charge.dispute.closed",
    "invoice_payment.paid",
)
JSON = dict[str, Any]


class SetupError(RuntimeError):
    """Something the operator must fix; the message says what."""


@dataclass(frozen=True)
class Outcome:
    what: str
    object_id: str
    action: str  # created | updated | unchanged
    notes: tuple[str, ...] = ()

    def lines(self) -> list[str]:
        return [f"{self.what} {self.object_id}: {self.action}", *(f"  {n}" for n in self.notes)]


# -- the catalog -------------------------------------------------------------------------------


def active_plan_prices(database_url: str) -> list[str]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "select stripe_price_id from public.plans where active order by monthly_credits, key"
        ).fetchall()
    if not rows:
        raise SetupError("public.plans has no active plan: insert the catalog first")
    return [row[0] for row in rows]


def products_of(client: stripe.StripeClient, price_ids: Sequence[str]) -> list[JSON]:
    """``[{"product", "prices"}]`` for the portal, one entry per product, in a stable order."""
    by_product: dict[str, list[str]] = {}
    for price_id in price_ids:
        price = client.v1.prices.retrieve(price_id)
        product = price.product if isinstance(price.product, str) else price.product.id
        by_product.setdefault(product, []).append(price_id)
    if len(by_product) > MAX_PORTAL_PRODUCTS:
        raise SetupError(f"the portal allows at most {MAX_PORTAL_PRODUCTS} products")
    return [{"product": p, "prices": sorted(prices)} for p, prices in sorted(by_product.items())]


# -- the Customer Portal ---------------------------------------------------------------------


def portal_features(products: list[JSON]) -> JSON:
    return {
        "subscription_update": {
            "enabled": True,
            "default_allowed_updates": ["price"],
            "products": products,
            # Upgrades are billed at once; downgrades wait for the period's end.
            "proration_behavior": "always_invoice",
            "schedule_at_period_end": {"conditions": [{"type": "decreasing_item_amount"}]},
        },
        "subscription_cancel": {
            "enabled": True,
            "mode": "at_period_end",
            "proration_behavior": "none",
        },
        "invoice_history": {"enabled": True},
        "customer_update": {"enabled": True, "allowed_updates": ["address", "email", "name"]},
        "payment_method_update": {"enabled": True},
    }


def portal_state(configuration: JSON) -> JSON:
    """The parts of a configuration this command manages, in a comparable form."""
    features = configuration["features"]
    update = features["subscription_update"]
    cancel = features["subscription_cancel"]
    return {
        "subscription_update": {
            "enabled": update["enabled"],
            "default_allowed_updates": sorted(update.get("default_allowed_updates") or []),
            "products": sorted(
                ({"product": p["product"], "prices": sorted(p["prices"])}
                 for p in update.get("products") or []),
                key=lambda p: p["product"],
            ),
            "proration_behavior": update.get("proration_behavior"),
            "schedule_at_period_end": {
                "conditions": [
                    {"type": c["type"]}
                    for c in (update.get("schedule_at_period_end") or {}).get("conditions", [])
                ]
            },
        },
        "subscription_cancel": {
            "enabled": cancel["enabled"],
            "mode": cancel.get("mode"),
            "proration_behavior": cancel.get("proration_behavior"),
        },
        "invoice_history": {"enabled": features["invoice_history"]["enabled"]},
        "customer_update": {
            "enabled": features["customer_update"]["enabled"],
            "allowed_updates": sorted(features["customer_update"].get("allowed_updates") or []),
        },
        "payment_method_update": {"enabled": features["payment_method_update"]["enabled"]},
    }  # fmt: skip


def tagged(obj: JSON, tag: str) -> bool:
    return (obj.get("metadata") or {}).get(TAG) == tag


def ensure_portal(client: stripe.StripeClient, products: list[JSON]) -> Outcome:
    features = portal_features(products)
    existing = [
        c.to_dict()
        for c in client.v1.billing_portal.configurations.list({"limit": 100}).auto_paging_iter()
    ]
    mine = [c for c in existing if tagged(c, PORTAL_TAG) and c.get("active")]
    hint = "set STRIPE_PORTAL_CONFIGURATION={} so /billing/portal uses it"
    if not mine:
        created = client.v1.billing_portal.configurations.create(
            {"features": features, "metadata": {TAG: PORTAL_TAG}}
        )
        return Outcome("portal configuration", created.id, "created", (hint.format(created.id),))
    current = mine[0]
    if portal_state(current) == features:
        return Outcome("portal configuration", current["id"], "unchanged")
    client.v1.billing_portal.configurations.update(
        current["id"],
        {"features": features},
    )
    return Outcome("portal configuration", current["id"], "updated", (hint.format(current["id"]),))


# -- the webhook endpoint ----------------------------------------------------------------------


def ensure_webhook_endpoint(client: stripe.StripeClient, url: str) -> Outcome:
    endpoints = [
        e.to_dict() for e in client.v1.webhook_endpoints.list({"limit": 100}).auto_paging_iter()
    ]
    mine = [e for e in endpoints if e.get("url") == url] or [
        e for e in endpoints if tagged(e, WEBHOOK_TAG)
    ]
    if not mine:
        return _create_endpoint(client, url)
    endpoint = mine[0]
    if endpoint.get("api_version") != STRIPE_API_VERSION:
        raise SetupError(
            f"webhook endpoint {endpoint['id']} is pinned to {endpoint.get('api_version')},"
            f" not {STRIPE_API_VERSION}; Stripe cannot change an endpoint's API version:"
            " delete it in the dashboard and run stripe-setup again"
        )
    wanted = {"url": url, "enabled_events": sorted(WEBHOOK_EVENTS), "status": "enabled"}
    have = {
        "url": endpoint["url"],
        "enabled_events": sorted(endpoint["enabled_events"]),
        "status": endpoint.get("status"),
    }
    if have == wanted and tagged(endpoint, WEBHOOK_TAG):
        return Outcome("webhook endpoint", endpoint["id"], "unchanged")
    client.v1.webhook_endpoints.update(
        endpoint["id"],
        {
            "url": url,
            "enabled_events": list(WEBHOOK_EVENTS),
            "disabled": False,
            "metadata": {TAG: WEBHOOK_TAG},
        },
    )
    return Outcome("webhook endpoint", endpoint["id"], "updated")


def _create_endpoint(client: stripe.StripeClient, url: str) -> Outcome:
    created = client.v1.webhook_endpoints.create(
        {
            "url": url,
            "enabled_events": list(WEBHOOK_EVENTS),
            "api_version": STRIPE_API_VERSION,
            "description": "tally credits",
            "metadata": {TAG: WEBHOOK_TAG},
        }
    )
    return Outcome(
        "webhook endpoint",
        created.id,
        "created",
        (
            f"signing secret (Stripe shows it only now): {created.secret}",
            "put it in STRIPE_WEBHOOK_SECRETS (next to the current one while rotating),"
            " e.g. fly secrets set STRIPE_WEBHOOK_SECRETS=<secret>",
        ),
    )


# -- the command -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tally stripe-setup",
        description="Create or update the Customer Portal configuration and the webhook endpoint.",
    )
    parser.add_argument(
        "--webhook-url",
        required=True,
        help="the sidecar's webhook URL, e.g. https://<app>.fly.dev/webhooks/stripe",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        help="Postgres connection string for the catalog (default: $DATABASE_URL)",
    )
    return parser


def stripe_client() -> stripe.StripeClient:
    key = os.environ.get("STRIPE_SECRET_KEY", "").strip()
    if not key:
        raise SetupError("set STRIPE_SECRET_KEY")
    base = os.environ.get("STRIPE_API_BASE", "").strip() or None
    if base and os.environ.get("ENV") == "production":
        raise SetupError("STRIPE_API_BASE (a Stripe stand-in) is not allowed in production")
    return stripe.StripeClient(
        key,
        stripe_version=STRIPE_API_VERSION,
        max_network_retries=2,
        base_addresses={"api": base} if base else None,
    )


def run(args: argparse.Namespace, say: Callable[[str], None]) -> int:
    if not args.database_url:
        raise SetupError("set DATABASE_URL or pass --database-url (the catalog is read from it)")
    client = stripe_client()
    products = products_of(client, active_plan_prices(args.database_url))
    for outcome in (
        ensure_portal(client, products),
        ensure_webhook_endpoint(client, args.webhook_url),
    ):
        for line in outcome.lines():
            say(line)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args, print)
    except SetupError as problem:
        print(f"stripe-setup: {problem}", file=sys.stderr)
        return 2
    except stripe.StripeError as error:
        request = f" (request {error.request_id})" if error.request_id else ""
        print(
            f"stripe-setup: Stripe refused: {error.user_message or error}{request}", file=sys.stderr
        )
        return 1
    except psycopg.Error as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        print(f"stripe-setup: cannot read the catalog: {first}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
