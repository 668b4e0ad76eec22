"""What the webhook does with events it must read harder or cannot read at all.

An invoice whose lines fill more than the first page is read whole (the
sidecar fetches every page from Stripe; 503 while Stripe is away, so Stripe
retries). A signed Stripe event is never answered 400: what cannot be read
(a value out of range, an old shape, another livemode) is stored as
rejected with its reason and raw payload, answered 200 (docs/events.md,
rule 7).
"""

from __future__ import annotations

import copy
import json

import pytest

from tally import stripe_events as se
from tests.sidecar.conftest import (
    PLANS,
    WEBHOOK_SECRET,
    credits,
    deliver,
    stored_events,
    world,
)

STARTER_PRICE, STARTER_CREDITS = PLANS["starter"]
METERED = "price_metered_api_calls_fake"


def stored(db, event_id: str) -> dict:
    return db.execute(
        "select outcome, reason, raw from tally.stripe_events where event_id = %s", (event_id,)
    ).fetchone()


def renewal_with_many_lines(w: se.StripeWorld, user) -> tuple[dict, list[dict]]:
    """A paid renewal whose plan line comes after twelve metered lines."""
    customer = w.customer(user_id=str(user))
    sub, _ = w.subscribe(customer, STARTER_PRICE)
    (invoice_paid,) = [e for e in w.renew(sub) if e["type"] == "invoice.paid"]
    invoice = invoice_paid["data"]["object"]
    plan_line = invoice["lines"]["data"][-1]
    metered = []
    for n in range(12):
        line = copy.deepcopy(plan_line)
        line["id"] = f"il_metered_{n}"
        price = w.price_object(METERED)
        if "pricing" in line:
            line["pricing"]["price_details"]["price"] = price["id"]
        else:
            line["price"], line["plan"] = price, None
        line["amount"] = 1
        metered.append(line)
    every_line = [*metered, plan_line]
    return invoice_paid, every_line


@pytest.mark.parametrize("layout", ["basil", "legacy"])
async def test_a_renewal_whose_plan_line_is_on_the_second_page_is_granted(
    sidecar, db, fake_stripe, make_user, layout
):
    user = make_user()
    w = world(layout)
    event, every_line = renewal_with_many_lines(w, user)
    stored_invoice = fake_stripe.add_invoice(event["data"]["object"], every_line, embedded=10)
    event["data"]["object"] = stored_invoice  # first page only, has_more = true
    assert event["data"]["object"]["lines"]["has_more"] is True
    status, answer = await deliver(sidecar, event)
    assert (status, answer["status"]) == (200, "applied")
    assert credits(db, user) == (STARTER_CREDITS, 0)
    (fetch, *_) = fake_stripe.of_path(f"/v1/invoices/{stored_invoice['id']}/lines", method="GET")
    assert fetch.stripe_version == "2025-03-31.basil"


async def test_when_stripe_cannot_give_the_other_lines_the_answer_is_503_and_nothing_is_stored(
    sidecar, db, fake_stripe, make_user
):
    user = make_user()
    event, every_line = renewal_with_many_lines(world(), user)
    event["data"]["object"] = fake_stripe.add_invoice(event["data"]["object"], every_line, 10)
    fake_stripe.fail_next(10, "500")
    status, answer = await deliver(sidecar, event)
    assert status == 503 and "retry" in answer["error"]
    assert stored(db, event["id"]) is None
    fake_stripe.heal()
    status, answer = await deliver(sidecar, event)  # Stripe's retry
    assert (status, answer["status"]) == (200, "applied")


async def test_an_invoice_of_the_other_livemode_with_more_lines_is_rejected_without_asking(
    sidecar, db, fake_stripe, make_user
):
    user = make_user()
    event, _ = renewal_with_many_lines(world(), user)
    event["livemode"] = event["data"]["object"]["livemode"] = True  # the key is sk_test_...
    event["data"]["object"]["lines"]["has_more"] = True  # an invoice this key cannot see
    status, answer = await deliver(sidecar, event)
    assert (status, answer["status"]) == (200, "rejected")
    assert "live-mode event" in answer["reason"]
    assert fake_stripe.of_path(f"/v1/invoices/{event['data']['object']['id']}/lines") == []
    assert stored(db, event["id"])["raw"] == event


async def test_when_stripe_refuses_to_list_the_lines_the_event_is_kept_as_rejected(
    sidecar, db, fake_stripe, make_user
):
    user = make_user()
    event, _ = renewal_with_many_lines(world(), user)
    event["data"]["object"]["lines"]["has_more"] = True  # the stand-in has no such invoice: 404
    status, answer = await deliver(sidecar, event)
    assert (status, answer["status"]) == (200, "rejected")
    assert answer["reason"].startswith(
        "Stripe refused to list the invoice's lines (HTTP 404: resource_missing)"
    )
    assert stored(db, event["id"]) == {
        "outcome": "rejected",
        "reason": answer["reason"],
        "raw": event,
    }


async def test_an_event_of_the_other_livemode_is_kept_as_rejected(sidecar, db, make_user):
    w = world()
    _, out = w.buy_pack(w.customer(user_id=str(make_user())), se.StripeWorld().price_object(
        "price_pack_500_fake")["id"])  # fmt: skip
    event = out[-1]
    event["livemode"] = True  # the tests' key is sk_test_...
    status, answer = await deliver(sidecar, event)
    assert (status, answer["status"]) == (200, "rejected")
    assert "live-mode event" in answer["reason"] and "test-mode key" in answer["reason"]
    assert stored(db, event["id"])["raw"] == event


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("amount_paid", 2**63, "data.object.amount_paid is out of range"),
        ("amount_paid", "nine", "data.object.amount_paid must be an integer"),
        ("lines", {"data": "not a list"}, "data.object.lines.data must be an array"),
    ],
)
async def test_a_signed_event_that_cannot_be_read_is_kept_not_refused(
    sidecar, db, make_user, field, value, reason
):
    w = world()
    _, out = w.subscribe(w.customer(user_id=str(make_user())), STARTER_PRICE)
    event = next(e for e in out if e["type"] == "invoice.paid")
    event["data"]["object"][field] = value
    status, answer = await deliver(sidecar, event)
    assert (status, answer["status"], answer["reason"]) == (200, "rejected", reason)
    assert stored(db, event["id"]) == {"outcome": "rejected", "reason": reason, "raw": event}


async def test_an_invoice_in_the_billions_is_applied(sidecar, db, make_user):
    user = make_user()
    w = world()
    w.prices[STARTER_PRICE] = 25_000_000_000_00  # Rp 25 billion, in the smallest unit
    _, out = w.subscribe(w.customer(user_id=str(user)), STARTER_PRICE)
    invoice = next(e for e in out if e["type"] == "invoice.paid")
    assert invoice["data"]["object"]["amount_paid"] > 2**31
    status, answer = await deliver(sidecar, invoice)
    assert (status, answer["status"]) == (200, "applied")
    assert credits(db, user) == (STARTER_CREDITS, 0)


async def test_an_event_without_created_is_kept_as_rejected(sidecar, db, make_user):
    w = world()
    _, out = w.subscribe(w.customer(user_id=str(make_user())), STARTER_PRICE)
    event = next(e for e in out if e["type"] == "invoice.paid")
    del event["created"]
    status, answer = await deliver(sidecar, event)
    assert (status, answer["status"]) == (200, "rejected")
    assert "created" in answer["reason"]


async def test_a_2014_invoice_with_paid_and_no_status_grants_its_period(sidecar, db, make_user):
    user = make_user()
    w = world("legacy")
    w.customer(user_id=str(user))
    _, out = w.subscribe(w.customer(user_id=str(user)), STARTER_PRICE)
    event = next(e for e in out if e["type"] == "invoice.paid")
    event["api_version"] = "2014-03-28"
    invoice = event["data"]["object"]
    for gone in ("status", "amount_paid", "amount_due", "billing_reason", "parent"):
        invoice.pop(gone, None)
    for line in invoice["lines"]["data"]:
        line.pop("price", None)  # 2014 lines name their plan only
    status, answer = await deliver(sidecar, event)
    assert (status, answer["status"]) == (200, "applied")
    assert credits(db, user) == (STARTER_CREDITS, 0)


async def test_a_body_that_is_not_a_stripe_event_is_still_refused(sidecar, db):
    before = stored_events(db)
    body = json.dumps({"id": "evt_1", "object": "event", "data": {"object": "nope"}}).encode()
    headers = {"Stripe-Signature": se.sign(body, WEBHOOK_SECRET)}
    response = await sidecar.post("/webhooks/stripe", data=body, headers=headers)
    assert response.status == 400
    assert stored_events(db) == before
