"""Structured logs (one JSON object per line) and Prometheus metrics.

Logs carry ids, types, outcomes and durations; never payloads or secrets.
Metrics live in a registry per app, so several apps (tests) never collide.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LOGGER_NAME = "sidecar"
_STANDARD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message"}


class JsonFormatter(logging.Formatter):
    """Renders a record and its ``extra`` fields as one JSON line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS})
        if record.exc_info and record.exc_info[0] is not None:
            entry["error"] = record.exc_info[0].__name__
        return json.dumps(entry, default=str)


def configure_logging(level: int = logging.INFO) -> None:
    """JSON lines on stdout for the sidecar's and aiohttp's loggers."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's access log repeats what the response metrics already count.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)


@dataclass
class Metrics:
    """The sidecar's Prometheus metrics, in a registry of their own."""

    registry: CollectorRegistry = field(
        default_factory=lambda: CollectorRegistry(auto_describe=True)
    )

    def __post_init__(self) -> None:
        self.events = Counter(
            "tally_stripe_events",
            "Stripe webhook events by type and outcome",
            ["type", "outcome"],
            registry=self.registry,
        )
        self.apply_seconds = Histogram(
            "tally_apply_stripe_event_seconds",
            "Time spent in apply_stripe_event, transport included",
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.apply_batch_events = Histogram(
            "tally_apply_batch_events",
            "Webhooks applied together in one transaction (group commit)",
            registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 100),
        )
        self.responses = Counter(
            "tally_http_responses",
            "HTTP responses by route and status",
            ["route", "status"],
            registry=self.registry,
        )
        self.add_replay_metrics()
        self.add_background_metrics()

    def add_replay_metrics(self) -> None:
        """Replays of undelivered Stripe events, periodic or by the operator."""
        self.replay_runs = Counter(
            "tally_replay_runs",
            "Periodic replays of undelivered Stripe events: done, skipped (another machine's"
            " window) or failed",
            ["result"],
            registry=self.registry,
        )
        self.replayed_events = Counter(
            "tally_replayed_events",
            "Undelivered Stripe events replayed, by outcome",
            ["outcome"],
            registry=self.registry,
        )

    def add_background_metrics(self) -> None:
        """Balance events for the app's backend and the housekeeping jobs."""
        self.balance_deliveries = Counter(
            "tally_balance_event_deliveries",
            "Deliveries of balance events to APP_WEBHOOK_URL by type and outcome",
            ["type", "outcome"],
            registry=self.registry,
        )
        self.balance_pending = Gauge(
            "tally_balance_events_pending",
            "Balance events not yet delivered",
            registry=self.registry,
        )
        self.balance_failing = Gauge(
            "tally_balance_events_failing",
            "Balance events not yet delivered that failed at least once",
            registry=self.registry,
        )
        self.balance_oldest_seconds = Gauge(
            "tally_balance_events_oldest_seconds",
            "Age of the oldest balance event not yet delivered",
            registry=self.registry,
        )
        self.housekeeping = Counter(
            "tally_housekeeping_items",
            "What the housekeeping jobs did: holds expired, parked events applied",
            ["job"],
            registry=self.registry,
        )
        self.job_failures = Counter(
            "tally_background_job_failures",
            "Rounds of a background job that failed (database unavailable or refused)",
            ["job"],
            registry=self.registry,
        )


class Stopwatch:
    """Elapsed milliseconds since creation, for log lines."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    @property
    def ms(self) -> float:
        return round(self.seconds * 1000, 2)
