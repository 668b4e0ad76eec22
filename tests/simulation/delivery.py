"""Delivering stories the way Stripe does: duplicated, out of order, concurrently, retried.

`plan_deliveries` decides what is sent: every event 1 to 3 times, shuffled
within and across customers. `Sender` posts each delivery to the sidecar
with a fresh Stripe-Signature and, like Stripe, sends again later whatever
did not get a 2xx answer (a status, a reset connection, a timeout): the
failed delivery goes to the back of the queue, so the redelivery comes after
what was waiting, as Stripe's hours-later retries do.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from tally.stripe_events import encode, sign
from tests.simulation.stories import Story

COPY_WEIGHTS = {1: 0.6, 2: 0.28, 3: 0.12}


@dataclass
class DeliveryPlan:
    """What will be sent, in order, and how far it is from Stripe's own order."""

    deliveries: list[dict[str, Any]]
    events: int
    duplicates: int  # deliveries beyond the first of an event id
    twins: int  # changes announced under a second event id
    reorderings: int  # first deliveries that arrive after a later event of their customer


def plan_deliveries(
    stories: Sequence[Story], rng: random.Random, *, max_copies: int = 3
) -> DeliveryPlan:
    copies_allowed = [c for c in COPY_WEIGHTS if c <= max_copies]
    weights = [COPY_WEIGHTS[c] for c in copies_allowed]
    tagged: list[tuple[int, int, dict[str, Any]]] = []
    for story_index, story in enumerate(stories):
        for position, event in enumerate(story.events):
            for _ in range(rng.choices(copies_allowed, weights)[0]):
                tagged.append((story_index, position, event))
    rng.shuffle(tagged)
    events = sum(len(story.events) for story in stories)
    return DeliveryPlan(
        deliveries=[event for _, _, event in tagged],
        events=events,
        duplicates=len(tagged) - events,
        twins=sum(story.twins for story in stories),
        reorderings=_count_reorderings(tagged),
    )


def _count_reorderings(tagged: list[tuple[int, int, dict[str, Any]]]) -> int:
    latest: dict[int, int] = {}
    seen: set[tuple[int, int]] = set()
    late = 0
    for story_index, position, _ in tagged:
        if (story_index, position) in seen:
            continue
        seen.add((story_index, position))
        if position < latest.get(story_index, -1):
            late += 1
        latest[story_index] = max(position, latest.get(story_index, -1))
    return late


@dataclass
class SendStats:
    """What the sender saw."""

    deliveries: int = 0  # deliveries planned
    attempts: int = 0  # HTTP attempts, redeliveries included
    statuses: Counter[int] = field(default_factory=Counter)  # status -> count, 0 = no answer
    outcomes: Counter[str] = field(default_factory=Counter)  # 200 bodies' "status"
    gave_up: list[str] = field(default_factory=list)  # event ids never acknowledged
    seconds: float = 0.0

    @property
    def redeliveries(self) -> int:
        return self.attempts - self.deliveries


@dataclass
class Sender:
    """Posts signed deliveries to a webhook URL with Stripe's retry-until-2xx habit."""

    url: str
    secret: str
    concurrency: int = 8
    max_attempts: int = 200
    retry_delay: float = 0.05
    timeout: float = 10.0
    # Called before every attempt (with the attempt number); faults are injected here.
    before_attempt: Callable[[int], Any] | None = None
    stats: SendStats = field(default_factory=SendStats)

    async def send_all(self, deliveries: Sequence[dict[str, Any]]) -> SendStats:
        queue: asyncio.Queue[tuple[dict[str, Any], int]] = asyncio.Queue()
        for event in deliveries:
            queue.put_nowait((event, 1))
        self.stats.deliveries += len(deliveries)
        started = time.perf_counter()
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        connector = aiohttp.TCPConnector(limit=self.concurrency)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            workers = [
                asyncio.create_task(self._work(session, queue)) for _ in range(self.concurrency)
            ]
            await queue.join()
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        self.stats.seconds += time.perf_counter() - started
        return self.stats

    async def _work(self, session: aiohttp.ClientSession, queue: asyncio.Queue) -> None:
        while True:
            event, attempt = await queue.get()
            try:
                if not await self.deliver_once(session, event, attempt):
                    if attempt >= self.max_attempts:
                        self.stats.gave_up.append(event["id"])
                    else:
                        # Like Stripe: try again later, behind what is waiting now.
                        await asyncio.sleep(self.retry_delay * min(attempt, 20))
                        queue.put_nowait((event, attempt + 1))
            finally:
                queue.task_done()

    async def deliver_once(
        self, session: aiohttp.ClientSession, event: dict[str, Any], attempt: int
    ) -> bool:
        """One attempt; True once the sidecar answered 2xx."""
        if self.before_attempt is not None:
            result = self.before_attempt(self.stats.attempts)
            if asyncio.iscoroutine(result):
                await result
        self.stats.attempts += 1
        status, outcome = await self._post(session, encode(event))
        self.stats.statuses[status] += 1
        if 200 <= status < 300:
            self.stats.outcomes[outcome] += 1
            return True
        return False

    async def _post(self, session: aiohttp.ClientSession, body: bytes) -> tuple[int, str]:
        headers = {"Stripe-Signature": sign(body, self.secret), "Content-Type": "application/json"}
        try:
            async with session.post(self.url, data=body, headers=headers) as response:
                if response.status == 200:
                    answer = await response.json(content_type=None)
                    return 200, str(answer.get("status"))
                await response.read()
                return response.status, ""
        except (TimeoutError, aiohttp.ClientError, ConnectionError):
            return 0, ""
