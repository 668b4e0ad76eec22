"""Builders of typed Stripe events, the shape `public.apply_stripe_event` takes.

The shape is defined once, in `schema/typed_event.schema.json`; every builder
here returns a dict that validates against it (`validate_typed_event`), with a
`raw` Stripe event (basil or legacy layout) coherent with the typed fields, as
the sidecar would produce after normalising a webhook.

Use from SQL-level tests, chaos tests and benchmarks:

    from tests.support import typed_events as te

    buyer = te.Buyer.new(user_id)                      # a user with a Stripe customer
    sub = buyer.subscription("starter")                # ids of one subscription
    apply(sub.invoice_paid(period=0))                  # pays period 0 (starter)
    apply(sub.updated(period=0, plan="pro", previous_plan="starter", created=te.at(0, 60)))
    pack = buyer.pack_purchase("pack_500")             # ids of one Checkout Session
    apply(pack.completed())
    apply(pack.refunded(amount_refunded=pack.amount // 2))

Every builder takes keyword arguments only; `event_id` defaults to a fresh
`evt_...` id and `created` to `at(0)`. Pass `created` explicitly whenever the
order of Stripe's clock matters (subscription state, plan of a period).
Lower-level builders (`checkout_session_event`, `invoice_event`,
`subscription_event`, `charge_refunded`, `dispute_event`) take every typed
field, so any combination (including nonsense ones for chaos tests) can be
built; `envelope` wraps an arbitrary object.
"""

from __future__ import annotations

import copy
import json
import secrets
import string
import uuid
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import jsonschema

from tally.paths import ROOT

SCHEMA_PATH = ROOT / "schema" / "typed_event.schema.json"

# Stripe's clock for scenarios: period n covers [at(n), at(n + 1)).
T0 = 1_780_000_000
DAY = 86_400
PERIOD = 30 * DAY

BASIL_API_VERSION = "2025-03-31.basil"
LEGACY_API_VERSION = "2025-02-24.acacia"

# The seed catalog (supabase/seed.sql): key -> (Stripe price id, credits).
PLANS: dict[str, tuple[str, int]] = {
    "starter": ("price_starter_monthly_fake", 1000),
    "pro": ("price_pro_monthly_fake", 5000),
}
PACKS: dict[str, tuple[str, int]] = {
    "pack_500": ("price_pack_500_fake", 500),
    "pack_2000": ("price_pack_2000_fake", 2000),
}
# What a pack costs in cents (Checkout's amount_total, the charge's amount).
PACK_AMOUNTS: dict[str, int] = {"pack_500": 500, "pack_2000": 1500}
PLAN_AMOUNTS: dict[str, int] = {"starter": 900, "pro": 2900}
SIGNUP_GRANT = 500

OPEN_DISPUTE_STATUSES = (
    "warning_needs_response",
    "warning_under_review",
    "needs_response",
    "under_review",
)


# --- ids and time -----------------------------------------------------------


def new_id(prefix: str) -> str:
    """A fresh Stripe-looking id, unique per call.

    Shaped like Stripe's: `cus_NffrFeUfNV2Hib`-style for most objects, and
    `cs_test_...` for Checkout Sessions (the only ids that show the mode).
    """
    body = "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))
    return f"cs_test_{body}" if prefix == "cs" else f"{prefix}_{body}"


_ID_ALPHABET = string.ascii_letters + string.digits


def at(period: int, seconds: int = 0) -> int:
    """Unix seconds: the start of scenario period `period`, plus `seconds`."""
    return T0 + period * PERIOD + seconds


def plan_price(plan: str) -> str:
    return PLANS[plan][0]


def pack_price(pack: str) -> str:
    return PACKS[pack][0]


# --- schema -------------------------------------------------------------------


@cache
def schema() -> dict[str, Any]:
    """The typed event JSON Schema (read once)."""
    return json.loads(SCHEMA_PATH.read_text())


@cache
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema())


def validate_typed_event(event: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError unless `event` follows the schema."""
    _validator().validate(event)


def is_valid_typed_event(event: dict[str, Any]) -> bool:
    return _validator().is_valid(event)


OBJECT_KEYS: dict[str, str] = {
    "checkout.session.completed": "checkout_session",
    "checkout.session.async_payment_succeeded": "checkout_session",
    "checkout.session.async_payment_failed": "checkout_session",
    "invoice.paid": "invoice",
    "invoice.payment_failed": "invoice",
    "customer.subscription.created": "subscription",
    "customer.subscription.updated": "subscription",
    "customer.subscription.deleted": "subscription",
    "charge.refunded": "charge",
    "charge.dispute.created": "dispute",
    "charge.dispute.closed": "dispute",
}


# --- envelope ----------------------------------------------------------------


def envelope(
    event_type: str,
    object_key: str | None,
    typed_object: dict[str, Any] | None,
    raw_object: dict[str, Any],
    *,
    event_id: str | None = None,
    created: int | None = None,
    layout: str = "basil",
    previous_attributes: dict[str, Any] | None = None,
    livemode: bool = False,
) -> dict[str, Any]:
    """Wrap a typed object (and the Stripe object it came from) into a typed event."""
    event_id = event_id or new_id("evt")
    created = at(0) if created is None else created
    api_version = BASIL_API_VERSION if layout == "basil" else LEGACY_API_VERSION
    data: dict[str, Any] = {"object": raw_object}
    if previous_attributes is not None:
        data["previous_attributes"] = previous_attributes
    event: dict[str, Any] = {
        "schema_version": 1,
        "id": event_id,
        "type": event_type,
        "created": created,
        "livemode": livemode,
        "api_version": api_version,
        "layout": layout,
        "raw": {
            "id": event_id,
            "object": "event",
            "api_version": api_version,
            "created": created,
            "data": data,
            "livemode": livemode,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": event_type,
        },
    }
    if object_key is not None and typed_object is not None:
        event[object_key] = typed_object
    return event


def unhandled_event(
    event_type: str = "customer.created", *, event_id: str | None = None
) -> dict[str, Any]:
    """An event of a type the engine does not handle (acknowledged, ignored)."""
    customer_id = new_id("cus")
    return envelope(
        event_type,
        None,
        None,
        {"id": customer_id, "object": "customer", "metadata": {}},
        event_id=event_id,
    )


# --- checkout sessions --------------------------------------------------------


def checkout_session_event(
    *,
    event_type: str = "checkout.session.completed",
    session_id: str | None = None,
    mode: str = "payment",
    status: str | None = "complete",
    payment_status: str = "paid",
    customer_id: str | None = None,
    client_reference_id: str | None = None,
    metadata_user_id: str | None = None,
    metadata_price_id: str | None = None,
    subscription_id: str | None = None,
    payment_intent_id: str | None = None,
    amount_total: int | None = None,
    currency: str | None = "usd",
    event_id: str | None = None,
    created: int | None = None,
    layout: str = "basil",
) -> dict[str, Any]:
    """Any `checkout.session.*` event, every typed field settable."""
    session_id = session_id or new_id("cs")
    typed = {
        "id": session_id,
        "mode": mode,
        "status": status,
        "payment_status": payment_status,
        "customer_id": customer_id,
        "client_reference_id": client_reference_id,
        "metadata_user_id": metadata_user_id,
        "metadata_price_id": metadata_price_id,
        "subscription_id": subscription_id,
        "payment_intent_id": payment_intent_id,
        "amount_total": amount_total,
        "currency": currency,
    }
    metadata = {}
    if metadata_user_id is not None:
        metadata["user_id"] = metadata_user_id
    if metadata_price_id is not None:
        metadata["price_id"] = metadata_price_id
    raw = {
        "id": session_id,
        "object": "checkout.session",
        "mode": mode,
        "status": status,
        "payment_status": payment_status,
        "customer": customer_id,
        "client_reference_id": client_reference_id,
        "metadata": metadata,
        "subscription": subscription_id,
        "payment_intent": payment_intent_id,
        "amount_total": amount_total,
        "amount_subtotal": amount_total,
        "currency": currency,
        "livemode": False,
        "created": (created or at(0)) - 30,
        "success_url": "https://app.example.test/billing/success",
        "cancel_url": "https://app.example.test/billing",
    }
    return envelope(
        event_type,
        "checkout_session",
        typed,
        raw,
        event_id=event_id,
        created=created,
        layout=layout,
    )


# --- invoices -------------------------------------------------------------------


def invoice_event(
    *,
    event_type: str = "invoice.paid",
    invoice_id: str | None = None,
    customer_id: str | None = None,
    subscription_id: str | None = None,
    status: str = "paid",
    billing_reason: str | None = "subscription_cycle",
    amount_paid: int = 900,
    amount_due: int = 900,
    currency: str | None = "usd",
    subscription_metadata_user_id: str | None = None,
    price_id: str | None = None,
    period_start: int | None = None,
    period_end: int | None = None,
    charge_id: str | None = None,
    payment_intent_id: str | None = None,
    event_id: str | None = None,
    created: int | None = None,
    invoice_created: int | None = None,
    layout: str = "basil",
) -> dict[str, Any]:
    """Any `invoice.*` event, every typed field settable.

    `charge_id` and `payment_intent_id` exist on legacy invoices only; the
    builder forces them to null for the basil layout, as the sidecar does.
    `invoice_created` (when the invoice was billed) defaults to the period
    start, as for Stripe's renewal invoices, else to the event's `created`.
    """
    invoice_id = invoice_id or new_id("in")
    if layout == "basil":
        charge_id = payment_intent_id = None
    if invoice_created is None:
        invoice_created = period_start if period_start is not None else created
    typed = {
        "id": invoice_id,
        "created": invoice_created,
        "customer_id": customer_id,
        "subscription_id": subscription_id,
        "status": status,
        "billing_reason": billing_reason,
        "amount_paid": amount_paid,
        "amount_due": amount_due,
        "currency": currency,
        "subscription_metadata_user_id": subscription_metadata_user_id,
        "price_id": price_id,
        "period_start": period_start,
        "period_end": period_end,
        "charge_id": charge_id,
        "payment_intent_id": payment_intent_id,
    }
    raw = _raw_invoice(typed, layout)
    return envelope(
        event_type, "invoice", typed, raw, event_id=event_id, created=created, layout=layout
    )


def _raw_invoice(typed: dict[str, Any], layout: str) -> dict[str, Any]:
    sub_metadata = (
        {"user_id": typed["subscription_metadata_user_id"]}
        if typed["subscription_metadata_user_id"]
        else {}
    )
    lines = []
    if typed["price_id"] is not None:
        period = {"start": typed["period_start"], "end": typed["period_end"]}
        if layout == "basil":
            line = {
                "object": "line_item",
                "id": new_id("il"),
                "amount": typed["amount_due"],
                "period": period,
                "pricing": {"type": "price_details", "price_details": {"price": typed["price_id"]}},
                "parent": {
                    "type": "subscription_item_details",
                    "subscription_item_details": {
                        "proration": False,
                        "subscription": typed["subscription_id"],
                    },
                },
            }
        else:
            line = {
                "object": "line_item",
                "id": new_id("il"),
                "amount": typed["amount_due"],
                "period": period,
                "price": {"id": typed["price_id"], "object": "price"},
                "proration": False,
                "subscription": typed["subscription_id"],
                "type": "subscription",
            }
        lines.append(line)
    raw: dict[str, Any] = {
        "id": typed["id"],
        "object": "invoice",
        "created": typed["created"],
        "customer": typed["customer_id"],
        "status": typed["status"],
        "billing_reason": typed["billing_reason"],
        "amount_paid": typed["amount_paid"],
        "amount_due": typed["amount_due"],
        "currency": typed["currency"],
        "lines": {"object": "list", "data": lines, "has_more": False},
        "livemode": False,
    }
    if layout == "basil":
        raw["parent"] = (
            {
                "type": "subscription_details",
                "subscription_details": {
                    "subscription": typed["subscription_id"],
                    "metadata": sub_metadata,
                },
            }
            if typed["subscription_id"]
            else None
        )
    else:
        raw["subscription"] = typed["subscription_id"]
        raw["subscription_details"] = {"metadata": sub_metadata}
        raw["charge"] = typed["charge_id"]
        raw["payment_intent"] = typed["payment_intent_id"]
        raw["paid"] = typed["status"] == "paid"
    return raw


# --- subscriptions --------------------------------------------------------------


def subscription_event(
    *,
    event_type: str = "customer.subscription.updated",
    subscription_id: str | None = None,
    customer_id: str | None = None,
    status: str = "active",
    subscription_created: int | None = None,
    price_id: str | None = None,
    current_period_start: int | None = None,
    current_period_end: int | None = None,
    cancel_at_period_end: bool = False,
    canceled_at: int | None = None,
    ended_at: int | None = None,
    metadata_user_id: str | None = None,
    previous: dict[str, Any] | None = None,
    event_id: str | None = None,
    created: int | None = None,
    layout: str = "basil",
) -> dict[str, Any]:
    """Any `customer.subscription.*` event, every typed field settable."""
    subscription_id = subscription_id or new_id("sub")
    typed = {
        "id": subscription_id,
        "customer_id": customer_id,
        "status": status,
        "created": subscription_created,
        "price_id": price_id,
        "current_period_start": current_period_start,
        "current_period_end": current_period_end,
        "cancel_at_period_end": cancel_at_period_end,
        "canceled_at": canceled_at,
        "ended_at": ended_at,
        "metadata_user_id": metadata_user_id,
        "previous": previous,
    }
    item: dict[str, Any] = {
        "object": "subscription_item",
        "id": new_id("si"),
        "price": {"id": price_id, "object": "price"},
        "quantity": 1,
    }
    raw: dict[str, Any] = {
        "id": subscription_id,
        "object": "subscription",
        "customer": customer_id,
        "status": status,
        "created": subscription_created,
        "cancel_at_period_end": cancel_at_period_end,
        "canceled_at": canceled_at,
        "ended_at": ended_at,
        "metadata": {"user_id": metadata_user_id} if metadata_user_id else {},
        "items": {"object": "list", "data": [item], "has_more": False},
        "livemode": False,
    }
    period = {
        "current_period_start": current_period_start,
        "current_period_end": current_period_end,
    }
    if layout == "basil":
        item.update(period)
    else:
        raw.update(period)
    return envelope(
        event_type,
        "subscription",
        typed,
        raw,
        event_id=event_id,
        created=created,
        layout=layout,
        previous_attributes=_previous_attributes(previous, layout),
    )


def _previous_attributes(previous: dict[str, Any] | None, layout: str) -> dict[str, Any] | None:
    if not previous:
        return None
    attributes: dict[str, Any] = {}
    for key, value in previous.items():
        if key == "price_id":
            attributes["items"] = {"data": [{"price": {"id": value}}]}
        elif key.startswith("current_period") and layout == "basil":
            attributes.setdefault("items", {"data": [{}]})["data"][0][key] = value
        else:
            attributes[key] = value
    return attributes


# --- charges and disputes -------------------------------------------------------


def charge_refunded(
    *,
    charge_id: str | None = None,
    customer_id: str | None = None,
    payment_intent_id: str | None = None,
    invoice_id: str | None = None,
    metadata_user_id: str | None = None,
    amount: int = 500,
    amount_refunded: int = 500,
    currency: str | None = "usd",
    event_id: str | None = None,
    created: int | None = None,
    layout: str = "basil",
) -> dict[str, Any]:
    """A `charge.refunded` event; `amount_refunded` is cumulative, as on Stripe."""
    charge_id = charge_id or new_id("ch")
    if layout == "basil":
        invoice_id = None
    typed = {
        "id": charge_id,
        "customer_id": customer_id,
        "payment_intent_id": payment_intent_id,
        "invoice_id": invoice_id,
        "metadata_user_id": metadata_user_id,
        "amount": amount,
        "amount_refunded": amount_refunded,
        "currency": currency,
    }
    raw: dict[str, Any] = {
        "id": charge_id,
        "object": "charge",
        "customer": customer_id,
        "payment_intent": payment_intent_id,
        "metadata": {"user_id": metadata_user_id} if metadata_user_id else {},
        "amount": amount,
        "amount_captured": amount,
        "amount_refunded": amount_refunded,
        "refunded": amount_refunded >= amount,
        "currency": currency,
        "paid": True,
        "status": "succeeded",
        "livemode": False,
    }
    if layout == "legacy":
        raw["invoice"] = invoice_id
    return envelope(
        "charge.refunded", "charge", typed, raw, event_id=event_id, created=created, layout=layout
    )


def dispute_event(
    *,
    event_type: str = "charge.dispute.created",
    dispute_id: str | None = None,
    charge_id: str | None = None,
    payment_intent_id: str | None = None,
    amount: int = 500,
    currency: str | None = "usd",
    status: str = "needs_response",
    reason: str | None = "fraudulent",
    event_id: str | None = None,
    created: int | None = None,
    layout: str = "basil",
) -> dict[str, Any]:
    """A `charge.dispute.created` / `charge.dispute.closed` event."""
    dispute_id = dispute_id or new_id("dp")
    typed = {
        "id": dispute_id,
        "charge_id": charge_id,
        "payment_intent_id": payment_intent_id,
        "amount": amount,
        "currency": currency,
        "status": status,
        "reason": reason,
    }
    raw = {
        "id": dispute_id,
        "object": "dispute",
        "charge": charge_id,
        "payment_intent": payment_intent_id,
        "amount": amount,
        "currency": currency,
        "status": status,
        "reason": reason,
        "livemode": False,
        "metadata": {},
    }
    return envelope(
        event_type, "dispute", typed, raw, event_id=event_id, created=created, layout=layout
    )


# --- coherent scenarios -----------------------------------------------------------


@dataclass
class PackPurchase:
    """One Checkout Session buying one pack, and the payment behind it."""

    user_id: str
    customer_id: str
    pack: str
    session_id: str = field(default_factory=lambda: new_id("cs"))
    payment_intent_id: str = field(default_factory=lambda: new_id("pi"))
    charge_id: str = field(default_factory=lambda: new_id("ch"))
    layout: str = "basil"

    @property
    def credits(self) -> int:
        return PACKS[self.pack][1]

    @property
    def amount(self) -> int:
        return PACK_AMOUNTS[self.pack]

    def session(
        self,
        *,
        event_type: str = "checkout.session.completed",
        payment_status: str = "paid",
        **overrides: Any,
    ) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "event_type": event_type,
            "session_id": self.session_id,
            "mode": "payment",
            "payment_status": payment_status,
            "customer_id": self.customer_id,
            "client_reference_id": self.user_id,
            "metadata_user_id": self.user_id,
            "metadata_price_id": pack_price(self.pack),
            "payment_intent_id": self.payment_intent_id,
            "amount_total": self.amount,
            "layout": self.layout,
        }
        fields.update(overrides)
        return checkout_session_event(**fields)

    def completed(self, **overrides: Any) -> dict[str, Any]:
        """checkout.session.completed, paid (pass payment_status="unpaid" for async methods)."""
        return self.session(**overrides)

    def async_succeeded(self, **overrides: Any) -> dict[str, Any]:
        return self.session(event_type="checkout.session.async_payment_succeeded", **overrides)

    def async_failed(self, **overrides: Any) -> dict[str, Any]:
        return self.session(
            event_type="checkout.session.async_payment_failed", payment_status="unpaid", **overrides
        )

    def refunded(self, *, amount_refunded: int, **overrides: Any) -> dict[str, Any]:
        """charge.refunded with the cumulative `amount_refunded` of this payment."""
        fields: dict[str, Any] = {
            "charge_id": self.charge_id,
            "customer_id": self.customer_id,
            "payment_intent_id": self.payment_intent_id,
            "amount": self.amount,
            "amount_refunded": amount_refunded,
            "layout": self.layout,
        }
        fields.update(overrides)
        return charge_refunded(**fields)

    def dispute(
        self,
        *,
        dispute_id: str,
        status: str = "needs_response",
        closed: bool = False,
        **overrides: Any,
    ) -> dict[str, Any]:
        """charge.dispute.created (or .closed when `closed`) for this payment."""
        fields: dict[str, Any] = {
            "event_type": "charge.dispute.closed" if closed else "charge.dispute.created",
            "dispute_id": dispute_id,
            "charge_id": self.charge_id,
            "payment_intent_id": self.payment_intent_id,
            "amount": self.amount,
            "status": status,
            "layout": self.layout,
        }
        fields.update(overrides)
        return dispute_event(**fields)


@dataclass
class Subscription:
    """One Stripe subscription of one user; period n starts at `at(n)`."""

    user_id: str
    customer_id: str
    plan: str
    subscription_id: str = field(default_factory=lambda: new_id("sub"))
    layout: str = "basil"
    # Whether events carry the user in metadata (the sidecar's sessions do).
    with_user_metadata: bool = True

    def _user(self) -> str | None:
        return self.user_id if self.with_user_metadata else None

    def checkout(self, **overrides: Any) -> dict[str, Any]:
        """checkout.session.completed in subscription mode (grants nothing by itself)."""
        fields: dict[str, Any] = {
            "mode": "subscription",
            "customer_id": self.customer_id,
            "client_reference_id": self.user_id,
            "metadata_user_id": self.user_id,
            "metadata_price_id": plan_price(self.plan),
            "subscription_id": self.subscription_id,
            "amount_total": PLAN_AMOUNTS[self.plan],
            "layout": self.layout,
            "created": at(0),
        }
        fields.update(overrides)
        return checkout_session_event(**fields)

    def invoice(
        self,
        *,
        period: int = 0,
        plan: str | None = None,
        paid: bool = True,
        **overrides: Any,
    ) -> dict[str, Any]:
        """invoice.paid (or invoice.payment_failed when not `paid`) for period `period`."""
        plan = plan or self.plan
        amount = PLAN_AMOUNTS[plan]
        fields: dict[str, Any] = {
            "event_type": "invoice.paid" if paid else "invoice.payment_failed",
            "customer_id": self.customer_id,
            "subscription_id": self.subscription_id,
            "status": "paid" if paid else "open",
            "billing_reason": "subscription_create" if period == 0 else "subscription_cycle",
            "amount_paid": amount if paid else 0,
            "amount_due": amount,
            "subscription_metadata_user_id": self._user(),
            "price_id": plan_price(plan),
            "period_start": at(period),
            "period_end": at(period + 1),
            "layout": self.layout,
            "created": at(period, 5),
        }
        if self.layout == "legacy":
            fields["charge_id"] = new_id("ch")
            fields["payment_intent_id"] = new_id("pi")
        fields.update(overrides)
        return invoice_event(**fields)

    def invoice_paid(self, *, period: int = 0, **overrides: Any) -> dict[str, Any]:
        return self.invoice(period=period, paid=True, **overrides)

    def invoice_failed(self, *, period: int = 0, **overrides: Any) -> dict[str, Any]:
        return self.invoice(period=period, paid=False, **overrides)

    def state(
        self,
        *,
        event_type: str = "customer.subscription.updated",
        period: int = 0,
        plan: str | None = None,
        status: str = "active",
        previous: dict[str, Any] | None = None,
        **overrides: Any,
    ) -> dict[str, Any]:
        """A customer.subscription.* event showing the subscription in period `period`."""
        fields: dict[str, Any] = {
            "event_type": event_type,
            "subscription_id": self.subscription_id,
            "customer_id": self.customer_id,
            "status": status,
            "subscription_created": at(0),
            "price_id": plan_price(plan or self.plan),
            "current_period_start": at(period),
            "current_period_end": at(period + 1),
            "metadata_user_id": self._user(),
            "previous": previous,
            "layout": self.layout,
            "created": at(period, 10),
        }
        fields.update(overrides)
        return subscription_event(**fields)

    def created(self, **overrides: Any) -> dict[str, Any]:
        return self.state(event_type="customer.subscription.created", **overrides)

    def updated(self, **overrides: Any) -> dict[str, Any]:
        return self.state(event_type="customer.subscription.updated", **overrides)

    def plan_changed(
        self, *, period: int, plan: str, previous_plan: str, created: int, **overrides: Any
    ) -> dict[str, Any]:
        """customer.subscription.updated moving to `plan` within period `period`."""
        return self.updated(
            period=period,
            plan=plan,
            previous={"price_id": plan_price(previous_plan)},
            created=created,
            **overrides,
        )

    def deleted(self, *, period: int, ended_at: int, **overrides: Any) -> dict[str, Any]:
        """customer.subscription.deleted: the subscription ended at `ended_at`."""
        fields: dict[str, Any] = {
            "status": "canceled",
            "canceled_at": ended_at,
            "ended_at": ended_at,
            "previous": {"status": "active"},
            "created": ended_at,
        }
        fields.update(overrides)
        return self.state(event_type="customer.subscription.deleted", period=period, **fields)


@dataclass
class Buyer:
    """A user of the app and their Stripe customer."""

    user_id: str
    customer_id: str = field(default_factory=lambda: new_id("cus"))
    layout: str = "basil"

    @classmethod
    def new(cls, user_id: uuid.UUID | str, layout: str = "basil") -> Buyer:
        return cls(user_id=str(user_id), layout=layout)

    def pack_purchase(self, pack: str = "pack_500") -> PackPurchase:
        return PackPurchase(self.user_id, self.customer_id, pack, layout=self.layout)

    def subscription(
        self, plan: str = "starter", *, with_user_metadata: bool = True
    ) -> Subscription:
        return Subscription(
            self.user_id,
            self.customer_id,
            plan,
            layout=self.layout,
            with_user_metadata=with_user_metadata,
        )


def with_event_id(event: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    """The same change announced under another event id (Stripe does that)."""
    copied = copy.deepcopy(event)
    copied["id"] = copied["raw"]["id"] = event_id or new_id("evt")
    return copied
