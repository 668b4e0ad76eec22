"""PostgREST transport: Supabase's REST layer, called with the service_role key.

RPC is ``POST /rest/v1/rpc/<function>`` with the arguments as a JSON object;
errors come back as ``{code, message, details, hint}`` where ``code`` is the
SQLSTATE (or ``PGRSTxxx`` for PostgREST's own errors). POST RPCs are not
retried by the client, and a timeout leaves the transaction to the server:
it commits whole or not at all, and Stripe's retry is idempotent.
"""

from __future__ import annotations

from typing import Any

import httpx
from postgrest import AsyncPostgrestClient
from postgrest.exceptions import APIError

from sidecar import wire
from sidecar.db import (
    CATALOG_TABLES,
    JSON,
    BalanceEventBacklog,
    CatalogKind,
    ClaimedBalanceEvent,
    DatabaseError,
    DatabaseUnavailable,
    Plan,
    RateLimit,
    backlog_of,
    claimed_events_of,
    count_of,
    is_retryable,
    plan_of,
    rate_limit_of,
)

# PostgREST's own "cannot reach the database" codes (its error reference, group 0).
UNAVAILABLE_CODES = {"PGRST000", "PGRST001", "PGRST002", "PGRST003"}
NIL_UUID = "00000000-0000-0000-0000-000000000000"


def _unavailable(code: str | None) -> bool:
    if code is None or code in UNAVAILABLE_CODES:
        return True
    # Without a PostgREST body, the client reports the HTTP status as the code.
    if code.isdigit() and len(code) == 3:
        return code.startswith("5")
    return is_retryable(code)


class PostgrestDatabase:
    def __init__(self, client: AsyncPostgrestClient) -> None:
        self.client = client

    @classmethod
    def open(cls, supabase_url: str, service_role_key: str, *, timeout: float) -> PostgrestDatabase:
        rest_url = f"{supabase_url}/rest/v1"
        headers = {"apikey": service_role_key, "Authorization": f"Bearer {service_role_key}"}
        http = httpx.AsyncClient(base_url=rest_url, headers=headers, timeout=httpx.Timeout(timeout))
        return cls(AsyncPostgrestClient(rest_url, headers=headers, http_client=http))

    async def _execute(self, request: Any) -> Any:
        try:
            response = await request.execute()
        except APIError as error:
            raise _refusal(error.code, error.message) from error
        except httpx.HTTPError as error:
            raise DatabaseUnavailable(
                f"PostgREST not reachable ({type(error).__name__})"
            ) from error
        return response.data

    async def _rpc(self, function: str, params: JSON) -> Any:
        return await self._execute(self.client.rpc(function, params))

    async def apply_stripe_event(self, event: JSON) -> JSON:
        """The typed event as sidecar.wire writes it: the client's json.dumps would refuse
        the raw payload's exact text (an orjson.Fragment) and write ``Infinity``."""
        request = self.client.rpc("apply_stripe_event", {}).request
        headers = {**request.headers, "Content-Type": "application/json"}
        try:
            response = await request.session.post(
                str(request.path), content=wire.dumps({"event": event}).encode(), headers=headers
            )
        except httpx.HTTPError as error:
            raise DatabaseUnavailable(
                f"PostgREST not reachable ({type(error).__name__})"
            ) from error
        if not response.is_success:
            try:
                answer = response.json()
            except ValueError:
                answer = None
            if not isinstance(answer, dict):
                raise _refusal(str(response.status_code), None)
            raise _refusal(answer.get("code") or str(response.status_code), answer.get("message"))
        try:
            return _json_object(response.json())
        except ValueError:
            raise DatabaseError(None, "the database function returned no JSON object") from None

    async def link_stripe_customer(self, user_id: str, customer_id: str) -> None:
        await self._rpc("link_stripe_customer", {"user_id": user_id, "customer_id": customer_id})

    async def get_billing_profile(self, user_id: str) -> JSON:
        return _json_object(await self._rpc("get_billing_profile", {"user_id": user_id}))

    async def catalog_price(self, kind: CatalogKind, key: str) -> tuple[str, bool] | None:
        query = self.client.from_(CATALOG_TABLES[kind]).select("stripe_price_id,active")
        rows = await self._execute(query.eq("key", key))
        if not rows:
            return None
        return rows[0]["stripe_price_id"], bool(rows[0]["active"])

    async def plans(self) -> list[Plan]:
        query = self.client.from_("plans").select("key,stripe_price_id,monthly_credits,active")
        return [plan_of(row) for row in await self._execute(query)]

    async def acquire_billing_lock(self, user_id: str, holder: str, ttl_seconds: int) -> bool:
        params = {"user_id": user_id, "holder": holder, "ttl_seconds": ttl_seconds}
        return bool(await self._rpc("acquire_billing_lock", params))

    async def release_billing_lock(self, user_id: str, holder: str) -> None:
        await self._rpc("release_billing_lock", {"user_id": user_id, "holder": holder})

    async def hit_billing_rate_limit(
        self, user_id: str, max_calls: int, window_seconds: int
    ) -> RateLimit:
        params = {"user_id": user_id, "max_calls": max_calls, "window_seconds": window_seconds}
        return rate_limit_of(_json_object(await self._rpc("hit_billing_rate_limit", params)))

    async def call(self, function: str, args: JSON) -> Any:
        return await self._rpc(function, args)

    async def claim_balance_events(
        self, max_events: int, lease_seconds: int
    ) -> list[ClaimedBalanceEvent]:
        params = {"max_events": max_events, "lease_seconds": lease_seconds}
        return claimed_events_of(await self._rpc("claim_balance_events", params))

    async def finish_balance_event(
        self, outbox_id: int, delivered: bool, error: str | None = None
    ) -> None:
        params = {"event_id": outbox_id, "delivered": delivered, "error": error}
        await self._rpc("finish_balance_event", params)

    async def balance_event_backlog(self) -> BalanceEventBacklog:
        return backlog_of(_json_object(await self._rpc("balance_event_backlog", {})))

    async def expire_holds(self, max_holds: int) -> int:
        return count_of(await self._rpc("expire_holds", {"max_holds": max_holds}))

    async def apply_ready_stripe_events(self, max_events: int) -> int:
        return count_of(await self._rpc("apply_ready_stripe_events", {"max_events": max_events}))

    async def ping(self) -> None:
        # A real round trip to the database, not just to PostgREST.
        await self.get_billing_profile(NIL_UUID)

    async def close(self) -> None:
        await self.client.aclose()


def _refusal(code: str | None, message: str | None) -> DatabaseError | DatabaseUnavailable:
    if _unavailable(code):
        return DatabaseUnavailable(f"database not available ({code})")
    return DatabaseError(code, message or "database error")


def _json_object(value: Any) -> JSON:
    if not isinstance(value, dict):
        raise DatabaseError(None, "the database function returned no JSON object")
    return value
