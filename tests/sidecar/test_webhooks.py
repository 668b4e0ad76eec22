"""POST /webhooks/stripe through the real app into the real engine."""

from __future__ import annotations

import asyncio
import io
import random
import time

import pytest

from sidecar import salvage
from tally import stripe_events as se
from tests.sidecar.conftest import (
    PACKS,
    PLANS,
    PRICES,
    ROLLED_SECRET,
    SIGNUP_CREDITS,
    WEBHOOK_SECRET,
    balance,
    credits,
    deliver,
    deliver_all,
    stored_events,
    stored_outcome,
    world,
)

STARTER_PRICE, STARTER_CREDITS = PLANS["starter"]
PRO_PRICE, PRO_CREDITS = PLANS["pro"]
PACK_PRICE, PACK_CREDITS = PACKS["pack_500"]


@pytest.fixture
def event():
    w = world()
    _, out = w.buy_pack(w.customer(user_id="4f1d7c1e-0000-4000-8000-000000000001"), PACK_PRICE)
    return out[-1]


async def post_raw(client, body: bytes | io.BytesIO, headers: dict[str, str]):
    response = await client.post("/webhooks/stripe", data=body, headers=headers)
    return response.status, await response.json()


# -- signatures over HTTP ------------------------------------------------------------------


async def test_accepts_a_validly_signed_event(sidecar, event):
    status, answer = await deliver(sidecar, event)
    assert status == 200
    assert answer["event_id"] == event["id"]


async def test_accepts_the_second_of_two_rolled_secrets(sidecar, event, db):
    status, _ = await deliver(sidecar, event, secret=ROLLED_SECRET)
    assert status == 200
    assert stored_events(db) == 1


async def test_rejects_a_wrong_secret_and_stores_nothing(sidecar, event, db):
    status, answer = await deliver(sidecar, event, secret="whsec_attacker")
    assert (status, answer) == (400, {"error": "no valid v1 signature for this payload"})
    assert stored_events(db) == 0


async def test_rejects_stale_timestamp(sidecar, event, db):
    status, answer = await deliver(sidecar, event, timestamp=int(time.time()) - 301)
    assert (status, answer["error"]) == (400, "timestamp outside the tolerance zone")
    assert stored_events(db) == 0


async def test_rejects_v0_only_signature(sidecar, event, db):
    body = se.encode(event)
    header = se.sign(body, WEBHOOK_SECRET, scheme="v0")
    status, answer = await post_raw(sidecar, body, {"Stripe-Signature": header})
    assert (status, answer["error"]) == (400, "Stripe-Signature header has no v1 signature")
    assert stored_events(db) == 0


async def test_rejects_malformed_signature_header(sidecar, event, db):
    status, answer = await post_raw(sidecar, se.encode(event), {"Stripe-Signature": "nonsense"})
    assert (status, answer["error"]) == (400, "malformed Stripe-Signature header")
    assert stored_events(db) == 0


async def test_a_400_digit_timestamp_is_a_400_not_a_500(sidecar, event, db):
    body, _ = se.signed_request(event, WEBHOOK_SECRET)
    header = f"t={'9' * 400},v1={'0' * 64}"
    response = await sidecar.post(
        "/webhooks/stripe", data=body, headers={"Stripe-Signature": header}
    )
    assert response.status == 400
    assert stored_events(db) == 0


async def test_rejects_missing_signature_header(sidecar, event, db):
    status, answer = await post_raw(sidecar, se.encode(event), {})
    assert (status, answer["error"]) == (400, "missing Stripe-Signature header")
    assert stored_events(db) == 0


async def test_rejects_body_changed_by_one_byte(sidecar, event, db):
    body, headers = se.signed_request(event, WEBHOOK_SECRET)
    changed = body.replace(b'"livemode": false', b'"livemode": falsE', 1)
    assert len(changed) == len(body) and changed != body
    status, _ = await post_raw(sidecar, changed, headers)
    assert status == 400
    assert stored_events(db) == 0


async def test_rejects_oversize_body_with_413(sidecar, event, db):
    event["data"]["object"]["metadata"]["padding"] = "x" * (1024 * 1024)
    body, headers = se.signed_request(event, WEBHOOK_SECRET)
    status, answer = await post_raw(sidecar, io.BytesIO(body), headers)
    assert (status, answer["error"]) == (413, "body larger than 1 MiB")
    assert stored_events(db) == 0


async def test_rejects_oversize_chunked_body_with_413(sidecar):
    async def chunks():
        for _ in range(20):
            yield b"x" * 65536

    response = await sidecar.post("/webhooks/stripe", data=chunks())
    assert response.status == 413


async def test_signed_garbage_is_a_400_and_stores_nothing(sidecar, db):
    body = b'{"hello": "world"}'
    status, answer = await post_raw(
        sidecar, body, {"Stripe-Signature": se.sign(body, WEBHOOK_SECRET)}
    )
    assert (status, answer["error"]) == (400, "id is missing")
    assert stored_events(db) == 0


# -- outcomes ------------------------------------------------------------------------------


async def test_unhandled_type_is_ignored_without_touching_the_database(sidecar, db):
    event = world().unhandled("customer.updated")
    status, answer = await deliver(sidecar, event)
    assert (status, answer) == (200, {"status": "ignored", "event_id": event["id"]})
    assert stored_events(db) == 0


async def test_redelivery_is_a_duplicate_and_grants_once(sidecar, db, make_user):
    user = make_user()
    w = world()
    _, out = w.buy_pack(w.customer(user_id=str(user)), PACK_PRICE)
    assert await deliver_all(sidecar, out + out) == ["applied", "duplicate"]
    assert credits(db, user) == (SIGNUP_CREDITS, PACK_CREDITS)


async def test_concurrent_deliveries_of_one_event_apply_it_once(sidecar, db, make_user):
    user = make_user()
    w = world()
    _, out = w.buy_pack(w.customer(user_id=str(user)), PACK_PRICE)
    answers = await asyncio.gather(*(deliver(sidecar, out[-1]) for _ in range(8)))
    assert sorted(answer["status"] for _, answer in answers) == ["applied"] + ["duplicate"] * 7
    assert credits(db, user) == (SIGNUP_CREDITS, PACK_CREDITS)


async def test_twin_event_for_the_same_session_grants_once(sidecar, db, make_user):
    user = make_user()
    w = world()
    _, out = w.buy_pack(w.customer(user_id=str(user)), PACK_PRICE)
    await deliver_all(sidecar, [out[-1], w.twin(out[-1])])
    assert credits(db, user) == (SIGNUP_CREDITS, PACK_CREDITS)


async def test_unknown_user_is_rejected_with_its_reason(sidecar, db):
    w = world()
    _, out = w.buy_pack(w.customer(user_id="4f1d7c1e-0000-4000-8000-00000000dead"), PACK_PRICE)
    status, answer = await deliver(sidecar, out[-1])
    assert (status, answer["status"]) == (200, "rejected")
    assert answer["reason"]
    assert stored_outcome(db, out[-1]["id"]) == "rejected"


async def test_pack_session_without_price_metadata_is_rejected(sidecar, db, make_user):
    user = make_user()
    w = world()
    _, out = w.buy_pack(w.customer(user_id=str(user)), PACK_PRICE, price_id_in_metadata=False)
    assert await deliver_all(sidecar, out) == ["rejected"]
    assert credits(db, user) == (SIGNUP_CREDITS, 0)


async def test_event_without_user_hint_is_parked_then_applied_on_link(sidecar, db, make_user):
    user = make_user()
    w = world()
    customer = w.customer(user_id=None)
    sub, out = w.subscribe(customer, STARTER_PRICE, via_checkout=False)
    outcomes = dict(zip([e["type"] for e in out], await deliver_all(sidecar, out), strict=True))
    # invoice_payment.paid needs no user: it only says which payment paid which invoice.
    assert outcomes.pop("invoice_payment.paid") == "applied"
    assert set(outcomes.values()) == {"parked"}
    db.execute("select public.link_stripe_customer(%s, %s)", (user, customer.id))
    assert credits(db, user) == (STARTER_CREDITS, 0)
    assert sub.id


# -- every handled type, both layouts, balances --------------------------------------------


@pytest.fixture(params=["legacy", "basil"])
def layout(request) -> se.Layout:
    return request.param


async def test_subscription_checkout_sets_plan_credits(sidecar, db, make_user, layout):
    user = make_user()
    w = world(layout)
    _, out = w.subscribe(w.customer(user_id=str(user)), STARTER_PRICE)
    types = [e["type"] for e in out]
    assert types == [
        "customer.subscription.created",
        "invoice.paid",
        *(["invoice_payment.paid"] if layout == "basil" else []),
        "checkout.session.completed",
    ]
    assert set(await deliver_all(sidecar, out)) == {"applied"}
    assert credits(db, user) == (STARTER_CREDITS, 0)


async def test_renewal_resets_plan_credits(sidecar, db, make_user, layout):
    user = make_user()
    w = world(layout)
    sub, out = w.subscribe(w.customer(user_id=str(user)), STARTER_PRICE)
    await deliver_all(sidecar, out)
    db.execute("select public.spend_credits(%s, 300, 'job-1')", (user,))
    await deliver_all(sidecar, w.renew(sub))
    assert credits(db, user) == (STARTER_CREDITS, 0)


async def test_upgrade_gives_new_allowance_minus_spent(sidecar, db, make_user, layout):
    user = make_user()
    w = world(layout)
    sub, out = w.subscribe(w.customer(user_id=str(user)), STARTER_PRICE)
    await deliver_all(sidecar, out)
    db.execute("select public.spend_credits(%s, 300, 'job-1')", (user,))
    change = w.change_plan(sub, PRO_PRICE, invoice_now=True)
    await deliver_all(sidecar, change)
    assert credits(db, user) == (STARTER_CREDITS + upgrade_share(change) - 300, 0)


async def test_an_upgrade_without_its_paid_invoice_adds_nothing(sidecar, db, make_user, layout):
    user = make_user()
    w = world(layout)
    sub, out = w.subscribe(w.customer(user_id=str(user)), STARTER_PRICE)
    await deliver_all(sidecar, out + w.change_plan(sub, PRO_PRICE))
    assert credits(db, user) == (STARTER_CREDITS, 0)
    assert balance(db, user)["plan_key"] == "pro"


async def test_failed_invoice_grants_nothing_until_paid(sidecar, db, make_user, layout):
    user = make_user()
    w = world(layout)
    sub, out = w.subscribe(w.customer(user_id=str(user)), STARTER_PRICE)
    await deliver_all(sidecar, out)
    db.execute("select public.spend_credits(%s, 100, 'job-1')", (user,))
    await deliver_all(sidecar, w.fail_renewal(sub))
    assert credits(db, user) == (STARTER_CREDITS - 100, 0)
    assert balance_status(db, user) == "past_due"
    await deliver_all(sidecar, w.retry_payment(sub))
    assert credits(db, user) == (STARTER_CREDITS, 0)
    assert balance_status(db, user) == "active"


async def test_pack_purchase_adds_addon_credits(sidecar, db, make_user, layout):
    user = make_user()
    w = world(layout)
    _, out = w.buy_pack(w.customer(user_id=str(user)), PACK_PRICE)
    assert await deliver_all(sidecar, out) == ["applied"]
    assert credits(db, user) == (SIGNUP_CREDITS, PACK_CREDITS)


async def test_async_pack_grants_only_when_payment_succeeds(sidecar, db, make_user, layout):
    user = make_user()
    w = world(layout)
    pack, out = w.buy_pack(w.customer(user_id=str(user)), PACK_PRICE, asynchronous=True)
    await deliver_all(sidecar, out)
    assert credits(db, user) == (SIGNUP_CREDITS, 0)
    await deliver_all(sidecar, w.settle(pack))
    assert credits(db, user) == (SIGNUP_CREDITS, PACK_CREDITS)


async def test_failed_async_pack_grants_nothing(sidecar, db, make_user, layout):
    user = make_user()
    w = world(layout)
    pack, out = w.buy_pack(w.customer(user_id=str(user)), PACK_PRICE, asynchronous=True)
    await deliver_all(sidecar, out + w.settle(pack, succeeded=False))
    assert credits(db, user) == (SIGNUP_CREDITS, 0)


async def test_partial_refund_claws_back_its_share(sidecar, db, make_user, layout):
    user = make_user()
    w = world(layout)
    pack, out = w.buy_pack(w.customer(user_id=str(user)), PACK_PRICE)
    await deliver_all(sidecar, out + w.refund(pack, 300))
    clawed = round(PACK_CREDITS * 300 / pack.amount)
    assert credits(db, user) == (SIGNUP_CREDITS, PACK_CREDITS - clawed)


async def test_dispute_claws_back_then_won_restores(sidecar, db, make_user, layout):
    user = make_user()
    w = world(layout)
    pack, out = w.buy_pack(w.customer(user_id=str(user)), PACK_PRICE)
    dispute, opened = w.open_dispute(pack)
    await deliver_all(sidecar, out + opened)
    assert credits(db, user) == (SIGNUP_CREDITS, 0)
    await deliver_all(sidecar, w.close_dispute(dispute, won=True))
    assert credits(db, user) == (SIGNUP_CREDITS, PACK_CREDITS)


async def test_refund_and_dispute_of_the_current_periods_invoice_take_its_credits_back(
    sidecar, db, make_user, layout
):
    user = make_user()
    w = world(layout)
    sub, out = w.subscribe(w.customer(user_id=str(user)), STARTER_PRICE)
    await deliver_all(sidecar, out)
    await deliver_all(sidecar, w.refund(sub, 500))
    paid = w.prices[STARTER_PRICE]
    refunded = round(STARTER_CREDITS * 500 / paid)
    assert credits(db, user) == (STARTER_CREDITS - refunded, 0)
    _, opened = w.open_dispute(sub)
    await deliver_all(sidecar, opened)
    assert credits(db, user) == (0, 0)  # the dispute takes what the refund left
    assert db.execute("select * from tally.operator_reviews").fetchall() == []


async def test_a_refund_of_an_older_periods_invoice_is_listed_for_the_operator(
    sidecar, db, make_user, layout
):
    user = make_user()
    w = world(layout)
    sub, out = w.subscribe(w.customer(user_id=str(user)), STARTER_PRICE)
    first_payment = sub.payments[0]
    await deliver_all(sidecar, out + w.renew(sub))
    await deliver_all(sidecar, w.refund(first_payment, 500))
    assert credits(db, user) == (STARTER_CREDITS, 0)
    reviews = db.execute("select kind, object_id from tally.operator_reviews").fetchall()
    assert [(r["kind"], r["object_id"]) for r in reviews] == [
        ("subscription_refund", first_payment.charge_id)
    ]


async def test_cancellation_keeps_credits_and_ends_the_subscription(sidecar, db, make_user, layout):
    user = make_user()
    w = world(layout)
    sub, out = w.subscribe(w.customer(user_id=str(user)), STARTER_PRICE)
    await deliver_all(sidecar, out + w.cancel(sub) + w.end_of_period(sub))
    assert credits(db, user) == (STARTER_CREDITS, 0)
    assert balance_status(db, user) == "canceled"


async def test_invoice_before_checkout_and_created_gives_the_same_result(
    sidecar, db, make_user, layout
):
    user = make_user()
    w = world(layout)
    _, out = w.subscribe(w.customer(user_id=str(user)), STARTER_PRICE)
    await deliver_all(sidecar, list(reversed(out)))
    assert credits(db, user) == (STARTER_CREDITS, 0)


def balance_status(db, user) -> str | None:
    row = db.execute(
        "select subscription_status from public.credit_balances where user_id = %s", (user,)
    ).fetchone()
    return row["subscription_status"]


def is_upgrade_invoice(event: dict) -> bool:
    obj = event["data"]["object"]
    return event["type"] == "invoice.paid" and obj["billing_reason"] == "subscription_update"


def upgrade_share(events: list[dict]) -> int:
    """What the paid upgrade invoice among `events` pays for (docs/policy.md): the plans'
    difference times the share of the month its proration lines cover, rounded down."""
    invoice = next(e for e in events if is_upgrade_invoice(e))["data"]["object"]
    period = invoice["lines"]["data"][-1]["period"]
    return (PRO_CREDITS - STARTER_CREDITS) * (period["end"] - period["start"]) // se.MONTH


def life(user, layout: se.Layout, seed: int) -> list[dict]:
    """A customer's life in events: subscribe, renew, upgrade, pack, refund, dispute, cancel."""
    w = world(layout)
    w.ids = se.Ids(seed)
    customer = w.customer(user_id=str(user))
    sub, out = w.subscribe(customer, STARTER_PRICE)
    out += w.renew(sub) + w.change_plan(sub, PRO_PRICE, invoice_now=True)
    pack, more = w.buy_pack(customer, PACK_PRICE)
    dispute, opened = w.open_dispute(pack)
    out += more + w.refund(pack, 300) + opened + w.close_dispute(dispute, won=True)
    return out + w.cancel(sub) + w.end_of_period(sub)


async def test_any_delivery_order_with_duplicates_ends_in_the_same_balance(
    sidecar, db, make_user, layout
):
    in_order = make_user()
    await deliver_all(sidecar, life(in_order, layout, seed=0))
    expected = credits(db, in_order)
    upgrade = next(e for e in life(in_order, layout, seed=0) if is_upgrade_invoice(e))
    assert expected == (
        STARTER_CREDITS + upgrade_share([upgrade]),
        PACK_CREDITS - round(PACK_CREDITS * 300 / PRICES[PACK_PRICE]),
    )
    rng = random.Random(7)
    for seed in (1, 2, 3):
        user = make_user()
        events = life(user, layout, seed)
        shuffled = events + rng.sample(events, 4)
        rng.shuffle(shuffled)
        await deliver_all(sidecar, shuffled)
        assert credits(db, user) == expected, seed


async def test_zero_amount_invoice_counts_as_paid(make_sidecar, db, make_user, layout):
    client = await make_sidecar()
    user = make_user()
    w = world(layout)
    w.prices[STARTER_PRICE] = 0  # a 100% coupon or a trial
    _, out = w.subscribe(w.customer(user_id=str(user)), STARTER_PRICE)
    invoice = next(e for e in out if e["type"] == "invoice.paid")["data"]["object"]
    assert invoice["amount_paid"] == 0
    await deliver_all(client, out)
    assert credits(db, user) == (STARTER_CREDITS, 0)


# An upgrade and its undo in the same second (A->B->A) are symmetric in their
# previous_attributes: only the state before that second can order them.
@pytest.mark.parametrize("arrival", ["in_order", "reversed"])
async def test_same_second_upgrade_and_undo_end_on_the_undo(
    sidecar, db, make_user, layout, arrival
):
    user = make_user()
    w = world(layout)
    sub, out = w.subscribe(w.customer(user_id=str(user)), STARTER_PRICE)
    await deliver_all(sidecar, out)
    (up,) = w.change_plan(sub, PRO_PRICE)
    (down,) = w.change_plan(sub, STARTER_PRICE, same_second=True)
    assert up["created"] == down["created"]
    await deliver_all(sidecar, [up, down] if arrival == "in_order" else [down, up])
    row = balance(db, user)
    assert (row["plan_key"], row["plan_credits"]) == ("starter", STARTER_CREDITS)


async def test_same_second_status_changes_resolve_by_previous_attributes(
    sidecar, db, make_user, layout
):
    user = make_user()
    w = world(layout)
    sub, out = w.subscribe(w.customer(user_id=str(user)), STARTER_PRICE)
    await deliver_all(sidecar, out)
    (up,) = w.change_plan(sub, PRO_PRICE)
    (scheduled,) = w.cancel(sub)
    scheduled["created"] = up["created"]  # Stripe's clock has one-second resolution
    await deliver_all(sidecar, [scheduled, up])
    row = balance(db, user)
    # The upgrade was not paid (no invoice yet): the plan shows, no credits come.
    assert (row["plan_key"], row["plan_credits"]) == ("pro", STARTER_CREDITS)


async def test_a_stale_update_never_reactivates_a_canceled_subscription(
    sidecar, db, make_user, layout
):
    user = make_user()
    w = world(layout)
    sub, out = w.subscribe(w.customer(user_id=str(user)), STARTER_PRICE)
    stale = w.cancel(sub)  # an update while still active
    deleted = w.end_of_period(sub)
    await deliver_all(sidecar, out + deleted + stale)
    assert balance(db, user)["subscription_status"] == "canceled"


# -- signed events the normaliser cannot take whole: kept, never a 400 ----------------------


def signed_body_with(event: dict, extra: bytes) -> tuple[bytes, dict[str, str]]:
    """The event's JSON with ``extra`` (raw JSON text, ``"key": value``) first in it, signed."""
    body = b"{" + extra + b", " + se.encode(event)[1:]
    return body, {"Stripe-Signature": se.sign(body, WEBHOOK_SECRET)}


def stored_row(db, event_id: str) -> dict | None:
    """The stored event, its raw payload as PostgreSQL's text (Python's json would cap it)."""
    return db.execute(
        "select outcome::text, reason, raw::text as raw, raw ->> 'id' as raw_id"
        " from tally.stripe_events where event_id = %s",
        (event_id,),
    ).fetchone()


async def test_numbers_beyond_64_bits_and_beyond_a_double_are_stored_exactly_and_answered_200(
    any_sidecar, db, make_user, event
):
    event["data"]["object"]["client_reference_id"] = str(make_user())
    body, headers = signed_body_with(
        event, b'"x1": 1180591620717411303424, "x2": 1e400, "x3": 1.5e-400'
    )
    status, answer = await post_raw(any_sidecar, body, headers)
    assert (status, answer["status"]) == (200, "applied"), answer
    row = stored_row(db, event["id"])
    assert row["outcome"] == "applied"
    assert '"x1": 1180591620717411303424' in row["raw"]
    assert '"x2": 1' + "0" * 400 in row["raw"]  # 1e400, every digit (jsonb writes it out)
    assert '"x3": 0.' + "0" * 399 + "15" in row["raw"]  # not rounded to 0.0


async def test_an_integer_of_5000_digits_is_valid_json_and_the_event_is_kept(
    any_sidecar, db, make_user, event
):
    event["data"]["object"]["client_reference_id"] = str(make_user())
    body, headers = signed_body_with(event, b'"x1": ' + b"9" * 5000)
    status, answer = await post_raw(any_sidecar, body, headers)
    assert (status, answer["status"]) == (200, "applied"), answer
    row = stored_row(db, event["id"])
    assert '"x1": ' + "9" * 5000 in row["raw"]


async def test_a_number_beyond_what_the_database_stores_is_kept_as_text_and_rejected(
    any_sidecar, db, event
):
    body, headers = signed_body_with(event, b'"x1": 1e999999, "x2": -1e400')
    status, answer = await post_raw(any_sidecar, body, headers)
    assert (status, answer["status"]) == (200, "rejected"), answer
    assert answer["reason"] == salvage.NUMBER_PROBLEM
    row = stored_row(db, event["id"])
    assert (row["outcome"], row["reason"]) == ("rejected", salvage.NUMBER_PROBLEM)
    assert '"x1": "1e999999"' in row["raw"] and '"x2": -1' + "0" * 400 in row["raw"]


async def test_an_event_id_over_1000_characters_is_stored_rejected_under_a_derived_id(
    any_sidecar, db, event
):
    long_id = "evt_" + "a" * 1200
    event["id"] = long_id
    body, headers = se.signed_request(event, WEBHOOK_SECRET)
    status, answer = await post_raw(any_sidecar, body, headers)
    stored_id = salvage.long_id(long_id)
    assert len(stored_id) < 200 and stored_id.startswith("evt_aaa")
    assert (status, answer["status"], answer["event_id"]) == (200, "rejected", stored_id)
    assert "longer than 1000 characters" in answer["reason"]
    assert "the full id is in the raw payload" in answer["reason"]
    row = stored_row(db, stored_id)
    assert (row["outcome"], row["raw_id"]) == ("rejected", long_id)
    status, again = await post_raw(any_sidecar, body, headers)  # Stripe's retry: the same record
    assert (status, again["status"], again["event_id"]) == (200, "duplicate", stored_id)


async def test_a_body_nested_deeper_than_64_levels_is_stored_rejected_as_received(
    any_sidecar, db, event
):
    body, headers = signed_body_with(event, b'"extra": ' + b"[" * 80 + b"]" * 80)
    status, answer = await post_raw(any_sidecar, body, headers)
    assert (status, answer["status"]) == (200, "rejected"), answer
    assert answer["reason"] == salvage.DEEP_PROBLEM
    assert "nested deeper than 64 levels" in answer["reason"]
    row = stored_row(db, event["id"])
    assert row["outcome"] == "rejected"
    assert '"extra": ' + "[" * 80 + "]" * 80 in row["raw"]


async def test_a_body_nested_beyond_what_pythons_parser_reads_stays_a_400(sidecar, db, event):
    body, headers = signed_body_with(event, b'"extra": ' + b"[" * 5000 + b"]" * 5000)
    status, answer = await post_raw(sidecar, body, headers)
    assert (status, answer) == (400, {"error": "body is nested too deeply"})
    assert stored_events(db) == 0


async def test_a_signed_body_that_is_no_event_stays_a_400_whatever_it_holds(sidecar, db):
    body = b'{"id": "evt_1", "type": "invoice.paid", "x": ' + b"9" * 5000 + b"}"
    status, answer = await post_raw(
        sidecar, body, {"Stripe-Signature": se.sign(body, WEBHOOK_SECRET)}
    )
    assert (status, answer) == (400, {"error": "body is not valid JSON"})
    assert stored_events(db) == 0
