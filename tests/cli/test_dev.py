"""tally/dev.py: the dev command keeps the sidecar up on the given database."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import psycopg
import pytest

from tally import dev
from tally.migrate import apply_stand_in
from tally.pg import free_port
from tally.stripe_events import StripeWorld, signed_request

ROOT = Path(__file__).resolve().parents[2]


def wait_until_up(process: subprocess.Popen, output: IO[str]) -> None:
    """Until the dev command says the stack is up (its sidecar is ready by then)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, "the dev command exited before it was up"
        output.seek(0)
        if "dev stack is up" in output.read():
            return
        time.sleep(0.2)
    raise AssertionError("the dev stack never came up")


def post_webhook(port: int, event: dict, secret: str) -> dict:
    body, headers = signed_request(event, secret)
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/webhooks/stripe", data=body, headers=headers, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@dataclass
class DevProcess:
    process: subprocess.Popen
    port: int
    secret: str
    output: IO[str]

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)

    def printed(self) -> str:
        self.output.seek(0)
        return self.output.read()


@pytest.fixture
def dev_process(database_url):
    port = free_port()
    secret = dev.new_webhook_secret()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "PORT": str(port),
        "STRIPE_WEBHOOK_SECRETS": f"whsec_previous_secret,{secret}",
    }
    with (
        tempfile.TemporaryFile("w+") as output,
        subprocess.Popen(
            [sys.executable, "-m", "tally.dev"],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
        ) as process,
    ):
        try:
            wait_until_up(process, output)
            yield DevProcess(process, port, secret, output)
        finally:
            # SIGTERM, not SIGKILL: the dev command must get to stop its sidecar.
            if process.poll() is None:
                dev.stop_process(process)


def test_dev_serves_webhooks_signed_with_any_configured_secret(dev_process):
    event = StripeWorld().unhandled("customer.updated")
    assert post_webhook(dev_process.port, event, dev_process.secret)["status"] == "ignored"


def test_dev_stops_cleanly_on_sigterm_and_stops_its_sidecar(dev_process):
    assert dev_process.stop() == 0
    port = dev_process.port
    assert f"stripe listen --forward-to localhost:{port}/webhooks/stripe" in dev_process.printed()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)


def test_dev_never_prints_configured_secrets(dev_process):
    dev_process.stop()
    assert dev_process.secret not in dev_process.printed()


def test_redact_hides_the_database_password():
    url = "postgresql://postgres:s3cret@db.example.supabase.co:5432/postgres"
    assert dev.redact(url) == "postgresql://postgres:***@db.example.supabase.co:5432/postgres"


def test_a_port_outside_the_tcp_range_is_refused_with_a_message():
    with pytest.raises(SystemExit, match="between 1 and 65535"):
        dev.parse_port("70000")


def test_webhook_secrets_are_read_comma_separated_without_blanks(monkeypatch):
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRETS", " whsec_old , whsec_new ,")
    assert dev.webhook_secrets_from_env() == (["whsec_old", "whsec_new"], False)


def test_without_configured_secrets_one_local_secret_is_made(monkeypatch):
    monkeypatch.delenv("STRIPE_WEBHOOK_SECRETS", raising=False)
    secrets, generated = dev.webhook_secrets_from_env()
    assert generated
    assert len(secrets) == 1 and secrets[0].startswith("whsec_")


def test_migrate_on_a_plain_postgres_applies_the_stand_in_migrations_and_catalog(pg_server):
    name = f"dev_migrate_{os.getpid()}"
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(f"create database {name}")
    try:
        url = pg_server.dsn(name)
        with dev.database_for_dev(url, migrate=True) as used:
            assert used == url
        with psycopg.connect(url) as conn:
            plans = conn.execute("select count(*) from public.plans").fetchone()[0]
            users = conn.execute("select to_regclass('auth.users') is not null").fetchone()[0]
        assert users and plans > 0
    finally:
        with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
            conn.execute(f"drop database {name} with (force)")


def test_migrate_on_a_supabase_database_adds_no_demo_catalog(pg_server):
    name = f"dev_supabase_{os.getpid()}"
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(f"create database {name}")
    try:
        url = pg_server.dsn(name)
        with psycopg.connect(url, autocommit=True) as conn:
            apply_stand_in(conn)  # what a Supabase project already has
        with dev.database_for_dev(url, migrate=True):
            pass
        with psycopg.connect(url) as conn:
            assert conn.execute("select count(*) from public.plans").fetchone()[0] == 0
    finally:
        with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
            conn.execute(f"drop database {name} with (force)")
