"""Edge cases of the policy and the events' rules found while testing the engine.

Each test says what the contract asks in a corner the main files do not
reach: disputes of legacy subscription invoices, integral numbers, periods
past a subscription's end, refunds before their pack, parking races, and
plan changes made while a renewal is unpaid.
"""

from __future__ import annotations

import psycopg
import pytest

from tests.support import typed_events as te


def test_a_legacy_dispute_finds_its_invoice_through_the_charge_the_invoice_names(engine, user):
    # A dispute names neither customer nor invoice; the legacy invoice named
    # the charge that paid it.
    buyer = te.Buyer.new(user, layout="legacy")
    sub = buyer.subscription("starter")
    paid = sub.invoice_paid(period=0)
    engine.apply(sub.created(created=te.at(0, 1)))
    engine.apply(paid)
    dispute = te.dispute_event(
        dispute_id=te.new_id("dp"),
        charge_id=paid["invoice"]["charge_id"],
        payment_intent_id=None,
        amount=900,
        layout="legacy",
    )
    assert engine.apply(dispute)["status"] == "applied"
    assert engine.credits(user) == (0, 0)
    (row,) = engine.ledger(user, "dispute_clawback")
    assert (row["plan_delta"], row["addon_delta"]) == (-1000, 0)


def test_integer_fields_accept_an_integral_number_as_the_schema_does(engine, user):
    event = te.Buyer.new(user).subscription("starter").invoice_paid()
    event["created"] = float(event["created"])  # 1780000005.0: an integer for JSON Schema
    te.validate_typed_event(event)
    assert engine.apply(event)["status"] == "applied"


@pytest.mark.parametrize("deleted_first", [True, False], ids=["deleted-first", "invoice-first"])
def test_a_period_starting_at_the_end_is_never_granted_whatever_the_order(
    engine, make_user, deleted_first
):
    # docs/events.md, rule 2 (same set, any order, same state) with engine.md "periods that
    # start at or after the subscription's end are never granted".
    buyer = te.Buyer.new(make_user())
    sub = buyer.subscription("starter")
    engine.apply(sub.invoice_paid(period=0))
    deleted = sub.deleted(period=0, ended_at=te.at(1))
    late = sub.invoice_paid(period=1, plan="pro", created=te.at(1, 5))
    engine.apply_all(*([deleted, late] if deleted_first else [late, deleted]))
    assert engine.credits(buyer.user_id) == (1000, 0)


def test_a_pack_refund_arriving_before_the_pack_waits_for_it_and_lists_nothing(engine, db, buyer):
    # A basil charge does not say what it paid for: a refund that arrives
    # before its pack is parked on its payment intent, and applied when the
    # pack names that payment intent. Nothing is listed for the operator.
    engine.apply(buyer.subscription("starter").created(created=te.at(0, 1)))  # links customer
    purchase = buyer.pack_purchase("pack_2000")
    refund = purchase.refunded(amount_refunded=300, created=te.at(0, 60))
    assert engine.apply(refund)["status"] == "parked"
    engine.apply(purchase.completed(created=te.at(0, 1)))
    assert engine.credits(buyer.user_id) == (500, 1600)
    assert engine.stored_event(refund["id"])["outcome"] == "applied"
    reviews = db.execute(
        "select * from tally.operator_reviews where object_id = %s", (purchase.charge_id,)
    ).fetchall()
    assert reviews == []


def test_a_dispute_parked_while_its_pack_is_being_bought_is_applied(
    database_url, engine, make_user
):
    # A dispute names no customer and no user: it parks on its payment intent.
    # The pack purchase un-parks that payment intent's events, but nothing
    # serialises the two (the customer lock is not taken for a dispute), so
    # a dispute parking concurrently with the purchase can stay parked.
    from tests.engine.test_concurrency import apply_job, run_in_parallel

    purchases = [te.Buyer.new(make_user()).pack_purchase("pack_500") for _ in range(20)]
    jobs = []
    for purchase in purchases:
        jobs.append(apply_job(purchase.completed()))
        jobs.append(apply_job(purchase.dispute(dispute_id=te.new_id("dp"))))
    results = run_in_parallel(database_url, jobs)
    assert [r for r in results if isinstance(r, psycopg.Error)] == []
    assert [engine.credits(p.user_id) for p in purchases] == [(500, 0)] * len(purchases)


def test_an_upgrade_paid_while_the_renewal_is_unpaid_counts_once_the_renewal_is_paid(engine, buyer):
    # The renewal invoice is finalised with the starter line at the period
    # start; its payment fails; the customer upgrades to pro and pays the
    # proration; the renewal's retry succeeds three days later. The period
    # is the starter plan its invoice billed, plus what the upgrade paid for
    # (the invoice line's age is the invoice's, not the event's).
    sub = buyer.subscription("starter")
    engine.apply(sub.created(created=te.at(0, 1)))
    engine.apply(sub.invoice_paid(period=0))
    engine.apply(sub.invoice_failed(period=1, created=te.at(1, 5)))
    engine.apply_all(*sub.upgrade(period=1, plan="pro", at_time=te.at(1, 600)))
    assert engine.credits(buyer.user_id) == (1000, 0)  # period 1 is not paid yet
    engine.apply(sub.invoice_paid(period=1, plan="starter", created=te.at(1, 3 * te.DAY)))
    balance = engine.balance(buyer.user_id)
    upgrade = 4000 * (te.PERIOD - 600) // te.PERIOD
    assert (balance["plan_credits"], balance["plan_key"]) == (1000 + upgrade, "pro")


@pytest.mark.parametrize("deleted_last", [True, False], ids=["deleted-last", "deleted-first"])
def test_a_withdrawn_period_gives_back_the_earlier_periods_plan_whatever_the_order(
    engine, make_user, deleted_last
):
    # The subscription ended a minute before the second period started, so
    # only the first (pro) period counts, whether the deletion arrives
    # before or after the second period's invoice.
    buyer = te.Buyer.new(make_user())
    sub = buyer.subscription("pro")
    first = sub.invoice_paid(period=0, plan="pro")
    second = sub.invoice_paid(period=1, plan="starter", created=te.at(1, 5))
    deleted = sub.deleted(period=0, ended_at=te.at(1) - 60, created=te.at(1) - 60)
    order = [first, second, deleted] if deleted_last else [deleted, first, second]
    engine.apply_all(*order)
    assert engine.credits(buyer.user_id) == (5000, 0)


def test_a_withdrawn_period_keeps_counting_what_was_spent_in_the_earlier_one(engine, make_user):
    buyer = te.Buyer.new(make_user())
    sub = buyer.subscription("pro")
    engine.apply(sub.invoice_paid(period=0, plan="pro"))
    engine.spend(buyer.user_id, 1200)
    engine.apply(sub.invoice_paid(period=1, plan="starter", created=te.at(1, 5)))
    engine.spend(buyer.user_id, 100)
    engine.apply(sub.deleted(period=0, ended_at=te.at(1) - 60, created=te.at(1) - 60))
    assert engine.credits(buyer.user_id) == (5000 - 1200 - 100, 0)


def test_a_rejected_event_keeps_the_user_it_names(engine, db, buyer):
    event = buyer.subscription("starter").invoice_paid(plan="starter")
    event["invoice"]["lines"][0]["price_id"] = "price_nowhere_fake"
    assert engine.apply(event)["status"] == "rejected"
    row = db.execute(
        "select user_id from tally.stripe_events where event_id = %s", (event["id"],)
    ).fetchone()
    assert str(row["user_id"]) == str(buyer.user_id)
