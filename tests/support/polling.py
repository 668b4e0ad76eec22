"""Waiting for what background work does, with a generous deadline instead of a sleep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

DEADLINE_SECONDS = 30.0


async def eventually(
    check: Callable[[], Awaitable[T]], what: str, deadline: float = DEADLINE_SECONDS
) -> T:
    """The first truthy result of ``check``, polled until the deadline (then fail)."""
    give_up = time.monotonic() + deadline
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > give_up:
            raise AssertionError(f"not within {deadline:g} s: {what}")
        await asyncio.sleep(0.05)
