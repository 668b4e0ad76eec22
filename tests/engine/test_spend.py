"""spend_credits and reverse_spend (docs/interface.md), as docs/engine.md reads them."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from tests.support import typed_events as te
from tests.support.postgrest_errors import postgrest_status


def with_pack(engine, user, pack: str = "pack_500") -> None:
    engine.apply(te.Buyer.new(user).pack_purchase(pack).completed())


def sqlstate_of(call) -> str:
    with pytest.raises(psycopg.Error) as caught:
        call()
    return caught.value.sqlstate


def test_spend_draws_plan_credits_first(engine, user):
    with_pack(engine, user)
    engine.spend(user, 300)
    assert engine.credits(user) == (200, 500)


def test_spend_draws_addon_credits_once_plan_credits_are_gone(engine, user):
    with_pack(engine, user)
    engine.spend(user, 700)
    assert engine.credits(user) == (0, 300)


def test_spend_returns_the_new_balance_parts(engine, user):
    with_pack(engine, user)
    result = engine.spend(user, 700)
    assert (result["plan_credits"], result["addon_credits"]) == (0, 300)


def test_spend_of_exactly_the_whole_balance_succeeds(engine, user):
    with_pack(engine, user)
    engine.spend(user, 1000)
    assert engine.credits(user) == (0, 0)


def test_spend_is_one_ledger_row_with_both_parts_and_its_key(engine, user, key):
    with_pack(engine, user)
    engine.spend(user, 700, key=key, reason="outreach line")
    (row,) = engine.ledger(user, "spend")
    assert (row["plan_delta"], row["addon_delta"]) == (-500, -200)
    assert (row["plan_after"], row["addon_after"], row["idempotency_key"]) == (0, 300, key)


def test_spend_beyond_the_balance_raises_pt402(engine, user):
    with_pack(engine, user)
    assert sqlstate_of(lambda: engine.spend(user, 1001)) == "PT402"
    assert postgrest_status("PT402") == 402


def test_spend_beyond_the_balance_spends_nothing(engine, user):
    with_pack(engine, user)
    with pytest.raises(psycopg.Error):
        engine.spend(user, 1001)
    assert engine.credits(user) == (500, 500)
    assert engine.ledger(user, "spend") == []


def test_spend_refused_for_lack_of_credits_can_be_retried_with_the_same_key(engine, user, key):
    with pytest.raises(psycopg.Error):
        engine.spend(user, 600, key=key)
    with_pack(engine, user)
    engine.spend(user, 600, key=key)
    assert engine.credits(user) == (0, 400)


def test_repeated_key_returns_the_first_result_and_spends_nothing(engine, user, key):
    first = engine.spend(user, 100, key=key)
    second = engine.spend(user, 100, key=key)
    # The engine flags the replay; everything else is the first answer.
    assert {**second, "replayed": False} == {**first, "replayed": False}
    assert engine.credits(user) == (400, 0)


def test_a_key_repeated_with_another_amount_returns_the_first_result_and_spends_nothing(
    engine, user, key
):
    first = engine.spend(user, 100, key=key)
    second = engine.spend(user, 200, key=key)
    assert {**second, "replayed": False} == first
    assert second["replayed"] is True
    assert engine.credits(user) == (400, 0)


def test_the_same_key_used_by_two_users_names_two_different_spends(engine, user, make_user, key):
    other = make_user()
    engine.spend(user, 100, key=key)
    assert engine.spend(other, 30, key=key)["replayed"] is False
    assert engine.credits(user) == (400, 0)
    assert engine.credits(other) == (470, 0)


def test_a_user_cannot_reverse_another_users_spend_by_its_key(engine, user, make_user, key):
    other = make_user()
    engine.spend(user, 100, key=key)
    assert sqlstate_of(lambda: engine.reverse(other, key)) == "PT404"
    assert engine.credits(user) == (400, 0)


@pytest.mark.parametrize("amount", [0, -1, -500])
def test_spend_of_a_non_positive_amount_raises_22023(engine, user, amount):
    assert sqlstate_of(lambda: engine.spend(user, amount)) == "22023"
    assert engine.credits(user) == (500, 0)


def test_spend_without_an_amount_is_a_client_error(engine, user):
    state = sqlstate_of(lambda: engine.spend(user, None))  # type: ignore[arg-type]
    assert postgrest_status(state) == 400, state


@pytest.mark.parametrize("key", [None, ""])
def test_spend_without_an_idempotency_key_is_a_client_error(engine, user, key):
    state = sqlstate_of(
        lambda: engine.call(
            "select public.spend_credits(%s::uuid, 10, %s) as result", (str(user), key)
        )
    )
    assert postgrest_status(state) == 400, state
    assert engine.credits(user) == (500, 0)


def test_spend_for_an_unknown_user_raises_pt404(engine):
    assert sqlstate_of(lambda: engine.spend(uuid.uuid4(), 10)) == "PT404"
    assert postgrest_status("PT404") == 404


def test_spend_reason_defaults_to_null(engine, user, key):
    result = engine.call(
        "select public.spend_credits(%s::uuid, 10, %s) as result", (str(user), key)
    )
    assert result["plan_credits"] == 490


def test_reverse_spend_gives_back_both_parts(engine, user, key):
    with_pack(engine, user)
    engine.spend(user, 700, key=key)
    engine.reverse(user, key, "job failed")
    assert engine.credits(user) == (500, 500)
    (row,) = engine.ledger(user, "spend_reversal")
    assert (row["plan_delta"], row["addon_delta"]) == (500, 200)


def test_reverse_spend_returns_the_new_balance_parts(engine, user, key):
    engine.spend(user, 100, key=key)
    result = engine.reverse(user, key)
    assert (result["plan_credits"], result["addon_credits"]) == (500, 0)


def test_reverse_spend_twice_gives_back_once(engine, user, key):
    engine.spend(user, 100, key=key)
    engine.reverse(user, key)
    engine.reverse(user, key)
    assert engine.credits(user) == (500, 0)
    assert len(engine.ledger(user, "spend_reversal")) == 1


def test_reverse_spend_of_an_unknown_key_raises_pt404(engine):
    with pytest.raises(psycopg.Error) as caught:
        engine.reverse(uuid.uuid4(), "never-spent")
    assert caught.value.sqlstate == "PT404"


def test_reverse_spend_after_a_period_reset_gives_back_only_the_addon_part(engine, user, key):
    buyer = te.Buyer.new(user)
    with_pack(engine, user)
    engine.spend(user, 700, key=key)
    engine.apply(buyer.subscription("starter").invoice_paid(period=0))
    engine.reverse(user, key)
    assert engine.credits(user) == (1000, 500)


def test_reverse_spend_lowers_what_counts_as_spent_this_period(engine, user, key):
    sub = te.Buyer.new(user).subscription("starter")
    engine.apply(sub.created(created=te.at(0)))
    engine.apply(sub.invoice_paid(period=0))
    engine.spend(user, 400, key=key)
    engine.reverse(user, key)
    engine.apply_all(*sub.upgrade(period=0, plan="pro", at_time=te.at(0)))
    assert engine.credits(user) == (5000, 0)


def test_a_reversed_spends_key_used_again_returns_the_first_result_and_spends_nothing(
    engine, user, key
):
    engine.spend(user, 100, key=key)
    engine.reverse(user, key)
    again = engine.spend(user, 100, key=key)
    assert again["plan_credits"] == 400  # the first result: nothing spent again
    assert engine.credits(user) == (500, 0)


def test_reversing_a_spend_after_a_downgrade_never_exceeds_the_new_allowance(engine, user, key):
    sub = te.Buyer.new(user).subscription("pro")
    engine.apply(sub.created(created=te.at(0, 1)))
    engine.apply(sub.invoice_paid(period=0))
    engine.spend(user, 4500, key=key)
    engine.apply(
        sub.plan_changed(period=0, plan="starter", previous_plan="pro", created=te.at(0, 60))
    )
    assert engine.credits(user) == (0, 0)
    engine.reverse(user, key)
    assert engine.credits(user) == (1000, 0)
