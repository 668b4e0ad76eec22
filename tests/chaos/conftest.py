"""Fixtures shared by the chaos tests: a database with the simulation's catalog."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from tests.simulation.database import CHAOS_PACKS, CHAOS_PLANS, install_catalog
from tests.simulation.stories import Prices

PRICES = Prices(
    plans={entry.price_id: entry.amount for entry in CHAOS_PLANS},
    packs={entry.price_id: entry.amount for entry in CHAOS_PACKS},
)


@pytest.fixture
def chaos_database_url(database_url: str) -> str:
    """A fresh test database holding the simulation's plans and packs."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        install_catalog(conn)
    return database_url


@pytest.fixture
def admin(chaos_database_url: str) -> Iterator[psycopg.Connection]:
    """A superuser connection (reads the tally schema)."""
    with psycopg.connect(chaos_database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def service(chaos_database_url: str) -> Iterator[psycopg.Connection]:
    """A connection acting as service_role, the role the sidecar calls the engine with."""
    with psycopg.connect(chaos_database_url, autocommit=True) as conn:
        conn.execute("set role service_role")
        yield conn
