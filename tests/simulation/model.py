"""A plain Python model of the credit policy (SPEC 2 and 3, read as docs/engine.md reads them).

Written from the contract, not from the SQL: given a *set* of typed events
(schema/typed_event.schema.json) and the catalog, it computes what every
user's balance and subscription status must be once all of them have been
applied, in any order and with any duplicates. It is declarative on purpose:
instead of replaying events one by one (which would copy the engine's
algorithm and its mistakes), it states the end result of each rule.

Spends can be added *after* the events (`apply_spends`); spends interleaved
with events make the end state order-dependent, so the chaos tests check
invariants for those instead.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

TypedEvent = Mapping[str, Any]

OPEN_DISPUTE = frozenset(
    {"warning_needs_response", "warning_under_review", "needs_response", "under_review"}
)
RESTORING_DISPUTE = frozenset({"won", "warning_closed"})
CLOSED_DISPUTE = frozenset({"won", "warning_closed", "lost"})
FINAL_STATUSES = frozenset({"canceled", "incomplete_expired"})
STATUS_RANK = {
    status: rank
    for rank, status in enumerate(
        ["incomplete", "trialing", "active", "past_due", "unpaid", "paused", "canceled"]
    )
}
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
    plan_price_id: str | None = None  # price of the current paid period's plan

    @property
    def total_credits(self) -> int:
        return self.plan_credits + self.addon_credits


@dataclass(frozen=True)
class Spend:
    user_id: str
    amount: int
    key: str


class InsufficientCredits(Exception):
    """The model's PT402: the spend would make a balance negative."""


@dataclass
class _SubscriptionMirror:
    subscription_id: str
    status: str | None = None
    created: int | None = None  # the subscription object's own created
    current_period_start: int | None = None
    end: int | None = None  # ended_at, or canceled_at for an immediate cancel


def expected_states(
    events: Iterable[TypedEvent], catalog: Catalog, users: Iterable[str]
) -> dict[str, UserState]:
    """The state every user must end in once all `events` are applied (duplicates allowed)."""
    world = _World(_unique_by_id(events), catalog, {str(u) for u in users})
    return {user: world.state_of(user) for user in sorted(world.users)}


def apply_spends(
    states: Mapping[str, UserState], spends: Iterable[Spend]
) -> tuple[dict[str, UserState], list[Spend]]:
    """Apply spends after all events: plan credits first, then add-on; all or nothing.

    Returns the new states and the spends refused for lack of credits. A key
    seen before returns the first result and spends nothing.
    """
    result = dict(states)
    refused: list[Spend] = []
    seen: set[str] = set()
    for spend in spends:
        if spend.key in seen:
            continue
        seen.add(spend.key)
        state = result[spend.user_id]
        if spend.amount > state.total_credits:
            refused.append(spend)
            continue
        from_plan = min(state.plan_credits, spend.amount)
        result[spend.user_id] = replace(
            state,
            plan_credits=state.plan_credits - from_plan,
            addon_credits=state.addon_credits - (spend.amount - from_plan),
        )
    return result, refused


def refund_clawback_target(pack_credits: int, amount_refunded: int, amount: int) -> int:
    """round(pack_credits * amount_refunded / amount), half away from zero, never above the pack."""
    if amount <= 0:
        return 0
    numerator = pack_credits * min(amount_refunded, amount)
    return min(pack_credits, (2 * numerator + amount) // (2 * amount))


def _unique_by_id(events: Iterable[TypedEvent]) -> list[TypedEvent]:
    by_id: dict[str, TypedEvent] = {}
    for event in events:
        by_id.setdefault(event["id"], event)
    return list(by_id.values())


def _object(event: TypedEvent) -> Mapping[str, Any]:
    kind = event["type"]
    if kind in CHECKOUT_TYPES:
        return event["checkout_session"]
    if kind in INVOICE_TYPES:
        return event["invoice"]
    if kind in SUBSCRIPTION_TYPES:
        return event["subscription"]
    if kind == "charge.refunded":
        return event["charge"]
    return event["dispute"]


def _user_hints(event: TypedEvent) -> list[str | None]:
    """User ids named by the event itself, in SPEC 3.5 order."""
    obj = _object(event)
    kind = event["type"]
    if kind in CHECKOUT_TYPES:
        return [obj.get("client_reference_id"), obj.get("metadata_user_id")]
    if kind in SUBSCRIPTION_TYPES:
        return [obj.get("metadata_user_id")]
    if kind in INVOICE_TYPES:
        return [obj.get("subscription_metadata_user_id")]
    if kind == "charge.refunded":
        return [obj.get("metadata_user_id")]
    return []


def _is_user_id(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


class _World:
    """Everything the event set says, indexed for the rules."""

    def __init__(self, events: list[TypedEvent], catalog: Catalog, users: set[str]) -> None:
        self.catalog = catalog
        self.users = users
        self.events = events
        self.links = self._customer_links()
        self.pack_sessions = self._paid_pack_sessions()
        self.pack_by_payment_intent = {
            session["payment_intent_id"]: (user, session)
            for user, session in self.pack_sessions.values()
            if session.get("payment_intent_id")
        }
        self.refunds: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        self.disputes: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        self.by_subscription: dict[str, list[TypedEvent]] = defaultdict(list)
        for event in events:
            self._index(event)
        self.mirrors = self._subscription_mirrors()
        self.owners = self._subscription_owners()
        self.periods = self._granted_periods()
        self.periods_of: dict[str, list[tuple[str, int]]] = defaultdict(list)
        for key, owner in self.periods.items():
            self.periods_of[owner].append(key)
        self.packs_of: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        for owner, session in self.pack_sessions.values():
            self.packs_of[owner].append(session)

    def _index(self, event: TypedEvent) -> None:
        kind = event["type"]
        if kind == "charge.refunded" and event["charge"].get("payment_intent_id"):
            self.refunds[event["charge"]["payment_intent_id"]].append(event["charge"])
        elif kind in DISPUTE_TYPES and event["dispute"].get("payment_intent_id"):
            dispute = event["dispute"]
            self.disputes[dispute["payment_intent_id"]][dispute["id"]].append(dispute["status"])
        elif kind in SUBSCRIPTION_TYPES:
            self.by_subscription[event["subscription"]["id"]].append(event)
        elif kind in INVOICE_TYPES and event["invoice"].get("subscription_id"):
            self.by_subscription[event["invoice"]["subscription_id"]].append(event)

    # -- who an event belongs to ---------------------------------------------------------------

    def _hinted_user(self, event: TypedEvent) -> str | bool | None:
        """The first hint's user; False when that hint is unusable (rejected)."""
        for hint in _user_hints(event):
            if hint is None:
                continue
            if not _is_user_id(hint) or str(uuid.UUID(hint)) not in self.users:
                return False
            return str(uuid.UUID(hint))
        return None

    def _customer_links(self) -> dict[str, str]:
        # Latest Stripe `created` wins if two events link one customer to different users.
        links: dict[str, tuple[int, str, str]] = {}
        # Any event naming an existing user and a customer links them, even one
        # rejected for another reason (an unknown price).
        for event in self.events:
            user = self._hinted_user(event)
            customer = _object(event).get("customer_id")
            if not user or not customer:
                continue
            candidate = (event["created"], event["id"], user)
            if customer not in links or candidate > links[customer]:
                links[customer] = candidate
        return {customer: user for customer, (_, _, user) in links.items()}

    def user_of(self, event: TypedEvent) -> str | None:
        """The user the event applies to; None if it is parked or rejected."""
        hinted = self._hinted_user(event)
        if hinted is False:
            return None
        if hinted:
            return hinted
        customer = _object(event).get("customer_id")
        if customer in self.links:
            return self.links[customer]
        if event["type"] == "charge.refunded" or event["type"] in DISPUTE_TYPES:
            pack = self.pack_by_payment_intent.get(_object(event).get("payment_intent_id"))
            if pack:
                return pack[0]
        return None

    # -- packs -------------------------------------------------------------------------------

    def _paid_pack_sessions(self) -> dict[str, tuple[str, Mapping[str, Any]]]:
        sessions: dict[str, tuple[str, Mapping[str, Any]]] = {}
        for event in self.events:
            session = event.get("checkout_session")
            if session is None or not _pays_pack(event):
                continue
            user = self.user_of(event)
            if user is None or session.get("metadata_price_id") not in self.catalog.packs:
                continue
            sessions.setdefault(session["id"], (user, session))
        return sessions

    def _addon_credits(self, user: str) -> int:
        return sum(self._pack_net(session) for session in self.packs_of.get(user, ()))

    def _pack_net(self, session: Mapping[str, Any]) -> int:
        credits = self.catalog.packs[session["metadata_price_id"]]
        intent = session.get("payment_intent_id")
        if intent is None:
            return credits
        if self._dispute_holds_clawback(intent):
            return 0
        return credits - self._refund_target(intent, credits)

    def _refund_target(self, payment_intent_id: str, credits: int) -> int:
        charges = self.refunds.get(payment_intent_id)
        if not charges:
            return 0
        refunded = max(c["amount_refunded"] for c in charges)
        amount = max(c["amount"] for c in charges)
        return refund_clawback_target(credits, refunded, amount)

    def _dispute_holds_clawback(self, payment_intent_id: str) -> bool:
        """An open or lost dispute keeps the pack clawed back; a won one gives it back."""
        for seen in self.disputes.get(payment_intent_id, {}).values():
            closed = [s for s in seen if s in CLOSED_DISPUTE]
            if closed:
                if not any(s in RESTORING_DISPUTE for s in closed):
                    return True
            elif any(s in OPEN_DISPUTE for s in seen):
                return True
        return False

    # -- subscriptions -----------------------------------------------------------------------

    def _subscription_mirrors(self) -> dict[str, _SubscriptionMirror]:
        mirrors = {}
        for sub_id, events in self.by_subscription.items():
            counted = [e for e in events if self._counts_for_state(e)]
            if counted:
                mirrors[sub_id] = _fold_subscription(sub_id, counted)
        return mirrors

    def _counts_for_state(self, event: TypedEvent) -> bool:
        """Rejected events (a bad user hint, a price no plan has) leave no state behind."""
        price = _object(event).get("price_id")
        if price is not None and price not in self.catalog.plans:
            return False
        if event["type"] in SUBSCRIPTION_TYPES:
            return self._hinted_user(event) is not False
        return self.user_of(event) is not None

    def _subscription_owners(self) -> dict[str, str]:
        owners = {}
        for sub_id, events in self.by_subscription.items():
            for event in events:
                user = self.user_of(event)
                if user:
                    owners[sub_id] = user
                    break
        return owners

    def _granted_periods(self) -> dict[tuple[str, int], str]:
        """(subscription id, period start) -> user, for every period that must be granted."""
        periods: dict[tuple[str, int], str] = {}
        for event in self.events:
            if event["type"] != "invoice.paid":
                continue
            invoice = event["invoice"]
            if not _pays_period(invoice) or invoice["price_id"] not in self.catalog.plans:
                continue
            user = self.user_of(event)
            if user is None:
                continue
            mirror = self.mirrors.get(invoice["subscription_id"])
            if mirror and mirror.end is not None and invoice["period_start"] >= mirror.end:
                continue
            periods.setdefault((invoice["subscription_id"], invoice["period_start"]), user)
        return periods

    def _period_price(self, subscription_id: str, period_start: int) -> str:
        """The newest known state for that period names its plan."""
        candidates: list[tuple[int, int, str, str]] = []
        for event in self.by_subscription[subscription_id]:
            if event["type"] == "invoice.paid":
                invoice = event["invoice"]
                if _pays_period(invoice) and invoice["period_start"] == period_start:
                    # The line is as old as the invoice that billed it (its own created,
                    # when the typed event carries it), not as the event saying it was paid.
                    billed = invoice.get("created")
                    at = event["created"] if billed is None else billed
                    candidates.append((at, 0, event["id"], invoice["price_id"]))
            elif event["type"] in SUBSCRIPTION_TYPES:
                sub = event["subscription"]
                if (
                    sub.get("current_period_start") == period_start
                    and sub.get("price_id") in self.catalog.plans
                ):
                    candidates.append((event["created"], 1, event["id"], sub["price_id"]))
        return max(candidates)[3]

    def _relevant_mirror(self, user: str) -> _SubscriptionMirror | None:
        owned = [
            mirror
            for sub_id, mirror in self.mirrors.items()
            if self.owners.get(sub_id) == user and mirror.status is not None
        ]
        if not owned:
            return None
        return max(
            owned,
            key=lambda m: (
                m.status not in FINAL_STATUSES,
                m.current_period_start or 0,
                m.created or 0,
                m.subscription_id,
            ),
        )

    # -- the answer --------------------------------------------------------------------------

    def state_of(self, user: str) -> UserState:
        mine = self.periods_of.get(user, [])
        mirror = self._relevant_mirror(user)
        status = mirror.status if mirror else None
        if not mine:
            return UserState(self.catalog.signup_credits, self._addon_credits(user), status)
        subscription_id, period_start = max(mine, key=lambda key: (key[1], key[0]))
        price = self._period_price(subscription_id, period_start)
        return UserState(
            plan_credits=self.catalog.plans[price],
            addon_credits=self._addon_credits(user),
            subscription_status=status,
            plan_price_id=price,
        )


def _pays_pack(event: TypedEvent) -> bool:
    session = event["checkout_session"]
    if session.get("mode") != "payment":
        return False
    if event["type"] == "checkout.session.async_payment_succeeded":
        return True
    return event["type"] == "checkout.session.completed" and session.get("payment_status") == "paid"


def _pays_period(invoice: Mapping[str, Any]) -> bool:
    return (
        invoice.get("status") == "paid"
        and invoice.get("subscription_id") is not None
        and invoice.get("price_id") is not None
        and invoice.get("period_start") is not None
        and invoice.get("period_end") is not None
    )


def _fold_subscription(subscription_id: str, events: list[TypedEvent]) -> _SubscriptionMirror:
    """Replay one subscription's events in Stripe's own order (not arrival order)."""
    mirror = _SubscriptionMirror(subscription_id)
    for event in _stripe_order(events):
        if event["type"] in SUBSCRIPTION_TYPES:
            sub = event["subscription"]
            if mirror.end is None:
                mirror.end = _end_of(sub)
            if mirror.status in FINAL_STATUSES:
                continue
            mirror.status = sub["status"]
            mirror.created = sub.get("created")
            mirror.current_period_start = sub.get("current_period_start")
        else:
            if mirror.status is None:
                # An invoice of an unknown subscription creates the mirror with its
                # period; subscription events overwrite that whatever their age.
                mirror.current_period_start = event["invoice"].get("period_start")
            mirror.status = _status_after_invoice(mirror.status, event)
    return mirror


def _end_of(sub: Mapping[str, Any]) -> int | None:
    if sub.get("ended_at") is not None:
        return sub["ended_at"]
    if sub["status"] in FINAL_STATUSES:
        return sub.get("canceled_at")
    return None


def _status_after_invoice(status: str | None, event: TypedEvent) -> str | None:
    if event["type"] == "invoice.paid" and event["invoice"].get("status") == "paid":
        return "active" if status in {None, "incomplete", "past_due", "unpaid"} else status
    # A failed payment, or an `invoice.paid` whose invoice is not paid: payment not
    # completed (SPEC 2), the status records it.
    if status is None:
        # Only the invoice is known: a failed first invoice leaves the
        # subscription incomplete, a failed renewal makes it past due.
        first = event["invoice"].get("billing_reason") == "subscription_create"
        return "incomplete" if first else "past_due"
    return "past_due" if status in {"active", "trialing"} else status


def _stripe_order(events: list[TypedEvent]) -> list[TypedEvent]:
    """Order one subscription's events as Stripe created them.

    By `created`; at a tie invoices first (an invoice moves the state only when
    strictly newer), then subscription events chained by `previous`: an update
    whose `previous` matches another's state left that state, so it comes after.
    """
    by_second: dict[int, list[TypedEvent]] = defaultdict(list)
    for event in events:
        by_second[event["created"]].append(event)
    ordered: list[TypedEvent] = []
    for second in sorted(by_second):
        batch = by_second[second]
        invoices = sorted((e for e in batch if e["type"] in INVOICE_TYPES), key=lambda e: e["id"])
        updates = [e for e in batch if e["type"] in SUBSCRIPTION_TYPES]
        ordered.extend(invoices)
        ordered.extend(_chain_ties(updates))
    return ordered


def _chain_ties(updates: list[TypedEvent]) -> list[TypedEvent]:
    remaining = sorted(updates, key=_tie_rank)
    ordered: list[TypedEvent] = []
    while remaining:
        # The oldest is one that left none of the others' states (else the lowest rank).
        for candidate in remaining:
            others = (other for other in remaining if other is not candidate)
            if not any(_left_state_of(candidate, other) for other in others):
                break
        else:
            candidate = remaining[0]
        ordered.append(candidate)
        remaining.remove(candidate)
    return ordered


def _tie_rank(event: TypedEvent) -> tuple[int, str]:
    return (STATUS_RANK.get(event["subscription"]["status"], len(STATUS_RANK)), event["id"])


def _left_state_of(newer: TypedEvent, older: TypedEvent) -> bool:
    """True when `newer`'s previous attributes equal `older`'s state: newer left it."""
    previous = newer["subscription"].get("previous")
    if not previous:
        return False
    state = older["subscription"]
    if all(state.get(key) == value for key, value in previous.items()):
        # Identical states (two event ids for one change) do not order each other.
        return not all(newer["subscription"].get(k) == state.get(k) for k in previous)
    return False
