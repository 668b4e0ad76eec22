"""The floor as a webhook service: `python -m tally.bench.floor_server`.

A trivial aiohttp app, in a process of its own like the sidecar: verify the
Stripe signature (with the sidecar's own pure check), read the event id and
the user id from the body, run the floor statement (tally/bench/floor.py)
over an asyncpg pool of DB_POOL_SIZE connections acting as service_role,
answer 200. Anything it cannot do is a 400 or a 503, never a crash.

Environment: DATABASE_URL, PORT, DB_POOL_SIZE, STRIPE_WEBHOOK_SECRETS,
FLOOR_BALANCE (the balance a renewal sets).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web

from sidecar import signature
from sidecar.db.postgres import keep_session
from tally.bench.floor import FLOOR_SQL

POOL = web.AppKey("pool", asyncpg.Pool)


def renewal_user(document: dict) -> str:
    """The user id Checkout wrote on the subscription (basil invoice layout)."""
    details = document["data"]["object"]["parent"]["subscription_details"]
    return str(details["metadata"]["user_id"])


async def webhook(request: web.Request) -> web.Response:
    body = await request.read()
    try:
        signature.verify(
            body,
            request.headers.get("Stripe-Signature"),
            tuple(os.environ["STRIPE_WEBHOOK_SECRETS"].split(",")),
            now=time.time(),
            tolerance=signature.TOLERANCE_SECONDS,
        )
        document = json.loads(body)
        event_id, user_id = str(document["id"]), renewal_user(document)
    except (signature.SignatureError, ValueError, KeyError, TypeError) as problem:
        return web.json_response({"error": type(problem).__name__}, status=400)
    balance = int(os.environ["FLOOR_BALANCE"])
    try:
        async with request.app[POOL].acquire() as conn:
            await conn.fetchval(FLOOR_SQL, event_id, user_id, body.decode(), balance)
    except (asyncpg.PostgresError, OSError) as problem:
        return web.json_response({"error": type(problem).__name__}, status=503)
    return web.json_response({"status": "applied", "event_id": event_id})


async def ready(request: web.Request) -> web.Response:
    return web.json_response({"status": "ready"})


async def database_pool(app: web.Application) -> AsyncIterator[None]:
    size = int(os.environ.get("DB_POOL_SIZE", "16"))
    app[POOL] = await asyncpg.create_pool(
        os.environ["DATABASE_URL"],
        min_size=0,
        max_size=size,
        # As the sidecar's pool: its role, and no reset query per call.
        server_settings={"role": "service_role"},
        reset=keep_session,
    )
    yield
    await app[POOL].close()


def create_app() -> web.Application:
    app = web.Application()
    app.cleanup_ctx.append(database_pool)
    app.router.add_post("/webhooks/stripe", webhook)
    app.router.add_get("/readyz", ready)
    return app


def main() -> None:
    web.run_app(create_app(), host="127.0.0.1", port=int(os.environ["PORT"]), print=None)


if __name__ == "__main__":
    main()
