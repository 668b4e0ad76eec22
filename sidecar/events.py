"""Stripe webhook bodies into typed events (schema/typed_event.schema.json), pure.

Both payload layouts are read here and nowhere else:

- legacy (API versions up to 2025-02-24.acacia): ``invoice.subscription``,
  ``invoice.subscription_details.metadata``, ``lines.data[].price.id``,
  ``lines.data[].proration``, ``subscription.current_period_*``,
  ``invoice.charge/payment_intent``, ``charge.invoice``;
- basil (2025-03-31.basil and later): ``invoice.parent.subscription_details``,
  ``lines.data[].pricing.price_details.price``,
  ``lines.data[].parent.subscription_item_details.proration``,
  ``items.data[].current_period_*``.

Each reader looks in both places, so an event is understood whatever its
``api_version`` says; ``layout`` only records which shape it had. Anything
that cannot be read raises ``Unreadable`` with a short reason naming the
field, never another exception.
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

SCHEMA_VERSION = 1
MAX_DEPTH = 64
MAX_ID_LENGTH = 255
MAX_SHORT_TEXT = 64
MAX_INTEGER = 2**53 - 1
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
HANDLED_TYPES = frozenset(
    CHECKOUT_TYPES + INVOICE_TYPES + SUBSCRIPTION_TYPES + CHARGE_TYPES + DISPUTE_TYPES
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
    """The parts of a Stripe event that every type has."""

    id: str
    type: str
    created: int
    livemode: bool
    api_version: str | None
    obj: JSON
    previous_attributes: JSON | None
    raw: JSON

    @property
    def is_handled(self) -> bool:
        return self.type in HANDLED_TYPES


# ------------------------------------------------------------------------------
# Body -> JSON document
# ------------------------------------------------------------------------------


def _refuse_constant(name: str) -> None:
    raise Unreadable(f"body contains {name}, which is not JSON")


def parse_body(body: bytes) -> Any:
    """Strict JSON: UTF-8, no NaN/Infinity, bounded depth, storable strings."""
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
    if _nesting_depth(text) > MAX_DEPTH:
        raise Unreadable(f"body is nested deeper than {MAX_DEPTH} levels")
    # Valid UTF-8 has no surrogates and strict JSON no raw control characters, so
    # NUL or a lone surrogate can only come from a \u escape: look closer only then.
    if _SUSPECT_ESCAPE.search(text):
        _check_strings(doc)
    return doc


def _nesting_depth(text: str) -> int:
    """Deepest bracket nesting of valid JSON text, strings left out (the loops run in C)."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def _check_strings(doc: Any) -> None:
    """Every key and string storable by Postgres; iterative (the input decides the depth)."""
    stack: list[Any] = [doc]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                _check_string(key)
                stack.append(item)
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, str):
            _check_string(value)


def _check_string(value: str) -> None:
    if _UNSTORABLE.search(value):
        raise Unreadable("body contains a NUL character or an unpaired surrogate")


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


def _int(value: Any, path: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise Unreadable(f"{path} must be an integer")
    if not 0 <= value <= MAX_INTEGER:
        raise Unreadable(f"{path} is out of range")
    return value


def _required_int(value: Any, path: str) -> int:
    number = _int(value, path)
    if number is None:
        raise Unreadable(f"{path} is missing")
    return number


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


def read_envelope(doc: Any) -> Envelope:
    """The event envelope: id, type, created, livemode, api_version, data."""
    event = _dict(doc, "body")
    if event.get("object", "event") != "event":
        raise Unreadable("body is not a Stripe event (object is not 'event')")
    event_id = _required_text(event.get("id"), "id")
    event_type = _required_text(event.get("type"), "type", MAX_SHORT_TEXT * 2)
    created = _required_int(event.get("created"), "created")
    data = _dict(event.get("data"), "data")
    return Envelope(
        id=event_id,
        type=event_type,
        created=created,
        livemode=_bool(event.get("livemode"), "livemode"),
        api_version=_text(event.get("api_version"), "api_version", MAX_SHORT_TEXT),
        obj=_dict(data.get("object"), "data.object"),
        previous_attributes=_opt_dict(data.get("previous_attributes"), "data.previous_attributes"),
        raw=event,
    )


def layout_of(envelope: Envelope) -> Layout:
    """The layout the event's API version renders; by shape when the version is unknown."""
    version = envelope.api_version
    if version and _API_DATE.match(version):
        return "legacy" if version[:10] < FIRST_BASIL_DATE else "basil"
    obj = envelope.obj
    legacy_marks = ("subscription_details", "current_period_start", "invoice", "paid")
    return "legacy" if any(mark in obj for mark in legacy_marks) else "basil"


# ------------------------------------------------------------------------------
# One reader per object kind
# ------------------------------------------------------------------------------


def _expect_object(obj: JSON, kind: str) -> None:
    if obj.get("object", kind) != kind:
        raise Unreadable(f"data.object is not a {kind}")


def read_checkout_session(env: Envelope) -> JSON:
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


@dataclass(frozen=True)
class _Line:
    subscription_id: str | None
    price_id: str | None
    proration: bool
    is_subscription: bool
    period_start: int | None
    period_end: int | None


def _read_line(line: JSON, path: str) -> _Line:
    """One invoice line in either layout."""
    period = _opt_dict(line.get("period"), f"{path}.period") or {}
    start = _int(period.get("start"), f"{path}.period.start")
    end = _int(period.get("end"), f"{path}.period.end")
    if "pricing" in line or "parent" in line:
        parent = _opt_dict(line.get("parent"), f"{path}.parent") or {}
        details_path = f"{path}.parent.subscription_item_details"
        details = _opt_dict(parent.get("subscription_item_details"), details_path)
        pricing = _opt_dict(line.get("pricing"), f"{path}.pricing") or {}
        price_details = _opt_dict(pricing.get("price_details"), f"{path}.pricing.price_details")
        price = (price_details or {}).get("price")
        return _Line(
            subscription_id=_ref(
                (details or {}).get("subscription"), f"{details_path}.subscription"
            ),
            price_id=_ref(price, f"{path}.pricing.price_details.price"),
            proration=_bool((details or {}).get("proration"), f"{details_path}.proration"),
            is_subscription=details is not None,
            period_start=start,
            period_end=end,
        )
    plan = _opt_dict(line.get("plan"), f"{path}.plan") or {}
    subscription = _ref(line.get("subscription"), f"{path}.subscription")
    return _Line(
        subscription_id=subscription,
        price_id=_first(
            _ref(line.get("price"), f"{path}.price"), _text(plan.get("id"), f"{path}.plan.id")
        ),
        proration=_bool(line.get("proration"), f"{path}.proration"),
        is_subscription=line.get("type") == "subscription" or subscription is not None,
        period_start=start,
        period_end=end,
    )


def _subscription_line(lines: list[_Line]) -> _Line | None:
    """The line that names the plan: a subscription line that is not a proration."""
    return next(
        (ln for ln in lines if ln.is_subscription and not ln.proration and ln.price_id), None
    )


def read_invoice(env: Envelope) -> JSON:
    obj, p = env.obj, "data.object"
    _expect_object(obj, "invoice")
    parent = _opt_dict(obj.get("parent"), f"{p}.parent") or {}
    sub_details_path = f"{p}.parent.subscription_details"
    basil_details = _opt_dict(parent.get("subscription_details"), sub_details_path)
    legacy_details = _opt_dict(obj.get("subscription_details"), f"{p}.subscription_details")
    lines = [
        _read_line(line, f"{p}.lines.data[{i}]")
        for i, line in enumerate(_list_data(obj.get("lines"), f"{p}.lines"))
    ]
    plan_line = _subscription_line(lines)
    return {
        "id": _required_text(obj.get("id"), f"{p}.id"),
        "customer_id": _ref(obj.get("customer"), f"{p}.customer"),
        "subscription_id": _first(
            _ref((basil_details or {}).get("subscription"), f"{sub_details_path}.subscription"),
            _ref(obj.get("subscription"), f"{p}.subscription"),
            next((ln.subscription_id for ln in lines if ln.subscription_id), None),
        ),
        "created": _int(obj.get("created"), f"{p}.created"),
        "status": _required_text(obj.get("status"), f"{p}.status", MAX_SHORT_TEXT),
        "billing_reason": _text(obj.get("billing_reason"), f"{p}.billing_reason", MAX_SHORT_TEXT),
        "amount_paid": _required_int(obj.get("amount_paid"), f"{p}.amount_paid"),
        "amount_due": _required_int(obj.get("amount_due"), f"{p}.amount_due"),
        "currency": _text(obj.get("currency"), f"{p}.currency", 16),
        "subscription_metadata_user_id": _first(
            _metadata_value(basil_details, "user_id", sub_details_path),
            _metadata_value(legacy_details, "user_id", f"{p}.subscription_details"),
        ),
        "price_id": plan_line.price_id if plan_line else None,
        "period_start": plan_line.period_start if plan_line else None,
        "period_end": plan_line.period_end if plan_line else None,
        "charge_id": _ref(obj.get("charge"), f"{p}.charge"),
        "payment_intent_id": _ref(obj.get("payment_intent"), f"{p}.payment_intent"),
    }


def _item_state(sub: JSON, path: str) -> JSON:
    """Price and period of a subscription (or of its previous_attributes)."""
    items = _list_data(sub.get("items"), f"{path}.items")
    item = items[0] if items else {}
    item_path = f"{path}.items.data[0]"
    plan = _opt_dict(sub.get("plan"), f"{path}.plan") or {}
    state: JSON = {}
    if items:
        item_plan = _opt_dict(item.get("plan"), f"{item_path}.plan") or {}
        state["price_id"] = _first(
            _ref(item.get("price"), f"{item_path}.price"),
            _text(item_plan.get("id"), f"{item_path}.plan.id"),
        )
    elif "plan" in sub:
        state["price_id"] = _text(plan.get("id"), f"{path}.plan.id")
    for key in ("current_period_start", "current_period_end"):
        if key in item:
            state[key] = _int(item.get(key), f"{item_path}.{key}")
        elif key in sub:
            state[key] = _int(sub.get(key), f"{path}.{key}")
    return state


def _previous(env: Envelope, current: JSON) -> JSON | None:
    """The state an update left, from ``data.previous_attributes``: only changed keys."""
    prev = env.previous_attributes
    if not prev:
        return None
    p = "data.previous_attributes"
    result: JSON = {}
    status = _text(prev.get("status"), f"{p}.status", MAX_SHORT_TEXT)
    if status is not None:
        result["status"] = status
    if "cancel_at_period_end" in prev:
        result["cancel_at_period_end"] = _bool(
            prev["cancel_at_period_end"], f"{p}.cancel_at_period_end"
        )
    # Stripe repeats the whole items list when any item field changed: keep real changes.
    for key, value in _item_state(prev, p).items():
        if value != current.get(key):
            result[key] = value
    return result or None


def read_subscription(env: Envelope) -> JSON:
    obj, p = env.obj, "data.object"
    _expect_object(obj, "subscription")
    state = _item_state(obj, p)
    typed = {
        "id": _required_text(obj.get("id"), f"{p}.id"),
        "customer_id": _ref(obj.get("customer"), f"{p}.customer"),
        "status": _choice(obj.get("status"), f"{p}.status", SUBSCRIPTION_STATUSES),
        "created": _int(obj.get("created"), f"{p}.created"),
        "price_id": state.get("price_id"),
        "current_period_start": state.get("current_period_start"),
        "current_period_end": state.get("current_period_end"),
        "cancel_at_period_end": _bool(obj.get("cancel_at_period_end"), f"{p}.cancel_at_period_end"),
        "canceled_at": _int(obj.get("canceled_at"), f"{p}.canceled_at"),
        "ended_at": _int(obj.get("ended_at"), f"{p}.ended_at"),
        "metadata_user_id": _metadata_value(obj, "user_id", p),
    }
    typed["previous"] = _previous(env, typed)
    return typed


def read_charge(env: Envelope) -> JSON:
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


def read_dispute(env: Envelope) -> JSON:
    obj, p = env.obj, "data.object"
    _expect_object(obj, "dispute")
    return {
        "id": _required_text(obj.get("id"), f"{p}.id"),
        "charge_id": _ref(obj.get("charge"), f"{p}.charge"),
        "payment_intent_id": _ref(obj.get("payment_intent"), f"{p}.payment_intent"),
        "amount": _required_int(obj.get("amount"), f"{p}.amount"),
        "currency": _text(obj.get("currency"), f"{p}.currency", 16),
        "status": _required_text(obj.get("status"), f"{p}.status", MAX_SHORT_TEXT),
        "reason": _text(obj.get("reason"), f"{p}.reason", MAX_SHORT_TEXT),
    }


_READERS: dict[str, tuple[str, Callable[[Envelope], JSON]]] = {
    **dict.fromkeys(CHECKOUT_TYPES, ("checkout_session", read_checkout_session)),
    **dict.fromkeys(INVOICE_TYPES, ("invoice", read_invoice)),
    **dict.fromkeys(SUBSCRIPTION_TYPES, ("subscription", read_subscription)),
    **dict.fromkeys(CHARGE_TYPES, ("charge", read_charge)),
    **dict.fromkeys(DISPUTE_TYPES, ("dispute", read_dispute)),
}


def normalise(env: Envelope) -> JSON:
    """The typed event for a handled envelope (schema/typed_event.schema.json)."""
    key, reader = _READERS[env.type]
    return {
        "schema_version": SCHEMA_VERSION,
        "id": env.id,
        "type": env.type,
        "created": env.created,
        "livemode": env.livemode,
        "api_version": env.api_version,
        "layout": layout_of(env),
        "raw": env.raw,
        key: reader(env),
    }
