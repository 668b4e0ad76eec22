"""What Stripe says was paid or taken back, each as the event that announces it.

Four kinds, each keyed as the engine keys its effect: paid subscription
invoices (the invoice), paid pack Checkout Sessions (the session; payment
mode, ``metadata.price_id``), refunds (the charge, with its cumulative
``amount_refunded``) and disputes (the dispute and its status).

Each fact carries a Stripe-shaped event built from the object as Stripe
lists it now (``invoice.paid``, ``checkout.session.completed``,
``charge.refunded``, ``charge.dispute.created``/``closed``), with a
deterministic id (``evt_reconcile_<object>``, plus the refunded amount or the
dispute status): ``--repair`` applies it through the webhook's path, and a
repeated repair answers duplicate; a later real delivery of the same change
is kept from applying twice by the engine's business keys.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from sidecar import events
from sidecar.stripe_api import STRIPE_API_VERSION, StripeApi

JSON = dict[str, Any]
Kind = Literal["invoice", "pack", "refund", "dispute"]
SYNTHETIC_PREFIX = "evt_reconcile_"
KIND_NAMES: dict[Kind, str] = {
    "invoice": "subscription invoice",
    "pack": "pack purchase",
    "refund": "refund",
    "dispute": "dispute",
}
# The typed event's key for each kind's object.
READING_KEYS: dict[Kind, str] = {
    "invoice": "invoice",
    "pack": "checkout_session",
    "refund": "charge",
    "dispute": "dispute",
}
FINAL_DISPUTE_STATUSES = frozenset({"won", "lost", "warning_closed", "prevented"})


@dataclass(frozen=True)
class Fact:
    """One thing Stripe says, and the event that would tell tally about it."""

    kind: Kind
    object_id: str
    says: str
    event: JSON = field(repr=False)
    typed: JSON = field(repr=False)

    @property
    def reading(self) -> JSON:
        """The normaliser's reading of the object ({} when it cannot be read)."""
        value = self.typed.get(READING_KEYS[self.kind])
        return value if isinstance(value, dict) else {}

    @property
    def user_hint(self) -> str | None:
        reading = self.reading
        hints = {
            "invoice": [reading.get("subscription_metadata_user_id")],
            "pack": [reading.get("client_reference_id"), reading.get("metadata_user_id")],
            "refund": [reading.get("metadata_user_id")],
            "dispute": [],
        }[self.kind]
        return next((hint for hint in hints if hint), None)

    @property
    def payment(self) -> JSON:
        """The payment a refund or dispute takes back (payment intent, charge)."""
        reading = self.reading
        charge = reading.get("id") if self.kind == "refund" else reading.get("charge_id")
        return {"payment_intent_id": reading.get("payment_intent_id"), "charge_id": charge}


@dataclass
class StripeSide:
    facts: list[Fact] = field(default_factory=list)
    # What could not be compared, and why (one line each).
    skipped: list[str] = field(default_factory=list)


def synthetic_event(type_: str, obj: JSON, *, created: int, suffix: str = "") -> JSON:
    """A Stripe event carrying ``obj`` as the API renders it now."""
    return {
        "id": f"{SYNTHETIC_PREFIX}{obj['id']}{suffix}",
        "object": "event",
        "api_version": STRIPE_API_VERSION,
        "created": created,
        "data": {"object": obj},
        "livemode": bool(obj.get("livemode")),
        "pending_webhooks": 0,
        "request": {"id": None, "idempotency_key": None},
        "type": type_,
    }


def fact(kind: Kind, event: JSON, says: str) -> Fact:
    typed = events.normalise(events.read_envelope(event))
    return Fact(kind, event["data"]["object"]["id"], says, event, typed)


def invoice_fact(invoice: JSON) -> Fact | None:
    """A paid invoice of a subscription; None for any other invoice."""
    paid_at = (invoice.get("status_transitions") or {}).get("paid_at") or invoice["created"]
    event = synthetic_event("invoice.paid", invoice, created=paid_at)
    says = f"paid {invoice.get('amount_paid')} {invoice.get('currency')}"
    found = fact("invoice", event, f"{says} ({invoice.get('billing_reason')})")
    if found.reading and not found.reading.get("subscription_id"):
        return None
    return found


def pack_fact(session: JSON) -> Fact | None:
    """A paid pack Checkout Session (payment mode, with metadata.price_id); else None."""
    metadata = session.get("metadata") or {}
    if session.get("mode") != "payment" or not metadata.get("price_id"):
        return None
    if session.get("payment_status") != "paid":
        return None
    event = synthetic_event("checkout.session.completed", session, created=session["created"])
    says = (
        f"paid {session.get('amount_total')} {session.get('currency')} for {metadata['price_id']}"
    )
    return fact("pack", event, says)


def refund_fact(charge: JSON, refunds: Iterable[JSON]) -> Fact:
    """A charge's refunds so far (``amount_refunded`` is cumulative, as the engine reads it)."""
    refunded = int(charge.get("amount_refunded") or 0)
    created = max((int(r["created"]) for r in refunds), default=int(charge["created"]))
    event = synthetic_event(
        "charge.refunded", charge, created=created, suffix=f"_refunded_{refunded}"
    )
    return fact(
        "refund", event, f"refunded {refunded} of {charge.get('amount')} {charge.get('currency')}"
    )


def dispute_fact(dispute: JSON, now: int) -> Fact:
    status = str(dispute.get("status"))
    if status in FINAL_DISPUTE_STATUSES:
        # A closing moves a dispute forward whatever its time; now is when it was seen.
        event = synthetic_event("charge.dispute.closed", dispute, created=now, suffix=f"_{status}")
    else:
        event = synthetic_event(
            "charge.dispute.created", dispute, created=int(dispute["created"]), suffix=f"_{status}"
        )
    says = f"dispute {status}: {dispute.get('amount')} {dispute.get('currency')}"
    return fact("dispute", event, says)


async def stripe_side(stripe: StripeApi, since: int) -> StripeSide:
    """Every fact of the four kinds created since ``since``, every page of each list."""
    side = StripeSide()
    async for invoice in stripe.paid_invoices(since):
        side.facts += [f for f in [invoice_fact(invoice)] if f]
    async for session in stripe.completed_checkout_sessions(since):
        side.facts += [f for f in [pack_fact(session)] if f]
    charges: dict[str, tuple[JSON, list[JSON]]] = {}
    async for refund in stripe.refunds(since):
        charge = refund.get("charge")
        if not isinstance(charge, dict):
            side.skipped.append(f"refund {refund.get('id')}: Stripe did not expand its charge")
            continue
        charges.setdefault(charge["id"], (charge, []))[1].append(refund)
    side.facts += [refund_fact(charge, refunds) for charge, refunds in charges.values()]
    now = int(time.time())
    async for dispute in stripe.disputes(since):
        side.facts.append(dispute_fact(dispute, now))
    return side
