"""The sidecar's background jobs, each in its own cleanup context.

- Housekeeping (always): expired holds every minute, ready Stripe events
  every few seconds (``housekeeping``).
- With APP_WEBHOOK_URL: delivery of balance events to the app's backend,
  polled every second and at once while batches come back full, and the
  backlog gauges of /metrics (``delivery``).
"""

from __future__ import annotations

from aiohttp import web

from sidecar.config import Config
from sidecar.jobs import delivery, housekeeping
from sidecar.jobs.loop import BACKGROUND_TASKS, BackgroundTasks, in_background


def add_jobs(app: web.Application, config: Config) -> None:
    """Install the jobs after the resources they use, so they stop before those close."""
    app[BACKGROUND_TASKS] = BackgroundTasks()
    app.cleanup_ctx.append(in_background(housekeeping.hold_expiry_job))
    app.cleanup_ctx.append(in_background(housekeeping.ready_events_job))
    if config.app_webhook_url:
        app.cleanup_ctx.append(in_background(delivery.delivery_job))
        app.cleanup_ctx.append(in_background(delivery.backlog_job))
