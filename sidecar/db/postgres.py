"""Direct Postgres transport: an asyncpg pool calling the engine's functions.

Each call is one statement, so one transaction: it commits whole or not at
all, and a timeout cancels it server-side. The pool starts empty, so the
sidecar starts (and answers /healthz) while the database is still down.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

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
    plan_of,
    rate_limit_of,
    refusal,
)
from sidecar.db.group_commit import GroupCommit

# The apply calls as sent (tally/bench reads their pg_stat_statements counters).
APPLY_SQL = "select public.apply_stripe_event($1::text::jsonb)::text"
APPLY_MANY_SQL = "select public.apply_stripe_events($1::text::jsonb)::text"
# Failures of the connection itself, as opposed to errors the server reported.
CONNECTION_ERRORS = (OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.InternalClientError)
# A function or argument name, as PostgREST reads it from a URL (and safe to quote).
NAME = re.compile(r"[a-z_][a-z0-9_]*")
# Every public function of a name: argument names and types, defaults, result type.
SIGNATURES_SQL = """
select coalesce(json_agg(json_build_object(
         'names', coalesce(p.proargnames, '{}'),
         'types', array(select format_type(t, null) from unnest(p.proargtypes) t),
         'defaults', p.pronargdefaults,
         'returns', format_type(p.prorettype, null))), '[]')::text
  from pg_proc p
 where p.pronamespace = 'public'::regnamespace and p.proname = $1
"""


@dataclass(frozen=True)
class GroupCommitSettings:
    """Webhooks applied together under load (group_commit.py); None: each alone."""

    workers: int
    max_batch: int
    on_batch: Callable[[int], None] | None = None


async def keep_session(connection: asyncpg.Connection) -> None:
    """What the pool runs on a connection given back: nothing beyond asyncpg's own step.

    asyncpg always rolls back a transaction left open first. Its default reset
    then sends one more query per call (release advisory locks, close cursors,
    unlisten, reset settings), a round trip that cost the sidecar a tenth of
    its CPU per webhook. There is never anything for it to undo: every call is
    one statement in its own transaction, and the engine changes only
    transaction-scoped state (`set local`, transaction advisory locks), which
    the commit or rollback ends.
    """


class PostgresDatabase:
    def __init__(
        self, pool: asyncpg.Pool, timeout: float, group_commit: GroupCommitSettings | None = None
    ) -> None:
        self.pool = pool
        self.timeout = timeout
        self._calls: dict[tuple[str, tuple[str, ...]], str] = {}
        self._group = (
            GroupCommit(
                self._apply_many,
                workers=group_commit.workers,
                max_batch=group_commit.max_batch,
                max_wait=timeout,
                on_batch=group_commit.on_batch,
            )
            if group_commit is not None
            else None
        )

    @classmethod
    async def open(
        cls,
        dsn: str,
        *,
        timeout: float,
        max_size: int = 10,
        role: str | None = None,
        group_commit: GroupCommitSettings | None = None,
    ) -> PostgresDatabase:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=0,
            max_size=max_size,
            timeout=timeout,
            command_timeout=timeout,
            # Act as the role PostgREST would use (e.g. service_role), so grants apply.
            server_settings={"role": role} if role else None,
            reset=keep_session,
        )
        return cls(pool, timeout, group_commit)

    async def _fetchval(self, sql: str, *args: Any) -> Any:
        try:
            async with self.pool.acquire(timeout=self.timeout) as conn:
                return await conn.fetchval(sql, *args, timeout=self.timeout)
        except asyncpg.PostgresError as error:
            sqlstate = getattr(error, "sqlstate", None)
            raise refusal(sqlstate, getattr(error, "message", str(error))) from error
        except CONNECTION_ERRORS as error:
            raise DatabaseUnavailable(f"database not reachable ({type(error).__name__})") from error

    async def apply_stripe_event(self, event: JSON) -> JSON:
        if self._group is not None:
            return await self._group.apply(event)
        result = await self._fetchval(APPLY_SQL, wire.dumps(event))
        return _json_object(result)

    async def _apply_many(self, events: list[JSON]) -> list[Any]:
        """Several events in one transaction, each alone (group_commit.py): their results."""
        result = await self._fetchval(APPLY_MANY_SQL, wire.dumps(events))
        value = json.loads(result) if result is not None else None
        if not isinstance(value, list):
            raise DatabaseError(None, "apply_stripe_events returned no JSON array")
        return value

    async def link_stripe_customer(self, user_id: str, customer_id: str) -> None:
        await self._fetchval(
            "select public.link_stripe_customer($1::text::uuid, $2::text)", user_id, customer_id
        )

    async def get_billing_profile(self, user_id: str) -> JSON:
        result = await self._fetchval(
            "select public.get_billing_profile($1::text::uuid)::text", user_id
        )
        return _json_object(result)

    async def catalog_price(self, kind: CatalogKind, key: str) -> tuple[str, bool] | None:
        table = CATALOG_TABLES[kind]
        row = await self._fetchval(
            f"select json_build_array(stripe_price_id, active)::text from public.{table}"
            " where key = $1",
            key,
        )
        if row is None:
            return None
        price_id, active = json.loads(row)
        return price_id, active

    async def plans(self) -> list[Plan]:
        rows = await self._fetchval(
            "select coalesce(json_agg(p order by p.key), '[]')::text from"
            " (select key, stripe_price_id, monthly_credits, active from public.plans) p"
        )
        return [plan_of(row) for row in json.loads(rows)]

    async def acquire_billing_lock(self, user_id: str, holder: str, ttl_seconds: int) -> bool:
        return bool(
            await self._fetchval(
                "select public.acquire_billing_lock($1::text::uuid, $2, $3)",
                user_id,
                holder,
                ttl_seconds,
            )
        )

    async def release_billing_lock(self, user_id: str, holder: str) -> None:
        await self._fetchval(
            "select public.release_billing_lock($1::text::uuid, $2)", user_id, holder
        )

    async def hit_billing_rate_limit(
        self, user_id: str, max_calls: int, window_seconds: int
    ) -> RateLimit:
        result = await self._fetchval(
            "select public.hit_billing_rate_limit($1::text::uuid, $2, $3)::text",
            user_id,
            max_calls,
            window_seconds,
        )
        return rate_limit_of(_json_object(result))

    async def claim_balance_events(
        self, max_events: int, lease_seconds: int
    ) -> list[ClaimedBalanceEvent]:
        result = await self._fetchval(
            "select public.claim_balance_events($1, $2)::text", max_events, lease_seconds
        )
        return claimed_events_of(json.loads(result))

    async def finish_balance_event(
        self, outbox_id: int, delivered: bool, error: str | None = None
    ) -> None:
        await self._fetchval(
            "select public.finish_balance_event($1, $2, $3)", outbox_id, delivered, error
        )

    async def balance_event_backlog(self) -> BalanceEventBacklog:
        result = await self._fetchval("select public.balance_event_backlog()::text")
        return backlog_of(_json_object(result))

    async def expire_holds(self, max_holds: int) -> int:
        return count_of(await self._fetchval("select public.expire_holds($1)", max_holds))

    async def apply_ready_stripe_events(self, max_events: int) -> int:
        return count_of(
            await self._fetchval("select public.apply_ready_stripe_events($1)", max_events)
        )

    async def ping(self) -> None:
        await self._fetchval("select 1")

    async def call(self, function: str, args: JSON) -> Any:
        names = tuple(sorted(args))
        sql = self._calls.get((function, names))
        if sql is None:
            sql = self._calls[function, names] = await self._call_sql(function, names)
        result = await self._fetchval(sql, *([json.dumps(args)] if args else []))
        return json.loads(result) if isinstance(result, str) else None

    async def _call_sql(self, function: str, names: tuple[str, ...]) -> str:
        """The statement calling ``public.<function>`` with ``names``, as PostgREST builds it:
        the function whose arguments include every name and need no other."""
        if not all(NAME.fullmatch(name) for name in (function, *names)):
            raise DatabaseError("42883", f"not a function or argument name: {function}")
        for signature in json.loads(await self._fetchval(SIGNATURES_SQL, function)):
            types = dict(zip(signature["names"], signature["types"], strict=False))
            required = signature["names"][: len(signature["types"]) - signature["defaults"]]
            if set(names) <= types.keys() and set(required) <= set(names):
                arguments = ", ".join(f'"{n}" => {_argument(n, types[n])}' for n in names)
                call = f'public."{function}"({arguments})'
                if signature["returns"] == "void":
                    return f"select {call}"
                return f"select to_jsonb({call})::text"
        raise DatabaseError("42883", f"no function public.{function}({', '.join(names)})")

    async def close(self) -> None:
        if self._group is not None:
            await self._group.close()
        await self.pool.close()


def _argument(name: str, kind: str) -> str:
    """The argument ``name`` of the JSON document $1, as a value of type ``kind``."""
    if kind in ("json", "jsonb"):
        return f"($1::jsonb -> '{name}')::{kind}"
    if kind.endswith("[]"):
        return (
            f"case when jsonb_typeof($1::jsonb -> '{name}') = 'array' then array("
            f"select jsonb_array_elements_text($1::jsonb -> '{name}'))::{kind} end"
        )
    return f"($1::jsonb ->> '{name}')::{kind}"


def _json_object(text: str | None) -> JSON:
    value = json.loads(text) if text is not None else None
    if not isinstance(value, dict):
        raise DatabaseError(None, "the database function returned no JSON object")
    return value
