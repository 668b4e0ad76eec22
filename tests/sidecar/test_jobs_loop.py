"""The background loop (sidecar/jobs/loop.py): pauses, failures, shutdown."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from sidecar.db import DatabaseError, DatabaseUnavailable
from sidecar.jobs.loop import (
    BACKGROUND_TASKS,
    MAX_BACKOFF_SECONDS,
    BackgroundTasks,
    Job,
    backoff_seconds,
    in_background,
    repeat,
)
from sidecar.observability import Metrics
from tests.support.polling import eventually

AN_HOUR = 3600.0


class Rounds:
    """A step that fails or reports more work as told, and counts its calls."""

    def __init__(self, *outcomes: bool | Exception) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    async def __call__(self) -> bool:
        self.calls += 1
        outcome = self.outcomes.pop(0) if self.outcomes else False
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def made(self, rounds: int) -> bool:
        return self.calls >= rounds


def job(step: Rounds, idle_seconds: float = AN_HOUR) -> Job:
    return Job("test_job", step, idle_seconds, Metrics())


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def test_the_pause_after_failures_doubles_from_one_second_to_a_ceiling():
    assert [backoff_seconds(n) for n in range(1, 6)] == [1, 2, 4, 8, MAX_BACKOFF_SECONDS]
    assert backoff_seconds(1000) == MAX_BACKOFF_SECONDS


async def test_a_round_with_more_work_waiting_is_followed_at_once():
    step = Rounds(True, True, True, False)
    task = asyncio.create_task(repeat(job(step)))
    await eventually(lambda: step.made(4), "four rounds without a pause")
    await asyncio.sleep(0.05)
    assert step.calls == 4  # then idle for an hour
    await stop(task)


async def test_an_unavailable_database_is_logged_and_the_job_goes_on(caplog):
    caplog.set_level(logging.WARNING, logger="sidecar")
    step = Rounds(DatabaseUnavailable("database not reachable (OSError)"))
    task = asyncio.create_task(repeat(job(step)))
    await eventually(lambda: step.made(2), "a round after the failure")
    (record,) = [r for r in caplog.records if r.getMessage() == "background job round failed"]
    assert (record.job, record.error, record.retry_in) == ("test_job", "DatabaseUnavailable", 1)
    assert not task.done()
    await stop(task)


async def test_a_refusal_is_logged_with_its_sqlstate_and_the_job_goes_on(caplog):
    caplog.set_level(logging.WARNING, logger="sidecar")
    step = Rounds(DatabaseError("42883", "function public.expire_holds does not exist"))
    task = asyncio.create_task(repeat(job(step)))
    await eventually(lambda: step.made(2), "a round after the refusal")
    (record,) = [r for r in caplog.records if r.getMessage() == "background job round failed"]
    assert record.sqlstate == "42883"
    await stop(task)


async def test_an_unexpected_error_does_not_end_the_job(caplog):
    caplog.set_level(logging.WARNING, logger="sidecar")
    metrics = Metrics()
    step = Rounds(RuntimeError("a bug"))
    task = asyncio.create_task(repeat(Job("test_job", step, AN_HOUR, metrics)))
    await eventually(lambda: step.made(2), "a round after the bug")
    assert any(r.levelname == "ERROR" for r in caplog.records)
    failures = metrics.registry.get_sample_value(
        "tally_background_job_failures_total", {"job": "test_job"}
    )
    assert failures == 1
    await stop(task)


async def test_shutdown_cancels_the_job_and_waits_for_it(aiohttp_client):
    app = web.Application()
    app[BACKGROUND_TASKS] = BackgroundTasks()
    step = Rounds()
    app.cleanup_ctx.append(in_background(lambda app: job(step, idle_seconds=0.01)))
    client = await aiohttp_client(app)
    task = app[BACKGROUND_TASKS]["test_job"]
    await eventually(lambda: step.made(2), "the job running")
    await client.close()
    assert task.cancelled()
    calls = step.calls
    await asyncio.sleep(0.05)
    assert step.calls == calls
