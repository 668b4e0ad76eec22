"""The development command: `python3 scripts/tally.py dev`.

Keeps the local stack up until Ctrl-C: a throwaway PostgreSQL (unless
DATABASE_URL names one) with the stand-in, migrations and seed applied, and the
sidecar on PORT (default 8080), so that

    stripe listen --forward-to localhost:8080/webhooks/stripe

can feed it real test-mode events. The pieces it starts are also what the demo
(tally/demo.py) runs its lifecycle against.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit, urlunsplit

import psycopg

from tally.migrate import prepare_database
from tally.paths import ROOT
from tally.pg import LocalPostgres

DEFAULT_PORT = 8080
LOCAL_DATABASE = "tally"
# Not a key: the sidecar needs one to start, and nothing local ever calls Stripe with it.
PLACEHOLDER_STRIPE_KEY = "sk_test_local_placeholder_not_a_real_key"
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


class StackError(RuntimeError):
    """A part of the local stack did not come up."""


@dataclass
class SidecarSettings:
    """What the sidecar process is started with (its environment, sidecar/README.md)."""

    database_url: str
    webhook_secrets: list[str]
    port: int = DEFAULT_PORT
    host: str = "127.0.0.1"  # local only; `stripe listen` forwards to localhost
    # Act as service_role, as calls through PostgREST do: only its grants apply.
    database_role: str = "service_role"
    stripe_secret_key: str = PLACEHOLDER_STRIPE_KEY
    app_base_url: str = "http://localhost:3000"
    jwt_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    extra: Mapping[str, str] = field(default_factory=dict)

    def environment(self) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY", "DB_TRANSPORT")
        }
        env.update(
            DATABASE_URL=self.database_url,
            DATABASE_ROLE=self.database_role,
            STRIPE_WEBHOOK_SECRETS=",".join(self.webhook_secrets),
            STRIPE_SECRET_KEY=self.stripe_secret_key,
            APP_BASE_URL=self.app_base_url,
            SUPABASE_JWT_SECRET=self.jwt_secret,
            ENV="development",
            HOST=self.host,
            PORT=str(self.port),
            PYTHONUNBUFFERED="1",
        )
        env.update(self.extra)
        return env


def new_webhook_secret() -> str:
    """A signing secret for this machine only, shaped like Stripe's."""
    return "whsec_" + secrets.token_hex(24)


def redact(database_url: str) -> str:
    """The URL without its password, for printing."""
    parts = urlsplit(database_url)
    if parts.password is None:
        return database_url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


@contextmanager
def local_database(root: Path | None = None) -> Iterator[str]:
    """A throwaway PostgreSQL with the stand-in, migrations and seed applied."""
    owned = root is None
    root = root or Path(tempfile.mkdtemp(prefix="tally-local-pg-"))
    server = LocalPostgres(root)
    try:
        server.start()
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            conn.execute(f"create database {LOCAL_DATABASE}")
        dsn = server.dsn(LOCAL_DATABASE)
        prepare_database(dsn)
        yield dsn
    finally:
        server.stop()
        if owned:
            shutil.rmtree(root, ignore_errors=True)


@contextmanager
def running_sidecar(
    settings: SidecarSettings, output: IO[str] | None = None
) -> Iterator[subprocess.Popen[str]]:
    """`python -m sidecar` as a child process, ready to serve; stopped on the way out."""
    process = subprocess.Popen(
        [sys.executable, "-m", "sidecar"],
        cwd=ROOT,
        env=settings.environment(),
        stdout=output,
        stderr=subprocess.STDOUT if output is not None else None,
        text=True,
        start_new_session=True,  # Ctrl-C reaches us only; we stop it in order
    )
    try:
        wait_until_ready(f"http://127.0.0.1:{settings.port}", process)
        yield process
    finally:
        stop_process(process)


def wait_until_ready(base_url: str, process: subprocess.Popen[str]) -> None:
    """Poll /readyz until the sidecar answers 200 (database reachable)."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StackError(f"the sidecar exited with code {process.returncode} at start-up")
        try:
            with urllib.request.urlopen(f"{base_url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise StackError(f"the sidecar was not ready at {base_url}/readyz after {READY_TIMEOUT:.0f}s")


def stop_process(process: subprocess.Popen[str]) -> None:
    """SIGTERM (the sidecar drains and exits), then SIGKILL if it hangs."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def parse_port(value: str | None) -> int:
    if not value:
        return DEFAULT_PORT
    try:
        port = int(value)
    except ValueError:
        raise SystemExit(f"PORT must be a number, not {value!r}") from None
    if not 0 < port < 65536:
        raise SystemExit(f"PORT must be between 1 and 65535, not {port}")
    return port


def webhook_secrets_from_env() -> tuple[list[str], bool]:
    """STRIPE_WEBHOOK_SECRETS if set (comma-separated), else one new local secret."""
    configured = [s.strip() for s in os.environ.get("STRIPE_WEBHOOK_SECRETS", "").split(",")]
    configured = [s for s in configured if s]
    if configured:
        return configured, False
    return [new_webhook_secret()], True


def print_instructions(settings: SidecarSettings, generated_secret: bool) -> None:
    base = f"http://localhost:{settings.port}"
    print(f"\ntally dev stack is up (Ctrl-C stops it)\n  database  {redact(settings.database_url)}")
    print(f"  sidecar   {base}  (/healthz /readyz /metrics /webhooks/stripe /billing/...)")
    if generated_secret:
        print(f"  webhook signing secret (local only, new each run): {settings.webhook_secrets[0]}")
        print(
            "\nTo feed it real test-mode events from your Stripe account, stop this, then:\n"
            "  export STRIPE_WEBHOOK_SECRETS=$(stripe listen --print-secret)\n"
            "  python3 scripts/tally.py dev\n"
            f"  stripe listen --forward-to localhost:{settings.port}/webhooks/stripe"
        )
    else:
        print("  webhook signing secrets: from STRIPE_WEBHOOK_SECRETS")
        print(
            "\nIn another terminal:\n"
            f"  stripe listen --forward-to localhost:{settings.port}/webhooks/stripe\n"
            "  stripe trigger invoice.paid    # or drive a subscription with a test clock"
        )
    print(flush=True)


def supervise(process: subprocess.Popen[str]) -> int:
    """Wait until Ctrl-C or SIGTERM (KeyboardInterrupt); a sidecar that dies ends it."""
    while process.poll() is None:
        time.sleep(0.5)
    print(f"the sidecar exited with code {process.returncode}", file=sys.stderr)
    return process.returncode or 1


def interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextmanager
def database_for_dev(url: str | None, migrate: bool) -> Iterator[str]:
    """The given database (DATABASE_URL; migrated only if asked), else a throwaway one."""
    if not url:
        print("starting a local PostgreSQL and applying the stand-in, migrations and seed...")
        with local_database() as dsn:
            yield dsn
        return
    if migrate:
        # A plain Postgres gets the stand-in and the demo catalog; a Supabase
        # database (it has auth.users) only the migrations, never fake prices.
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute("select to_regclass('auth.users') is not null").fetchone()
        plain = not (row and row[0])
        applied = prepare_database(url, stand_in=plain, seed=plain)
        print(f"applied {len(applied)} migration(s) to {redact(url)}")
    yield url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--migrate",
        action="store_true",
        help="with DATABASE_URL set: apply pending migrations to it first (and, on a plain"
        " Postgres without auth.users, the stand-in and the demo catalog)",
    )
    args = parser.parse_args(argv)
    # From here on SIGTERM unwinds like Ctrl-C: the sidecar and the database stop in order.
    signal.signal(signal.SIGTERM, interrupt)
    port = parse_port(os.environ.get("PORT"))
    webhook_secrets, generated = webhook_secrets_from_env()
    try:
        with database_for_dev(os.environ.get("DATABASE_URL"), args.migrate) as dsn:
            settings = SidecarSettings(
                database_url=dsn,
                webhook_secrets=webhook_secrets,
                port=port,
                host=os.environ.get("HOST") or "127.0.0.1",
                database_role=os.environ.get("DATABASE_ROLE") or "service_role",
                stripe_secret_key=os.environ.get("STRIPE_SECRET_KEY", PLACEHOLDER_STRIPE_KEY),
                app_base_url=os.environ.get("APP_BASE_URL", "http://localhost:3000"),
                jwt_secret=os.environ.get("SUPABASE_JWT_SECRET") or secrets.token_urlsafe(32),
            )
            with running_sidecar(settings) as process:
                print_instructions(settings, generated)
                return supervise(process)
    except StackError as error:
        print(f"dev: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopped: the sidecar and the local database are down")
        return 0


if __name__ == "__main__":
    sys.exit(main())
