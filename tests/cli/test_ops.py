"""tally/ops: each operator job is one command against a real database."""

from __future__ import annotations

import json
import uuid

import pytest
from psycopg.types.json import Jsonb

from sidecar.events import normalise, read_envelope
from tally import ops
from tally.stripe_events import StripeWorld
from tests.conftest import create_user


def run_ops(database_url: str, *args: str) -> int:
    return ops.main(["--database-url", database_url, *args])


def ledger_of(db, user_id: uuid.UUID) -> list[dict]:
    return db.execute(
        "select kind, plan_delta, addon_delta, reason from tally.ledger_entries"
        " where user_id = %s order by id",
        (user_id,),
    ).fetchall()


def test_reconcile_passes_when_every_balance_equals_its_ledger(database_url, db, capsys):
    create_user(db)
    create_user(db)
    assert run_ops(database_url, "reconcile") == 0
    assert "reconciled: all 2 balances equal their ledger sums" in capsys.readouterr().out


def test_reconcile_fails_and_names_an_account_that_differs_from_its_ledger(
    database_url, db, capsys
):
    user_id = create_user(db)
    db.execute("update tally.accounts set addon_credits = addon_credits + 7 where user_id = %s",
               (user_id,))  # fmt: skip
    try:
        assert run_ops(database_url, "reconcile", "--json") == 1
        report = json.loads(capsys.readouterr().out)
        assert [row["user_id"] for row in report["mismatches"]] == [str(user_id)]
        assert report["mismatches"][0]["addon_credits"] == 7
    finally:
        db.execute("update tally.accounts set addon_credits = addon_credits - 7"
                   " where user_id = %s", (user_id,))  # fmt: skip


def test_adjust_grants_add_on_credits_with_its_reason_on_the_ledger(database_url, db, capsys):
    user_id = create_user(db)
    code = run_ops(database_url, "adjust", str(user_id), "25", "--reason", "support goodwill")
    assert code == 0
    assert ledger_of(db, user_id)[-1] == {
        "kind": "adjustment",
        "plan_delta": 0,
        "addon_delta": 25,
        "reason": "support goodwill",
    }


def test_adjust_with_the_same_key_twice_applies_once(database_url, db):
    user_id = create_user(db)
    for _ in range(2):
        assert run_ops(database_url, "adjust", str(user_id), "10", "--reason", "promo",
                       "--idempotency-key", "promo-1") == 0  # fmt: skip
    assert [e["addon_delta"] for e in ledger_of(db, user_id) if e["kind"] == "adjustment"] == [10]


def test_adjust_below_zero_is_refused_and_changes_nothing(database_url, db, capsys):
    user_id = create_user(db)
    before = ledger_of(db, user_id)
    code = run_ops(database_url, "adjust", str(user_id), "-100000", "--reason", "typo")
    assert code == 1
    assert "[PT402]" in capsys.readouterr().err
    assert ledger_of(db, user_id) == before


def test_adjust_without_a_written_reason_is_refused(database_url, db, capsys):
    user_id = create_user(db)
    assert run_ops(database_url, "adjust", str(user_id), "5", "--reason", "  ") == 2
    assert "--reason must say why" in capsys.readouterr().err


def test_events_says_so_when_nothing_is_parked_or_rejected(database_url, capsys):
    assert run_ops(database_url, "events") == 0
    assert capsys.readouterr().out.strip() == "no parked or rejected events"


def test_retry_with_nothing_rejected_retries_nothing(database_url, capsys):
    assert run_ops(database_url, "retry", "--json") == 0
    assert json.loads(capsys.readouterr().out)["retried"] == 0


def test_reviews_says_so_when_there_is_nothing_to_review(database_url, capsys):
    assert run_ops(database_url, "reviews") == 0
    assert capsys.readouterr().out.strip() == "nothing to review"


def test_a_database_that_cannot_be_reached_gets_a_short_message(capsys):
    code = ops.main(["--database-url", "postgresql://nobody@127.0.0.1:1/none", "reconcile"])
    assert code == 3
    err = capsys.readouterr().err
    assert err.startswith("ops: cannot reach the database:")
    assert "Traceback" not in err


def test_without_a_database_url_the_command_says_what_to_set(monkeypatch, capsys):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert ops.main(["reconcile"]) == 2
    assert "set DATABASE_URL" in capsys.readouterr().err


@pytest.mark.parametrize("rows", [[], [{"a": 1, "b": None}]])
def test_render_table_always_has_a_header_and_a_rule(rows):
    lines = ops.render_table(rows, ["a", "b"]).splitlines()
    assert lines[0].split() == ["a", "b"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert len(lines) == 2 + len(rows)


# -- with real events: built by StripeWorld, normalised by the sidecar, applied by the engine --

STARTER_PRICE = "price_starter_monthly_fake"  # supabase/seed.sql


def apply_event(db, event: dict) -> str:
    typed = normalise(read_envelope(event))
    with db.transaction():
        db.execute("set local role service_role")
        row = db.execute("select public.apply_stripe_event(%s) as r", (Jsonb(typed),)).fetchone()
    return row["r"]["status"]


def outcome_of(db, event_id: str) -> str:
    row = db.execute(
        "select outcome from tally.stripe_events where event_id = %s", (event_id,)
    ).fetchone()
    return row["outcome"]


def plan_credits(db, user_id: uuid.UUID) -> int:
    row = db.execute(
        "select plan_credits from tally.accounts where user_id = %s", (user_id,)
    ).fetchone()
    return row["plan_credits"]


def test_events_lists_a_rejected_event_with_its_reason(database_url, db, capsys):
    world = StripeWorld()
    user_id = create_user(db)
    _, events = world.subscribe(world.customer(user_id=str(user_id)), "price_not_in_catalog")
    invoice = next(e for e in events if e["type"] == "invoice.paid")
    assert apply_event(db, invoice) == "rejected"
    assert run_ops(database_url, "events", "--outcome", "rejected", "--json") == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert listed["event_id"] == invoice["id"]
    assert "price" in listed["reason"]


def test_retry_applies_a_rejected_event_once_its_price_is_in_the_catalog(database_url, db):
    world = StripeWorld()
    user_id = create_user(db)
    _, events = world.subscribe(world.customer(user_id=str(user_id)), "price_team_monthly")
    invoice = next(e for e in events if e["type"] == "invoice.paid")
    assert apply_event(db, invoice) == "rejected"
    db.execute(
        "insert into public.plans (key, name, stripe_price_id, monthly_credits)"
        " values ('team', 'Team', 'price_team_monthly', 20000)"
    )
    assert run_ops(database_url, "retry") == 0
    assert outcome_of(db, invoice["id"]) == "applied"
    assert plan_credits(db, user_id) == 20000


def test_link_applies_the_parked_events_of_the_customer(database_url, db, capsys):
    world = StripeWorld()
    user_id = create_user(db)
    customer = world.customer()  # no user id anywhere: created outside /billing/checkout
    _, events = world.subscribe(customer, STARTER_PRICE, via_checkout=False)
    invoice = next(e for e in events if e["type"] == "invoice.paid")
    assert apply_event(db, invoice) == "parked"
    assert run_ops(database_url, "events", "--outcome", "parked", "--json") == 0
    assert [e["event_id"] for e in json.loads(capsys.readouterr().out)] == [invoice["id"]]
    assert run_ops(database_url, "link", str(user_id), customer.id) == 0
    assert outcome_of(db, invoice["id"]) == "applied"
    assert plan_credits(db, user_id) == 1000


def test_reviews_lists_a_refund_of_an_earlier_periods_invoice(database_url, db, capsys):
    world = StripeWorld()
    user_id = create_user(db)
    sub, events = world.subscribe(world.customer(user_id=str(user_id)), STARTER_PRICE)
    first_payment = sub.payments[0]
    for event in events + world.renew(sub):
        apply_event(db, event)
    [refund] = world.refund(first_payment)
    assert apply_event(db, refund) == "applied"
    assert run_ops(database_url, "reviews", "--json") == 0
    [review] = json.loads(capsys.readouterr().out)
    assert review["user_id"] == str(user_id)
    assert review["stripe_event_id"] == refund["id"]
