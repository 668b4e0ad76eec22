"""Stand-ins for what cannot run here: Stripe's API and Supabase's PostgREST.

Both are small aiohttp servers speaking the real wire format, so the sidecar
talks to them through its real clients (stripe-python, postgrest-py):

- ``FakeStripe``: ``tests.support.stripe_stand_in.StripeStandIn`` (customers,
  Checkout and Portal sessions, portal configurations, webhook endpoints,
  subscriptions and schedules, invoices and their lines, events, refunds,
  disputes; idempotency keys, errors and list pages as Stripe answers them).
- ``FakePostgrest``: ``POST /rest/v1/rpc/<fn>`` and ``GET /rest/v1/<table>``
  with ``apikey`` and ``Authorization: Bearer <jwt>``; runs the call in the
  real Postgres as the token's role (``set local role`` + request.jwt.claims),
  and maps SQLSTATEs to HTTP statuses as PostgREST's error reference does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import jwt
from aiohttp import web

from tests.support.postgrest_errors import postgrest_status
from tests.support.stripe_stand_in import StripeRequest, StripeStandIn

__all__ = ["FakePostgrest", "FakeStripe", "StripeRequest", "StripeStandIn"]

# ----------------------------------------------------------------------------------
# Stripe: the stand-in lives in its own module; the old name stays for existing tests.
# ----------------------------------------------------------------------------------

FakeStripe = StripeStandIn


# ----------------------------------------------------------------------------------
# PostgREST
# ----------------------------------------------------------------------------------


# PostgREST's SQLSTATE -> HTTP status table (docs.postgrest.org, references/errors).
def postgrest_error(status: int, code: str, message: str, details: Any = None) -> web.Response:
    body = {"code": code, "message": message, "details": details, "hint": None}
    return web.json_response(body, status=status)


# PostgREST applies the settings of the role it switches to (statement_timeout
# above all) for the request's transaction: "impersonated role settings".
IMPERSONATED_ROLE_SETTINGS = """
select set_config(split_part(setting, '=', 1), substr(setting, strpos(setting, '=') + 1), true)
  from pg_db_role_setting s, unnest(s.setconfig) as setting
 where s.setrole = $1::regrole
   and s.setdatabase in (0, (select oid from pg_database where datname = current_database()))
"""


@dataclass
class FakePostgrest:
    """PostgREST in front of a real database; ``api_keys`` are the accepted apikeys."""

    database_url: str
    jwt_secret: str
    api_keys: set[str]
    calls: list[tuple[str, str]] = field(default_factory=list)  # (function or table, role)
    pool: asyncpg.Pool | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/rest/v1/rpc/{function}", self.rpc)
        app.router.add_get("/rest/v1/{table}", self.table)
        app.cleanup_ctx.append(self._pool)
        return app

    async def _pool(self, app: web.Application):
        self.pool = await asyncpg.create_pool(self.database_url, min_size=0, max_size=4)
        yield
        await self.pool.close()

    def _claims(self, request: web.Request) -> dict[str, Any] | web.Response:
        if request.headers.get("apikey") not in self.api_keys:
            return postgrest_error(401, "PGRST301", "Invalid API key")
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer":
            return {"role": "anon"}
        try:
            return jwt.decode(
                token,
                self.jwt_secret,
                algorithms=["HS256"],
                audience=None,
                options={"verify_aud": False},
            )
        except jwt.PyJWTError:
            return postgrest_error(401, "PGRST301", "JWT could not be decoded")

    async def _run(self, claims: dict[str, Any], sql: str, *args: Any) -> web.Response | Any:
        role = str(claims.get("role", "anon"))
        assert self.pool is not None
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                await conn.execute(f'set local role "{role}"')
                await conn.execute(IMPERSONATED_ROLE_SETTINGS, role)
                await conn.execute(
                    "select set_config('request.jwt.claims', $1, true)", json.dumps(claims)
                )
                return await conn.fetchval(sql, *args)
        except asyncpg.PostgresError as error:
            code = error.sqlstate or "XX000"
            return postgrest_error(
                postgrest_status(code, role),
                code,
                getattr(error, "message", str(error)),
                getattr(error, "detail", None),
            )
        except (OSError, asyncpg.InterfaceError):
            return postgrest_error(
                503, "PGRST000", "Database client error. Retrying the connection."
            )

    async def rpc(self, request: web.Request) -> web.Response:
        claims = self._claims(request)
        if isinstance(claims, web.Response):
            return claims
        function = request.match_info["function"]
        self.calls.append((function, str(claims.get("role"))))
        # Like PostgREST, the body's text goes to the database as it is (numbers beyond a
        # double or Python's digit limit included); it is read here only for its keys.
        body = await request.text()
        try:
            args = json.loads(body, parse_int=len, parse_float=len)
        except ValueError:
            return postgrest_error(400, "PGRST102", "Empty or invalid json")
        if not isinstance(args, dict):
            return postgrest_error(400, "PGRST102", "Empty or invalid json")
        signature = await self._signature(function, sorted(args))
        if isinstance(signature, web.Response):
            return signature
        arg_types, returns = signature
        call = ", ".join(
            f"\"{name}\" := ($1::jsonb -> '{name}')::{kind}"
            if kind in ("json", "jsonb")
            else f"\"{name}\" := ($1::jsonb ->> '{name}')::{kind}"
            for name, kind in arg_types
        )
        result = await self._run(
            claims,
            f'select to_jsonb(public."{function}"({call}))::text',
            *([body] if arg_types else []),  # a call without arguments has no $1
        )
        if isinstance(result, web.Response):
            return result
        if returns == "void":
            return web.Response(status=204)
        return web.Response(text=result or "null", content_type="application/json")

    async def _signature(
        self, function: str, names: list[str]
    ) -> tuple[list[tuple[str, str]], str] | web.Response:
        """Argument names and types of public.<function> taking exactly ``names``."""
        assert self.pool is not None
        rows = await self.pool.fetch(
            """
            select p.proargnames as names, p.pronargdefaults as defaults,
                   array(select format_type(t, null) from unnest(p.proargtypes) t) as types,
                   format_type(p.prorettype, null) as returns
              from pg_proc p join pg_namespace n on n.oid = p.pronamespace
             where n.nspname = 'public' and p.proname = $1
            """,
            function,
        )
        for row in rows:
            pairs = list(zip(row["names"] or [], row["types"], strict=False))
            required = {name for name, _ in pairs[: len(pairs) - row["defaults"]]}
            # Like PostgREST: every given argument exists, every one without default is given.
            if set(names) <= {name for name, _ in pairs} and required <= set(names):
                return [(n, t) for n, t in pairs if n in names], row["returns"]
        return postgrest_error(
            404,
            "PGRST202",
            f"Could not find the function public.{function}({', '.join(names)})"
            " in the schema cache",
        )

    async def table(self, request: web.Request) -> web.Response:
        claims = self._claims(request)
        if isinstance(claims, web.Response):
            return claims
        table = request.match_info["table"]
        self.calls.append((table, str(claims.get("role"))))
        columns = request.query.get("select", "*")
        filters = [(k, v.removeprefix("eq.")) for k, v in request.query.items() if k != "select"]
        if not all(
            c.replace("_", "").isalnum()
            for c in [table, *columns.split(","), *dict(filters)]
            if c != "*"
        ):
            return postgrest_error(400, "PGRST100", "unsupported query in this stand-in")
        where = " and ".join(f'"{k}" = ${i}' for i, (k, _) in enumerate(filters, start=1))
        sql = (
            f"select coalesce(json_agg(t), '[]')::text from (select {columns}"
            f' from public."{table}"{" where " + where if where else ""}) t'
        )
        result = await self._run(claims, sql, *(v for _, v in filters))
        if isinstance(result, web.Response):
            return result
        return web.Response(text=result, content_type="application/json")
