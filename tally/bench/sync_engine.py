"""Supabase's own Stripe-to-Postgres webhook sync, fed the same signed events.

`@supabase/stripe-sync-engine` is installed at run time with npm into a
scratch directory outside the repository (never committed), its migrations
are run against a database of its own on the same server, and
sync_engine_server.cjs (ours) serves its `processWebhook` on loopback.
It stores each Stripe object it is sent and grants nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psycopg

PACKAGE = "@supabase/stripe-sync-engine"
VERSION = "0.48.5"
WRAPPER = Path(__file__).with_name("sync_engine_server.cjs")
INSTALL_TIMEOUT = 600


class SyncEngineUnavailable(RuntimeError):
    """npm or node is missing, or the package could not be installed or migrated."""


@dataclass(frozen=True)
class SyncEngine:
    directory: Path  # holds node_modules/
    node: str
    stripe_version: str  # the `stripe` package npm chose for its peer dependency

    def command(self, mode: str) -> list[str]:
        return [self.node, str(WRAPPER), mode]

    def environment(self, database_url: str, **extra: str) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),
            "SYNC_ENGINE_DIR": str(self.directory),
            "DATABASE_URL": database_url,
            **extra,
        }


def cache_directory() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tally-bench" / f"stripe-sync-engine-{VERSION}"


def installed_version(directory: Path, package: str) -> str | None:
    manifest = directory / "node_modules" / package / "package.json"
    try:
        return str(json.loads(manifest.read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


def install(directory: Path | None = None) -> SyncEngine:
    """The package at exactly VERSION, installed once into the cache directory."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        raise SyncEngineUnavailable("node and npm are needed (not found on PATH)")
    directory = directory or cache_directory()
    if installed_version(directory, PACKAGE) != VERSION:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "package.json").write_text('{"private": true}\n')
        print(f"installing {PACKAGE}@{VERSION} with npm into {directory}", flush=True)
        result = subprocess.run(
            [npm, "install", "--save-exact", "--no-audit", "--no-fund", f"{PACKAGE}@{VERSION}"],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT,
        )
        if result.returncode != 0 or installed_version(directory, PACKAGE) != VERSION:
            raise SyncEngineUnavailable(f"npm install failed: {result.stderr.strip()[-500:]}")
    stripe_version = installed_version(directory, "stripe") or "?"
    return SyncEngine(directory, node, stripe_version)


def migrate(engine: SyncEngine, database_url: str) -> None:
    """Run the package's own migrations (runMigrations) and check they took."""
    result = subprocess.run(
        engine.command("migrate"),
        env=engine.environment(database_url),
        capture_output=True,
        text=True,
        timeout=120,
    )
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("select to_regclass('stripe.invoices') is not null").fetchone()
    if result.returncode != 0 or not (row and row[0]):
        detail = (result.stderr or result.stdout).strip()[-500:]
        raise SyncEngineUnavailable(f"its migrations did not create stripe.invoices: {detail}")


def stored_invoices(database_url: str, invoice_ids: list[str]) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "select count(*) from stripe.invoices where id = any(%s)", (invoice_ids,)
        ).fetchone()
    return row[0] if row else 0
