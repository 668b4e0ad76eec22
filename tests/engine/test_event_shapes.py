"""Shapes Stripe really sends, read as the contract says (docs/engine.md).

A subscription's plan is the item (or the non-proration invoice line) whose
price is in the catalog, wherever it is listed; other items are ignored; no
catalog price at all is rejected (unknown price) and two catalog plans are
rejected with a reason. An invoice with only other prices, outside the
subscription's periods (a usage threshold, say), grants nothing once
something showed the subscription's plan. A paid period invoice in which no
plan line can be found is rejected, never silently applied. Amounts are 64-bit. Events
the sidecar could not read are kept as rejected with their reason. Parked
events wake up in batches, each its own transaction.
"""

from __future__ import annotations

import psycopg
import pytest

from tests.support import typed_events as te

STARTER = te.PLANS["starter"][1]
METERED = "price_metered_api_calls_fake"  # no catalog entry: a usage-based item


@pytest.fixture(params=["basil", "legacy"])
def buyer(request, user) -> te.Buyer:
    return te.Buyer.new(user, layout=request.param)


def plan_line(sub: te.Subscription, price: str, period: int = 0) -> dict:
    return te.invoice_line(price_id=price, period_start=te.at(period),
                           period_end=te.at(period + 1), subscription_id=sub.subscription_id,
                           layout=sub.layout)  # fmt: skip


def test_a_subscription_whose_plan_is_not_its_first_item_is_read(engine, buyer):
    sub = buyer.subscription("starter")
    event = sub.created(leading_prices=(METERED,))
    assert [item["price_id"] for item in event["subscription"]["items"]] == [
        METERED,
        te.plan_price("starter"),
    ]
    assert engine.apply(event)["status"] == "applied"
    assert engine.balance(buyer.user_id)["plan_key"] == "starter"


def test_an_invoice_whose_plan_line_is_not_its_first_line_pays_the_period(engine, buyer):
    sub = buyer.subscription("starter")
    lines = [plan_line(sub, METERED), plan_line(sub, te.plan_price("starter"))]
    assert engine.apply(sub.invoice_paid(period=0, lines=lines))["status"] == "applied"
    assert engine.credits(buyer.user_id) == (STARTER, 0)


def test_two_catalog_plans_on_one_subscription_are_rejected_with_a_reason(engine, buyer):
    sub = buyer.subscription("starter")
    event = sub.created(leading_prices=(te.plan_price("pro"),))
    result = engine.apply(event)
    assert result["status"] == "rejected"
    assert "two catalog plans" in result["reason"]


def test_two_catalog_plans_on_one_invoice_are_rejected_with_a_reason(engine, buyer):
    sub = buyer.subscription("starter")
    lines = [plan_line(sub, te.plan_price("pro")), plan_line(sub, te.plan_price("starter"))]
    result = engine.apply(sub.invoice_paid(period=0, lines=lines))
    assert (result["status"], "two catalog plans" in result["reason"]) == ("rejected", True)
    assert engine.credits(buyer.user_id) == (500, 0)


def test_a_subscription_with_no_catalog_price_is_rejected_as_unknown_price(engine, buyer):
    result = engine.apply(buyer.subscription("starter").created(price_id=METERED))
    assert result["status"] == "rejected"
    assert result["reason"].startswith(f"unknown price {METERED}")


def test_a_paid_renewal_with_no_plan_line_is_rejected_and_listed_not_applied(engine, buyer):
    sub = buyer.subscription("starter")
    result = engine.apply(sub.invoice_paid(period=0, lines=[]))
    assert result["status"] == "rejected"
    assert "has no plan line" in result["reason"]
    assert engine.stored_event(result["event_id"])["outcome"] == "rejected"


def metered_invoice(sub: te.Subscription, *, billing_reason: str, paid: bool = True,
                    period: int = 0) -> dict:  # fmt: skip
    """An invoice of the subscription whose only line is the metered price."""
    invoice = sub.invoice_paid if paid else sub.invoice_failed
    return invoice(period=period, lines=[plan_line(sub, METERED, period)],
                   billing_reason=billing_reason, created=te.at(period, 900))  # fmt: skip


def subscribed(engine, buyer) -> te.Subscription:
    sub = buyer.subscription("starter")
    engine.apply_all(sub.created(created=te.at(0, 1)), sub.invoice_paid(period=0))
    return sub


@pytest.mark.parametrize("billing_reason", ["subscription_threshold", "manual"])
def test_a_metered_only_invoice_of_a_subscription_on_a_plan_is_applied_granting_nothing(
    engine, buyer, billing_reason
):
    sub = subscribed(engine, buyer)
    result = engine.apply(metered_invoice(sub, billing_reason=billing_reason))
    assert result["status"] == "applied"
    assert result["reason"].startswith(f"no plan line, only prices no plan has ({METERED})")
    assert engine.credits(buyer.user_id) == (STARTER, 0)
    balance = engine.balance(buyer.user_id)
    assert (balance["subscription_status"], balance["plan_key"]) == ("active", "starter")


def test_a_failed_metered_only_invoice_records_the_status_as_any_invoice_does(engine, buyer):
    sub = subscribed(engine, buyer)
    failed = metered_invoice(sub, billing_reason="subscription_threshold", paid=False)
    assert engine.apply(failed)["status"] == "applied"
    assert engine.balance(buyer.user_id)["subscription_status"] == "past_due"
    assert engine.credits(buyer.user_id) == (STARTER, 0)


def test_a_metered_only_invoice_of_a_subscription_nothing_showed_a_plan_of_is_rejected(
    engine, buyer
):
    sub = buyer.subscription("starter")
    result = engine.apply(metered_invoice(sub, billing_reason="subscription_threshold"))
    assert result["status"] == "rejected"
    assert result["reason"].startswith(f"unknown price {METERED}")
    assert engine.balance(buyer.user_id)["subscription_status"] is None


def test_a_paid_renewal_whose_only_line_is_metered_is_rejected_for_its_missing_plan_line(
    engine, buyer
):
    sub = subscribed(engine, buyer)
    renewal = metered_invoice(sub, billing_reason="subscription_cycle", period=1)
    result = engine.apply(renewal)
    assert result["status"] == "rejected"
    assert "has no plan line" in result["reason"]
    assert engine.credits(buyer.user_id) == (STARTER, 0)


def test_an_invoice_whose_lines_fill_several_pages_is_read_whole(engine, buyer):
    sub = buyer.subscription("starter")
    prorations = [
        te.invoice_line(price_id=te.plan_price("starter"), period_start=te.at(0, n),
                        period_end=te.at(1), subscription_id=sub.subscription_id,
                        amount=-1, proration=True, layout=buyer.layout)
        for n in range(12)
    ]  # fmt: skip
    lines = [*prorations, plan_line(sub, te.plan_price("starter"), period=1)]
    # Stripe embeds the first 10; the sidecar fetched all 13 (tests/sidecar covers that).
    event = sub.invoice_paid(period=1, lines=lines, embedded_lines=10)
    assert len(event["raw"]["data"]["object"]["lines"]["data"]) == 10
    assert len(event["invoice"]["lines"]) == 13
    assert engine.apply(event)["status"] == "applied"
    assert engine.credits(buyer.user_id) == (STARTER, 0)


def test_amounts_beyond_32_bits_are_applied(engine, user):
    buyer = te.Buyer.new(user, layout="legacy")
    sub = buyer.subscription("starter")
    invoice = sub.invoice_paid(period=0, amount_paid=25_000_000_000_00)  # Rp 25 billion
    assert engine.apply(invoice)["status"] == "applied"
    refund = sub.refund(invoice, amount_refunded=12_500_000_000_00)
    assert engine.apply(refund)["status"] == "applied"
    assert engine.credits(buyer.user_id) == (STARTER // 2, 0)


def test_an_event_the_sidecar_could_not_read_is_kept_as_rejected_with_its_reason(engine, buyer):
    event = buyer.subscription("starter").invoice_paid(period=0)
    event.pop("invoice")
    event["problem"] = "data.object.amount_paid is out of range (API version 2014-03-28 ...)"
    result = engine.apply(event)
    assert (result["status"], result["reason"]) == ("rejected", event["problem"])
    stored = engine.stored_event(event["id"])
    assert (stored["outcome"], stored["raw"]) == ("rejected", event["raw"])


def test_a_rejected_event_is_reapplied_with_a_new_reading_of_its_raw_payload(engine, buyer):
    good = buyer.subscription("starter").invoice_paid(period=0)
    unread = dict(good, problem="the normaliser could not read it yet")
    unread.pop("invoice")
    engine.apply(unread)
    result = engine.call("select public.reapply_stripe_event(%s) as result",
                         (psycopg.types.json.Jsonb(good),))  # fmt: skip
    assert result["status"] == "applied"
    assert engine.credits(buyer.user_id) == (STARTER, 0)
    assert engine.stored_event(good["id"])["attempts"] == 2


def test_invoice_payment_paid_needs_no_user_and_records_the_join(engine, db):
    invoice_id, payment_intent_id = te.new_id("in"), te.new_id("pi")
    event = te.invoice_payment_paid(invoice_id=invoice_id, payment_intent_id=payment_intent_id)
    assert engine.apply(event)["status"] == "applied"
    (row,) = db.execute(
        "select invoice_id from tally.invoice_payments where payment_key = %s",
        (f"payment_intent:{payment_intent_id}",),
    ).fetchall()
    assert row["invoice_id"] == invoice_id


def test_a_second_paid_subscription_of_a_user_is_listed_for_the_operator(engine, db, buyer):
    first, second = buyer.subscription("starter"), buyer.subscription("pro")
    engine.apply_all(first.invoice_paid(period=0), second.invoice_paid(period=0))
    (review,) = db.execute(
        "select * from tally.operator_reviews where kind = 'second_subscription' and user_id = %s",
        (buyer.user_id,),
    ).fetchall()
    assert first.subscription_id in review["details"]["other_subscriptions"]


# --- parked events wake up in batches -----------------------------------------------------


def test_a_large_backlog_of_parked_events_wakes_in_bounded_batches(engine, db, make_user):
    buyer = te.Buyer.new(make_user())
    packs = [buyer.pack_purchase("pack_500") for _ in range(120)]
    for pack in packs:
        event = pack.completed(client_reference_id=None, metadata_user_id=None)
        assert engine.apply(event)["status"] == "parked"
    engine.link(buyer.user_id, buyer.customer_id)  # wakes them: the first batch at once
    applied_at_once = engine.credits(buyer.user_id)[1] // 500
    assert 0 < applied_at_once < len(packs)
    batches = []
    while count := engine.call("select public.apply_ready_stripe_events(50) as n"):
        batches.append(count)
    assert max(batches) <= 50
    assert applied_at_once + sum(batches) == len(packs)
    assert engine.credits(buyer.user_id) == (500, 500 * len(packs))


def test_apply_ready_with_nothing_ready_does_nothing(engine):
    assert engine.call("select public.apply_ready_stripe_events() as n") == 0
