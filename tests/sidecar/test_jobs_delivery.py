"""Balance events reach the app's backend: signed, at least once, by one machine each.

A real receiver (``tests.support.webhook_receiver``) verifies every request
with the Standard Webhooks library; the sidecar runs through the real app
factory against the real database, on either transport. Waits poll with a
deadline (``tests.support.polling``), never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import uuid
from typing import Any

import psycopg
import pytest
from aiohttp.test_utils import TestClient

from sidecar.config import Config, ConfigError
from sidecar.context import METRICS
from sidecar.jobs.loop import BACKGROUND_TASKS
from sidecar.observability import JsonFormatter
from tests.sidecar.conftest import (
    JWT_SECRET,
    PACKS,
    SERVICE_ROLE_KEY,
    MakeClient,
    deliver_all,
    world,
)
from tests.support.fakes import FakePostgrest
from tests.support.polling import eventually
from tests.support.tcp_proxy import TcpProxy
from tests.support.webhook_receiver import PATH, WebhookReceiver

APP_SECRET = "whsec_" + base64.b64encode(b"tally-test-app-webhook-key-32byt").decode()
ALWAYS = 10**9


@pytest.fixture
def receiver() -> WebhookReceiver:
    return WebhookReceiver(APP_SECRET)


@pytest.fixture
async def receiver_url(aiohttp_server, receiver: WebhookReceiver) -> str:
    server = await aiohttp_server(receiver.app())
    return str(server.make_url(PATH))


@pytest.fixture(params=["postgres", "postgrest"])
def transport(request) -> str:
    return str(request.param)


@pytest.fixture
def start_sidecar(make_sidecar: MakeClient, aiohttp_server, database_url: str):
    """A sidecar delivering to ``webhook_url``, on a transport, to a database URL."""

    async def start(
        webhook_url: str, transport: str = "postgres", database: str | None = None, **more: Any
    ) -> TestClient:
        database = database or database_url
        settings = {"app_webhook_url": webhook_url, "app_webhook_secret": APP_SECRET, **more}
        if transport == "postgres":
            return await make_sidecar(database_url=database, **settings)
        stand_in = FakePostgrest(database, JWT_SECRET, {SERVICE_ROLE_KEY})
        server = await aiohttp_server(stand_in.app())
        return await make_sidecar(
            transport="postgrest",
            database_url=None,
            supabase_url=str(server.make_url("")).rstrip("/"),
            supabase_service_role_key=SERVICE_ROLE_KEY,
            **settings,
        )

    return start


# -- the database side, run off the event loop (the sidecar shares it) -------------------


async def sql(db: psycopg.Connection, query: str, *params: Any) -> list[dict[str, Any]]:
    def run() -> list[dict[str, Any]]:
        cursor = db.execute(query, params)
        return cursor.fetchall() if cursor.description else []

    return await asyncio.to_thread(run)


async def spend(db: psycopg.Connection, user: uuid.UUID, amount: int) -> None:
    await sql(db, "select public.spend_credits(%s, %s, %s)", user, amount, str(uuid.uuid4()))


async def grant(db: psycopg.Connection, user: uuid.UUID, amount: int) -> None:
    await sql(
        db, "select public.adjust_credits(%s, %s, 'goodwill', %s)", user, amount, str(uuid.uuid4())
    )


async def outbox(db: psycopg.Connection, *users: uuid.UUID) -> list[dict[str, Any]]:
    return await sql(
        db,
        "select id, type, attempts, delivered_at, last_error from tally.balance_events"
        " where user_id = any(%s) order by id",
        list(users),
    )


async def all_delivered(db: psycopg.Connection, *users: uuid.UUID) -> list[dict[str, Any]]:
    """Every event of these users, once the outbox has delivered them all."""

    async def check() -> list[dict[str, Any]]:
        rows = await outbox(db, *users)
        return rows if rows and all(row["delivered_at"] for row in rows) else []

    return await eventually(check, "every balance event delivered")


def delivered_ids(rows: list[dict[str, Any]]) -> list[str]:
    return [f"bal_{row['id']}" for row in rows]


# -- what arrives -------------------------------------------------------------------------


async def test_spending_below_the_threshold_sends_credits_low_once_per_crossing(
    start_sidecar, transport, receiver, receiver_url, db, make_user
):
    user = make_user()  # 500 sign-up credits
    await start_sidecar(receiver_url, transport)
    await spend(db, user, 401)  # 99 left: below 100
    await spend(db, user, 9)  # still below: no new crossing
    await grant(db, user, 200)  # 290: above again
    await spend(db, user, 200)  # 90: a second crossing
    rows = await all_delivered(db, user)
    lows = receiver.of(user, "credits.low")
    assert [low.payload["data"]["available_credits"] for low in lows] == [99, 90]
    assert {low.payload["data"]["threshold"] for low in lows} == {100}
    assert sorted(r.webhook_id for r in receiver.of(user)) == sorted(delivered_ids(rows))
    assert receiver.refused == 0


async def test_a_balance_event_carries_type_timestamp_and_the_balance(
    start_sidecar, receiver, receiver_url, db, make_user
):
    user = make_user()
    await start_sidecar(receiver_url)
    await spend(db, user, 450)
    rows = await all_delivered(db, user)
    (low,) = receiver.of(user, "credits.low")
    assert low.webhook_id == delivered_ids([r for r in rows if r["type"] == "credits.low"])[0]
    assert set(low.payload) == {"type", "timestamp", "data"}
    assert low.payload["timestamp"].endswith("Z")
    data = low.payload["data"]
    assert (data["user_id"], data["plan_credits"], data["addon_credits"]) == (str(user), 50, 0)
    assert (data["total_credits"], data["held_credits"], data["available_credits"]) == (50, 0, 50)
    assert data["reason"] == "spend"


async def test_spending_everything_sends_credits_depleted(
    start_sidecar, transport, receiver, receiver_url, db, make_user
):
    user = make_user()
    await start_sidecar(receiver_url, transport)
    await spend(db, user, 500)
    await all_delivered(db, user)
    (depleted,) = receiver.of(user, "credits.depleted")
    assert depleted.payload["data"]["available_credits"] == 0
    assert len(receiver.of(user, "credits.low")) == 1


async def test_a_pack_purchase_sends_credits_granted(
    start_sidecar, transport, receiver, receiver_url, db, make_user
):
    user = make_user()
    client = await start_sidecar(receiver_url, transport)
    w = world()
    _, events = w.buy_pack(w.customer(user_id=str(user)), PACKS["pack_500"][0])
    await deliver_all(client, events)
    await all_delivered(db, user)
    grants = [g.payload["data"] for g in receiver.of(user, "credits.granted")]
    reasons = [(g["reason"], g["granted"]) for g in grants]
    assert reasons == [("signup", 500), ("addon_purchase", 500)]
    assert grants[-1]["addon_credits"] == 500


# -- a receiver that is down gets everything later --------------------------------------


async def test_a_receiver_answering_500_gets_every_event_later_exactly_once(
    start_sidecar, receiver, receiver_url, db, make_user
):
    receiver.fail_next = 3
    users = [make_user() for _ in range(2)]
    await start_sidecar(receiver_url)
    await spend(db, users[0], 500)
    rows = await all_delivered(db, *users)
    accepted = [r.webhook_id for r in receiver.accepted]
    assert sorted(accepted) == sorted(delivered_ids(rows))  # none lost, none twice
    assert receiver.failed == 3
    assert sum(row["attempts"] for row in rows) == len(rows) + 3


async def test_a_closed_port_delays_delivery_until_the_receiver_listens(
    start_sidecar, aiohttp_server, receiver, db, make_user, unused_tcp_port
):
    user = make_user()
    await start_sidecar(f"http://127.0.0.1:{unused_tcp_port}{PATH}")

    async def refused() -> bool:
        rows = await outbox(db, user)
        return bool(rows) and str(rows[0]["last_error"]).startswith("connection failed")

    await eventually(refused, "a refused connection recorded as a failed attempt")
    await aiohttp_server(receiver.app(), port=unused_tcp_port)
    rows = await all_delivered(db, user)
    assert [r.webhook_id for r in receiver.accepted] == delivered_ids(rows)


async def test_a_receiver_slower_than_the_timeout_is_a_failed_attempt(
    start_sidecar, receiver, receiver_url, db, make_user
):
    receiver.delay = 5
    user = make_user()
    await start_sidecar(receiver_url, app_webhook_timeout=0.2)

    async def timed_out() -> bool:
        rows = await outbox(db, user)
        return bool(rows) and rows[0]["last_error"] == "no answer within 0.2 s"

    await eventually(timed_out, "a timeout recorded as a failed attempt")
    receiver.delay = 0
    await all_delivered(db, user)
    assert len(receiver.of(user)) >= 1  # at least once: a late answer may have counted too


# -- several machines, one database -------------------------------------------------------


async def test_two_sidecars_on_one_database_never_deliver_an_event_twice(
    start_sidecar, receiver, receiver_url, db, make_user
):
    users = [make_user() for _ in range(60)]
    for user in users[:20]:
        await spend(db, user, 500)  # credits.low and credits.depleted each
    await asyncio.gather(start_sidecar(receiver_url), start_sidecar(receiver_url, "postgrest"))
    rows = await all_delivered(db, *users)
    accepted = [r.webhook_id for r in receiver.accepted]
    assert len(rows) == 100
    assert sorted(accepted) == sorted(delivered_ids(rows))


# -- the database goes away and comes back ------------------------------------------------


async def test_a_database_outage_pauses_delivery_and_it_resumes_after(
    start_sidecar, transport, receiver, receiver_url, database_url, db, make_user
):
    proxy = TcpProxy.to_url(database_url)
    await proxy.start()
    client = await start_sidecar(receiver_url, transport, database=proxy.url(database_url))
    user = make_user()
    await all_delivered(db, user)  # working through the proxy
    await proxy.stop()
    await spend(db, user, 450)  # written while the sidecar cannot reach the database
    registry = client.app[METRICS].registry

    async def failed_once() -> bool:
        failures = registry.get_sample_value(
            "tally_background_job_failures_total", {"job": "balance_event_delivery"}
        )
        return (failures or 0) >= 1

    await eventually(failed_once, "a failed round while the database is away")
    await proxy.start()
    await all_delivered(db, user)
    assert [r.type for r in receiver.of(user)] == ["credits.granted", "credits.low"]
    assert not client.app[BACKGROUND_TASKS]["balance_event_delivery"].done()
    await proxy.stop()


# -- what operators see -------------------------------------------------------------------


async def test_metrics_show_the_backlog_and_deliveries_by_type(
    start_sidecar, receiver, receiver_url, db, make_user
):
    receiver.fail_next = ALWAYS
    user = make_user()
    client = await start_sidecar(receiver_url)

    async def metrics_show(*lines: str) -> bool:
        text = await (await client.get("/metrics")).text()
        return all(line in text for line in lines)

    await eventually(
        lambda: metrics_show(
            'tally_balance_event_deliveries_total{outcome="failed",type="credits.granted"}',
            "tally_balance_events_pending 1.0",
            "tally_balance_events_failing 1.0",
        ),
        "a failing event in the backlog",
    )
    receiver.fail_next = 0
    await all_delivered(db, user)
    await eventually(
        lambda: metrics_show(
            'tally_balance_event_deliveries_total{outcome="delivered",type="credits.granted"} 1.0',
            "tally_balance_events_pending 0.0",
            "tally_balance_events_oldest_seconds 0.0",
        ),
        "an empty backlog",
    )


async def test_a_failed_attempt_logs_one_line_without_payload_or_secret(
    start_sidecar, receiver, receiver_url, db, make_user, caplog
):
    caplog.set_level(logging.WARNING, logger="sidecar")
    receiver.fail_next = 1
    user = make_user()
    await start_sidecar(receiver_url)
    rows = await all_delivered(db, user)
    records = [r for r in caplog.records if r.getMessage() == "balance event delivery failed"]
    assert len(records) == 1
    line = json.loads(JsonFormatter().format(records[0]))
    assert line["webhook_id"] == delivered_ids(rows)[0]
    assert (line["type"], line["user_id"], line["attempt"]) == ("credits.granted", str(user), 1)
    assert line["reason"] == "HTTP 500"
    rendered = json.dumps(line)
    assert APP_SECRET not in rendered and "available_credits" not in rendered
    assert receiver_url not in rendered


async def test_without_an_app_webhook_url_nothing_is_delivered(sidecar):
    assert set(sidecar.app[BACKGROUND_TASKS]) == {"expire_holds", "apply_ready_stripe_events"}


# -- settings ------------------------------------------------------------------------------

ENVIRONMENT = {
    "STRIPE_WEBHOOK_SECRETS": "whsec_one",
    "STRIPE_SECRET_KEY": "sk_test_secretvalue",
    "APP_BASE_URL": "https://app.example.com",
    "DATABASE_URL": "postgresql://postgres@db.example.com/postgres",
    "SUPABASE_JWT_SECRET": "jwt-secret-value",
    "APP_WEBHOOK_URL": "https://backend.example.com/hooks/credits",
    "APP_WEBHOOK_SECRET": APP_SECRET,
}


def test_the_delivery_timeout_defaults_to_ten_seconds():
    assert Config.from_env(ENVIRONMENT).app_webhook_timeout == 10


def test_the_delivery_timeout_is_read_from_app_webhook_timeout():
    assert Config.from_env({**ENVIRONMENT, "APP_WEBHOOK_TIMEOUT": "2.5"}).app_webhook_timeout == 2.5


def test_a_delivery_timeout_over_a_minute_is_refused():
    with pytest.raises(ConfigError) as caught:
        Config.from_env({**ENVIRONMENT, "APP_WEBHOOK_TIMEOUT": "600"})
    assert caught.value.problems == ["APP_WEBHOOK_TIMEOUT must be between 0.1 and 60"]
