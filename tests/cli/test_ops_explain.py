"""`tally ops explain <user-id>`: a balance told as a story, from the real ledger."""

from __future__ import annotations

import json

from tests.cli.conftest import apply_event
from tests.conftest import create_user
from tests.sidecar.conftest import PACKS, PLANS, world

STARTER_PRICE, STARTER_CREDITS = PLANS["starter"]
PACK_PRICE, PACK_CREDITS = PACKS["pack_500"]


def as_service_role(db, sql: str, *params: object) -> None:
    with db.transaction():
        db.execute("set local role service_role")
        db.execute(sql, params)


def a_customers_life(db) -> tuple[str, dict]:
    """Sign-up, a Starter period, a spend, a pack, a hold, and a pack of an unknown price."""
    user_id = create_user(db)
    w = world()
    customer = w.customer(user_id=str(user_id))
    _, out = w.subscribe(customer, STARTER_PRICE)
    for event in out:
        apply_event(db, event)
    as_service_role(db, "select public.spend_credits(%s, 300, 'job-1', 'outreach lines')", user_id)
    _, out = w.buy_pack(customer, PACK_PRICE)
    apply_event(db, out[-1])
    as_service_role(db, "select public.reserve_credits(%s, 100, 'job-2')", user_id)
    _, out = w.buy_pack(customer, "price_pack_unknown")
    assert apply_event(db, out[-1])["status"] == "rejected"
    invoice = next(e for e in w.sent if e["type"] == "invoice.paid")["data"]["object"]
    return str(user_id), {"invoice": invoice["id"], "rejected": out[-1]["id"]}


def ledger_rows(out: str) -> list[list[str]]:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("#  ")) + 2
    rows = []
    for line in lines[start:]:
        if not line.strip():
            break
        rows.append(line.split())
    return rows


async def test_explain_tells_each_entry_oldest_first_with_the_running_balance(run_ops, db):
    user_id, ids = a_customers_life(db)
    ran = await run_ops("explain", user_id)
    assert ran.code == 0
    rows = ledger_rows(ran.out)
    assert [row[3] for row in rows] == ["signup", "subscription_period", "spend", "addon_purchase"]
    assert [int(row[6]) for row in rows] == [500, 1000, 700, 1200]
    assert rows[1][7] == ids["invoice"]
    assert "Spent 300 credits: outreach lines" in ran.out


async def test_explain_ends_with_the_balance_now_its_holds_and_what_was_refused(run_ops, db):
    user_id, ids = a_customers_life(db)
    out = (await run_ops("explain", user_id)).out
    assert "now: 1200 credits (plan 700, add-on 500); 100 held, 1100 available" in out
    assert "plan starter, subscription active" in out
    assert "  job-2: 100 until" in out
    assert f"  {ids['rejected']} (checkout.session.completed) rejected: unknown price" in out


async def test_explain_with_a_limit_says_what_came_before(run_ops, db):
    user_id, _ = a_customers_life(db)
    out = (await run_ops("explain", user_id, "--limit", "2")).out
    assert "(2 earlier entries not shown; balance 1000)" in out
    assert [row[0] for row in ledger_rows(out)] == ["3", "4"]


async def test_explain_json_carries_the_ledger_and_the_balance(run_ops, db):
    user_id, _ = a_customers_life(db)
    story = json.loads((await run_ops("explain", user_id, "--json")).out)
    assert story["balance"]["available_credits"] == 1100
    assert sum(e["plan_delta"] + e["addon_delta"] for e in story["entries"]) == 1200


async def test_explain_of_an_unknown_user_is_one_line_and_status_2(run_ops):
    ran = await run_ops("explain", "00000000-0000-4000-8000-000000000000")
    assert ran.code == 2
    assert ran.err.strip() == (
        "ops explain: no user 00000000-0000-4000-8000-000000000000"
        " (no row in auth.users, no account)"
    )


async def test_explain_through_postgrest(run_ops, postgrest_env, db):
    user_id, _ = a_customers_life(db)
    ran = await run_ops("explain", user_id, env=postgrest_env)
    assert ran.code == 0, ran.err
    assert len(ledger_rows(ran.out)) == 4
