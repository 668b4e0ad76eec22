"""SPEC 2 'Plan change within a period': max(0, new allowance - plan credits spent)."""

from __future__ import annotations

import pytest

from tests.support import typed_events as te


def subscribed(engine, buyer, plan: str) -> te.Subscription:
    sub = buyer.subscription(plan)
    engine.apply(sub.created(created=te.at(0, 1)))
    engine.apply(sub.invoice_paid(period=0, created=te.at(0, 2)))
    return sub


def change_plan(engine, sub: te.Subscription, new: str, old: str, seconds: int) -> None:
    engine.apply(sub.plan_changed(period=0, plan=new, previous_plan=old, created=te.at(0, seconds)))


def test_upgrade_with_nothing_spent_gives_exactly_the_new_allowance(engine, buyer):
    sub = subscribed(engine, buyer, "starter")
    change_plan(engine, sub, "pro", "starter", 3600)
    assert engine.credits(buyer.user_id) == (5000, 0)
    assert engine.balance(buyer.user_id)["plan_key"] == "pro"


def test_upgrade_after_spending_deducts_what_was_spent_this_period(engine, buyer):
    sub = subscribed(engine, buyer, "starter")
    engine.spend(buyer.user_id, 300)
    change_plan(engine, sub, "pro", "starter", 3600)
    assert engine.credits(buyer.user_id) == (4700, 0)


def test_downgrade_with_nothing_spent_gives_exactly_the_new_allowance(engine, buyer):
    sub = subscribed(engine, buyer, "pro")
    change_plan(engine, sub, "starter", "pro", 3600)
    assert engine.credits(buyer.user_id) == (1000, 0)


def test_downgrade_after_spending_deducts_what_was_spent_this_period(engine, buyer):
    sub = subscribed(engine, buyer, "pro")
    engine.spend(buyer.user_id, 300)
    change_plan(engine, sub, "starter", "pro", 3600)
    assert engine.credits(buyer.user_id) == (700, 0)


def test_downgrade_after_spending_more_than_the_new_allowance_leaves_zero(engine, buyer):
    sub = subscribed(engine, buyer, "pro")
    engine.spend(buyer.user_id, 4500)
    change_plan(engine, sub, "starter", "pro", 3600)
    assert engine.credits(buyer.user_id) == (0, 0)


def test_plan_change_does_not_touch_addon_credits(engine, buyer):
    sub = subscribed(engine, buyer, "pro")
    engine.apply(buyer.pack_purchase("pack_500").completed())
    engine.spend(buyer.user_id, 4800)
    change_plan(engine, sub, "starter", "pro", 3600)
    assert engine.credits(buyer.user_id) == (0, 500)


def test_plan_change_is_recorded_as_plan_change_on_the_ledger(engine, buyer):
    sub = subscribed(engine, buyer, "starter")
    engine.spend(buyer.user_id, 300)
    change_plan(engine, sub, "pro", "starter", 3600)
    (row,) = engine.ledger(buyer.user_id, "plan_change")
    assert (row["plan_delta"], row["addon_delta"], row["plan_after"]) == (4000, 0, 4700)


def test_flip_flopping_plans_never_mints_credits(engine, buyer):
    sub = subscribed(engine, buyer, "starter")
    engine.spend(buyer.user_id, 200)
    plans = ["pro", "starter"] * 3
    previous = "starter"
    for step, plan in enumerate(plans, start=1):
        change_plan(engine, sub, plan, previous, 100 * step)
        previous = plan
        allowance = te.PLANS[plan][1]
        assert engine.credits(buyer.user_id) == (allowance - 200, 0)


def test_spending_between_flip_flops_counts_against_every_later_allowance(engine, buyer):
    sub = subscribed(engine, buyer, "starter")
    engine.spend(buyer.user_id, 200)
    change_plan(engine, sub, "pro", "starter", 100)
    engine.spend(buyer.user_id, 1000)
    change_plan(engine, sub, "starter", "pro", 200)
    assert engine.credits(buyer.user_id) == (0, 0)
    change_plan(engine, sub, "pro", "starter", 300)
    assert engine.credits(buyer.user_id) == (3800, 0)


@pytest.mark.parametrize("invoice_first", [True, False], ids=["invoice-first", "update-first"])
def test_period_allowance_follows_the_newest_plan_whatever_the_arrival_order(
    engine, buyer, invoice_first
):
    sub = buyer.subscription("starter")
    invoice = sub.invoice_paid(period=0, plan="starter", created=te.at(0, 5))
    upgrade = sub.plan_changed(period=0, plan="pro", previous_plan="starter", created=te.at(0, 60))
    engine.apply_all(*([invoice, upgrade] if invoice_first else [upgrade, invoice]))
    assert engine.credits(buyer.user_id) == (5000, 0)
    assert engine.balance(buyer.user_id)["plan_key"] == "pro"


@pytest.mark.parametrize("invoice_first", [True, False], ids=["invoice-first", "update-first"])
def test_an_older_subscription_state_does_not_override_a_newer_invoice_plan(
    engine, buyer, invoice_first
):
    # The invoice was billed (created) after the update: its line is newer.
    sub = buyer.subscription("starter")
    stale = sub.updated(period=0, plan="starter", created=te.at(0, 5))
    invoice = sub.invoice_paid(
        period=0, plan="pro", created=te.at(0, 60), invoice_created=te.at(0, 30)
    )
    engine.apply_all(*([invoice, stale] if invoice_first else [stale, invoice]))
    assert engine.credits(buyer.user_id) == (5000, 0)


def test_a_plan_change_for_another_period_does_not_change_the_current_allowance(engine, buyer):
    sub = subscribed(engine, buyer, "starter")
    engine.apply(
        sub.plan_changed(period=1, plan="pro", previous_plan="starter", created=te.at(1, 60))
    )
    assert engine.credits(buyer.user_id) == (1000, 0)
    engine.apply(sub.invoice_paid(period=1, plan="starter", created=te.at(1, 5)))
    assert engine.credits(buyer.user_id) == (5000, 0)


def test_a_plan_change_before_any_paid_period_grants_nothing(engine, buyer):
    sub = buyer.subscription("starter")
    engine.apply(
        sub.plan_changed(period=0, plan="pro", previous_plan="starter", created=te.at(0, 60))
    )
    assert engine.credits(buyer.user_id) == (500, 0)


def test_a_late_plan_change_for_an_earlier_period_changes_nothing(engine, buyer):
    sub = subscribed(engine, buyer, "starter")
    engine.apply(sub.invoice_paid(period=1, created=te.at(1, 5)))
    engine.spend(buyer.user_id, 100)
    change_plan(engine, sub, "pro", "starter", 3600)  # within period 0, no longer current
    assert engine.credits(buyer.user_id) == (900, 0)
    assert engine.balance(buyer.user_id)["plan_key"] == "starter"


@pytest.mark.parametrize("invoice_first", [True, False], ids=["invoice-first", "update-first"])
def test_at_a_tie_the_subscription_state_beats_the_invoice_line(engine, buyer, invoice_first):
    sub = buyer.subscription("starter")
    same_second = te.at(0, 5)
    invoice = sub.invoice_paid(period=0, plan="pro", created=same_second)
    state = sub.updated(period=0, plan="starter", created=same_second)
    engine.apply_all(*([invoice, state] if invoice_first else [state, invoice]))
    assert engine.credits(buyer.user_id) == (1000, 0)


@pytest.mark.parametrize("undo_first", [False, True], ids=["in-order", "undo-first"])
def test_an_upgrade_and_its_undo_in_the_same_second_end_on_the_undo(engine, buyer, undo_first):
    sub = subscribed(engine, buyer, "starter")
    same_second = te.at(0, 3600)
    upgrade = sub.plan_changed(period=0, plan="pro", previous_plan="starter", created=same_second)
    undo = sub.plan_changed(period=0, plan="starter", previous_plan="pro", created=same_second)
    engine.apply_all(*([undo, upgrade] if undo_first else [upgrade, undo]))
    balance = engine.balance(buyer.user_id)
    assert (balance["plan_credits"], balance["plan_key"]) == (1000, "starter")
