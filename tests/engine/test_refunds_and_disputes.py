"""Refunds and disputes of pack payments (docs/policy.md)."""

from __future__ import annotations

import pytest

from tests.support import typed_events as te


def bought(engine, buyer, pack: str = "pack_2000") -> te.PackPurchase:
    purchase = buyer.pack_purchase(pack)
    engine.apply(purchase.completed())
    return purchase


def test_partial_refund_claws_back_the_refunded_share_of_the_pack(engine, buyer):
    purchase = bought(engine, buyer, "pack_2000")  # 2000 credits for 1500 cents
    engine.apply(purchase.refunded(amount_refunded=300))  # round(2000 * 300 / 1500) = 400
    assert engine.credits(buyer.user_id) == (500, 1600)
    (row,) = engine.ledger(buyer.user_id, "refund_clawback")
    assert (row["plan_delta"], row["addon_delta"], row["shortfall"]) == (0, -400, 0)


def test_full_refund_claws_back_the_whole_pack(engine, buyer):
    purchase = bought(engine, buyer, "pack_2000")
    engine.apply(purchase.refunded(amount_refunded=purchase.amount))
    assert engine.credits(buyer.user_id) == (500, 0)


def test_refunds_are_cumulative(engine, buyer):
    purchase = bought(engine, buyer, "pack_2000")
    engine.apply(purchase.refunded(amount_refunded=300, created=te.at(0, 10)))
    engine.apply(purchase.refunded(amount_refunded=750, created=te.at(0, 20)))
    assert engine.credits(buyer.user_id) == (500, 1000)


def test_a_refund_event_repeated_under_another_id_does_not_claw_back_twice(engine, buyer):
    purchase = bought(engine, buyer, "pack_2000")
    refund = purchase.refunded(amount_refunded=750)
    engine.apply(refund)
    engine.apply(te.with_event_id(refund))
    assert engine.credits(buyer.user_id) == (500, 1000)


def test_an_older_refund_event_after_a_newer_one_claws_back_nothing_more(engine, buyer):
    purchase = bought(engine, buyer, "pack_2000")
    engine.apply(purchase.refunded(amount_refunded=750, created=te.at(0, 20)))
    engine.apply(purchase.refunded(amount_refunded=300, created=te.at(0, 10)))
    assert engine.credits(buyer.user_id) == (500, 1000)


def test_refund_share_rounds_half_away_from_zero(engine, buyer):
    purchase = buyer.pack_purchase("pack_500")
    engine.apply(purchase.completed(amount_total=1000))
    engine.apply(purchase.refunded(amount_refunded=1, amount=1000))  # 500 * 1 / 1000 = 0.5
    assert engine.credits(buyer.user_id) == (500, 499)


def test_refund_of_spent_credits_goes_to_zero_and_records_the_shortfall(engine, buyer):
    purchase = bought(engine, buyer, "pack_500")
    engine.spend(buyer.user_id, 800)  # plan 500, then 300 of the pack
    engine.apply(purchase.refunded(amount_refunded=purchase.amount))
    assert engine.credits(buyer.user_id) == (0, 0)
    (row,) = engine.ledger(buyer.user_id, "refund_clawback")
    assert (row["addon_delta"], row["shortfall"]) == (-200, 300)


def test_refund_never_touches_plan_credits(engine, buyer):
    purchase = bought(engine, buyer, "pack_500")
    engine.spend(buyer.user_id, 1000)
    engine.apply(buyer.subscription("starter").invoice_paid(period=0))
    engine.apply(purchase.refunded(amount_refunded=purchase.amount))
    assert engine.credits(buyer.user_id) == (1000, 0)
    (row,) = engine.ledger(buyer.user_id, "refund_clawback")
    assert (row["plan_delta"], row["addon_delta"], row["shortfall"]) == (0, 0, 500)


def test_refund_arriving_before_its_purchase_ends_the_same(engine, buyer):
    purchase = buyer.pack_purchase("pack_2000")
    engine.apply(purchase.refunded(amount_refunded=300, created=te.at(0, 60)))
    engine.apply(purchase.completed(created=te.at(0, 1)))
    assert engine.credits(buyer.user_id) == (500, 1600)


def test_dispute_opened_claws_back_the_pack(engine, buyer):
    purchase = bought(engine, buyer, "pack_2000")
    engine.apply(purchase.dispute(dispute_id=te.new_id("dp")))
    assert engine.credits(buyer.user_id) == (500, 0)
    (row,) = engine.ledger(buyer.user_id, "dispute_clawback")
    assert (row["addon_delta"], row["shortfall"]) == (-2000, 0)


@pytest.mark.parametrize("status", te.OPEN_DISPUTE_STATUSES)
def test_every_open_dispute_status_claws_back(engine, buyer, status):
    purchase = bought(engine, buyer, "pack_500")
    engine.apply(purchase.dispute(dispute_id=te.new_id("dp"), status=status))
    assert engine.credits(buyer.user_id) == (500, 0)


def test_dispute_won_restores_exactly_what_was_clawed_back(engine, buyer):
    purchase = bought(engine, buyer, "pack_2000")
    engine.spend(buyer.user_id, 1000)  # plan 500, then 500 of the pack
    dispute_id = te.new_id("dp")
    engine.apply(purchase.dispute(dispute_id=dispute_id, created=te.at(0, 10)))
    assert engine.credits(buyer.user_id) == (0, 0)
    engine.apply(
        purchase.dispute(dispute_id=dispute_id, status="won", closed=True, created=te.at(0, 20))
    )
    assert engine.credits(buyer.user_id) == (0, 1500)
    (reinstated,) = engine.ledger(buyer.user_id, "dispute_reinstated")
    assert reinstated["addon_delta"] == 1500


def test_dispute_clawback_records_the_shortfall_of_spent_credits(engine, buyer):
    purchase = bought(engine, buyer, "pack_2000")
    engine.spend(buyer.user_id, 1000)
    engine.apply(purchase.dispute(dispute_id=te.new_id("dp")))
    (row,) = engine.ledger(buyer.user_id, "dispute_clawback")
    assert (row["addon_delta"], row["shortfall"]) == (-1500, 500)


def test_dispute_lost_keeps_the_clawback(engine, buyer):
    purchase = bought(engine, buyer, "pack_2000")
    dispute_id = te.new_id("dp")
    engine.apply(purchase.dispute(dispute_id=dispute_id, created=te.at(0, 10)))
    engine.apply(
        purchase.dispute(dispute_id=dispute_id, status="lost", closed=True, created=te.at(0, 20))
    )
    assert engine.credits(buyer.user_id) == (500, 0)
    assert engine.ledger(buyer.user_id, "dispute_reinstated") == []


def test_dispute_after_a_partial_refund_claws_back_only_the_rest(engine, buyer):
    purchase = bought(engine, buyer, "pack_2000")
    engine.apply(purchase.refunded(amount_refunded=300, created=te.at(0, 5)))  # 400 credits
    dispute_id = te.new_id("dp")
    engine.apply(purchase.dispute(dispute_id=dispute_id, created=te.at(0, 10)))
    assert engine.credits(buyer.user_id) == (500, 0)
    engine.apply(
        purchase.dispute(dispute_id=dispute_id, status="won", closed=True, created=te.at(0, 20))
    )
    assert engine.credits(buyer.user_id) == (500, 1600)


def test_a_dispute_opened_event_after_it_was_won_changes_nothing(engine, buyer):
    purchase = bought(engine, buyer, "pack_500")
    dispute_id = te.new_id("dp")
    engine.apply(purchase.dispute(dispute_id=dispute_id, created=te.at(0, 10)))
    engine.apply(
        purchase.dispute(dispute_id=dispute_id, status="won", closed=True, created=te.at(0, 20))
    )
    engine.apply(purchase.dispute(dispute_id=dispute_id, created=te.at(0, 10)))
    assert engine.credits(buyer.user_id) == (500, 500)


def test_dispute_won_arriving_before_opened_ends_with_the_pack_kept(engine, buyer):
    purchase = bought(engine, buyer, "pack_500")
    dispute_id = te.new_id("dp")
    engine.apply(
        purchase.dispute(dispute_id=dispute_id, status="won", closed=True, created=te.at(0, 20))
    )
    engine.apply(purchase.dispute(dispute_id=dispute_id, created=te.at(0, 10)))
    assert engine.credits(buyer.user_id) == (500, 500)


def test_the_same_dispute_opened_twice_claws_back_once(engine, buyer):
    purchase = bought(engine, buyer, "pack_500")
    engine.spend(buyer.user_id, 500)
    engine.apply(buyer.pack_purchase("pack_2000").completed())
    dispute_id = te.new_id("dp")
    engine.apply(purchase.dispute(dispute_id=dispute_id, created=te.at(0, 10)))
    engine.apply(
        purchase.dispute(dispute_id=dispute_id, status="under_review", created=te.at(0, 11))
    )
    assert engine.credits(buyer.user_id) == (0, 2000)


def test_a_warning_closed_inquiry_restores_what_it_clawed_back(engine, buyer):
    purchase = bought(engine, buyer, "pack_500")
    dispute_id = te.new_id("dp")
    engine.apply(
        purchase.dispute(
            dispute_id=dispute_id, status="warning_needs_response", created=te.at(0, 10)
        )
    )
    assert engine.credits(buyer.user_id) == (500, 0)
    engine.apply(
        purchase.dispute(
            dispute_id=dispute_id, status="warning_closed", closed=True, created=te.at(0, 20)
        )
    )
    assert engine.credits(buyer.user_id) == (500, 500)


def test_dispute_arriving_before_its_pack_parks_and_applies_when_the_pack_is_bought(engine, buyer):
    purchase = buyer.pack_purchase("pack_2000")
    dispute = purchase.dispute(dispute_id=te.new_id("dp"), created=te.at(0, 60))
    assert engine.apply(dispute)["status"] == "parked"
    engine.apply(purchase.completed(created=te.at(0, 1)))
    assert engine.credits(buyer.user_id) == (500, 0)
    assert engine.stored_event(dispute["id"])["outcome"] == "applied"


def test_refund_claws_back_from_the_buyer_even_if_the_customer_is_linked_to_another_user(
    engine, buyer, make_user
):
    other = make_user()
    engine.link(other, buyer.customer_id)  # the customer belongs to another user
    purchase = buyer.pack_purchase("pack_2000")  # but this session names the buyer
    engine.apply(purchase.completed())
    engine.apply(purchase.refunded(amount_refunded=purchase.amount))
    assert engine.credits(buyer.user_id) == (500, 0)
    assert engine.credits(other) == (500, 0)
    assert engine.ledger(other, "subscription_refund") == []


def test_a_won_pack_dispute_restores_credits_a_reversed_spend_paid_for_it(engine, buyer, key):
    # The dispute could take only 200 of the pack's 500 credits (300 were
    # spent); the reversed spend's 300 add-on credits then paid the
    # shortfall. Winning gives back all 500: as if there had been no dispute.
    purchase = bought(engine, buyer, "pack_500")
    engine.spend(buyer.user_id, 800, key=key)  # 500 plan + 300 add-on
    dispute_id = te.new_id("dp")
    engine.apply(purchase.dispute(dispute_id=dispute_id, created=te.at(0, 10)))
    assert engine.credits(buyer.user_id) == (0, 0)
    engine.reverse(buyer.user_id, key)
    assert engine.credits(buyer.user_id) == (500, 0)  # the add-on part paid the shortfall
    won = purchase.dispute(dispute_id=dispute_id, status="won", closed=True, created=te.at(0, 20))
    engine.apply(won)
    assert engine.credits(buyer.user_id) == (500, 500)
    (row,) = engine.ledger(buyer.user_id, "dispute_reinstated")
    assert row["addon_delta"] == 500


def test_a_won_pack_dispute_forgives_what_it_could_not_take(engine, buyer, key, make_user):
    purchase = bought(engine, buyer, "pack_500")
    engine.spend(buyer.user_id, 900)  # everything but 100 add-on credits
    dispute_id = te.new_id("dp")
    engine.apply(purchase.dispute(dispute_id=dispute_id, created=te.at(0, 10)))
    engine.apply(purchase.dispute(dispute_id=dispute_id, status="won", closed=True,
                                  created=te.at(0, 20)))  # fmt: skip
    assert engine.credits(buyer.user_id) == (0, 100)
    engine.adjust(buyer.user_id, 50, "goodwill")
    engine.spend(buyer.user_id, 10, key=key)
    engine.reverse(buyer.user_id, key)
    assert engine.credits(buyer.user_id) == (0, 150)  # nothing is owed any more
