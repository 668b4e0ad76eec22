"""Typed Stripe events for tests, built the one way the product builds them.

Every builder makes a complete Stripe event in Stripe's own payload layout
(basil or legacy) with the builders of `tally/stripe_events.py`, then turns
it into the typed event `public.apply_stripe_event` takes with the sidecar's
real normaliser (`sidecar.events`). So SQL-level tests, chaos tests and
benchmarks feed the database exactly what the sidecar would.

    from tests.support import typed_events as te

    buyer = te.Buyer.new(user_id)                      # a user with a Stripe customer
    sub = buyer.subscription("starter")                # ids of one subscription
    apply(sub.invoice_paid(period=0))                  # pays period 0 (starter)
    for event in sub.upgrade(period=0, plan="pro", at=te.at(0, te.PERIOD // 2)):
        apply(event)                                   # subscription updated, proration paid
    pack = buyer.pack_purchase("pack_500")             # ids of one Checkout Session
    apply(pack.completed())
    apply(pack.refunded(amount_refunded=pack.amount // 2))

Builders take keyword arguments only; `event_id` defaults to a fresh
`evt_...` id and `created` to `at(0)`. Pass `created` explicitly whenever
the order of Stripe's clock matters.
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

from sidecar import events
from tally import stripe_events as se
from tally.paths import ROOT
from tests.support import catalog

JSON = dict[str, Any]
SCHEMA_PATH = ROOT / "schema" / "typed_event.schema.json"

# Stripe's clock for scenarios: period n covers [at(n), at(n + 1)).
T0 = 1_780_000_000
DAY = 86_400
PERIOD = 30 * DAY

BASIL_API_VERSION = se.BASIL_API_VERSION
LEGACY_API_VERSION = se.LEGACY_API_VERSION

PLANS, PACKS = catalog.PLANS, catalog.PACKS  # key -> (Stripe price id, credits)
PACK_AMOUNTS, PLAN_AMOUNTS = catalog.PACK_AMOUNTS, catalog.PLAN_AMOUNTS  # cents
SIGNUP_GRANT = catalog.SIGNUP_CREDITS

OPEN_DISPUTE_STATUSES = (
    "warning_needs_response",
    "warning_under_review",
    "needs_response",
    "under_review",
)

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
    "invoice_payment.paid": "invoice_payment",
}


# --- ids, time, catalog ---------------------------------------------------------

_ID_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str) -> str:
    """A fresh Stripe-looking id, unique per call (`cs_test_...` for Checkout Sessions)."""
    body = "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))
    return f"cs_test_{body}" if prefix == "cs" else f"{prefix}_{body}"


def at(period: int, seconds: int = 0) -> int:
    """Unix seconds: the start of scenario period `period`, plus `seconds`."""
    return T0 + period * PERIOD + seconds


def plan_price(plan: str) -> str:
    return PLANS[plan][0]


def pack_price(pack: str) -> str:
    return PACKS[pack][0]


PRICE_AMOUNTS = catalog.PRICE_AMOUNTS


def price_object(price_id: str, *, recurring: bool = True) -> JSON:
    return se.price(
        id=price_id,
        unit_amount=PRICE_AMOUNTS.get(price_id, se.DEFAULT_AMOUNT),
        product="prod_" + price_id.removeprefix("price_"),
        created=T0 - 90 * DAY,
        recurring=recurring,
    )


# --- schema -----------------------------------------------------------------------


@cache
def schema() -> JSON:
    """The typed event JSON Schema (read once)."""
    return json.loads(SCHEMA_PATH.read_text())


@cache
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema())


def validate_typed_event(event: JSON) -> None:
    """Raise jsonschema.ValidationError unless `event` follows the schema."""
    _validator().validate(event)


def is_valid_typed_event(event: JSON) -> bool:
    return _validator().is_valid(event)


# --- from a Stripe event to the typed event ----------------------------------------


def stripe_event(
    event_type: str,
    obj: JSON,
    *,
    event_id: str | None = None,
    created: int | None = None,
    layout: str = "basil",
    previous_attributes: JSON | None = None,
    livemode: bool = False,
) -> JSON:
    """A Stripe event envelope around `obj`, rendered in `layout`."""
    return se.event(
        id=event_id or new_id("evt"),
        type=event_type,
        created=at(0) if created is None else created,
        obj=obj,
        api_version=BASIL_API_VERSION if layout == "basil" else LEGACY_API_VERSION,
        previous_attributes=previous_attributes,
        livemode=livemode,
    )


def typed(raw_event: JSON, *, lines: list[JSON] | None = None) -> JSON:
    """The typed event the sidecar makes of a Stripe event (through JSON, as on the wire)."""
    envelope = events.read_body(se.encode(raw_event))
    return events.normalise(envelope, lines=lines)


def unhandled_event(event_type: str = "customer.created", *, event_id: str | None = None) -> JSON:
    """An event of a type the engine does not handle: acknowledged and ignored.

    The sidecar never normalises these; this is the minimal typed shape
    (id, type, raw) the database needs to answer "ignored".
    """
    raw = stripe_event(event_type, se.customer(id=new_id("cus"), created=at(0)), event_id=event_id)
    return {"schema_version": 2, "id": raw["id"], "type": event_type, "raw": raw}


# --- checkout sessions ----------------------------------------------------------------


def checkout_session_event(
    *,
    event_type: str = "checkout.session.completed",
    session_id: str | None = None,
    mode: str = "payment",
    status: str = "complete",
    payment_status: str = "paid",
    customer_id: str | None = None,
    client_reference_id: str | None = None,
    metadata_user_id: str | None = None,
    metadata_price_id: str | None = None,
    subscription_id: str | None = None,
    payment_intent_id: str | None = None,
    amount_total: int | None = None,
    event_id: str | None = None,
    created: int | None = None,
    layout: str = "basil",
) -> JSON:
    """Any `checkout.session.*` event."""
    metadata = {
        key: value
        for key, value in (("user_id", metadata_user_id), ("price_id", metadata_price_id))
        if value is not None
    }
    session = se.checkout_session(
        id=session_id or new_id("cs"),
        mode=mode,  # type: ignore[arg-type]
        created=(at(0) if created is None else created) - 30,
        payment_status=payment_status,  # type: ignore[arg-type]
        status=status,  # type: ignore[arg-type]
        customer=customer_id,
        client_reference_id=client_reference_id,
        metadata=metadata,
        subscription=subscription_id,
        payment_intent=payment_intent_id,
        amount_total=amount_total,
    )
    return typed(stripe_event(event_type, session, event_id=event_id, created=created,
                              layout=layout))  # fmt: skip


# --- invoices -------------------------------------------------------------------------


def invoice_line(
    *,
    price_id: str,
    period_start: int,
    period_end: int,
    subscription_id: str | None,
    amount: int | None = None,
    proration: bool = False,
    credited_invoice: str | None = None,
    layout: str = "basil",
    parent_kind: str | None = None,
) -> JSON:
    """One Stripe invoice line (a plan line, or a proration line with `proration`)."""
    price = price_object(price_id)
    return se.invoice_line(
        layout=layout,  # type: ignore[arg-type]
        id=new_id("il"),
        invoice="in_unknown",
        price_obj=price,
        amount=price["unit_amount"] if amount is None else amount,
        period_start=period_start,
        period_end=period_end,
        subscription=subscription_id or "",
        subscription_item=new_id("si"),
        proration=proration,
        credited_invoice=credited_invoice,
        parent_kind=parent_kind,  # type: ignore[arg-type]
    )


def invoice_event(
    *,
    event_type: str = "invoice.paid",
    invoice_id: str | None = None,
    customer_id: str | None = None,
    subscription_id: str | None = None,
    status: str = "paid",
    billing_reason: str = "subscription_cycle",
    amount_paid: int | None = None,
    subscription_metadata_user_id: str | None = None,
    price_id: str | None = None,
    period_start: int | None = None,
    period_end: int | None = None,
    lines: list[JSON] | None = None,
    charge_id: str | None = None,
    payment_intent_id: str | None = None,
    event_id: str | None = None,
    created: int | None = None,
    invoice_created: int | None = None,
    layout: str = "basil",
    embedded_lines: int | None = None,
) -> JSON:
    """Any `invoice.*` event.

    Its lines: `lines` (Stripe lines, see `invoice_line`), or one plan line
    for `price_id` over [`period_start`, `period_end`). `charge_id` and
    `payment_intent_id` exist on legacy invoices only. `invoice_created`
    (when the invoice was billed) defaults to the period start, as for
    Stripe's renewal invoices, else to the event's `created`. With
    `embedded_lines` only that many lines are in the event (`has_more`);
    the typed event then has all of them, as the sidecar fetches the rest.
    """
    invoice_id = invoice_id or new_id("in")
    if lines is None:
        lines = []
        if price_id is not None:
            assert period_start is not None and period_end is not None
            lines.append(invoice_line(price_id=price_id, period_start=period_start,
                                      period_end=period_end, subscription_id=subscription_id,
                                      layout=layout))  # fmt: skip
    for line in lines:
        line["invoice"] = invoice_id
    if invoice_created is None:
        invoice_created = period_start if period_start is not None else created
    obj = se.invoice(
        layout=layout,  # type: ignore[arg-type]
        id=invoice_id,
        customer=customer_id or new_id("cus"),
        subscription=subscription_id,
        subscription_metadata=(
            {"user_id": subscription_metadata_user_id} if subscription_metadata_user_id else {}
        ),
        lines=lines,
        status=status,  # type: ignore[arg-type]
        created=at(0) if invoice_created is None else invoice_created,
        billing_reason=billing_reason,
        charge=charge_id,
        payment_intent=payment_intent_id,
        embedded_lines=embedded_lines,
    )
    if customer_id is None:
        obj["customer"] = None
    if amount_paid is not None:
        obj["amount_paid"] = amount_paid
    raw = stripe_event(event_type, obj, event_id=event_id, created=created, layout=layout)
    return typed(raw, lines=lines if embedded_lines is not None else None)


# --- subscriptions ----------------------------------------------------------------------


def subscription_event(
    *,
    event_type: str = "customer.subscription.updated",
    subscription_id: str | None = None,
    customer_id: str | None = None,
    status: str = "active",
    subscription_created: int | None = None,
    price_id: str = PLANS["starter"][0],
    current_period_start: int | None = None,
    current_period_end: int | None = None,
    cancel_at_period_end: bool = False,
    canceled_at: int | None = None,
    ended_at: int | None = None,
    metadata_user_id: str | None = None,
    previous: JSON | None = None,
    leading_prices: tuple[str, ...] = (),
    event_id: str | None = None,
    created: int | None = None,
    layout: str = "basil",
) -> JSON:
    """Any `customer.subscription.*` event.

    `previous` names what the update changed, as tally reads
    `data.previous_attributes`: `status`, `cancel_at_period_end`,
    `price_id`, `current_period_start`, `current_period_end`; it is rendered
    the way Stripe renders it in `layout` (a changed price or period repeats
    the whole items list).
    """
    subscription_id = subscription_id or new_id("sub")
    start = at(0) if current_period_start is None else current_period_start
    end = start + PERIOD if current_period_end is None else current_period_end
    item_id = f"si_{subscription_id[4:]}"

    def render(price: str, period_start: int, period_end: int, status_: str) -> JSON:
        return se.subscription(
            layout=layout,  # type: ignore[arg-type]
            id=subscription_id,
            customer=customer_id or "",
            status=status_,
            created=at(0) if subscription_created is None else subscription_created,
            item_id=item_id,
            price_obj=price_object(price),
            item_created=at(0),
            current_period_start=period_start,
            current_period_end=period_end,
            metadata={"user_id": metadata_user_id} if metadata_user_id else {},
            cancel_at_period_end=cancel_at_period_end,
            canceled_at=canceled_at,
            ended_at=ended_at,
            leading_prices=tuple(price_object(p, recurring=True) for p in leading_prices),
        )

    obj = render(price_id, start, end, status)
    if customer_id is None:
        obj["customer"] = None
    attributes = _previous_attributes(previous, layout, render, price_id, start, end, status)
    raw = stripe_event(event_type, obj, event_id=event_id, created=created, layout=layout,
                       previous_attributes=attributes)  # fmt: skip
    return typed(raw)


def _previous_attributes(
    previous: JSON | None, layout: str, render: Any, price: str, start: int, end: int, status: str
) -> JSON | None:
    if not previous:
        return None
    attributes: JSON = {}
    for key in ("status", "cancel_at_period_end"):
        if key in previous:
            attributes[key] = previous[key]
    item_keys = {"price_id", "current_period_start", "current_period_end"}
    if item_keys & previous.keys():
        old = render(
            previous.get("price_id", price),
            previous.get("current_period_start", start),
            previous.get("current_period_end", end),
            previous.get("status", status),
        )
        attributes["items"] = old["items"]
        if layout == "legacy":
            if "price_id" in previous:
                attributes["plan"] = old["plan"]
            for key in ("current_period_start", "current_period_end"):
                if key in previous:
                    attributes[key] = previous[key]
    return attributes


# --- charges, disputes, invoice payments --------------------------------------------------


def charge_refunded(
    *,
    charge_id: str | None = None,
    customer_id: str | None = None,
    payment_intent_id: str | None = None,
    invoice_id: str | None = None,
    metadata_user_id: str | None = None,
    amount: int = 500,
    amount_refunded: int = 500,
    event_id: str | None = None,
    created: int | None = None,
    layout: str = "basil",
) -> JSON:
    """A `charge.refunded` event; `amount_refunded` is cumulative, as on Stripe.

    `invoice_id` is rendered in the legacy layout only (basil charges do not
    name their invoice).
    """
    obj = se.charge(
        layout=layout,  # type: ignore[arg-type]
        id=charge_id or new_id("ch"),
        amount=amount,
        created=at(0) if created is None else created,
        customer=customer_id,
        payment_intent=payment_intent_id,
        amount_refunded=amount_refunded,
        invoice=invoice_id,
        metadata={"user_id": metadata_user_id} if metadata_user_id else {},
    )
    return typed(stripe_event("charge.refunded", obj, event_id=event_id, created=created,
                              layout=layout,
                              previous_attributes={"amount_refunded": 0}))  # fmt: skip


def dispute_event(
    *,
    event_type: str = "charge.dispute.created",
    dispute_id: str | None = None,
    charge_id: str | None = None,
    payment_intent_id: str | None = None,
    amount: int = 500,
    status: str = "needs_response",
    reason: str = "fraudulent",
    event_id: str | None = None,
    created: int | None = None,
    layout: str = "basil",
) -> JSON:
    """A `charge.dispute.created` / `charge.dispute.closed` event."""
    obj = se.dispute(
        id=dispute_id or new_id("dp"),
        charge=charge_id or new_id("ch"),
        payment_intent=payment_intent_id,
        amount=amount,
        status=status,
        created=at(0) if created is None else created,
        reason=reason,
    )
    return typed(stripe_event(event_type, obj, event_id=event_id, created=created,
                              layout=layout))  # fmt: skip


def invoice_payment_paid(
    *,
    invoice_id: str,
    payment_intent_id: str | None,
    charge_id: str | None = None,
    amount_paid: int = 900,
    event_id: str | None = None,
    created: int | None = None,
) -> JSON:
    """An `invoice_payment.paid` event (basil and later): which payment paid an invoice."""
    obj = se.invoice_payment(
        id=new_id("inpay"),
        invoice=invoice_id,
        payment_intent=payment_intent_id,
        charge=charge_id,
        amount_paid=amount_paid,
        created=at(0) if created is None else created,
    )
    return typed(stripe_event("invoice_payment.paid", obj, event_id=event_id, created=created))


# --- coherent scenarios ------------------------------------------------------------------


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
    ) -> JSON:
        fields: JSON = {
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

    def completed(self, **overrides: Any) -> JSON:
        """checkout.session.completed, paid (pass payment_status="unpaid" for async methods)."""
        return self.session(**overrides)

    def async_succeeded(self, **overrides: Any) -> JSON:
        return self.session(event_type="checkout.session.async_payment_succeeded", **overrides)

    def async_failed(self, **overrides: Any) -> JSON:
        return self.session(
            event_type="checkout.session.async_payment_failed", payment_status="unpaid", **overrides
        )

    def refunded(self, *, amount_refunded: int, **overrides: Any) -> JSON:
        """charge.refunded with the cumulative `amount_refunded` of this payment."""
        fields: JSON = {
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
        self, *, dispute_id: str, status: str = "needs_response", closed: bool = False,
        **overrides: Any,
    ) -> JSON:  # fmt: skip
        """charge.dispute.created (or .closed when `closed`) for this payment."""
        fields: JSON = {
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
class Payment:
    """The payment of one invoice: its ids, for refunds, disputes and invoice_payment.paid."""

    invoice_id: str
    amount: int
    payment_intent_id: str = field(default_factory=lambda: new_id("pi"))
    charge_id: str = field(default_factory=lambda: new_id("ch"))


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
    # The payment of each paid invoice, by invoice id.
    payments: dict[str, Payment] = field(default_factory=dict)

    def _user(self) -> str | None:
        return self.user_id if self.with_user_metadata else None

    def checkout(self, **overrides: Any) -> JSON:
        """checkout.session.completed in subscription mode (grants nothing by itself)."""
        fields: JSON = {
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

    def _payment(self, invoice_id: str, amount: int) -> Payment:
        if invoice_id not in self.payments:
            self.payments[invoice_id] = Payment(invoice_id, amount)
        return self.payments[invoice_id]

    def invoice(
        self, *, period: int = 0, plan: str | None = None, paid: bool = True, **overrides: Any
    ) -> JSON:
        """invoice.paid (or invoice.payment_failed when not `paid`) for period `period`."""
        plan = plan or self.plan
        invoice_id = overrides.pop("invoice_id", None) or new_id("in")
        fields: JSON = {
            "event_type": "invoice.paid" if paid else "invoice.payment_failed",
            "invoice_id": invoice_id,
            "customer_id": self.customer_id,
            "subscription_id": self.subscription_id,
            "status": "paid" if paid else "open",
            "billing_reason": "subscription_create" if period == 0 else "subscription_cycle",
            "subscription_metadata_user_id": self._user(),
            "price_id": plan_price(plan),
            "period_start": at(period),
            "period_end": at(period + 1),
            "layout": self.layout,
            "created": at(period, 5),
        }
        if paid and self.layout == "legacy":
            payment = self._payment(invoice_id, PLAN_AMOUNTS[plan])
            fields["charge_id"] = payment.charge_id
            fields["payment_intent_id"] = payment.payment_intent_id
        fields.update(overrides)
        return invoice_event(**fields)

    def invoice_paid(self, *, period: int = 0, **overrides: Any) -> JSON:
        return self.invoice(period=period, paid=True, **overrides)

    def invoice_failed(self, *, period: int = 0, **overrides: Any) -> JSON:
        return self.invoice(period=period, paid=False, **overrides)

    def payment_of(self, invoice: JSON) -> Payment:
        """The payment of a paid invoice event of this subscription."""
        typed_invoice = invoice["invoice"]
        return self._payment(typed_invoice["id"], typed_invoice["amount_paid"])

    def invoice_payment(self, invoice: JSON, **overrides: Any) -> JSON:
        """invoice_payment.paid joining the invoice's payment to it (basil and later)."""
        payment = self.payment_of(invoice)
        fields: JSON = {
            "invoice_id": payment.invoice_id,
            "payment_intent_id": payment.payment_intent_id,
            "amount_paid": payment.amount,
            "created": invoice["created"],
        }
        fields.update(overrides)
        return invoice_payment_paid(**fields)

    def refund(self, invoice: JSON, *, amount_refunded: int, **overrides: Any) -> JSON:
        """charge.refunded of the payment of a paid invoice (cumulative amount)."""
        payment = self.payment_of(invoice)
        fields: JSON = {
            "charge_id": payment.charge_id,
            "customer_id": self.customer_id,
            "payment_intent_id": payment.payment_intent_id,
            "invoice_id": payment.invoice_id,
            "amount": payment.amount,
            "amount_refunded": amount_refunded,
            "layout": self.layout,
        }
        fields.update(overrides)
        return charge_refunded(**fields)

    def dispute(
        self, invoice: JSON, *, dispute_id: str, status: str = "needs_response",
        closed: bool = False, amount: int | None = None, **overrides: Any,
    ) -> JSON:  # fmt: skip
        """charge.dispute.created (or .closed) of the payment of a paid invoice."""
        payment = self.payment_of(invoice)
        fields: JSON = {
            "event_type": "charge.dispute.closed" if closed else "charge.dispute.created",
            "dispute_id": dispute_id,
            "charge_id": payment.charge_id,
            "payment_intent_id": payment.payment_intent_id,
            "amount": payment.amount if amount is None else amount,
            "status": status,
            "layout": self.layout,
        }
        fields.update(overrides)
        return dispute_event(**fields)

    def state(
        self,
        *,
        event_type: str = "customer.subscription.updated",
        period: int = 0,
        plan: str | None = None,
        status: str = "active",
        previous: JSON | None = None,
        **overrides: Any,
    ) -> JSON:
        """A customer.subscription.* event showing the subscription in period `period`."""
        fields: JSON = {
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

    def created(self, **overrides: Any) -> JSON:
        return self.state(event_type="customer.subscription.created", **overrides)

    def updated(self, **overrides: Any) -> JSON:
        return self.state(event_type="customer.subscription.updated", **overrides)

    def plan_changed(
        self, *, period: int, plan: str, previous_plan: str, created: int, **overrides: Any
    ) -> JSON:
        """customer.subscription.updated moving to `plan` within period `period`."""
        return self.updated(
            period=period,
            plan=plan,
            previous={"price_id": plan_price(previous_plan)},
            created=created,
            **overrides,
        )

    def proration_invoice(
        self,
        *,
        period: int,
        from_plan: str,
        to_plan: str,
        at_time: int,
        paid: bool = True,
        billing_reason: str = "subscription_update",
        **overrides: Any,
    ) -> JSON:
        """The invoice a plan change billed at once (`always_invoice`): two proration
        lines over [at_time, end of period), the old plan's credited (negative)."""
        end = at(period + 1)
        share = (end - at_time) / PERIOD
        credit = -round(PLAN_AMOUNTS[from_plan] * share)
        debit = round(PLAN_AMOUNTS[to_plan] * share)
        lines = [
            invoice_line(price_id=plan_price(from_plan), period_start=at_time, period_end=end,
                         subscription_id=self.subscription_id, amount=credit, proration=True,
                         credited_invoice=new_id("in"), layout=self.layout),
            invoice_line(price_id=plan_price(to_plan), period_start=at_time, period_end=end,
                         subscription_id=self.subscription_id, amount=debit, proration=True,
                         layout=self.layout),
        ]  # fmt: skip
        invoice_id = overrides.pop("invoice_id", None) or new_id("in")
        fields: JSON = {
            "event_type": "invoice.paid" if paid else "invoice.payment_failed",
            "invoice_id": invoice_id,
            "customer_id": self.customer_id,
            "subscription_id": self.subscription_id,
            "status": "paid" if paid else "open",
            "billing_reason": billing_reason,
            "subscription_metadata_user_id": self._user(),
            "lines": lines,
            "layout": self.layout,
            "created": at_time,
            "invoice_created": at_time,
        }
        if paid and self.layout == "legacy":
            payment = self._payment(invoice_id, max(credit + debit, 0))
            fields["charge_id"] = payment.charge_id
            fields["payment_intent_id"] = payment.payment_intent_id
        fields.update(overrides)
        return invoice_event(**fields)

    def there_and_back(
        self, *, period: int, plan: str, up_at: int, down_at: int, from_plan: str | None = None
    ) -> list[JSON]:
        """A change to `plan` at `up_at` left for the next invoice, then a change back at
        `down_at` billed at once: both updates, then the invoice that sweeps up both
        changes' prorations and so pays for `plan` over [up_at, down_at)."""
        from_plan = from_plan or self.plan
        return [
            self.plan_changed(period=period, plan=plan, previous_plan=from_plan, created=up_at),
            self.plan_changed(period=period, plan=from_plan, previous_plan=plan,
                              created=down_at),
            self.swept_proration_invoice(period=period, plan=plan, up_at=up_at,
                                         down_at=down_at, from_plan=from_plan),
        ]  # fmt: skip

    def swept_proration_invoice(
        self, *, period: int, plan: str, up_at: int, down_at: int, from_plan: str | None = None
    ) -> JSON:
        """The paid invoice of a change back to `from_plan` at `down_at`, billed at once,
        sweeping up the prorations of the change to `plan` at `up_at` that were left for
        the next invoice: it pays for `plan` over [up_at, down_at)."""
        from_plan = from_plan or self.plan
        end = at(period + 1)
        lines = [
            invoice_line(price_id=plan_price(price), period_start=start, period_end=end,
                         subscription_id=self.subscription_id, amount=sign * 100,
                         proration=True, credited_invoice=new_id("in") if sign < 0 else None,
                         layout=self.layout)
            for price, start, sign in [(from_plan, up_at, -1), (plan, up_at, 1),
                                       (plan, down_at, -1), (from_plan, down_at, 1)]
        ]  # fmt: skip
        return invoice_event(
            customer_id=self.customer_id, subscription_id=self.subscription_id,
            billing_reason="subscription_update", subscription_metadata_user_id=self._user(),
            lines=lines, layout=self.layout, created=down_at + 2, invoice_created=down_at + 2,
        )  # fmt: skip

    def upgrade(
        self, *, period: int, plan: str, at_time: int, from_plan: str | None = None,
        paid: bool = True,
    ) -> list[JSON]:  # fmt: skip
        """A change billed at once: the subscription update, then its proration invoice."""
        from_plan = from_plan or self.plan
        return [
            self.plan_changed(period=period, plan=plan, previous_plan=from_plan, created=at_time),
            self.proration_invoice(period=period, from_plan=from_plan, to_plan=plan,
                                   at_time=at_time, paid=paid),
        ]  # fmt: skip

    def deleted(self, *, period: int, ended_at: int, **overrides: Any) -> JSON:
        """customer.subscription.deleted: the subscription ended at `ended_at`."""
        fields: JSON = {
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


def with_event_id(event: JSON, event_id: str | None = None) -> JSON:
    """The same change announced under another event id (Stripe does that)."""
    copied = copy.deepcopy(event)
    copied["id"] = copied["raw"]["id"] = event_id or new_id("evt")
    return copied
