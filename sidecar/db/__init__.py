"""One small interface to the credit engine, two transports behind it.

- ``postgres``: direct Postgres through an asyncpg pool (DATABASE_URL).
- ``postgrest``: Supabase's REST layer, RPC through the postgrest client
  (SUPABASE_URL + SUPABASE_SERVICE_ROLE_KEY).

Both raise ``DatabaseUnavailable`` when the database cannot be reached or
times out (the caller answers 503 and Stripe retries) and ``DatabaseError``
with the SQLSTATE for anything the database refused.
"""

from __future__ import annotations

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


class Database(Protocol):
    """What the sidecar needs from the credit engine (SPEC 4)."""

    async def apply_stripe_event(self, event: JSON) -> JSON:
        """``public.apply_stripe_event(event jsonb)``: the outcome, durably recorded."""
        ...

    async def link_stripe_customer(self, user_id: str, customer_id: str) -> None:
        """``public.link_stripe_customer``: store the link, apply parked events."""
        ...

    async def get_billing_profile(self, user_id: str) -> JSON:
        """``public.get_billing_profile``: user_exists, customer_id, has_active_subscription."""
        ...

    async def catalog_price(self, kind: CatalogKind, key: str) -> tuple[str, bool] | None:
        """The Stripe price id and active flag of a plan or pack key, or None."""
        ...

    async def ping(self) -> None:
        """Raise DatabaseUnavailable unless the database answers."""
        ...

    async def close(self) -> None: ...


CATALOG_TABLES: dict[CatalogKind, str] = {"plan": "plans", "pack": "credit_packs"}
