"""GET /metrics: Prometheus text, never open to the internet in production.

Two ways to protect it (docs/deployment.md): ``METRICS_TOKEN`` (the route on
the main port wants ``Authorization: Bearer <token>``, compared in constant
time) or ``METRICS_PORT`` (a second listener serving only /metrics, on a port
the platform scrapes privately and never routes publicly). With only a port,
the main port has no /metrics at all. In development, with neither, the main
port serves it openly.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sidecar.config import Config
from sidecar.context import CONFIG, METRICS
from sidecar.observability import Metrics, logger
from sidecar.responses import error


def add_routes(app: web.Application, config: Config) -> None:
    if config.metrics_port is not None:
        app.cleanup_ctx.append(listener)
    if config.metrics_token or config.metrics_port is None:
        app.router.add_get("/metrics", protected)


def render(metrics: Metrics) -> web.Response:
    body = generate_latest(metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def has_token(request: web.Request, token: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), token.encode())


async def protected(request: web.Request) -> web.Response:
    token = request.app[CONFIG].metrics_token
    if token and not has_token(request, token):
        response = error(401, "metrics need the bearer token")
        response.headers["WWW-Authenticate"] = "Bearer"
        return response
    return render(request.app[METRICS])


async def listener(app: web.Application) -> AsyncIterator[None]:
    """The second listener: /metrics only, on METRICS_PORT, for the platform's scraper."""
    config = app[CONFIG]
    assert config.metrics_port is not None  # only installed when set
    metrics_app = web.Application()
    metrics_app[METRICS] = app[METRICS]

    async def scrape(request: web.Request) -> web.Response:
        return render(request.app[METRICS])

    metrics_app.router.add_get("/metrics", scrape)
    runner = web.AppRunner(metrics_app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, config.host, config.metrics_port).start()
    logger().info("metrics listener started", extra={"port": config.metrics_port})
    yield
    await runner.cleanup()
