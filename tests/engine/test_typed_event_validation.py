"""The database checks the typed event exactly as the JSON Schema does.

The invalid events are generated from schema/typed_event.schema.json itself:
for every property of every object, at every depth (list items included),
each way to break it (missing when required, a value of a wrong JSON type,
out of enum or const, too short, too long, below the minimum, an unexpected
extra field). Each one is first checked to be invalid for the Python
`jsonschema` validator, then must be stored by the database as *rejected*
with a reason naming the field: nothing signed by Stripe is refused, and a
malformed event is kept for the operator. The checks are generated from the
schema (tally/typed_event_sql.py); a test keeps the migration's copy current.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tally import typed_event_sql
from tests.support import typed_events as te

SAMPLES: dict[str, Any] = {
    "string": "x",
    "integer": 7,
    "number": 1.5,
    "boolean": True,
    "object": {},
    "array": [],
    "null": None,
}

# What apply_stripe_event refuses outright (SQLSTATE 22023): without them
# there is nothing to store.
ENVELOPE_MINIMUM = {"event.id", "event.type", "event.raw"}


def base_events() -> dict[str, dict[str, Any]]:
    """One valid event per type, with every optional object field filled."""
    user = "00000000-0000-4000-8000-000000000001"
    buyer = te.Buyer.new(user, layout="legacy")
    sub = buyer.subscription("starter")
    purchase = buyer.pack_purchase("pack_500")
    paid = sub.invoice_paid()
    return {
        "checkout.session.completed": purchase.completed(subscription_id=te.new_id("sub")),
        "checkout.session.async_payment_succeeded": purchase.async_succeeded(),
        "checkout.session.async_payment_failed": purchase.async_failed(),
        "invoice.paid": paid,
        "invoice.payment_failed": sub.invoice_failed(),
        "customer.subscription.created": sub.created(),
        "customer.subscription.updated": sub.updated(
            previous={
                "status": "trialing",
                "price_id": te.plan_price("pro"),
                "current_period_start": te.at(-1),
                "current_period_end": te.at(0),
                "cancel_at_period_end": True,
            },
        ),
        "customer.subscription.deleted": sub.deleted(period=0, ended_at=te.at(0, 99)),
        "charge.refunded": purchase.refunded(
            amount_refunded=100, invoice_id=te.new_id("in"), metadata_user_id=user
        ),
        "charge.dispute.created": purchase.dispute(dispute_id=te.new_id("dp")),
        "charge.dispute.closed": purchase.dispute(
            dispute_id=te.new_id("dp"), status="won", closed=True
        ),
        "invoice_payment.paid": sub.invoice_payment(paid, charge_id=te.new_id("ch")),
    }


def allowed_types(prop: dict[str, Any]) -> set[str] | None:
    if "type" not in prop:
        return None
    types = prop["type"] if isinstance(prop["type"], list) else [prop["type"]]
    allowed = set(types)
    if "number" in allowed:
        allowed.add("integer")
    return allowed


def breakages(prop: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """(label, value) pairs that violate this property schema."""
    allowed = allowed_types(prop)
    for type_name, sample in SAMPLES.items():
        if "const" in prop and sample != prop["const"]:
            yield f"not-const-{type_name}", sample
        elif "enum" in prop and sample not in prop["enum"]:
            yield f"not-in-enum-{type_name}", sample
        elif allowed is not None and type_name not in allowed:
            yield f"wrong-type-{type_name}", sample
    if "enum" in prop and all(isinstance(v, str) for v in prop["enum"]):
        yield "not-in-enum-string", "not_a_listed_value"
    if "minLength" in prop:
        yield "too-short", ""
    if "maxLength" in prop:
        yield "too-long", "x" * (prop["maxLength"] + 1)
    if "minimum" in prop:
        yield "below-minimum", prop["minimum"] - 1


def render(path: tuple[str | int, ...]) -> str:
    """The field's name as the database's reasons write it: event.invoice.lines[0].id."""
    text = "event"
    for key in path:
        text += f"[{key}]" if isinstance(key, int) else f".{key}"
    return text


def object_mutations(
    event: dict[str, Any], path: tuple[str | int, ...], schema: dict[str, Any]
) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(id, field path, broken event) for one object schema and its children."""
    target = _at(event, path)
    dotted = render(path)
    for name in schema.get("required", []):
        broken = copy.deepcopy(event)
        _at(broken, path).pop(name)
        yield f"{dotted}.{name}-missing", f"{dotted}.{name}", broken
    for name, prop in schema.get("properties", {}).items():
        if name not in target:
            continue
        for label, value in breakages(prop):
            if path == () and name == "type" and isinstance(value, str):
                continue  # a string type outside the list is an unhandled type: ignored
            broken = copy.deepcopy(event)
            _at(broken, path)[name] = value
            yield f"{dotted}.{name}-{label}", f"{dotted}.{name}", broken
        if prop.get("properties") and isinstance(target[name], dict):
            yield from object_mutations(event, (*path, name), prop)
        items = prop.get("items")
        if items and isinstance(target[name], list) and target[name]:
            yield from object_mutations(event, (*path, name, 0), items)
    if schema.get("additionalProperties") is False:
        broken = copy.deepcopy(event)
        _at(broken, path)["unexpected_field"] = "x"
        yield f"{dotted}.unexpected-field", f"{dotted}.unexpected_field", broken


def _at(event: Any, path: tuple[str | int, ...]) -> Any:
    for key in path:
        event = event[key]
    return event


def wrong_object_key_mutations(
    event_type: str, event: dict[str, Any]
) -> Iterator[tuple[str, str, dict[str, Any]]]:
    own = te.OBJECT_KEYS[event_type]
    missing = copy.deepcopy(event)
    missing.pop(own)
    yield f"{event_type}-without-{own}", "event", missing
    for other in sorted(set(te.OBJECT_KEYS.values()) - {own}):
        extra = copy.deepcopy(event)
        extra[other] = copy.deepcopy(BASES[_type_with_key(other)][other])
        yield f"{event_type}-with-{other}", "event", extra


def _type_with_key(key: str) -> str:
    return next(t for t, k in te.OBJECT_KEYS.items() if k == key)


BASES = base_events()


def all_mutations() -> list[Any]:
    """Every way to break the schema, once each.

    Event types that share an object key share its schema, and every type
    shares the envelope, so a case (field and way of breaking it) is kept on
    the first event type that carries it.
    """
    cases: dict[str, tuple[str, str, dict[str, Any]]] = {}
    for event_type, event in BASES.items():
        for case_id, field, broken in object_mutations(event, (), te.schema()):
            cases.setdefault(case_id, (event_type, field, broken))
        for case_id, field, broken in wrong_object_key_mutations(event_type, event):
            cases.setdefault(case_id, (event_type, field, broken))
    return [
        pytest.param(field, broken, id=f"{event_type}:{case_id}")
        for case_id, (event_type, field, broken) in cases.items()
    ]


MUTATIONS = all_mutations()


def test_the_database_checks_are_generated_from_the_schema_file():
    assert typed_event_sql.main(["--check"]) == 0


@pytest.mark.parametrize("event_type", sorted(BASES))
def test_every_base_event_is_valid_for_the_schema_and_the_database(engine, event_type):
    event = te.with_event_id(BASES[event_type])
    te.validate_typed_event(event)
    result = engine.apply(event)
    assert result["status"] in {"applied", "parked", "rejected"}
    assert "malformed" not in (result.get("reason") or "")


def test_mutations_cover_every_property_of_every_object_in_the_schema():
    covered = {field for field, _ in (m.values for m in MUTATIONS)}
    for key in te.schema()["required"]:
        assert f"event.{key}" in covered, key
    for object_key in set(te.OBJECT_KEYS.values()):
        for name in te.schema()["properties"][object_key]["properties"]:
            assert f"event.{object_key}.{name}" in covered, (object_key, name)
    subscription = te.schema()["properties"]["subscription"]["properties"]
    for name in subscription["previous"]["properties"]:
        assert f"event.subscription.previous.{name}" in covered
    for name in subscription["items"]["items"]["properties"]:
        assert f"event.subscription.items[0].{name}" in covered
    for name in te.schema()["properties"]["invoice"]["properties"]["lines"]["items"]["properties"]:
        assert f"event.invoice.lines[0].{name}" in covered


@pytest.mark.parametrize(("field", "broken"), MUTATIONS)
def test_an_event_the_schema_refuses_is_stored_as_rejected_naming_the_field(engine, field, broken):
    assert not te.is_valid_typed_event(broken)
    if field != "event.id" and isinstance(broken.get("raw"), dict):
        broken = te.with_event_id(broken)  # the module's tests share one database
    if field in ENVELOPE_MINIMUM:
        with pytest.raises(psycopg.Error) as caught:
            engine.apply(broken)
        assert caught.value.sqlstate == "22023"
        return
    result = engine.apply(broken)
    assert result["status"] == "rejected", result
    assert result["reason"].startswith("the typed event is malformed: "), result["reason"]
    if field != "event":
        assert field in result["reason"], result["reason"]
    stored = engine.stored_event(broken["id"])
    assert stored["outcome"] == "rejected" and stored["raw"] == broken["raw"]


@pytest.mark.parametrize("value", [None, "[]", "1", '"evt_1"', "true", '{"id": "evt_1"}'])
def test_an_event_without_id_type_and_raw_payload_is_refused_with_22023(engine, value):
    with pytest.raises(psycopg.Error) as caught:
        engine.call("select public.apply_stripe_event(%s::jsonb) as result", (value,))
    assert caught.value.sqlstate == "22023"


def test_an_event_the_sidecar_could_not_read_is_stored_as_rejected_with_its_problem(engine):
    event = te.with_event_id(BASES["invoice.paid"])
    event.pop("invoice")
    event["problem"] = "data.object.amount_paid is out of range"
    result = engine.apply(event)
    assert result["status"] == "rejected"
    assert result["reason"] == "data.object.amount_paid is out of range"
    assert engine.stored_event(event["id"])["raw"] == event["raw"]


def test_integer_fields_accept_json_integers_written_with_an_exponent(engine, user):
    event = te.Buyer.new(user).subscription("starter").invoice_paid()
    text = json.dumps(event).replace(f'"created": {event["created"]}', '"created": 1.78e9', 1)
    result = engine.call("select public.apply_stripe_event(%s::jsonb) as result", (text,))
    assert result["status"] == "applied"
