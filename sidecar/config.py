"""Configuration from the environment, checked once at start-up.

Every problem is reported (all of them, one line each) before the process
refuses to start; secret values are never part of a message or a repr.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar
from urllib.parse import unquote, urlsplit

from sidecar.events import key_is_live

Environment = Literal["development", "production"]
Transport = Literal["postgres", "postgrest"]
N = TypeVar("N", int, float)

DEFAULT_PORT = 8080
DEFAULT_DB_TIMEOUT = 5.0
DEFAULT_STRIPE_TIMEOUT = 10.0
DEFAULT_BODY_TIMEOUT = 10.0
DEFAULT_REPLAY_INTERVAL = 600
DEFAULT_APP_WEBHOOK_TIMEOUT = 10.0
DEFAULT_BILLING_RATE_LIMIT = 10
DEFAULT_BILLING_RATE_WINDOW = 60
# About the database machine's cores: more connections applying webhooks at once
# only make them wait on each other there (docs/benchmarks.md measured it).
DEFAULT_APPLY_WORKERS = 2
DEFAULT_APPLY_BATCH_MAX = 8
LOCAL_HOSTNAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}
# Values of .env.example that must never reach production.
PLACEHOLDER_MARKERS = ("replace_me", "your-project-ref")
# Secrets that production checks for placeholders (names only; values are never shown).
SECRET_VARIABLES = (
    "STRIPE_WEBHOOK_SECRETS",
    "STRIPE_SECRET_KEY",
    "SUPABASE_SERVICE_ROLE_KEY",
    "SUPABASE_JWT_SECRET",
    "SUPABASE_URL",
    "DATABASE_URL",
    "METRICS_TOKEN",
    "APP_WEBHOOK_SECRET",
)
MIN_WEBHOOK_SECRET_LENGTH = 32  # whsec_ included; Stripe's are longer
MIN_JWT_SECRET_BYTES = 32  # HS256 wants a key at least as long as its hash
MIN_METRICS_TOKEN_LENGTH = 32


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
    # Group commit of webhooks (direct transport; sidecar/db/group_commit.py): this many
    # connections apply them, up to this many events per transaction (1: each alone).
    apply_workers: int = DEFAULT_APPLY_WORKERS
    apply_batch_max: int = DEFAULT_APPLY_BATCH_MAX
    # A body not fully arrived within this many seconds is answered 408.
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    # /metrics: with a bearer token on the main port, or alone on its own port.
    metrics_token: str | None = field(default=None, repr=False)
    metrics_port: int | None = None
    # /billing/* calls per user and window (counted in the database, shared by machines).
    billing_rate_limit: int = DEFAULT_BILLING_RATE_LIMIT
    billing_rate_window: int = DEFAULT_BILLING_RATE_WINDOW
    # The Customer Portal configuration `tally stripe-setup` made (else the account default).
    stripe_portal_configuration: str | None = None
    # Re-applying undelivered Stripe events, every this many seconds (0: never).
    replay_interval: int = DEFAULT_REPLAY_INTERVAL
    # Balance events for the app's backend, signed the Standard Webhooks way.
    app_webhook_url: str | None = None
    app_webhook_secret: str | None = field(default=None, repr=False)
    # One delivery to APP_WEBHOOK_URL that takes longer counts as a failed attempt.
    app_webhook_timeout: float = DEFAULT_APP_WEBHOOK_TIMEOUT

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        """Read and check the environment; raise ConfigError listing every problem."""
        return _Reader(os.environ if environ is None else environ).config()

    @property
    def stripe_key_is_live(self) -> bool | None:
        """Whether STRIPE_SECRET_KEY is a live-mode key (None: cannot tell)."""
        return key_is_live(self.stripe_secret_key)

    @property
    def warnings(self) -> list[str]:
        """Allowed but suspicious: logged at start-up, one line each."""
        found = []
        if self.env == "production" and self.stripe_secret_key.startswith(("sk_test_", "rk_test_")):
            found.append("STRIPE_SECRET_KEY is a test-mode key in production")
        return found

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


def _is_standard_webhook_secret(secret: str) -> bool:
    key = secret.removeprefix("whsec_")
    if key == secret or not key:
        return False
    try:
        return bool(base64.b64decode(key, validate=True))
    except (binascii.Error, ValueError):
        return False


def is_local_host(host: str) -> bool:
    """True for names and addresses that only mean this machine.

    Read the way a browser reads a URL's host: percent-escapes and
    compatibility characters folded, trailing dots dropped, IPv4 in every
    spelling ``inet_aton`` accepts (``127.1``, ``0x7f000001``, ``2130706433``,
    ``0177.0.0.1``), IPv4-mapped IPv6 (``::ffff:127.0.0.1``); loopback and the
    unspecified address (``0.0.0.0``, ``::``, which connect to this machine)
    count, as do ``localhost`` and every ``*.localhost`` name.
    """
    host = unicodedata.normalize("NFKC", unquote(host)).strip("[]").lower().rstrip(".")
    if host in LOCAL_HOSTNAMES or host.endswith(".localhost"):
        return True
    ipv4 = _browser_ipv4(host)
    if ipv4 is not None:
        return ipv4.is_loopback or ipv4.is_unspecified
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        mapped = address.ipv4_mapped
        return mapped.is_loopback or mapped.is_unspecified
    return address.is_loopback or address.is_unspecified


def _browser_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address a browser (the WHATWG URL parser, like inet_aton) reads in ``host``.

    One to four dot-separated numbers, each decimal, octal (leading 0) or
    hex (0x); the last fills the remaining bytes. None when it is not one.
    """
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    numbers = []
    for part in parts:
        number = _ipv4_number(part)
        if number is None:
            return None
        numbers.append(number)
    *leading, last = numbers
    if any(n > 255 for n in leading) or last >= 256 ** (5 - len(numbers)):
        return None
    value = last
    for i, n in enumerate(leading):
        value += n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def _ipv4_number(part: str) -> int | None:
    if part[:2] in ("0x", "0X"):
        digits, base = part[2:] or "0", 16
    elif len(part) > 1 and part.startswith("0"):
        digits, base = part[1:], 8
    else:
        digits, base = part, 10
    if not digits.isascii() or not digits.isalnum() or len(digits) > 32:
        return None
    try:
        return int(digits, base)
    except ValueError:
        return None


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
            "apply_workers": self.number("APPLY_WORKERS", DEFAULT_APPLY_WORKERS, int, 1, 200),
            "apply_batch_max": self.number("APPLY_BATCH_MAX", DEFAULT_APPLY_BATCH_MAX, int, 1, 100),
            "stripe_api_base": self.stripe_api_base(env),
            "body_timeout": self.number("BODY_TIMEOUT", DEFAULT_BODY_TIMEOUT, float, 0.1, 120),
            "billing_rate_limit": self.number(
                "BILLING_RATE_LIMIT", DEFAULT_BILLING_RATE_LIMIT, int, 1, 10_000
            ),
            "billing_rate_window": self.number(
                "BILLING_RATE_WINDOW", DEFAULT_BILLING_RATE_WINDOW, int, 1, 86_400
            ),
            "replay_interval": self.number(
                "REPLAY_INTERVAL", DEFAULT_REPLAY_INTERVAL, int, 0, 86_400
            ),
            "stripe_portal_configuration": self.portal_configuration(),
            **self.database(),
            **self.token_verification(),
            **self.metrics(env),
            **self.app_webhook(env),
        }
        if values["apply_workers"] > values["db_pool_size"]:
            self.problems.append("APPLY_WORKERS must not exceed DB_POOL_SIZE")
        if env == "production":
            self.production_checks(values)
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

    def portal_configuration(self) -> str | None:
        configuration = self.get("STRIPE_PORTAL_CONFIGURATION")
        if configuration and not configuration.startswith("bpc_"):
            self.problems.append("STRIPE_PORTAL_CONFIGURATION must be a configuration id (bpc_...)")
        return configuration

    def metrics(self, env: Environment) -> dict[str, object]:
        token = self.get("METRICS_TOKEN")
        port = self.number("METRICS_PORT", 0, int, 1, 65535) if self.get("METRICS_PORT") else None
        if port is not None and port == self.number("PORT", DEFAULT_PORT, int, 1, 65535):
            self.problems.append("METRICS_PORT must differ from PORT")
        if env == "production" and not token and port is None:
            self.problems.append(
                "set METRICS_TOKEN or METRICS_PORT: production never serves /metrics openly"
            )
        if env == "production" and token and len(token) < MIN_METRICS_TOKEN_LENGTH:
            self.problems.append(
                f"METRICS_TOKEN must have at least {MIN_METRICS_TOKEN_LENGTH} characters"
            )
        return {"metrics_token": token, "metrics_port": port}

    def app_webhook(self, env: Environment) -> dict[str, object]:
        url = self.get("APP_WEBHOOK_URL")
        secret = self.get("APP_WEBHOOK_SECRET")
        if bool(url) != bool(secret):
            self.problems.append("APP_WEBHOOK_URL and APP_WEBHOOK_SECRET are needed together")
        if secret and not _is_standard_webhook_secret(secret):
            self.problems.append("APP_WEBHOOK_SECRET must be whsec_ followed by base64")
        if url:
            self.check_url("APP_WEBHOOK_URL", url, env)
        timeout = self.number("APP_WEBHOOK_TIMEOUT", DEFAULT_APP_WEBHOOK_TIMEOUT, float, 0.1, 60)
        return {
            "app_webhook_url": url,
            "app_webhook_secret": secret,
            "app_webhook_timeout": timeout,
        }

    def check_url(self, name: str, url: str, env: Environment) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            self.problems.append(f"{name} must be an absolute http(s) URL")
        elif env == "production" and parts.scheme != "https":
            self.problems.append(f"{name} must use https in production")
        elif env == "production" and is_local_host(parts.hostname):
            self.problems.append(f"{name} points at this machine; not allowed in production")

    def production_checks(self, values: dict[str, Any]) -> None:
        """What production refuses beyond the shape checks (docs/deployment.md)."""
        for name in SECRET_VARIABLES:
            value = (self.get(name) or "").lower()
            if any(marker in value for marker in PLACEHOLDER_MARKERS):
                self.problems.append(f"{name} is a placeholder from .env.example")
        for position, secret in enumerate(values["webhook_secrets"], start=1):
            if len(secret) < MIN_WEBHOOK_SECRET_LENGTH:
                self.problems.append(
                    f"STRIPE_WEBHOOK_SECRETS entry {position} is too short for a signing secret"
                    f" (whsec_ and at least {MIN_WEBHOOK_SECRET_LENGTH} characters)"
                )
        jwt_secret = values.get("supabase_jwt_secret")
        if jwt_secret and len(jwt_secret.encode()) < MIN_JWT_SECRET_BYTES:
            self.problems.append(
                f"SUPABASE_JWT_SECRET is shorter than {MIN_JWT_SECRET_BYTES} bytes"
            )

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
