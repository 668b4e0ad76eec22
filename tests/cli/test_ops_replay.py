"""`tally ops replay`: undelivered events from the Stripe stand-in into the real engine."""

from __future__ import annotations

import json
import time

import pytest
from aiohttp import web

from sidecar import stripe_api
from tests.cli.conftest import account, outcome_of
from tests.conftest import create_user
from tests.sidecar.conftest import PACKS, world

PACK_PRICE, PACK_CREDITS = PACKS["pack_500"]


def undelivered_packs(fake_stripe, user_id, count: int) -> list[dict]:
    w = world()
    customer = w.customer(user_id=str(user_id))
    return [fake_stripe.add_event(w.buy_pack(customer, PACK_PRICE)[1][-1]) for _ in range(count)]


async def test_replay_applies_what_stripe_could_not_deliver_and_says_what_each_became(
    run_ops, fake_stripe, db
):
    user_id = create_user(db)
    [event] = undelivered_packs(fake_stripe, user_id, 1)
    ran = await run_ops("replay")
    assert ran.code == 0
    [row] = [line for line in ran.out.splitlines() if line.startswith(event["id"])]
    assert row.split()[1:2] == ["checkout.session.completed"]
    assert "applied" in row
    assert "1 undelivered event(s) since" in ran.out
    assert account(db, user_id) == (500, PACK_CREDITS)


async def test_a_second_replay_answers_duplicate_and_grants_nothing_twice(run_ops, fake_stripe, db):
    user_id = create_user(db)
    undelivered_packs(fake_stripe, user_id, 2)
    assert (await run_ops("replay")).code == 0
    ran = await run_ops("replay", "--json")
    assert ran.code == 0
    assert json.loads(ran.out)["counts"] == {"duplicate": 2}
    assert account(db, user_id) == (500, 2 * PACK_CREDITS)


async def test_replay_looks_back_only_as_far_as_since_says(run_ops, fake_stripe, db):
    user_id = create_user(db)
    [old] = undelivered_packs(fake_stripe, user_id, 1)
    old["created"] = int(time.time()) - 5 * 3600
    assert json.loads((await run_ops("replay", "--since", "4h", "--json")).out)["events"] == []
    ran = await run_ops("replay", "--since", "6h", "--json")
    assert [e["event_id"] for e in json.loads(ran.out)["events"]] == [old["id"]]


async def test_replay_never_asks_stripe_for_more_than_30_days(run_ops, fake_stripe):
    ran = await run_ops("replay", "--since", "90d")
    assert ran.code == 0
    assert "30 days" in ran.err
    [listing] = fake_stripe.of_path("/v1/events", "GET")
    assert int(listing.form["created[gte]"]) >= int(time.time()) - 30 * 86400 - 60


@pytest.fixture
def outage_after_first_page(fake_stripe, monkeypatch):
    """Two events a page; every page after the first fails until the outage ends."""
    monkeypatch.setattr(stripe_api, "LIST_PAGE_SIZE", 2)

    @web.middleware
    async def outage(request: web.Request, handler):
        if request.path == "/v1/events" and "starting_after" in request.query and outage.on:
            fake_stripe.fail_with = 503
        return await handler(request)

    outage.on = True
    app = fake_stripe.app()
    app.middlewares.append(outage)
    fake_stripe.app = lambda: app  # the server fixture starts this app

    def end() -> None:
        outage.on = False
        fake_stripe.fail_with = None

    return end


async def test_an_outage_half_way_stops_the_replay_and_the_next_one_completes_it(
    outage_after_first_page, run_ops, fake_stripe, db
):
    user_id = create_user(db)
    events = undelivered_packs(fake_stripe, user_id, 5)
    first = await run_ops("replay")
    assert first.code == 4
    assert first.err.strip().splitlines() == [
        "ops replay: cannot reach Stripe: Stripe could not list undelivered events"
    ]
    # The first page was applied, and is printed although the replay failed.
    rows = [line.split() for line in first.out.splitlines() if line.startswith("evt_")]
    assert [row[4] for row in rows] == ["applied", "applied"]
    outage_after_first_page()
    second = json.loads((await run_ops("replay", "--json")).out)
    assert second["counts"] == {"duplicate": 2, "applied": 3}
    assert {outcome_of(db, e["id"]) for e in events} == {"applied"}
    assert account(db, user_id) == (500, 5 * PACK_CREDITS)


async def test_replay_through_postgrest_needs_no_direct_database_connection(
    run_ops, postgrest_env, fake_stripe, db
):
    user_id = create_user(db)
    undelivered_packs(fake_stripe, user_id, 1)
    ran = await run_ops("replay", "--json", env=postgrest_env)
    assert ran.code == 0, ran.err
    assert json.loads(ran.out)["counts"] == {"applied": 1}


async def test_replay_without_a_stripe_key_says_what_to_set(run_ops, ops_env):
    env = {k: v for k, v in ops_env.items() if k != "STRIPE_SECRET_KEY"}
    ran = await run_ops("replay", env=env)
    assert ran.code == 2
    assert ran.err.strip() == "ops replay: set STRIPE_SECRET_KEY: this command reads from Stripe"


async def test_a_database_that_cannot_be_reached_is_one_line_and_status_3(run_ops, ops_env):
    env = {**ops_env, "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    ran = await run_ops("replay", env=env)
    assert ran.code == 3
    assert ran.err.startswith("ops: cannot reach the database:")
    assert len(ran.err.strip().splitlines()) == 1


async def test_a_stand_in_in_production_is_refused(run_ops, ops_env):
    ran = await run_ops("replay", env={**ops_env, "ENV": "production"})
    assert ran.code == 2
    assert "STRIPE_API_BASE" in ran.err
