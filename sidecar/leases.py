"""A user's billing lease: one plan checkout or plan change at a time, across machines.

The lease is a row in the database (``public.acquire_billing_lock``), taken
with a random holder id and a time to live, so a machine that dies holding
it blocks the user for ``ttl_seconds`` at most. Waiting is polling: each try
is one short statement, and no transaction stays open while Stripe is called.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sidecar.db import Database, DatabaseError, DatabaseUnavailable
from sidecar.observability import logger

POLL_SECONDS = 0.1


class LeaseBusy(Exception):
    """Another request of the same user kept the lease for longer than we wait."""


@asynccontextmanager
async def billing_lease(
    database: Database, user_id: str, *, ttl_seconds: int, wait_seconds: float
) -> AsyncIterator[None]:
    holder = uuid.uuid4().hex
    await _acquire(database, user_id, holder, ttl_seconds, wait_seconds)
    try:
        yield
    finally:
        await _release(database, user_id, holder)


async def _acquire(
    database: Database, user_id: str, holder: str, ttl_seconds: int, wait_seconds: float
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    while not await database.acquire_billing_lock(user_id, holder, ttl_seconds):
        if loop.time() >= deadline:
            raise LeaseBusy(user_id)
        await asyncio.sleep(POLL_SECONDS * random.uniform(0.5, 1.5))


async def _release(database: Database, user_id: str, holder: str) -> None:
    try:
        await database.release_billing_lock(user_id, holder)
    except (DatabaseUnavailable, DatabaseError):
        # The lease expires by itself; the answer the user waits for is not lost for this.
        logger().warning("billing lease not released", extra={"user_id": user_id})
