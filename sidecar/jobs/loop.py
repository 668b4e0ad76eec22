"""Running a job in the background: again at once while work waits, else after a pause.

A job is one ``step`` (a round of work that says whether more is waiting)
and the pause between rounds when idle. A round that fails (the database
down, a refusal, a bug) is logged and counted, and the next one comes after
a pause that doubles up to ``MAX_BACKOFF_SECONDS``: a database outage never
ends a job, and a recovered database is noticed within that pause. Each job
runs in a task owned by one cleanup context, which cancels it on shutdown
and waits for it to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from sidecar.db import DatabaseError, DatabaseUnavailable
from sidecar.observability import Metrics, logger

MAX_BACKOFF_SECONDS = 15.0

# A round of work; True when more is waiting and the next round should start at once.
Step = Callable[[], Awaitable[bool]]
CleanupContext = Callable[[web.Application], AsyncIterator[None]]


@dataclass(frozen=True)
class Job:
    name: str
    step: Step
    idle_seconds: float
    metrics: Metrics


class BackgroundTasks(dict[str, "asyncio.Task[None]"]):
    """The running task of each job, by name (tests watch them)."""


BACKGROUND_TASKS = web.AppKey("background_tasks", BackgroundTasks)


def backoff_seconds(failures: int) -> float:
    """1, 2, 4, ... seconds after consecutive failed rounds, at most MAX_BACKOFF_SECONDS."""
    return min(MAX_BACKOFF_SECONDS, 2.0 ** min(failures - 1, 10))


async def repeat(job: Job) -> None:
    """Run the job's rounds until cancelled."""
    failures = 0
    while True:
        try:
            more = await job.step()
        except Exception as problem:
            failures += 1
            pause = backoff_seconds(failures)
            report_failure(job, problem, pause)
            await asyncio.sleep(pause)
            continue
        failures = 0
        # Even with more work waiting, yield once so that a busy job never starves requests.
        await asyncio.sleep(0 if more else job.idle_seconds)


def report_failure(job: Job, problem: Exception, pause: float) -> None:
    """One log line per failed round: the cause's type and SQLSTATE, never its data."""
    job.metrics.job_failures.labels(job=job.name).inc()
    fields: dict[str, object] = {
        "job": job.name,
        "error": type(problem).__name__,
        "retry_in": pause,
    }
    if isinstance(problem, DatabaseError):
        fields["sqlstate"] = problem.sqlstate
    if isinstance(problem, DatabaseUnavailable | DatabaseError):
        logger().warning("background job round failed", extra=fields)
    else:
        logger().error("background job round failed unexpectedly", extra=fields)


def in_background(make_job: Callable[[web.Application], Job]) -> CleanupContext:
    """A cleanup context that runs the job from start-up until shutdown."""

    async def run(app: web.Application) -> AsyncIterator[None]:
        job = make_job(app)
        task = asyncio.create_task(repeat(job), name=f"tally-{job.name}")
        app[BACKGROUND_TASKS][job.name] = task
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return run
