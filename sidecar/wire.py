"""JSON text for the database: fast where it can be, exact always, never refused.

orjson encodes an event several times faster than the standard library,
but refuses integers beyond 64 bits (a hostile or out-of-range amount must
still reach the database, which records the event as rejected with its
reason), so those documents are encoded again with such integers written
as their exact digits (``orjson.Fragment``). Both write JSON that
PostgreSQL reads into the same jsonb. A number too large for a double
(``1e400`` read by Python's ``json`` is ``inf``) is written as null, never
as ``Infinity``, which PostgreSQL refuses (the event would be answered 503
until Stripe gave up); the webhook keeps such numbers exactly by storing the
body's own text instead (sidecar/salvage.py), a Fragment written as is.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

# orjson writes integers in [-2**63, 2**64 - 1]; others are written as their digits.
SMALLEST_INT = -(2**63)
LARGEST_INT = 2**64 - 1


def dumps(document: Any) -> str:
    try:
        return orjson.dumps(document).decode()
    except TypeError:
        return orjson.dumps(_writable(document)).decode()


def _writable(document: Any) -> Any:
    """A copy with big integers as exact digits and non-finite floats as null.

    Built with an explicit stack, not recursion: the input decides the depth.
    """
    root: list[Any] = [document]
    stack: list[tuple[Any, Any]] = [(root, 0)]
    while stack:
        container, key = stack.pop()
        value = container[key]
        if isinstance(value, dict):
            copied = dict(value)
            container[key] = copied
            stack.extend((copied, k) for k in copied)
        elif isinstance(value, list | tuple):
            copied_list = list(value)
            container[key] = copied_list
            stack.extend((copied_list, i) for i in range(len(copied_list)))
        elif isinstance(value, int) and not isinstance(value, bool):
            if not SMALLEST_INT <= value <= LARGEST_INT:
                container[key] = orjson.Fragment(str(value))
        elif isinstance(value, float) and not math.isfinite(value):
            container[key] = None
    return root[0]
