"""Outcomes of apply_stripe_event, idempotency, the audit record (docs/events.md, rules 1 and 6)."""

from __future__ import annotations

from tests.support import typed_events as te


def test_applied_event_answers_applied_with_its_id(engine, buyer):
    event = buyer.pack_purchase("pack_500").completed()
    result = engine.apply(event)
    assert (result["status"], result["event_id"]) == ("applied", event["id"])


def test_same_event_id_delivered_again_is_a_duplicate(engine, buyer):
    event = buyer.pack_purchase("pack_500").completed()
    engine.apply(event)
    result = engine.apply(event)
    assert (result["status"], result["event_id"]) == ("duplicate", event["id"])
    assert engine.credits(buyer.user_id) == (500, 500)


def test_a_redelivered_parked_event_is_a_duplicate_and_stays_parked(engine, buyer):
    event = buyer.subscription("starter", with_user_metadata=False).invoice_paid(period=0)
    engine.apply(event)
    assert engine.apply(event)["status"] == "duplicate"
    assert engine.stored_event(event["id"])["outcome"] == "parked"


def test_unhandled_event_type_is_ignored(engine):
    event = te.unhandled_event("customer.created")
    result = engine.apply(event)
    assert (result["status"], result["event_id"]) == ("ignored", event["id"])


def test_ignored_event_is_not_stored(engine):
    event = te.unhandled_event("payment_intent.succeeded")
    engine.apply(event)
    assert engine.stored_event(event["id"]) is None


def test_applied_event_is_stored_with_raw_payload_outcome_and_time(engine, buyer):
    event = buyer.subscription("pro").invoice_paid(period=0)
    engine.apply(event)
    stored = engine.stored_event(event["id"])
    assert (stored["type"], stored["outcome"]) == ("invoice.paid", "applied")
    assert stored["raw"] == event["raw"]
    assert stored["payload"] is None  # the raw payload is the record; the reading is not kept
    assert stored["applied_at"] is not None


def test_a_parked_event_keeps_its_typed_reading_until_it_is_applied(engine, buyer):
    event = buyer.subscription("pro", with_user_metadata=False).invoice_paid(period=0)
    engine.apply(event)
    assert engine.stored_event(event["id"])["payload"]["invoice"] == event["invoice"]
    engine.link(buyer.user_id, buyer.customer_id)
    stored = engine.stored_event(event["id"])
    assert (stored["outcome"], stored["payload"]) == ("applied", None)


def test_an_event_announcing_nothing_new_is_still_recorded(engine, buyer):
    paid = buyer.subscription("starter").invoice_paid(period=0)
    engine.apply(paid)
    again = te.with_event_id(paid)
    assert engine.apply(again)["status"] == "applied"
    assert engine.stored_event(again["id"])["outcome"] == "applied"


def test_failed_payment_events_are_recorded(engine, buyer):
    event = buyer.pack_purchase("pack_500").async_failed()
    engine.apply(event)
    assert engine.stored_event(event["id"])["outcome"] == "applied"


def test_rejected_event_is_stored_with_raw_payload_and_reason(engine, buyer):
    event = buyer.subscription("starter").invoice_paid(period=0, price_id="price_gone_fake")
    engine.apply(event)
    stored = engine.stored_event(event["id"])
    assert (stored["outcome"], stored["raw"]) == ("rejected", event["raw"])
    assert stored["reason"]


def test_events_of_both_layouts_apply_the_same(engine, make_user):
    results = []
    for layout in ("legacy", "basil"):
        buyer = te.Buyer.new(make_user(), layout=layout)
        sub = buyer.subscription("starter")
        engine.apply_all(sub.checkout(), sub.created(created=te.at(0, 1)), sub.invoice_paid())
        engine.apply(buyer.pack_purchase("pack_500").completed())
        results.append(engine.credits(buyer.user_id))
    assert results == [(1000, 500), (1000, 500)]
