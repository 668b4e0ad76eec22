"""The Stripe payload builders match Stripe's shapes in both layouts and sign like Stripe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import stripe

from tally import stripe_events as se

FIXTURES = Path(__file__).resolve().parent / "sidecar" / "stripe_fixtures"
PRICES = {"price_basic": 1000, "price_pro": 3000, "price_pack": 900}

# Fields that exist only in one layout (Stripe's basil changelog).
BASIL_ONLY_INVOICE = {"parent", "amount_overpaid", "total_pretax_credit_amounts", "total_taxes"}
LEGACY_ONLY_INVOICE = {
    "charge",
    "paid",
    "paid_out_of_band",
    "payment_intent",
    "quote",
    "subscription_details",
    "subscription_proration_date",
    "tax",
    "total_tax_amounts",
}
BASIL_ONLY_LINE = {
    "parent",
    "pricing",
    "pretax_credit_amounts",
    "quantity_decimal",
    "subtotal",
    "taxes",
}
LEGACY_ONLY_LINE = {
    "amount_excluding_tax",
    "invoice_item",
    "plan",
    "price",
    "proration",
    "proration_details",
    "subscription_item",
    "tax_amounts",
    "tax_rates",
    "type",
    "unit_amount_excluding_tax",
}


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def keys(obj: dict) -> set[str]:
    return set(obj)


def subscribed(layout: se.Layout) -> tuple[se.StripeWorld, se.Subscription, list[dict]]:
    world = se.StripeWorld(layout, prices=PRICES)
    alice = world.customer(user_id="4f1d7c1e-0000-4000-8000-000000000001")
    sub, events = world.subscribe(alice, "price_basic")
    return world, sub, events


def of_type(events: list[dict], type: str) -> list[dict]:
    return [e for e in events if e["type"] == type]


# -- signing ---------------------------------------------------------------------------


def test_signature_is_accepted_by_stripes_own_verifier():
    body = b'{"id": "evt_1"}'
    header = se.sign(body, "whsec_abc", timestamp=1_700_000_000)
    stripe.WebhookSignature.verify_header(body, header, "whsec_abc", tolerance=None)


def test_signature_with_another_secret_is_refused_by_stripes_verifier():
    body = b'{"id": "evt_1"}'
    header = se.sign(body, "whsec_other")
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(body, header, "whsec_abc", tolerance=300)


def test_signature_header_names_timestamp_and_scheme():
    header = se.sign(b"x", "whsec_abc", timestamp=42, scheme="v0")
    t, v0 = header.split(",")
    assert t == "t=42"
    assert v0.startswith("v0=") and len(v0) == 3 + 64


def test_signed_request_signs_exactly_the_encoded_body():
    evt = se.StripeWorld().unhandled()
    body, headers = se.signed_request(evt, "whsec_abc")
    stripe.WebhookSignature.verify_header(body, headers["Stripe-Signature"], "whsec_abc", 300)
    assert json.loads(body) == evt


# -- shapes: every object matches its fixture ---------------------------------------------


@pytest.mark.parametrize("layout", ["legacy", "basil"])
def test_checkout_session_has_the_fixture_fields(layout):
    world = se.StripeWorld(layout, prices=PRICES)
    _, events = world.buy_pack(world.customer(user_id="u"), "price_pack")
    assert keys(events[-1]["data"]["object"]) == keys(fixture("checkout_session"))


@pytest.mark.parametrize("layout", ["legacy", "basil"])
def test_event_envelope_has_the_fixture_fields(layout):
    _, _, events = subscribed(layout)
    for evt in events:
        assert keys(evt) == keys(fixture("event"))
        assert evt["api_version"] == se.DEFAULT_API_VERSIONS[layout]


def test_basil_invoice_has_exactly_the_fixture_fields():
    _, _, events = subscribed("basil")
    inv = of_type(events, "invoice.paid")[0]["data"]["object"]
    assert keys(inv) == keys(fixture("invoice"))
    assert keys(inv["lines"]["data"][0]) == keys(fixture("line_item"))


def test_legacy_invoice_has_the_pre_basil_fields():
    _, _, events = subscribed("legacy")
    inv = of_type(events, "invoice.paid")[0]["data"]["object"]
    assert keys(inv) == keys(fixture("invoice")) - BASIL_ONLY_INVOICE | LEGACY_ONLY_INVOICE
    expected_line = keys(fixture("line_item")) - BASIL_ONLY_LINE | LEGACY_ONLY_LINE
    assert keys(inv["lines"]["data"][0]) == expected_line


def test_basil_subscription_has_the_fixture_fields_and_periods_on_items():
    _, _, events = subscribed("basil")
    obj = events[0]["data"]["object"]
    assert keys(obj) == keys(fixture("subscription"))
    assert keys(obj["items"]["data"][0]) == keys(fixture("subscription_item"))


def test_legacy_subscription_has_periods_on_the_subscription_only():
    _, _, events = subscribed("legacy")
    obj = events[0]["data"]["object"]
    assert {"current_period_start", "current_period_end"} <= keys(obj)
    item = obj["items"]["data"][0]
    assert keys(item) == keys(fixture("subscription_item")) - {
        "current_period_start",
        "current_period_end",
    }


@pytest.mark.parametrize("layout", ["legacy", "basil"])
def test_charge_has_the_fixture_fields_plus_invoice_in_legacy(layout):
    world, sub, _ = subscribed(layout)
    obj = world.refund(sub, 100)[0]["data"]["object"]
    extra = {"invoice"} if layout == "legacy" else set()
    assert keys(obj) == keys(fixture("charge")) | extra
    assert keys(obj["refunds"]["data"][0]) == keys(fixture("refund"))


def test_dispute_has_the_fixture_fields():
    world = se.StripeWorld(prices=PRICES)
    pack, _ = world.buy_pack(world.customer(user_id="u"), "price_pack")
    _, events = world.open_dispute(pack)
    assert keys(events[0]["data"]["object"]) == keys(fixture("dispute"))


def test_customer_portal_session_and_price_have_the_fixture_fields():
    assert keys(se.customer(id="cus_1", created=1)) == keys(fixture("customer"))
    portal = se.billing_portal_session(id="bps_1", customer="cus_1", created=1, return_url="x")
    assert keys(portal) == keys(fixture("billing_portal_session"))
    assert keys(se.price(id="price_1", unit_amount=1, product="p", created=1)) == keys(
        fixture("price")
    )


# -- where each layout puts the subscription data --------------------------------------------


def test_legacy_invoice_names_subscription_price_and_metadata_at_the_old_places():
    _, sub, events = subscribed("legacy")
    inv = of_type(events, "invoice.paid")[0]["data"]["object"]
    line = inv["lines"]["data"][0]
    assert inv["subscription"] == sub.id
    assert inv["subscription_details"]["metadata"] == {"user_id": sub.customer.user_id}
    assert (line["price"]["id"], line["proration"]) == ("price_basic", False)
    assert inv["paid"] is True and inv["charge"] == sub.payments[0].charge_id


def test_basil_invoice_names_subscription_price_and_metadata_under_parent():
    _, sub, events = subscribed("basil")
    inv = of_type(events, "invoice.paid")[0]["data"]["object"]
    line = inv["lines"]["data"][0]
    assert inv["parent"]["type"] == "subscription_details"
    assert inv["parent"]["subscription_details"]["subscription"] == sub.id
    assert inv["parent"]["subscription_details"]["metadata"] == {"user_id": sub.customer.user_id}
    assert line["pricing"]["price_details"]["price"] == "price_basic"
    details = line["parent"]["subscription_item_details"]
    assert (details["subscription"], details["proration"]) == (sub.id, False)
    assert inv["status"] == "paid"
    assert not {"paid", "charge", "payment_intent"} & keys(inv)


def test_invoice_line_covers_the_subscription_period():
    _, sub, events = subscribed("basil")
    line = of_type(events, "invoice.paid")[0]["data"]["object"]["lines"]["data"][0]
    assert line["period"] == {"start": sub.current_period_start, "end": sub.current_period_end}


# -- lifecycle coherence ----------------------------------------------------------------


def test_subscribe_via_checkout_sends_session_with_user_and_subscription():
    _, sub, events = subscribed("basil")
    session = of_type(events, "checkout.session.completed")[0]["data"]["object"]
    assert session["mode"] == "subscription"
    assert session["subscription"] == sub.id
    assert session["client_reference_id"] == sub.customer.user_id
    assert session["metadata"]["user_id"] == sub.customer.user_id


def test_renewal_starts_where_the_last_period_ended_in_legacy():
    world, sub, _ = subscribed("legacy")
    first_start, first_end = sub.current_period_start, sub.current_period_end
    events = world.renew(sub)
    updated = of_type(events, "customer.subscription.updated")[0]
    assert updated["data"]["object"]["current_period_start"] == first_end
    assert updated["data"]["previous_attributes"]["current_period_start"] == first_start


def test_renewal_previous_attributes_hold_the_old_item_period_in_basil():
    world, sub, _ = subscribed("basil")
    first_start = sub.current_period_start
    events = world.renew(sub)
    updated = of_type(events, "customer.subscription.updated")[0]
    old_item = updated["data"]["previous_attributes"]["items"]["data"][0]
    assert old_item["current_period_start"] == first_start
    assert updated["data"]["object"]["items"]["data"][0]["current_period_start"] == (
        sub.current_period_start
    )


@pytest.mark.parametrize("layout", ["legacy", "basil"])
def test_plan_change_previous_attributes_name_the_old_price(layout):
    world, sub, _ = subscribed(layout)
    (updated,) = world.change_plan(sub, "price_pro")
    assert updated["data"]["object"]["items"]["data"][0]["price"]["id"] == "price_pro"
    assert updated["data"]["previous_attributes"]["items"]["data"][0]["price"]["id"] == (
        "price_basic"
    )


def test_plan_change_invoiced_now_has_only_proration_lines():
    world, sub, _ = subscribed("basil")
    events = world.change_plan(sub, "price_pro", invoice_now=True)
    inv = of_type(events, "invoice.paid")[0]["data"]["object"]
    assert inv["billing_reason"] == "subscription_update"
    # A proration is an invoice item's line (basil); the credit names what it credits.
    details = [line["parent"]["invoice_item_details"] for line in inv["lines"]["data"]]
    assert [d["proration"] for d in details] == [True, True]
    assert (
        details[0]["proration_details"]["credited_items"]["invoice"] == sub.payments[0].invoice_id
    )
    assert details[1]["proration_details"]["credited_items"] is None
    assert inv["amount_paid"] == sum(line["amount"] for line in inv["lines"]["data"]) > 0


def test_a_change_waiting_for_its_payment_keeps_the_old_price_until_the_retry_pays():
    world, sub, _ = subscribed("basil")
    failed, pending = world.change_plan(
        sub, "price_pro", invoice_now=True, paid=False, pending_if_incomplete=True
    )
    assert failed["type"] == "invoice.payment_failed"
    assert failed["data"]["object"]["billing_reason"] == "subscription_update"
    obj = pending["data"]["object"]
    assert obj["items"]["data"][0]["price"]["id"] == "price_basic"
    assert obj["pending_update"]["subscription_items"][0]["price"]["id"] == "price_pro"
    assert pending["data"]["previous_attributes"] == {"pending_update": None}
    paid, *_, moved = world.retry_payment(sub)
    assert (paid["type"], paid["data"]["object"]["id"]) == (
        "invoice.paid",
        failed["data"]["object"]["id"],
    )
    assert moved["data"]["object"]["items"]["data"][0]["price"]["id"] == "price_pro"
    assert moved["data"]["object"]["pending_update"] is None
    assert moved["data"]["previous_attributes"]["items"]["data"][0]["price"]["id"] == "price_basic"
    assert moved["created"] > paid["created"] > failed["created"]


def test_a_failed_change_applied_at_once_moves_the_price_before_its_payment():
    world, sub, _ = subscribed("legacy")
    updated, failed, past_due = world.change_plan(sub, "price_pro", invoice_now=True, paid=False)
    assert updated["data"]["object"]["plan"]["id"] == "price_pro"
    assert failed["type"] == "invoice.payment_failed"
    assert past_due["data"]["object"]["status"] == "past_due"
    assert past_due["data"]["previous_attributes"] == {"status": "active"}
    assert (
        of_type(world.retry_payment(sub), "invoice.paid")[0]["data"]["object"]["id"]
        == (failed["data"]["object"]["id"])
    )


def test_a_scheduled_cancellation_can_be_taken_back():
    world, sub, _ = subscribed("basil")
    world.cancel(sub)
    (resumed,) = world.resume(sub)
    assert resumed["data"]["object"]["cancel_at_period_end"] is False
    assert resumed["data"]["object"]["cancel_at"] is None
    assert resumed["data"]["previous_attributes"]["cancel_at_period_end"] is True
    assert of_type(world.renew(sub), "invoice.paid")


def test_a_paid_basil_invoice_is_joined_to_its_payment_by_invoice_payment_paid():
    _, sub, events = subscribed("basil")
    (joined,) = of_type(events, "invoice_payment.paid")
    payment = joined["data"]["object"]
    assert payment["invoice"] == sub.payments[0].invoice_id
    assert payment["payment"] == {
        "type": "payment_intent",
        "payment_intent": sub.payments[0].payment_intent_id,
    }


def test_a_legacy_world_sends_no_invoice_payment_events():
    _, _, events = subscribed("legacy")
    assert of_type(events, "invoice_payment.paid") == []


def test_a_scheduled_change_bills_the_new_price_at_the_next_renewal():
    world, sub, _ = subscribed("basil")
    assert world.schedule_change(sub, "price_basic") == []
    world.change_plan(sub, "price_pro", invoice_now=True)
    world.schedule_change(sub, "price_basic")
    renewal = world.renew(sub)
    inv = of_type(renewal, "invoice.paid")[0]["data"]["object"]
    assert [line["pricing"]["price_details"]["price"] for line in inv["lines"]["data"]] == [
        "price_basic"
    ]
    updated = of_type(renewal, "customer.subscription.updated")[0]
    assert updated["data"]["previous_attributes"]["items"]["data"][0]["price"]["id"] == "price_pro"


def test_an_invoice_can_embed_only_its_first_page_of_lines():
    lines = [{"amount": 1, "period": {"start": 1, "end": 2}} for _ in range(3)]
    inv = se.invoice(layout="basil", id="in_1", customer="cus_1", subscription="sub_1",
                     subscription_metadata={}, lines=lines, status="paid", created=1,
                     billing_reason="subscription_cycle", embedded_lines=2)  # fmt: skip
    assert (len(inv["lines"]["data"]), inv["lines"]["has_more"]) == (2, True)
    assert inv["lines"]["total_count"] == 3 and inv["total"] == 3


def test_pending_prorations_join_the_next_renewal_invoice():
    world, sub, _ = subscribed("legacy")
    world.change_plan(sub, "price_pro")
    inv = of_type(world.renew(sub), "invoice.paid")[0]["data"]["object"]
    lines = [(line["price"]["id"], line["proration"]) for line in inv["lines"]["data"]]
    assert lines == [("price_basic", True), ("price_pro", True), ("price_pro", False)]


def test_failed_renewal_makes_the_subscription_past_due_until_retried():
    world, sub, _ = subscribed("basil")
    failed = world.fail_renewal(sub)
    assert [e["type"] for e in failed] == [
        "invoice.payment_failed",
        "customer.subscription.updated",
    ]
    assert failed[-1]["data"]["object"]["status"] == "past_due"
    assert failed[-1]["data"]["previous_attributes"]["status"] == "active"
    retried = world.retry_payment(sub)
    assert [e["type"] for e in retried] == [
        "invoice.paid",
        "invoice_payment.paid",
        "customer.subscription.updated",
    ]
    assert retried[0]["data"]["object"]["id"] == failed[0]["data"]["object"]["id"]
    assert retried[-1]["data"]["object"]["status"] == "active"


def test_refunds_report_a_cumulative_amount_refunded():
    world = se.StripeWorld(prices=PRICES)
    pack, _ = world.buy_pack(world.customer(user_id="u"), "price_pack")
    first = world.refund(pack, 300)[0]["data"]["object"]
    second = world.refund(pack)[0]["data"]["object"]
    assert (first["amount_refunded"], first["refunded"]) == (300, False)
    assert (second["amount_refunded"], second["refunded"]) == (900, True)
    assert [r["amount"] for r in second["refunds"]["data"]] == [600, 300]


def test_pack_checkout_carries_user_and_price_in_metadata():
    world = se.StripeWorld(prices=PRICES)
    pack, events = world.buy_pack(world.customer(user_id="u1"), "price_pack")
    session = events[-1]["data"]["object"]
    assert session["metadata"] == {"user_id": "u1", "price_id": "price_pack"}
    assert (session["mode"], session["payment_status"], session["amount_total"]) == (
        "payment",
        "paid",
        900,
    )
    assert session["payment_intent"] == pack.payment.payment_intent_id


def test_async_pack_completes_unpaid_then_succeeds():
    world = se.StripeWorld(prices=PRICES)
    pack, events = world.buy_pack(world.customer(user_id="u"), "price_pack", asynchronous=True)
    assert events[-1]["data"]["object"]["payment_status"] == "unpaid"
    (settled,) = world.settle(pack)
    assert settled["type"] == "checkout.session.async_payment_succeeded"
    assert settled["data"]["object"]["payment_status"] == "paid"
    assert settled["data"]["object"]["id"] == pack.session_id


def test_dispute_opens_then_closes_with_the_outcome():
    world = se.StripeWorld(prices=PRICES)
    pack, _ = world.buy_pack(world.customer(user_id="u"), "price_pack")
    dsp, (opened,) = world.open_dispute(pack)
    (closed,) = world.close_dispute(dsp, won=False)
    assert opened["data"]["object"]["status"] == "needs_response"
    assert closed["data"]["object"]["status"] == "lost"
    assert closed["data"]["object"]["payment_intent"] == pack.payment.payment_intent_id


def test_cancel_at_period_end_schedules_then_deletes():
    world, sub, _ = subscribed("basil")
    (scheduled,) = world.cancel(sub)
    assert scheduled["data"]["object"]["cancel_at_period_end"] is True
    assert scheduled["data"]["previous_attributes"]["cancel_at_period_end"] is False
    (deleted,) = world.end_of_period(sub)
    assert deleted["type"] == "customer.subscription.deleted"
    assert deleted["data"]["object"]["status"] == "canceled"
    assert deleted["data"]["object"]["ended_at"] == sub.current_period_end


def test_events_are_created_in_clock_order_with_unique_ids():
    world, sub, events = subscribed("basil")
    events += world.renew(sub) + world.change_plan(sub, "price_pro") + world.cancel(sub)
    assert [e["created"] for e in events] == sorted(e["created"] for e in events)
    assert len({e["id"] for e in events}) == len(events)


def test_same_seed_gives_the_same_events():
    assert subscribed("basil")[2] == subscribed("basil")[2]


def test_twin_announces_the_same_object_under_a_new_id():
    world, _, events = subscribed("basil")
    twin = world.twin(events[0])
    assert twin["id"] != events[0]["id"]
    assert twin["data"] == events[0]["data"]


def test_noise_adds_event_types_the_product_ignores():
    world = se.StripeWorld(prices=PRICES, noise=True)
    _, events = world.subscribe(world.customer(user_id="u"), "price_basic")
    types = {e["type"] for e in events}
    assert {"invoice.created", "invoice.finalized", "invoice.payment_succeeded"} <= types


@pytest.mark.parametrize(
    ("api_version", "layout"),
    [
        ("2024-06-20", "legacy"),
        ("2025-02-24.acacia", "legacy"),
        ("2025-03-31.basil", "basil"),
        ("2026-06-24.dahlia", "basil"),
        (None, "basil"),
    ],
)
def test_layout_follows_the_api_version(api_version, layout):
    assert se.layout_for(api_version) == layout
