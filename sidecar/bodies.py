"""Request bodies arrive in time and within size, or the request is answered early.

A client that sends headers and then trickles its body (slowloris) would
hold a connection and a handler forever: every body must be complete within
``BODY_TIMEOUT`` seconds (default 10), else 408 and the connection closes.
The body is read here, once, into aiohttp's cache, so handlers read it with
``await request.read()`` at no cost. Bodies over the app's ``client_max_size``
(1 MiB) are answered 413 here too, and a body aiohttp cannot decode (sent
with ``Content-Encoding: gzip`` or ``deflate`` but not compressed that way,
or a broken chunked encoding) 400: before, aiohttp's decoding error escaped
as a bare 500.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from sidecar.context import CONFIG
from sidecar.observability import logger
from sidecar.responses import error

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
METHODS_WITH_BODIES = ("POST", "PUT", "PATCH")
UNDECODABLE = "request body could not be decoded (it does not match its Content-Encoding)"


@web.middleware
async def read_in_time(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method in METHODS_WITH_BODIES and request.body_exists:
        refusal = await _read(request, request.app[CONFIG].body_timeout)
        if refusal is not None:
            return refusal
    return await handler(request)


async def _read(request: web.Request, timeout: float) -> web.Response | None:
    try:
        async with asyncio.timeout(timeout):
            await request.read()
    except TimeoutError:
        return _refused(request, 408, "request body not received in time")
    except web.HTTPRequestEntityTooLarge:
        return _refused(request, 413, "body larger than 1 MiB")
    except RequestPayloadError:
        return _refused(request, 400, UNDECODABLE)
    return None


def _refused(request: web.Request, status: int, reason: str) -> web.Response:
    logger().info("request refused", extra={"path": request.path, "status": status})
    response = error(status, reason)
    # The rest of the body may still be on its way: this connection serves no one else.
    response.force_close()
    return response
