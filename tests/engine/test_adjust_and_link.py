"""adjust_credits (operator adjustment) and link_stripe_customer (docs/interface.md)."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from tests.support import typed_events as te
from tests.support.postgrest_errors import postgrest_status


def sqlstate_of(call) -> str:
    with pytest.raises(psycopg.Error) as caught:
        call()
    return caught.value.sqlstate


def test_positive_adjustment_adds_addon_credits(engine, user):
    engine.adjust(user, 250, "goodwill")
    assert engine.credits(user) == (500, 250)


def test_adjustment_is_a_ledger_row_with_its_reason(engine, user):
    engine.adjust(user, 250, "goodwill for outage #12")
    (row,) = engine.ledger(user, "adjustment")
    assert (row["plan_delta"], row["addon_delta"]) == (0, 250)
    assert row["reason"] == "goodwill for outage #12"


def test_adjustment_returns_the_new_balance_parts(engine, user):
    result = engine.adjust(user, 250, "goodwill")
    assert (result["plan_credits"], result["addon_credits"]) == (500, 250)


def test_negative_adjustment_is_taken_plan_first(engine, user):
    engine.adjust(user, 250, "goodwill")
    engine.adjust(user, -600, "abuse")
    assert engine.credits(user) == (0, 150)


def test_negative_adjustment_counts_as_spent_this_period(engine, user):
    sub = te.Buyer.new(user).subscription("starter")
    engine.apply(sub.created(created=te.at(0)))
    engine.apply(sub.invoice_paid(period=0))
    engine.adjust(user, -300, "abuse")
    engine.apply_all(*sub.upgrade(period=0, plan="pro", at_time=te.at(0)))
    assert engine.credits(user) == (4700, 0)


def test_adjustment_below_zero_raises_pt402_and_changes_nothing(engine, user):
    assert sqlstate_of(lambda: engine.adjust(user, -501, "too much")) == "PT402"
    assert engine.credits(user) == (500, 0)
    assert engine.ledger(user, "adjustment") == []


@pytest.mark.parametrize("reason", [None, ""])
def test_adjustment_without_a_reason_raises_22023(engine, user, reason):
    assert sqlstate_of(lambda: engine.adjust(user, 10, reason)) == "22023"
    assert engine.credits(user) == (500, 0)


def test_adjustment_with_a_repeated_key_applies_once(engine, user, key):
    engine.adjust(user, 100, "goodwill", key=key)
    engine.adjust(user, 100, "goodwill", key=key)
    assert engine.credits(user) == (500, 100)


def test_adjustment_with_a_repeated_key_and_another_amount_returns_the_first_result(
    engine, user, key
):
    first = engine.adjust(user, 100, "goodwill", key=key)
    second = engine.adjust(user, -50, "typo", key=key)
    assert {**second, "replayed": False} == first
    assert engine.credits(user) == (500, 100)


def test_adjustment_for_an_unknown_user_raises_pt404(engine):
    assert sqlstate_of(lambda: engine.adjust(uuid.uuid4(), 10, "goodwill")) == "PT404"


def test_adjustment_of_zero_is_a_client_error(engine, user):
    state = sqlstate_of(lambda: engine.adjust(user, 0, "nothing"))
    assert postgrest_status(state) == 400, state


def test_link_stripe_customer_returns_void(engine):
    row = engine.db.execute(
        "select format_type(prorettype, null) as returns from pg_proc"
        " where oid = 'public.link_stripe_customer(uuid, text)'::regprocedure"
    ).fetchone()
    assert row["returns"] == "void"


def test_link_stripe_customer_links_the_customer_to_the_user(engine, user):
    customer_id = te.new_id("cus")
    engine.link(user, customer_id)
    anonymous = te.Buyer(str(user), customer_id).subscription("pro", with_user_metadata=False)
    assert engine.apply(anonymous.invoice_paid(period=0))["status"] == "applied"
    assert engine.credits(user) == (5000, 0)


def test_linking_a_customer_already_linked_to_another_user_is_a_conflict(engine, user, make_user):
    customer_id = te.new_id("cus")
    engine.link(user, customer_id)
    state = sqlstate_of(lambda: engine.link(make_user(), customer_id))
    assert state == "23505"


def test_linking_the_same_customer_twice_applies_parked_events_once(engine, user):
    buyer = te.Buyer.new(user)
    engine.apply(
        buyer.pack_purchase("pack_500").completed(client_reference_id=None, metadata_user_id=None)
    )
    engine.link(user, buyer.customer_id)
    engine.link(user, buyer.customer_id)
    assert engine.credits(user) == (500, 500)


def test_linking_to_an_unknown_user_raises_pt404(engine):
    assert sqlstate_of(lambda: engine.link(uuid.uuid4(), te.new_id("cus"))) == "PT404"


@pytest.mark.parametrize("customer_id", [None, ""])
def test_linking_without_a_customer_id_is_a_client_error(engine, user, customer_id):
    state = sqlstate_of(lambda: engine.link(user, customer_id))
    assert postgrest_status(state) == 400, state
