"""JSON answers with deliberate statuses; the same shape for every error."""

from __future__ import annotations

from typing import Any

from aiohttp import web


def error(status: int, reason: str, **extra: Any) -> web.Response:
    return web.json_response({"error": reason, **extra}, status=status)


def ok(payload: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response(payload, status=status)
