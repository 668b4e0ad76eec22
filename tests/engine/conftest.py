"""Fixtures for SQL-level tests of the credit engine (issue 2).

Tests here share one database per module (see `database_url` below).

`engine` calls the public functions as the sidecar and operators do (role
`service_role`, like PostgREST with the service key) and reads results through
the public views as the superuser; `service` is that service_role connection.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from tests.conftest import TEMPLATE, assert_balances_equal_ledger_sums, create_user
from tests.support import typed_events as te


class Engine:
    """The engine's public interface, driven as the sidecar and operators drive it."""

    def __init__(self, db: psycopg.Connection, service: psycopg.Connection) -> None:
        self.db = db
        self.service = service

    # --- functions (as service_role) -------------------------------------------

    def call(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        row = self.service.execute(sql, params).fetchone()
        return None if row is None else next(iter(row.values()))

    def apply(self, event: dict[str, Any]) -> dict[str, Any]:
        return self.call("select public.apply_stripe_event(%s) as result", (Jsonb(event),))

    def apply_all(self, *events: dict[str, Any]) -> list[dict[str, Any]]:
        return [self.apply(event) for event in events]

    def spend(
        self, user_id: Any, amount: int, key: str | None = None, reason: str | None = None
    ) -> dict[str, Any]:
        return self.call(
            "select public.spend_credits(%s::uuid, %s, %s, %s) as result",
            (str(user_id), amount, key or f"spend-{uuid.uuid4()}", reason),
        )

    def reverse(self, user_id: Any, key: str, reason: str | None = None) -> dict[str, Any]:
        return self.call(
            "select public.reverse_spend(%s::uuid, %s, %s) as result", (str(user_id), key, reason)
        )

    def reserve(
        self, user_id: Any, amount: int, key: str, ttl_seconds: int = 900
    ) -> dict[str, Any]:
        return self.call(
            "select public.reserve_credits(%s::uuid, %s, %s, %s) as result",
            (str(user_id), amount, key, ttl_seconds),
        )

    def commit(self, user_id: Any, key: str, amount: int | None = None) -> dict[str, Any]:
        return self.call(
            "select public.commit_hold(%s::uuid, %s, %s) as result", (str(user_id), key, amount)
        )

    def release(self, user_id: Any, key: str) -> dict[str, Any]:
        return self.call("select public.release_hold(%s::uuid, %s) as result", (str(user_id), key))

    def adjust(
        self, user_id: Any, amount: int, reason: str | None = "test", key: str | None = None
    ) -> dict[str, Any]:
        return self.call(
            "select public.adjust_credits(%s::uuid, %s, %s, %s) as result",
            (str(user_id), amount, reason, key or f"adjust-{uuid.uuid4()}"),
        )

    def link(self, user_id: Any, customer_id: str) -> None:
        self.service.execute(
            "select public.link_stripe_customer(%s::uuid, %s)", (str(user_id), customer_id)
        )

    def retry_rejected(self) -> Any:
        return self.call("select public.retry_rejected_stripe_events() as result")

    # --- reads (public views, as the superuser) --------------------------------

    def balance(self, user_id: Any) -> dict[str, Any]:
        row = self.db.execute(
            "select * from public.credit_balances where user_id = %s", (str(user_id),)
        ).fetchone()
        assert row is not None, f"no credit_balances row for {user_id}"
        if isinstance(row.get("current_period_end"), datetime):
            row["current_period_end"] = int(row["current_period_end"].timestamp())
        return row

    def credits(self, user_id: Any) -> tuple[int, int]:
        """(plan credits, add-on credits)."""
        row = self.balance(user_id)
        assert row["total_credits"] == row["plan_credits"] + row["addon_credits"]
        return row["plan_credits"], row["addon_credits"]

    def ledger(self, user_id: Any, kind: str | None = None) -> list[dict[str, Any]]:
        """The user's ledger rows, oldest first."""
        rows = self.db.execute(
            "select * from public.credit_ledger where user_id = %s", (str(user_id),)
        ).fetchall()
        rows.reverse()  # the view is newest first
        return [row for row in rows if kind is None or row["kind"] == kind]

    # --- audit (internal: the public interface does not show events) -----------

    def stored_event(self, event_id: str) -> dict[str, Any] | None:
        return self.db.execute(
            "select * from tally.stripe_events where event_id = %s", (event_id,)
        ).fetchone()


@pytest.fixture
def service(database_url: str) -> Iterator[psycopg.Connection]:
    """A connection acting as service_role (the sidecar's PostgREST key)."""
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        conn.execute("set role service_role")
        yield conn


@pytest.fixture
def engine(db: psycopg.Connection, service: psycopg.Connection) -> Engine:
    return Engine(db, service)


@pytest.fixture
def user(make_user) -> uuid.UUID:
    return make_user()


@pytest.fixture
def buyer(user: uuid.UUID) -> te.Buyer:
    return te.Buyer.new(user)


@pytest.fixture(scope="module")
def shared_database_url(pg_server) -> Iterator[str]:
    """One database per test module, copied from the migrated template."""
    name = f"engine_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(f"create database {name} template {TEMPLATE}")
    dsn = pg_server.dsn(name)
    yield dsn
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(f"drop database if exists {name} with (force)")


@pytest.fixture
def database_url(shared_database_url: str) -> Iterator[str]:
    """Overrides the harness: in tests/engine, the module's shared database.

    Copying the template for each of hundreds of tests costs about a second
    each on the 2-core machine; these tests isolate themselves instead, with
    fresh users and fresh Stripe ids, and put back any global setting they
    change. Every balance must still equal its ledger sum after every test.
    """
    yield shared_database_url
    assert_balances_equal_ledger_sums(shared_database_url)


def new_user(engine: Engine) -> uuid.UUID:
    return create_user(engine.db)


@pytest.fixture
def key() -> str:
    """An idempotency key no other test uses."""
    return f"key-{uuid.uuid4()}"
