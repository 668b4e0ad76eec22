"""The PostgreSQL the benchmark runs on: a throwaway local server or a given one.

The throwaway server keeps durable commits (fsync and synchronous_commit on,
as production has) and preloads pg_stat_statements, so the database's own
cost per call can be read beside the client-side latency. A given server
(`--database-url`) is used as it is: pg_stat_statements only if it has it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

from tally.migrate import prepare_database
from tally.pg import LocalPostgres

BENCH_DATABASE = "tally_bench"
SYNC_ENGINE_DATABASE = "tally_bench_stripe_sync"


@dataclass(frozen=True)
class Server:
    """Where the benchmark's databases are."""

    database_url: str  # the migrated tally database
    admin_url: str  # a database on the same server to create others from
    postmaster_pid: int | None  # known for the throwaway server only (CPU figures)
    statements: bool  # pg_stat_statements usable in database_url
    statements_note: str

    def url_of(self, database: str) -> str:
        return with_database(self.database_url, database)


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


@contextmanager
def throwaway_server() -> Iterator[Server]:
    root = Path(tempfile.mkdtemp(prefix="tally-bench-pg-"))
    root.chmod(0o755)  # the server's unprivileged user must reach its data directory
    server = LocalPostgres(root).start()
    try:
        preloaded = preload_statements(server)
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            conn.execute(f"create database {BENCH_DATABASE}")
        url = server.dsn(BENCH_DATABASE)
        prepare_database(url)
        usable, note = enable_statements(url) if preloaded else (False, preloaded_note())
        yield Server(url, server.dsn(), postmaster_pid(server), usable, note)
    finally:
        server.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)


def preloaded_note() -> str:
    return "pg_stat_statements is not installed with this PostgreSQL"


def preload_statements(server: LocalPostgres) -> bool:
    """Load pg_stat_statements at start-up, if this PostgreSQL ships it."""
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        row = conn.execute(
            "select count(*) from pg_available_extensions where name = 'pg_stat_statements'"
        ).fetchone()
        if not row or not row[0]:
            return False
        conn.execute("alter system set shared_preload_libraries = 'pg_stat_statements'")
    server.restart()
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        # Top-level statements only: the cost of one apply_stripe_event call, whole.
        # (Its own settings exist only once the library is loaded.)
        conn.execute("alter system set pg_stat_statements.track = 'top'")
        conn.execute("select pg_reload_conf()")
    return True


def postmaster_pid(server: LocalPostgres) -> int | None:
    pid_file = server.datadir / "postmaster.pid"
    try:
        return int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


@contextmanager
def given_server(url: str) -> Iterator[Server]:
    usable, note = enable_statements(url)
    yield Server(url, url, None, usable, note)


def enable_statements(url: str) -> tuple[bool, str]:
    """Create the extension where it is preloaded; say why not otherwise."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("show shared_preload_libraries").fetchone()
        if "pg_stat_statements" not in (row[0] if row else ""):
            return False, "pg_stat_statements is not in shared_preload_libraries"
        try:
            conn.execute("create extension if not exists pg_stat_statements")
            conn.execute("select pg_stat_statements_reset()")
        except psycopg.Error as error:
            return False, f"pg_stat_statements unusable: {error.diag.message_primary}"
    return True, "pg_stat_statements (track = top)"


def create_database(server: Server, name: str) -> str:
    """A fresh, empty database on the benchmark's server; its URL."""
    with psycopg.connect(server.admin_url, autocommit=True) as conn:
        conn.execute(f"drop database if exists {name} with (force)")
        conn.execute(f"create database {name}")
    return server.url_of(name)


def drop_database(server: Server, name: str) -> None:
    with psycopg.connect(server.admin_url, autocommit=True) as conn:
        conn.execute(f"drop database if exists {name} with (force)")


def redact(url: str) -> str:
    """The URL without its password, for printing."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))
