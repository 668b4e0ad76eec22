"""Edge cases of SPEC 2/3 and the schema found while testing the engine.

Each test says what the contract asks in a corner the main files do not
reach: disputes of legacy subscription invoices, integral numbers, periods
past a subscription's end, refunds before their pack, parking races, and
plan changes made while a renewal is unpaid.
"""

from __future__ import annotations

import psycopg
import pytest

from tests.support import typed_events as te


def test_dispute_on_a_legacy_subscription_invoice_is_only_recorded(engine, user):
    buyer = te.Buyer.new(user, layout="legacy")
    sub = buyer.subscription("starter")
    paid = sub.invoice_paid(period=0)
    engine.apply(sub.created(created=te.at(0, 1)))
    engine.apply(paid)
    dispute = te.dispute_event(
        dispute_id=te.new_id("dp"),
        charge_id=paid["invoice"]["charge_id"],
        payment_intent_id=paid["invoice"]["payment_intent_id"],
        amount=900,
        layout="legacy",
    )
    assert engine.apply(dispute)["status"] == "applied"
    assert engine.credits(user) == (1000, 0)
    (row,) = engine.ledger(user, "subscription_dispute")
    assert (row["plan_delta"], row["addon_delta"]) == (0, 0)


def test_integer_fields_accept_an_integral_number_as_the_schema_does(engine, user):
    event = te.Buyer.new(user).subscription("starter").invoice_paid()
    event["created"] = float(event["created"])  # 1780000005.0: an integer for JSON Schema
    te.validate_typed_event(event)
    assert engine.apply(event)["status"] == "applied"


@pytest.mark.parametrize("deleted_first", [True, False], ids=["deleted-first", "invoice-first"])
def test_a_period_starting_at_the_end_is_never_granted_whatever_the_order(
    engine, make_user, deleted_first
):
    # SPEC 3.2 (same set, any order, same state) with engine.md "periods that
    # start at or after the subscription's end are never granted".
    buyer = te.Buyer.new(make_user())
    sub = buyer.subscription("starter")
    engine.apply(sub.invoice_paid(period=0))
    deleted = sub.deleted(period=0, ended_at=te.at(1))
    late = sub.invoice_paid(period=1, plan="pro", created=te.at(1, 5))
    engine.apply_all(*([deleted, late] if deleted_first else [late, deleted]))
    assert engine.credits(buyer.user_id) == (1000, 0)


def test_a_pack_refund_arriving_before_the_pack_leaves_no_open_operator_review(engine, db, buyer):
    # A basil charge does not say what it paid for: a refund that arrives
    # before its pack looks like a subscription refund and is listed; when the
    # pack claims the charge, the listing is marked resolved (the zero entry
    # on the ledger stays: the ledger is append-only).
    engine.apply(buyer.subscription("starter").created(created=te.at(0, 1)))  # links customer
    purchase = buyer.pack_purchase("pack_2000")
    engine.apply(purchase.refunded(amount_refunded=300, created=te.at(0, 60)))
    engine.apply(purchase.completed(created=te.at(0, 1)))
    assert engine.credits(buyer.user_id) == (500, 1600)
    (review,) = db.execute(
        "select * from tally.operator_reviews where object_id = %s", (purchase.charge_id,)
    ).fetchall()
    assert review["resolved_at"] is not None
    assert review["details"]["claimed_by_checkout_session"] == purchase.session_id


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


def test_an_upgrade_while_the_renewal_is_unpaid_keeps_the_new_plan_when_it_is_paid(engine, buyer):
    # The renewal invoice is finalised with the starter line at the period
    # start; its payment fails; the customer upgrades to pro; the retry
    # succeeds three days later. invoice.paid then carries the old starter
    # line, and docs/engine.md's "newest Stripe event created wins" makes it
    # newer than the upgrade: the period is granted as starter although the
    # customer is on pro (SPEC 2: after a plan change the allowance is the
    # new plan's). The invoice line's age is the invoice's, not the event's.
    sub = buyer.subscription("starter")
    engine.apply(sub.created(created=te.at(0, 1)))
    engine.apply(sub.invoice_paid(period=0))
    engine.apply(sub.invoice_failed(period=1, created=te.at(1, 5)))
    engine.apply(
        sub.plan_changed(period=1, plan="pro", previous_plan="starter", created=te.at(1, 600))
    )
    engine.apply(sub.invoice_paid(period=1, plan="starter", created=te.at(1, 3 * te.DAY)))
    balance = engine.balance(buyer.user_id)
    assert (balance["plan_credits"], balance["plan_key"]) == (5000, "pro")


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
    event["invoice"]["price_id"] = "price_nowhere_fake"
    assert engine.apply(event)["status"] == "rejected"
    row = db.execute(
        "select user_id from tally.stripe_events where event_id = %s", (event["id"],)
    ).fetchone()
    assert str(row["user_id"]) == str(buyer.user_id)
