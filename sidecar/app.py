"""The app factory: routes, one cleanup context per long-lived resource."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
from aiohttp import web

from sidecar import billing, bodies, cors, jobs, metrics, plan_change, replay, webhooks
from sidecar.auth import JwksCache, TokenVerifier
from sidecar.config import Config
from sidecar.context import CONFIG, DATABASE, HTTP, METRICS, STRIPE, TOKENS
from sidecar.db import Database, DatabaseUnavailable
from sidecar.db.postgres import GroupCommitSettings, PostgresDatabase
from sidecar.db.postgrest import PostgrestDatabase
from sidecar.observability import Metrics, logger
from sidecar.responses import error, ok
from sidecar.stripe_api import StripeApi

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_app(config: Config) -> web.Application:
    app = web.Application(
        client_max_size=webhooks.MAX_BODY_BYTES,
        middlewares=[count_responses, cors.cors_headers, bodies.read_in_time, no_500_leaks],
    )
    app[CONFIG] = config
    app[METRICS] = Metrics()
    app.cleanup_ctx.extend([http_session, database, stripe_api, token_verifier])
    jobs.add_jobs(app, config)
    app.cleanup_ctx.append(replay.periodic_replay)  # needs the database and Stripe above
    app.router.add_post("/webhooks/stripe", webhooks.stripe_webhook)
    app.router.add_post("/billing/checkout", billing.checkout)
    app.router.add_post("/billing/portal", billing.portal)
    app.router.add_post("/billing/plan", plan_change.change_plan)
    for path in ("/billing/checkout", "/billing/portal", "/billing/plan"):
        app.router.add_route("OPTIONS", path, cors.preflight)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    metrics.add_routes(app, config)
    return app


# -- resources -------------------------------------------------------------------------


async def http_session(app: web.Application) -> AsyncIterator[None]:
    """One outgoing HTTP session (Stripe, JWKS)."""
    app[HTTP] = aiohttp.ClientSession()
    yield
    await app[HTTP].close()


async def database(app: web.Application) -> AsyncIterator[None]:
    app[DATABASE] = await open_database(app[CONFIG], app[METRICS])
    yield
    await app[DATABASE].close()


async def open_database(config: Config, metrics: Metrics) -> Database:
    if config.transport == "postgrest":
        assert config.supabase_url and config.supabase_service_role_key  # checked by Config
        return PostgrestDatabase.open(
            config.supabase_url, config.supabase_service_role_key, timeout=config.db_timeout
        )
    assert config.database_url  # checked by Config
    return await PostgresDatabase.open(
        config.database_url,
        timeout=config.db_timeout,
        max_size=config.db_pool_size,
        role=config.database_role,
        group_commit=GroupCommitSettings(
            workers=config.apply_workers,
            max_batch=config.apply_batch_max,
            on_batch=metrics.apply_batch_events.observe,
        )
        if config.apply_batch_max > 1
        else None,
    )


async def stripe_api(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    app[STRIPE] = StripeApi(
        config.stripe_secret_key,
        app[HTTP],
        timeout=config.stripe_timeout,
        api_base=config.stripe_api_base,
    )
    yield


async def token_verifier(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    jwks = JwksCache(config.jwks_url, app[HTTP], config.stripe_timeout) if config.jwks_url else None
    app[TOKENS] = TokenVerifier(config.supabase_jwt_secret, jwks, config.token_issuer)
    yield


# -- middlewares -----------------------------------------------------------------------


@web.middleware
async def count_responses(request: web.Request, handler: Handler) -> web.StreamResponse:
    status = 500
    try:
        response = await handler(request)
        status = response.status
    except web.HTTPException as http_error:
        status = http_error.status
        raise
    finally:
        route = request.match_info.route.resource
        label = route.canonical if route is not None else "unmatched"
        request.app[METRICS].responses.labels(route=label, status=str(status)).inc()
    return response


@web.middleware
async def no_500_leaks(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A bug answers a short JSON 500 and a log line; never a trace or a payload."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception as problem:
        logger().error(
            "unhandled error",
            extra={"path": request.path, "error": type(problem).__name__},
        )
        return error(500, "internal error")


# -- health ------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    return ok({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when the database answers. The answer names nothing internal (it is public)."""
    try:
        await request.app[DATABASE].ping()
    except DatabaseUnavailable:
        return error(503, "database unavailable")
    except Exception as problem:  # a refusal is still "not ready"; the why goes to the log
        logger().warning("readiness check failed", extra={"error": type(problem).__name__})
        return error(503, "database unavailable")
    return ok({"status": "ready"})
