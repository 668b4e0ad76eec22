"""Stripe's wire format, for the stand-in: form decoding, errors and list pages.

- Requests are ``application/x-www-form-urlencoded`` (POST bodies) or query
  strings (GET), with nested keys: ``metadata[user_id]=...``,
  ``items[0][price]=...``, ``expand[]=...``. ``decode_form`` turns the flat
  pairs into the nested structure Stripe reads (lists for indexed keys).
- Errors are ``{"error": {"type", "code", "message", "param"}}`` with a
  ``Request-Id`` header.
- Lists are ``{"object": "list", "url", "has_more", "data"}``, newest first,
  paged with ``limit`` (1..100, default 10) and ``starting_after`` /
  ``ending_before`` (object ids).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web

JSON = dict[str, Any]
_KEY_PART = re.compile(r"\[([^\[\]]*)\]")


class StripeError(Exception):
    """An answer in Stripe's error format."""

    def __init__(
        self,
        status: int,
        type: str,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body: JSON = {"error": {"type": type, "message": message}}
        if code is not None:
            self.body["error"]["code"] = code
        if param is not None:
            self.body["error"]["param"] = param


def invalid(message: str, *, param: str | None = None, code: str | None = None) -> StripeError:
    return StripeError(400, "invalid_request_error", message, code=code, param=param)


def missing(kind: str, object_id: str, param: str = "id") -> StripeError:
    return StripeError(
        404,
        "invalid_request_error",
        f"No such {kind}: '{object_id}'",
        code="resource_missing",
        param=param,
    )


def error_response(error: StripeError, request_id: str) -> web.Response:
    return web.json_response(error.body, status=error.status, headers={"Request-Id": request_id})


# -- decoding ------------------------------------------------------------------------------


def _split_key(key: str) -> list[str]:
    head, bracket, _ = key.partition("[")
    if not bracket:
        return [key]
    rest = key[len(head) :]
    parts = _KEY_PART.findall(rest)
    if "".join(f"[{p}]" for p in parts) != rest:
        raise invalid(f"Invalid parameter name: {key}", param=key)
    return [head, *parts]


def _set(tree: JSON, parts: list[str], value: str) -> None:
    node: Any = tree
    for part, following in itertools.pairwise(parts):
        if part == "" or not isinstance(node, dict):
            raise invalid(f"Invalid parameter: {parts[0]}", param=parts[0])
        child = node.setdefault(part, [] if following == "" else {})
        if isinstance(child, list) != (following == ""):
            raise invalid(f"Invalid parameter: {parts[0]}", param=parts[0])
        node = child
    if isinstance(node, list):
        node.append(value)
    elif isinstance(node, dict) and parts[-1] != "":
        node[parts[-1]] = value
    else:
        raise invalid(f"Invalid parameter: {parts[0]}", param=parts[0])


def _lists(node: Any) -> Any:
    """Dicts whose keys are all indices become lists, in index order."""
    if isinstance(node, list):
        return [_lists(v) for v in node]
    if not isinstance(node, dict):
        return node
    converted = {k: _lists(v) for k, v in node.items()}
    if converted and all(k.isdigit() for k in converted):
        return [converted[k] for k in sorted(converted, key=int)]
    return converted


def decode_form(pairs: Iterable[tuple[str, str]]) -> JSON:
    """Flat ``a[b][0][c]=v`` pairs to the nested params Stripe reads."""
    tree: JSON = {}
    for key, value in pairs:
        _set(tree, _split_key(key), value)
    decoded = _lists(tree)
    assert isinstance(decoded, dict)
    return decoded


def as_bool(value: Any, param: str) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return value == "true"
    raise invalid(f"Invalid boolean: {value}", param=param)


def as_int(value: Any, param: str) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d{1,18}", value):
        return int(value)
    raise invalid(f"Invalid integer: {value}", param=param)


def check_params(params: JSON, allowed: Iterable[str]) -> None:
    """Stripe refuses a parameter it does not know, naming it."""
    known = {*allowed, "expand"}
    for name in params:
        if name not in known:
            raise invalid(
                f"Received unknown parameter: {name}", param=name, code="parameter_unknown"
            )


def require(params: JSON, *names: str) -> None:
    for name in names:
        if params.get(name) in (None, ""):
            raise invalid(f"Missing required param: {name}.", param=name, code="parameter_missing")


# -- lists ---------------------------------------------------------------------------------

LIST_PARAMS = ("limit", "starting_after", "ending_before", "created")


def created_matches(created: int, condition: Any) -> bool:
    """``created=<ts>`` or ``created[gt|gte|lt|lte]=<ts>``."""
    if condition is None:
        return True
    if not isinstance(condition, dict):
        return created == as_int(condition, "created")
    checks: dict[str, Callable[[int, int], bool]] = {
        "gt": lambda a, b: a > b,
        "gte": lambda a, b: a >= b,
        "lt": lambda a, b: a < b,
        "lte": lambda a, b: a <= b,
    }
    for op, bound in condition.items():
        if op not in checks:
            raise invalid(f"Received unknown parameter: created[{op}]", param=f"created[{op}]")
        if not checks[op](created, as_int(bound, f"created[{op}]")):
            return False
    return True


def list_page(objects: list[JSON], params: JSON, url: str) -> JSON:
    """One page of ``objects`` (already filtered, newest first) as Stripe lists it."""
    limit = as_int(params.get("limit", 10), "limit")
    if not 1 <= limit <= 100:
        raise invalid("This value must be between 1 and 100.", param="limit")
    matching = [o for o in objects if created_matches(o.get("created", 0), params.get("created"))]
    ids = [o["id"] for o in matching]
    if "starting_after" in params:
        cursor = params["starting_after"]
        if cursor not in ids:
            raise missing("object", cursor, "starting_after")
        matching = matching[ids.index(cursor) + 1 :]
        page = matching[:limit]
    elif "ending_before" in params:
        cursor = params["ending_before"]
        if cursor not in ids:
            raise missing("object", cursor, "ending_before")
        matching = matching[: ids.index(cursor)]
        page = matching[-limit:]
    else:
        page = matching[:limit]
    return {"object": "list", "url": url, "has_more": len(matching) > len(page), "data": page}


def newest_first(objects: Iterable[JSON]) -> list[JSON]:
    """Stripe's list order; the later-added of two same-second objects comes first."""
    indexed = list(enumerate(objects))
    indexed.sort(key=lambda pair: (pair[1].get("created", 0), pair[0]), reverse=True)
    return [obj for _, obj in indexed]
