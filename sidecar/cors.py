"""CORS for /billing/*: the browser app at APP_BASE_URL may call it, no other origin.

The frontend calls Checkout and Portal from the browser with its access token
in ``Authorization``, which makes every call a CORS request with a preflight.
Only the origin of ``APP_BASE_URL`` is allowed; other origins get no CORS
headers, so browsers refuse to hand them the answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web

from sidecar.context import CONFIG

ALLOWED_METHODS = "POST, OPTIONS"
ALLOWED_HEADERS = "Authorization, Content-Type"
PREFLIGHT_MAX_AGE = "600"
CORS_PREFIX = "/billing/"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _allowed(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    return origin is not None and origin == origin_of(request.app[CONFIG].app_base_url)


async def preflight(request: web.Request) -> web.Response:
    """OPTIONS on a billing route: 204 with the CORS grant for the app's origin only."""
    if not _allowed(request):
        return web.Response(status=403, text="origin not allowed")
    return web.Response(
        status=204,
        headers={
            "Access-Control-Allow-Methods": ALLOWED_METHODS,
            "Access-Control-Allow-Headers": ALLOWED_HEADERS,
            "Access-Control-Max-Age": PREFLIGHT_MAX_AGE,
        },
    )


@web.middleware
async def cors_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    if request.path.startswith(CORS_PREFIX) and _allowed(request):
        response.headers["Access-Control-Allow-Origin"] = request.headers["Origin"]
        response.headers["Vary"] = "Origin"
    return response
