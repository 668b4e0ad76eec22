"""Test harness: one real PostgreSQL server per test session (per xdist worker).

The stand-in for Supabase, the migrations and the seed are applied once to a
template database; every test that asks for `database_url` gets a fresh copy
of it, and on the way out every balance must equal the sum of its ledger rows.
"""

from __future__ import annotations

import itertools
import json
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from tally.migrate import prepare_database
from tally.pg import LocalPostgres

TEMPLATE = "tally_template"
_database_numbers = itertools.count()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[LocalPostgres]:
    # Not under pytest's tmp_path: as root, that is private to root, and the
    # server runs as an unprivileged user that must be able to reach it.
    root = Path(tempfile.mkdtemp(prefix="tally-test-pg-"))
    server = LocalPostgres(root, fast_and_unsafe=True).start()
    try:
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            conn.execute(f"create database {TEMPLATE}")
        prepare_database(server.dsn(TEMPLATE))
        yield server
    finally:
        server.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def database_url(pg_server: LocalPostgres) -> Iterator[str]:
    name = f"test_{next(_database_numbers)}"
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        # file_copy (PostgreSQL 15+) copies the small template files directly,
        # several times faster than the WAL-logged default.
        strategy = " strategy file_copy" if conn.info.server_version >= 150000 else ""
        conn.execute(f"create database {name} template {TEMPLATE}{strategy}")
    dsn = pg_server.dsn(name)
    yield dsn
    try:
        assert_balances_equal_ledger_sums(dsn)
    finally:
        with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
            conn.execute(f"drop database if exists {name} with (force)")


def assert_balances_equal_ledger_sums(dsn: str) -> None:
    """Every balance equals the sum of its ledger rows, and none is negative."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        mismatches = conn.execute(
            """
            select a.user_id, a.plan_credits, a.addon_credits,
                   coalesce(l.plan_sum, 0), coalesce(l.addon_sum, 0)
              from tally.accounts a
              left join (select user_id, sum(plan_delta) as plan_sum,
                                sum(addon_delta) as addon_sum
                           from tally.ledger_entries group by user_id) l using (user_id)
             where a.plan_credits <> coalesce(l.plan_sum, 0)
                or a.addon_credits <> coalesce(l.addon_sum, 0)
                or a.plan_credits < 0 or a.addon_credits < 0
            """
        ).fetchall()
        orphans = conn.execute(
            "select distinct user_id from tally.ledger_entries l"
            " where not exists (select 1 from tally.accounts a where a.user_id = l.user_id)"
        ).fetchall()
    assert not mismatches, f"balance differs from ledger sum: {mismatches}"
    assert not orphans, f"ledger rows without an account: {orphans}"


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection]:
    """A superuser connection (like the migrations' owner) with dict rows."""
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


def create_user(conn: psycopg.Connection, email: str | None = None) -> uuid.UUID:
    """Insert a row into auth.users, as Supabase Auth does on sign-up."""
    user_id = uuid.uuid4()
    conn.execute(
        "insert into auth.users (id, aud, role, email) values (%s, 'authenticated',"
        " 'authenticated', %s)",
        (user_id, email or f"{user_id}@example.test"),
    )
    return user_id


@pytest.fixture
def make_user(db: psycopg.Connection):
    return lambda email=None: create_user(db, email)


@contextmanager
def acting_as(conn: psycopg.Connection, role: str, user_id: uuid.UUID | None = None):
    """Run statements as PostgREST would for a request: a role and JWT claims.

    Opens a transaction, switches role with `set local role` and sets
    `request.jwt.claims`, then rolls everything back.
    """
    claims = {"role": role}
    if user_id is not None:
        claims["sub"] = str(user_id)
    with conn.transaction(force_rollback=True):
        conn.execute(f"set local role {role}")
        conn.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))
        yield conn
