"""`tally ops reconcile --stripe`: what the stand-in says was paid against what tally recorded."""

from __future__ import annotations

import json
import time

from tally import stripe_events as se
from tests.cli.conftest import account, apply_event, outcome_of
from tests.conftest import create_user
from tests.sidecar.conftest import PACKS, PLANS, world

STARTER_PRICE, STARTER_CREDITS = PLANS["starter"]
PACK_PRICE, PACK_CREDITS = PACKS["pack_500"]
SIGNUP = 500


def subscribed_without_the_invoice(db, fake_stripe) -> tuple[str, str]:
    """A subscription whose invoice.paid never arrived; Stripe holds the paid invoice."""
    user_id = create_user(db)
    w = world()
    _, out = w.subscribe(w.customer(user_id=str(user_id)), STARTER_PRICE)
    paid = next(e for e in out if e["type"] == "invoice.paid")
    for event in out:
        if event is not paid:
            apply_event(db, event)
    fake_stripe.add_invoice(paid["data"]["object"])
    return user_id, paid["data"]["object"]["id"]


def bought_pack(db, fake_stripe, *, in_stripe: bool = True):
    user_id = create_user(db)
    w = world()
    purchase, out = w.buy_pack(w.customer(user_id=str(user_id)), PACK_PRICE)
    apply_event(db, out[-1])
    if in_stripe:
        fake_stripe.add_checkout_session(w.session_object(purchase))
    return user_id, w, purchase


def differences(ran) -> list[dict]:
    return json.loads(ran.out)["stripe"]["differences"]


async def test_the_default_is_the_ledger_check_alone_and_reads_nothing_from_stripe(
    run_ops, fake_stripe, db
):
    create_user(db)
    ran = await run_ops("reconcile")
    assert (ran.code, ran.out.strip()) == (0, "reconciled: all 1 balances equal their ledger sums")
    assert fake_stripe.requests == []


async def test_a_paid_invoice_that_never_arrived_is_missing_for_its_user(run_ops, fake_stripe, db):
    user_id, invoice_id = subscribed_without_the_invoice(db, fake_stripe)
    ran = await run_ops("reconcile", "--stripe")
    assert ran.code == 1
    assert f"user {user_id}" in ran.out
    [row] = [line for line in ran.out.splitlines() if invoice_id in line]
    assert row.split()[:3] == ["missing", "subscription", "invoice"]
    assert "nothing recorded" in row
    assert account(db, user_id) == (SIGNUP, 0)  # nothing changed without --repair


async def test_repair_grants_the_missing_period_and_a_second_reconcile_exits_0(
    run_ops, fake_stripe, db
):
    user_id, invoice_id = subscribed_without_the_invoice(db, fake_stripe)
    repaired = await run_ops("reconcile", "--stripe", "--repair", "--json")
    assert repaired.code == 0
    report = json.loads(repaired.out)["stripe"]
    assert [r["event_id"] for r in report["repairs"]] == [f"evt_reconcile_{invoice_id}"]
    assert [r["outcome"] for r in report["repairs"]] == ["applied"]
    assert report["remaining"] == []
    assert account(db, user_id) == (STARTER_CREDITS, 0)
    again = await run_ops("reconcile", "--stripe")
    assert again.code == 0
    assert "0 differ" in again.out


async def test_a_repair_and_the_late_real_delivery_grant_the_period_once(run_ops, fake_stripe, db):
    user_id, invoice_id = subscribed_without_the_invoice(db, fake_stripe)
    await run_ops("reconcile", "--stripe", "--repair")
    late = {
        "id": "evt_late_real_delivery", "object": "event", "type": "invoice.paid",
        "api_version": "2025-03-31.basil", "created": int(time.time()), "livemode": False,
        "data": {"object": fake_stripe.get("invoice", invoice_id)},
    }  # fmt: skip
    assert apply_event(db, late)["status"] == "applied"
    assert account(db, user_id) == (STARTER_CREDITS, 0)


async def test_a_grant_with_no_stripe_payment_is_extra_and_repair_leaves_it(
    run_ops, fake_stripe, db
):
    user_id, _, purchase = bought_pack(db, fake_stripe, in_stripe=False)
    ran = await run_ops("reconcile", "--stripe", "--repair", "--json")
    assert ran.code == 1
    [extra] = differences(ran)
    assert extra == {
        "status": "extra", "kind": "pack purchase", "stripe_id": purchase.session_id,
        "user_id": str(user_id), "stripe_says": "no such Checkout Session",
        "tally_says": extra["tally_says"],
    }  # fmt: skip
    assert extra["tally_says"].startswith("pack_500: 500 add-on credits (evt_")
    assert account(db, user_id) == (SIGNUP, PACK_CREDITS)


async def test_everything_delivered_matches(run_ops, fake_stripe, db):
    bought_pack(db, fake_stripe)
    ran = await run_ops("reconcile", "--stripe", "--json")
    assert ran.code == 0
    report = json.loads(ran.out)["stripe"]
    assert (report["compared"], report["matched"], report["differences"]) == (1, 1, [])


async def test_a_grant_paid_before_the_window_is_looked_up_not_called_extra(
    run_ops, fake_stripe, db
):
    _, invoice_id = subscribed_without_the_invoice(db, fake_stripe)
    invoice = fake_stripe.get("invoice", invoice_id)
    apply_event(db, {"id": "evt_old", "object": "event", "type": "invoice.paid",
                     "api_version": "2025-03-31.basil", "created": invoice["created"],
                     "livemode": False, "data": {"object": invoice}})  # fmt: skip
    invoice["created"] = int(time.time()) - 40 * 86400  # listed by Stripe only for older windows
    ran = await run_ops("reconcile", "--stripe")
    assert ran.code == 0, ran.out
    assert fake_stripe.of_path(f"/v1/invoices/{invoice_id}", "GET")


async def test_a_refund_that_never_arrived_is_missing_and_repair_claws_the_pack_back(
    run_ops, fake_stripe, db
):
    user_id, w, purchase = bought_pack(db, fake_stripe)
    w.refund(purchase, purchase.amount // 2)  # its charge.refunded is never delivered
    fake_stripe.add(w.charge_object(purchase.payment))
    for refund in purchase.payment.refunds:
        fake_stripe.add_refund(refund)
    [missing] = differences(await run_ops("reconcile", "--stripe", "--json"))
    assert (missing["status"], missing["kind"]) == ("missing", "refund")
    assert missing["stripe_id"] == purchase.payment.charge_id
    assert missing["user_id"] == str(user_id)
    assert (await run_ops("reconcile", "--stripe", "--repair")).code == 0
    assert account(db, user_id) == (SIGNUP, PACK_CREDITS // 2)
    assert (await run_ops("reconcile", "--stripe")).code == 0


async def test_a_dispute_stripe_closed_is_missing_until_repair_gives_the_credits_back(
    run_ops, fake_stripe, db
):
    user_id, w, purchase = bought_pack(db, fake_stripe)
    dispute, out = w.open_dispute(purchase)
    apply_event(db, out[-1])
    assert account(db, user_id) == (SIGNUP, 0)
    w.close_dispute(dispute, won=True)  # never delivered
    fake_stripe.add_dispute(w.dispute_object(dispute))
    [missing] = differences(await run_ops("reconcile", "--stripe", "--json"))
    won = f"dispute won: {purchase.amount} usd"
    assert (missing["kind"], missing["stripe_says"]) == ("dispute", won)
    assert missing["tally_says"] == "dispute needs_response"
    assert (await run_ops("reconcile", "--stripe", "--repair")).code == 0
    assert account(db, user_id) == (SIGNUP, PACK_CREDITS)


async def test_refunds_of_payments_tally_never_granted_for_are_not_compared(
    run_ops, fake_stripe, db
):
    w = world()
    stranger = w.customer()
    payment = w._payment(stranger, 5000)  # a charge made outside tally
    payment.amount_refunded = 5000
    fake_stripe.add(w.charge_object(payment))
    fake_stripe.add_refund(
        se.refund(id="re_outside", charge=payment.charge_id, amount=5000,
                  payment_intent=payment.payment_intent_id, created=int(time.time()))
    )  # fmt: skip
    ran = await run_ops("reconcile", "--stripe", "--json")
    assert ran.code == 0
    assert json.loads(ran.out)["stripe"]["compared"] == 0


async def test_a_missing_invoice_of_an_unknown_price_says_why_tally_has_nothing(
    run_ops, fake_stripe, db
):
    user_id = create_user(db)
    w = world()
    _, out = w.subscribe(w.customer(user_id=str(user_id)), "price_team_monthly")
    paid = next(e for e in out if e["type"] == "invoice.paid")
    assert apply_event(db, paid)["status"] == "rejected"
    fake_stripe.add_invoice(paid["data"]["object"])
    [missing] = differences(await run_ops("reconcile", "--stripe", "--json"))
    assert missing["tally_says"].startswith(f"rejected {paid['id']}: unknown price")
    assert outcome_of(db, paid["id"]) == "rejected"


async def test_reconcile_through_postgrest_finds_the_same(run_ops, postgrest_env, fake_stripe, db):
    _, invoice_id = subscribed_without_the_invoice(db, fake_stripe)
    ran = await run_ops("reconcile", "--stripe", "--json", env=postgrest_env)
    assert ran.code == 1, ran.err
    assert [d["stripe_id"] for d in differences(ran)] == [invoice_id]
