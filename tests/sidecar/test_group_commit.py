"""Issue 13: group commit of webhooks (sidecar/db/group_commit.py), against the real database.

Webhooks that arrive while the connections applying them are busy go to the
database together (public.apply_stripe_events); each still gets its own
answer, and one the database refuses never affects the others.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sidecar.db import DatabaseUnavailable
from sidecar.db.group_commit import GroupCommit
from sidecar.db.postgres import GroupCommitSettings, PostgresDatabase
from tests.sidecar.conftest import PACKS, SIGNUP_CREDITS, credits, deliver, stored_outcome, world
from tests.support import typed_events as te

PACK_PRICE, PACK_CREDITS = PACKS["pack_500"]


def purchases(*users: uuid.UUID) -> list[dict]:
    """The checkout.session.completed of a pack bought by each user, in one Stripe world."""
    w = world()
    events = []
    for user in users:
        _, out = w.buy_pack(w.customer(user_id=str(user)), PACK_PRICE)
        events += out
    assert len(events) == len(users)
    return events


async def batch_sizes(client) -> tuple[float, float, float]:
    """(batches, events in them, batches of one event) from /metrics."""
    text = await (await client.get("/metrics")).text()
    (family,) = [
        f for f in text_string_to_metric_families(text) if f.name == "tally_apply_batch_events"
    ]
    values = {(s.name, s.labels.get("le")): s.value for s in family.samples}
    return (
        values[("tally_apply_batch_events_count", None)],
        values[("tally_apply_batch_events_sum", None)],
        values[("tally_apply_batch_events_bucket", "1.0")],
    )


@pytest.fixture
def held_account(database_url: str, make_user) -> Iterator[tuple[uuid.UUID, psycopg.Connection]]:
    """A user whose account row another transaction holds: their webhook waits in the database."""
    user = make_user()
    with psycopg.connect(database_url) as conn:
        conn.execute("select 1 from tally.accounts where user_id = %s for update", (user,))
        yield user, conn
        conn.rollback()


async def test_webhooks_arriving_while_the_connection_is_busy_are_applied_together(
    make_sidecar, make_user, db, held_account
):
    sidecar = await make_sidecar(apply_workers=1, apply_batch_max=8)
    first, holder = held_account
    users = [make_user() for _ in range(11)]
    held, *events = purchases(first, *users)
    waiting = asyncio.create_task(deliver(sidecar, held))
    await asyncio.sleep(0.3)  # the only connection now waits for the held account
    others = [asyncio.create_task(deliver(sidecar, event)) for event in events]
    await asyncio.sleep(0.3)  # all eleven wait for it
    holder.rollback()
    answers = await asyncio.gather(waiting, *others)
    assert {(status, answer["status"]) for status, answer in answers} == {(200, "applied")}
    for user in (first, *users):
        assert credits(db, user) == (SIGNUP_CREDITS, PACK_CREDITS)
    batches, events, alone = await batch_sizes(sidecar)
    # Typically the held one, then eight, then three; a slow machine may split them more.
    assert events == 12
    assert batches - alone >= 1 and batches < 6


@pytest.fixture
def refused_events(db) -> Iterator[psycopg.Connection]:
    """A ledger refusing the entries of the event ids in tally.refused_for_the_test."""
    db.execute("create table tally.refused_for_the_test (event_id text primary key)")
    db.execute(
        "create function tally.refuse_for_the_test() returns trigger language plpgsql as $$"
        " begin"
        "   if exists (select 1 from tally.refused_for_the_test r"
        "               where r.event_id = new.stripe_event_id) then"
        "     raise exception 'refused for the test' using errcode = 'XX001';"
        "   end if;"
        "   return new;"
        " end $$"
    )
    db.execute(
        "create trigger refuse_listed_events before insert on tally.ledger_entries"
        " for each row execute function tally.refuse_for_the_test()"
    )
    yield db
    db.execute("drop trigger refuse_listed_events on tally.ledger_entries")
    db.execute("drop function tally.refuse_for_the_test()")
    db.execute("drop table tally.refused_for_the_test")


async def test_a_webhook_the_database_refuses_is_answered_503_alone_and_applies_on_retry(
    make_sidecar, make_user, db, held_account, refused_events
):
    sidecar = await make_sidecar(apply_workers=1, apply_batch_max=8)
    first, holder = held_account
    users = [make_user() for _ in range(3)]
    held, *events = purchases(first, *users)
    refused_events.execute("insert into tally.refused_for_the_test values (%s)", (events[1]["id"],))
    waiting = asyncio.create_task(deliver(sidecar, held))
    await asyncio.sleep(0.3)
    together = [asyncio.create_task(deliver(sidecar, event)) for event in events]
    await asyncio.sleep(0.3)
    holder.rollback()
    await waiting
    answers = [(status, answer.get("status")) for status, answer in await asyncio.gather(*together)]
    assert answers[0] == answers[2] == (200, "applied")
    assert answers[1][0] == 503  # Stripe retries it
    assert stored_outcome(db, events[1]["id"]) is None  # undone whole: nothing half-applied
    assert credits(db, users[1]) == (SIGNUP_CREDITS, 0)
    assert credits(db, users[0]) == credits(db, users[2]) == (SIGNUP_CREDITS, PACK_CREDITS)
    batches, _, _ = await batch_sizes(sidecar)
    assert batches <= 3  # at least two of the three shared a transaction

    refused_events.execute("delete from tally.refused_for_the_test")
    status, answer = await deliver(sidecar, events[1])
    assert (status, answer["status"]) == (200, "applied")
    assert credits(db, users[1]) == (SIGNUP_CREDITS, PACK_CREDITS)


async def test_with_a_batch_of_one_each_webhook_is_its_own_transaction(make_sidecar, make_user, db):
    sidecar = await make_sidecar(apply_batch_max=1)
    users = [make_user() for _ in range(4)]
    answers = await asyncio.gather(*(deliver(sidecar, event) for event in purchases(*users)))
    assert {(status, answer["status"]) for status, answer in answers} == {(200, "applied")}
    text = await (await sidecar.get("/metrics")).text()
    assert "tally_apply_batch_events_count 0.0" in text


async def test_closing_answers_the_webhooks_not_yet_committed_as_unavailable(
    database_url, db, held_account
):
    first, holder = held_account
    database = await PostgresDatabase.open(
        database_url,
        timeout=3,
        role="service_role",
        group_commit=GroupCommitSettings(workers=1, max_batch=8),
    )
    in_flight_event = te.Buyer.new(first).pack_purchase().completed()
    queued_event = te.Buyer.new(first).pack_purchase().completed()
    in_flight = asyncio.create_task(database.apply_stripe_event(in_flight_event))
    await asyncio.sleep(0.3)
    queued = asyncio.create_task(database.apply_stripe_event(queued_event))
    await asyncio.sleep(0.1)
    await database.close()
    holder.rollback()
    for task in (in_flight, queued):
        with pytest.raises(DatabaseUnavailable):
            await task
    assert stored_outcome(db, in_flight_event["id"]) is None  # cancelled: Stripe retries it
    assert stored_outcome(db, queued_event["id"]) is None


async def test_a_transaction_run_over_its_timeout_by_one_event_leaves_the_others_applied(
    make_sidecar, make_user, db, database_url, held_account
):
    # One event of the batch waits for a lock past DB_TIMEOUT: the transaction is cancelled
    # whole, then each event goes again alone; only the waiting one is answered 503.
    sidecar = await make_sidecar(apply_workers=1, apply_batch_max=8, db_timeout=1.0)
    first, first_holder = held_account
    stuck, *users = [make_user() for _ in range(3)]
    held, stuck_event, *events = purchases(first, stuck, *users)
    with psycopg.connect(database_url) as stuck_holder:
        stuck_holder.execute("select 1 from tally.accounts where user_id = %s for update", (stuck,))
        waiting = asyncio.create_task(deliver(sidecar, held))
        await asyncio.sleep(0.3)
        together = [asyncio.create_task(deliver(sidecar, e)) for e in (stuck_event, *events)]
        await asyncio.sleep(0.2)
        first_holder.rollback()
        assert (await waiting)[0] == 200
        answers = [
            (status, answer.get("status")) for status, answer in await asyncio.gather(*together)
        ]
        stuck_holder.rollback()
    assert answers[0][0] == 503
    assert answers[1:] == [(200, "applied"), (200, "applied")]
    assert [credits(db, u)[1] for u in (stuck, *users)] == [0, PACK_CREDITS, PACK_CREDITS]
    status, answer = await deliver(sidecar, stuck_event)  # Stripe's retry
    assert (status, answer["status"]) == (200, "applied")


async def test_an_event_left_waiting_longer_than_the_database_timeout_is_not_applied():
    # As a call waiting that long for a free pool connection: the sender answers 503
    # and Stripe retries it later, instead of the sidecar working through stale events.
    applied: list[str] = []

    async def slow_apply_many(events: list[dict]) -> list[dict]:
        await asyncio.sleep(0.3)
        applied.extend(event["id"] for event in events)
        return [{"status": "applied", "event_id": event["id"]} for event in events]

    group = GroupCommit(slow_apply_many, workers=1, max_batch=8, max_wait=0.1)
    try:
        first = asyncio.create_task(group.apply({"id": "evt_first"}))
        await asyncio.sleep(0.01)
        with pytest.raises(DatabaseUnavailable):
            await group.apply({"id": "evt_waited_too_long"})
        assert (await first)["status"] == "applied"
        assert applied == ["evt_first"]
    finally:
        await group.close()


async def test_the_workers_outlive_a_failure_nobody_foresaw():
    calls: list[int] = []

    async def apply_many(events: list[dict]) -> list[dict]:
        calls.append(len(events))
        if len(calls) == 1:
            raise RuntimeError("a failure nobody foresaw")
        return [{"status": "applied", "event_id": event["id"]} for event in events]

    group = GroupCommit(apply_many, workers=1, max_batch=8, max_wait=5)
    try:
        with pytest.raises(DatabaseUnavailable):  # bounded: a dead worker would never answer
            await asyncio.wait_for(group.apply({"id": "evt_first"}), timeout=5)
        assert await asyncio.wait_for(group.apply({"id": "evt_second"}), timeout=5) == {
            "status": "applied",
            "event_id": "evt_second",
        }
    finally:
        await group.close()


async def test_an_event_that_met_a_deadlock_in_a_batch_goes_again_alone():
    # Locks its batch held may have caused it: once that transaction committed, it is
    # applied alone, and only its outcome then is the answer.
    calls: list[list[str]] = []
    first_in = asyncio.Event()

    async def apply_many(events: list[dict]) -> list[dict]:
        calls.append([event["id"] for event in events])
        if len(calls) == 1:
            first_in.set()
            await asyncio.sleep(0.1)  # the others queue meanwhile
            return [{"status": "applied", "event_id": events[0]["id"]}]
        if len(events) > 1:
            return [
                {"status": "applied", "event_id": events[0]["id"]},
                {"status": "error", "event_id": events[1]["id"], "sqlstate": "40P01"},
            ]
        return [{"status": "applied", "event_id": events[0]["id"]}]

    group = GroupCommit(apply_many, workers=1, max_batch=8, max_wait=5)
    try:
        busy = asyncio.create_task(group.apply({"id": "evt_busy"}))
        await first_in.wait()
        together = [asyncio.create_task(group.apply({"id": i})) for i in ("evt_a", "evt_b")]
        results = await asyncio.wait_for(asyncio.gather(busy, *together), timeout=5)
        assert [r["status"] for r in results] == ["applied"] * 3
        assert calls == [["evt_busy"], ["evt_a", "evt_b"], ["evt_b"]]
    finally:
        await group.close()


async def test_closing_while_events_wait_to_go_again_alone_answers_every_one():
    started_alone = asyncio.Event()
    first_in = asyncio.Event()

    async def apply_many(events: list[dict]) -> list[dict]:
        if events[0]["id"] == "evt_busy":
            first_in.set()
            await asyncio.sleep(0.1)
            return [{"status": "applied", "event_id": "evt_busy"}]
        if len(events) > 1:
            return [{"status": "error", "sqlstate": "40P01"} for _ in events]
        started_alone.set()
        await asyncio.sleep(60)  # still running when the sidecar closes
        return [{"status": "applied"}]

    group = GroupCommit(apply_many, workers=1, max_batch=8, max_wait=5)
    busy = asyncio.create_task(group.apply({"id": "evt_busy"}))
    await first_in.wait()
    again = [asyncio.create_task(group.apply({"id": i})) for i in ("evt_b", "evt_c")]
    await asyncio.wait_for(started_alone.wait(), timeout=5)
    await group.close()
    assert (await busy)["status"] == "applied"
    for task in again:
        with pytest.raises(DatabaseUnavailable):
            await asyncio.wait_for(task, timeout=5)
