"""One small interface to the credit engine, two transports behind it.

- ``postgres``: direct Postgres through an asyncpg pool (DATABASE_URL).
- ``postgrest``: Supabase's REST layer, RPC through the postgrest client
  (SUPABASE_URL + SUPABASE_SERVICE_ROLE_KEY).

Both raise ``DatabaseUnavailable`` when the database cannot be reached or
times out (the caller answers 503 and Stripe retries) and ``DatabaseError``
with the SQLSTATE for anything the database refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

JSON = dict[str, Any]
CatalogKind = Literal["plan", "pack"]

# SQLSTATE classes that mean "not now": connection, resources, operator
# intervention (shutdown, statement timeout), serialization/deadlock.
RETRYABLE_SQLSTATE_CLASSES = ("08", "40", "53", "57", "55P03")


class DatabaseUnavailable(Exception):
    """The database could not be reached or did not answer in time; nothing was done."""


class DatabaseError(Exception):
    """The database refused a call; ``sqlstate`` says why."""

    def __init__(self, sqlstate: str | None, message: str) -> None:
        super().__init__(f"{sqlstate}: {message}")
        self.sqlstate = sqlstate
        self.message = message


def is_retryable(sqlstate: str | None) -> bool:
    return sqlstate is not None and sqlstate.startswith(RETRYABLE_SQLSTATE_CLASSES)


def refusal(sqlstate: str | None, message: str) -> DatabaseUnavailable | DatabaseError:
    """What a call the database refused raises: unavailable if a later try may succeed."""
    if is_retryable(sqlstate):
        return DatabaseUnavailable(f"database not available ({sqlstate})")
    return DatabaseError(sqlstate, message)


class Database(Protocol):
    """What the sidecar needs from the credit engine (docs/engine.md) and billing."""

    async def apply_stripe_event(self, event: JSON) -> JSON:
        """``public.apply_stripe_event(event jsonb)``: the outcome, durably recorded."""
        ...

    async def link_stripe_customer(self, user_id: str, customer_id: str) -> None:
        """``public.link_stripe_customer``: store the link, apply parked events."""
        ...

    async def get_billing_profile(self, user_id: str) -> JSON:
        """``public.get_billing_profile``: user_exists, customer_id, active_subscription."""
        ...

    async def plans(self) -> list[Plan]:
        """Every plan of the catalog (``public.plans``), active or not."""
        ...

    async def acquire_billing_lock(self, user_id: str, holder: str, ttl_seconds: int) -> bool:
        """``public.acquire_billing_lock``: True when ``holder`` now holds the user's lease."""
        ...

    async def release_billing_lock(self, user_id: str, holder: str) -> None:
        """``public.release_billing_lock``."""
        ...

    async def hit_billing_rate_limit(
        self, user_id: str, max_calls: int, window_seconds: int
    ) -> RateLimit:
        """``public.hit_billing_rate_limit``: count one call of the user."""
        ...

    async def catalog_price(self, kind: CatalogKind, key: str) -> tuple[str, bool] | None:
        """The Stripe price id and active flag of a plan or pack key, or None."""
        ...

    async def claim_balance_events(
        self, max_events: int, lease_seconds: int
    ) -> list[ClaimedBalanceEvent]:
        """``public.claim_balance_events``: due events, leased to this caller."""
        ...

    async def finish_balance_event(
        self, outbox_id: int, delivered: bool, error: str | None = None
    ) -> None:
        """``public.finish_balance_event``: a delivery, or a failed attempt (retried later)."""
        ...

    async def balance_event_backlog(self) -> BalanceEventBacklog:
        """``public.balance_event_backlog``: what waits for delivery."""
        ...

    async def expire_holds(self, max_holds: int) -> int:
        """``public.expire_holds``: how many holds were marked expired."""
        ...

    async def apply_ready_stripe_events(self, max_events: int) -> int:
        """``public.apply_ready_stripe_events``: how many woken events were applied."""
        ...

    async def ping(self) -> None:
        """Raise DatabaseUnavailable unless the database answers."""
        ...

    async def call(self, function: str, args: JSON) -> Any:
        """``public.<function>`` with named arguments given as JSON values, as PostgREST
        takes them (timestamps as ISO text); its result as JSON (None for void)."""
        ...

    async def close(self) -> None: ...


CATALOG_TABLES: dict[CatalogKind, str] = {"plan": "plans", "pack": "credit_packs"}


@dataclass(frozen=True)
class Plan:
    key: str
    price_id: str
    monthly_credits: int
    active: bool


@dataclass(frozen=True)
class RateLimit:
    allowed: bool
    retry_after: int


@dataclass(frozen=True)
class ClaimedBalanceEvent:
    """A balance event leased for delivery: its outbox id, JSON body and past attempts."""

    outbox_id: int
    payload: JSON
    attempts: int

    @property
    def type(self) -> str:
        return str(self.payload.get("type", "unknown"))


@dataclass(frozen=True)
class BalanceEventBacklog:
    pending: int
    failing: int
    oldest_seconds: int


def plan_of(row: JSON) -> Plan:
    return Plan(
        key=str(row["key"]),
        price_id=str(row["stripe_price_id"]),
        monthly_credits=int(row["monthly_credits"]),
        active=bool(row["active"]),
    )


def rate_limit_of(value: JSON) -> RateLimit:
    return RateLimit(allowed=bool(value["allowed"]), retry_after=int(value["retry_after"]))


def claimed_events_of(value: Any) -> list[ClaimedBalanceEvent]:
    if not isinstance(value, list):
        raise DatabaseError(None, "claim_balance_events returned no JSON array")
    return [
        ClaimedBalanceEvent(
            outbox_id=int(item["id"]), payload=dict(item["payload"]), attempts=int(item["attempts"])
        )
        for item in value
    ]


def backlog_of(value: JSON) -> BalanceEventBacklog:
    return BalanceEventBacklog(
        pending=int(value["pending"]),
        failing=int(value["failing"]),
        oldest_seconds=int(value["oldest_seconds"]),
    )


def count_of(value: Any) -> int:
    """An integer a function returned (PostgREST sends it as a JSON number)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise DatabaseError(None, "the database function returned no integer")
    return int(value)
