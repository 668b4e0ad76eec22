"""sidecar/replay.py: undelivered events from the Stripe stand-in into the real engine."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import UTC, datetime

import aiohttp
import pytest

from sidecar import replay
from sidecar.context import METRICS
from sidecar.db.postgres import PostgresDatabase
from sidecar.db.postgrest import PostgrestDatabase
from sidecar.stripe_api import StripeApi
from tally import stripe_events as se
from tests.conftest import create_user
from tests.sidecar.conftest import (
    PACKS,
    PLANS,
    SERVICE_ROLE_KEY,
    credits,
    deliver,
    stored_outcome,
    world,
)

PACK_PRICE, PACK_CREDITS = PACKS["pack_500"]
STARTER_PRICE, STARTER_CREDITS = PLANS["starter"]
NOW = int(time.time())


@pytest.fixture
async def database(database_url):
    db = await PostgresDatabase.open(database_url, timeout=3.0, role="service_role")
    yield db
    await db.close()


@pytest.fixture
async def stripe(stripe_base):
    async with aiohttp.ClientSession() as session:
        yield StripeApi("sk_test_fake", session, timeout=2.0, api_base=stripe_base)


async def replay_all(database, stripe, since: int = NOW - 3600) -> list[replay.Replayed]:
    listed = replay.replay(database, stripe, since=since, key_is_live=False)
    return [result async for result in listed]


def bought_pack(fake_stripe, user_id: uuid.UUID, *, delivered: bool = False) -> dict:
    w = world()
    _, out = w.buy_pack(w.customer(user_id=str(user_id)), PACK_PRICE)
    return fake_stripe.add_event(out[-1], delivered=delivered)


# -- replaying ------------------------------------------------------------------------------


async def test_an_undelivered_event_is_applied_as_the_webhook_would(
    database, stripe, fake_stripe, db
):
    user_id = create_user(db)
    event = bought_pack(fake_stripe, user_id)
    [result] = await replay_all(database, stripe)
    assert (result.event_id, result.outcome) == (event["id"], "applied")
    assert credits(db, user_id) == (500, PACK_CREDITS)


async def test_a_second_replay_answers_duplicate_and_grants_nothing_more(
    database, stripe, fake_stripe, db
):
    user_id = create_user(db)
    bought_pack(fake_stripe, user_id)
    await replay_all(database, stripe)
    [again] = await replay_all(database, stripe)
    assert again.outcome == "duplicate"
    assert credits(db, user_id) == (500, PACK_CREDITS)


async def test_delivered_events_and_events_older_than_the_window_are_left_alone(
    database, stripe, fake_stripe, db
):
    user_id = create_user(db)
    bought_pack(fake_stripe, user_id, delivered=True)
    old = bought_pack(fake_stripe, user_id)
    old["created"] = NOW - 7200
    assert await replay_all(database, stripe, since=NOW - 3600) == []


async def test_an_event_the_webhook_already_applied_answers_duplicate(
    sidecar, database, stripe, fake_stripe, db
):
    user_id = create_user(db)
    event = bought_pack(fake_stripe, user_id)
    await deliver(sidecar, event)
    assert [r.outcome for r in await replay_all(database, stripe)] == ["duplicate"]


async def test_an_invoice_with_more_lines_is_read_whole_before_it_is_applied(
    database, stripe, fake_stripe, db
):
    user_id = create_user(db)
    w = world()
    sub, out = w.subscribe(w.customer(user_id=str(user_id)), STARTER_PRICE)
    event = next(e for e in out if e["type"] == "invoice.paid")
    invoice = event["data"]["object"]
    plan_line = invoice["lines"]["data"][0]
    metered = se.invoice_line(
        layout="basil", id="il_metered", invoice=invoice["id"],
        price_obj=w.price_object("price_metered_calls"), amount=0,
        period_start=plan_line["period"]["start"], period_end=plan_line["period"]["end"],
        subscription=sub.id, subscription_item="si_metered",
    )  # fmt: skip
    stored = fake_stripe.add_invoice(invoice, [metered, plan_line], embedded=1)
    event["data"]["object"] = stored  # the event embeds the metered line only
    fake_stripe.add_event(event)
    [result] = await replay_all(database, stripe)
    assert result.outcome == "applied", result.reason
    assert credits(db, user_id) == (STARTER_CREDITS, 0)
    assert fake_stripe.of_path(f"/v1/invoices/{invoice['id']}/lines", "GET")


async def test_an_event_of_the_other_mode_is_recorded_as_rejected(
    database, stripe, fake_stripe, db
):
    user_id = create_user(db)
    event = bought_pack(fake_stripe, user_id)
    event["livemode"] = True
    [result] = await replay_all(database, stripe)
    assert result.outcome == "rejected"
    assert "live-mode event" in (result.reason or "")
    assert stored_outcome(db, event["id"]) == "rejected"


async def test_an_unreadable_event_is_reported_and_the_others_still_apply(
    database, stripe, fake_stripe, db
):
    user_id = create_user(db)
    bought_pack(fake_stripe, user_id)
    broken = fake_stripe.add_event(world().unhandled("invoice.paid"))
    broken["data"] = "not an object"
    results = {r.event_id: r.outcome for r in await replay_all(database, stripe)}
    assert sorted(results.values()) == ["applied", "unreadable"]
    assert results[broken["id"]] == "unreadable"


# -- the lookback ---------------------------------------------------------------------------


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


def test_a_first_run_looks_back_72_hours():
    assert replay.lookback_start({}, 1_000_000_000) == 1_000_000_000 - 72 * 3600


def test_a_run_after_a_long_pause_looks_back_to_the_last_finished_runs_start():
    now = 1_000_000_000
    last = {"last_success_started_at": iso(now - 5 * 86400)}
    assert replay.lookback_start(last, now) == now - 5 * 86400 - replay.CLOCK_SLACK


def test_a_run_never_looks_back_further_than_the_events_api_keeps_events():
    now = 1_000_000_000
    last = {"last_success_started_at": iso(now - 90 * 86400)}
    assert replay.lookback_start(last, now) == now - 30 * 86400


# -- the lease, through each transport -------------------------------------------------------


@pytest.fixture(params=["postgres", "postgrest"])
async def any_database(request, database, postgrest_url):
    if request.param == "postgres":
        yield database
        return
    db = PostgrestDatabase.open(postgrest_url, SERVICE_ROLE_KEY, timeout=3.0)
    yield db
    await db.close()


async def test_one_holder_at_a_time_gets_the_replay_lease(any_database):
    lease = {"ttl_seconds": 60}
    assert await any_database.call("try_replay_lease", {"holder": "a", **lease}) is True
    assert await any_database.call("try_replay_lease", {"holder": "b", **lease}) is False
    assert await any_database.call("try_replay_lease", {"holder": "a", **lease}) is False


async def test_an_expired_lease_goes_to_the_next_holder(any_database):
    assert await any_database.call("try_replay_lease", {"holder": "a", "ttl_seconds": 1})
    await asyncio.sleep(1.05)
    assert await any_database.call("try_replay_lease", {"holder": "b", "ttl_seconds": 1})


async def test_a_finished_run_is_remembered_with_its_counts(any_database):
    assert await any_database.call("last_replay", {}) == {}
    await any_database.call("try_replay_lease", {"holder": "a", "ttl_seconds": 60})
    assert await any_database.call("finish_replay", {"holder": "a", "counts": {"applied": 2}})
    last = await any_database.call("last_replay", {})
    assert last["last_counts"] == {"applied": 2}
    assert last["last_success_started_at"] == last["started_at"]


# -- the sidecar's periodic run --------------------------------------------------------------


def runs(client) -> dict[str, float]:
    metric = client.server.app[METRICS].replay_runs
    return {sample.labels["result"]: sample.value for sample in metric.collect()[0].samples
            if sample.name.endswith("_total")}  # fmt: skip


async def until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_two_machines_sharing_a_database_replay_once_per_window(
    make_sidecar, fake_stripe, db, caplog
):
    user_id = create_user(db)
    bought_pack(fake_stripe, user_id)
    caplog.set_level(logging.INFO, logger="sidecar")
    first, second = await make_sidecar(replay_interval=1), await make_sidecar(replay_interval=1)
    await until(lambda: sum(runs(first).values()) >= 1 and sum(runs(second).values()) >= 1)
    assert sorted([runs(first), runs(second)], key=str) == [{"done": 1}, {"skipped": 1}]
    assert credits(db, user_id) == (500, PACK_CREDITS)
    [line] = [r for r in caplog.records if r.getMessage() == "stripe replay"]
    assert (line.result, line.listed, line.applied) == ("done", 1, 1)


async def test_the_periodic_run_counts_what_each_event_became(make_sidecar, fake_stripe, db):
    bought_pack(fake_stripe, create_user(db))
    client = await make_sidecar(replay_interval=1)
    await until(lambda: runs(client))
    text = await (await client.get("/metrics")).text()
    assert 'tally_replayed_events_total{outcome="applied"} 1.0' in text
    assert 'tally_replay_runs_total{result="done"} 1.0' in text


async def test_a_replay_interval_of_zero_starts_no_task(make_sidecar):
    client = await make_sidecar(replay_interval=0)
    assert replay.REPLAY_TASK not in client.server.app


async def test_a_stripe_outage_fails_the_run_and_the_next_window_tries_again(
    make_sidecar, fake_stripe, db
):
    user_id = create_user(db)
    bought_pack(fake_stripe, user_id)
    fake_stripe.fail_with = 400  # refused at once: no retries to wait for
    client = await make_sidecar(replay_interval=1)
    await until(lambda: runs(client).get("failed"))
    fake_stripe.fail_with = None
    await until(lambda: runs(client).get("done"))
    assert credits(db, user_id) == (500, PACK_CREDITS)
