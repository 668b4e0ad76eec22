"""Stripe's facts against what tally recorded under the same business keys. Pure.

- missing: Stripe says it was paid (or taken back) and tally has no record of
  it, or knows less (a smaller refunded amount, a dispute still open that
  Stripe has closed);
- extra: tally granted for an invoice or a Checkout Session that Stripe does
  not show as paid, or knows of more refunded than Stripe says.

Refunds and disputes count only when they take back a payment tally granted
for (a pack or a subscription invoice, as tally or this run's facts know it):
other charges of the Stripe account are none of tally's business.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from tally.ops.stripe_facts import FINAL_DISPUTE_STATUSES, KIND_NAMES, Fact, Kind

JSON = dict[str, Any]
Status = Literal["missing", "extra"]


@dataclass(frozen=True)
class Difference:
    status: Status
    kind: Kind
    stripe_id: str
    user_id: str | None
    stripe_says: str
    tally_says: str
    fact: Fact | None = field(default=None, repr=False, compare=False)

    def as_row(self) -> JSON:
        return {
            "status": self.status,
            "kind": KIND_NAMES[self.kind],
            "stripe_id": self.stripe_id,
            "user_id": self.user_id,
            "stripe_says": self.stripe_says,
            "tally_says": self.tally_says,
        }


@dataclass(frozen=True)
class Unlisted:
    """A grant tally recorded that Stripe's lists did not show: checked one by one."""

    kind: Kind
    stripe_id: str
    record: JSON


@dataclass
class Comparison:
    compared: int = 0
    differences: list[Difference] = field(default_factory=list)
    unlisted: list[Unlisted] = field(default_factory=list)

    @property
    def matched(self) -> int:
        return self.compared - len(self.differences)


class Records:
    """What ``public.reconcile_records`` answered, indexed by business key."""

    def __init__(self, doc: JSON) -> None:
        self.invoices: dict[str, JSON] = {r["invoice_id"]: r for r in doc["invoices"]}
        self.packs: dict[str, JSON] = {r["checkout_session_id"]: r for r in doc["packs"]}
        self.charges: dict[str, JSON] = {r["charge_id"]: r for r in doc["charges"]}
        self.disputes: dict[str, JSON] = {r["dispute_id"]: r for r in doc["disputes"]}
        self.customers: dict[str, str] = {r["customer_id"]: r["user_id"] for r in doc["customers"]}
        self.payments: dict[tuple[str | None, str | None], JSON] = {
            (r["payment_intent_id"], r["charge_id"]): r for r in doc["payments"] if r["kind"]
        }
        self.events: dict[str, list[JSON]] = {}
        for event in doc["events"]:
            self.events.setdefault(event["object_id"], []).append(event)

    def record_of(self, found: Fact) -> JSON | None:
        table = {"invoice": self.invoices, "pack": self.packs, "refund": self.charges,
                 "dispute": self.disputes}[found.kind]  # fmt: skip
        return table.get(found.object_id)

    def waiting(self, object_id: str) -> str | None:
        """Why tally has nothing: the parked or rejected events about the object."""
        found = self.events.get(object_id, [])
        return "; ".join(f"{e['outcome']} {e['event_id']}: {e['reason']}" for e in found) or None


def objects_of(facts: list[Fact]) -> JSON:
    """The ids ``public.reconcile_records`` is asked about."""
    ids: dict[Kind, list[str]] = {"invoice": [], "pack": [], "refund": [], "dispute": []}
    for found in facts:
        ids[found.kind].append(found.object_id)
    payments = [found.payment for found in facts if found.kind in ("refund", "dispute")]
    customers = sorted({c for f in facts if (c := f.reading.get("customer_id"))})
    return {"invoices": ids["invoice"], "checkout_sessions": ids["pack"],
            "charges": ids["refund"], "disputes": ids["dispute"], "customers": customers,
            "payments": payments}  # fmt: skip


def compare(facts: list[Fact], records: Records) -> Comparison:
    comparison = Comparison()
    pack_payments = {f.reading.get("payment_intent_id") for f in facts if f.kind == "pack"}
    invoices = {f.object_id for f in facts if f.kind == "invoice"} | records.invoices.keys()
    for found in facts:
        if found.kind in ("refund", "dispute") and not is_tally_payment(
            found, records, pack_payments, invoices
        ):
            continue
        comparison.compared += 1
        difference = differs(found, records)
        if difference is not None:
            comparison.differences.append(difference)
    listed = {(f.kind, f.object_id) for f in facts}
    grants: list[tuple[Kind, dict[str, JSON]]] = [
        ("invoice", records.invoices),
        ("pack", records.packs),
    ]
    comparison.unlisted = [
        Unlisted(kind, stripe_id, record)
        for kind, table in grants
        for stripe_id, record in table.items()
        if (kind, stripe_id) not in listed
    ]
    return comparison


def is_tally_payment(
    found: Fact, records: Records, pack_payments: set[Any], invoices: set[str]
) -> bool:
    payment = found.payment
    return (
        records.record_of(found) is not None
        or (payment["payment_intent_id"], payment["charge_id"]) in records.payments
        or (
            payment["payment_intent_id"] is not None
            and payment["payment_intent_id"] in pack_payments
        )
        or found.reading.get("invoice_id") in invoices  # a legacy charge names its invoice
    )


def differs(found: Fact, records: Records) -> Difference | None:
    record = records.record_of(found)
    if found.kind == "refund":
        return refund_differs(found, record, records)
    if found.kind == "dispute":
        return dispute_differs(found, record, records)
    if record is not None:
        return None
    return missing(found, records, records.waiting(found.object_id) or "nothing recorded")


def refund_differs(found: Fact, record: JSON | None, records: Records) -> Difference | None:
    stripe_refunded = int(found.reading.get("amount_refunded") or 0)
    known = int(record["amount_refunded"]) if record else 0
    if known == stripe_refunded:
        return None
    says = f"refunded {known}" if record else records.waiting(found.object_id) or "nothing recorded"
    if known < stripe_refunded:
        return missing(found, records, says)
    return Difference("extra", "refund", found.object_id, user_of(found, records), found.says, says)


def dispute_differs(found: Fact, record: JSON | None, records: Records) -> Difference | None:
    status = str(found.reading.get("status"))
    if record is not None and dispute_state(record["status"]) == dispute_state(status):
        return None
    if record is not None:
        return missing(found, records, f"dispute {record['status']}")
    return missing(found, records, records.waiting(found.object_id) or "nothing recorded")


def dispute_state(status: str) -> str:
    """What a dispute's status means for credits: open (taken back), won, or closed."""
    if status == "won":
        return "won"
    return "closed" if status in FINAL_DISPUTE_STATUSES and status != "lost" else "open"


def missing(found: Fact, records: Records, tally_says: str) -> Difference:
    return Difference(
        "missing", found.kind, found.object_id, user_of(found, records), found.says, tally_says,
        found,
    )  # fmt: skip


def user_of(found: Fact, records: Records) -> str | None:
    """Whose it is: tally's record, the object's own user id, the customer's link, the purchase."""
    record = records.record_of(found)
    payment = found.payment
    target = records.payments.get((payment["payment_intent_id"], payment["charge_id"]))
    candidates = [
        record.get("user_id") if record else None,
        found.user_hint,
        records.customers.get(found.reading.get("customer_id") or ""),
        target.get("user_id") if target else None,
    ]
    return next((str(c) for c in candidates if c), None)


def extra(unlisted: Unlisted, stripe_says: str) -> Difference:
    """A grant Stripe does not back (``stripe_says`` what Stripe has instead)."""
    record = unlisted.record
    if unlisted.kind == "pack":
        tally_says = f"{record['pack_key']}: {record['credits']} add-on credits"
    else:
        tally_says = f"{'/'.join(record['kinds'])} grant of {record['granted'] or 0} plan credits"
    tally_says += f" ({record['stripe_event_id']})"
    user = str(record["user_id"]) if record.get("user_id") else None
    return Difference("extra", unlisted.kind, unlisted.stripe_id, user, stripe_says, tally_says)
