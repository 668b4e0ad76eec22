"""Complete, coherent Stripe objects and signed webhook events, in both payload layouts.

Stripe renders an event in the API version of the endpoint that receives it, so
one deployment sees two layouts of the same objects:

- ``"legacy"``: API versions up to ``2025-02-24.acacia``. ``invoice.subscription``,
  ``invoice.subscription_details.metadata``, ``invoice.paid/charge/payment_intent``,
  ``lines.data[].price`` and ``.proration``, ``subscription.current_period_*``,
  ``charge.invoice``.
- ``"basil"``: ``2025-03-31.basil`` and later (clover, dahlia...).
  ``invoice.parent.subscription_details.{subscription,metadata}``, no
  ``paid``/``charge``/``payment_intent`` (``status == "paid"`` instead),
  ``lines.data[].pricing.price_details.price``,
  ``lines.data[].parent.subscription_item_details.{proration,subscription}``,
  ``items.data[].current_period_*``, no ``charge.invoice``.

The shapes follow Stripe's own fixtures (``stripe/openapi`` ``fixtures3.json``,
copied in ``tests/sidecar/stripe_fixtures/``); the values are coherent with each
other (ids, amounts, periods, timestamps).

Two levels of API:

- Builders, one per object (``checkout_session``, ``invoice``, ``invoice_line``,
  ``subscription``, ``subscription_item``, ``price``, ``charge``, ``refund``,
  ``dispute``, ``customer``, ``billing_portal_session``) and the envelope
  (``event``). Pure functions of their arguments.
- ``StripeWorld``: a small simulation of one Stripe account with a clock and an
  id generator. Each action returns the events Stripe would send for it, in the
  order Stripe typically sends them, rendered in ``world.layout`` (which may be
  changed at any time: the state behind the events does not depend on it).

Example::

    from tally.stripe_events import StripeWorld, encode, sign

    world = StripeWorld(layout="basil", prices={"price_pro": 2900, "price_pack_s": 900})
    alice = world.customer(user_id="6b1c...")
    sub, events = world.subscribe(alice, "price_pro")     # checkout + subscription + invoice
    events += world.renew(sub)                            # next period paid
    events += world.change_plan(sub, "price_team")        # upgrade, previous_attributes set
    pack, more = world.buy_pack(alice, "price_pack_s")    # one-off credits
    events += more + world.refund(pack, 450)              # half refunded
    events += world.cancel(sub)                           # cancel_at_period_end
    for evt in events:
        body = encode(evt)
        headers = {"Stripe-Signature": sign(body, "whsec_test"),
                   "Content-Type": "application/json"}
        # POST body with headers to /webhooks/stripe

Ignored event types that Stripe also sends (``invoice.created``,
``payment_intent.succeeded``...) are included when ``StripeWorld(noise=True)``.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import random
import string
import time
from dataclasses import dataclass, field
from typing import Any, Literal

Layout = Literal["legacy", "basil"]
JSON = dict[str, Any]

LEGACY_API_VERSION = "2025-02-24.acacia"
BASIL_API_VERSION = "2025-03-31.basil"
FIRST_BASIL_DATE = "2025-03-31"
DEFAULT_API_VERSIONS: dict[str, str] = {"legacy": LEGACY_API_VERSION, "basil": BASIL_API_VERSION}

DAY = 86_400
MONTH = 30 * DAY
DEFAULT_START = 1_767_225_600  # 2026-01-01T00:00:00Z
DEFAULT_AMOUNT = 1000
OPEN_DISPUTE_STATUS = "needs_response"


def layout_for(api_version: str | None) -> Layout:
    """The payload layout Stripe uses for an API version (None: the newest)."""
    if not api_version:
        return "basil"
    return "legacy" if api_version[:10] < FIRST_BASIL_DATE else "basil"


# --------------------------------------------------------------------------
# Signing and encoding
# --------------------------------------------------------------------------


def sign(payload: bytes, secret: str, timestamp: int | None = None, scheme: str = "v1") -> str:
    """The Stripe-Signature header Stripe sends for ``payload``.

    ``t=<unix seconds>,<scheme>=hex(HMAC_SHA256(secret, "<t>.<payload>"))``.
    ``scheme="v0"`` gives a header a verifier must refuse (only v1 is real).
    """
    t = int(time.time()) if timestamp is None else timestamp
    signed = f"{t}.".encode() + payload
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={t},{scheme}={digest}"


def encode(event: JSON) -> bytes:
    """Serialise an event as Stripe does (pretty JSON, UTF-8)."""
    return json.dumps(event, indent=2, ensure_ascii=False).encode()


def signed_request(
    event: JSON, secret: str, timestamp: int | None = None
) -> tuple[bytes, dict[str, str]]:
    """Body and headers of a webhook delivery of ``event``."""
    body = encode(event)
    return body, {
        "Stripe-Signature": sign(body, secret, timestamp),
        "Content-Type": "application/json",
    }


# --------------------------------------------------------------------------
# Ids and time
# --------------------------------------------------------------------------


class Ids:
    """Stripe-looking ids (``cus_`` + 24 characters), reproducible from a seed."""

    ALPHABET = string.ascii_letters + string.digits

    def __init__(self, seed: int | str = 0) -> None:
        self._random = random.Random(seed)

    def new(self, prefix: str) -> str:
        return prefix + "_" + "".join(self._random.choices(self.ALPHABET, k=24))


@dataclass
class Clock:
    """The simulated Stripe time in Unix seconds; moves only forward."""

    now: int = DEFAULT_START

    def advance(self, seconds: int = 0, *, days: int = 0) -> int:
        self.now += seconds + days * DAY
        return self.now


# --------------------------------------------------------------------------
# Builders: one per Stripe object
# --------------------------------------------------------------------------


def _address() -> JSON:
    return dict.fromkeys(("city", "country", "line1", "line2", "postal_code", "state"))


def event(
    *,
    id: str,
    type: str,
    created: int,
    obj: JSON,
    api_version: str | None,
    previous_attributes: JSON | None = None,
    livemode: bool = False,
    request_id: str | None = None,
    idempotency_key: str | None = None,
) -> JSON:
    """The event envelope (fixture ``event.json``)."""
    data: JSON = {"object": copy.deepcopy(obj)}
    if previous_attributes is not None:
        data["previous_attributes"] = copy.deepcopy(previous_attributes)
    return {
        "id": id,
        "object": "event",
        "api_version": api_version,
        "created": created,
        "data": data,
        "livemode": livemode,
        "pending_webhooks": 1,
        "request": {"id": request_id, "idempotency_key": idempotency_key},
        "type": type,
    }


def price(
    *,
    id: str,
    unit_amount: int,
    product: str,
    created: int,
    recurring: bool = True,
    currency: str = "usd",
    livemode: bool = False,
) -> JSON:
    """A price (fixture ``price.json``)."""
    return {
        "id": id,
        "object": "price",
        "active": True,
        "billing_scheme": "per_unit",
        "created": created,
        "currency": currency,
        "custom_unit_amount": None,
        "livemode": livemode,
        "lookup_key": None,
        "metadata": {},
        "nickname": None,
        "product": product,
        "recurring": (
            {
                "interval": "month",
                "interval_count": 1,
                "meter": None,
                "trial_period_days": None,
                "usage_type": "licensed",
            }
            if recurring
            else None
        ),
        "tax_behavior": "unspecified",
        "tiers_mode": None,
        "transform_quantity": None,
        "type": "recurring" if recurring else "one_time",
        "unit_amount": unit_amount,
        "unit_amount_decimal": str(unit_amount),
    }


def _plan_of(price_obj: JSON) -> JSON:
    """The legacy ``plan`` object mirroring a recurring price."""
    return {
        "id": price_obj["id"],
        "object": "plan",
        "active": True,
        "amount": price_obj["unit_amount"],
        "amount_decimal": price_obj["unit_amount_decimal"],
        "billing_scheme": "per_unit",
        "created": price_obj["created"],
        "currency": price_obj["currency"],
        "interval": "month",
        "interval_count": 1,
        "livemode": price_obj["livemode"],
        "metadata": {},
        "meter": None,
        "nickname": None,
        "product": price_obj["product"],
        "tiers_mode": None,
        "transform_usage": None,
        "trial_period_days": None,
        "usage_type": "licensed",
    }


def customer(
    *,
    id: str,
    created: int,
    email: str | None = None,
    metadata: dict[str, str] | None = None,
    livemode: bool = False,
) -> JSON:
    """A customer (fixture ``customer.json``)."""
    return {
        "id": id,
        "object": "customer",
        "address": None,
        "balance": 0,
        "created": created,
        "currency": None,
        "default_source": None,
        "delinquent": False,
        "description": None,
        "discount": None,
        "email": email,
        "invoice_prefix": id[-8:].upper(),
        "invoice_settings": {
            "custom_fields": None,
            "default_payment_method": None,
            "footer": None,
            "rendering_options": None,
        },
        "livemode": livemode,
        "metadata": dict(metadata or {}),
        "name": None,
        "next_invoice_sequence": 1,
        "phone": None,
        "preferred_locales": [],
        "shipping": None,
        "tax_exempt": "none",
        "test_clock": None,
    }


def checkout_session(
    *,
    id: str,
    mode: Literal["payment", "subscription", "setup"],
    created: int,
    payment_status: Literal["paid", "unpaid", "no_payment_required"],
    status: Literal["open", "complete", "expired"] = "complete",
    customer: str | None,
    client_reference_id: str | None = None,
    metadata: dict[str, str] | None = None,
    subscription: str | None = None,
    payment_intent: str | None = None,
    invoice: str | None = None,
    amount_total: int | None = None,
    currency: str = "usd",
    success_url: str = "https://app.example.com/billing/success",
    cancel_url: str = "https://app.example.com/billing/cancel",
    email: str | None = None,
    livemode: bool = False,
) -> JSON:
    """A Checkout Session (fixture ``checkout_session.json``)."""
    return {
        "id": id,
        "object": "checkout.session",
        "adaptive_pricing": {"enabled": False},
        "after_expiration": None,
        "allow_promotion_codes": None,
        "amount_subtotal": amount_total,
        "amount_total": amount_total,
        "automatic_tax": {"enabled": False, "liability": None, "provider": None, "status": None},
        "billing_address_collection": None,
        "cancel_url": cancel_url,
        "client_reference_id": client_reference_id,
        "client_secret": None,
        "collected_information": {
            "business_name": None,
            "individual_name": None,
            "shipping_details": None,
        },
        "consent": None,
        "consent_collection": None,
        "created": created,
        "currency": currency,
        "currency_conversion": None,
        "custom_fields": [],
        "custom_text": {
            "after_submit": None,
            "shipping_address": None,
            "submit": None,
            "terms_of_service_acceptance": None,
        },
        "customer": customer,
        "customer_account": None,
        "customer_creation": None if customer else "if_required",
        "customer_details": {
            "address": _address(),
            "business_name": None,
            "email": email,
            "individual_name": None,
            "name": None,
            "phone": None,
            "tax_exempt": "none",
            "tax_ids": [],
        },
        "customer_email": None,
        "discounts": [],
        "expires_at": created + DAY,
        "integration_identifier": None,
        "invoice": invoice,
        "invoice_creation": (
            None
            if mode != "payment"
            else {
                "enabled": False,
                "invoice_data": {
                    "account_tax_ids": None,
                    "custom_fields": None,
                    "description": None,
                    "footer": None,
                    "issuer": None,
                    "metadata": {},
                    "rendering_options": None,
                },
            }
        ),
        "livemode": livemode,
        "locale": None,
        "managed_payments": {"enabled": False},
        "metadata": dict(metadata or {}),
        "mode": mode,
        "origin_context": None,
        "payment_intent": payment_intent,
        "payment_link": None,
        "payment_method_collection": "always",
        "payment_method_configuration_details": None,
        "payment_method_options": {},
        "payment_method_types": ["card"],
        "payment_status": payment_status,
        "permissions": None,
        "phone_number_collection": {"enabled": False},
        "recovered_from": None,
        "saved_payment_method_options": None,
        "setup_intent": None,
        "shipping_address_collection": None,
        "shipping_cost": None,
        "shipping_options": [],
        "status": status,
        "submit_type": None,
        "subscription": subscription,
        "success_url": success_url,
        "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        "ui_mode": "hosted",
        "url": None if status != "open" else f"https://checkout.stripe.com/c/pay/{id}",
        "wallet_options": None,
    }


def billing_portal_session(
    *, id: str, customer: str, created: int, return_url: str, livemode: bool = False
) -> JSON:
    """A Customer Portal session (fixture ``billing_portal_session.json``)."""
    return {
        "id": id,
        "object": "billing_portal.session",
        "configuration": "bpc_" + id[4:],
        "created": created,
        "customer": customer,
        "customer_account": None,
        "flow": None,
        "livemode": livemode,
        "locale": None,
        "on_behalf_of": None,
        "return_url": return_url,
        "url": f"https://billing.stripe.com/p/session/test_{id[4:]}",
    }


def subscription_item(
    *,
    layout: Layout,
    id: str,
    subscription: str,
    price_obj: JSON,
    created: int,
    current_period_start: int,
    current_period_end: int,
) -> JSON:
    """A subscription item (fixture ``subscription_item.json``).

    Basil carries the current period on the item; legacy on the subscription.
    """
    item: JSON = {
        "id": id,
        "object": "subscription_item",
        "billing_thresholds": None,
        "created": created,
        "discounts": [],
        "metadata": {},
        "plan": _plan_of(price_obj),
        "price": copy.deepcopy(price_obj),
        "quantity": 1,
        "subscription": subscription,
        "tax_rates": [],
    }
    if layout == "basil":
        item["current_period_start"] = current_period_start
        item["current_period_end"] = current_period_end
    return item


def subscription(
    *,
    layout: Layout,
    id: str,
    customer: str,
    status: str,
    created: int,
    item_id: str,
    price_obj: JSON,
    item_created: int,
    current_period_start: int,
    current_period_end: int,
    metadata: dict[str, str] | None = None,
    cancel_at_period_end: bool = False,
    cancel_at: int | None = None,
    canceled_at: int | None = None,
    ended_at: int | None = None,
    latest_invoice: str | None = None,
    livemode: bool = False,
    leading_prices: tuple[JSON, ...] = (),
    pending_update: JSON | None = None,
) -> JSON:
    """A subscription (fixture ``subscription.json``): its plan item, after
    ``leading_prices`` (other items listed first, a metered price say).

    ``pending_update``: a change made with ``payment_behavior=pending_if_incomplete``
    whose invoice is not paid yet (the items stay as they were until it is).
    """
    items = [
        subscription_item(
            layout=layout,
            id=f"{item_id}_{n}",
            subscription=id,
            price_obj=other,
            created=item_created,
            current_period_start=current_period_start,
            current_period_end=current_period_end,
        )
        for n, other in enumerate(leading_prices)
    ]
    items.append(
        subscription_item(
            layout=layout,
            id=item_id,
            subscription=id,
            price_obj=price_obj,
            created=item_created,
            current_period_start=current_period_start,
            current_period_end=current_period_end,
        )
    )
    sub: JSON = {
        "id": id,
        "object": "subscription",
        "application": None,
        "application_fee_percent": None,
        "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None},
        "billing_cycle_anchor": created,
        "billing_cycle_anchor_config": None,
        "billing_mode": {"flexible": None, "type": "classic"},
        "billing_schedules": [],
        "billing_thresholds": None,
        "cancel_at": cancel_at,
        "cancel_at_period_end": cancel_at_period_end,
        "canceled_at": canceled_at,
        "cancellation_details": {
            "comment": None,
            "feedback": None,
            "reason": "cancellation_requested" if canceled_at else None,
        },
        "collection_method": "charge_automatically",
        "created": created,
        "currency": price_obj["currency"],
        "customer": customer,
        "customer_account": None,
        "days_until_due": None,
        "default_payment_method": None,
        "default_source": None,
        "default_tax_rates": [],
        "description": None,
        "discounts": [],
        "ended_at": ended_at,
        "invoice_settings": {"account_tax_ids": None, "issuer": {"type": "self"}},
        "items": {
            "object": "list",
            "data": items,
            "has_more": False,
            "total_count": len(items),
            "url": f"/v1/subscription_items?subscription={id}",
        },
        "latest_invoice": latest_invoice,
        "livemode": livemode,
        "managed_payments": {"enabled": False},
        "metadata": dict(metadata or {}),
        "next_pending_invoice_item_invoice": None,
        "on_behalf_of": None,
        "pause_collection": None,
        "payment_settings": {
            "payment_method_options": None,
            "payment_method_types": None,
            "save_default_payment_method": "off",
        },
        "pending_invoice_item_interval": None,
        "pending_setup_intent": None,
        "pending_update": copy.deepcopy(pending_update),
        "schedule": None,
        "start_date": created,
        "status": status,
        "test_clock": None,
        "transfer_data": None,
        "trial_end": None,
        "trial_settings": {"end_behavior": {"missing_payment_method": "create_invoice"}},
        "trial_start": None,
    }
    if layout == "legacy":
        sub["current_period_start"] = current_period_start
        sub["current_period_end"] = current_period_end
        sub["plan"] = _plan_of(price_obj) if not leading_prices else None
        sub["quantity"] = 1 if not leading_prices else None
    return sub


def invoice_line(
    *,
    layout: Layout,
    id: str,
    invoice: str,
    price_obj: JSON,
    amount: int,
    period_start: int,
    period_end: int,
    subscription: str,
    subscription_item: str,
    proration: bool = False,
    description: str | None = None,
    livemode: bool = False,
    credited_invoice: str | None = None,
    parent_kind: Literal["subscription_item_details", "invoice_item_details"] | None = None,
) -> JSON:
    """One invoice line of a subscription (fixture ``line_item.json``).

    A proration line crediting unused time names the invoice it credits
    (``proration_details.credited_items``) and has a negative amount. In
    the basil layout a proration is an invoice item's line
    (``parent.invoice_item_details``) unless ``parent_kind`` says otherwise.
    """
    credited = (
        {"invoice": credited_invoice, "invoice_line_items": [f"il_{credited_invoice[3:]}"]}
        if credited_invoice
        else None
    )
    line: JSON = {
        "id": id,
        "object": "line_item",
        "amount": amount,
        "currency": price_obj["currency"],
        "description": description or f"1 x {price_obj['product']}",
        "discount_amounts": [],
        "discountable": not proration,
        "discounts": [],
        "invoice": invoice,
        "livemode": livemode,
        "metadata": {},
        "period": {"start": period_start, "end": period_end},
        "quantity": 1,
    }
    if layout == "legacy":
        line.update(
            {
                "amount_excluding_tax": amount,
                "invoice_item": f"ii_{id[3:]}" if proration else None,
                "plan": _plan_of(price_obj),
                "price": copy.deepcopy(price_obj),
                "proration": proration,
                "proration_details": {"credited_items": credited},
                "subscription": subscription,
                "subscription_item": subscription_item,
                "tax_amounts": [],
                "tax_rates": [],
                "type": "invoiceitem" if proration else "subscription",
                "unit_amount_excluding_tax": str(amount),
            }
        )
        return line
    kind = parent_kind or ("invoice_item_details" if proration else "subscription_item_details")
    details: JSON = {
        "invoice_item": f"ii_{id[3:]}" if proration else None,
        "proration": proration,
        "proration_details": {"credited_items": credited},
        "subscription": subscription,
    }
    if kind == "subscription_item_details":
        details["subscription_item"] = subscription_item
    else:
        details["invoice_item"] = f"ii_{id[3:]}"
    line.update(
        {
            "parent": {
                "invoice_item_details": details if kind == "invoice_item_details" else None,
                "subscription_item_details": (
                    details if kind == "subscription_item_details" else None
                ),
                "type": kind,
            },
            "pretax_credit_amounts": [],
            "pricing": {
                "price_details": {"price": price_obj["id"], "product": price_obj["product"]},
                "type": "price_details",
                "unit_amount_decimal": price_obj["unit_amount_decimal"],
            },
            "quantity_decimal": "1",
            "subscription": None,
            "subtotal": amount,
            "taxes": [],
        }
    )
    return line


def invoice(
    *,
    layout: Layout,
    id: str,
    customer: str,
    subscription: str | None,
    subscription_metadata: dict[str, str] | None,
    lines: list[JSON],
    status: Literal["draft", "open", "paid", "uncollectible", "void"],
    created: int,
    billing_reason: str,
    attempt_count: int = 1,
    charge: str | None = None,
    payment_intent: str | None = None,
    currency: str = "usd",
    livemode: bool = False,
    embedded_lines: int | None = None,
) -> JSON:
    """An invoice (fixture ``invoice.json``). Amounts are the sum of ``lines``.

    Stripe embeds only the first page of lines in an event: with
    ``embedded_lines`` only that many are embedded and ``has_more`` is set
    (``GET /v1/invoices/{id}/lines`` gives all of them).
    """
    shown = lines if embedded_lines is None else lines[:embedded_lines]
    total = sum(line["amount"] for line in lines)
    paid = status == "paid"
    due = max(total, 0)
    period_start = min((ln["period"]["start"] for ln in lines), default=created)
    period_end = max((ln["period"]["end"] for ln in lines), default=created)
    inv: JSON = {
        "id": id,
        "object": "invoice",
        "account_country": "US",
        "account_name": "Tally Demo",
        "account_tax_ids": None,
        "amount_due": due,
        "amount_paid": due if paid else 0,
        "amount_remaining": 0 if paid else due,
        "amount_shipping": 0,
        "application": None,
        "attempt_count": attempt_count,
        "attempted": status != "draft",
        "auto_advance": not paid,
        "automatic_tax": {
            "disabled_reason": None,
            "enabled": False,
            "liability": None,
            "provider": None,
            "status": None,
        },
        "automatically_finalizes_at": None,
        "billing_reason": billing_reason,
        "collection_method": "charge_automatically",
        "created": created,
        "currency": currency,
        "custom_fields": None,
        "customer": customer,
        "customer_account": None,
        "customer_address": None,
        "customer_email": None,
        "customer_name": None,
        "customer_phone": None,
        "customer_shipping": None,
        "customer_tax_exempt": "none",
        "customer_tax_ids": [],
        "default_payment_method": None,
        "default_source": None,
        "default_tax_rates": [],
        "description": None,
        "discounts": [],
        "due_date": None,
        "effective_at": created,
        "ending_balance": 0,
        "footer": None,
        "from_invoice": None,
        "hosted_invoice_url": f"https://invoice.stripe.com/i/{id}",
        "invoice_pdf": f"https://pay.stripe.com/invoice/{id}/pdf",
        "issuer": {"type": "self"},
        "last_finalization_error": None,
        "latest_revision": None,
        "lines": {
            "object": "list",
            "data": copy.deepcopy(shown),
            "has_more": len(shown) < len(lines),
            "total_count": len(lines),
            "url": f"/v1/invoices/{id}/lines",
        },
        "livemode": livemode,
        "metadata": {},
        "next_payment_attempt": None if paid else created + 3 * DAY,
        "number": f"{id[-8:].upper()}-0001",
        "on_behalf_of": None,
        "payment_settings": {
            "default_mandate": None,
            "payment_method_options": None,
            "payment_method_types": None,
        },
        "period_end": period_end,
        "period_start": period_start,
        "post_payment_credit_notes_amount": 0,
        "pre_payment_credit_notes_amount": 0,
        "receipt_number": None,
        "rendering": None,
        "shipping_cost": None,
        "shipping_details": None,
        "starting_balance": 0,
        "statement_descriptor": None,
        "status": status,
        "status_transitions": {
            "finalized_at": created,
            "marked_uncollectible_at": None,
            "paid_at": created if paid else None,
            "voided_at": None,
        },
        "subtotal": total,
        "subtotal_excluding_tax": total,
        "test_clock": None,
        "total": total,
        "total_discount_amounts": [],
        "total_excluding_tax": total,
        "webhooks_delivered_at": created,
    }
    metadata = dict(subscription_metadata or {})
    if layout == "legacy":
        inv.update(
            {
                "charge": charge,
                "paid": paid,
                "paid_out_of_band": False,
                "payment_intent": payment_intent,
                "quote": None,
                "subscription": subscription,
                "subscription_details": {"metadata": metadata} if subscription else None,
                "subscription_proration_date": None,
                "tax": None,
                "total_tax_amounts": [],
            }
        )
        return inv
    inv.update(
        {
            "amount_overpaid": 0,
            "parent": (
                {
                    "quote_details": None,
                    "subscription_details": {"metadata": metadata, "subscription": subscription},
                    "type": "subscription_details",
                }
                if subscription
                else None
            ),
            "subscription": None,
            "total_pretax_credit_amounts": [],
            "total_taxes": [],
        }
    )
    return inv


def refund(
    *,
    id: str,
    charge: str,
    payment_intent: str | None,
    amount: int,
    created: int,
    currency: str = "usd",
) -> JSON:
    """A refund (fixture ``refund.json``)."""
    return {
        "id": id,
        "object": "refund",
        "amount": amount,
        "balance_transaction": f"txn_{id[3:]}",
        "charge": charge,
        "created": created,
        "currency": currency,
        "customer": None,
        "customer_account": None,
        "destination_details": {"card": {"type": "refund"}, "type": "card"},
        "metadata": {},
        "payment_intent": payment_intent,
        "payment_method": None,
        "reason": "requested_by_customer",
        "receipt_number": None,
        "source_transfer_reversal": None,
        "status": "succeeded",
        "transfer_reversal": None,
    }


def charge(
    *,
    layout: Layout,
    id: str,
    amount: int,
    created: int,
    customer: str | None,
    payment_intent: str | None,
    amount_refunded: int = 0,
    refunds: list[JSON] | None = None,
    invoice: str | None = None,
    metadata: dict[str, str] | None = None,
    disputed: bool = False,
    currency: str = "usd",
    livemode: bool = False,
) -> JSON:
    """A succeeded card charge (fixture ``charge.json``); ``amount_refunded`` is cumulative."""
    ch: JSON = {
        "id": id,
        "object": "charge",
        "amount": amount,
        "amount_captured": amount,
        "amount_refunded": amount_refunded,
        "application": None,
        "application_fee": None,
        "application_fee_amount": None,
        "balance_transaction": f"txn_{id[3:]}",
        "billing_details": {
            "address": _address(),
            "email": None,
            "name": None,
            "phone": None,
            "tax_id": None,
        },
        "calculated_statement_descriptor": "TALLY",
        "captured": True,
        "created": created,
        "currency": currency,
        "customer": customer,
        "description": None,
        "disputed": disputed,
        "failure_balance_transaction": None,
        "failure_code": None,
        "failure_message": None,
        "fraud_details": {},
        "livemode": livemode,
        "metadata": dict(metadata or {}),
        "on_behalf_of": None,
        "outcome": {
            "advice_code": None,
            "network_advice_code": None,
            "network_decline_code": None,
            "network_status": "approved_by_network",
            "reason": None,
            "risk_level": "normal",
            "seller_message": "Payment complete.",
            "type": "authorized",
        },
        "paid": True,
        "payment_intent": payment_intent,
        "payment_method": f"pm_{id[3:]}",
        "payment_method_details": {
            "card": {
                "brand": "visa",
                "country": "US",
                "exp_month": 8,
                "exp_year": 2030,
                "funding": "credit",
                "last4": "4242",
                "network": "visa",
            },
            "type": "card",
        },
        "receipt_email": None,
        "receipt_number": None,
        "receipt_url": f"https://pay.stripe.com/receipts/payment/{id}",
        "refunded": amount_refunded >= amount,
        "refunds": {
            "object": "list",
            "data": copy.deepcopy(refunds or []),
            "has_more": False,
            "total_count": len(refunds or []),
            "url": f"/v1/charges/{id}/refunds",
        },
        "review": None,
        "shipping": None,
        "source": None,
        "source_transfer": None,
        "statement_descriptor": None,
        "statement_descriptor_suffix": None,
        "status": "succeeded",
        "transfer_data": None,
        "transfer_group": None,
    }
    if layout == "legacy":
        ch["invoice"] = invoice
    return ch


def dispute(
    *,
    id: str,
    charge: str,
    payment_intent: str | None,
    amount: int,
    status: str,
    created: int,
    reason: str = "fraudulent",
    currency: str = "usd",
    livemode: bool = False,
) -> JSON:
    """A dispute (fixture ``dispute.json``)."""
    evidence_keys = (
        "access_activity_log", "billing_address", "cancellation_policy",
        "cancellation_policy_disclosure", "cancellation_rebuttal", "customer_communication",
        "customer_email_address", "customer_name", "customer_purchase_ip", "customer_signature",
        "duplicate_charge_documentation", "duplicate_charge_explanation", "duplicate_charge_id",
        "product_description", "receipt", "refund_policy", "refund_policy_disclosure",
        "refund_refusal_explanation", "service_date", "service_documentation",
        "shipping_address", "shipping_carrier", "shipping_date", "shipping_documentation",
        "shipping_tracking_number", "uncategorized_file", "uncategorized_text",
    )  # fmt: skip
    return {
        "id": id,
        "object": "dispute",
        "amount": amount,
        "balance_transactions": [],
        "charge": charge,
        "created": created,
        "currency": currency,
        "enhanced_eligibility_types": [],
        "evidence": {**dict.fromkeys(evidence_keys), "enhanced_evidence": {}},
        "evidence_details": {
            "due_by": created + 7 * DAY,
            "enhanced_eligibility": {},
            "has_evidence": False,
            "past_due": False,
            "submission_count": 0,
        },
        "is_charge_refundable": False,
        "livemode": livemode,
        "metadata": {},
        "payment_intent": payment_intent,
        "payment_method_details": {
            "card": {"brand": "visa", "case_type": "chargeback", "network_reason_code": "10.4"},
            "type": "card",
        },
        "reason": reason,
        "status": status,
    }


def invoice_payment(
    *,
    id: str,
    invoice: str,
    payment_intent: str | None,
    amount_paid: int,
    created: int,
    charge: str | None = None,
    currency: str = "usd",
    livemode: bool = False,
) -> JSON:
    """An invoice payment (fixture ``invoice_payment.json``): which payment paid an invoice.

    Basil and later only; ``invoice_payment.paid`` is the one webhook that
    joins a payment intent (or, for old-style charges, a charge) to its invoice.
    """
    payment: JSON = (
        {"type": "payment_intent", "payment_intent": payment_intent}
        if payment_intent
        else {"type": "charge", "charge": charge}
    )
    return {
        "id": id,
        "object": "invoice_payment",
        "amount_paid": amount_paid,
        "amount_requested": amount_paid,
        "created": created,
        "currency": currency,
        "invoice": invoice,
        "is_default": True,
        "livemode": livemode,
        "payment": payment,
        "status": "paid",
        "status_transitions": {"canceled_at": None, "paid_at": created},
    }


# --------------------------------------------------------------------------
# StripeWorld: a simulated Stripe account playing customer lifecycles
# --------------------------------------------------------------------------


@dataclass
class Customer:
    id: str
    user_id: str | None
    email: str
    created: int


@dataclass
class Payment:
    """A succeeded payment: its PaymentIntent and Charge."""

    payment_intent_id: str
    charge_id: str
    amount: int
    customer_id: str
    created: int
    invoice_id: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    amount_refunded: int = 0
    refunds: list[JSON] = field(default_factory=list)
    disputed: bool = False


@dataclass
class Subscription:
    """The state of one subscription; events are rendered from it."""

    id: str
    item_id: str
    customer: Customer
    price_id: str
    status: str
    created: int
    item_created: int
    current_period_start: int
    current_period_end: int
    metadata: dict[str, str]
    cancel_at_period_end: bool = False
    cancel_at: int | None = None
    canceled_at: int | None = None
    ended_at: int | None = None
    latest_invoice: str | None = None
    # (price, amount, start) of prorations not invoiced yet.
    pending_prorations: list[tuple[str, int, int]] = field(default_factory=list)
    # A downgrade scheduled for the period's end (a subscription schedule).
    scheduled_price_id: str | None = None
    # A change waiting for its invoice to be paid (pending_if_incomplete).
    pending_price_id: str | None = None
    payments: list[Payment] = field(default_factory=list)


@dataclass
class Purchase:
    """A one-off (pack) Checkout Session and, once paid, its payment."""

    session_id: str
    customer: Customer
    price_id: str
    amount: int
    metadata: dict[str, str]
    client_reference_id: str | None
    created: int
    payment: Payment
    paid: bool = False


@dataclass
class Dispute:
    id: str
    payment: Payment
    amount: int
    status: str
    created: int
    reason: str = "fraudulent"


@dataclass
class OpenInvoice:
    """An invoice that failed and waits for a retry."""

    id: str
    subscription: Subscription
    lines: list[JSON]
    billing_reason: str
    attempt_count: int


class StripeWorld:
    """One simulated Stripe account: customers, subscriptions, packs and their events.

    ``prices`` maps price ids to unit amounts (cents); unknown prices cost
    ``DEFAULT_AMOUNT``. Every action moves the clock forward by a few seconds,
    so events get increasing ``created`` values unless ``same_second=True`` is
    used for a tie. ``world.sent`` keeps every event emitted.
    """

    def __init__(
        self,
        layout: Layout = "basil",
        *,
        api_version: str | None = None,
        prices: dict[str, int] | None = None,
        start: int = DEFAULT_START,
        seed: int | str = 0,
        noise: bool = False,
        livemode: bool = False,
        success_url: str = "https://app.example.com/billing/success",
        cancel_url: str = "https://app.example.com/billing/cancel",
    ) -> None:
        self.layout: Layout = layout
        self._api_version = api_version
        self.prices = dict(prices or {})
        self.clock = Clock(start)
        self.ids = Ids(seed)
        # invoice_payment.paid exists in the basil layout only: its ids come
        # from their own sequence, so both layouts of one story share the rest.
        self.payment_ids = Ids(f"{seed}-invoice-payments")
        self.noise = noise
        self.livemode = livemode
        self.success_url = success_url
        self.cancel_url = cancel_url
        self.sent: list[JSON] = []
        self._open_invoices: dict[str, OpenInvoice] = {}
        self._price_created = start - 90 * DAY

    # -- rendering -----------------------------------------------------------

    @property
    def api_version(self) -> str:
        if self._api_version and layout_for(self._api_version) == self.layout:
            return self._api_version
        return DEFAULT_API_VERSIONS[self.layout]

    def price_object(self, price_id: str, *, recurring: bool = True) -> JSON:
        return price(
            id=price_id,
            unit_amount=self.prices.get(price_id, DEFAULT_AMOUNT),
            product="prod_" + price_id.removeprefix("price_"),
            created=self._price_created,
            recurring=recurring,
            livemode=self.livemode,
        )

    def _emit(
        self,
        type: str,
        obj: JSON,
        previous_attributes: JSON | None = None,
        *,
        ids: Ids | None = None,
    ) -> JSON:
        ids = ids or self.ids
        evt = event(
            id=ids.new("evt"),
            type=type,
            created=self.clock.now,
            obj=obj,
            api_version=self.api_version,
            previous_attributes=previous_attributes,
            livemode=self.livemode,
            request_id=ids.new("req"),
        )
        self.sent.append(evt)
        return evt

    def _tick(self, seconds: int = 2) -> None:
        self.clock.advance(seconds)

    def subscription_object(self, sub: Subscription) -> JSON:
        return subscription(
            layout=self.layout,
            id=sub.id,
            customer=sub.customer.id,
            status=sub.status,
            created=sub.created,
            item_id=sub.item_id,
            price_obj=self.price_object(sub.price_id),
            item_created=sub.item_created,
            current_period_start=sub.current_period_start,
            current_period_end=sub.current_period_end,
            metadata=sub.metadata,
            cancel_at_period_end=sub.cancel_at_period_end,
            cancel_at=sub.cancel_at,
            canceled_at=sub.canceled_at,
            ended_at=sub.ended_at,
            latest_invoice=sub.latest_invoice,
            livemode=self.livemode,
            pending_update=self._pending_update(sub),
        )

    def _pending_update(self, sub: Subscription) -> JSON | None:
        """Stripe's ``pending_update``: the items the subscription moves to once paid."""
        if sub.pending_price_id is None:
            return None
        item = subscription_item(
            layout=self.layout,
            id=sub.item_id,
            subscription=sub.id,
            price_obj=self.price_object(sub.pending_price_id),
            created=sub.item_created,
            current_period_start=sub.current_period_start,
            current_period_end=sub.current_period_end,
        )
        return {
            "billing_cycle_anchor": None,
            "expires_at": self.clock.now + 23 * 3600,
            "subscription_items": [item],
            "trial_end": None,
            "trial_from_plan": None,
        }

    def charge_object(self, payment: Payment) -> JSON:
        return charge(
            layout=self.layout,
            id=payment.charge_id,
            amount=payment.amount,
            created=payment.created,
            customer=payment.customer_id,
            payment_intent=payment.payment_intent_id,
            amount_refunded=payment.amount_refunded,
            refunds=payment.refunds,
            invoice=payment.invoice_id,
            metadata=payment.metadata,
            disputed=payment.disputed,
            livemode=self.livemode,
        )

    def _subscription_previous(self, sub: Subscription, changes: JSON) -> JSON:
        """``previous_attributes`` as Stripe renders it for the fields that changed.

        A change of price or period shows up in ``items`` (and, legacy, in
        ``plan`` and ``current_period_*`` on the subscription).
        """
        old = copy.deepcopy(sub)
        for key, value in changes.items():
            setattr(old, key, value)
        old_obj = self.subscription_object(old)
        prev: JSON = {}
        for key in (
            "status",
            "cancel_at_period_end",
            "cancel_at",
            "canceled_at",
            "ended_at",
            "latest_invoice",
            "metadata",
        ):
            if key in changes or (key == "cancel_at" and "cancel_at_period_end" in changes):
                prev[key] = old_obj[key]
        if "pending_price_id" in changes:
            prev["pending_update"] = old_obj["pending_update"]
        item_keys = {"price_id", "current_period_start", "current_period_end"}
        if item_keys & changes.keys():
            prev["items"] = old_obj["items"]
        if self.layout == "legacy":
            if "price_id" in changes:
                prev["plan"] = old_obj["plan"]
            for key in ("current_period_start", "current_period_end"):
                if key in changes:
                    prev[key] = old_obj[key]
        return prev

    def _subscription_updated(self, sub: Subscription, changes: JSON) -> JSON:
        previous = self._subscription_previous(sub, changes)
        return self._emit("customer.subscription.updated", self.subscription_object(sub), previous)

    # -- customers -----------------------------------------------------------

    def customer(self, user_id: str | None = None, email: str | None = None) -> Customer:
        cid = self.ids.new("cus")
        return Customer(cid, user_id, email or f"{cid.lower()}@example.test", self.clock.now)

    # -- subscriptions -------------------------------------------------------

    def subscribe(
        self,
        cust: Customer,
        price_id: str,
        *,
        user_id: str | None = None,
        via_checkout: bool = True,
        paid: bool = True,
        metadata: dict[str, str] | None = None,
    ) -> tuple[Subscription, list[JSON]]:
        """A new subscription, as Checkout creates it.

        Events: ``customer.subscription.created``, the first invoice
        (``invoice.paid``, or ``invoice.payment_failed`` and an ``incomplete``
        subscription when ``paid=False``), then ``checkout.session.completed``
        (Stripe often delivers it last). ``user_id`` (default: the
        customer's) goes to the session and the subscription metadata, as
        the sidecar's Checkout writes it.
        """
        user = user_id if user_id is not None else cust.user_id
        meta = dict(metadata) if metadata is not None else ({"user_id": user} if user else {})
        now = self.clock.now
        sub = Subscription(
            id=self.ids.new("sub"),
            item_id=self.ids.new("si"),
            customer=cust,
            price_id=price_id,
            status="active" if paid else "incomplete",
            created=now,
            item_created=now,
            current_period_start=now,
            current_period_end=now + MONTH,
            metadata=meta,
        )
        events = [self._emit("customer.subscription.created", self.subscription_object(sub))]
        self._tick()
        inv_events = self._bill(sub, "subscription_create", paid=paid)
        events += inv_events
        if via_checkout:
            self._tick()
            session = checkout_session(
                id=self.ids.new("cs_test"),
                mode="subscription",
                created=now,
                payment_status="paid" if paid else "unpaid",
                status="complete" if paid else "open",
                customer=cust.id,
                client_reference_id=user,
                metadata={"user_id": user, "price_id": price_id} if user else {},
                subscription=sub.id,
                invoice=sub.latest_invoice,
                amount_total=self.prices.get(price_id, DEFAULT_AMOUNT),
                success_url=self.success_url,
                cancel_url=self.cancel_url,
                email=cust.email,
                livemode=self.livemode,
            )
            if paid:
                events.append(self._emit("checkout.session.completed", session))
        return sub, events

    def renew(self, sub: Subscription, *, paid: bool = True) -> list[JSON]:
        """Move to the next period: the renewal invoice, then the subscription update.

        Pending prorations (from ``change_plan(invoice_now=False)``) are added
        to this invoice as proration lines.
        """
        self.clock.now = max(self.clock.now, sub.current_period_end)
        changes = {
            "current_period_start": sub.current_period_start,
            "current_period_end": sub.current_period_end,
            "latest_invoice": sub.latest_invoice,
        }
        if sub.scheduled_price_id:
            changes["price_id"] = sub.price_id
            sub.price_id, sub.scheduled_price_id = sub.scheduled_price_id, None
        sub.current_period_start = sub.current_period_end
        sub.current_period_end = sub.current_period_start + MONTH
        events = self._bill(sub, "subscription_cycle", paid=paid)
        if not paid and sub.status in {"active", "trialing"}:
            changes["status"] = sub.status
            sub.status = "past_due"
        self._tick()
        events.append(self._subscription_updated(sub, changes))
        return events

    def _bill(self, sub: Subscription, reason: str, *, paid: bool) -> list[JSON]:
        """Invoice the current period (plus pending prorations) and try to pay it."""
        inv_id = self.ids.new("in")
        lines = [self._proration_line(sub, inv_id, *pending) for pending in sub.pending_prorations]
        sub.pending_prorations = []
        price_obj = self.price_object(sub.price_id)
        lines.append(
            invoice_line(
                layout=self.layout,
                id=self.ids.new("il"),
                invoice=inv_id,
                price_obj=price_obj,
                amount=price_obj["unit_amount"],
                period_start=sub.current_period_start,
                period_end=sub.current_period_end,
                subscription=sub.id,
                subscription_item=sub.item_id,
                livemode=self.livemode,
            )
        )
        sub.latest_invoice = inv_id
        open_invoice = OpenInvoice(inv_id, sub, lines, reason, attempt_count=1)
        return self._attempt(open_invoice, paid=paid)

    def _proration_line(
        self, sub: Subscription, inv_id: str, price_id: str, amount: int, start: int
    ) -> JSON:
        return invoice_line(
            layout=self.layout,
            id=self.ids.new("il"),
            invoice=inv_id,
            price_obj=self.price_object(price_id),
            amount=amount,
            period_start=start,
            period_end=sub.current_period_end,
            subscription=sub.id,
            subscription_item=sub.item_id,
            proration=True,
            description=("Unused time on " if amount < 0 else "Remaining time on ") + price_id,
            livemode=self.livemode,
            credited_invoice=sub.latest_invoice if amount < 0 else None,
        )

    def _attempt(self, inv: OpenInvoice, *, paid: bool) -> list[JSON]:
        sub = inv.subscription
        events: list[JSON] = []
        payment = None
        total = sum(line["amount"] for line in inv.lines)
        if paid and total > 0:
            payment = self._payment(sub.customer, total, invoice_id=inv.id)
            sub.payments.append(payment)
        obj = invoice(
            layout=self.layout,
            id=inv.id,
            customer=sub.customer.id,
            subscription=sub.id,
            subscription_metadata=sub.metadata,
            lines=inv.lines,
            status="paid" if paid else "open",
            created=self.clock.now,
            billing_reason=inv.billing_reason,
            attempt_count=inv.attempt_count,
            charge=payment.charge_id if payment else None,
            payment_intent=payment.payment_intent_id if payment else None,
            livemode=self.livemode,
        )
        if self.noise and inv.attempt_count == 1:
            draft = {**obj, "status": "draft"}
            events.append(self._emit("invoice.created", draft))
            events.append(self._emit("invoice.finalized", {**obj, "status": "open"}))
        if payment and self.noise:
            events.append(self._emit("charge.succeeded", self.charge_object(payment)))
        events.append(self._emit("invoice.paid" if paid else "invoice.payment_failed", obj))
        if paid and self.noise:
            events.append(self._emit("invoice.payment_succeeded", obj))
        if payment and self.layout == "basil":
            # From basil on, the only webhook that joins a payment to its invoice.
            events.append(
                self._emit(
                    "invoice_payment.paid",
                    self.invoice_payment_object(payment),
                    ids=self.payment_ids,
                )
            )
        if not paid:
            self._open_invoices[sub.id] = inv
        return events

    def invoice_payment_object(self, payment: Payment) -> JSON:
        assert payment.invoice_id is not None
        return invoice_payment(
            id=self.payment_ids.new("inpay"),
            invoice=payment.invoice_id,
            payment_intent=payment.payment_intent_id,
            amount_paid=payment.amount,
            created=payment.created,
            livemode=self.livemode,
        )

    def fail_renewal(self, sub: Subscription) -> list[JSON]:
        """The renewal payment fails: ``invoice.payment_failed``, subscription ``past_due``."""
        return self.renew(sub, paid=False)

    def retry_payment(self, sub: Subscription, *, paid: bool = True) -> list[JSON]:
        """Retry the subscription's open invoice (after a failure or an incomplete start).

        Paying the invoice of a pending change applies the change.
        """
        inv = self._open_invoices.pop(sub.id)
        self._tick(DAY)
        inv.attempt_count += 1
        events = self._attempt(inv, paid=paid)
        if paid and sub.pending_price_id is not None:
            changes = {"price_id": sub.price_id, "pending_price_id": sub.pending_price_id}
            sub.price_id, sub.pending_price_id = sub.pending_price_id, None
            self._tick()
            events.append(self._subscription_updated(sub, changes))
        elif paid and sub.status in {"incomplete", "past_due", "unpaid"}:
            changes = {"status": sub.status}
            sub.status = "active"
            self._tick()
            events.append(self._subscription_updated(sub, changes))
        return events

    def change_plan(
        self,
        sub: Subscription,
        new_price_id: str,
        *,
        invoice_now: bool = False,
        same_second: bool = False,
        paid: bool = True,
        pending_if_incomplete: bool = False,
    ) -> list[JSON]:
        """Upgrade or downgrade within the period, with prorations.

        ``customer.subscription.updated`` with ``previous_attributes`` naming the
        old price. With ``invoice_now`` (``proration_behavior=always_invoice``)
        an invoice follows at once that holds only proration lines
        (billing_reason ``subscription_update``): ``invoice.paid``, or
        ``invoice.payment_failed`` when not ``paid``; otherwise the prorations
        wait for the next renewal invoice.

        With ``pending_if_incomplete`` (``payment_behavior``, what the sidecar
        asks for) and an invoice that is not paid, the change waits: the
        invoice fails, the update only shows a ``pending_update``, and the
        price moves when ``retry_payment`` pays the invoice. Without it
        (``allow_incomplete``, Stripe's default) the change stays and an update
        makes the subscription ``past_due`` until ``retry_payment`` pays.
        """
        if not same_second:
            self._tick()
        old_price = sub.price_id
        period = sub.current_period_end - sub.current_period_start
        remaining = max(sub.current_period_end - self.clock.now, 0)
        credit = -round(self.prices.get(old_price, DEFAULT_AMOUNT) * remaining / period)
        debit = round(self.prices.get(new_price_id, DEFAULT_AMOUNT) * remaining / period)
        sub.pending_prorations += [
            (old_price, credit, self.clock.now),
            (new_price_id, debit, self.clock.now),
        ]
        if pending_if_incomplete and invoice_now and not paid:
            events = self._invoice_prorations(sub, paid=False)
            sub.pending_price_id = new_price_id
            return [*events, self._subscription_updated(sub, {"pending_price_id": None})]
        sub.price_id = new_price_id
        events = [self._subscription_updated(sub, {"price_id": old_price})]
        if invoice_now:
            events += self._invoice_prorations(sub, paid=paid)
            if not paid and sub.status in {"active", "trialing"}:
                # payment_behavior=allow_incomplete (Stripe's default): the change
                # stays and the subscription is past due until the invoice is paid.
                changes = {"status": sub.status}
                sub.status = "past_due"
                self._tick()
                events.append(self._subscription_updated(sub, changes))
        return events

    def _invoice_prorations(self, sub: Subscription, *, paid: bool = True) -> list[JSON]:
        self._tick()
        inv_id = self.ids.new("in")
        lines = [self._proration_line(sub, inv_id, *pending) for pending in sub.pending_prorations]
        sub.pending_prorations = []
        return self._attempt(OpenInvoice(inv_id, sub, lines, "subscription_update", 1), paid=paid)

    def schedule_change(self, sub: Subscription, new_price_id: str) -> list[JSON]:
        """A plan change for the period's end (a subscription schedule): the next
        renewal bills the new price; nothing is sent until then."""
        sub.scheduled_price_id = new_price_id
        return []

    def cancel(self, sub: Subscription, *, at_period_end: bool = True) -> list[JSON]:
        """Cancel: scheduled (``cancel_at_period_end``) or immediate (``deleted``)."""
        self._tick()
        if at_period_end:
            changes = {"cancel_at_period_end": False, "cancel_at": None, "canceled_at": None}
            sub.cancel_at_period_end = True
            sub.cancel_at = sub.current_period_end
            sub.canceled_at = self.clock.now
            return [self._subscription_updated(sub, changes)]
        sub.canceled_at = self.clock.now
        return self._end(sub)

    def resume(self, sub: Subscription) -> list[JSON]:
        """Undo a cancellation scheduled for the period's end (the portal's "renew plan")."""
        self._tick()
        changes = {
            "cancel_at_period_end": sub.cancel_at_period_end,
            "cancel_at": sub.cancel_at,
            "canceled_at": sub.canceled_at,
        }
        sub.cancel_at_period_end, sub.cancel_at, sub.canceled_at = False, None, None
        return [self._subscription_updated(sub, changes)]

    def end_of_period(self, sub: Subscription) -> list[JSON]:
        """A subscription scheduled to cancel reaches its period end: ``deleted``."""
        self.clock.now = max(self.clock.now, sub.current_period_end)
        return self._end(sub)

    def _end(self, sub: Subscription) -> list[JSON]:
        sub.status = "canceled"
        sub.ended_at = self.clock.now
        sub.canceled_at = sub.canceled_at or self.clock.now
        return [self._emit("customer.subscription.deleted", self.subscription_object(sub))]

    # -- packs ---------------------------------------------------------------

    def _payment(
        self,
        cust: Customer,
        amount: int,
        *,
        invoice_id: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> Payment:
        return Payment(
            payment_intent_id=self.ids.new("pi"),
            charge_id=self.ids.new("ch"),
            amount=amount,
            customer_id=cust.id,
            created=self.clock.now,
            invoice_id=invoice_id,
            metadata=dict(metadata or {}),
        )

    def buy_pack(
        self,
        cust: Customer,
        price_id: str,
        *,
        user_id: str | None = None,
        asynchronous: bool = False,
        price_id_in_metadata: bool = True,
        client_reference_id: str | Literal[False] | None = None,
    ) -> tuple[Purchase, list[JSON]]:
        """A Checkout Session in payment mode for a credit pack.

        Synchronous: ``checkout.session.completed`` with ``payment_status =
        "paid"``. Asynchronous (bank debits): ``completed`` with ``unpaid``;
        finish with ``settle(purchase)``. The session metadata carries
        ``user_id`` and ``price_id`` as the sidecar writes them
        (``price_id_in_metadata=False``: a session created elsewhere).
        """
        self._tick()
        user = user_id if user_id is not None else cust.user_id
        amount = self.prices.get(price_id, DEFAULT_AMOUNT)
        metadata: dict[str, str] = {"user_id": user} if user else {}
        if price_id_in_metadata:
            metadata["price_id"] = price_id
        ref = user if client_reference_id is None else (client_reference_id or None)
        payment = self._payment(cust, amount, metadata={"user_id": user} if user else {})
        purchase = Purchase(
            session_id=self.ids.new("cs_test"),
            customer=cust,
            price_id=price_id,
            amount=amount,
            metadata=metadata,
            client_reference_id=ref,
            created=self.clock.now,
            payment=payment,
            paid=not asynchronous,
        )
        events: list[JSON] = []
        if self.noise and not asynchronous:
            events.append(self._emit("charge.succeeded", self.charge_object(payment)))
            events.append(
                self._emit(
                    "payment_intent.succeeded",
                    {"id": payment.payment_intent_id, "object": "payment_intent"},
                )
            )
        events.append(self._emit("checkout.session.completed", self.session_object(purchase)))
        return purchase, events

    def session_object(self, purchase: Purchase) -> JSON:
        return checkout_session(
            id=purchase.session_id,
            mode="payment",
            created=purchase.created,
            payment_status="paid" if purchase.paid else "unpaid",
            customer=purchase.customer.id,
            client_reference_id=purchase.client_reference_id,
            metadata=purchase.metadata,
            payment_intent=purchase.payment.payment_intent_id,
            amount_total=purchase.amount,
            success_url=self.success_url,
            cancel_url=self.cancel_url,
            email=purchase.customer.email,
            livemode=self.livemode,
        )

    def settle(self, purchase: Purchase, *, succeeded: bool = True) -> list[JSON]:
        """An asynchronous payment finishes: ``async_payment_succeeded`` or ``_failed``."""
        self._tick(2 * DAY)
        purchase.paid = succeeded
        kind = "succeeded" if succeeded else "failed"
        return [self._emit(f"checkout.session.async_payment_{kind}", self.session_object(purchase))]

    # -- refunds and disputes -------------------------------------------------

    def _payment_of(self, target: Purchase | Subscription | Payment) -> Payment:
        if isinstance(target, Purchase):
            return target.payment
        if isinstance(target, Subscription):
            return target.payments[-1]
        return target

    def refund(
        self, target: Purchase | Subscription | Payment, amount: int | None = None
    ) -> list[JSON]:
        """Refund part (or all, by default the rest) of a payment: ``charge.refunded``.

        The charge's ``amount_refunded`` is cumulative, as Stripe's is.
        """
        self._tick()
        payment = self._payment_of(target)
        amount = payment.amount - payment.amount_refunded if amount is None else amount
        payment.amount_refunded += amount
        payment.refunds.insert(
            0,
            refund(
                id=self.ids.new("re"),
                charge=payment.charge_id,
                payment_intent=payment.payment_intent_id,
                amount=amount,
                created=self.clock.now,
            ),
        )
        obj = self.charge_object(payment)
        previous = {
            "amount_refunded": payment.amount_refunded - amount,
            "refunded": payment.amount_refunded - amount >= payment.amount,
        }
        return [self._emit("charge.refunded", obj, previous)]

    def open_dispute(
        self, target: Purchase | Subscription | Payment, *, status: str = OPEN_DISPUTE_STATUS
    ) -> tuple[Dispute, list[JSON]]:
        """The cardholder disputes a payment: ``charge.dispute.created``."""
        self._tick()
        payment = self._payment_of(target)
        payment.disputed = True
        dsp = Dispute(self.ids.new("dp"), payment, payment.amount, status, self.clock.now)
        return dsp, [self._emit("charge.dispute.created", self.dispute_object(dsp))]

    def close_dispute(self, dsp: Dispute, *, won: bool) -> list[JSON]:
        """The dispute is decided: ``charge.dispute.closed`` with ``won`` or ``lost``."""
        self._tick(7 * DAY)
        previous = {"status": dsp.status}
        dsp.status = "won" if won else "lost"
        return [self._emit("charge.dispute.closed", self.dispute_object(dsp), previous)]

    def dispute_object(self, dsp: Dispute) -> JSON:
        return dispute(
            id=dsp.id,
            charge=dsp.payment.charge_id,
            payment_intent=dsp.payment.payment_intent_id,
            amount=dsp.amount,
            status=dsp.status,
            created=dsp.created,
            reason=dsp.reason,
            livemode=self.livemode,
        )

    # -- delivery quirks ------------------------------------------------------

    def twin(self, evt: JSON) -> JSON:
        """The same change announced again under a new event id (Stripe does this)."""
        copied = copy.deepcopy(evt)
        copied["id"] = self.ids.new("evt")
        self.sent.append(copied)
        return copied

    def unhandled(self, type: str = "customer.updated") -> JSON:
        """An event of a type the product ignores."""
        cust = self.customer()
        return self._emit(type, customer(id=cust.id, created=cust.created, livemode=self.livemode))
