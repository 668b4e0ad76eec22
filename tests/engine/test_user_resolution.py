"""User resolution, parking and un-parking, rejection and retry (docs/events.md, rule 5)."""

from __future__ import annotations

import uuid

from tests.support import typed_events as te


def anonymous_invoice(buyer: te.Buyer, plan: str = "starter", **overrides) -> dict:
    """A paid invoice naming only the customer (no user in any metadata)."""
    sub = buyer.subscription(plan, with_user_metadata=False)
    return sub.invoice_paid(period=0, **overrides)


def test_event_for_an_unlinked_customer_without_user_hint_is_parked(engine, buyer):
    event = anonymous_invoice(buyer)
    assert engine.apply(event)["status"] == "parked"
    assert engine.credits(buyer.user_id) == (500, 0)
    assert engine.stored_event(event["id"])["outcome"] == "parked"


def test_parked_event_is_applied_when_the_operator_links_the_customer(engine, buyer):
    event = anonymous_invoice(buyer)
    engine.apply(event)
    engine.link(buyer.user_id, buyer.customer_id)
    assert engine.credits(buyer.user_id) == (1000, 0)
    assert engine.stored_event(event["id"])["outcome"] == "applied"


def test_parked_event_is_applied_when_a_checkout_names_user_and_customer(engine, buyer):
    engine.apply(anonymous_invoice(buyer))
    engine.apply(buyer.subscription("starter").checkout())
    assert engine.credits(buyer.user_id) == (1000, 0)


def test_parked_event_is_applied_when_a_subscription_names_user_and_customer(engine, buyer):
    engine.apply(anonymous_invoice(buyer))
    engine.apply(buyer.subscription("starter").created(created=te.at(0, 1)))
    assert engine.credits(buyer.user_id) == (1000, 0)


def test_parked_events_of_a_customer_are_applied_oldest_first(engine, buyer):
    sub = buyer.subscription("starter", with_user_metadata=False)
    engine.apply(sub.invoice_paid(period=1, plan="pro", created=te.at(1, 5)))
    engine.apply(sub.invoice_paid(period=0, plan="starter", created=te.at(0, 5)))
    engine.link(buyer.user_id, buyer.customer_id)
    balance = engine.balance(buyer.user_id)
    assert (balance["plan_credits"], balance["plan_key"]) == (5000, "pro")


def test_linking_a_customer_applies_nothing_of_another_customer(engine, buyer, make_user):
    other = te.Buyer.new(make_user())
    engine.apply(anonymous_invoice(other))
    engine.link(buyer.user_id, buyer.customer_id)
    assert engine.credits(buyer.user_id) == (500, 0)
    assert engine.credits(other.user_id) == (500, 0)


def test_an_event_for_a_linked_customer_is_applied_without_user_hint(engine, buyer):
    engine.link(buyer.user_id, buyer.customer_id)
    assert engine.apply(anonymous_invoice(buyer))["status"] == "applied"
    assert engine.credits(buyer.user_id) == (1000, 0)


def test_a_hint_beats_the_customer_link_of_another_user(engine, buyer, make_user):
    other_user = make_user()
    engine.link(other_user, buyer.customer_id)
    engine.apply(buyer.pack_purchase("pack_500").completed())
    assert engine.credits(buyer.user_id) == (500, 500)
    assert engine.credits(other_user) == (500, 0)


def test_refund_of_a_pack_finds_its_user_through_the_payment(engine, buyer):
    purchase = buyer.pack_purchase("pack_500")
    engine.apply(purchase.completed())
    refund = purchase.refunded(amount_refunded=purchase.amount, customer_id=None)
    assert engine.apply(refund)["status"] == "applied"
    assert engine.credits(buyer.user_id) == (500, 0)


def test_checkout_naming_a_user_that_does_not_exist_is_rejected_with_its_raw_payload(engine):
    ghost = te.Buyer.new(uuid.uuid4())
    event = ghost.pack_purchase("pack_500").completed()
    assert engine.apply(event)["status"] == "rejected"
    stored = engine.stored_event(event["id"])
    assert stored["outcome"] == "rejected"
    assert "user" in stored["reason"]
    assert stored["raw"] == event["raw"]


def test_a_user_hint_that_is_not_a_uuid_is_rejected(engine):
    buyer = te.Buyer(user_id="user-42")
    event = buyer.pack_purchase("pack_500").completed()
    assert engine.apply(event)["status"] == "rejected"
    assert "user" in engine.stored_event(event["id"])["reason"]


def test_rejected_event_for_a_missing_user_applies_once_the_user_exists(engine, db):
    user_id = uuid.uuid4()
    event = te.Buyer.new(user_id).pack_purchase("pack_2000").completed()
    engine.apply(event)
    db.execute(
        "insert into auth.users (id, aud, role, email) values (%s, 'authenticated',"
        " 'authenticated', %s)",
        (user_id, f"{user_id}@example.test"),
    )
    engine.retry_rejected()
    assert engine.credits(user_id) == (500, 2000)
    assert engine.stored_event(event["id"])["outcome"] == "applied"


def add_plan(db, price_id: str, credits: int) -> None:
    """Add a plan with this Stripe price to the catalog (a fresh key)."""
    db.execute(
        "insert into public.plans (key, name, stripe_price_id, monthly_credits, active)"
        " values (%s, 'Enterprise', %s, %s, true)",
        (f"plan_{uuid.uuid4().hex[:12]}", price_id, credits),
    )


def add_pack(db, price_id: str, credits: int) -> None:
    db.execute(
        "insert into public.credit_packs (key, name, stripe_price_id, credits, active)"
        " values (%s, 'Small pack', %s, %s, true)",
        (f"pack_{uuid.uuid4().hex[:12]}", price_id, credits),
    )


def unknown_price() -> str:
    return f"price_unknown_{uuid.uuid4().hex[:12]}"


def test_invoice_with_an_unknown_price_is_rejected(engine, buyer):
    event = buyer.subscription("starter").invoice_paid(period=0, price_id=unknown_price())
    assert engine.apply(event)["status"] == "rejected"
    assert "unknown price" in engine.stored_event(event["id"])["reason"]
    assert engine.credits(buyer.user_id) == (500, 0)


def test_rejected_unknown_price_applies_once_the_catalog_has_it(engine, db, buyer):
    price = unknown_price()
    event = buyer.subscription("starter").invoice_paid(period=0, price_id=price)
    engine.apply(event)
    add_plan(db, price, 20000)
    engine.retry_rejected()
    assert engine.credits(buyer.user_id) == (20000, 0)
    assert engine.stored_event(event["id"])["outcome"] == "applied"


def test_rejected_pack_with_unknown_price_applies_once_the_catalog_has_it(engine, db, buyer):
    price = unknown_price()
    event = buyer.pack_purchase("pack_500").completed(metadata_price_id=price)
    engine.apply(event)
    add_pack(db, price, 50)
    engine.retry_rejected()
    assert engine.credits(buyer.user_id) == (500, 50)


def test_retrying_rejected_events_twice_applies_them_once(engine, db, buyer):
    price = unknown_price()
    engine.apply(buyer.pack_purchase("pack_500").completed(metadata_price_id=price))
    add_pack(db, price, 50)
    engine.retry_rejected()
    engine.retry_rejected()
    assert engine.credits(buyer.user_id) == (500, 50)


def test_retry_leaves_an_event_rejected_while_its_cause_remains(engine, buyer):
    event = buyer.subscription("starter").invoice_paid(period=0, price_id=unknown_price())
    engine.apply(event)
    engine.retry_rejected()
    stored = engine.stored_event(event["id"])
    assert (stored["outcome"], stored["raw"]) == ("rejected", event["raw"])


def test_a_rejected_event_never_links_its_customer(engine, db, buyer):
    # A paid pack session without metadata.price_id was not made by tally
    # (a Payment Link, say, where the payer chose client_reference_id): it
    # is rejected, and its customer is not linked to the user it names.
    rejected = buyer.pack_purchase("pack_500").completed(metadata_price_id=None)
    assert engine.apply(rejected)["status"] == "rejected"
    assert (
        db.execute(
            "select * from tally.customers where customer_id = %s", (buyer.customer_id,)
        ).fetchall()
        == []
    )
    anonymous = buyer.subscription("starter", with_user_metadata=False)
    assert engine.apply(anonymous.invoice_paid(period=0))["status"] == "parked"


def test_a_checkout_session_the_payer_labelled_links_nothing(engine, db, buyer):
    # client_reference_id set by whoever opened a Payment Link: the session
    # has no metadata.user_id and no metadata.price_id of tally's.
    labelled = buyer.subscription("starter").checkout(metadata_user_id=None, metadata_price_id=None)
    assert engine.apply(labelled)["status"] == "applied"
    assert (
        db.execute(
            "select * from tally.customers where customer_id = %s", (buyer.customer_id,)
        ).fetchall()
        == []
    )


def test_the_first_link_of_a_customer_stays(engine, db, buyer, make_user):
    other = te.Buyer.new(make_user())
    other.customer_id = buyer.customer_id
    engine.apply(buyer.subscription("starter").checkout())
    engine.apply(other.subscription("starter").checkout())
    (link,) = db.execute(
        "select user_id from tally.customers where customer_id = %s", (buyer.customer_id,)
    ).fetchall()
    assert str(link["user_id"]) == buyer.user_id


def test_a_refund_of_a_payment_tally_does_not_know_is_parked_on_its_payment_intent(
    engine, db, buyer
):
    payment_intent_id = te.new_id("pi")
    refund = te.charge_refunded(
        customer_id=te.new_id("cus"),
        payment_intent_id=payment_intent_id,
        metadata_user_id=buyer.user_id,
        amount=900,
        amount_refunded=900,
    )
    assert engine.apply(refund)["status"] == "parked"
    stored = engine.stored_event(refund["id"])
    assert stored["waiting_on"] == f"payment_intent:{payment_intent_id}"
    assert "payment intent" not in stored["reason"] or "customer" not in stored["reason"]
    assert engine.ledger(buyer.user_id, "subscription_refund") == []


def test_subscription_naming_a_user_that_does_not_exist_is_rejected(engine):
    ghost = te.Buyer.new(uuid.uuid4())
    event = ghost.subscription("starter").invoice_paid(period=0)
    assert engine.apply(event)["status"] == "rejected"
    assert "user" in engine.stored_event(event["id"])["reason"]


def test_a_retried_event_keeps_its_first_receipt_time(engine, db, buyer):
    price = unknown_price()
    event = buyer.pack_purchase("pack_500").completed(metadata_price_id=price)
    engine.apply(event)
    received_at = engine.stored_event(event["id"])["received_at"]
    add_pack(db, price, 50)
    engine.retry_rejected()
    stored = engine.stored_event(event["id"])
    assert (stored["outcome"], stored["received_at"]) == ("applied", received_at)
