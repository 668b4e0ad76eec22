"""JSON text for the database: fast where it can be, exact always.

orjson encodes an event several times faster than the standard library,
but refuses integers beyond 64 bits (a hostile or out-of-range amount must
still reach the database, which records the event as rejected with its
reason), so those documents fall back to `json.dumps`. Both write JSON that
PostgreSQL reads into the same jsonb. One difference is kept on purpose: a
number too large for a double (`1e400`, which no Stripe event carries)
is written as null, where `json.dumps` would write `Infinity`, which
PostgreSQL refuses, so the event would be answered 503 until Stripe gave up.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumps(document: Any) -> str:
    try:
        return orjson.dumps(document).decode()
    except TypeError:
        return json.dumps(document)
