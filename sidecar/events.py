"""Stripe webhook bodies into typed events (schema/typed_event.schema.json), pure.

Both payload layouts are read here and nowhere else:

- legacy (API versions up to 2025-02-24.acacia): ``invoice.subscription``,
  ``invoice.subscription_details.metadata``, ``lines.data[].price.id`` (or
  ``plan.id``), ``lines.data[].proration``, ``subscription.current_period_*``,
  ``invoice.charge/payment_intent``, ``charge.invoice``; the oldest versions
  also ``invoice.paid`` without ``status`` and disputes without an ``id``;
- basil (2025-03-31.basil and later): ``invoice.parent.subscription_details``,
  ``lines.data[].pricing.price_details.price``,
  ``lines.data[].parent.{subscription_item,invoice_item}_details.proration``,
  ``items.data[].current_period_*``, ``invoice_payment`` objects.

Each reader looks in both places, so an event is understood whatever its
``api_version`` says; ``layout`` only records which shape it had.

Two levels of failure. A body that is not a Stripe event at all (not JSON,
no ``id``/``type``/``data.object``) raises ``Unreadable`` from
``parse_body``/``read_envelope``: the webhook answers 400. A Stripe event
whose object cannot be read becomes a typed event with a ``problem`` (the
reason, naming the field): the database stores it as rejected, nothing
signed is lost, and an operator re-applies it after a fix.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, Literal

JSON = dict[str, Any]
Layout = Literal["legacy", "basil"]

SCHEMA_VERSION = 2
MAX_DEPTH = 64
MAX_ID_LENGTH = 255
MAX_SHORT_TEXT = 64
MAX_EVENT_ID_LENGTH = 1000
MAX_AMOUNT = 2**63 - 1
MAX_TIME = 253402300799  # 9999-12-31T23:59:59Z
OLDEST_READ_IN_FULL = "2019-01-01"
FIRST_BASIL_DATE = "2025-03-31"
_API_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# Postgres jsonb refuses NUL characters and lone surrogates in strings.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_SUSPECT_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}

CHECKOUT_TYPES = (
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
)
INVOICE_TYPES = ("invoice.paid", "invoice.payment_failed")
SUBSCRIPTION_TYPES = (
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
)
CHARGE_TYPES = ("charge.refunded",)
DISPUTE_TYPES = ("charge.dispute.created", "charge.dispute.closed")
INVOICE_PAYMENT_TYPES = ("invoice_payment.paid",)
HANDLED_TYPES = frozenset(
    CHECKOUT_TYPES
    + INVOICE_TYPES
    + SUBSCRIPTION_TYPES
    + CHARGE_TYPES
    + DISPUTE_TYPES
    + INVOICE_PAYMENT_TYPES
)

# Secret and restricted keys name their mode.
KEY_MODES = {"sk_live_": True, "rk_live_": True, "sk_test_": False, "rk_test_": False}
# A body whose stored copy differs from what Stripe signed: never applied as stored.
REPLACED_CHARACTERS_PROBLEM = (
    "the body contains NUL characters or unpaired surrogates, which the database"
    " cannot store (replaced with U+FFFD in the stored copy)"
)

CHECKOUT_MODES = {"payment", "subscription", "setup"}
PAYMENT_STATUSES = {"paid", "unpaid", "no_payment_required"}
SUBSCRIPTION_STATUSES = {
    "incomplete",
    "incomplete_expired",
    "trialing",
    "active",
    "past_due",
    "canceled",
    "unpaid",
    "paused",
}


class Unreadable(Exception):
    """The body is not a Stripe event we can read; ``reason`` is safe to return."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Envelope:
    """The parts of a Stripe event that every type has.

    ``created``, ``livemode`` and ``api_version`` are None when the event
    carries none (or none readable): the typed event then says so in its
    ``problem``, it is not refused.
    """

    id: str
    type: str
    created: int | None
    livemode: bool | None
    api_version: str | None
    obj: JSON
    previous_attributes: Any
    raw: JSON
    # NUL characters or unpaired surrogates were replaced (Postgres cannot store them).
    replaced_characters: bool = False

    @property
    def is_handled(self) -> bool:
        return self.type in HANDLED_TYPES


# ------------------------------------------------------------------------------
# Body -> JSON document
# ------------------------------------------------------------------------------


def _refuse_constant(name: str) -> None:
    raise Unreadable(f"body contains {name}, which is not JSON")


def read_body(body: bytes) -> Envelope:
    """The envelope of a webhook body (``Unreadable`` when it is not a Stripe event)."""
    doc, replaced = _parse(body)
    return read_envelope(doc, replaced_characters=replaced)


def parse_body(body: bytes) -> Any:
    """Strict JSON, with what Postgres cannot store replaced (see ``_parse``)."""
    return _parse(body)[0]


def _parse(body: bytes) -> tuple[Any, bool]:
    """Strict JSON: UTF-8, no NaN/Infinity, bounded depth.

    Postgres cannot store a NUL character or an unpaired surrogate in a
    string: they are replaced with U+FFFD, and the second value says so (an
    event carrying one is recorded with that problem, never refused).
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Unreadable("body is not valid UTF-8") from None
    try:
        doc = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise Unreadable("body is nested too deeply") from None
    except ValueError:  # JSONDecodeError, and integers too long to convert
        raise Unreadable("body is not valid JSON") from None
    if _may_nest_deeper(text) and _nesting_depth(text) > MAX_DEPTH:
        raise Unreadable(f"body is nested deeper than {MAX_DEPTH} levels")
    # Valid UTF-8 has no surrogates and strict JSON no raw control characters, so
    # NUL or a lone surrogate can only come from a \u escape: look closer only then.
    if _SUSPECT_ESCAPE.search(text):
        return _storable(doc)
    return doc, False


def _may_nest_deeper(text: str) -> bool:
    """Whether the text has enough opening brackets to nest deeper than MAX_DEPTH.

    Depth never exceeds the number of openers, and a typical Stripe event has
    a few dozen: counting them (in C) spares most bodies the full measure.
    """
    return text.count("{") + text.count("[") > MAX_DEPTH


def _nesting_depth(text: str) -> int:
    """Deepest bracket nesting of valid JSON text, strings left out (the loops run in C)."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def _storable(doc: Any) -> tuple[Any, bool]:
    """The document with every key and string storable by Postgres, and whether any changed.

    Rebuilt bottom-up with an explicit stack: the input decides the depth.
    """
    replaced = False

    def fix(text: str) -> str:
        nonlocal replaced
        fixed = _UNSTORABLE.sub("\ufffd", text)
        replaced = replaced or fixed != text
        return fixed

    root: list[Any] = [doc]
    stack: list[tuple[Any, Any]] = [(root, 0)]
    while stack:
        container, key = stack.pop()
        value = container[key]
        if isinstance(value, dict):
            rebuilt = {fix(k): v for k, v in value.items()}
            container[key] = rebuilt
            stack.extend((rebuilt, k) for k in rebuilt)
        elif isinstance(value, list):
            container[key] = list(value)
            stack.extend((container[key], i) for i in range(len(value)))
        elif isinstance(value, str):
            container[key] = fix(value)
    return root[0], replaced


# ------------------------------------------------------------------------------
# Field readers: type-checked, with the field's path in every error
# ------------------------------------------------------------------------------


def _dict(value: Any, path: str) -> JSON:
    if not isinstance(value, dict):
        raise Unreadable(f"{path} must be an object")
    return value


def _opt_dict(value: Any, path: str) -> JSON | None:
    return None if value is None else _dict(value, path)


def _text(value: Any, path: str, max_length: int = MAX_ID_LENGTH) -> str | None:
    """A string field; empty means absent."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise Unreadable(f"{path} must be a string")
    if len(value) > max_length:
        raise Unreadable(f"{path} is longer than {max_length} characters")
    return value


def _required_text(value: Any, path: str, max_length: int = MAX_ID_LENGTH) -> str:
    text = _text(value, path, max_length)
    if text is None:
        raise Unreadable(f"{path} is missing")
    return text


def _ref(value: Any, path: str) -> str | None:
    """An id, or an expanded object carrying one."""
    if isinstance(value, dict):
        return _text(value.get("id"), f"{path}.id")
    return _text(value, path)


def _int(value: Any, path: str, low: int = 0, high: int = MAX_AMOUNT) -> int | None:
    """A whole number in [low, high]; 5.0 counts as 5, as in JSON."""
    if value is None:
        return None
    number: int
    if isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        raise Unreadable(f"{path} must be an integer")
    if not low <= number <= high:
        raise Unreadable(f"{path} is out of range")
    return number


def _required_int(value: Any, path: str, low: int = 0, high: int = MAX_AMOUNT) -> int:
    number = _int(value, path, low, high)
    if number is None:
        raise Unreadable(f"{path} is missing")
    return number


def _time(value: Any, path: str) -> int | None:
    """Unix seconds."""
    return _int(value, path, 0, MAX_TIME)


def _bool(value: Any, path: str, default: bool = False) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise Unreadable(f"{path} must be true or false")
    return value


def _choice(value: Any, path: str, allowed: set[str]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise Unreadable(f"{path} must be one of {', '.join(sorted(allowed))}")
    return value


def _metadata_value(obj: JSON | None, key: str, path: str) -> str | None:
    """``metadata.<key>`` of an object whose metadata may be null or absent."""
    if obj is None:
        return None
    metadata = _opt_dict(obj.get("metadata"), f"{path}.metadata")
    if metadata is None:
        return None
    return _text(metadata.get(key), f"{path}.metadata.{key}")


def _list_data(value: Any, path: str) -> list[JSON]:
    """The ``data`` array of a Stripe list object (absent or null: empty)."""
    if value is None:
        return []
    items = _dict(value, path).get("data")
    if items is None:
        return []
    if not isinstance(items, list):
        raise Unreadable(f"{path}.data must be an array")
    return [_dict(item, f"{path}.data[{i}]") for i, item in enumerate(items)]


def _first(*candidates: str | None) -> str | None:
    return next((c for c in candidates if c is not None), None)


# ------------------------------------------------------------------------------
# Envelope
# ------------------------------------------------------------------------------


def read_envelope(doc: Any, *, replaced_characters: bool = False) -> Envelope:
    """The event envelope, if the document is a Stripe event at all.

    A Stripe event has ``object: "event"`` (or no ``object``, as some old
    fixtures), a string ``id`` and ``type``, and an object ``data.object``;
    anything else is not an event (``Unreadable``, answered 400). The other
    envelope fields are read leniently: what is missing or unreadable is
    None here and a ``problem`` of the typed event later.
    """
    event = _dict(doc, "body")
    if event.get("object", "event") != "event":
        raise Unreadable("body is not a Stripe event (object is not 'event')")
    event_id = _required_text(event.get("id"), "id", MAX_EVENT_ID_LENGTH)
    event_type = event.get("type")
    if not isinstance(event_type, str) or not event_type:
        raise Unreadable("type is missing")
    data = _dict(event.get("data"), "data")
    created = event.get("created")
    livemode = event.get("livemode")
    api_version = event.get("api_version")
    return Envelope(
        id=event_id,
        type=event_type,
        created=created if _is_time(created) else None,
        livemode=livemode if isinstance(livemode, bool) else None,
        api_version=api_version if isinstance(api_version, str) and api_version else None,
        obj=_dict(data.get("object"), "data.object"),
        previous_attributes=data.get("previous_attributes"),
        raw=event,
        replaced_characters=replaced_characters,
    )


def _is_time(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TIME


def layout_of(envelope: Envelope) -> Layout:
    """The layout the event's API version renders; by shape when the version is unknown."""
    version = envelope.api_version
    if version and _API_DATE.match(version):
        return "legacy" if version[:10] < FIRST_BASIL_DATE else "basil"
    obj = envelope.obj
    legacy_marks = ("subscription_details", "current_period_start", "invoice", "paid")
    return "legacy" if any(mark in obj for mark in legacy_marks) else "basil"


def _envelope_problem(env: Envelope) -> str | None:
    """What the envelope lacks for the event to be applied."""
    raw = env.raw
    if env.replaced_characters:
        return REPLACED_CHARACTERS_PROBLEM
    if env.created is None:
        return "created is missing or not a Unix time"
    if "livemode" in raw and env.livemode is None:
        return "livemode must be true or false"
    version = raw.get("api_version")
    if version is not None and (not isinstance(version, str) or len(version) > MAX_SHORT_TEXT):
        return "api_version must be a short string"
    if env.previous_attributes is not None and not isinstance(env.previous_attributes, dict):
        return "data.previous_attributes must be an object"
    return None


def _explain(reason: str, env: Envelope) -> str:
    """A reason, naming the API version when it is an old one."""
    version = env.api_version
    if version and _API_DATE.match(version) and version[:10] < OLDEST_READ_IN_FULL:
        return (
            f"{reason} (API version {version[:64]} is from before 2019: its shapes are read"
            " where they carry what the credit policy needs)"
        )
    return reason


# ------------------------------------------------------------------------------
# One reader per object kind
# ------------------------------------------------------------------------------


def _expect_object(obj: JSON, kind: str) -> None:
    if obj.get("object", kind) != kind:
        raise Unreadable(f"data.object is not a {kind}")


def read_checkout_session(env: Envelope, lines: list[JSON] | None = None) -> JSON:
    obj, p = env.obj, "data.object"
    _expect_object(obj, "checkout.session")
    return {
        "id": _required_text(obj.get("id"), f"{p}.id"),
        "mode": _choice(obj.get("mode"), f"{p}.mode", CHECKOUT_MODES),
        "status": _text(obj.get("status"), f"{p}.status", MAX_SHORT_TEXT),
        "payment_status": _choice(
            obj.get("payment_status"), f"{p}.payment_status", PAYMENT_STATUSES
        ),
        "customer_id": _ref(obj.get("customer"), f"{p}.customer"),
        "client_reference_id": _text(obj.get("client_reference_id"), f"{p}.client_reference_id"),
        "metadata_user_id": _metadata_value(obj, "user_id", p),
        "metadata_price_id": _metadata_value(obj, "price_id", p),
        "subscription_id": _ref(obj.get("subscription"), f"{p}.subscription"),
        "payment_intent_id": _ref(obj.get("payment_intent"), f"{p}.payment_intent"),
        "amount_total": _int(obj.get("amount_total"), f"{p}.amount_total"),
        "currency": _text(obj.get("currency"), f"{p}.currency", 16),
    }


def read_line(line: JSON, path: str) -> JSON:
    """One invoice line in either layout (typed ``invoice.lines[]``)."""
    period = _opt_dict(line.get("period"), f"{path}.period") or {}
    amount = _required_int(line.get("amount"), f"{path}.amount", -MAX_AMOUNT, MAX_AMOUNT)
    if "pricing" in line or "parent" in line:
        subscription, proration, credited = _basil_line_parent(line, path)
        pricing = _opt_dict(line.get("pricing"), f"{path}.pricing") or {}
        details = _opt_dict(pricing.get("price_details"), f"{path}.pricing.price_details") or {}
        price_id = _ref(details.get("price"), f"{path}.pricing.price_details.price")
    else:
        plan = _opt_dict(line.get("plan"), f"{path}.plan") or {}
        price_id = _first(
            _ref(line.get("price"), f"{path}.price"), _text(plan.get("id"), f"{path}.plan.id")
        )
        subscription = _ref(line.get("subscription"), f"{path}.subscription")
        if subscription is None and line.get("type") == "subscription":
            # Before 2019 a subscription line's id was its subscription's.
            line_id = _text(line.get("id"), f"{path}.id")
            subscription = line_id if line_id and line_id.startswith("sub_") else None
        proration = _bool(line.get("proration"), f"{path}.proration")
        details = _opt_dict(line.get("proration_details"), f"{path}.proration_details") or {}
        credited = details.get("credited_items") is not None
    return {
        "id": _text(line.get("id"), f"{path}.id"),
        "price_id": price_id,
        "subscription_id": subscription,
        "is_proration": proration,
        "is_credit": proration and (amount < 0 or credited),
        "amount": amount,
        "period_start": _time(period.get("start"), f"{path}.period.start"),
        "period_end": _time(period.get("end"), f"{path}.period.end"),
    }


def _basil_line_parent(line: JSON, path: str) -> tuple[str | None, bool, bool]:
    """Subscription, proration and credit flags of a basil line's parent."""
    parent = _opt_dict(line.get("parent"), f"{path}.parent") or {}
    for kind in ("subscription_item_details", "invoice_item_details"):
        details = _opt_dict(parent.get(kind), f"{path}.parent.{kind}")
        if details is None:
            continue
        dpath = f"{path}.parent.{kind}"
        proration_details = _opt_dict(
            details.get("proration_details"), f"{dpath}.proration_details"
        )
        return (
            _ref(details.get("subscription"), f"{dpath}.subscription"),
            _bool(details.get("proration"), f"{dpath}.proration"),
            (proration_details or {}).get("credited_items") is not None,
        )
    return None, False, False


def _invoice_status(obj: JSON, p: str) -> str:
    """``status``; before it existed (2018), ``paid`` said whether it was paid."""
    status = _text(obj.get("status"), f"{p}.status", MAX_SHORT_TEXT)
    if status is not None:
        return status
    paid = obj.get("paid")
    if isinstance(paid, bool):
        return "paid" if paid else "open"
    raise Unreadable(f"{p}.status is missing (and there is no paid flag)")


def _invoice_amount(obj: JSON, key: str, p: str, status: str) -> int:
    """amount_paid / amount_due, derived from total where old invoices lack them."""
    if obj.get(key) is not None:
        return _required_int(obj.get(key), f"{p}.{key}")
    total = _int(obj.get("total"), f"{p}.total", -MAX_AMOUNT, MAX_AMOUNT)
    if total is None:
        raise Unreadable(f"{p}.{key} is missing (and there is no total)")
    if key == "amount_paid" and status != "paid":
        return 0
    return max(total, 0)


def read_invoice(env: Envelope, lines: list[JSON] | None = None) -> JSON:
    """The invoice; ``lines`` replaces the embedded first page when all were fetched."""
    obj, p = env.obj, "data.object"
    _expect_object(obj, "invoice")
    parent = _opt_dict(obj.get("parent"), f"{p}.parent") or {}
    sub_details_path = f"{p}.parent.subscription_details"
    basil_details = _opt_dict(parent.get("subscription_details"), sub_details_path)
    legacy_details = _opt_dict(obj.get("subscription_details"), f"{p}.subscription_details")
    raw_lines = lines if lines is not None else _list_data(obj.get("lines"), f"{p}.lines")
    typed_lines = [
        read_line(_dict(line, f"{p}.lines.data[{i}]"), f"{p}.lines.data[{i}]")
        for i, line in enumerate(raw_lines)
    ]
    status = _invoice_status(obj, p)
    return {
        "id": _required_text(obj.get("id"), f"{p}.id"),
        "customer_id": _ref(obj.get("customer"), f"{p}.customer"),
        "subscription_id": _first(
            _ref((basil_details or {}).get("subscription"), f"{sub_details_path}.subscription"),
            _ref(obj.get("subscription"), f"{p}.subscription"),
            next((ln["subscription_id"] for ln in typed_lines if ln["subscription_id"]), None),
        ),
        "created": _time(obj.get("created"), f"{p}.created"),
        "status": status,
        "billing_reason": _text(obj.get("billing_reason"), f"{p}.billing_reason", MAX_SHORT_TEXT),
        "amount_paid": _invoice_amount(obj, "amount_paid", p, status),
        "amount_due": _invoice_amount(obj, "amount_due", p, status),
        "currency": _text(obj.get("currency"), f"{p}.currency", 16),
        "subscription_metadata_user_id": _first(
            _metadata_value(basil_details, "user_id", sub_details_path),
            _metadata_value(legacy_details, "user_id", f"{p}.subscription_details"),
        ),
        "charge_id": _ref(obj.get("charge"), f"{p}.charge"),
        "payment_intent_id": _ref(obj.get("payment_intent"), f"{p}.payment_intent"),
        "lines": typed_lines,
    }


def lines_to_fetch(env: Envelope, key_is_live: bool | None) -> str | None:
    """The invoice whose other lines must be read from Stripe before ``normalise``.

    None for an event that will be rejected anyway (a problem in its
    envelope, the other mode than the key's): asking Stripe about an object
    of the other mode fails, and the event must be recorded, not retried.
    """
    if _envelope_problem(env) or livemode_problem(env, key_is_live):
        return None
    return more_lines_of(env)


def more_lines_of(env: Envelope) -> str | None:
    """The invoice id when the event embeds only the first page of its lines."""
    if env.type not in INVOICE_TYPES or not isinstance(env.obj.get("lines"), dict):
        return None
    if env.obj["lines"].get("has_more") is not True:
        return None
    invoice_id = env.obj.get("id")
    return invoice_id if isinstance(invoice_id, str) and invoice_id else None


def _items(sub: JSON, path: str) -> list[JSON]:
    """Price and period of each item of a subscription (or of its previous state).

    The period is the item's (basil) or the subscription's (legacy); before
    items existed (2017), the subscription's ``plan`` was its one item.
    """
    periods = {
        key: _time(sub.get(key), f"{path}.{key}")
        for key in ("current_period_start", "current_period_end")
    }
    if isinstance(sub.get("items"), dict):
        items = []
        for i, item in enumerate(_list_data(sub.get("items"), f"{path}.items")):
            ipath = f"{path}.items.data[{i}]"
            plan = _opt_dict(item.get("plan"), f"{ipath}.plan") or {}
            items.append(
                {
                    "price_id": _first(
                        _ref(item.get("price"), f"{ipath}.price"),
                        _text(plan.get("id"), f"{ipath}.plan.id"),
                    ),
                    **{
                        key: _time(item[key], f"{ipath}.{key}") if key in item else periods[key]
                        for key in periods
                    },
                }
            )
        return items
    if isinstance(sub.get("plan"), dict):
        return [{"price_id": _text(sub["plan"].get("id"), f"{path}.plan.id"), **periods}]
    return []


def _previous(env: Envelope, current: JSON, items: list[JSON]) -> JSON | None:
    """The state an update left, from ``data.previous_attributes``.

    Only what changed is set: status and cancel_at_period_end, and the items
    (with their prices and periods) when they, the legacy ``plan`` or the
    legacy ``current_period_*`` changed.
    """
    prev = env.previous_attributes
    if not prev:
        return None
    p = "data.previous_attributes"
    status = _text(prev.get("status"), f"{p}.status", MAX_SHORT_TEXT)
    cancel = prev.get("cancel_at_period_end")
    result: JSON = {
        "status": status,
        "cancel_at_period_end": _bool(cancel, f"{p}.cancel_at_period_end")
        if cancel is not None
        else None,
        "items": None,
    }
    if isinstance(prev.get("items"), dict):
        result["items"] = _items(
            {**{k: v for k, v in env.obj.items() if k.startswith("current_period")}, **prev}, p
        )
    elif any(key in prev for key in ("plan", "current_period_start", "current_period_end")):
        before = _items({**env.obj, **prev, "items": None}, p) if "plan" in prev else None
        result["items"] = [
            {
                **item,
                **({"price_id": before[0]["price_id"]} if before else {}),
                **{
                    key: _time(prev[key], f"{p}.{key}")
                    for key in ("current_period_start", "current_period_end")
                    if key in prev
                },
            }
            for item in items[:1]
        ] or None
    if result == {"status": None, "cancel_at_period_end": None, "items": None}:
        return None
    return result


def read_subscription(env: Envelope, lines: list[JSON] | None = None) -> JSON:
    obj, p = env.obj, "data.object"
    _expect_object(obj, "subscription")
    items = _items(obj, p)
    typed: JSON = {
        "id": _required_text(obj.get("id"), f"{p}.id"),
        "customer_id": _ref(obj.get("customer"), f"{p}.customer"),
        "status": _choice(obj.get("status"), f"{p}.status", SUBSCRIPTION_STATUSES),
        "created": _time(obj.get("created"), f"{p}.created"),
        "cancel_at_period_end": _bool(obj.get("cancel_at_period_end"), f"{p}.cancel_at_period_end"),
        "canceled_at": _time(obj.get("canceled_at"), f"{p}.canceled_at"),
        "ended_at": _time(obj.get("ended_at"), f"{p}.ended_at"),
        "metadata_user_id": _metadata_value(obj, "user_id", p),
        "items": items,
    }
    typed["previous"] = _previous(env, typed, items)
    return typed


def read_charge(env: Envelope, lines: list[JSON] | None = None) -> JSON:
    obj, p = env.obj, "data.object"
    _expect_object(obj, "charge")
    return {
        "id": _required_text(obj.get("id"), f"{p}.id"),
        "customer_id": _ref(obj.get("customer"), f"{p}.customer"),
        "payment_intent_id": _ref(obj.get("payment_intent"), f"{p}.payment_intent"),
        "invoice_id": _ref(obj.get("invoice"), f"{p}.invoice"),
        "metadata_user_id": _metadata_value(obj, "user_id", p),
        "amount": _required_int(obj.get("amount"), f"{p}.amount"),
        "amount_refunded": _required_int(obj.get("amount_refunded"), f"{p}.amount_refunded"),
        "currency": _text(obj.get("currency"), f"{p}.currency", 16),
    }


def read_dispute(env: Envelope, lines: list[JSON] | None = None) -> JSON:
    obj, p = env.obj, "data.object"
    _expect_object(obj, "dispute")
    charge = _ref(obj.get("charge"), f"{p}.charge")
    # Disputes had no id of their own before 2015: one per charge, named by it.
    dispute_id = _text(obj.get("id"), f"{p}.id") or charge
    if dispute_id is None:
        raise Unreadable(f"{p}.id is missing (and there is no charge to name it by)")
    return {
        "id": dispute_id,
        "charge_id": charge,
        "payment_intent_id": _ref(obj.get("payment_intent"), f"{p}.payment_intent"),
        "amount": _required_int(obj.get("amount"), f"{p}.amount"),
        "currency": _text(obj.get("currency"), f"{p}.currency", 16),
        "status": _required_text(obj.get("status"), f"{p}.status", MAX_SHORT_TEXT),
        "reason": _text(obj.get("reason"), f"{p}.reason", MAX_SHORT_TEXT),
    }


def read_invoice_payment(env: Envelope, lines: list[JSON] | None = None) -> JSON:
    obj, p = env.obj, "data.object"
    _expect_object(obj, "invoice_payment")
    payment = _opt_dict(obj.get("payment"), f"{p}.payment") or {}
    return {
        "id": _required_text(obj.get("id"), f"{p}.id"),
        "invoice_id": _required_text(_ref(obj.get("invoice"), f"{p}.invoice"), f"{p}.invoice"),
        "payment_intent_id": _ref(payment.get("payment_intent"), f"{p}.payment.payment_intent"),
        "charge_id": _ref(payment.get("charge"), f"{p}.payment.charge"),
        "amount_paid": _int(obj.get("amount_paid"), f"{p}.amount_paid"),
        "currency": _text(obj.get("currency"), f"{p}.currency", 16),
        "status": _text(obj.get("status"), f"{p}.status", MAX_SHORT_TEXT),
    }


Reader = Callable[[Envelope, "list[JSON] | None"], JSON]

_READERS: dict[str, tuple[str, Reader]] = {
    **dict.fromkeys(CHECKOUT_TYPES, ("checkout_session", read_checkout_session)),
    **dict.fromkeys(INVOICE_TYPES, ("invoice", read_invoice)),
    **dict.fromkeys(SUBSCRIPTION_TYPES, ("subscription", read_subscription)),
    **dict.fromkeys(CHARGE_TYPES, ("charge", read_charge)),
    **dict.fromkeys(DISPUTE_TYPES, ("dispute", read_dispute)),
    **dict.fromkeys(INVOICE_PAYMENT_TYPES, ("invoice_payment", read_invoice_payment)),
}


def key_is_live(secret_key: str) -> bool | None:
    """Whether a Stripe API key is a live-mode key (None: cannot tell)."""
    for prefix, is_live in KEY_MODES.items():
        if secret_key.startswith(prefix):
            return is_live
    return None


def livemode_problem(env: Envelope, key_is_live: bool | None) -> str | None:
    """Why an event of the other mode than the API key's must not be applied."""
    if key_is_live is None or env.livemode is None or env.livemode == key_is_live:
        return None
    event_mode, key_mode = ("live", "test") if env.livemode else ("test", "live")
    return f"a {event_mode}-mode event, but STRIPE_SECRET_KEY is a {key_mode}-mode key"


def normalise(
    env: Envelope,
    *,
    lines: list[JSON] | None = None,
    key_is_live: bool | None = None,
    lines_problem: str | None = None,
) -> JSON:
    """The typed event for a handled envelope (schema/typed_event.schema.json).

    ``lines``: every line of an invoice whose event embeds only the first
    page (fetched by the caller; ``lines_to_fetch``). ``key_is_live``: the
    mode of the Stripe key, when known; an event of the other mode gets a
    problem. ``lines_problem``: why Stripe would not give those lines (it
    refused the request). An object that cannot be read gives a typed event
    with a ``problem`` and no object: the database records it as rejected.
    """
    key, reader = _READERS[env.type]
    typed: JSON = {
        "schema_version": SCHEMA_VERSION,
        "id": env.id,
        "type": env.type,
        "created": env.created,
        "livemode": env.livemode,
        "api_version": env.api_version if env.api_version and len(env.api_version) <= 64 else None,
        "layout": layout_of(env),
        "problem": _envelope_problem(env) or livemode_problem(env, key_is_live) or lines_problem,
        "raw": env.raw,
    }
    if typed["problem"] is None:
        try:
            typed[key] = reader(env, lines)
        except Unreadable as unreadable:
            typed["problem"] = unreadable.reason
    if typed["problem"] is not None:
        typed["problem"] = _explain(typed["problem"], env)[:1000]
    return typed
