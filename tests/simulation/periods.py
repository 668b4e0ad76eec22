"""Subscriptions in the policy model: their state, their paid periods and each period's allowance.

Read from docs/policy.md ("credits follow verified money") as docs/engine.md fixes
the readings the contract leaves open, and kept apart from the SQL on
purpose. Everything here is a function of a *set* of applied events (each
already tagged with its user by `tests.simulation.model`):

- a subscription's state is folded in Stripe's order (`created`; within one
  second, updates chained by the state each one left), never arrival order;
- a paid invoice's plan line pays a period (subscription + period start);
  the period's allowance starts at that plan's monthly credits;
- a paid upgrade invoice (billing_reason subscription_update) adds what its
  proration lines pay for, each line's plan credits times the share of the
  period it covers, credit lines negative, rounded down, never below zero;
- every change of plan naming the period (an update whose previous
  attributes name the plan, or an event of a later second than the plan
  reached showing another plan) lowers the allowance to its plan's credits
  (an immediate downgrade), at its own time;
- refunds and open or lost disputes of the period's invoices take back their
  share of what each invoice granted, folded where that invoice is folded:
  the same walk, with each invoice adding only what is left of it after
  them, says what the allowance keeps; the difference is what they take
  back. So they never take back what a downgrade already removed (a
  refunded upgrade followed by a downgrade to the old plan leaves the old
  plan's period whole), whatever the order.

The money model (`Period.paid_for`) says what the period's invoices paid
for, net of what was taken back, without folding anything: no allowance
may ever exceed it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

TypedEvent = Mapping[str, Any]

# Least far along first: breaks ties between same-second updates that do not chain.
STATUS_ORDER = (
    "incomplete",
    "trialing",
    "active",
    "past_due",
    "unpaid",
    "paused",
    "incomplete_expired",
    "canceled",
)
FINAL_STATUSES = frozenset({"canceled", "incomplete_expired"})
# Open disputes hold their clawback; a lost one keeps it.
HOLDING_DISPUTE = frozenset(
    {"warning_needs_response", "warning_under_review", "needs_response", "under_review", "lost"}
)
FINAL_DISPUTE = frozenset({"won", "lost", "warning_closed", "prevented"})


def is_final(status: str | None) -> bool:
    return status in FINAL_STATUSES


def rounded_share(credits: int, part: int, whole: int) -> int:
    """round(credits * part / whole), half away from zero; 0 when nothing was paid."""
    if whole <= 0:
        return 0
    return (2 * credits * part + whole) // (2 * whole)


# -- invoices -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    """One invoice line of the invoice's subscription, as far as credits go."""

    price_id: str | None
    is_proration: bool
    is_credit: bool
    start: int | None
    end: int | None


@dataclass(frozen=True)
class Invoice:
    """What one applied invoice event says about its subscription."""

    id: str
    event_id: str
    subscription_id: str
    user: str
    observed_at: int  # the event's created
    billed_at: int  # the invoice's own created: its lines are as old as that
    is_paid: bool
    billing_reason: str | None
    amount_paid: int
    plan_line: Line | None
    prorations: tuple[Line, ...]  # catalog plans' proration lines
    charge_id: str | None
    payment_intent_id: str | None

    @property
    def is_upgrade(self) -> bool:
        return self.billing_reason == "subscription_update" and bool(self.prorations)

    @property
    def upgrade_price(self) -> str | None:
        """The plan an upgrade invoice moves to: its proration line that is not a credit.

        An invoice can bill several changes at once (those made without invoicing,
        then one with): the plan moved to last is the debit line that starts last.
        """
        debits = [line for line in self.prorations if not line.is_credit and line.price_id]
        if not debits:
            return None
        latest = max(_or(line.start, 0) for line in debits)
        return min(line.price_id for line in debits if _or(line.start, 0) == latest)

    @property
    def pays_period(self) -> bool:
        return self.is_paid and self.plan_line is not None


def _lines_of_subscription(invoice: Mapping[str, Any]) -> list[Line]:
    own = invoice.get("subscription_id")
    return [
        Line(
            line.get("price_id"),
            bool(line.get("is_proration")),
            bool(line.get("is_credit")),
            line.get("period_start"),
            line.get("period_end"),
        )
        for line in invoice.get("lines") or ()
        if (line.get("subscription_id") or own) == own
    ]


def _plan_lines(lines: list[Line], plans: Mapping[str, int]) -> list[Line]:
    return [ln for ln in lines if ln.price_id in plans and not ln.is_proration]


# Billing reasons of an invoice that pays a period (no reason given counts as one).
PERIOD_REASONS = frozenset({None, "subscription", "subscription_create", "subscription_cycle"})


def invoice_rejection(
    event: TypedEvent, plans: Mapping[str, int], has_plan: bool = False
) -> str | None:
    """Why an invoice event is rejected (docs/events.md), None when it can be applied.

    `has_plan`: something shows the subscription's plan (an applied event with a
    catalog price), so prices no plan has are ignored rather than rejected.
    """
    invoice = event["invoice"]
    if invoice.get("subscription_id") is None:
        return None
    lines = _lines_of_subscription(invoice)
    plan_lines = _plan_lines(lines, plans)
    prorations = [ln for ln in lines if ln.price_id in plans and ln.is_proration]
    unknown = [ln.price_id for ln in lines if ln.price_id is not None and ln.price_id not in plans]
    if len({ln.price_id for ln in plan_lines}) > 1:
        return "two catalog plans on one invoice"
    other_only = not plan_lines and not prorations and bool(unknown)
    if other_only and not has_plan:
        return "unknown price"
    is_paid = _is_paid(event)
    is_upgrade = invoice.get("billing_reason") == "subscription_update" and prorations
    outside_periods = other_only and invoice.get("billing_reason") not in PERIOD_REASONS
    if is_paid and not plan_lines and not is_upgrade and not outside_periods:
        return "paid invoice without a plan line"
    newest = _newest_line(plan_lines)
    if is_paid and newest is not None and (newest.start is None or newest.end is None):
        # A period needs both ends: the engine cannot store it and rejects the event.
        return "plan line without a whole period"
    return None


def shows_a_plan(event: TypedEvent, plans: Mapping[str, int]) -> bool:
    """An event the engine applies that names its subscription's catalog plan: an
    invoice with a plan line, a subscription event with a plan item."""
    if "invoice" in event:
        lines = _lines_of_subscription(event["invoice"])
        return bool(_plan_lines(lines, plans)) and invoice_rejection(event, plans) is None
    if "subscription" in event:
        items = event["subscription"].get("items") or ()
        return subscription_rejection(event, plans) is None and any(
            item.get("price_id") in plans for item in items
        )
    return False


def _is_paid(event: TypedEvent) -> bool:
    return event["type"] == "invoice.paid" and event["invoice"].get("status") == "paid"


def _newest_line(lines: list[Line]) -> Line | None:
    """The plan line with the latest start (a line without one only when no other has one)."""
    if not lines:
        return None
    return max(lines, key=lambda ln: (ln.start is not None, ln.start or 0))


def read_invoice(event: TypedEvent, user: str, plans: Mapping[str, int]) -> Invoice:
    invoice = event["invoice"]
    lines = _lines_of_subscription(invoice)
    billed = invoice.get("created")
    return Invoice(
        id=invoice["id"],
        event_id=event["id"],
        subscription_id=invoice["subscription_id"],
        user=user,
        observed_at=event["created"],
        billed_at=event["created"] if billed is None else billed,
        is_paid=_is_paid(event),
        billing_reason=invoice.get("billing_reason"),
        amount_paid=invoice.get("amount_paid") or 0,
        plan_line=_newest_line(_plan_lines(lines, plans)),
        prorations=tuple(ln for ln in lines if ln.price_id in plans and ln.is_proration),
        charge_id=invoice.get("charge_id"),
        payment_intent_id=invoice.get("payment_intent_id"),
    )


# -- subscription events ------------------------------------------------------------------


@dataclass(frozen=True)
class Observation:
    """One event as the subscription's history: a subscription event or an invoice."""

    event_id: str
    observed_at: int
    user: str
    source: str  # "subscription" or "invoice"
    status: str | None = None
    previous: Mapping[str, Any] | None = None  # only what the update changed
    cancel_at_period_end: bool | None = None
    canceled_at: int | None = None
    ended_at: int | None = None
    created: int | None = None  # the subscription object's own created
    price_id: str | None = None  # the plan (catalog price), for invoices their plan line's
    period_start: int | None = None
    period_end: int | None = None
    is_paid: bool | None = None
    billing_reason: str | None = None


def _plan_item(items: Iterable[Mapping[str, Any]] | None, plans: Mapping[str, int]):
    """The item whose price is a catalog plan (the smallest price if several)."""
    catalog = [item for item in items or () if item.get("price_id") in plans]
    return min(catalog, key=lambda item: item["price_id"], default=None)


def subscription_rejection(event: TypedEvent, plans: Mapping[str, int]) -> str | None:
    """A subscription with no catalog price at all, or two catalog plans, is rejected."""
    priced = [i["price_id"] for i in event["subscription"].get("items") or () if i.get("price_id")]
    catalog = {price for price in priced if price in plans}
    if priced and not catalog:
        return "unknown price"
    if len(catalog) > 1:
        return "two catalog plans on one subscription"
    return None


_ITEM_FIELDS = (
    ("price_id", "price_id"),
    ("current_period_start", "current_period_start"),
    ("current_period_end", "current_period_end"),
)


def _previous(sub: Mapping[str, Any], item: Mapping[str, Any] | None, plans) -> dict | None:
    """The state an update left, as far as ordering goes: only what changed."""
    previous = sub.get("previous")
    if not previous:
        return None
    left: dict[str, Any] = {}
    if isinstance(previous.get("status"), str):
        left["status"] = previous["status"]
    if isinstance(previous.get("cancel_at_period_end"), bool):
        left["cancel_at_period_end"] = previous["cancel_at_period_end"]
    if isinstance(previous.get("items"), list):
        before = _plan_item(previous["items"], plans) or {}
        for key, _ in _ITEM_FIELDS:
            value = before.get(key)
            if value is not None and value != (item or {}).get(key):
                left[key] = value
    return left or None


def observe_subscription(event: TypedEvent, user: str, plans: Mapping[str, int]) -> Observation:
    sub = event["subscription"]
    item = _plan_item(sub.get("items"), plans)
    period = item or next(iter(sub.get("items") or ()), None) or {}
    return Observation(
        event_id=event["id"],
        observed_at=event["created"],
        user=user,
        source="subscription",
        status=sub["status"],
        previous=_previous(sub, item, plans),
        cancel_at_period_end=sub.get("cancel_at_period_end"),
        canceled_at=sub.get("canceled_at"),
        ended_at=sub.get("ended_at"),
        created=sub.get("created"),
        price_id=item["price_id"] if item else None,
        period_start=period.get("current_period_start"),
        period_end=period.get("current_period_end"),
    )


def observe_invoice(invoice: Invoice) -> Observation:
    line = invoice.plan_line
    return Observation(
        event_id=invoice.event_id,
        observed_at=invoice.observed_at,
        user=invoice.user,
        source="invoice",
        price_id=line.price_id if line else None,
        period_start=line.start if line else None,
        period_end=line.end if line else None,
        is_paid=invoice.is_paid,
        billing_reason=invoice.billing_reason,
    )


# -- Stripe's order within one second ---------------------------------------------------------


def _left_state(
    previous: Mapping[str, Any] | None, status: str | None, state: Observation | None
) -> bool:
    """Did the update whose previous attributes are `previous` leave this state?"""
    if not previous or state is None:
        return False
    now = {
        "status": status,
        "price_id": state.price_id,
        "current_period_start": state.period_start,
        "current_period_end": state.period_end,
        "cancel_at_period_end": state.cancel_at_period_end,
    }
    return all(now[key] == value for key, value in previous.items())


def _status_rank(status: str | None) -> int:
    return STATUS_ORDER.index(status) if status in STATUS_ORDER else len(STATUS_ORDER)


def next_in_second(
    state: Observation | None, status: str | None, candidates: list[Observation]
) -> Observation:
    """Of the same-second updates, the one that comes next after `state`.

    The one that left the state reached so far; else one that another of them
    left (it must come before that one); else the least far-along status, then
    the event id.
    """

    def rank(candidate: Observation) -> tuple[bool, bool, int, str]:
        is_left = any(
            other.event_id != candidate.event_id
            and _left_state(other.previous, candidate.status, candidate)
            for other in candidates
        )
        return (
            not _left_state(candidate.previous, status, state),
            not is_left,
            _status_rank(candidate.status),
            candidate.event_id,
        )

    return min(candidates, key=rank)


def _by_second(observations: Iterable[Observation]) -> dict[int, list[Observation]]:
    seconds: dict[int, list[Observation]] = defaultdict(list)
    for observation in observations:
        seconds[observation.observed_at].append(observation)
    return seconds


# -- the subscription's state ----------------------------------------------------------------


@dataclass(frozen=True)
class Mirror:
    """A subscription's state folded from all its observations."""

    subscription_id: str
    status: str
    fields: Observation  # the state its fields (period, plan, end) come from
    status_at: int  # the second its status last changed

    @property
    def end(self) -> int | None:
        """When it stops earning periods: only once it is canceled (or expired)."""
        if not is_final(self.status):
            return None
        for moment in (self.fields.ended_at, self.fields.canceled_at):
            if moment is not None:
                return moment
        return self.status_at

    def is_eligible(self, period_start: int) -> bool:
        return self.end is None or period_start < self.end


def status_after_invoice(
    status: str | None, is_paid: bool, billing_reason: str | None
) -> str | None:
    """What a paid or failed invoice does to a subscription's status.

    A failed upgrade invoice moves nothing: Stripe either keeps the subscription
    as it was (`pending_if_incomplete`) or says `past_due` in its own update.
    """
    if not is_paid and billing_reason == "subscription_update":
        return status
    if status is None:
        if is_paid:
            return "active"
        # Only the invoice is known: a failed first invoice leaves the
        # subscription incomplete, a failed renewal makes it past due.
        return "incomplete" if billing_reason == "subscription_create" else "past_due"
    if is_paid and status in {"incomplete", "past_due", "unpaid"}:
        return "active"
    if not is_paid and status in {"active", "trialing"}:
        return "past_due"
    return status


def fold_mirror(subscription_id: str, observations: list[Observation]) -> Mirror | None:
    """Walk the observations by Stripe second: updates first (chained), then invoices.

    `canceled` and `incomplete_expired` are final: nothing later moves out of them.
    """
    state: Observation | None = None
    status: str | None = None
    status_at = 0
    for second, batch in sorted(_by_second(observations).items()):
        pending = [o for o in batch if o.source == "subscription"]
        while pending:
            chosen = next_in_second(state, status, pending)
            pending.remove(chosen)
            if not is_final(status) or is_final(chosen.status):
                state, status, status_at = chosen, chosen.status, second
        for invoice in sorted((o for o in batch if o.source == "invoice"), key=_event_id):
            if not is_final(status):
                status = status_after_invoice(status, bool(invoice.is_paid), invoice.billing_reason)
                status_at = second
    if status is None:
        return None
    if state is None:
        invoices = [o for o in observations if o.source == "invoice"]
        state = max(invoices, key=lambda o: (o.price_id is not None, o.observed_at, o.event_id))
    return Mirror(subscription_id, status, state, status_at)


def _event_id(observation: Observation) -> str:
    return observation.event_id


# -- periods --------------------------------------------------------------------------------


@dataclass
class Grant:
    """What one paid invoice granted in a period: a period invoice or a placed upgrade."""

    invoice: Invoice
    kind: str  # "period" or "upgrade"
    granted: int
    refunded: int = 0  # cumulative amount refunded of its payment
    disputed: list[int] = field(default_factory=list)  # amounts of holding disputes

    @property
    def clawed_back(self) -> int:
        """round(granted * refunded / paid), then what refunds left of each holding dispute."""
        paid = self.invoice.amount_paid
        by_refunds = min(self.granted, rounded_share(self.granted, self.refunded, paid))
        by_disputes = sum(rounded_share(self.granted, amount, paid) for amount in self.disputed)
        return by_refunds + min(self.granted - by_refunds, by_disputes)


@dataclass
class Period:
    """One paid period of a subscription: its plan, its invoices and its allowance."""

    subscription_id: str
    start: int
    end: int
    user: str
    price_id: str  # the plan its (earliest) period invoice billed
    billed_at: int  # that invoice's own created
    grants: list[Grant] = field(default_factory=list)
    allowance: int = 0
    # What refunds and holding disputes take back of the allowance: the allowance
    # less the same fold of what each invoice keeps after them (`fold_allowance`).
    clawed_back: int = 0

    @property
    def key(self) -> tuple[str, int]:
        return (self.subscription_id, self.start)

    @property
    def paid_for(self) -> int:
        """The money model: what this period's paid invoices pay for, net of clawbacks."""
        return sum(grant.granted - grant.clawed_back for grant in self.grants)


def proration_credits(lines: Iterable[Line], start: int, end: int, plans: Mapping[str, int]) -> int:
    """What proration lines pay for in [start, end): plan credits times the share each
    line covers, credit lines negative; rounded down, never below zero."""
    length = end - start
    if length <= 0:
        return 0
    total = Fraction(0)
    for line in lines:
        # A missing end (or start) reads as the period's own, as SQL's least/greatest do.
        covered = min(_or(line.end, end), end) - max(_or(line.start, start), start)
        sign = -1 if line.is_credit else 1
        total += Fraction(sign * plans[line.price_id] * max(0, covered), length)
    return max(0, math.floor(total))


def _or(value: int | None, default: int) -> int:
    return default if value is None else value


def paid_periods(invoices: Iterable[Invoice], plans: Mapping[str, int]) -> dict[tuple, Period]:
    """Every paid period; if two invoices bill one period, the earliest sets its plan."""
    periods: dict[tuple[str, int], Period] = {}
    for invoice in sorted(invoices, key=lambda i: (i.billed_at, i.id)):
        line = invoice.plan_line
        if not invoice.pays_period or line is None or line.start is None or line.end is None:
            continue
        key = (invoice.subscription_id, line.start)
        if key not in periods:
            periods[key] = Period(
                invoice.subscription_id, line.start, line.end, invoice.user, line.price_id,
                invoice.billed_at,
            )  # fmt: skip
        grants = periods[key].grants
        if all(grant.invoice.id != invoice.id for grant in grants):
            grants.append(Grant(invoice, "period", plans[line.price_id]))
    return periods


def place_upgrades(
    periods: Mapping[tuple, Period], invoices: Iterable[Invoice], plans: Mapping[str, int]
) -> None:
    """Each paid upgrade invoice goes to the paid period holding its lines' first start."""
    by_subscription: dict[str, list[Period]] = defaultdict(list)
    for period in periods.values():
        by_subscription[period.subscription_id].append(period)
    placed: set[str] = set()
    for invoice in invoices:
        if not (invoice.is_paid and invoice.is_upgrade) or invoice.id in placed:
            continue
        starts = [line.start for line in invoice.prorations if line.start is not None]
        if not starts:
            continue
        for period in by_subscription[invoice.subscription_id]:
            if period.start <= min(starts) < period.end:
                credits = proration_credits(invoice.prorations, period.start, period.end, plans)
                period.grants.append(Grant(invoice, "upgrade", credits))
                placed.add(invoice.id)
                break


def fold_allowance(
    period: Period, observations: Iterable[Observation], plans: Mapping[str, int]
) -> tuple[int, int]:
    """The period's allowance in Stripe time order: its plan, plus each paid upgrade at
    its invoice's created, lowered to the plan of each change of plan naming the
    period at the event's created (an immediate downgrade). Returned with what the
    allowance keeps once refunds and holding disputes take back their share of each
    invoice (the grants' `refunded` and `disputed` set): the same walk, each invoice
    adding only what is left of it, so a downgrade lowers both alike.

    Events older than the period's invoice are left out: the invoice billed the
    plan of its time. Within one second the updates follow their chain, and an
    upgrade comes right after the change that moved to its plan; one whose change
    is not in that second comes first; the walk starts from the plan the period's
    invoice billed. An upgrade billed while the subscription is still on
    another plan, paid later, and moved to its plan only once paid (a change
    that waits for its payment, `pending_if_incomplete`), counts right after
    that move: the events in between show the plan the customer had not paid
    the change of yet, not a downgrade.
    """
    changes = [
        o
        for o in observations
        if o.source == "subscription"
        and o.period_start == period.start
        and o.price_id is not None
        and o.observed_at >= period.billed_at
    ]
    upgrades = [grant for grant in period.grants if grant.kind == "upgrade"]
    own = sum(grant.clawed_back for grant in period.grants if grant.kind == "period")
    fold = _AllowanceFold(
        plans[period.price_id], plans[period.price_id] - own, period.price_id, period.billed_at,
        plans, changes,
    )  # fmt: skip
    # The period starts on the plan its invoice billed: a same-second change that left
    # that plan comes first, even with no earlier update in the period to chain from.
    fold.state = Observation(
        "", period.billed_at, period.user, "invoice",
        price_id=period.price_id, period_start=period.start, period_end=period.end,
    )  # fmt: skip
    seconds = {o.observed_at for o in changes} | {g.invoice.billed_at for g in upgrades}
    for second in sorted(seconds):
        fold.second(
            second,
            [o for o in changes if o.observed_at == second],
            sorted((g for g in upgrades if g.invoice.billed_at == second), key=_invoice_id),
        )
    return fold.allowance, fold.kept


def _invoice_id(grant: Grant) -> str:
    return grant.invoice.id


@dataclass
class _AllowanceFold:
    """The walk of `fold_allowance`: the allowance, what it keeps after clawbacks, the
    plan reached, upgrades waiting."""

    allowance: int
    kept: int  # the allowance with each invoice adding only what clawbacks leave of it
    plan: str | None  # the plan the subscription is on, as far as the walk has gone
    plan_since: int  # the second that plan was reached
    plans: Mapping[str, int]
    changes: list[Observation]
    state: Observation | None = None
    waiting: list[Grant] = field(default_factory=list)  # paid before the move to their plan

    def second(self, second: int, pending: list[Observation], upgrades: list[Grant]) -> None:
        moved_to = {o.price_id for o in pending}
        for grant in [g for g in upgrades if g.invoice.upgrade_price not in moved_to]:
            upgrades.remove(grant)
            if grant.invoice.upgrade_price != self.plan and self._moves_later(grant, second):
                self.waiting.append(grant)
            else:
                self._add(grant)
        while pending:
            self.state = next_in_second(self.state, self._status(), pending)
            pending.remove(self.state)
            self._move(self.state, upgrades)
        for grant in upgrades:
            self._add(grant)

    def _add(self, grant: Grant) -> None:
        """A paid upgrade: what it granted, and what it keeps after its clawbacks."""
        self.allowance += grant.granted
        self.kept += grant.granted - grant.clawed_back

    def _status(self) -> str | None:
        return self.state.status if self.state else None

    def _moves_later(self, grant: Grant, second: int) -> bool:
        """Was the invoice paid later than billed, moving the subscription to its plan
        only then (a change that waited for its payment)?"""
        paid_at = grant.invoice.observed_at
        if paid_at <= grant.invoice.billed_at:
            return False
        return any(self._applies(grant, o) for o in self.changes if o.observed_at > second)

    @staticmethod
    def _applies(grant: Grant, change: Observation) -> bool:
        """The change a waiting upgrade waited for: to its plan, once it was paid."""
        return (
            change.price_id == grant.invoice.upgrade_price
            and change.observed_at >= grant.invoice.observed_at
        )

    def _move(self, state: Observation, upgrades: list[Grant]) -> None:
        """A subscription event: a change of plan (its previous attributes name the
        plan, or, in a later second than the plan reached, it shows another plan)
        makes the allowance at most its plan's; then what waited for this plan (or the
        same-second upgrade to it) is added. An event on the plan reached (a
        cancellation, say) lowers nothing: an upgrade paid since is kept; nor does one
        of the same second, whose order against the change is unknown."""
        names_plan = bool(state.previous and "price_id" in state.previous)
        shows_another = state.price_id != self.plan and state.observed_at > self.plan_since
        if names_plan or shows_another:
            self.allowance = min(self.allowance, self.plans.get(state.price_id, self.allowance))
            self.kept = min(self.kept, self.plans.get(state.price_id, self.kept))
            if state.price_id != self.plan:
                self.plan, self.plan_since = state.price_id, state.observed_at
        matched = next((g for g in upgrades if g.invoice.upgrade_price == state.price_id), None)
        if matched is not None:
            upgrades.remove(matched)
            self._add(matched)
        for grant in [g for g in self.waiting if self._applies(g, state)]:
            self.waiting.remove(grant)
            self._add(grant)


@dataclass
class Book:
    """All subscriptions of an event set: mirrors, paid periods and allowances."""

    mirrors: dict[str, Mirror]
    periods: dict[tuple[str, int], Period]
    invoices: dict[str, list[Invoice]]  # invoice id -> its applied events' readings

    def eligible_periods_of(self, user: str) -> list[Period]:
        return [
            period
            for period in self.periods.values()
            if period.user == user and self._is_eligible(period)
        ]

    def _is_eligible(self, period: Period) -> bool:
        mirror = self.mirrors.get(period.subscription_id)
        return mirror is None or mirror.is_eligible(period.start)

    def current_period(self, user: str) -> Period | None:
        """The newest eligible paid period of any of the user's subscriptions."""
        return max(
            self.eligible_periods_of(user),
            key=lambda p: (p.start, p.subscription_id),
            default=None,
        )

    def status_of(self, user: str) -> str | None:
        """The status of the user's most relevant subscription (not ended, newest)."""
        mine = [m for m in self.mirrors.values() if m.fields.user == user]
        if not mine:
            return None
        best = min(
            mine,
            key=lambda m: (
                is_final(m.status),
                -(m.fields.period_start if m.fields.period_start is not None else -(2**62)),
                -(m.fields.created if m.fields.created is not None else -(2**62)),
                _descending(m.subscription_id),
            ),
        )
        return best.status


def _descending(text: str) -> tuple[int, ...]:
    return (*(-ord(character) for character in text), 1)


def build_book(
    invoices: list[Invoice],
    subscription_events: list[tuple[str, Observation]],
    plans: Mapping[str, int],
    reversals: Callable[[Grant], tuple[int, list[int]]],
) -> Book:
    """Fold everything: `subscription_events` are (subscription id, observation) pairs;
    `reversals(grant)` gives what was refunded of the grant's invoice and the amounts
    of its holding disputes."""
    observations: dict[str, list[Observation]] = defaultdict(list)
    for subscription_id, observation in subscription_events:
        observations[subscription_id].append(observation)
    for invoice in invoices:
        observations[invoice.subscription_id].append(observe_invoice(invoice))
    mirrors = {}
    for subscription_id, history in observations.items():
        mirror = fold_mirror(subscription_id, history)
        if mirror is not None:
            mirrors[subscription_id] = mirror
    periods = paid_periods(invoices, plans)
    place_upgrades(periods, invoices, plans)
    for period in periods.values():
        for grant in period.grants:
            grant.refunded, grant.disputed = reversals(grant)
        period.allowance, kept = fold_allowance(period, observations[period.subscription_id], plans)
        period.clawed_back = period.allowance - kept
    by_id: dict[str, list[Invoice]] = defaultdict(list)
    for invoice in invoices:
        by_id[invoice.id].append(invoice)
    return Book(mirrors, periods, dict(by_id))
