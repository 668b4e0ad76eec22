"""What every operator command runs with: settings from the environment, the
database (either transport) and, when a command needs it, Stripe.

Only DATABASE_URL (or SUPABASE_URL + SUPABASE_SERVICE_ROLE_KEY),
STRIPE_SECRET_KEY and, in development, STRIPE_API_BASE are read; nothing of
the sidecar's own configuration (webhook secrets, APP_BASE_URL...) is needed.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum

import aiohttp

from sidecar.db import Database
from sidecar.db.postgres import PostgresDatabase
from sidecar.db.postgrest import PostgrestDatabase
from sidecar.events import key_is_live
from sidecar.stripe_api import StripeApi

# The role the sidecar's calls run as: the only one granted the public functions.
DEFAULT_ROLE = "service_role"
# Operator queries read more than a webhook's call does.
DEFAULT_DB_TIMEOUT = 30.0
DEFAULT_STRIPE_TIMEOUT = 20.0
_DURATION = re.compile(r"(\d+)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Exit(IntEnum):
    """Exit statuses of every operator command (docs/operations.md)."""

    OK = 0
    DIFFERS = 1  # something differs, waits or was refused: look at the output
    USAGE = 2
    DATABASE_UNREACHABLE = 3
    STRIPE_UNREACHABLE = 4


class OperatorError(Exception):
    """A command that cannot be carried out; the message says what to do (exit 2)."""


@dataclass(frozen=True)
class Settings:
    """The environment of an operator command; secrets stay out of repr."""

    database_url: str | None = field(default=None, repr=False)
    supabase_url: str | None = None
    service_role_key: str | None = field(default=None, repr=False)
    database_role: str = DEFAULT_ROLE
    stripe_secret_key: str | None = field(default=None, repr=False)
    stripe_api_base: str | None = None
    db_timeout: float = DEFAULT_DB_TIMEOUT
    stripe_timeout: float = DEFAULT_STRIPE_TIMEOUT

    @classmethod
    def read(cls, environ: Mapping[str, str], database_url: str | None = None) -> Settings:
        """From the environment (``database_url`` from --database-url wins)."""

        def get(name: str) -> str | None:
            return environ.get(name, "").strip() or None

        api_base = get("STRIPE_API_BASE")
        if api_base and get("ENV") == "production":
            raise OperatorError("STRIPE_API_BASE (a Stripe stand-in) is not allowed in production")
        settings = cls(
            database_url=database_url or get("DATABASE_URL"),
            supabase_url=(get("SUPABASE_URL") or "").rstrip("/") or None,
            service_role_key=get("SUPABASE_SERVICE_ROLE_KEY"),
            database_role=get("DATABASE_ROLE") or DEFAULT_ROLE,
            stripe_secret_key=get("STRIPE_SECRET_KEY"),
            stripe_api_base=api_base.rstrip("/") if api_base else None,
            db_timeout=_seconds(get("DB_TIMEOUT"), "DB_TIMEOUT", DEFAULT_DB_TIMEOUT),
            stripe_timeout=_seconds(
                get("STRIPE_TIMEOUT"), "STRIPE_TIMEOUT", DEFAULT_STRIPE_TIMEOUT
            ),
        )
        if not settings.database_url and not (settings.supabase_url and settings.service_role_key):
            raise OperatorError(
                "set DATABASE_URL (or --database-url), or SUPABASE_URL and"
                " SUPABASE_SERVICE_ROLE_KEY"
            )
        return settings

    @property
    def key_is_live(self) -> bool | None:
        return key_is_live(self.stripe_secret_key) if self.stripe_secret_key else None


def _seconds(value: str | None, name: str, default: float) -> float:
    if value is None:
        return default
    try:
        seconds = float(value)
    except ValueError:
        raise OperatorError(f"{name} must be a number of seconds") from None
    if not 0.1 <= seconds <= 600:
        raise OperatorError(f"{name} must be between 0.1 and 600 seconds")
    return seconds


@dataclass
class Ops:
    """An open database, and Stripe when STRIPE_SECRET_KEY is set."""

    settings: Settings
    database: Database
    optional_stripe: StripeApi | None

    @property
    def stripe(self) -> StripeApi:
        if self.optional_stripe is None:
            raise OperatorError("set STRIPE_SECRET_KEY: this command reads from Stripe")
        return self.optional_stripe


@asynccontextmanager
async def open_ops(settings: Settings) -> AsyncIterator[Ops]:
    database = await _open_database(settings)
    try:
        await database.ping()  # fail before any work, not half-way through it
        async with aiohttp.ClientSession() as http:
            stripe = (
                StripeApi(
                    settings.stripe_secret_key,
                    http,
                    timeout=settings.stripe_timeout,
                    api_base=settings.stripe_api_base,
                )
                if settings.stripe_secret_key
                else None
            )
            yield Ops(settings, database, stripe)
    finally:
        await database.close()


async def _open_database(settings: Settings) -> Database:
    # DATABASE_URL first: the direct connection is what the docs show operators.
    if settings.database_url:
        return await PostgresDatabase.open(
            settings.database_url,
            timeout=settings.db_timeout,
            max_size=2,
            role=settings.database_role,
        )
    assert settings.supabase_url and settings.service_role_key  # checked by Settings.read
    return PostgrestDatabase.open(
        settings.supabase_url, settings.service_role_key, timeout=settings.db_timeout
    )


# -- time ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Since:
    """A start of time given as a duration back from now (``72h``, ``30d``) or a date."""

    text: str
    seconds_back: int | None = None
    at: int | None = None

    @classmethod
    def parse(cls, text: str) -> Since:
        """argparse ``type``: ``<n>s|m|h|d`` or an ISO date (``2026-11-01``) or time."""
        match = _DURATION.fullmatch(text.strip())
        if match:
            return cls(text, seconds_back=int(match[1]) * _UNIT_SECONDS[match[2]])
        try:
            moment = datetime.fromisoformat(text.strip())
        except ValueError:
            raise ValueError(f"not a duration (72h, 30d) or a date: {text}") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return cls(text, at=int(moment.timestamp()))

    def start(self, now: float | None = None) -> int:
        """Unix seconds."""
        if self.at is not None:
            return self.at
        assert self.seconds_back is not None
        return int((time.time() if now is None else now) - self.seconds_back)


def iso(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")
