"""A plain Python model of the credit policy (docs/policy.md, docs/events.md, docs/engine.md).

Written from the contract, not from the SQL: given a *set* of typed events
(schema/typed_event.schema.json) and the catalog, it computes what every
user's balance and subscription status must be once all of them have been
applied, in any order and with any duplicates. It is declarative on purpose:
instead of replaying events one by one as they arrive (which would copy the
engine's algorithm and its mistakes), it states the end result of each rule.
Where a rule itself is an order (a subscription's state, a period's
allowance), it follows Stripe's order, never arrival order
(`tests.simulation.periods`).

This module resolves users and customers, packs and their refunds and
disputes, and which payment paid which invoice; `periods` does
subscriptions and plan credits; `calls` adds the app's spends and holds,
which make the end state depend on when they happened.

Users are taken as not anonymous (the signup grant of an anonymous user
waits for its conversion, which no Stripe event changes).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.simulation.periods import (
    FINAL_DISPUTE,
    HOLDING_DISPUTE,
    Book,
    Grant,
    Invoice,
    Period,
    build_book,
    invoice_rejection,
    observe_subscription,
    read_invoice,
    rounded_share,
    shows_a_plan,
    subscription_rejection,
)

TypedEvent = Mapping[str, Any]

SUBSCRIPTION_TYPES = frozenset(
    {
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
    }
)
CHECKOUT_TYPES = frozenset(
    {
        "checkout.session.completed",
        "checkout.session.async_payment_succeeded",
        "checkout.session.async_payment_failed",
    }
)
INVOICE_TYPES = frozenset({"invoice.paid", "invoice.payment_failed"})
DISPUTE_TYPES = frozenset({"charge.dispute.created", "charge.dispute.closed"})
# What the engine accepts as a user id (case-insensitive, hyphenated form only).
USER_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)


@dataclass(frozen=True)
class Catalog:
    """What the database's catalog says: prices to credits, and the signup grant."""

    plans: Mapping[str, int]  # stripe price id -> monthly credits
    packs: Mapping[str, int]  # stripe price id -> credits
    signup_credits: int = 500
    plan_keys: Mapping[str, str] = field(default_factory=dict)  # price id -> plan key


@dataclass(frozen=True)
class UserState:
    plan_credits: int
    addon_credits: int
    subscription_status: str | None = None

    @property
    def total_credits(self) -> int:
        return self.plan_credits + self.addon_credits


def expected_states(
    events: Iterable[TypedEvent], catalog: Catalog, users: Iterable[str]
) -> dict[str, UserState]:
    """The state every user must end in once all `events` are applied (duplicates allowed)."""
    world = World(events, catalog, users)
    return {user: world.state_of(user) for user in sorted(world.users)}


def refund_clawback_target(pack_credits: int, amount_refunded: int, amount: int) -> int:
    """round(pack_credits * amount_refunded / amount), half away from zero, never above the pack."""
    return min(pack_credits, rounded_share(pack_credits, min(amount_refunded, amount), amount))


def object_of(event: TypedEvent) -> Mapping[str, Any]:
    """The one object a typed event carries ({} for an event the sidecar could not read)."""
    for key in ("checkout_session", "invoice", "subscription", "charge", "dispute"):
        if key in event:
            return event[key]
    return event.get("invoice_payment") or {}


def user_hint(event: TypedEvent) -> str | None:
    """The user id an event names outright, in the order docs/events.md gives."""
    obj = object_of(event)
    kind = event["type"]
    if kind in CHECKOUT_TYPES:
        return obj.get("client_reference_id") or obj.get("metadata_user_id")
    if kind in SUBSCRIPTION_TYPES or kind == "charge.refunded":
        return obj.get("metadata_user_id")
    if kind in INVOICE_TYPES:
        return obj.get("subscription_metadata_user_id")
    return None


def is_product_made(event: TypedEvent) -> bool:
    """Did tally make the object, so that the user and customer it names belong together?"""
    obj = object_of(event)
    if "checkout_session" in event:
        return obj.get("metadata_price_id") is not None and obj.get(
            "client_reference_id"
        ) == obj.get("metadata_user_id")
    if "subscription" in event:
        return obj.get("metadata_user_id") is not None
    if "invoice" in event:
        return obj.get("subscription_metadata_user_id") is not None
    return False


def _unique_by_id(events: Iterable[TypedEvent]) -> list[TypedEvent]:
    by_id: dict[str, TypedEvent] = {}
    for event in events:
        by_id.setdefault(event["id"], event)
    return list(by_id.values())


def _stripe_order(event: TypedEvent) -> tuple[int, str]:
    return (event["created"], event["id"])


def _pays_pack(event: TypedEvent) -> bool:
    session = event["checkout_session"]
    if session.get("mode") != "payment":
        return False
    if event["type"] == "checkout.session.async_payment_succeeded":
        return True
    return event["type"] == "checkout.session.completed" and session.get("payment_status") == "paid"


@dataclass
class _Charge:
    """A refunded charge as the applied refund events leave it."""

    amount: int
    refunded: int
    target: tuple[str, str]  # ("pack", Checkout Session) or ("invoice", invoice id)
    payment_intent_id: str | None


class World:
    """Everything an event set says, indexed for the rules."""

    def __init__(self, events: Iterable[TypedEvent], catalog: Catalog, users: Iterable[str]):
        self.catalog = catalog
        self.users = {str(user) for user in users}
        # Events the sidecar could not read (a `problem`) are rejected, with no effect.
        self.events = sorted(
            (e for e in _unique_by_id(events) if e.get("problem") is None), key=_stripe_order
        )
        self._with_a_plan = self._subscriptions_with_a_plan()
        self.links = self._customer_links()
        self.owners = self._subscription_owners()
        self.packs = self._paid_packs()
        self.pack_of_intent = {
            session["payment_intent_id"]: session_id
            for session_id, (_, session) in self.packs.items()
            if session.get("payment_intent_id")
        }
        self.invoices = self._applied_invoices()
        self._recorded = self._recorded_invoices()
        self._refunds_of_charge: dict[str, list[TypedEvent]] = defaultdict(list)
        for event in self.events:
            if event["type"] == "charge.refunded":
                self._refunds_of_charge[event["charge"]["id"]].append(event)
        self.paid_by = self._payment_links()
        self.charges = self._refunded_charges()
        self.disputes = self._disputes()
        self.book = self._book()

    # -- who an event belongs to ---------------------------------------------------------

    def hinted_user(self, event: TypedEvent) -> str | bool | None:
        """The user the event names; False when it names one that cannot be (rejected)."""
        hint = user_hint(event)
        if hint is None:
            return None
        if not USER_ID.match(hint) or hint.lower() not in self.users:
            return False
        return hint.lower()

    def _rejection(self, event: TypedEvent) -> str | None:
        """Why the event is rejected whatever else arrives, None if it is not."""
        if event.get("problem") is not None:
            return event["problem"]
        kind = event["type"]
        if kind in INVOICE_TYPES:
            has_plan = _subscription_id(event) in self._with_a_plan
            return invoice_rejection(event, self.catalog.plans, has_plan)
        if kind in SUBSCRIPTION_TYPES:
            return subscription_rejection(event, self.catalog.plans)
        pack_price = (event.get("checkout_session") or {}).get("metadata_price_id")
        if kind in CHECKOUT_TYPES and _pays_pack(event) and pack_price not in self.catalog.packs:
            return "no pack price"
        return None

    def _subscriptions_with_a_plan(self) -> set[str]:
        """Subscriptions an event shows a catalog plan of: an invoice's plan line, a
        subscription's plan item (as the engine's observations keep them).

        The engine can only know this of events already applied: an invoice with
        prices no plan has that arrives before any of these is rejected (unknown
        price) and re-applied by the operator. The stories never send one.
        """
        return {
            sub_id
            for event in self.events
            if (sub_id := _subscription_id(event)) is not None
            and shows_a_plan(event, self.catalog.plans)
        }

    def _customer_links(self) -> dict[str, str]:
        """Customer -> user, from applied events of objects tally made that name both.

        The engine keeps the first link it stores; two users for one customer
        only happen in hostile input, where the model keeps the oldest.
        """
        links: dict[str, str] = {}
        for event in self.events:
            user = self.hinted_user(event)
            customer = object_of(event).get("customer_id")
            if not user or not customer or customer in links:
                continue
            if is_product_made(event) and user_hint(event) == user and not self._rejection(event):
                links[customer] = user
        return links

    def _subscription_owners(self) -> dict[str, str]:
        owners: dict[str, str] = {}
        for event in self.events:
            sub_id = _subscription_id(event)
            if sub_id is None or sub_id in owners or self._rejection(event):
                continue
            user = self._user_by_hint_or_link(event)
            if user:
                owners[sub_id] = user
        return owners

    def _user_by_hint_or_link(self, event: TypedEvent) -> str | bool | None:
        hinted = self.hinted_user(event)
        if hinted is not None:
            return hinted
        return self.links.get(object_of(event).get("customer_id"))

    def user_of(self, event: TypedEvent) -> str | None:
        """The user a non-payment event applies to; None if it is parked or rejected."""
        if self._rejection(event):
            return None
        user = self._user_by_hint_or_link(event)
        if user is None:
            user = self.owners.get(_subscription_id(event))
        return user or None

    # -- packs ---------------------------------------------------------------------------

    def _paid_packs(self) -> dict[str, tuple[str, Mapping[str, Any]]]:
        """Checkout Session -> (user, session) for every paid pack purchase applied."""
        packs: dict[str, tuple[str, Mapping[str, Any]]] = {}
        for event in self.events:
            if event["type"] not in CHECKOUT_TYPES or not _pays_pack(event):
                continue
            user = self.user_of(event)
            if user is not None:
                packs.setdefault(event["checkout_session"]["id"], (user, event["checkout_session"]))
        return packs

    def addon_credits(self, user: str) -> int:
        return sum(
            self._pack_net(session_id)
            for session_id, (owner, _) in self.packs.items()
            if owner == user
        )

    def _pack_net(self, session_id: str) -> int:
        """The pack's credits less its refunded share, or nothing while a dispute holds it."""
        _, session = self.packs[session_id]
        credits = self.catalog.packs[session["metadata_price_id"]]
        target = ("pack", session_id)
        if any(status in HOLDING_DISPUTE for status in self._dispute_statuses(target)):
            return 0
        charges = [charge for charge in self.charges.values() if charge.target == target]
        amount = sum(charge.amount for charge in charges)
        refunded = sum(charge.refunded for charge in charges)
        return credits - refund_clawback_target(credits, refunded, amount)

    # -- which payment paid what ---------------------------------------------------------

    def _applied_invoices(self) -> list[Invoice]:
        readings = []
        for event in self.events:
            if event["type"] not in INVOICE_TYPES or not event["invoice"].get("subscription_id"):
                continue
            user = self.user_of(event)
            if user is not None:
                readings.append(read_invoice(event, user, self.catalog.plans))
        return readings

    def _recorded_invoices(self) -> set[str]:
        """Invoices the engine keeps as grants: paid, with a period or an upgrade."""
        return {i.id for i in self.invoices if i.pays_period or (i.is_paid and i.is_upgrade)}

    def _payment_links(self) -> dict[str, str]:
        """'payment_intent:pi_..' / 'charge:ch_..' -> the invoice it paid (first link stays).

        Legacy invoices name their payment; from basil on only
        invoice_payment.paid joins them.
        """
        links: dict[str, str] = {}
        for event in self.events:
            if event["type"] == "invoice_payment.paid":
                payment = event["invoice_payment"]
                pairs = [(payment.get("payment_intent_id"), payment.get("charge_id"))]
                invoice_id = payment["invoice_id"]
            elif event["type"] == "invoice.paid":
                invoice = event["invoice"]
                if invoice.get("status") != "paid" or not invoice.get("subscription_id"):
                    continue
                if self.user_of(event) is None:
                    continue
                pairs = [(invoice.get("payment_intent_id"), invoice.get("charge_id"))]
                invoice_id = invoice["id"]
            else:
                continue
            for intent, charge in pairs:
                for key in (_key("payment_intent", intent), _key("charge", charge)):
                    if key is not None:
                        links.setdefault(key, invoice_id)
        return links

    def _target(
        self, intent: str | None, charge: str | None, invoice_id: str | None = None
    ) -> tuple[str, str] | None:
        """What a payment paid for, once tally can know it: a pack, or a recorded invoice.

        None: the refund or dispute waits (parked) for the purchase, the
        invoice, or the invoice_payment.paid that joins them.
        """
        if intent in self.pack_of_intent:
            return ("pack", self.pack_of_intent[intent])
        if invoice_id is None:
            for key in (_key("payment_intent", intent), _key("charge", charge)):
                if key in self.paid_by:
                    invoice_id = self.paid_by[key]
                    break
        if invoice_id is None and charge is not None:
            invoice_id = self._invoice_of_charge(charge)
        if invoice_id is not None and invoice_id in self._recorded:
            return ("invoice", invoice_id)
        return None

    def _invoice_of_charge(self, charge_id: str) -> str | None:
        """A legacy refund names its invoice; a later event of the same charge finds it."""
        for event in self._refunds_of_charge.get(charge_id, ()):
            invoice_id = event["charge"].get("invoice_id")
            if invoice_id in self._recorded and not self._hint_refused(event):
                return invoice_id
        return None

    def _hint_refused(self, event: TypedEvent) -> bool:
        """A refund's user is whoever bought what it pays back; a hint that is not a user
        id at all still rejects it."""
        hint = user_hint(event)
        return hint is not None and not USER_ID.match(hint)

    def _refunded_charges(self) -> dict[str, _Charge]:
        charges: dict[str, _Charge] = {}
        for event in self.events:
            if event["type"] != "charge.refunded" or self._hint_refused(event):
                continue
            charge = event["charge"]
            intent = charge.get("payment_intent_id")
            if not intent and not charge.get("invoice_id"):
                continue  # a bare charge: not a tally purchase
            target = self._target(intent, charge["id"], charge.get("invoice_id"))
            if target is None:
                continue
            known = charges.get(charge["id"])
            if known is None:
                charges[charge["id"]] = _Charge(
                    charge["amount"], charge["amount_refunded"], target, intent
                )
            else:
                # Cumulative and never lowered by Stripe: the largest seen counts.
                known.refunded = max(known.refunded, charge["amount_refunded"])
        return charges

    def _disputes(self) -> dict[str, tuple[tuple[str, str], int, str]]:
        """Dispute id -> (what it disputes, amount, status that counts).

        A dispute's state only moves forward: a final status stays; before
        that, the newest event's status counts.
        """
        seen: dict[str, list[TypedEvent]] = defaultdict(list)
        targets: dict[str, tuple[str, str]] = {}
        for event in self.events:
            if event["type"] not in DISPUTE_TYPES:
                continue
            dispute = event["dispute"]
            intent = dispute.get("payment_intent_id") or self._intent_of_charge(
                dispute.get("charge_id")
            )
            target = self._target(intent, dispute.get("charge_id"))
            if target is not None:
                seen[dispute["id"]].append(event)
                targets[dispute["id"]] = target
        result = {}
        for dispute_id, events in seen.items():
            finals = [e for e in events if e["dispute"]["status"] in FINAL_DISPUTE]
            last = min(finals, key=_stripe_order) if finals else max(events, key=_stripe_order)
            amount = min(events, key=_stripe_order)["dispute"]["amount"]
            result[dispute_id] = (targets[dispute_id], amount, last["dispute"]["status"])
        return result

    def _intent_of_charge(self, charge_id: str | None) -> str | None:
        known = self.charges.get(charge_id) if charge_id else None
        return known.payment_intent_id if known else None

    def _dispute_statuses(self, target: tuple[str, str]) -> list[str]:
        return [status for (of, _, status) in self.disputes.values() if of == target]

    # -- subscriptions -------------------------------------------------------------------

    def _book(self) -> Book:
        observations = []
        for event in self.events:
            if event["type"] in SUBSCRIPTION_TYPES:
                user = self.user_of(event)
                if user is not None:
                    sub = observe_subscription(event, user, self.catalog.plans)
                    observations.append((event["subscription"]["id"], sub))
        return build_book(self.invoices, observations, self.catalog.plans, self._reversals_of)

    def _reversals_of(self, grant: Grant) -> tuple[int, list[int]]:
        """What was refunded of a grant's invoice, and the amounts of its holding disputes."""
        target = ("invoice", grant.invoice.id)
        refunded = sum(c.refunded for c in self.charges.values() if c.target == target)
        held = [
            amount
            for (of, amount, status) in self.disputes.values()
            if of == target and status in HOLDING_DISPUTE
        ]
        return refunded, held

    # -- the answer ----------------------------------------------------------------------

    def current_period(self, user: str) -> Period | None:
        return self.book.current_period(user)

    def plan_ceiling(self, user: str) -> int:
        """Plan credits before any spend: the current period's allowance less clawbacks."""
        period = self.current_period(user)
        if period is None:
            return self.catalog.signup_credits
        return max(0, period.allowance - period.clawed_back)

    def state_of(self, user: str) -> UserState:
        return UserState(
            plan_credits=self.plan_ceiling(user),
            addon_credits=self.addon_credits(user),
            subscription_status=self.book.status_of(user),
        )


def _subscription_id(event: TypedEvent) -> str | None:
    if "subscription" in event:
        return event["subscription"]["id"]
    if "invoice" in event:
        return event["invoice"].get("subscription_id")
    return None


def _key(kind: str, value: str | None) -> str | None:
    return None if value is None else f"{kind}:{value}"
