"""Faults in the middle of a run: with Stripe's redelivery of every non-2xx, nothing is lost.

Postgres is restarted cleanly and by a crash, connections are terminated,
statements time out, rows stay locked past the sidecar's timeout, and the
sidecar process is killed with SIGKILL mid-request. These tests run their
own PostgreSQL server (durable settings: a crash must not lose a commit) so
that restarting it affects no other test.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from aiohttp.test_utils import TestServer

from sidecar.app import create_app
from tally.migrate import prepare_database
from tally.pg import LocalPostgres
from tests.chaos.conftest import PRICES
from tests.chaos.test_http_delivery import summary
from tests.conftest import assert_balances_equal_ledger_sums
from tests.sidecar.conftest import WEBHOOK_SECRET, base_config
from tests.simulation import faults
from tests.simulation.database import install_catalog
from tests.simulation.processes import SidecarProcess
from tests.simulation.run import FaultSchedule, simulate
from tests.simulation.stories import new_user_ids

DBNAME = "chaos"


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[LocalPostgres]:
    root = Path(tempfile.mkdtemp(prefix="tally-chaos-pg-"))
    server = LocalPostgres(root).start()
    try:
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            conn.execute(f"create database {DBNAME}")
        prepare_database(server.dsn(DBNAME))
        with psycopg.connect(server.dsn(DBNAME), autocommit=True) as conn:
            install_catalog(conn)
        yield server
        assert_balances_equal_ledger_sums(server.dsn(DBNAME))
    finally:
        server.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)


async def test_database_restarts_cut_connections_and_timeouts_lose_nothing(
    aiohttp_server, own_postgres
):
    dsn, admin_dsn = own_postgres.dsn(DBNAME), own_postgres.dsn()
    seed, customers = 303, 40
    config = dataclasses.replace(base_config(database_url=dsn), db_timeout=1.0)
    server: TestServer = await aiohttp_server(create_app(config))
    schedule = FaultSchedule()
    schedule.add(60, "connections terminated", faults.terminate_backends(admin_dsn, DBNAME))
    schedule.add(150, "statement timeouts", faults.statement_timeouts(admin_dsn, DBNAME))
    schedule.add(260, "postgres restarted", faults.restart_postgres(own_postgres, "fast"))
    locked = new_user_ids(seed, customers)[:20]
    schedule.add(
        360, "account rows locked past the timeout", faults.hold_account_locks(dsn, locked)
    )
    schedule.add(460, "postgres crashed", faults.restart_postgres(own_postgres, "immediate"))
    report = await simulate(
        str(server.make_url("/webhooks/stripe")),
        WEBHOOK_SECRET,
        dsn,
        PRICES,
        seed=seed,
        customers=customers,
        faults=schedule,
    )
    assert report.ok, summary(report)
    assert sum(report.faults.values()) == 5, report.faults
    assert report.statuses[503] > 0, report.statuses
    assert set(report.statuses) <= {200, 503}, report.statuses


async def test_a_sidecar_killed_mid_request_loses_nothing(own_postgres, tmp_path):
    dsn = own_postgres.dsn(DBNAME)
    sidecar = SidecarProcess(dsn, WEBHOOK_SECRET, log_path=tmp_path / "sidecar.log").start()
    try:
        schedule = FaultSchedule()
        for at in (80, 220, 380):
            schedule.add(at, "sidecar killed (SIGKILL)", faults.kill_sidecar(sidecar))
        report = await simulate(
            f"{sidecar.url}/webhooks/stripe",
            WEBHOOK_SECRET,
            dsn,
            PRICES,
            seed=404,
            customers=40,
            faults=schedule,
        )
    finally:
        sidecar.stop()
    assert report.ok, summary(report)
    assert sidecar.kills == 3
    assert report.statuses[0] > 0, report.statuses  # requests cut by the kill, then redelivered
    assert 500 not in report.statuses
