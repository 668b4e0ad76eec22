"""Balance events for the app's backend and the live balance in the browser.

credits.low (available credits fall below low_balance_threshold, once per
crossing), credits.depleted (they reach zero) and credits.granted (a grant)
are written to an outbox in the transaction of the change; the sidecar
claims them in leased batches and reports each delivery. Every change of a
balance is also broadcast with realtime.send on the private topic
credits:<user id>, which only that signed-in user may receive
(docs/app-integration.md).
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import pytest

from tests.conftest import acting_as
from tests.support import typed_events as te


def outbox(db, user) -> list[dict]:
    return [
        row["payload"]
        for row in db.execute(
            "select payload from tally.balance_events where user_id = %s order by id", (user,)
        )
    ]


def types(db, user) -> list[str]:
    return [payload["type"] for payload in outbox(db, user)]


def test_the_signup_grant_emits_credits_granted(engine, db, user):
    (granted,) = outbox(db, user)
    assert granted["type"] == "credits.granted"
    assert granted["data"]["granted"] == 500
    assert granted["data"]["user_id"] == str(user)
    assert set(granted) == {"type", "timestamp", "data"}
    assert {"plan_credits", "addon_credits", "total_credits", "held_credits",
            "available_credits"} <= set(granted["data"])  # fmt: skip


def test_falling_below_the_threshold_emits_credits_low_once_per_crossing(engine, db, user):
    engine.spend(user, 350)  # 150 left: above 100
    engine.spend(user, 60)  # 90: crosses
    engine.spend(user, 40)  # 50: still below, nothing more
    assert types(db, user) == ["credits.granted", "credits.low"]
    engine.adjust(user, 200, "top up")  # 250: back above
    engine.spend(user, 200)  # 50: crosses again
    assert types(db, user) == ["credits.granted", "credits.low", "credits.granted", "credits.low"]
    low = outbox(db, user)[1]
    assert (low["data"]["available_credits"], low["data"]["threshold"]) == (90, 100)


def test_reaching_zero_emits_credits_depleted(engine, db, user):
    engine.spend(user, 500)
    assert types(db, user) == ["credits.granted", "credits.low", "credits.depleted"]


def test_a_hold_that_lowers_what_is_available_counts_too(engine, db, user, key):
    engine.reserve(user, 450, key)
    assert types(db, user) == ["credits.granted", "credits.low"]


def test_a_pack_and_a_period_emit_credits_granted(engine, db, user):
    buyer = te.Buyer.new(user)
    engine.apply(buyer.pack_purchase("pack_500").completed())
    engine.apply(buyer.subscription("starter").invoice_paid(period=0))
    granted = [p["data"]["granted"] for p in outbox(db, user) if p["type"] == "credits.granted"]
    assert granted == [500, 500, 500]  # signup, pack, period (1,000 over the 500 left)


@pytest.mark.parametrize("layout", ["legacy", "basil"])
def test_every_paid_period_emits_credits_granted_even_with_nothing_spent(engine, db, user, layout):
    sub = te.Buyer.new(user, layout=layout).subscription("starter")
    engine.apply(sub.invoice_paid(period=0))
    engine.apply(sub.invoice_paid(period=1))  # nothing spent: plan credits stay at 1,000
    assert engine.credits(user) == (1000, 0)
    granted = [p["data"] for p in outbox(db, user) if p["type"] == "credits.granted"]
    assert [g["granted"] for g in granted] == [500, 500, 0]  # signup, period 0, period 1
    assert granted[-1]["reason"] == "subscription_period"


def test_spends_and_holds_grant_nothing(engine, db, user, key):
    engine.spend(user, 5)
    engine.reserve(user, 5, key)
    engine.release(user, key)
    assert types(db, user) == ["credits.granted"]  # the signup's only


def test_the_threshold_is_a_database_setting(engine, db, make_user):
    db.execute("update tally.settings set low_balance_threshold = 450")
    try:
        user = make_user()
        engine.spend(user, 60)
    finally:
        db.execute("update tally.settings set low_balance_threshold = 100")
    assert types(db, user) == ["credits.granted", "credits.low"]


def test_a_change_that_rolls_back_emits_nothing(engine, db, user):
    with pytest.raises(Exception):  # noqa: B017 -- PT402, any client error class
        engine.spend(user, 501)
    assert types(db, user) == ["credits.granted"]


@pytest.fixture
def drained(service):
    """The service connection, with the module database's outbox delivered so far."""
    while batch := claim(service, 1000, 1):
        for claimed in batch:
            service.execute("select public.finish_balance_event(%s, true)", (claimed["id"],))
    return service


def claim(service, n: int = 50, lease: int = 30) -> list[dict]:
    row = service.execute("select public.claim_balance_events(%s, %s) as claimed", (n, lease))
    return row.fetchone()["claimed"]


def test_claimed_events_are_leased_and_not_claimed_again(engine, drained, user):
    engine.spend(user, 450)
    claimed = claim(drained)
    assert [c["payload"]["type"] for c in claimed] == ["credits.granted", "credits.low"]
    assert claim(drained) == []


def backlog(service) -> dict:
    return service.execute("select public.balance_event_backlog() as b").fetchone()["b"]


def test_a_delivered_event_leaves_the_backlog(engine, drained, user):
    engine.spend(user, 450)
    claimed = claim(drained)
    before = backlog(drained)["pending"]
    for event in claimed:
        drained.execute("select public.finish_balance_event(%s, true)", (event["id"],))
    assert backlog(drained)["pending"] == before - len(claimed) and len(claimed) == 2


def test_a_failed_delivery_is_retried_later_with_backoff(engine, db, drained, user):
    engine.spend(user, 450)
    (first, second) = claim(drained, lease=1)
    drained.execute("select public.finish_balance_event(%s, false, 'HTTP 500')", (first["id"],))
    row = db.execute(
        "select attempts, last_error, next_attempt_at > now() as later from tally.balance_events"
        " where id = %s",
        (first["id"],),
    ).fetchone()
    assert (row["attempts"], row["last_error"], row["later"]) == (1, "HTTP 500", True)
    assert backlog(drained)["failing"] >= 1
    assert second["attempts"] == 0


def test_clients_cannot_touch_the_outbox(db, user):
    for role in ("anon", "authenticated"):
        with acting_as(db, role, user if role == "authenticated" else None):
            with pytest.raises(Exception) as caught:
                db.execute("select public.claim_balance_events()")
            assert getattr(caught.value, "sqlstate", None) == "42501"


# --- the live balance ---------------------------------------------------------------------


def broadcasts(db, user) -> list[dict]:
    return db.execute(
        "select event, payload, private, extension from realtime.messages"
        " where topic = %s order by inserted_at, id",
        (f"credits:{user}",),
    ).fetchall()


def test_every_balance_change_is_broadcast_on_the_users_private_topic(engine, db, user):
    engine.spend(user, 120)
    *_, last = broadcasts(db, user)
    assert (last["event"], last["private"], last["extension"]) == ("balance", True, "broadcast")
    assert (last["payload"]["plan_credits"], last["payload"]["available_credits"]) == (380, 380)
    assert last["payload"]["user_id"] == str(user)


@contextmanager
def joining(db, user, topic: str):
    """What Supabase Realtime does to authorise a join: the user's claims and the topic."""
    with acting_as(db, "authenticated", user):
        db.execute("select set_config('realtime.topic', %s, true)", (topic,))
        yield


def test_a_signed_in_user_receives_only_their_own_topic(engine, db, user, make_user):
    other = make_user()
    engine.spend(user, 10)
    engine.spend(other, 20)
    with joining(db, user, f"credits:{user}"):
        own = db.execute("select payload from realtime.messages").fetchall()
    with joining(db, user, f"credits:{other}"):
        theirs = db.execute("select payload from realtime.messages").fetchall()
    assert own and {row["payload"]["user_id"] for row in own} == {str(user)}
    assert theirs == []


def test_anon_receives_no_balance(engine, db, user):
    engine.spend(user, 10)
    with acting_as(db, "anon"):
        db.execute("select set_config('realtime.topic', %s, true)", (f"credits:{user}",))
        assert db.execute("select * from realtime.messages").fetchall() == []


def the_row_as_json(db, user) -> dict:
    return db.execute(
        "select to_jsonb(b) as row from public.credit_balances b where b.user_id = %s", (user,)
    ).fetchone()["row"]


@pytest.mark.parametrize("layout", ["legacy", "basil"])
def test_the_broadcast_payload_is_the_credit_balances_row(engine, db, user, layout):
    engine.apply(te.Buyer.new(user, layout=layout).subscription("starter").invoice_paid(period=0))
    engine.reserve(user, 40, "job-1")
    engine.spend(user, 7)
    *_, last = broadcasts(db, user)
    # Column for column, timestamps as the view writes them in JSON (Realtime's
    # realtime.send adds the message's own id).
    assert {k: v for k, v in last["payload"].items() if k != "id"} == the_row_as_json(db, user)


def test_committing_a_hold_crosses_nothing_its_reserve_did_not(engine, db, user, key):
    engine.spend(user, 350)
    engine.reserve(user, 60, key)  # 150 available -> 90: below 100, once
    assert types(db, user) == ["credits.granted", "credits.low"]
    engine.commit(user, key)  # spends what was set aside: still 90
    assert engine.balance(user)["available_credits"] == 90
    assert types(db, user) == ["credits.granted", "credits.low"]


def test_committing_a_hold_of_everything_is_not_depleted_again(engine, db, user, key):
    engine.reserve(user, 500, key)
    assert types(db, user) == ["credits.granted", "credits.low", "credits.depleted"]
    engine.commit(user, key)
    assert types(db, user) == ["credits.granted", "credits.low", "credits.depleted"]


def test_a_hold_that_expires_broadcasts_the_credits_it_gives_back(engine, db, service, user, key):
    engine.reserve(user, 300, key, ttl_seconds=1)
    before = len(broadcasts(db, user))
    time.sleep(1.2)
    service.execute("select public.expire_holds(500)")
    *_, last = broadcasts(db, user)
    assert len(broadcasts(db, user)) == before + 1
    assert (last["payload"]["held_credits"], last["payload"]["available_credits"]) == (0, 500)
