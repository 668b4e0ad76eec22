"""docs/events.md, rule 2, as a property: any delivery order, with any duplicates, ends the same.

For a random set of a customer's events (subscribe, renew, upgrade, packs,
refunds, a dispute; no spending in between), one fresh user receives them in
Stripe's own order and another fresh user receives the same story in a
random order with redeliveries (same event id) and re-announcements (a new
event id for the same change). Both must end with the same balance, and
that balance must be what the credit policy says.

One database serves all examples; fresh users and fresh Stripe ids keep
them apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.engine.conftest import Engine, new_user
from tests.support import typed_events as te

UPGRADE_AFTER = 4 * te.DAY  # into the period: the upgrade pays for the other 26 days


@dataclass(frozen=True)
class Story:
    """Which parts of a customer's month happen."""

    renews: bool
    renewal_fails_first: bool  # invoice.payment_failed, then paid three days later
    upgrades: bool
    cancels: bool  # customer.subscription.deleted at the end of the last period
    buys_small_pack: bool
    buys_large_pack: bool
    refunds: tuple[int, ...]  # cumulative amount_refunded of the large pack, in cents
    dispute_outcome: str | None  # None, "open", "won" or "lost" (small pack)


stories = st.builds(
    Story,
    renews=st.booleans(),
    renewal_fails_first=st.booleans(),
    upgrades=st.booleans(),
    cancels=st.booleans(),
    buys_small_pack=st.booleans(),
    buys_large_pack=st.booleans(),
    refunds=st.lists(st.integers(1, te.PACK_AMOUNTS["pack_2000"]), max_size=2).map(
        lambda amounts: tuple(sorted(amounts))
    ),
    dispute_outcome=st.sampled_from([None, "open", "won", "lost"]),
)


def events_of(story: Story, buyer: te.Buyer) -> list[dict[str, Any]]:
    """The story's events in Stripe's order (by `created`)."""
    sub = buyer.subscription("starter")
    events = [
        sub.checkout(created=te.at(0, 0)),
        sub.created(created=te.at(0, 1)),
        sub.invoice_paid(period=0, created=te.at(0, 5)),
    ]
    if story.renews:
        paid_at = te.at(1, 3 * te.DAY) if story.renewal_fails_first else te.at(1, 5)
        if story.renewal_fails_first:
            events.append(sub.invoice_failed(period=1, created=te.at(1, 5)))
        events += [
            sub.invoice_paid(period=1, created=paid_at),
            sub.updated(period=1, previous={"current_period_start": te.at(0)}, created=te.at(1, 6)),
        ]
    if story.upgrades:
        # After the period's invoice is paid (an upgrade while a renewal is
        # still unpaid is a separate case: see test_contract_gaps).
        period = 1 if story.renews else 0
        events += sub.upgrade(period=period, plan="pro", at_time=te.at(period, UPGRADE_AFTER))
    if story.cancels:
        last = 1 if story.renews else 0
        plan = "pro" if story.upgrades else "starter"  # the item's price when it ends
        events.append(sub.deleted(period=last, plan=plan, ended_at=te.at(last + 1)))
    large = buyer.pack_purchase("pack_2000")
    if story.buys_large_pack:
        events.append(large.completed(created=te.at(0, 100)))
        for n, amount in enumerate(story.refunds):
            events.append(large.refunded(amount_refunded=amount, created=te.at(0, 200 + n)))
    small = buyer.pack_purchase("pack_500")
    if story.buys_small_pack:
        events.append(small.completed(created=te.at(0, 300)))
        if story.dispute_outcome is not None:
            dispute_id = te.new_id("dp")
            events.append(small.dispute(dispute_id=dispute_id, created=te.at(0, 400)))
            if story.dispute_outcome in ("won", "lost"):
                events.append(
                    small.dispute(
                        dispute_id=dispute_id,
                        status=story.dispute_outcome,
                        closed=True,
                        created=te.at(0, 500),
                    )
                )
    return sorted(events, key=lambda event: event["created"])


def expected_credits(story: Story) -> tuple[int, int]:
    """(plan, add-on) credits the policy gives at the end of the story."""
    plan = te.PLANS["starter"][1]
    if story.upgrades:
        # What the upgrade's proration invoice pays for: the difference for the
        # rest of the period, rounded down.
        difference = te.PLANS["pro"][1] - te.PLANS["starter"][1]
        plan += difference * (te.PERIOD - UPGRADE_AFTER) // te.PERIOD
    addon = 0
    if story.buys_large_pack:
        refunded = max(story.refunds, default=0)
        share = (2000 * refunded * 2 + te.PACK_AMOUNTS["pack_2000"]) // (
            2 * te.PACK_AMOUNTS["pack_2000"]
        )  # round half away from zero, all positive
        addon += 2000 - share
    if story.buys_small_pack:
        addon += 0 if story.dispute_outcome in ("open", "lost") else 500
    return plan, addon


def final_state(engine: Engine, user_id: Any) -> tuple[Any, ...]:
    balance = engine.balance(user_id)
    return (
        balance["plan_credits"],
        balance["addon_credits"],
        balance["plan_key"],
        balance["subscription_status"],
        balance["current_period_end"],
    )


@st.composite
def deliveries(draw: st.DrawFn, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events in a random order, some delivered twice or re-announced."""
    redelivered = draw(st.lists(st.sampled_from(events), max_size=4)) if events else []
    reannounced = draw(st.lists(st.sampled_from(events), max_size=3)) if events else []
    stream = events + redelivered + [te.with_event_id(event) for event in reannounced]
    return draw(st.permutations(stream))


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(story=stories, data=st.data())
def test_any_delivery_order_with_duplicates_ends_in_the_same_balances(engine, story, data):
    canonical = te.Buyer.new(new_user(engine))
    shuffled = te.Buyer.new(new_user(engine))
    engine.apply_all(*events_of(story, canonical))
    engine.apply_all(*data.draw(deliveries(events_of(story, shuffled))))
    assert final_state(engine, shuffled.user_id) == final_state(engine, canonical.user_id)
    assert engine.credits(canonical.user_id) == expected_credits(story)
    status = engine.balance(canonical.user_id)["subscription_status"]
    assert status == ("canceled" if story.cancels else "active")
