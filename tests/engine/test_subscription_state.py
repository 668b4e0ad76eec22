"""Subscription status mirror and cancellation (docs/policy.md)."""

from __future__ import annotations

import pytest

from tests.support import typed_events as te


def subscribed(engine, buyer, plan: str = "starter") -> te.Subscription:
    sub = buyer.subscription(plan)
    engine.apply(sub.created(created=te.at(0, 1)))
    engine.apply(sub.invoice_paid(period=0, created=te.at(0, 2)))
    return sub


def status(engine, buyer) -> str:
    return engine.balance(buyer.user_id)["subscription_status"]


def test_past_due_status_is_recorded_from_the_subscription_update(engine, buyer):
    sub = subscribed(engine, buyer)
    engine.apply(sub.updated(period=1, status="past_due", created=te.at(1, 60)))
    assert status(engine, buyer) == "past_due"
    assert engine.credits(buyer.user_id) == (1000, 0)


def test_failed_renewal_invoice_makes_an_active_subscription_past_due(engine, buyer):
    sub = subscribed(engine, buyer)
    engine.apply(sub.invoice_failed(period=1, created=te.at(1, 60)))
    assert status(engine, buyer) == "past_due"


def test_paid_invoice_after_past_due_makes_the_subscription_active_again(engine, buyer):
    sub = subscribed(engine, buyer)
    engine.apply(sub.updated(period=1, status="past_due", created=te.at(1, 60)))
    engine.apply(sub.invoice_paid(period=1, created=te.at(1, 120)))
    assert status(engine, buyer) == "active"
    assert engine.balance(buyer.user_id)["current_period_end"] == te.at(2)


def test_an_older_update_does_not_override_a_newer_one(engine, buyer):
    sub = subscribed(engine, buyer)
    engine.apply(sub.updated(period=0, status="past_due", created=te.at(0, 600)))
    engine.apply(sub.updated(period=0, status="active", created=te.at(0, 300)))
    assert status(engine, buyer) == "past_due"


def test_updated_before_created_ends_in_the_updated_state(engine, buyer):
    sub = buyer.subscription("starter")
    engine.apply(
        sub.updated(status="active", previous={"status": "incomplete"}, created=te.at(0, 9))
    )
    engine.apply(sub.created(status="incomplete", created=te.at(0, 1)))
    assert status(engine, buyer) == "active"


@pytest.mark.parametrize("unpaid_first", [True, False], ids=["unpaid-first", "active-first"])
def test_same_second_updates_are_ordered_by_the_state_they_left(engine, buyer, unpaid_first):
    sub = subscribed(engine, buyer)
    same_second = te.at(0, 900)
    # unpaid -> active left the state the other update reached, so it is the
    # newer one, although "unpaid" ranks above "active".
    to_unpaid = sub.updated(status="unpaid", previous={"status": "past_due"}, created=same_second)
    to_active = sub.updated(status="active", previous={"status": "unpaid"}, created=same_second)
    engine.apply_all(*([to_unpaid, to_active] if unpaid_first else [to_active, to_unpaid]))
    assert status(engine, buyer) == "active"


def test_same_second_updates_with_unrelated_previous_states_take_the_higher_rank(engine, buyer):
    sub = subscribed(engine, buyer)
    same_second = te.at(0, 900)
    to_past_due = sub.updated(
        status="past_due", previous={"status": "trialing"}, created=same_second
    )
    to_active = sub.updated(status="active", previous={"status": "incomplete"}, created=same_second)
    engine.apply_all(to_past_due, to_active)
    assert status(engine, buyer) == "past_due"


def test_cancellation_keeps_all_credits(engine, buyer):
    sub = subscribed(engine, buyer)
    engine.apply(buyer.pack_purchase("pack_500").completed())
    engine.spend(buyer.user_id, 100)
    engine.apply(sub.deleted(period=0, ended_at=te.at(0, te.DAY)))
    assert engine.credits(buyer.user_id) == (900, 500)
    assert status(engine, buyer) == "canceled"


def test_an_older_update_cannot_reactivate_a_cancelled_subscription(engine, buyer):
    sub = subscribed(engine, buyer)
    engine.apply(sub.deleted(period=0, ended_at=te.at(0, te.DAY)))
    engine.apply(sub.updated(period=0, status="active", created=te.at(0, 600)))
    assert status(engine, buyer) == "canceled"


def test_a_newer_update_cannot_reactivate_a_cancelled_subscription(engine, buyer):
    sub = subscribed(engine, buyer)
    engine.apply(sub.deleted(period=0, ended_at=te.at(0, te.DAY)))
    engine.apply(sub.updated(period=0, status="active", created=te.at(0, 2 * te.DAY)))
    assert status(engine, buyer) == "canceled"


def test_no_grant_for_a_period_starting_after_the_subscription_ended(engine, buyer):
    sub = subscribed(engine, buyer)
    engine.spend(buyer.user_id, 100)
    engine.apply(sub.deleted(period=0, ended_at=te.at(1)))
    engine.apply(sub.invoice_paid(period=1, created=te.at(1, 5)))
    assert engine.credits(buyer.user_id) == (900, 0)


def test_immediate_cancellation_stops_the_next_periods_grant(engine, buyer):
    sub = subscribed(engine, buyer)
    engine.apply(sub.deleted(period=0, ended_at=te.at(0, 3 * te.DAY)))
    engine.apply(sub.invoice_paid(period=1, created=te.at(1, 5)))
    assert engine.credits(buyer.user_id) == (1000, 0)


def test_cancel_at_period_end_still_grants_the_paid_period(engine, buyer):
    sub = buyer.subscription("pro")
    engine.apply(sub.created(created=te.at(0, 1)))
    engine.apply(
        sub.updated(
            cancel_at_period_end=True,
            previous={"cancel_at_period_end": False},
            created=te.at(0, 3),
        )
    )
    engine.apply(sub.invoice_paid(period=0, created=te.at(0, 2)))
    assert engine.credits(buyer.user_id) == (5000, 0)
    assert status(engine, buyer) == "active"


def test_a_period_paid_before_the_end_is_granted_even_if_its_invoice_arrives_later(engine, buyer):
    sub = buyer.subscription("starter")
    engine.apply(sub.created(created=te.at(0, 1)))
    engine.apply(sub.deleted(period=0, ended_at=te.at(1)))
    engine.apply(sub.invoice_paid(period=0, created=te.at(0, 2)))
    assert engine.credits(buyer.user_id) == (1000, 0)
    assert status(engine, buyer) == "canceled"


def test_incomplete_expired_is_final(engine, buyer):
    sub = buyer.subscription("starter")
    engine.apply(sub.created(status="incomplete", created=te.at(0, 1)))
    engine.apply(sub.updated(status="incomplete_expired", created=te.at(0, te.DAY)))
    engine.apply(sub.updated(status="active", created=te.at(0, 2 * te.DAY)))
    assert status(engine, buyer) == "incomplete_expired"


def test_a_new_subscription_after_cancellation_is_granted(engine, buyer):
    old = subscribed(engine, buyer)
    engine.apply(old.deleted(period=0, ended_at=te.at(0, te.DAY)))
    new = buyer.subscription("pro")
    engine.apply(new.created(period=1, created=te.at(1, 1)))
    engine.apply(new.invoice_paid(period=1, created=te.at(1, 2)))
    balance = engine.balance(buyer.user_id)
    assert (balance["plan_credits"], balance["plan_key"]) == (5000, "pro")
    assert balance["subscription_status"] == "active"


def test_a_same_second_round_trip_ends_the_same_in_either_arrival_order(engine, make_user):
    # active -> past_due -> active within one second: each update's previous
    # state matches the other's state, so "the one that left the other's
    # state is newer" holds both ways and the engine keeps whichever arrived
    # last. docs/events.md, rule 2: a tie must not be decided by arrival order.
    finals = []
    for reverse in (False, True):
        buyer = te.Buyer.new(make_user())
        sub = buyer.subscription("starter")
        engine.apply(sub.created(created=te.at(0, 1)))
        same_second = te.at(0, 900)
        updates = [
            sub.updated(status="past_due", previous={"status": "active"}, created=same_second),
            sub.updated(status="active", previous={"status": "past_due"}, created=same_second),
        ]
        engine.apply_all(*(reversed(updates) if reverse else updates))
        finals.append(engine.balance(buyer.user_id)["subscription_status"])
    assert finals[0] == finals[1]


# -- a failed upgrade invoice ---------------------------------------------------------------
# The invoice of a change billed at once (billing_reason subscription_update)
# moves no status: with payment_behavior=pending_if_incomplete (what
# /billing/plan uses) Stripe keeps the subscription active with a pending
# update; with the other behaviours it sends the subscription's past_due itself.


@pytest.fixture(params=["legacy", "basil"])
def layout_buyer(request, user) -> te.Buyer:
    return te.Buyer.new(user, layout=request.param)


def failed_upgrade(sub: te.Subscription, created: int) -> dict:
    return sub.proration_invoice(period=0, from_plan="starter", to_plan="pro",
                                 at_time=created, paid=False)  # fmt: skip


@pytest.mark.parametrize("invoice_first", [True, False], ids=["invoice-first", "update-first"])
def test_a_failed_upgrade_waiting_for_its_payment_leaves_the_subscription_active(
    engine, layout_buyer, invoice_first
):
    sub = subscribed(engine, layout_buyer)
    same_second = te.at(0, 900)
    failed = failed_upgrade(sub, same_second)
    pending = sub.updated(period=0, status="active", created=same_second)  # items unchanged
    engine.apply_all(*((failed, pending) if invoice_first else (pending, failed)))
    balance = engine.balance(layout_buyer.user_id)
    assert (balance["subscription_status"], balance["plan_key"]) == ("active", "starter")
    assert engine.credits(layout_buyer.user_id) == (1000, 0)


def test_a_failed_upgrade_arriving_after_the_subscription_event_moves_no_status(
    engine, layout_buyer
):
    sub = subscribed(engine, layout_buyer)
    engine.apply(sub.updated(period=0, status="active", created=te.at(0, 900)))
    engine.apply(failed_upgrade(sub, te.at(0, 901)))
    assert status(engine, layout_buyer) == "active"


def test_a_failed_upgrade_whose_subscription_stripe_made_past_due_is_past_due(engine, layout_buyer):
    sub = subscribed(engine, layout_buyer)
    same_second = te.at(0, 900)
    engine.apply(failed_upgrade(sub, same_second))
    engine.apply(sub.updated(period=0, plan="pro", status="past_due",
                             previous={"status": "active", "price_id": te.plan_price("starter")},
                             created=same_second))  # fmt: skip
    assert status(engine, layout_buyer) == "past_due"
    assert engine.credits(layout_buyer.user_id) == (1000, 0)


def test_a_failed_upgrade_of_a_subscription_not_known_yet_records_no_status(engine, layout_buyer):
    sub = layout_buyer.subscription("starter")
    engine.apply(failed_upgrade(sub, te.at(0, 900)))
    assert status(engine, layout_buyer) is None
    engine.apply(sub.created(created=te.at(0, 1)))
    assert status(engine, layout_buyer) == "active"


def test_a_failed_renewal_still_makes_an_active_subscription_past_due(engine, layout_buyer):
    sub = subscribed(engine, layout_buyer)
    engine.apply(sub.invoice_failed(period=1, created=te.at(1, 60)))
    assert status(engine, layout_buyer) == "past_due"
