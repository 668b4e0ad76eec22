"""Normalisation of both Stripe layouts into the typed event, and refusal of the unreadable."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar import events
from sidecar.events import Unreadable
from tally import stripe_events as se

SCHEMA = Path(__file__).resolve().parents[2] / "schema" / "typed_event.schema.json"
USER = "4f1d7c1e-0000-4000-8000-000000000001"
PRICES = {"price_basic": 1000, "price_pro": 3000, "price_pack": 900}


@cache
def validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))


def typed(event: dict) -> dict:
    return events.normalise(events.read_envelope(events.parse_body(se.encode(event))))


def lifecycle(layout: se.Layout) -> list[dict]:
    """Every handled type at least once, with noise (ignored types) in between."""
    world = se.StripeWorld(layout, prices=PRICES, noise=True)
    alice = world.customer(user_id=USER)
    sub, out = world.subscribe(alice, "price_basic")
    out += world.renew(sub) + world.change_plan(sub, "price_pro", invoice_now=True)
    out += world.fail_renewal(sub) + world.retry_payment(sub)
    pack, more = world.buy_pack(alice, "price_pack")
    slow, later = world.buy_pack(alice, "price_pack", asynchronous=True)
    failed, never = world.buy_pack(alice, "price_pack", asynchronous=True)
    out += more + later + world.settle(slow) + never + world.settle(failed, succeeded=False)
    out += world.refund(pack, 300)
    dsp, opened = world.open_dispute(pack)
    out += (
        opened + world.close_dispute(dsp, won=True) + world.cancel(sub) + world.end_of_period(sub)
    )
    return out


def handled(layout: se.Layout) -> list[dict]:
    return [e for e in lifecycle(layout) if e["type"] in events.HANDLED_TYPES]


def test_the_lifecycle_covers_every_handled_type():
    for layout in ("legacy", "basil"):
        assert {e["type"] for e in handled(layout)} == events.HANDLED_TYPES


@pytest.mark.parametrize("layout", ["legacy", "basil"])
def test_every_handled_event_validates_against_the_typed_schema(layout):
    for event in handled(layout):
        validator().validate(typed(event))


@pytest.mark.parametrize("layout", ["legacy", "basil"])
def test_both_layouts_give_the_same_typed_fields(layout):
    other = "basil" if layout == "legacy" else "legacy"
    mine, theirs = handled(layout), handled(other)
    for a, b in zip(mine, theirs, strict=True):
        ta, tb = typed(a), typed(b)
        key = next(
            k
            for k in ta
            if k in ("checkout_session", "invoice", "subscription", "charge", "dispute")
        )
        fields_a = {k: v for k, v in ta[key].items() if k not in ("charge_id", "payment_intent_id")}
        fields_b = {k: v for k, v in tb[key].items() if k not in ("charge_id", "payment_intent_id")}
        if key in ("charge", "dispute"):
            fields_a.pop("invoice_id", None)
            fields_b.pop("invoice_id", None)
        assert fields_a == fields_b, a["type"]


@pytest.mark.parametrize("layout", ["legacy", "basil"])
def test_records_the_layout_of_the_api_version(layout):
    assert {typed(e)["layout"] for e in handled(layout)} == {layout}


@pytest.mark.parametrize("layout", ["legacy", "basil"])
def test_layout_is_recognised_by_shape_when_api_version_is_null(layout):
    world = se.StripeWorld(layout, prices=PRICES)
    _, out = world.subscribe(world.customer(user_id=USER), "price_basic")
    invoice = next(e for e in out if e["type"] == "invoice.paid")
    invoice["api_version"] = None
    assert typed(invoice)["layout"] == layout


def test_raw_is_the_event_as_received():
    event = handled("basil")[0]
    assert typed(event)["raw"] == event


@pytest.mark.parametrize("layout", ["legacy", "basil"])
def test_invoice_takes_price_and_period_from_the_non_proration_line(layout):
    world = se.StripeWorld(layout, prices=PRICES)
    sub, _ = world.subscribe(world.customer(user_id=USER), "price_basic")
    world.change_plan(sub, "price_pro")
    renewal = next(e for e in world.renew(sub) if e["type"] == "invoice.paid")
    invoice = typed(renewal)["invoice"]
    assert invoice["price_id"] == "price_pro"
    assert (invoice["period_start"], invoice["period_end"]) == (
        sub.current_period_start,
        sub.current_period_end,
    )
    assert invoice["subscription_id"] == sub.id
    assert invoice["subscription_metadata_user_id"] == USER


@pytest.mark.parametrize("layout", ["legacy", "basil"])
def test_proration_only_invoice_names_no_plan(layout):
    world = se.StripeWorld(layout, prices=PRICES)
    sub, _ = world.subscribe(world.customer(user_id=USER), "price_basic")
    out = world.change_plan(sub, "price_pro", invoice_now=True)
    invoice = typed(next(e for e in out if e["type"] == "invoice.paid"))["invoice"]
    assert (invoice["price_id"], invoice["period_start"]) == (None, None)
    assert invoice["subscription_id"] == sub.id


def test_legacy_invoice_carries_charge_and_payment_intent():
    world = se.StripeWorld("legacy", prices=PRICES)
    sub, out = world.subscribe(world.customer(user_id=USER), "price_basic")
    invoice = typed(next(e for e in out if e["type"] == "invoice.paid"))["invoice"]
    assert invoice["charge_id"] == sub.payments[0].charge_id
    assert invoice["payment_intent_id"] == sub.payments[0].payment_intent_id


@pytest.mark.parametrize("layout", ["legacy", "basil"])
def test_plan_change_carries_the_previous_price(layout):
    world = se.StripeWorld(layout, prices=PRICES)
    sub, _ = world.subscribe(world.customer(user_id=USER), "price_basic")
    (updated,) = world.change_plan(sub, "price_pro")
    assert typed(updated)["subscription"]["previous"] == {"price_id": "price_basic"}


@pytest.mark.parametrize("layout", ["legacy", "basil"])
def test_renewal_carries_the_previous_period(layout):
    world = se.StripeWorld(layout, prices=PRICES)
    sub, _ = world.subscribe(world.customer(user_id=USER), "price_basic")
    start, end = sub.current_period_start, sub.current_period_end
    updated = world.renew(sub)[-1]
    previous = typed(updated)["subscription"]["previous"]
    assert previous == {"current_period_start": start, "current_period_end": end}


def test_status_change_carries_the_previous_status():
    world = se.StripeWorld("basil", prices=PRICES)
    sub, _ = world.subscribe(world.customer(user_id=USER), "price_basic")
    updated = world.fail_renewal(sub)[-1]
    assert typed(updated)["subscription"]["previous"]["status"] == "active"


def test_pack_session_carries_user_and_price_hints():
    world = se.StripeWorld("basil", prices=PRICES)
    pack, out = world.buy_pack(world.customer(user_id=USER), "price_pack")
    session = typed(out[-1])["checkout_session"]
    assert session["client_reference_id"] == USER
    assert session["metadata_user_id"] == USER
    assert session["metadata_price_id"] == "price_pack"
    assert session["payment_intent_id"] == pack.payment.payment_intent_id


def test_empty_client_reference_id_counts_as_absent():
    world = se.StripeWorld("basil", prices=PRICES)
    _, out = world.buy_pack(world.customer(user_id=USER), "price_pack")
    out[-1]["data"]["object"]["client_reference_id"] = ""
    assert typed(out[-1])["checkout_session"]["client_reference_id"] is None


def test_an_expanded_customer_object_is_read_by_its_id():
    world = se.StripeWorld("basil", prices=PRICES)
    _, out = world.buy_pack(world.customer(user_id=USER), "price_pack")
    session = out[-1]["data"]["object"]
    session["customer"] = {"id": session["customer"], "object": "customer"}
    assert typed(out[-1])["checkout_session"]["customer_id"].startswith("cus_")


def test_unhandled_types_are_recognised_before_normalisation():
    envelope = events.read_envelope(se.StripeWorld().unhandled("customer.updated"))
    assert not envelope.is_handled


# -- refusals ------------------------------------------------------------------------------


def refusal(body: bytes) -> str:
    with pytest.raises(Unreadable) as caught:
        envelope = events.read_envelope(events.parse_body(body))
        events.normalise(envelope)
    return caught.value.reason


def mutated(change) -> bytes:
    world = se.StripeWorld("basil", prices=PRICES)
    _, out = world.subscribe(world.customer(user_id=USER), "price_basic")
    event = copy.deepcopy(next(e for e in out if e["type"] == "invoice.paid"))
    change(event)
    return json.dumps(event).encode()


def test_refuses_invalid_utf8():
    assert refusal(b'{"id": "evt_\xff"}') == "body is not valid UTF-8"


def test_refuses_invalid_json():
    assert refusal(b'{"id": ') == "body is not valid JSON"


def test_refuses_nan():
    assert "not JSON" in refusal(b'{"id": NaN}')


def test_refuses_extreme_nesting_without_recursion_error():
    assert "nested" in refusal(b"[" * 200_000 + b"]" * 200_000)


def test_refuses_moderate_nesting_beyond_the_limit():
    assert "nested deeper" in refusal(b'{"a":' * 100 + b"1" + b"}" * 100)


def test_refuses_nul_characters_postgres_cannot_store():
    assert "NUL" in refusal(b'{"id": "evt_\\u0000"}')


def test_refuses_unpaired_surrogates():
    assert "surrogate" in refusal(b'{"id": "evt_\\ud800"}')


def test_accepts_an_escaped_surrogate_pair():
    assert events.parse_body(b'{"name": "\\ud83d\\ude00"}') == {"name": "\U0001f600"}


def test_accepts_a_literal_backslash_u0000_text():
    assert events.parse_body(b'{"note": "\\\\u0000"}') == {"note": "\\u0000"}


def test_brackets_inside_strings_do_not_count_as_nesting():
    assert events.parse_body(b'{"note": "' + b"[" * 500 + b'"}') == {"note": "[" * 500}


def test_refuses_a_body_that_is_not_an_object():
    assert refusal(b"[1, 2]") == "body must be an object"


def test_refuses_a_non_event_object():
    assert "not a Stripe event" in refusal(b'{"object": "customer", "id": "cus_1"}')


def test_refuses_an_event_without_id():
    assert refusal(mutated(lambda e: e.pop("id"))) == "id is missing"


def test_refuses_a_created_that_is_not_an_integer():
    assert refusal(mutated(lambda e: e.update(created="yesterday"))) == "created must be an integer"


def test_refuses_a_boolean_where_an_integer_belongs():
    def change(e):
        e["data"]["object"]["amount_paid"] = True

    assert refusal(mutated(change)) == "data.object.amount_paid must be an integer"


def test_refuses_a_data_object_of_another_kind():
    def change(e):
        e["data"]["object"]["object"] = "charge"

    assert refusal(mutated(change)) == "data.object is not a invoice"


def test_refuses_lines_that_are_not_a_list():
    def change(e):
        e["data"]["object"]["lines"]["data"] = "many"

    assert refusal(mutated(change)) == "data.object.lines.data must be an array"


def test_refuses_metadata_that_is_not_an_object():
    def change(e):
        e["data"]["object"]["parent"]["subscription_details"]["metadata"] = ["user_id"]

    assert "metadata must be an object" in refusal(mutated(change))


def test_refuses_an_overlong_id():
    def change(e):
        e["data"]["object"]["id"] = "in_" + "x" * 300

    assert "longer than 255" in refusal(mutated(change))


def test_refuses_negative_amounts():
    def change(e):
        e["data"]["object"]["amount_due"] = -1

    assert refusal(mutated(change)) == "data.object.amount_due is out of range"


def test_refuses_an_unknown_subscription_status():
    world = se.StripeWorld("basil", prices=PRICES)
    _, out = world.subscribe(world.customer(user_id=USER), "price_basic")
    out[0]["data"]["object"]["status"] = "zombie"
    assert "status must be one of" in refusal(json.dumps(out[0]).encode())


def test_refuses_a_huge_integer_without_crashing():
    assert refusal(b'{"id": "evt_1", "created": 1' + b"0" * 5000 + b"}") == (
        "body is not valid JSON"
    )


# -- properties ----------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
SAMPLES = handled("legacy") + handled("basil")


def outcome_of(body: bytes) -> dict | None:
    """The typed event, or None when refused; any other exception fails the property."""
    try:
        envelope = events.read_envelope(events.parse_body(body))
        return events.normalise(envelope) if envelope.is_handled else None
    except Unreadable:
        return None


@settings(max_examples=150, deadline=None)
@given(sample=st.sampled_from(SAMPLES), data=st.data())
def test_any_field_replaced_gives_a_schema_valid_event_or_a_refusal(sample, data):
    event = copy.deepcopy(sample)
    target = event["data"]["object"]
    path = data.draw(st.sampled_from(sorted(_leaf_paths(target), key=str)))
    parent = target
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = data.draw(json_values)
    result = outcome_of(json.dumps(event).encode())
    if result is not None:
        validator().validate(result)


@settings(max_examples=150, deadline=None)
@given(value=json_values)
def test_any_json_body_is_typed_or_refused(value):
    result = outcome_of(json.dumps(value).encode())
    if result is not None:
        validator().validate(result)


@settings(max_examples=150, deadline=None)
@given(body=st.binary(max_size=200))
def test_any_bytes_are_typed_or_refused(body):
    assert outcome_of(body) is None or validator().is_valid(outcome_of(body))


def _leaf_paths(value, prefix=()):
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += _leaf_paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _leaf_paths(item, (*prefix, index))
    return found
