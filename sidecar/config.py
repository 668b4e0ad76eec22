"""Configuration from the environment, checked once at start-up.

Every problem is reported (all of them, one line each) before the process
refuses to start; secret values are never part of a message or a repr.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

Environment = Literal["development", "production"]
Transport = Literal["postgres", "postgrest"]
N = TypeVar("N", int, float)

DEFAULT_PORT = 8080
DEFAULT_DB_TIMEOUT = 5.0
DEFAULT_STRIPE_TIMEOUT = 10.0
LOCAL_HOSTNAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


class ConfigError(Exception):
    """The environment does not describe a runnable sidecar; one message per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n" + "\n".join(f"- {p}" for p in problems))
        self.problems = problems


@dataclass(frozen=True)
class Config:
    """Everything the sidecar reads from its environment. Secrets stay out of repr."""

    webhook_secrets: tuple[str, ...] = field(repr=False)
    stripe_secret_key: str = field(repr=False)
    app_base_url: str
    env: Environment = "development"
    port: int = DEFAULT_PORT
    host: str = "0.0.0.0"
    transport: Transport = "postgres"
    database_url: str | None = field(default=None, repr=False)
    database_role: str | None = None
    supabase_url: str | None = None
    supabase_service_role_key: str | None = field(default=None, repr=False)
    supabase_jwt_secret: str | None = field(default=None, repr=False)
    jwks_url: str | None = None
    stripe_api_base: str | None = None
    db_timeout: float = DEFAULT_DB_TIMEOUT
    stripe_timeout: float = DEFAULT_STRIPE_TIMEOUT
    db_pool_size: int = 10

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        """Read and check the environment; raise ConfigError listing every problem."""
        return _Reader(os.environ if environ is None else environ).config()

    @property
    def success_url(self) -> str:
        return f"{self.app_base_url}/billing/success?session_id={{CHECKOUT_SESSION_ID}}"

    @property
    def cancel_url(self) -> str:
        return f"{self.app_base_url}/billing/cancel"

    @property
    def token_issuer(self) -> str | None:
        """The ``iss`` of the project's access tokens, checked when SUPABASE_URL is known."""
        return f"{self.supabase_url}/auth/v1" if self.supabase_url else None

    @property
    def portal_return_url(self) -> str:
        return f"{self.app_base_url}/billing"


def is_local_host(host: str) -> bool:
    """True for names and addresses that only mean this machine."""
    host = host.strip("[]").lower().rstrip(".")
    if host in LOCAL_HOSTNAMES or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


class _Reader:
    """Collects problems while reading, so that all of them are reported at once."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.problems: list[str] = []

    def get(self, name: str) -> str | None:
        value = self.environ.get(name, "").strip()
        return value or None

    def require(self, name: str, what: str) -> str:
        value = self.get(name)
        if value is None:
            self.problems.append(f"{name} is not set ({what})")
        return value or ""

    def config(self) -> Config:
        env = self.environment()
        values: dict[str, Any] = {
            "env": env,
            "webhook_secrets": self.webhook_secrets(),
            "stripe_secret_key": self.stripe_secret_key(),
            "app_base_url": self.app_base_url(env),
            "port": self.number("PORT", DEFAULT_PORT, int, 1, 65535),
            "host": self.get("HOST") or "0.0.0.0",
            "db_timeout": self.number("DB_TIMEOUT", DEFAULT_DB_TIMEOUT, float, 0.1, 120),
            "stripe_timeout": self.number(
                "STRIPE_TIMEOUT", DEFAULT_STRIPE_TIMEOUT, float, 0.1, 120
            ),
            "db_pool_size": self.number("DB_POOL_SIZE", 10, int, 1, 200),
            "stripe_api_base": self.stripe_api_base(env),
            **self.database(),
            **self.token_verification(),
        }
        if self.problems:
            raise ConfigError(self.problems)
        return Config(**values)

    def environment(self) -> Environment:
        env = self.get("ENV") or "development"
        if env not in ("development", "production"):
            self.problems.append("ENV must be 'development' or 'production'")
            return "development"
        return env  # type: ignore[return-value]

    def webhook_secrets(self) -> tuple[str, ...]:
        raw = self.require("STRIPE_WEBHOOK_SECRETS", "comma-separated webhook signing secrets")
        secrets = tuple(s.strip() for s in raw.split(",") if s.strip())
        if raw and not secrets:
            self.problems.append("STRIPE_WEBHOOK_SECRETS holds no secret")
        for position, secret in enumerate(secrets, start=1):
            if not secret.startswith("whsec_"):
                self.problems.append(
                    f"STRIPE_WEBHOOK_SECRETS entry {position} is not a signing secret (whsec_...)"
                )
        return secrets

    def stripe_secret_key(self) -> str:
        key = self.require("STRIPE_SECRET_KEY", "the Stripe API key, sk_... or rk_...")
        if key and not key.startswith(("sk_", "rk_")):
            self.problems.append("STRIPE_SECRET_KEY is not a secret or restricted key (sk_/rk_)")
        return key

    def app_base_url(self, env: Environment) -> str:
        url = self.require("APP_BASE_URL", "the frontend's URL, for Checkout redirects")
        if not url:
            return ""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            self.problems.append("APP_BASE_URL must be an absolute http(s) URL")
        elif env == "production" and parts.scheme != "https":
            self.problems.append("APP_BASE_URL must use https in production")
        elif env == "production" and is_local_host(parts.hostname):
            self.problems.append("APP_BASE_URL points at this machine; not allowed in production")
        return url.rstrip("/")

    def stripe_api_base(self, env: Environment) -> str | None:
        base = self.get("STRIPE_API_BASE")
        if base and env == "production":
            self.problems.append("STRIPE_API_BASE (a Stripe stand-in) is not allowed in production")
        if base and urlsplit(base).scheme not in ("http", "https"):
            self.problems.append("STRIPE_API_BASE must be an http(s) URL")
        return base.rstrip("/") if base else None

    def number(self, name: str, default: N, kind: Callable[[str], N], low: N, high: N) -> N:
        raw = self.get(name)
        if raw is None:
            return default
        try:
            value = kind(raw)
        except ValueError:
            self.problems.append(f"{name} must be a number")
            return default
        if not low <= value <= high:
            self.problems.append(f"{name} must be between {low} and {high}")
        return value

    def database(self) -> dict[str, object]:
        database_url = self.get("DATABASE_URL")
        supabase_url = self.get("SUPABASE_URL")
        service_key = self.get("SUPABASE_SERVICE_ROLE_KEY")
        chosen = self.get("DB_TRANSPORT")
        if chosen not in (None, "postgres", "postgrest"):
            self.problems.append("DB_TRANSPORT must be 'postgres' or 'postgrest'")
            chosen = None
        transport = chosen or ("postgres" if database_url else "postgrest")
        if transport == "postgres" and not database_url:
            self.problems.append("DATABASE_URL is not set (direct Postgres transport)")
        if transport == "postgrest" and not (supabase_url and service_key):
            if chosen or supabase_url or service_key:
                self.problems.append(
                    "SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY are both needed for PostgREST"
                )
            else:
                self.problems.append(
                    "no database: set DATABASE_URL, or SUPABASE_URL + SUPABASE_SERVICE_ROLE_KEY"
                )
        if database_url and urlsplit(database_url).scheme not in ("postgres", "postgresql"):
            self.problems.append("DATABASE_URL must be a postgresql:// URL")
        if supabase_url and urlsplit(supabase_url).scheme not in ("http", "https"):
            self.problems.append("SUPABASE_URL must be an http(s) URL")
        return {
            "transport": transport,
            "database_url": database_url,
            "database_role": self.get("DATABASE_ROLE"),
            "supabase_url": supabase_url.rstrip("/") if supabase_url else None,
            "supabase_service_role_key": service_key,
        }

    def token_verification(self) -> dict[str, object]:
        jwt_secret = self.get("SUPABASE_JWT_SECRET")
        supabase_url = self.get("SUPABASE_URL")
        jwks_url = self.get("SUPABASE_JWKS_URL") or (
            f"{supabase_url.rstrip('/')}/auth/v1/.well-known/jwks.json" if supabase_url else None
        )
        if not jwt_secret and not jwks_url:
            self.problems.append(
                "no way to verify user tokens: set SUPABASE_JWT_SECRET or SUPABASE_URL (JWKS)"
            )
        return {"supabase_jwt_secret": jwt_secret, "jwks_url": jwks_url}
