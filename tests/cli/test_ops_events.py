"""`tally ops events | retry | apply-ready | backlog` against the real engine."""

from __future__ import annotations

import json

from psycopg.types.json import Jsonb

from sidecar import events
from tally import stripe_events as se
from tests.cli.conftest import account, apply_event, outcome_of
from tests.conftest import create_user
from tests.sidecar.conftest import PACKS, PLANS, world

PACK_PRICE, PACK_CREDITS = PACKS["pack_500"]
STARTER_PRICE, STARTER_CREDITS = PLANS["starter"]
SIGNUP = 500


def apply_typed(db, typed: dict) -> str:
    with db.transaction():
        db.execute("set local role service_role")
        row = db.execute("select public.apply_stripe_event(%s) as r", (Jsonb(typed),)).fetchone()
    return row["r"]["status"]


def rejected_by_an_older_normaliser(db, event: dict) -> None:
    """Stored as an older sidecar would have: it could not read the object."""
    typed = events.normalise(events.read_envelope(event))
    typed.pop("checkout_session")
    typed["problem"] = "data.object.metadata could not be read (by an older sidecar)"
    assert apply_typed(db, typed) == "rejected"


def pack_event(user_id, *, price: str = PACK_PRICE, w: se.StripeWorld | None = None) -> dict:
    w = w or world()
    return w.buy_pack(w.customer(user_id=str(user_id)), price)[1][-1]


async def test_events_name_who_found_the_reason(run_ops, db):
    user_id, w = create_user(db), world()
    other_mode = pack_event(user_id, w=w)
    other_mode["livemode"] = True
    apply_event(db, other_mode)  # read with a test-mode key
    unknown = pack_event(user_id, price="price_pack_unknown", w=w)
    apply_event(db, unknown)
    listed = json.loads((await run_ops("events", "--json")).out)
    found_by = {e["event_id"]: (e["found_by"], e["reason"]) for e in listed}
    assert found_by[other_mode["id"]][0] == "sidecar"
    assert "live-mode event" in found_by[other_mode["id"]][1]
    assert found_by[unknown["id"]][0] == "database"
    assert "unknown price price_pack_unknown" in found_by[unknown["id"]][1]


async def test_events_lists_through_postgrest_too(run_ops, postgrest_env, db):
    apply_event(db, pack_event(create_user(db), price="price_pack_unknown"))
    ran = await run_ops("events", "--outcome", "rejected", env=postgrest_env)
    assert ran.code == 0, ran.err
    assert "unknown price price_pack_unknown" in ran.out


async def test_retry_reads_the_raw_payload_again_with_the_current_normaliser(run_ops, db):
    user_id = create_user(db)
    event = pack_event(user_id)
    rejected_by_an_older_normaliser(db, event)
    ran = await run_ops("retry", "--json")
    assert ran.code == 0
    [result] = json.loads(ran.out)["results"]
    assert (result["event_id"], result["how"], result["outcome"]) == (
        event["id"], "read again", "applied",
    )  # fmt: skip
    assert account(db, user_id) == (SIGNUP, PACK_CREDITS)


async def test_retry_fetches_the_lines_an_invoice_did_not_embed(run_ops, fake_stripe, db):
    user_id = create_user(db)
    w = world()
    sub, out = w.subscribe(w.customer(user_id=str(user_id)), STARTER_PRICE)
    paid = next(e for e in out if e["type"] == "invoice.paid")
    invoice = paid["data"]["object"]
    plan_line = invoice["lines"]["data"][0]
    metered = se.invoice_line(
        layout="basil", id="il_metered", invoice=invoice["id"],
        price_obj=w.price_object("price_metered_calls"), amount=0,
        period_start=plan_line["period"]["start"], period_end=plan_line["period"]["end"],
        subscription=sub.id, subscription_item="si_metered",
    )  # fmt: skip
    paid["data"]["object"] = fake_stripe.add_invoice(invoice, [metered, plan_line], embedded=1)
    assert apply_event(db, paid)["status"] == "rejected"  # read without its second line
    ran = await run_ops("retry")
    assert ran.code == 0
    assert outcome_of(db, paid["id"]) == "applied"
    assert account(db, user_id) == (STARTER_CREDITS, 0)
    assert "1 retried: 1 applied" in ran.out


async def test_retry_without_a_stripe_key_retries_the_stored_reading(run_ops, ops_env, db):
    event = pack_event(create_user(db))
    rejected_by_an_older_normaliser(db, event)
    env = {k: v for k, v in ops_env.items() if k != "STRIPE_SECRET_KEY"}
    ran = await run_ops("retry", env=env)
    assert ran.code == 0
    assert "as stored" in ran.out
    assert "STRIPE_SECRET_KEY is not set" in ran.out
    assert outcome_of(db, event["id"]) == "rejected"


async def test_retry_keeps_an_event_whose_stored_copy_is_not_what_stripe_signed(run_ops, db):
    user_id = create_user(db)
    event = pack_event(user_id)
    event["data"]["object"]["metadata"]["note"] = "a\u0000b"
    envelope = events.read_body(se.encode(event))
    assert apply_typed(db, events.normalise(envelope)) == "rejected"
    ran = await run_ops("retry", "--json")
    [result] = json.loads(ran.out)["results"]
    assert (result["how"], result["outcome"]) == ("as stored", "rejected")
    assert account(db, user_id) == (SIGNUP, 0)


async def test_apply_ready_applies_what_a_link_left_for_later(run_ops, db):
    user_id = create_user(db)
    w = world()
    customer = w.customer()  # no user id anywhere: parked on the customer
    packs = [w.buy_pack(customer, PACK_PRICE, client_reference_id=False)[1][-1] for _ in range(53)]
    for event in packs:
        assert apply_event(db, event)["status"] == "parked"
    with db.transaction():
        db.execute("set local role service_role")
        db.execute("select public.link_stripe_customer(%s, %s)", (user_id, customer.id))
    linked = account(db, user_id)[1] // PACK_CREDITS
    assert linked < 53  # one transaction applies a batch; the rest are ready
    ran = await run_ops("apply-ready", "--json")
    assert json.loads(ran.out) == {"applied": 53 - linked, "batches": 1}
    assert account(db, user_id) == (SIGNUP, 53 * PACK_CREDITS)


async def test_backlog_counts_balance_events_waiting_for_delivery(run_ops, db):
    create_user(db)
    ran = await run_ops("backlog", "--json")
    assert ran.code == 0
    assert set(json.loads(ran.out)) == {"pending", "failing", "oldest_seconds"}
