"""Refunds and disputes of subscription invoices take back what they paid for.

While the invoice's period is current, plan credits drop by the refunded
share of what the invoice granted, round(granted * refunded / paid),
cumulatively, never below zero (the ledger records the shortfall). A dispute
does the same for the disputed amount while it is open or lost; a won
dispute restores exactly what it took, including credits taken later to
cover its shortfall. For a period that is no longer current: recorded on the
ledger and listed for the operator, no change (docs/policy.md). The payment
behind a refund or dispute is found in every layout: the legacy invoice and
charge name each other; from basil on, invoice_payment.paid joins them, and
until it arrives the refund waits (parked).
"""

from __future__ import annotations

import pytest

from tests.support import typed_events as te

STARTER, PRO = te.PLANS["starter"][1], te.PLANS["pro"][1]
PAID = te.PLAN_AMOUNTS["starter"]  # what the starter invoice charged, in cents


@pytest.fixture(params=["basil", "legacy"])
def buyer(request, user) -> te.Buyer:
    return te.Buyer.new(user, layout=request.param)


def paid_period(engine, sub: te.Subscription, period: int = 0) -> dict:
    """Pay a period, and say which payment paid it (the basil layout's own event)."""
    invoice = sub.invoice_paid(period=period)
    engine.apply(invoice)
    if sub.layout == "basil":
        engine.apply(sub.invoice_payment(invoice))
    return invoice


def refund(engine, sub: te.Subscription, invoice: dict, cents: int) -> dict:
    return engine.apply(sub.refund(invoice, amount_refunded=cents, created=te.at(0, 600)))


# --- refunds -------------------------------------------------------------------------------


def test_a_full_refund_of_the_current_periods_invoice_takes_its_credits_back(engine, buyer):
    sub = buyer.subscription("starter")
    invoice = paid_period(engine, sub)
    assert refund(engine, sub, invoice, PAID)["status"] == "applied"
    assert engine.credits(buyer.user_id) == (0, 0)
    (row,) = engine.ledger(buyer.user_id, "refund_clawback")
    assert (row["plan_delta"], row["addon_delta"], row["shortfall"]) == (-STARTER, 0, 0)


def test_a_partial_refund_takes_back_its_rounded_share(engine, buyer):
    sub = buyer.subscription("starter")
    invoice = paid_period(engine, sub)
    refund(engine, sub, invoice, 300)
    assert engine.credits(buyer.user_id) == (STARTER - round(STARTER * 300 / PAID), 0)


def test_refund_events_are_cumulative_and_never_counted_twice(engine, buyer):
    sub = buyer.subscription("starter")
    invoice = paid_period(engine, sub)
    first = sub.refund(invoice, amount_refunded=300, created=te.at(0, 600))
    second = sub.refund(invoice, amount_refunded=450, created=te.at(0, 700))
    engine.apply_all(first, second, first, te.with_event_id(second))
    assert engine.credits(buyer.user_id) == (STARTER - round(STARTER * 450 / PAID), 0)


def test_a_refund_after_spending_goes_to_zero_and_records_the_shortfall(engine, buyer):
    sub = buyer.subscription("starter")
    invoice = paid_period(engine, sub)
    engine.apply(buyer.pack_purchase("pack_500").completed())
    engine.spend(buyer.user_id, 800)
    refund(engine, sub, invoice, PAID // 2)
    target = round(STARTER * (PAID // 2) / PAID)
    assert engine.credits(buyer.user_id) == (0, 500)  # add-on credits untouched
    (row,) = engine.ledger(buyer.user_id, "refund_clawback")
    assert (row["plan_delta"], row["shortfall"]) == (-200, target - 200)


def test_a_refund_of_an_older_period_changes_nothing_and_is_listed(engine, db, buyer):
    sub = buyer.subscription("starter")
    invoice = paid_period(engine, sub, period=0)
    paid_period(engine, sub, period=1)
    engine.spend(buyer.user_id, 100)
    result = refund(engine, sub, invoice, PAID)
    assert "no longer current" in result["reason"]
    assert engine.credits(buyer.user_id) == (STARTER - 100, 0)
    (row,) = engine.ledger(buyer.user_id, "subscription_refund")
    assert (row["plan_delta"], row["addon_delta"]) == (0, 0)
    (review,) = db.execute(
        "select * from tally.operator_reviews where user_id = %s", (buyer.user_id,)
    ).fetchall()
    assert review["kind"] == "subscription_refund"
    assert review["details"]["invoice_id"] == invoice["invoice"]["id"]


@pytest.mark.parametrize("refund_first", [True, False], ids=["refund-first", "renewal-first"])
def test_a_refund_and_the_next_renewal_end_the_same_in_either_order(engine, buyer, refund_first):
    sub = buyer.subscription("starter")
    invoice = paid_period(engine, sub, period=0)
    renewal = sub.invoice_paid(period=1)
    refunded = sub.refund(invoice, amount_refunded=PAID, created=te.at(0, 600))
    engine.apply_all(*([refunded, renewal] if refund_first else [renewal, refunded]))
    assert engine.credits(buyer.user_id) == (STARTER, 0)


def test_a_refund_of_an_upgrade_invoice_takes_back_what_the_upgrade_added(engine, buyer):
    sub = buyer.subscription("starter")
    paid_period(engine, sub)
    changed, upgrade = sub.upgrade(period=0, plan="pro", at_time=te.at(0, te.PERIOD // 2))
    engine.apply_all(changed, upgrade)
    if buyer.layout == "basil":
        engine.apply(sub.invoice_payment(upgrade))
    assert engine.credits(buyer.user_id) == (STARTER + 2000, 0)
    engine.apply(sub.refund(upgrade, amount_refunded=upgrade["invoice"]["amount_paid"]))
    assert engine.credits(buyer.user_id) == (STARTER, 0)


def test_a_basil_refund_waits_for_invoice_payment_paid_then_applies(engine, user):
    buyer = te.Buyer.new(user, layout="basil")
    sub = buyer.subscription("starter")
    invoice = sub.invoice_paid(period=0)
    engine.apply(invoice)
    refunded = sub.refund(invoice, amount_refunded=PAID)
    result = engine.apply(refunded)
    payment = sub.payment_of(invoice)
    assert result["status"] == "parked"
    stored = engine.stored_event(refunded["id"])
    assert stored["waiting_on"] == f"payment_intent:{payment.payment_intent_id}"
    assert "payment_intent" not in result["reason"] or "customer" not in result["reason"]
    assert engine.credits(buyer.user_id) == (STARTER, 0)
    engine.apply(sub.invoice_payment(invoice))
    assert engine.stored_event(refunded["id"])["outcome"] == "applied"
    assert engine.credits(buyer.user_id) == (0, 0)


def test_a_legacy_refund_arriving_before_its_invoice_waits_for_it(engine, user):
    buyer = te.Buyer.new(user, layout="legacy")
    sub = buyer.subscription("starter")
    engine.apply(sub.checkout())  # the customer's user is known
    invoice = sub.invoice_paid(period=0)
    refunded = sub.refund(invoice, amount_refunded=PAID)
    assert engine.apply(refunded)["status"] == "parked"
    assert (
        engine.stored_event(refunded["id"])["waiting_on"] == f"invoice:{invoice['invoice']['id']}"
    )
    engine.apply(invoice)
    assert engine.stored_event(refunded["id"])["outcome"] == "applied"
    assert engine.credits(buyer.user_id) == (0, 0)


# --- disputes ------------------------------------------------------------------------------


def open_dispute(engine, sub, invoice, dispute_id: str, **overrides) -> dict:
    return engine.apply(sub.dispute(invoice, dispute_id=dispute_id, created=te.at(0, 800),
                                    **overrides))  # fmt: skip


def close_dispute(engine, sub, invoice, dispute_id: str, status: str) -> dict:
    return engine.apply(sub.dispute(invoice, dispute_id=dispute_id, status=status, closed=True,
                                    created=te.at(0, 900)))  # fmt: skip


def test_a_dispute_takes_the_disputed_share_back_while_it_is_open(engine, buyer):
    sub = buyer.subscription("starter")
    invoice = paid_period(engine, sub)
    open_dispute(engine, sub, invoice, te.new_id("dp"))
    assert engine.credits(buyer.user_id) == (0, 0)
    (row,) = engine.ledger(buyer.user_id, "dispute_clawback")
    assert row["plan_delta"] == -STARTER


def test_a_dispute_for_part_of_the_amount_takes_that_share(engine, buyer):
    sub = buyer.subscription("starter")
    invoice = paid_period(engine, sub)
    open_dispute(engine, sub, invoice, te.new_id("dp"), amount=PAID // 3)
    assert engine.credits(buyer.user_id) == (STARTER - round(STARTER * (PAID // 3) / PAID), 0)


def test_a_won_dispute_restores_exactly_what_it_took(engine, buyer):
    sub = buyer.subscription("starter")
    invoice = paid_period(engine, sub)
    engine.spend(buyer.user_id, 300)
    dispute_id = te.new_id("dp")
    open_dispute(engine, sub, invoice, dispute_id)
    assert engine.credits(buyer.user_id) == (0, 0)
    close_dispute(engine, sub, invoice, dispute_id, "won")
    assert engine.credits(buyer.user_id) == (STARTER - 300, 0)
    (row,) = engine.ledger(buyer.user_id, "dispute_reinstated")
    assert row["plan_delta"] == STARTER - 300


def test_a_won_dispute_restores_credits_taken_later_to_cover_its_shortfall(engine, buyer, key):
    sub = buyer.subscription("starter")
    invoice = paid_period(engine, sub)
    engine.spend(buyer.user_id, 600, key=key)
    dispute_id = te.new_id("dp")
    open_dispute(engine, sub, invoice, dispute_id)
    engine.reverse(buyer.user_id, key)  # the 600 come back, and pay the shortfall
    assert engine.credits(buyer.user_id) == (0, 0)
    close_dispute(engine, sub, invoice, dispute_id, "won")
    assert engine.credits(buyer.user_id) == (STARTER, 0)  # as if there had been none


def test_a_lost_dispute_keeps_what_it_took(engine, buyer):
    sub = buyer.subscription("starter")
    invoice = paid_period(engine, sub)
    dispute_id = te.new_id("dp")
    open_dispute(engine, sub, invoice, dispute_id)
    close_dispute(engine, sub, invoice, dispute_id, "lost")
    assert engine.credits(buyer.user_id) == (0, 0)
    assert engine.ledger(buyer.user_id, "dispute_reinstated") == []


def test_a_dispute_after_a_partial_refund_takes_only_what_the_refund_left(engine, buyer):
    sub = buyer.subscription("starter")
    invoice = paid_period(engine, sub)
    refund(engine, sub, invoice, PAID // 2)
    open_dispute(engine, sub, invoice, te.new_id("dp"))
    assert engine.credits(buyer.user_id) == (0, 0)
    taken = [row["plan_delta"] for row in engine.ledger(buyer.user_id)
             if row["kind"] in ("refund_clawback", "dispute_clawback")]  # fmt: skip
    assert sum(taken) == -STARTER


@pytest.mark.parametrize("order", ["created-first", "closed-first"])
def test_a_won_dispute_ends_the_same_whatever_the_order(engine, buyer, order):
    sub = buyer.subscription("starter")
    invoice = paid_period(engine, sub)
    dispute_id = te.new_id("dp")
    opened = sub.dispute(invoice, dispute_id=dispute_id, created=te.at(0, 800))
    won = sub.dispute(invoice, dispute_id=dispute_id, status="won", closed=True,
                      created=te.at(0, 900))  # fmt: skip
    engine.apply_all(*([opened, won] if order == "created-first" else [won, opened]))
    assert engine.credits(buyer.user_id) == (STARTER, 0)


def test_a_dispute_of_an_older_period_is_listed_for_the_operator(engine, db, buyer):
    sub = buyer.subscription("starter")
    invoice = paid_period(engine, sub, period=0)
    paid_period(engine, sub, period=1)
    dispute_id = te.new_id("dp")
    assert "no longer current" in open_dispute(engine, sub, invoice, dispute_id)["reason"]
    assert engine.credits(buyer.user_id) == (STARTER, 0)
    kinds = [
        r["kind"]
        for r in db.execute(
            "select kind from tally.operator_reviews where user_id = %s", (buyer.user_id,)
        )
    ]
    assert kinds == ["subscription_dispute"]  # fmt: skip


# --- refunds and disputes around a downgrade -----------------------------------------------
#
# Starter's period is paid; mid-period the user upgrades to pro and pays the upgrade
# (+2000); that payment is refunded or disputed; the user switches back to starter at
# once. The downgrade's min(allowance, 1000) already removed what the upgrade added:
# the money given back takes back only what its invoice still adds, so the paid
# starter period stays whole, whichever comes first and in whatever order it arrives.

UPGRADED_AT = te.at(0, te.PERIOD // 2)
DOWNGRADED_AT = UPGRADED_AT + te.DAY


def paid_upgrade(engine, sub: te.Subscription) -> dict:
    """Upgrade to pro halfway through period 0, its invoice paid (+2000)."""
    changed, upgrade = sub.upgrade(period=0, plan="pro", at_time=UPGRADED_AT)
    engine.apply_all(changed, upgrade)
    if sub.layout == "basil":
        engine.apply(sub.invoice_payment(upgrade))
    assert engine.credits(sub.user_id) == (STARTER + 2000, 0)
    return upgrade


def downgrade(sub: te.Subscription) -> list[dict]:
    """Back to starter at once, billed at once (the credited pro time adds nothing)."""
    return sub.upgrade(period=0, plan="starter", from_plan="pro", at_time=DOWNGRADED_AT)


ORDERS = {
    # (Stripe time of the money given back, whether it is delivered before the downgrade)
    "given-back-first": (DOWNGRADED_AT - 600, True),
    "downgrade-first": (DOWNGRADED_AT + 600, False),
    "given-back-first-delivered-last": (DOWNGRADED_AT - 600, False),
    "downgrade-first-delivered-last": (DOWNGRADED_AT + 600, True),
}


@pytest.mark.parametrize("order", ORDERS)
def test_a_refunded_upgrade_then_a_downgrade_keeps_the_paid_starter_period(engine, buyer, order):
    sub = buyer.subscription("starter")
    paid_period(engine, sub)
    upgrade = paid_upgrade(engine, sub)
    created, refund_delivered_first = ORDERS[order]
    refunded = sub.refund(upgrade, amount_refunded=upgrade["invoice"]["amount_paid"],
                          created=created)  # fmt: skip
    events = [refunded, *downgrade(sub)] if refund_delivered_first else [*downgrade(sub), refunded]
    engine.apply_all(*events)
    assert engine.credits(buyer.user_id) == (STARTER, 0)  # not max(0, 1000 - 2000)


@pytest.mark.parametrize("order", ORDERS)
def test_a_partly_refunded_upgrade_then_a_downgrade_keeps_the_paid_starter_period(
    engine, buyer, order
):
    sub = buyer.subscription("starter")
    paid_period(engine, sub)
    upgrade = paid_upgrade(engine, sub)
    created, refund_delivered_first = ORDERS[order]
    refunded = sub.refund(upgrade, amount_refunded=upgrade["invoice"]["amount_paid"] // 2,
                          created=created)  # fmt: skip
    events = [refunded, *downgrade(sub)] if refund_delivered_first else [*downgrade(sub), refunded]
    engine.apply_all(*events)
    assert engine.credits(buyer.user_id) == (STARTER, 0)


def test_a_downgrade_after_a_refunded_upgrade_posts_no_second_clawback(engine, buyer):
    sub = buyer.subscription("starter")
    paid_period(engine, sub)
    upgrade = paid_upgrade(engine, sub)
    engine.apply(sub.refund(upgrade, amount_refunded=upgrade["invoice"]["amount_paid"],
                            created=DOWNGRADED_AT - 600))  # fmt: skip
    engine.spend(buyer.user_id, 300)
    engine.apply_all(*downgrade(sub))
    assert engine.credits(buyer.user_id) == (STARTER - 300, 0)
    (clawback,) = engine.ledger(buyer.user_id, "refund_clawback")
    assert clawback["plan_delta"] == -2000  # the refund took what the upgrade added, once
    # The downgrade removes nothing more: the refund already took the part above starter.
    assert [row["plan_delta"] for row in engine.ledger(buyer.user_id, "plan_change")] == [2000]


def test_a_refund_of_an_upgrade_already_switched_back_from_takes_nothing(engine, buyer):
    sub = buyer.subscription("starter")
    paid_period(engine, sub)
    upgrade = paid_upgrade(engine, sub)
    engine.apply_all(*downgrade(sub))
    assert engine.credits(buyer.user_id) == (STARTER, 0)
    result = engine.apply(sub.refund(upgrade, amount_refunded=upgrade["invoice"]["amount_paid"],
                                     created=DOWNGRADED_AT + 600))  # fmt: skip
    assert result["status"] == "applied"
    assert engine.credits(buyer.user_id) == (STARTER, 0)
    assert engine.ledger(buyer.user_id, "refund_clawback") == []


def test_refunds_of_every_payment_of_the_period_still_take_it_all_after_a_downgrade(engine, buyer):
    # The downgrade keeps what the money not given back pays for: here, nothing.
    sub = buyer.subscription("starter")
    invoice = paid_period(engine, sub)
    upgrade = paid_upgrade(engine, sub)
    engine.apply_all(*downgrade(sub))
    refund(engine, sub, invoice, PAID)
    engine.apply(sub.refund(upgrade, amount_refunded=upgrade["invoice"]["amount_paid"],
                            created=DOWNGRADED_AT + 700))  # fmt: skip
    assert engine.credits(buyer.user_id) == (0, 0)  # every payment of the period given back


DISPUTE_STORIES = {
    "opened-then-downgrade": ["opened", "downgrade"],
    "downgrade-then-opened": ["downgrade", "opened"],
    "opened-downgrade-won": ["opened", "downgrade", "won"],
    "opened-downgrade-lost": ["opened", "downgrade", "lost"],
    "downgrade-opened-won": ["downgrade", "opened", "won"],
    "opened-won-downgrade": ["opened", "won", "downgrade"],
    "won-delivered-first": ["won", "downgrade", "opened"],
}


@pytest.mark.parametrize("story", DISPUTE_STORIES)
def test_a_disputed_upgrade_then_a_downgrade_keeps_the_paid_starter_period(engine, buyer, story):
    sub = buyer.subscription("starter")
    paid_period(engine, sub)
    upgrade = paid_upgrade(engine, sub)
    dispute_id = te.new_id("dp")
    steps = {
        "opened": [sub.dispute(upgrade, dispute_id=dispute_id, created=DOWNGRADED_AT - 600)],
        "won": [sub.dispute(upgrade, dispute_id=dispute_id, status="won", closed=True,
                            created=DOWNGRADED_AT + 900)],
        "lost": [sub.dispute(upgrade, dispute_id=dispute_id, status="lost", closed=True,
                             created=DOWNGRADED_AT + 900)],
        "downgrade": downgrade(sub),
    }  # fmt: skip
    for step in DISPUTE_STORIES[story]:
        engine.apply_all(*steps[step])
    assert engine.credits(buyer.user_id) == (STARTER, 0)


def test_a_dispute_won_after_the_downgrade_gives_back_nothing_the_downgrade_removed(engine, buyer):
    sub = buyer.subscription("starter")
    paid_period(engine, sub)
    upgrade = paid_upgrade(engine, sub)
    dispute_id = te.new_id("dp")
    engine.apply(sub.dispute(upgrade, dispute_id=dispute_id, created=DOWNGRADED_AT - 600))
    assert engine.credits(buyer.user_id) == (STARTER, 0)
    engine.apply_all(*downgrade(sub))
    engine.apply(sub.dispute(upgrade, dispute_id=dispute_id, status="won", closed=True,
                             created=DOWNGRADED_AT + 900))  # fmt: skip
    assert engine.credits(buyer.user_id) == (STARTER, 0)  # not 3000: starter is the plan now
    (clawback,) = engine.ledger(buyer.user_id, "dispute_clawback")
    assert clawback["plan_delta"] == -2000
    assert engine.ledger(buyer.user_id, "dispute_reinstated") == []
