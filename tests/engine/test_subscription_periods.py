"""Periods paid, older periods, unpaid and $0 invoices (docs/policy.md)."""

from __future__ import annotations

import pytest

from tests.support import typed_events as te


def test_first_period_paid_sets_plan_credits_to_the_plans_allowance(engine, buyer):
    sub = buyer.subscription("starter")
    engine.apply(sub.invoice_paid(period=0))
    assert engine.credits(buyer.user_id) == (1000, 0)


def test_first_period_paid_replaces_the_signup_grant_instead_of_adding_to_it(engine, buyer):
    engine.apply(buyer.subscription("pro").invoice_paid(period=0))
    assert engine.credits(buyer.user_id) == (5000, 0)
    grants = engine.ledger(buyer.user_id, "subscription_period")
    assert [(row["plan_delta"], row["plan_after"]) for row in grants] == [(4500, 5000)]


@pytest.mark.parametrize("layout", ["basil", "legacy"])
def test_first_purchase_announced_by_checkout_and_invoice_grants_once(engine, user, layout):
    sub = te.Buyer.new(user, layout=layout).subscription("starter")
    engine.apply(sub.checkout())
    engine.apply(sub.created())
    engine.apply(sub.invoice_paid(period=0))
    assert engine.credits(user) == (1000, 0)
    assert len(engine.ledger(user, "subscription_period")) == 1


def test_invoice_before_checkout_grants_once(engine, buyer):
    sub = buyer.subscription("starter")
    engine.apply(sub.invoice_paid(period=0))
    engine.apply(sub.checkout())
    assert engine.credits(buyer.user_id) == (1000, 0)
    assert len(engine.ledger(buyer.user_id, "subscription_period")) == 1


def test_checkout_in_subscription_mode_grants_nothing_by_itself(engine, buyer):
    engine.apply(buyer.subscription("pro").checkout())
    assert engine.credits(buyer.user_id) == (500, 0)


def test_same_invoice_under_two_event_ids_grants_once(engine, buyer):
    sub = buyer.subscription("starter")
    paid = sub.invoice_paid(period=0)
    engine.apply(paid)
    engine.spend(buyer.user_id, 100)
    engine.apply(te.with_event_id(paid))
    assert engine.credits(buyer.user_id) == (900, 0)
    assert len(engine.ledger(buyer.user_id, "subscription_period")) == 1


def test_two_invoices_for_the_same_period_grant_once(engine, buyer):
    sub = buyer.subscription("starter")
    engine.apply(sub.invoice_paid(period=0))
    engine.spend(buyer.user_id, 100)
    engine.apply(sub.invoice_paid(period=0, created=te.at(0, 50)))
    assert engine.credits(buyer.user_id) == (900, 0)


def test_renewal_resets_plan_credits_instead_of_stacking(engine, buyer):
    sub = buyer.subscription("starter")
    engine.apply(sub.invoice_paid(period=0))
    engine.spend(buyer.user_id, 300)
    engine.apply(sub.invoice_paid(period=1))
    assert engine.credits(buyer.user_id) == (1000, 0)
    renewal = engine.ledger(buyer.user_id, "subscription_period")[-1]
    assert (renewal["plan_delta"], renewal["plan_after"]) == (300, 1000)


def test_renewal_with_nothing_spent_keeps_exactly_the_allowance(engine, buyer):
    sub = buyer.subscription("starter")
    engine.apply(sub.invoice_paid(period=0))
    engine.apply(sub.invoice_paid(period=1))
    assert engine.credits(buyer.user_id) == (1000, 0)
    assert sum(row["plan_delta"] for row in engine.ledger(buyer.user_id)) == 1000


def test_renewal_leaves_addon_credits_alone(engine, buyer):
    sub = buyer.subscription("starter")
    engine.apply(sub.invoice_paid(period=0))
    engine.apply(buyer.pack_purchase("pack_2000").completed())
    engine.spend(buyer.user_id, 1500)
    engine.apply(sub.invoice_paid(period=1))
    assert engine.credits(buyer.user_id) == (1000, 1500)


def test_an_older_periods_invoice_after_a_newer_one_changes_nothing(engine, buyer):
    sub = buyer.subscription("starter")
    engine.apply(sub.invoice_paid(period=2, plan="pro"))
    engine.spend(buyer.user_id, 100)
    engine.apply(sub.invoice_paid(period=1, plan="starter"))
    assert engine.credits(buyer.user_id) == (4900, 0)
    assert engine.balance(buyer.user_id)["plan_key"] == "pro"


def test_a_period_is_paid_once_whatever_the_number_of_renewals_in_between(engine, buyer):
    sub = buyer.subscription("starter")
    for period in (0, 1, 2):
        engine.apply(sub.invoice_paid(period=period))
    engine.spend(buyer.user_id, 10)
    engine.apply(sub.invoice_paid(period=1))
    assert engine.credits(buyer.user_id) == (990, 0)
    assert engine.balance(buyer.user_id)["current_period_end"] == te.at(3)


def test_failed_invoice_grants_nothing(engine, buyer):
    sub = buyer.subscription("starter")
    engine.apply(sub.created(status="incomplete", created=te.at(0, 1)))
    engine.apply(sub.invoice_failed(period=0))
    assert engine.credits(buyer.user_id) == (500, 0)


def test_invoice_paid_after_payment_failed_grants_the_period(engine, buyer):
    sub = buyer.subscription("starter")
    engine.apply(sub.invoice_paid(period=0))
    engine.apply(sub.invoice_failed(period=1, created=te.at(1, 5)))
    assert engine.credits(buyer.user_id) == (1000, 0)
    engine.spend(buyer.user_id, 200)
    engine.apply(sub.invoice_paid(period=1, created=te.at(1, 3 * te.DAY)))
    assert engine.credits(buyer.user_id) == (1000, 0)
    assert engine.balance(buyer.user_id)["current_period_end"] == te.at(2)


def test_incomplete_subscription_grants_nothing_until_its_first_invoice_is_paid(engine, buyer):
    sub = buyer.subscription("pro")
    engine.apply(sub.created(status="incomplete", created=te.at(0, 1)))
    engine.apply(sub.invoice_failed(period=0, created=te.at(0, 2)))
    assert engine.credits(buyer.user_id) == (500, 0)
    assert engine.balance(buyer.user_id)["subscription_status"] == "incomplete"
    engine.apply(sub.invoice_paid(period=0, created=te.at(0, 600)))
    assert engine.credits(buyer.user_id) == (5000, 0)
    assert engine.balance(buyer.user_id)["subscription_status"] == "active"


def test_invoice_with_a_status_other_than_paid_grants_nothing(engine, buyer):
    sub = buyer.subscription("starter")
    engine.apply(sub.invoice_paid(period=0, status="open", amount_paid=0))
    assert engine.credits(buyer.user_id) == (500, 0)


def test_zero_dollar_paid_invoice_grants_the_period(engine, buyer):
    sub = buyer.subscription("pro")
    engine.apply(sub.invoice_paid(period=0, amount_paid=0))
    assert engine.credits(buyer.user_id) == (5000, 0)


def test_proration_only_invoice_grants_nothing(engine, buyer):
    sub = buyer.subscription("starter")
    engine.apply(sub.invoice_paid(period=0))
    engine.spend(buyer.user_id, 100)
    proration = sub.invoice_paid(
        period=0,
        billing_reason="subscription_update",
        price_id=None,
        period_start=None,
        period_end=None,
        created=te.at(0, 900),
    )
    engine.apply(proration)
    assert engine.credits(buyer.user_id) == (900, 0)


def test_balance_shows_plan_period_and_status_of_the_paid_subscription(engine, buyer):
    sub = buyer.subscription("pro")
    engine.apply(sub.created(created=te.at(0, 1)))
    engine.apply(sub.invoice_paid(period=0))
    balance = engine.balance(buyer.user_id)
    assert (balance["plan_key"], balance["subscription_status"]) == ("pro", "active")
    assert balance["current_period_end"] == te.at(1)


def test_a_period_of_a_plan_retired_from_sale_is_still_granted(engine, db, buyer):
    db.execute("update public.plans set active = false where key = 'starter'")
    try:
        engine.apply(buyer.subscription("starter").invoice_paid(period=0))
    finally:
        db.execute("update public.plans set active = true where key = 'starter'")
    assert engine.credits(buyer.user_id) == (1000, 0)


def test_grant_ledger_row_names_the_stripe_event(engine, buyer):
    paid = buyer.subscription("starter").invoice_paid(period=0)
    engine.apply(paid)
    (grant,) = engine.ledger(buyer.user_id, "subscription_period")
    assert grant["stripe_event_id"] == paid["id"]


def test_with_two_subscriptions_the_newest_paid_period_sets_plan_credits(engine, buyer):
    first = buyer.subscription("pro")
    second = buyer.subscription("starter")
    engine.apply(first.invoice_paid(period=0))
    engine.apply(second.invoice_paid(period=0, period_start=te.at(0, te.DAY)))
    assert engine.credits(buyer.user_id) == (1000, 0)
    engine.apply(first.invoice_paid(period=1, created=te.at(1, 5)))
    assert engine.credits(buyer.user_id) == (5000, 0)


def test_an_invoice_for_an_unknown_subscription_creates_its_mirror(engine, buyer):
    engine.apply(buyer.subscription("pro").invoice_paid(period=0))
    balance = engine.balance(buyer.user_id)
    assert (balance["subscription_status"], balance["plan_key"]) == ("active", "pro")
