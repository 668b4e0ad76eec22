"""Packs paid, and verified money only (docs/policy.md; docs/events.md, rule 4)."""

from __future__ import annotations

import pytest

from tests.support import typed_events as te


@pytest.mark.parametrize("pack", ["pack_500", "pack_2000"])
def test_paid_pack_checkout_adds_the_packs_credits_to_addon_credits(engine, buyer, pack):
    engine.apply(buyer.pack_purchase(pack).completed())
    assert engine.credits(buyer.user_id) == (500, te.PACKS[pack][1])


def test_pack_purchase_is_an_addon_purchase_on_the_ledger(engine, buyer):
    purchase = buyer.pack_purchase("pack_2000")
    event = purchase.completed()
    engine.apply(event)
    (row,) = engine.ledger(buyer.user_id, "addon_purchase")
    assert (row["plan_delta"], row["addon_delta"], row["addon_after"]) == (0, 2000, 2000)
    assert row["stripe_event_id"] == event["id"]


def test_packs_stack(engine, buyer):
    for pack in ("pack_500", "pack_2000", "pack_500"):
        engine.apply(buyer.pack_purchase(pack).completed())
    assert engine.credits(buyer.user_id) == (500, 3000)


def test_one_checkout_session_announced_twice_grants_once(engine, buyer):
    purchase = buyer.pack_purchase("pack_500")
    engine.apply(purchase.completed())
    engine.apply(purchase.completed())
    assert engine.credits(buyer.user_id) == (500, 500)


def test_completed_and_async_succeeded_for_one_session_grant_once(engine, buyer):
    purchase = buyer.pack_purchase("pack_500")
    engine.apply(purchase.completed())
    engine.apply(purchase.async_succeeded())
    assert engine.credits(buyer.user_id) == (500, 500)


def test_unpaid_checkout_grants_nothing(engine, buyer):
    engine.apply(buyer.pack_purchase("pack_500").completed(payment_status="unpaid"))
    assert engine.credits(buyer.user_id) == (500, 0)


def test_async_payment_succeeded_after_an_unpaid_checkout_grants_the_pack(engine, buyer):
    purchase = buyer.pack_purchase("pack_2000")
    engine.apply(purchase.completed(payment_status="unpaid"))
    engine.apply(purchase.async_succeeded(created=te.at(0, te.DAY)))
    assert engine.credits(buyer.user_id) == (500, 2000)


def test_async_payment_failed_grants_nothing(engine, buyer):
    purchase = buyer.pack_purchase("pack_500")
    engine.apply(purchase.completed(payment_status="unpaid"))
    result = engine.apply(purchase.async_failed(created=te.at(0, te.DAY)))
    assert result["status"] == "applied"
    assert engine.credits(buyer.user_id) == (500, 0)


def test_pack_credits_come_from_the_catalog_not_from_the_amount_paid(engine, buyer):
    engine.apply(buyer.pack_purchase("pack_500").completed(amount_total=999_999))
    assert engine.credits(buyer.user_id) == (500, 500)


def test_paid_pack_session_without_a_price_id_is_rejected_with_that_reason(engine, buyer):
    event = buyer.pack_purchase("pack_500").completed(metadata_price_id=None)
    result = engine.apply(event)
    assert result["status"] == "rejected"
    assert "price_id" in engine.stored_event(event["id"])["reason"]
    assert engine.credits(buyer.user_id) == (500, 0)


def test_paid_pack_session_with_an_unknown_price_is_rejected(engine, buyer):
    event = buyer.pack_purchase("pack_500").completed(metadata_price_id="price_not_in_catalog")
    assert engine.apply(event)["status"] == "rejected"
    assert "unknown price" in engine.stored_event(event["id"])["reason"]
    assert engine.credits(buyer.user_id) == (500, 0)


def test_a_plan_price_named_by_a_pack_session_is_not_a_pack(engine, buyer):
    event = buyer.pack_purchase("pack_500").completed(metadata_price_id=te.plan_price("pro"))
    assert engine.apply(event)["status"] == "rejected"
    assert engine.credits(buyer.user_id) == (500, 0)


def test_pack_purchase_stores_the_customer_link(engine, buyer):
    engine.apply(buyer.pack_purchase("pack_500").completed())
    sub = buyer.subscription("starter", with_user_metadata=False)
    assert engine.apply(sub.invoice_paid(period=0))["status"] == "applied"
    assert engine.credits(buyer.user_id) == (1000, 500)


@pytest.mark.parametrize("layout", ["basil", "legacy"])
def test_pack_purchase_works_in_both_layouts(engine, user, layout):
    engine.apply(te.Buyer.new(user, layout=layout).pack_purchase("pack_2000").completed())
    assert engine.credits(user) == (500, 2000)


def test_pack_ledger_row_names_its_checkout_session(engine, buyer):
    purchase = buyer.pack_purchase("pack_500")
    engine.apply(purchase.completed())
    (row,) = engine.ledger(buyer.user_id, "addon_purchase")
    assert row["checkout_session_id"] == purchase.session_id
