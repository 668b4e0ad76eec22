"""Signed Stripe events the normaliser cannot take as they are: kept, never refused.

``events.read_body`` refuses what it cannot read as a whole: an integer
longer than Python converts (4300 digits), nesting deeper than 64 levels,
an event id over the database's 1000 characters. Once the signature has
verified, a body that is still a Stripe event (``object: "event"``, ``id``,
``type``, ``data.object``) is read again here and stored as **rejected**
with the reason, and answered 200: nothing signed is lost. Anything else
stays a 400.

The stored raw payload is the body's own text (``orjson.Fragment``: written
as is, never re-encoded, so no recursion on the Python side), which
PostgreSQL reads into jsonb exactly: numbers beyond a double (``1e400``)
or beyond 64 bits keep every digit. Two things PostgreSQL cannot store are
changed in that text, and the event is rejected saying so: NUL characters
and unpaired surrogates become U+FFFD (as ``events`` does), and a number
beyond PostgreSQL's numeric range (more than 131072 digits before the point
or 16383 after) becomes a string of its text.

The same exact text replaces the raw payload of a readable event whose body
has numbers a Python document cannot write back exactly (over 64 bits, or
beyond a double): a cheap scan of the body finds them.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

import orjson

from sidecar import events

# Numbers a Python document cannot write back as sent: 20+ digits, or an
# exponent of 3+ digits. Found by a translation in C (a regular expression over
# every webhook's body cost 0.26 ms of Python per 5 kB): digits become 0, e/E
# become e, signs +, anything else x; then 20 digits in a row, or a digit, e
# and three digits. A match inside a string (cus_1e123) only costs the exact
# reading below, never a change.
_NUMBER_SHAPES = b"".join(
    b"0" if 48 <= b <= 57 else b"e" if b in b"eE" else b"+" if b in b"+-" else b"x"
    for b in range(256)
)
_EXOTIC_SHAPES = (b"0" * 20, b"0e000", b"0e+000")
_SUSPECT_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")
# Escapes left to right: a surrogate pair is kept, NUL or a lone surrogate replaced.
_ESCAPE = re.compile(
    r"\\(?:(u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    r"|u(0000|[dD][89a-fA-F][0-9a-fA-F]{2})|(.))",
    re.DOTALL,
)
_STRING_OR_NUMBER = re.compile(r'"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?', re.DOTALL)
_NUMBER = re.compile(r"-?(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?")
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
# PostgreSQL's numeric: up to 131072 digits before the decimal point, 16383 after.
PG_MAX_WHOLE_DIGITS = 131072
PG_MAX_SCALE = 16383
LONG_ID_PREFIX = 64

DEEP_PROBLEM = (
    f"the body is nested deeper than {events.MAX_DEPTH} levels, which no Stripe event is:"
    " stored as received, not read"
)
NUMBER_PROBLEM = (
    "the body has a number beyond what the database can store (kept as a string of its"
    " digits in the stored copy)"
)


@dataclass(frozen=True)
class Salvaged:
    """What the webhook needs: the envelope to read, the exact raw text, why it is rejected."""

    envelope: events.Envelope
    raw: orjson.Fragment
    problem: str | None


def signed_event(body: bytes) -> Salvaged | None:
    """A signed body ``events.read_body`` refused, read again; None when it is no Stripe event."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    exact = _exact(text)
    if exact is None:
        return None
    doc, stored_text, replaced, problems = exact
    if not isinstance(doc, dict):
        return None
    event_id = doc.get("id")
    if isinstance(event_id, str) and len(event_id) > events.MAX_EVENT_ID_LENGTH:
        stored_id = long_id(event_id)
        doc = {**doc, "id": stored_id}
        problems.append(
            f"the event id is longer than {events.MAX_EVENT_ID_LENGTH} characters: stored"
            f" under {stored_id} (its first {LONG_ID_PREFIX} characters and its SHA-256);"
            " the full id is in the raw payload"
        )
    if _depth(text) > events.MAX_DEPTH:
        problems.insert(0, DEEP_PROBLEM)
    try:  # not an event (no id, type, data.object ...): still a 400
        envelope = events.read_envelope(doc, replaced_characters=replaced)
    except events.Unreadable:
        return None
    return Salvaged(envelope, orjson.Fragment(stored_text), "; ".join(problems) or None)


def exact_raw(body: bytes, envelope: events.Envelope) -> Salvaged | None:
    """For a readable event: the exact raw text when the body has exotic numbers, else None."""
    if not has_exotic_number(body):
        return None
    exact = _exact(body.decode("utf-8"))
    if exact is None:  # read by events.read_body, so never; keep its reading
        return None
    _, stored_text, _, problems = exact
    return Salvaged(envelope, orjson.Fragment(stored_text), "; ".join(problems) or None)


def has_exotic_number(body: bytes) -> bool:
    """Whether the body may hold a number a Python document cannot write back exactly."""
    shapes = body.translate(_NUMBER_SHAPES)
    return any(shape in shapes for shape in _EXOTIC_SHAPES)


def long_id(event_id: str) -> str:
    """A stable id within the database's 1000 characters for a longer one."""
    digest = hashlib.sha256(event_id.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{event_id[:LONG_ID_PREFIX]}...sha256:{digest}"


def rejected(typed: dict[str, Any], salvaged: Salvaged) -> dict[str, Any]:
    """The typed event with the exact raw text, and, with a problem, rejected for it."""
    raw = salvaged.raw
    problem = "; ".join(dict.fromkeys(p for p in (salvaged.problem, typed["problem"]) if p)) or None
    if problem is None:
        return {**typed, "raw": raw}
    base = ("schema_version", "id", "type", "created", "livemode", "api_version", "layout")
    return {**{key: typed[key] for key in base}, "problem": problem[:1000], "raw": raw}


def _exact(text: str) -> tuple[Any, str, bool, list[str]] | None:
    """The document, the text PostgreSQL can store, whether characters were replaced, problems.

    None when the text is not JSON (or nests deeper than Python's parser goes).
    """
    replaced = False
    if _SUSPECT_ESCAPE.search(text):
        fixed = _ESCAPE.sub(_storable_escape, text)
        replaced = fixed != text
        text = fixed
    unstorable = False

    def whole(digits: str) -> Any:
        nonlocal unstorable
        unstorable = unstorable or not _pg_storable(digits)
        try:
            return int(digits)
        except ValueError:  # over Python's digit limit: its text, for reading only
            return orjson.Fragment(digits)

    def real(digits: str) -> Any:
        nonlocal unstorable
        unstorable = unstorable or not _pg_storable(digits)
        value = float(digits)
        return value if math.isfinite(value) else orjson.Fragment(digits)

    try:
        doc = json.loads(text, parse_int=whole, parse_float=real, parse_constant=_not_json)
    except (ValueError, RecursionError):
        return None
    problems = []
    if replaced:
        problems.append(events.REPLACED_CHARACTERS_PROBLEM)
    if unstorable:
        text = _STRING_OR_NUMBER.sub(_quoted_if_unstorable, text)
        problems.append(NUMBER_PROBLEM)
    return doc, text, replaced, problems


def _not_json(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _storable_escape(match: re.Match[str]) -> str:
    return "\\ufffd" if match.group(2) is not None else match.group(0)


def _pg_storable(number: str) -> bool:
    """Whether PostgreSQL's numeric takes this JSON number (conservatively)."""
    parts = _NUMBER.fullmatch(number)
    if parts is None:
        return False
    whole, fraction, exponent = parts.group(1), parts.group(2) or "", parts.group(3) or "0"
    if len(exponent.lstrip("+-")) > 7:
        return False
    shift = int(exponent)
    return (
        len(whole.lstrip("0")) + shift <= PG_MAX_WHOLE_DIGITS
        and len(fraction) - shift <= PG_MAX_SCALE
    )


def _quoted_if_unstorable(match: re.Match[str]) -> str:
    token = match.group(0)
    if token.startswith('"') or _pg_storable(token):
        return token
    return f'"{token}"'


def _depth(text: str) -> int:
    """Deepest bracket nesting of valid JSON text, strings left out."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)
