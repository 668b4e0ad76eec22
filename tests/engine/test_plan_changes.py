"""Plan changes follow the money (docs/policy.md, "Changing plans").

An upgrade adds credits only from a *paid* invoice for the change (Stripe's
proration invoice, billing_reason subscription_update): what its proration
lines pay for, each line's plan credits times the share of the period it
covers, the old plan's credit line negative, rounded down, never below
zero. A downgrade that takes effect at once lowers the allowance to the new
plan's at once; one scheduled for the period's end changes nothing until the
next period, which is granted on the new plan. Plan credits are always
max(0, allowance - spent this period). Every test runs in both layouts.
"""

from __future__ import annotations

import itertools

import pytest

from tests.support import typed_events as te

STARTER, PRO = te.PLANS["starter"][1], te.PLANS["pro"][1]
HALF = te.PERIOD // 2
LAST_DAY = te.PERIOD - te.DAY


@pytest.fixture(params=["basil", "legacy"])
def buyer(request, user) -> te.Buyer:
    return te.Buyer.new(user, layout=request.param)


def subscribed(engine, buyer: te.Buyer, plan: str) -> te.Subscription:
    sub = buyer.subscription(plan)
    engine.apply(sub.created(created=te.at(0)))
    engine.apply(sub.invoice_paid(period=0, created=te.at(0, 2)))
    return sub


def upgrade(engine, sub: te.Subscription, *, after: int, to: str = "pro", frm: str = "starter"):
    engine.apply_all(*sub.upgrade(period=0, plan=to, from_plan=frm, at_time=te.at(0, after)))


def share(credits: int, after: int) -> int:
    """What a proration line of `credits` a month pays for `after` seconds into the period."""
    return credits * (te.PERIOD - after) // te.PERIOD


# --- upgrades -----------------------------------------------------------------------------


def test_an_upgrade_without_its_paid_invoice_adds_nothing(engine, buyer):
    sub = subscribed(engine, buyer, "starter")
    engine.apply(sub.plan_changed(period=0, plan="pro", previous_plan="starter",
                                  created=te.at(0, HALF)))  # fmt: skip
    assert engine.credits(buyer.user_id) == (STARTER, 0)
    assert engine.balance(buyer.user_id)["plan_key"] == "pro"


def test_an_upgrade_at_the_very_start_of_a_period_gives_the_whole_new_allowance(engine, buyer):
    sub = subscribed(engine, buyer, "starter")
    upgrade(engine, sub, after=0)
    assert engine.credits(buyer.user_id) == (PRO, 0)


def test_an_upgrade_with_half_the_period_left_gives_half_the_difference(engine, buyer):
    sub = subscribed(engine, buyer, "starter")
    upgrade(engine, sub, after=HALF)
    assert engine.credits(buyer.user_id) == (STARTER + (PRO - STARTER) // 2, 0)


def test_an_upgrade_on_the_last_day_gives_a_thirtieth_of_the_difference(engine, buyer):
    sub = subscribed(engine, buyer, "starter")
    upgrade(engine, sub, after=LAST_DAY)
    assert engine.credits(buyer.user_id) == (STARTER + (PRO - STARTER) // 30, 0)


def test_an_upgrade_counts_what_was_spent_this_period(engine, buyer):
    sub = subscribed(engine, buyer, "starter")
    engine.spend(buyer.user_id, 200)
    upgrade(engine, sub, after=HALF)
    assert engine.credits(buyer.user_id) == (STARTER + 2000 - 200, 0)


def test_an_upgrade_is_one_plan_change_entry_naming_its_invoice(engine, buyer):
    sub = subscribed(engine, buyer, "starter")
    events = sub.upgrade(period=0, plan="pro", at_time=te.at(0, HALF))
    engine.apply_all(*events)
    (row,) = engine.ledger(buyer.user_id, "plan_change")
    invoice_id = events[1]["invoice"]["id"]
    assert (row["plan_delta"], row["addon_delta"]) == (2000, 0)
    assert (row["stripe_object_id"], row["stripe_event_id"]) == (invoice_id, events[1]["id"])
    assert invoice_id in row["description"]


def test_an_unpaid_upgrade_invoice_adds_nothing_until_it_is_paid(engine, buyer):
    sub = subscribed(engine, buyer, "starter")
    changed, failed = sub.upgrade(period=0, plan="pro", at_time=te.at(0, HALF), paid=False)
    engine.apply_all(changed, failed)
    assert engine.credits(buyer.user_id) == (STARTER, 0)
    paid = sub.proration_invoice(period=0, from_plan="starter", to_plan="pro",
                                 at_time=te.at(0, HALF), invoice_id=failed["invoice"]["id"],
                                 created=te.at(0, HALF + te.DAY))  # fmt: skip
    engine.apply(paid)
    assert engine.credits(buyer.user_id) == (STARTER + 2000, 0)


def test_the_same_upgrade_announced_twice_or_under_a_new_event_id_adds_once(engine, buyer):
    sub = subscribed(engine, buyer, "starter")
    changed, paid = sub.upgrade(period=0, plan="pro", at_time=te.at(0, HALF))
    engine.apply_all(changed, paid, paid, te.with_event_id(paid), te.with_event_id(changed))
    assert engine.credits(buyer.user_id) == (STARTER + 2000, 0)


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_an_upgrade_ends_the_same_in_every_arrival_order(engine, buyer, order):
    sub = buyer.subscription("starter")
    events = [sub.invoice_paid(period=0), *sub.upgrade(period=0, plan="pro",
                                                       at_time=te.at(0, HALF))]  # fmt: skip
    engine.apply_all(*[events[i] for i in order])
    assert engine.credits(buyer.user_id) == (STARTER + 2000, 0)


def test_an_upgrade_invoice_of_an_older_period_changes_nothing(engine, buyer):
    sub = subscribed(engine, buyer, "starter")
    engine.apply(sub.invoice_paid(period=1))
    engine.apply_all(*sub.upgrade(period=0, plan="pro", at_time=te.at(0, HALF)))
    assert engine.credits(buyer.user_id) == (STARTER, 0)


def test_a_change_billed_with_the_next_renewal_adds_nothing_to_the_old_period(engine, buyer):
    sub = subscribed(engine, buyer, "starter")
    engine.apply(sub.plan_changed(period=0, plan="pro", previous_plan="starter",
                                  created=te.at(0, HALF)))  # fmt: skip
    # The renewal bills the prorations of period 0 and period 1 on pro.
    prorations = sub.proration_invoice(period=0, from_plan="starter", to_plan="pro",
                                       at_time=te.at(0, HALF))["raw"]  # fmt: skip
    lines = [
        *prorations["data"]["object"]["lines"]["data"],
        te.invoice_line(price_id=te.plan_price("pro"), period_start=te.at(1),
                        period_end=te.at(2), subscription_id=sub.subscription_id,
                        layout=buyer.layout),
    ]  # fmt: skip
    assert engine.credits(buyer.user_id) == (STARTER, 0)
    renewal = sub.invoice_paid(period=1, plan="pro", lines=lines)
    assert "add nothing to the past period" in engine.apply(renewal)["reason"]
    assert engine.credits(buyer.user_id) == (PRO, 0)


def test_an_upgrade_then_a_switch_back_leaves_only_what_was_paid_for(engine, buyer):
    # The attack: upgrade, spend the new allowance, switch back before the
    # renewal (whose prorations net to about zero).
    sub = subscribed(engine, buyer, "starter")
    upgrade(engine, sub, after=HALF)
    engine.spend(buyer.user_id, 2500)
    engine.apply_all(*sub.upgrade(period=0, plan="starter", from_plan="pro",
                                  at_time=te.at(0, HALF + te.DAY)))  # fmt: skip
    assert engine.credits(buyer.user_id) == (0, 0)  # allowance min(3000, 1000), 2500 spent
    engine.apply(sub.invoice_paid(period=1, plan="starter"))
    assert engine.credits(buyer.user_id) == (STARTER, 0)
    granted = sum(row["plan_delta"] for row in engine.ledger(buyer.user_id)
                  if row["plan_delta"] > 0 and row["kind"] != "signup")  # fmt: skip
    assert granted == 500 + 2000 + STARTER  # period 0 over the signup, the upgrade, period 1


def test_flip_flopping_plans_within_a_period_never_adds_more_than_was_paid(engine, buyer):
    sub = subscribed(engine, buyer, "starter")
    paid_for = STARTER
    plan, after = "starter", 0
    for step in range(1, 6):
        after = step * te.DAY
        new = "pro" if plan == "starter" else "starter"
        upgrade(engine, sub, after=after, to=new, frm=plan)
        if new == "pro":
            paid_for += share(PRO - STARTER, after)
        plan = new
        assert engine.credits(buyer.user_id)[0] <= paid_for
    # Ended on pro, paid for from day 5: starter's allowance plus that share.
    assert engine.credits(buyer.user_id) == (STARTER + share(PRO - STARTER, 5 * te.DAY), 0)


@pytest.mark.parametrize("order", ["in-order", "reversed", "invoices-first"])
def test_a_same_second_upgrade_and_downgrade_add_nothing_beyond_the_old_plan(engine, buyer, order):
    sub = subscribed(engine, buyer, "starter")
    at_time = te.at(0, HALF)
    up_change, up_paid = sub.upgrade(period=0, plan="pro", at_time=at_time)
    down_change, down_paid = sub.upgrade(period=0, plan="starter", from_plan="pro",
                                         at_time=at_time)  # fmt: skip
    events = {
        "in-order": [up_change, up_paid, down_change, down_paid],
        "reversed": [down_paid, down_change, up_paid, up_change],
        "invoices-first": [down_paid, up_paid, down_change, up_change],
    }[order]
    engine.apply_all(*events)
    assert engine.credits(buyer.user_id) == (STARTER, 0)


def test_an_invoice_whose_proration_lines_sum_to_nothing_adds_nothing(engine, buyer):
    sub = subscribed(engine, buyer, "pro")
    # A downgrade billed at once: the unused pro time is credited, starter
    # charged; the lines sum below zero (money goes back to the customer).
    engine.apply_all(*sub.upgrade(period=0, plan="starter", from_plan="pro",
                                  at_time=te.at(0, HALF)))  # fmt: skip
    assert engine.credits(buyer.user_id) == (STARTER, 0)
    assert engine.ledger(buyer.user_id, "plan_change")[0]["plan_delta"] == STARTER - PRO


def test_a_lines_share_is_of_its_subscription_period_not_of_the_invoices_dates(engine, buyer):
    sub = subscribed(engine, buyer, "starter")
    paid = sub.proration_invoice(period=0, from_plan="starter", to_plan="pro",
                                 at_time=te.at(0, HALF))  # fmt: skip
    raw = paid["raw"]["data"]["object"]
    raw["period_start"], raw["period_end"] = te.at(0, HALF), te.at(0, HALF)  # Stripe's own
    engine.apply(te.typed(paid["raw"]))
    assert engine.credits(buyer.user_id) == (STARTER + 2000, 0)


def test_the_next_period_after_an_upgrade_is_granted_on_the_new_plan(engine, buyer):
    sub = subscribed(engine, buyer, "starter")
    upgrade(engine, sub, after=HALF)
    engine.spend(buyer.user_id, 100)
    engine.apply(sub.invoice_paid(period=1, plan="pro"))
    assert engine.credits(buyer.user_id) == (PRO, 0)


# --- downgrades ----------------------------------------------------------------------------


def downgrade_now(engine, sub: te.Subscription, after: int = HALF) -> None:
    engine.apply(sub.plan_changed(period=0, plan="starter", previous_plan="pro",
                                  created=te.at(0, after)))  # fmt: skip


def test_an_immediate_downgrade_lowers_the_allowance_at_once(engine, buyer):
    sub = subscribed(engine, buyer, "pro")
    downgrade_now(engine, sub)
    assert engine.credits(buyer.user_id) == (STARTER, 0)


def test_an_immediate_downgrade_counts_what_was_spent_this_period(engine, buyer):
    sub = subscribed(engine, buyer, "pro")
    engine.spend(buyer.user_id, 300)
    downgrade_now(engine, sub)
    assert engine.credits(buyer.user_id) == (STARTER - 300, 0)


def test_a_downgrade_below_what_was_spent_leaves_zero_plan_credits(engine, buyer):
    sub = subscribed(engine, buyer, "pro")
    engine.apply(buyer.pack_purchase("pack_500").completed())
    engine.spend(buyer.user_id, 4500)
    downgrade_now(engine, sub)
    assert engine.credits(buyer.user_id) == (0, 500)


def test_a_downgrade_is_a_plan_change_entry(engine, buyer):
    sub = subscribed(engine, buyer, "pro")
    downgrade_now(engine, sub)
    (row,) = engine.ledger(buyer.user_id, "plan_change")
    assert (row["plan_delta"], row["addon_delta"], row["plan_after"]) == (STARTER - PRO, 0, STARTER)


def test_a_downgrade_scheduled_for_the_period_end_changes_nothing_until_the_next_period(
    engine, buyer
):
    sub = subscribed(engine, buyer, "pro")
    engine.apply(sub.updated(period=0, plan="pro", created=te.at(0, HALF)))  # schedule made
    assert engine.credits(buyer.user_id) == (PRO, 0)
    renewal_update = sub.updated(period=1, plan="starter", created=te.at(1, 1),
                                 previous={"price_id": te.plan_price("pro"),
                                           "current_period_start": te.at(0)})  # fmt: skip
    engine.apply_all(sub.invoice_paid(period=1, plan="starter"), renewal_update)
    assert engine.credits(buyer.user_id) == (STARTER, 0)
    assert engine.balance(buyer.user_id)["plan_key"] == "starter"


@pytest.mark.parametrize("update_first", [True, False], ids=["update-first", "invoice-first"])
def test_a_downgrade_ends_the_same_in_either_order(engine, buyer, update_first):
    sub = buyer.subscription("pro")
    paid = sub.invoice_paid(period=0)
    change = sub.plan_changed(period=0, plan="starter", previous_plan="pro",
                              created=te.at(0, HALF))  # fmt: skip
    engine.apply_all(*([change, paid] if update_first else [paid, change]))
    assert engine.credits(buyer.user_id) == (STARTER, 0)


def test_a_plan_change_for_another_period_does_not_touch_the_current_allowance(engine, buyer):
    sub = subscribed(engine, buyer, "starter")
    engine.apply(sub.invoice_paid(period=1))
    engine.apply(sub.plan_changed(period=0, plan="pro", previous_plan="starter",
                                  created=te.at(0, HALF)))  # fmt: skip
    engine.apply(sub.plan_changed(period=0, plan="starter", previous_plan="pro",
                                  created=te.at(0, HALF + 60)))  # fmt: skip
    assert engine.credits(buyer.user_id) == (STARTER, 0)


def test_plan_changes_never_touch_addon_credits(engine, buyer):
    sub = subscribed(engine, buyer, "starter")
    engine.apply(buyer.pack_purchase("pack_500").completed())
    upgrade(engine, sub, after=HALF)
    downgrade_now(engine, sub, after=HALF + te.DAY)
    assert engine.credits(buyer.user_id) == (STARTER, 500)


@pytest.mark.parametrize("in_order", [True, False], ids=["in-order", "reversed"])
def test_an_upgrade_paid_later_while_the_change_waits_for_its_payment_counts(
    engine, buyer, in_order
):
    # payment_behavior=pending_if_incomplete: at the change Stripe leaves the
    # subscription on its plan (a pending update) and invoices at once; the
    # payment fails, succeeds a day later, and only then the plan changes.
    sub = buyer.subscription("starter")
    at_change = te.at(0, HALF)
    period = sub.invoice_paid(period=0, created=te.at(0, 2))
    pending = sub.updated(period=0, plan="starter", created=at_change)
    failed = sub.proration_invoice(period=0, from_plan="starter", to_plan="pro",
                                   at_time=at_change, paid=False)  # fmt: skip
    paid = sub.proration_invoice(period=0, from_plan="starter", to_plan="pro",
                                 at_time=at_change, invoice_id=failed["invoice"]["id"],
                                 created=at_change + te.DAY)  # fmt: skip
    changed = sub.plan_changed(period=0, plan="pro", previous_plan="starter",
                               created=at_change + te.DAY)  # fmt: skip
    events = [period, pending, failed, paid, changed]
    engine.apply_all(*(events if in_order else reversed(events)))
    assert engine.credits(buyer.user_id) == (STARTER + 2000, 0)
