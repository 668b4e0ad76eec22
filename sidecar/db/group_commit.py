"""Group commit: webhooks that arrive while the connections are busy share one transaction.

A transaction per event pays, per event, a commit, a round trip and the
start and end of a transaction: on a small database machine that is as much
work as the event itself. Here ``workers`` tasks (about the database's
cores; each holds one connection while it applies) each take the events
waiting, up to ``max_batch``, and apply them with one call of
``public.apply_stripe_events``, which gives every event a subtransaction of
its own: one event's failure (an error, a lock wait over its timeout, a
deadlock) undoes that event only, and every caller gets its own result or
error. An event that finds a worker idle is applied alone at once: batches
only form under load, and nothing waits for a batch to fill.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from sidecar.db import JSON, DatabaseError, DatabaseUnavailable, refusal
from sidecar.observability import logger

ApplyMany = Callable[[list[JSON]], Awaitable[list[Any]]]
# An event, the future its caller awaits, and when it was queued (loop time).
Waiter = tuple[JSON, "asyncio.Future[JSON]", float]


class GroupCommit:
    def __init__(
        self,
        apply_many: ApplyMany,
        *,
        workers: int,
        max_batch: int,
        max_wait: float,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        if workers < 1 or max_batch < 1:
            raise ValueError("group commit needs at least one worker and one event per batch")
        self._apply_many = apply_many
        self._workers = workers
        self._max_batch = max_batch
        # As long as a call may wait for a free pool connection: an event still
        # queued after that is answered unavailable (Stripe retries it later).
        self._max_wait = max_wait
        self._on_batch = on_batch
        self._waiting: asyncio.Queue[Waiter] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    async def apply(self, event: JSON) -> JSON:
        """The event's own result, once the transaction that applied it committed."""
        if self._closed:
            raise DatabaseUnavailable("the sidecar is shutting down")
        if not self._tasks:  # started on first use, on the running loop
            self._tasks = [asyncio.create_task(self._work()) for _ in range(self._workers)]
        loop = asyncio.get_running_loop()
        future: asyncio.Future[JSON] = loop.create_future()
        self._waiting.put_nowait((event, future, loop.time()))
        return await future

    async def close(self) -> None:
        """Stop the workers; events not yet sent are answered as unavailable (Stripe retries)."""
        self._closed = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        while not self._waiting.empty():
            _, future, _ = self._waiting.get_nowait()
            _settle_error(future, DatabaseUnavailable("the sidecar is shutting down"))

    async def _work(self) -> None:
        while True:
            batch = await self._next_batch()
            if batch:
                await self._apply(batch)

    async def _next_batch(self) -> list[Waiter]:
        """The oldest waiting events, up to a batch; none whose caller left or waited too long."""
        batch: list[Waiter] = []
        while len(batch) < self._max_batch:
            if batch and self._waiting.empty():
                break
            waiter = await self._waiting.get()
            if waiter[1].done():
                continue
            if asyncio.get_running_loop().time() - waiter[2] > self._max_wait:
                _settle_error(waiter[1], DatabaseUnavailable("no database connection free in time"))
                continue
            batch.append(waiter)
        return batch

    async def _apply(self, batch: list[Waiter]) -> None:
        if self._on_batch is not None:
            self._on_batch(len(batch))
        try:
            results = await self._apply_many([event for event, _, _ in batch])
        except asyncio.CancelledError:
            for _, future, _ in batch:  # closing while the call ran: its outcome is unknown
                _settle_error(future, DatabaseUnavailable("the sidecar is shutting down"))
            raise
        except Exception as problem:  # any: the worker must outlive every failure
            failure = _as_database_failure(problem)
            if len(batch) == 1:
                _settle_error(batch[0][1], failure)
                return
            # The transaction as a whole failed (it ran over the call's timeout, the
            # connection broke): none of it committed, or all of it if only the answer
            # was lost. Each event goes again alone, so one event's long lock wait
            # costs the others time, never their outcome (a re-applied event that had
            # committed answers as a duplicate).
            await self._each_alone(batch)
            return
        if len(results) != len(batch):
            for _, future, _ in batch:
                _settle_error(future, DatabaseError(None, "apply_stripe_events answered wrongly"))
            return
        again = []
        for waiter, result in zip(batch, results, strict=True):
            outcome = _outcome(result)
            if len(batch) > 1 and isinstance(outcome, DatabaseUnavailable):
                again.append(waiter)
            else:
                _settle(waiter[1], outcome)
        # An event that met a deadlock or a lock wait over its bound in a shared
        # transaction may have met it because of the locks its batch held: once
        # that transaction has committed, it goes again alone.
        await self._each_alone(again)

    async def _each_alone(self, waiters: list[Waiter]) -> None:
        for index, (_, future, _) in enumerate(waiters):
            try:
                if not future.done():
                    await self._apply([waiters[index]])
            except asyncio.CancelledError:
                for _, waiting, _ in waiters[index:]:  # closing: not applied, or unknown
                    _settle_error(waiting, DatabaseUnavailable("the sidecar is shutting down"))
                raise


def _outcome(result: Any) -> JSON | DatabaseUnavailable | DatabaseError:
    """One event's result: what apply_stripe_event returned, or the error it raised."""
    if not isinstance(result, dict):
        return DatabaseError(None, "the database function returned no JSON object")
    if result.get("status") == "error":
        return refusal(result.get("sqlstate"), str(result.get("message", "")))
    return result


def _settle(future: asyncio.Future[JSON], outcome: JSON | Exception) -> None:
    if isinstance(outcome, Exception):
        _settle_error(future, outcome)
    elif not future.done():
        future.set_result(outcome)


def _settle_error(future: asyncio.Future[JSON], problem: Exception) -> None:
    if not future.done():
        future.set_exception(problem)


def _as_database_failure(problem: Exception) -> Exception:
    """What a caller is told of a failed call: a fresh exception of its own (one instance
    raised in several tasks would share a traceback); anything unforeseen is logged and
    told as unavailable, so the sender answers 503 and Stripe retries."""
    if isinstance(problem, DatabaseError):
        return DatabaseError(problem.sqlstate, problem.message)
    if isinstance(problem, DatabaseUnavailable):
        return DatabaseUnavailable(*problem.args)
    logger().exception("group commit: the database call failed unexpectedly")
    return DatabaseUnavailable(f"the database call failed ({type(problem).__name__})")
