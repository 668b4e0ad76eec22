"""Fixtures for the sidecar: the real app factory against a real Postgres, fake Stripe."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import jwt
import psycopg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from sidecar.app import create_app
from sidecar.config import Config
from tally import stripe_events as se
from tests.support import catalog
from tests.support.fakes import FakePostgrest, FakeStripe

WEBHOOK_SECRET = "whsec_test_current"
ROLLED_SECRET = "whsec_test_next"
JWT_SECRET = "super-secret-jwt-token-with-at-least-32-characters"
SERVICE_ROLE_KEY = jwt.encode({"role": "service_role", "iss": "supabase"}, JWT_SECRET)
ANON_KEY = jwt.encode({"role": "anon", "iss": "supabase"}, JWT_SECRET)

PLANS, PACKS, PRICES = catalog.PLANS, catalog.PACKS, catalog.PRICE_AMOUNTS
SIGNUP_CREDITS = catalog.SIGNUP_CREDITS


def base_config(**overrides: Any) -> Config:
    values: dict[str, Any] = {
        "webhook_secrets": (WEBHOOK_SECRET, ROLLED_SECRET),
        "stripe_secret_key": "sk_test_fake",
        "app_base_url": "https://app.example.com",
        "supabase_jwt_secret": JWT_SECRET,
        "db_timeout": 3.0,
        "stripe_timeout": 1.0,
    }
    values.update(overrides)
    return Config(**values)


def user_token(
    user_id: uuid.UUID | str,
    *,
    secret: str = JWT_SECRET,
    role: str = "authenticated",
    expires_in: int = 3600,
    **claims: Any,
) -> str:
    now = int(time.time())
    payload = {
        "sub": str(user_id),
        "role": role,
        "aud": "authenticated",
        "iat": now,
        "exp": now + expires_in,
        "iss": "https://project.supabase.co/auth/v1",
        **claims,
    }
    return jwt.encode(payload, secret, algorithm="HS256")


def seed_catalog(stand_in: FakeStripe) -> None:
    """The demo catalog's prices, as they exist in the Stripe account."""
    for key, (price_id, _) in PLANS.items():
        stand_in.add_price(price_id, product=f"prod_{key}", unit_amount=PRICES[price_id])
    for key, (price_id, _) in PACKS.items():
        stand_in.add_price(
            price_id, product=f"prod_{key}", unit_amount=PRICES[price_id], recurring=False
        )


@pytest.fixture
def fake_stripe() -> FakeStripe:
    stand_in = FakeStripe()
    seed_catalog(stand_in)
    return stand_in


@pytest.fixture
async def stripe_base(aiohttp_server, fake_stripe: FakeStripe) -> str:
    server: TestServer = await aiohttp_server(fake_stripe.app())
    return str(server.make_url("")).rstrip("/")


MakeClient = Callable[..., Awaitable[TestClient]]


@pytest.fixture
def make_sidecar(aiohttp_client, database_url: str, stripe_base: str) -> MakeClient:
    """A test client of the real app; keyword arguments override the Config."""

    async def make(**overrides: Any) -> TestClient:
        config = base_config(database_url=database_url, stripe_api_base=stripe_base)
        return await aiohttp_client(create_app(dataclasses.replace(config, **overrides)))

    return make


@pytest.fixture
async def sidecar(make_sidecar: MakeClient) -> TestClient:
    return await make_sidecar()


@pytest.fixture
def fake_postgrest(database_url: str) -> FakePostgrest:
    return FakePostgrest(database_url, JWT_SECRET, {SERVICE_ROLE_KEY, ANON_KEY})


@pytest.fixture
async def postgrest_url(aiohttp_server, fake_postgrest: FakePostgrest) -> str:
    server: TestServer = await aiohttp_server(fake_postgrest.app())
    return str(server.make_url("")).rstrip("/")


async def postgrest_client(make_sidecar: MakeClient, postgrest_url: str) -> TestClient:
    return await make_sidecar(
        transport="postgrest",
        database_url=None,
        supabase_url=postgrest_url,
        supabase_service_role_key=SERVICE_ROLE_KEY,
    )


@pytest.fixture
async def postgrest_sidecar(make_sidecar: MakeClient, postgrest_url: str) -> TestClient:
    return await postgrest_client(make_sidecar, postgrest_url)


@pytest.fixture(params=["postgres", "postgrest"])
async def any_sidecar(
    request, make_sidecar: MakeClient, aiohttp_server, fake_postgrest: FakePostgrest
) -> TestClient:
    """The sidecar on each transport in turn."""
    if request.param == "postgres":
        return await make_sidecar()
    server: TestServer = await aiohttp_server(fake_postgrest.app())
    return await postgrest_client(make_sidecar, str(server.make_url("")).rstrip("/"))


async def deliver(
    client: TestClient,
    event: dict[str, Any],
    *,
    secret: str = WEBHOOK_SECRET,
    timestamp: int | None = None,
) -> tuple[int, dict[str, Any]]:
    """POST one signed event; the status and JSON answer."""
    body, headers = se.signed_request(event, secret, timestamp)
    response = await client.post("/webhooks/stripe", data=body, headers=headers)
    return response.status, await response.json()


async def deliver_all(client: TestClient, events: list[dict[str, Any]]) -> list[str]:
    outcomes = []
    for event in events:
        status, answer = await deliver(client, event)
        assert status == 200, (event["type"], answer)
        outcomes.append(answer["status"])
    return outcomes


async def subscribe(
    client: TestClient, stand_in: FakeStripe, user_id: uuid.UUID, price_id: str
) -> tuple[se.StripeWorld, se.Subscription]:
    """A user subscribed through Checkout: events delivered, Stripe's objects in the stand-in."""
    w = world()
    cust = w.customer(user_id=str(user_id))
    sub, out = w.subscribe(cust, price_id)
    await deliver_all(client, out)
    stand_in.add(
        se.customer(
            id=cust.id, created=cust.created, email=cust.email, metadata={"user_id": str(user_id)}
        )
    )
    stand_in.add(w.subscription_object(sub))
    return w, sub


def balance(db: psycopg.Connection, user_id: uuid.UUID) -> dict[str, Any]:
    """The user's row of public.credit_balances (read as the owner)."""
    row = db.execute(
        "select plan_credits, addon_credits, plan_key, subscription_status"
        " from public.credit_balances where user_id = %s",
        (user_id,),
    ).fetchone()
    assert row is not None, f"no balance for {user_id}"
    return dict(row)


def credits(db: psycopg.Connection, user_id: uuid.UUID) -> tuple[int, int]:
    row = balance(db, user_id)
    return row["plan_credits"], row["addon_credits"]


def stored_events(db: psycopg.Connection) -> int:
    return db.execute("select count(*) as n from tally.stripe_events").fetchone()["n"]


def stored_outcome(db: psycopg.Connection, event_id: str) -> str | None:
    row = db.execute("select outcome from tally.stripe_events where event_id = %s", (event_id,))
    found = row.fetchone()
    return found["outcome"] if found else None


def world(layout: se.Layout = "basil") -> se.StripeWorld:
    return se.StripeWorld(layout, prices=PRICES, start=int(time.time()) - 3600)
