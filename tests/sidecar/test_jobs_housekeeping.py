"""Housekeeping jobs (sidecar/jobs/housekeeping.py) against the real engine.

Each sidecar runs a round of every job as it starts, then one per interval;
a test sets the database up first and then starts the sidecar.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from aiohttp.test_utils import TestClient

from sidecar.context import METRICS
from sidecar.jobs.loop import BACKGROUND_TASKS
from tests.sidecar.conftest import MakeClient, deliver_all, postgrest_client, world
from tests.support.polling import eventually

STARTER_PRICE = "price_starter_monthly_fake"


@pytest.fixture(params=["postgres", "postgrest"])
def start_sidecar(request, make_sidecar: MakeClient, aiohttp_server, fake_postgrest):
    """Start a sidecar on each transport in turn, when the test is ready for it."""

    async def start() -> TestClient:
        if request.param == "postgres":
            return await make_sidecar()
        server = await aiohttp_server(fake_postgrest.app())
        return await postgrest_client(make_sidecar, str(server.make_url("")).rstrip("/"))

    return start


async def value(db: psycopg.Connection, query: str, *params: Any) -> Any:
    """The first column of the first row (if any), off the event loop the sidecar shares."""

    def run() -> Any:
        cursor = db.execute(query, params)
        row = cursor.fetchone() if cursor.description else None
        return None if row is None else next(iter(row.values()))

    return await asyncio.to_thread(run)


def job_count(client: TestClient, name: str, metric: str) -> float:
    found = client.app[METRICS].registry.get_sample_value(metric, {"job": name})
    return found or 0.0


async def test_an_expired_hold_is_marked_expired(start_sidecar, db, make_user):
    user = make_user()
    await value(db, "select public.reserve_credits(%s, 100, 'render-1', 60)", user)
    # Its expiry has passed (moved back rather than waited for).
    await value(db, "update tally.holds set expires_at = now() - interval '1 second'")
    await start_sidecar()

    async def expired() -> bool:
        status = await value(db, "select status from tally.holds where user_id = %s", user)
        return bool(status == "expired")

    await eventually(expired, "the hold marked expired")
    available = await value(
        db, "select available_credits from public.credit_balances where user_id = %s", user
    )
    assert available == 500


async def test_ready_parked_events_left_by_a_link_are_applied(start_sidecar, db, make_user):
    client = await start_sidecar()
    user = make_user()
    w = world()
    customer = w.customer(user_id=None)
    sub, events = w.subscribe(customer, STARTER_PRICE, via_checkout=False)
    await deliver_all(client, events)
    wake_batch = await value(db, "select tally.wake_batch_size()")
    parked = "select count(*) from tally.stripe_events where outcome = 'parked'"
    while await value(db, parked) <= wake_batch:
        await deliver_all(client, w.renew(sub))
    # The link applies one batch in its own transaction and leaves the rest ready.
    await value(db, "select public.link_stripe_customer(%s, %s)", user, customer.id)
    assert await value(db, parked) > 0

    async def none_parked() -> bool:
        return bool(await value(db, parked) == 0)

    await eventually(none_parked, "every woken event applied")

    # The job counts once its call has returned, a moment after the commit seen above.
    async def counted() -> bool:
        return job_count(client, "apply_ready_stripe_events", "tally_housekeeping_items_total") > 0

    await eventually(counted, "the job counted the events it applied")
    plan_key = await value(
        db, "select plan_key from public.credit_balances where user_id = %s", user
    )
    assert plan_key == "starter"


async def test_jobs_keep_running_while_the_database_is_unreachable(make_sidecar, unused_tcp_port):
    client = await make_sidecar(database_url=f"postgresql://postgres@127.0.0.1:{unused_tcp_port}/x")

    async def failed_each() -> bool:
        return all(
            job_count(client, job, "tally_background_job_failures_total") >= 1
            for job in ("expire_holds", "apply_ready_stripe_events")
        )

    await eventually(failed_each, "a failed round of each job")
    assert not any(task.done() for task in client.app[BACKGROUND_TASKS].values())


async def test_shutdown_stops_every_background_job(make_sidecar):
    client = await make_sidecar(
        app_webhook_url="http://127.0.0.1:9/hooks",
        app_webhook_secret="whsec_dGFsbHktdGVzdC1hcHAtd2ViaG9vay1rZXk=",
    )
    tasks = list(client.app[BACKGROUND_TASKS].values())
    assert len(tasks) == 4
    await client.close()
    assert all(task.done() for task in tasks)
