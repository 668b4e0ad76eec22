"""The Python model of the credit policy, checked on hand-worked examples from SPEC 2."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import pytest

from tests.simulation.model import (
    Catalog,
    Spend,
    UserState,
    apply_spends,
    expected_states,
    refund_clawback_target,
)

CATALOG = Catalog(
    plans={"price_basic": 1000, "price_pro": 5000},
    packs={"price_pack_s": 100, "price_pack_l": 1000},
)
USER = str(uuid.UUID(int=1))
OTHER = str(uuid.UUID(int=2))
T0 = 1_780_000_000
MONTH = 30 * 86_400
_ids = itertools.count(1)


def event(kind: str, created: int, key: str, fields: dict[str, Any]) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "id": f"evt_{next(_ids):06d}",
        "type": kind,
        "created": created,
        "livemode": False,
        "api_version": "2025-03-31.basil",
        "layout": "basil",
        "raw": {},
        key: fields,
    }


def subscription(
    kind: str, created: int, status: str, price: str = "price_basic", **fields: Any
) -> dict[str, Any]:
    values = {
        "id": "sub_1",
        "customer_id": "cus_1",
        "status": status,
        "created": T0,
        "price_id": price,
        "current_period_start": T0,
        "current_period_end": T0 + MONTH,
        "cancel_at_period_end": False,
        "canceled_at": None,
        "ended_at": None,
        "metadata_user_id": USER,
        "previous": None,
    }
    values.update(fields)
    return event(f"customer.subscription.{kind}", created, "subscription", values)


def invoice(
    kind: str, created: int, period_start: int = T0, price: str | None = "price_basic", **fields
) -> dict[str, Any]:
    values = {
        "id": f"in_{period_start}",
        "customer_id": "cus_1",
        "subscription_id": "sub_1",
        "status": "paid" if kind == "invoice.paid" else "open",
        "billing_reason": "subscription_cycle",
        "amount_paid": 1900,
        "amount_due": 1900,
        "currency": "usd",
        "subscription_metadata_user_id": USER,
        "price_id": price,
        "period_start": period_start,
        "period_end": None if period_start is None else period_start + MONTH,
        "charge_id": None,
        "payment_intent_id": None,
    }
    values.update(fields)
    return event(kind, created, "invoice", values)


def pack_session(kind: str, created: int, payment_status: str = "paid", **fields) -> dict:
    values = {
        "id": "cs_1",
        "mode": "payment",
        "status": "complete",
        "payment_status": payment_status,
        "customer_id": "cus_1",
        "client_reference_id": USER,
        "metadata_user_id": USER,
        "metadata_price_id": "price_pack_s",
        "subscription_id": None,
        "payment_intent_id": "pi_1",
        "amount_total": 1000,
        "currency": "usd",
    }
    values.update(fields)
    return event(kind, created, "checkout_session", values)


def refund(created: int, amount_refunded: int, **fields: Any) -> dict[str, Any]:
    values = {
        "id": "ch_1",
        "customer_id": "cus_1",
        "payment_intent_id": "pi_1",
        "invoice_id": None,
        "metadata_user_id": None,
        "amount": 1000,
        "amount_refunded": amount_refunded,
        "currency": "usd",
    }
    values.update(fields)
    return event("charge.refunded", created, "charge", values)


def dispute(kind: str, created: int, status: str) -> dict[str, Any]:
    return event(
        kind,
        created,
        "dispute",
        {
            "id": "dp_1",
            "charge_id": "ch_1",
            "payment_intent_id": "pi_1",
            "amount": 1000,
            "currency": "usd",
            "status": status,
            "reason": "fraudulent",
        },
    )


def state(events: list[dict[str, Any]], user: str = USER) -> UserState:
    return expected_states(events, CATALOG, [USER, OTHER])[user]


def test_a_new_user_has_the_signup_grant_and_nothing_else():
    assert state([]) == UserState(500, 0, None)


def test_a_paid_first_period_sets_plan_credits_to_the_plan_allowance():
    events = [subscription("created", T0, "active"), invoice("invoice.paid", T0)]
    assert state(events) == UserState(1000, 0, "active", "price_basic")


def test_a_renewal_resets_plan_credits_to_the_new_period_plan():
    events = [
        invoice("invoice.paid", T0),
        subscription("updated", T0 + MONTH, "active", "price_pro", current_period_start=T0 + MONTH),
        invoice("invoice.paid", T0 + MONTH, T0 + MONTH, "price_pro"),
    ]
    assert state(events).plan_credits == 5000


def test_an_older_period_arriving_last_changes_nothing():
    newer = invoice("invoice.paid", T0 + MONTH, T0 + MONTH, "price_pro")
    older = invoice("invoice.paid", T0, T0, "price_basic")
    assert state([newer, older]).plan_credits == 5000


def test_an_upgrade_within_the_period_gives_the_new_allowance():
    events = [
        invoice("invoice.paid", T0),
        subscription(
            "updated", T0 + 100, "active", "price_pro", previous={"price_id": "price_basic"}
        ),
    ]
    assert state(events).plan_credits == 5000


def test_a_stale_plan_state_does_not_undo_a_newer_change():
    events = [
        invoice("invoice.paid", T0 + 200),
        subscription(
            "updated", T0 + 100, "active", "price_pro", previous={"price_id": "price_basic"}
        ),
    ]
    assert state(events).plan_credits == 1000


def test_a_plan_change_made_while_a_renewal_was_unpaid_stays_the_period_plan():
    # The invoice was billed (created) at T0, the plan changed at T0 + 100, the retry
    # paid it at T0 + 200: the line is as old as the invoice, so the change is newer.
    retried = invoice("invoice.paid", T0 + 200)
    retried["invoice"]["created"] = T0
    change = subscription(
        "updated", T0 + 100, "past_due", "price_pro", previous={"price_id": "price_basic"}
    )
    assert state([change, retried]).plan_credits == 5000


def test_a_failed_invoice_grants_nothing_and_marks_the_subscription_past_due():
    events = [
        subscription("created", T0, "active"),
        invoice("invoice.payment_failed", T0 + 5),
    ]
    assert state(events) == UserState(500, 0, "past_due")


@pytest.mark.parametrize(
    ("billing_reason", "status"),
    [("subscription_create", "incomplete"), ("subscription_cycle", "past_due")],
)
def test_a_failed_invoice_of_an_unknown_subscription_says_how_far_it_got(billing_reason, status):
    events = [invoice("invoice.payment_failed", T0, billing_reason=billing_reason)]
    assert state(events).subscription_status == status


def test_an_invoice_with_only_proration_lines_pays_no_period():
    events = [invoice("invoice.paid", T0, price=None, period_start=None)]
    assert state(events).plan_credits == 500


def test_an_invoice_for_an_unknown_price_is_rejected_and_leaves_no_state():
    assert state([invoice("invoice.paid", T0, price="price_nobody_sells")]) == UserState(500, 0)


def test_a_subscription_event_for_an_unknown_price_is_rejected_and_leaves_no_state():
    events = [subscription("created", T0, "active", price="price_nobody_sells")]
    assert state(events) == UserState(500, 0)


def test_an_invoice_paid_event_whose_invoice_is_not_paid_counts_as_a_failed_payment():
    events = [subscription("created", T0, "active"), invoice("invoice.paid", T0 + 5, status="open")]
    assert state(events) == UserState(500, 0, "past_due")


def test_a_period_starting_after_the_subscription_ended_is_not_granted():
    events = [
        invoice("invoice.paid", T0),
        subscription("deleted", T0 + 50, "canceled", canceled_at=T0 + 50, ended_at=T0 + 50),
        invoice("invoice.paid", T0 + MONTH, T0 + MONTH, "price_pro"),
    ]
    assert state(events) == UserState(1000, 0, "canceled", "price_basic")


def test_a_cancelled_subscription_stays_cancelled_whatever_comes_later():
    events = [
        subscription("deleted", T0 + 50, "canceled", canceled_at=T0 + 50, ended_at=T0 + 50),
        subscription("updated", T0 + 60, "active"),
    ]
    assert state(events).subscription_status == "canceled"


def test_a_tie_between_updates_is_decided_by_the_state_each_one_left():
    later = subscription("updated", T0 + 9, "past_due", previous={"status": "active"})
    earlier = subscription("updated", T0 + 9, "active", previous={"status": "past_due"})
    # Both left the other's state; rank decides (past_due above active), not arrival order.
    assert (
        state([later, earlier]).subscription_status == state([earlier, later]).subscription_status
    )
    chained = subscription("updated", T0 + 9, "active", previous={"status": "incomplete"})
    left_active = subscription("updated", T0 + 9, "past_due", previous={"status": "active"})
    assert state([left_active, chained]).subscription_status == "past_due"


def test_a_paid_pack_adds_its_credits_once_whatever_events_announce_it():
    events = [
        pack_session("checkout.session.completed", T0),
        pack_session("checkout.session.completed", T0),
        pack_session("checkout.session.async_payment_succeeded", T0 + 9),
    ]
    assert state(events).addon_credits == 100


def test_an_unpaid_checkout_grants_nothing_until_the_async_payment_succeeds():
    unpaid = pack_session("checkout.session.completed", T0, "unpaid")
    assert state([unpaid]).addon_credits == 0
    failed = pack_session("checkout.session.async_payment_failed", T0 + 9, "unpaid")
    assert state([unpaid, failed]).addon_credits == 0
    paid = pack_session("checkout.session.async_payment_succeeded", T0 + 9)
    assert state([unpaid, paid]).addon_credits == 100


def test_a_pack_without_its_price_in_metadata_is_rejected():
    assert state([pack_session("checkout.session.completed", T0, metadata_price_id=None)]) == (
        UserState(500, 0, None)
    )


def test_a_partial_refund_claws_back_the_rounded_refunded_share():
    events = [pack_session("checkout.session.completed", T0), refund(T0 + 5, 335)]
    assert state(events).addon_credits == 100 - 34


def test_refunds_are_cumulative_not_added_up():
    events = [
        pack_session("checkout.session.completed", T0),
        refund(T0 + 5, 300),
        refund(T0 + 6, 500),
        refund(T0 + 6, 500),
    ]
    assert state(events).addon_credits == 50


@pytest.mark.parametrize(
    ("closing", "addon"), [(None, 0), ("won", 100), ("lost", 0), ("warning_closed", 100)]
)
def test_a_dispute_claws_back_the_pack_until_it_is_won(closing, addon):
    events = [
        pack_session("checkout.session.completed", T0),
        dispute("charge.dispute.created", T0 + 5, "needs_response"),
    ]
    if closing:
        events.append(dispute("charge.dispute.closed", T0 + 9, closing))
    assert state(events).addon_credits == addon


def test_a_refund_before_a_dispute_is_not_clawed_back_twice():
    events = [
        pack_session("checkout.session.completed", T0),
        refund(T0 + 3, 500),
        dispute("charge.dispute.created", T0 + 5, "needs_response"),
    ]
    assert state(events).addon_credits == 0


def test_an_event_without_user_or_linked_customer_is_parked():
    stray = refund(T0, 500, customer_id="cus_unknown", payment_intent_id="pi_unknown")
    assert state([stray]) == UserState(500, 0, None)


def test_an_event_naming_a_user_that_does_not_exist_grants_nothing():
    ghost = str(uuid.UUID(int=99))
    events = [pack_session("checkout.session.completed", T0, client_reference_id=ghost)]
    assert state(events).addon_credits == 0


def test_the_customer_link_resolves_events_that_name_no_user():
    events = [
        pack_session("checkout.session.completed", T0),
        invoice("invoice.paid", T0 + 5, subscription_metadata_user_id=None),
    ]
    assert state(events) == UserState(1000, 100, "active", "price_basic")


def test_a_rejected_event_still_links_the_customer_it_names():
    events = [
        invoice("invoice.paid", T0, price="price_nobody_sells"),
        refund(T0 + 5, 500, payment_intent_id="pi_of_the_invoice"),
        pack_session(
            "checkout.session.completed",
            T0 + 9,
            client_reference_id=None,
            metadata_user_id=None,
            payment_intent_id="pi_2",
        ),
    ]
    assert state(events) == UserState(500, 100, None)


def test_the_refund_share_rounds_half_away_from_zero():
    assert refund_clawback_target(100, 335, 1000) == 34
    assert refund_clawback_target(100, 334, 1000) == 33
    assert refund_clawback_target(3, 1, 2) == 2


def test_spends_draw_plan_credits_first_and_refuse_what_would_go_negative():
    states = {USER: UserState(30, 50)}
    spends = [
        Spend(USER, 40, "a"),
        Spend(USER, 41, "b"),
        Spend(USER, 40, "a"),
        Spend(USER, 40, "c"),
    ]
    after, refused = apply_spends(states, spends)
    assert after[USER] == UserState(0, 0)
    assert [s.key for s in refused] == ["b"]
