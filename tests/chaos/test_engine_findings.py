"""What the chaos runs found against the contract, kept as regression tests.

Each was a failure of the engine, found by the state machines, the large run
or the hostile input, reduced to its smallest form (docs/reliability.md,
"Findings"). Those fixed in the engine are plain regression tests; those
still open are `xfail(strict=True)` with the reason, so that the fix turns
them into failures to promote.
"""

from __future__ import annotations

import uuid

import pytest
from psycopg.types.json import Jsonb

from tally.stripe_events import StripeWorld
from tests.chaos.conftest import PRICES
from tests.simulation.database import create_users, read_states
from tests.simulation.typed import to_typed
from tests.support import typed_events as te

HALF = te.PERIOD // 2


def apply(service, raw: dict) -> dict:
    return apply_typed(service, to_typed(raw))


def apply_typed(service, typed: dict) -> dict:
    return service.execute("select public.apply_stripe_event(%s)", (Jsonb(typed),)).fetchone()[0]


def new_user(admin) -> str:
    user = str(uuid.uuid4())
    create_users(admin, [user])
    return user


def test_a_proration_invoice_arriving_first_is_recorded(admin, service):
    user = str(uuid.uuid4())
    create_users(admin, [user])
    world = StripeWorld("basil", prices=PRICES.amounts, seed=user)
    sub, _ = world.subscribe(world.customer(user_id=user), "price_chaos_basic")
    changed = world.change_plan(sub, "price_chaos_pro", invoice_now=True)
    proration = next(event for event in changed if event["type"] == "invoice.paid")
    assert apply(service, proration)["status"] in {"applied", "parked", "rejected"}


def test_a_reversed_spend_does_not_bring_back_refunded_credits(admin, service):
    user = str(uuid.uuid4())
    create_users(admin, [user])
    world = StripeWorld("basil", prices=PRICES.amounts, seed=user)
    pack, bought = world.buy_pack(world.customer(user_id=user), "price_chaos_pack_s")
    for event in bought:
        apply(service, event)
    service.execute("select public.spend_credits(%s::uuid, 1000, 'job-1')", (user,))
    for event in world.refund(pack, pack.amount // 2):  # half the pack: 250 credits
        apply(service, event)
    service.execute("select public.reverse_spend(%s::uuid, 'job-1')", (user,))
    # Without the spend the user would hold 500 - 250 add-on credits; never more with it.
    assert read_states(admin, [user])[user].addon_credits <= 250


def test_a_line_without_a_period_end_pays_no_period(admin, service):
    user = str(uuid.uuid4())
    create_users(admin, [user])
    world = StripeWorld("basil", prices=PRICES.amounts, seed=user)
    _, events = world.subscribe(world.customer(user_id=user), "price_chaos_basic")
    paid = next(event for event in events if event["type"] == "invoice.paid")
    paid["data"]["object"]["lines"]["data"][0]["period"]["end"] = None
    typed = to_typed(paid)
    assert typed["invoice"]["lines"][0]["period_end"] is None
    assert apply(service, paid)["status"] == "rejected"
    assert read_states(admin, [user])[user].plan_credits == 500


def test_an_upgrade_that_waited_for_its_payment_counts_once_paid(admin, service):
    user = new_user(admin)
    sub = te.Buyer.new(user).subscription("starter")
    failed = sub.proration_invoice(period=0, from_plan="starter", to_plan="pro",
                                   at_time=te.at(0, HALF), paid=False)  # fmt: skip
    pending = sub.updated(period=0, plan="starter", created=te.at(0, HALF + 2))
    paid = sub.proration_invoice(period=0, from_plan="starter", to_plan="pro",
                                 at_time=te.at(0, HALF), invoice_id=failed["invoice"]["id"],
                                 created=te.at(0, HALF + te.DAY))  # fmt: skip
    moved = sub.plan_changed(period=0, plan="pro", previous_plan="starter",
                             created=te.at(0, HALF + te.DAY + 2))  # fmt: skip
    for event in [sub.invoice_paid(period=0), failed, pending, paid, moved]:
        apply_typed(service, event)
    # Starter's 1,000 plus the upgrade's paid half of pro's difference.
    assert read_states(admin, [user])[user].plan_credits == 1000 + 2000


def test_a_same_second_upgrade_and_downgrade_add_nothing_whatever_their_event_ids(admin, service):
    user = new_user(admin)
    sub = te.Buyer.new(user).subscription("starter")
    up_change, up_paid = sub.upgrade(period=0, plan="pro", at_time=te.at(0, HALF))
    down_change, down_paid = sub.upgrade(period=0, plan="starter", from_plan="pro",
                                         at_time=te.at(0, HALF))  # fmt: skip
    up_change = te.with_event_id(up_change, "evt_z_upgrade")
    down_change = te.with_event_id(down_change, "evt_a_downgrade")
    for event in [sub.invoice_paid(period=0), up_change, up_paid, down_change, down_paid]:
        apply_typed(service, event)
    assert read_states(admin, [user])[user].plan_credits == 1000


@pytest.mark.parametrize("layout", ["legacy", "basil"])
@pytest.mark.parametrize(("early", "plan_credits"), [("opened", 0), ("won", 1000)])
def test_dispute_events_delivered_before_their_invoice_count(
    admin, service, layout, early, plan_credits
):
    user = new_user(admin)
    sub = te.Buyer.new(user, layout=layout).subscription("starter")
    paid = sub.invoice_paid(period=0)
    dispute_id = te.new_id("dp")
    opened = sub.dispute(paid, dispute_id=dispute_id, created=te.at(0, 100))
    won = sub.dispute(paid, dispute_id=dispute_id, status="won", closed=True,
                      created=te.at(0, 200))  # fmt: skip
    events = [opened] if early == "opened" else [won]
    if layout == "basil":
        events.append(sub.invoice_payment(paid))
    events.append(paid)
    if early == "won":
        events.append(opened)  # e.g. Stripe's redelivery of the opening
    for event in events:
        apply_typed(service, event)
    assert read_states(admin, [user])[user].plan_credits == plan_credits


@pytest.mark.parametrize("layout", ["legacy", "basil"])
def test_a_cancellation_delivered_before_its_downgrade_lowers_the_allowance(admin, service, layout):
    user = new_user(admin)
    sub = te.Buyer.new(user, layout=layout).subscription("pro")
    apply_typed(service, sub.invoice_paid(period=0))
    downgrade = sub.plan_changed(period=0, plan="starter", previous_plan="pro",
                                 created=te.at(0, HALF))  # fmt: skip
    # The cancellation shows the plan the customer moved to; its update is still on its way.
    apply_typed(service, sub.deleted(period=0, plan="starter", ended_at=te.at(0, HALF + 60)))
    assert read_states(admin, [user])[user].plan_credits == te.PLANS["starter"][1]
    apply_typed(service, downgrade)
    assert read_states(admin, [user])[user].plan_credits == te.PLANS["starter"][1]


@pytest.mark.parametrize("layout", ["legacy", "basil"])
def test_a_cancellation_after_a_paid_upgrade_keeps_what_the_upgrade_paid_for(
    admin, service, layout
):
    user = new_user(admin)
    sub = te.Buyer.new(user, layout=layout).subscription("starter")
    up_at, down_at = te.at(0, HALF), te.at(0, HALF + te.DAY)
    events = [
        sub.invoice_paid(period=0),
        *sub.there_and_back(period=0, plan="pro", up_at=up_at, down_at=down_at),
        sub.updated(period=0, plan="starter", cancel_at_period_end=True,
                    previous={"cancel_at_period_end": False}, created=down_at + 10),
    ]  # fmt: skip
    for event in events:
        apply_typed(service, event)
    pro, starter = te.PLANS["pro"][1], te.PLANS["starter"][1]
    # One day of Pro was paid for: its share of the difference stays after the cancellation.
    assert read_states(admin, [user])[user].plan_credits == starter + (pro - starter) // 30


@pytest.mark.parametrize("layout", ["legacy", "basil"])
def test_a_paid_invoice_of_proration_lines_without_a_billing_reason_is_rejected(
    admin, service, layout
):
    user = new_user(admin)
    sub = te.Buyer.new(user, layout=layout).subscription("starter")
    invoice = sub.proration_invoice(period=0, from_plan="starter", to_plan="pro",
                                    at_time=te.at(0, HALF), billing_reason=None)  # fmt: skip
    answer = apply_typed(service, invoice)
    assert answer["status"] == "rejected", answer
    assert "no plan line" in answer["reason"]
    assert read_states(admin, [user])[user].subscription_status is None
