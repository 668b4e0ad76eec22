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
    return events.normalise(events.read_body(se.encode(event)))


OBJECT_KEYS = (
    "checkout_session",
    "invoice",
    "subscription",
    "charge",
    "dispute",
    "invoice_payment",
)
# Fields only the legacy layout has: charges and invoices named each other.
LEGACY_ONLY = ("charge_id", "payment_intent_id", "invoice_id")


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
    # invoice_payment.paid exists from basil on: compare layouts without it.
    return [
        e
        for e in lifecycle(layout)
        if e["type"] in events.HANDLED_TYPES and e["type"] != "invoice_payment.paid"
    ]


def test_the_lifecycle_covers_every_handled_type():
    for layout in ("legacy", "basil"):
        seen = {e["type"] for e in lifecycle(layout) if e["type"] in events.HANDLED_TYPES}
        expected = events.HANDLED_TYPES - (
            {"invoice_payment.paid"} if layout == "legacy" else set()
        )
        assert seen == expected


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
        key = next(k for k in ta if k in OBJECT_KEYS)
        fields_a = {k: v for k, v in ta[key].items() if k not in LEGACY_ONLY}
        fields_b = {k: v for k, v in tb[key].items() if k not in LEGACY_ONLY}
        if key == "invoice":
            for line in fields_a["lines"] + fields_b["lines"]:
                line.pop("id")
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
def test_invoice_lines_carry_price_period_and_proration_flags(layout):
    world = se.StripeWorld(layout, prices=PRICES)
    sub, _ = world.subscribe(world.customer(user_id=USER), "price_basic")
    world.change_plan(sub, "price_pro")
    renewal = next(e for e in world.renew(sub) if e["type"] == "invoice.paid")
    invoice = typed(renewal)["invoice"]
    credit, debit, plan = invoice["lines"]
    assert (credit["price_id"], credit["is_proration"], credit["is_credit"]) == (
        "price_basic", True, True)  # fmt: skip
    assert (debit["price_id"], debit["is_proration"], debit["is_credit"]) == (
        "price_pro", True, False)  # fmt: skip
    assert credit["amount"] < 0 < debit["amount"]
    assert (plan["price_id"], plan["is_proration"], plan["is_credit"]) == (
        "price_pro",
        False,
        False,
    )
    assert (plan["period_start"], plan["period_end"]) == (
        sub.current_period_start,
        sub.current_period_end,
    )
    assert invoice["subscription_id"] == plan["subscription_id"] == sub.id
    assert invoice["subscription_metadata_user_id"] == USER


@pytest.mark.parametrize("layout", ["legacy", "basil"])
def test_a_proration_invoice_has_only_proration_lines(layout):
    world = se.StripeWorld(layout, prices=PRICES)
    sub, _ = world.subscribe(world.customer(user_id=USER), "price_basic")
    out = world.change_plan(sub, "price_pro", invoice_now=True)
    invoice = typed(next(e for e in out if e["type"] == "invoice.paid"))["invoice"]
    assert [line["is_proration"] for line in invoice["lines"]] == [True, True]
    assert invoice["billing_reason"] == "subscription_update"
    assert invoice["subscription_id"] == sub.id


@pytest.mark.parametrize("parent", ["subscription_item_details", "invoice_item_details"])
def test_a_basil_proration_line_is_read_under_either_parent(parent):
    line = se.invoice_line(layout="basil", id="il_1", invoice="in_1",
                           price_obj=se.StripeWorld().price_object("price_pro"), amount=-500,
                           period_start=10, period_end=20, subscription="sub_1",
                           subscription_item="si_1", proration=True, credited_invoice="in_0",
                           parent_kind=parent)  # fmt: skip
    read = events.read_line(line, "line")
    assert (read["subscription_id"], read["is_proration"], read["is_credit"]) == (
        "sub_1", True, True)  # fmt: skip


def test_an_invoice_whose_lines_fill_more_than_a_page_says_so():
    world = se.StripeWorld("basil", prices=PRICES)
    _, out = world.subscribe(world.customer(user_id=USER), "price_basic")
    event = next(e for e in out if e["type"] == "invoice.paid")
    assert events.more_lines_of(events.read_envelope(event)) is None
    event["data"]["object"]["lines"]["has_more"] = True
    assert events.more_lines_of(events.read_envelope(event)) == event["data"]["object"]["id"]


def test_all_lines_fetched_replace_the_embedded_first_page():
    world = se.StripeWorld("basil", prices=PRICES)
    _, out = world.subscribe(world.customer(user_id=USER), "price_basic")
    event = next(e for e in out if e["type"] == "invoice.paid")
    every_line = event["data"]["object"]["lines"]["data"]
    event["data"]["object"]["lines"] = {"object": "list", "data": [], "has_more": True}
    envelope = events.read_envelope(event)
    assert len(events.normalise(envelope, lines=every_line)["invoice"]["lines"]) == 1


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
    previous = typed(updated)["subscription"]["previous"]
    assert [item["price_id"] for item in previous["items"]] == ["price_basic"]
    assert (previous["status"], previous["cancel_at_period_end"]) == (None, None)


@pytest.mark.parametrize("layout", ["legacy", "basil"])
def test_renewal_carries_the_previous_period(layout):
    world = se.StripeWorld(layout, prices=PRICES)
    sub, _ = world.subscribe(world.customer(user_id=USER), "price_basic")
    start, end = sub.current_period_start, sub.current_period_end
    updated = world.renew(sub)[-1]
    (item,) = typed(updated)["subscription"]["previous"]["items"]
    assert (item["current_period_start"], item["current_period_end"]) == (start, end)
    assert item["price_id"] == "price_basic"


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


# -- refusals (not a Stripe event) and problems (a Stripe event we cannot read) -------------


def refusal(body: bytes) -> str:
    with pytest.raises(Unreadable) as caught:
        events.read_body(body)
    return caught.value.reason


def problem(body: bytes) -> str:
    """The problem of a Stripe event the normaliser cannot read (it is not refused)."""
    typed_event = events.normalise(events.read_body(body))
    validator().validate(typed_event)
    assert not any(key in typed_event for key in OBJECT_KEYS)
    return typed_event["problem"]


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


def test_a_stripe_event_with_a_nul_character_is_kept_with_a_problem():
    body = mutated(lambda e: e["data"]["object"].update(description="a\u0000b"))
    assert "NUL characters" in problem(body)
    envelope = events.read_body(body)
    assert envelope.obj["description"] == "a\ufffdb"


def test_a_stripe_event_with_an_unpaired_surrogate_key_is_kept_with_a_problem():
    body = mutated(lambda e: e["data"]["object"]["metadata"].update({"\ud800": "x"}))
    assert "unpaired surrogates" in problem(body)


def test_a_body_that_is_not_an_event_is_refused_even_with_a_nul():
    assert refusal(b'{"id": "evt_\\u0000"}') == "type is missing"


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


def test_refuses_an_event_without_type():
    assert refusal(mutated(lambda e: e.pop("type"))) == "type is missing"


def test_refuses_an_event_without_data_object():
    assert refusal(mutated(lambda e: e["data"].pop("object"))) == "data.object must be an object"


def test_a_created_that_is_not_an_integer_is_a_problem_not_a_refusal():
    assert problem(mutated(lambda e: e.update(created="yesterday"))) == (
        "created is missing or not a Unix time"
    )


def test_a_boolean_where_an_integer_belongs_is_a_problem():
    def change(e):
        e["data"]["object"]["amount_paid"] = True

    assert problem(mutated(change)) == "data.object.amount_paid must be an integer"


def test_a_data_object_of_another_kind_is_a_problem():
    def change(e):
        e["data"]["object"]["object"] = "charge"

    assert problem(mutated(change)) == "data.object is not a invoice"


def test_lines_that_are_not_a_list_are_a_problem():
    def change(e):
        e["data"]["object"]["lines"]["data"] = "many"

    assert problem(mutated(change)) == "data.object.lines.data must be an array"


def test_metadata_that_is_not_an_object_is_a_problem():
    def change(e):
        e["data"]["object"]["parent"]["subscription_details"]["metadata"] = ["user_id"]

    assert "metadata must be an object" in problem(mutated(change))


def test_an_overlong_id_is_a_problem():
    def change(e):
        e["data"]["object"]["id"] = "in_" + "x" * 300

    assert "longer than 255" in problem(mutated(change))


def test_a_negative_amount_due_is_a_problem():
    def change(e):
        e["data"]["object"]["amount_due"] = -1

    assert problem(mutated(change)) == "data.object.amount_due is out of range"


def test_an_unknown_subscription_status_is_a_problem():
    world = se.StripeWorld("basil", prices=PRICES)
    _, out = world.subscribe(world.customer(user_id=USER), "price_basic")
    out[0]["data"]["object"]["status"] = "zombie"
    assert "status must be one of" in problem(json.dumps(out[0]).encode())


def test_amounts_are_64_bit_integers():
    def change(e):
        e["data"]["object"]["amount_paid"] = 25_000_000_000_00  # Rp 25 billion, in sen
        e["data"]["object"]["amount_due"] = 2**63 - 1

    typed_event = events.normalise(events.read_body(mutated(change)))
    assert typed_event["problem"] is None
    assert typed_event["invoice"]["amount_paid"] == 25_000_000_000_00


def test_an_amount_beyond_64_bits_is_a_problem():
    def change(e):
        e["data"]["object"]["amount_due"] = 2**63

    assert problem(mutated(change)) == "data.object.amount_due is out of range"


def test_an_old_api_versions_unreadable_event_names_its_version():
    def change(e):
        e["api_version"] = "2014-03-28"
        e["data"]["object"].pop("status")

    reason = problem(mutated(change))
    assert "API version 2014-03-28" in reason and "before 2019" in reason


def test_an_old_invoice_with_paid_and_no_status_is_read_as_paid():
    def change(e):
        e["api_version"] = "2015-10-16"
        e["data"]["object"].pop("status")
        e["data"]["object"]["paid"] = True

    typed_event = events.normalise(events.read_body(mutated(change)))
    assert typed_event["invoice"]["status"] == "paid"


def test_an_old_dispute_without_id_is_named_by_its_charge():
    world = se.StripeWorld("legacy", prices=PRICES)
    pack, _ = world.buy_pack(world.customer(user_id=USER), "price_pack")
    _, (created,) = world.open_dispute(pack)
    created["data"]["object"].pop("id")
    dispute = typed(created)["dispute"]
    assert dispute["id"] == dispute["charge_id"] == pack.payment.charge_id


@pytest.mark.parametrize(("event_live", "key_live"), [(True, False), (False, True)])
def test_an_event_of_the_other_livemode_than_the_key_is_a_problem(event_live, key_live):
    event = json.loads(mutated(lambda e: e.update(livemode=event_live)))
    typed_event = events.normalise(events.read_envelope(event), key_is_live=key_live)
    assert "livemode" not in typed_event["problem"] and "-mode event" in typed_event["problem"]
    assert "invoice" not in typed_event


def test_an_event_of_the_keys_livemode_has_no_problem():
    event = json.loads(mutated(lambda e: e.update(livemode=False)))
    assert events.normalise(events.read_envelope(event), key_is_live=False)["problem"] is None


def test_refuses_a_huge_integer_without_crashing():
    assert refusal(b'{"id": "evt_1", "created": 1' + b"0" * 5000 + b"}") == (
        "body is not valid JSON"
    )


# -- properties ----------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
SAMPLES = handled("legacy") + handled("basil")


def outcome_of(body: bytes) -> dict | None:
    """The typed event, or None when not an event; any other exception fails the property."""
    try:
        envelope = events.read_body(body)
        return events.normalise(envelope) if envelope.is_handled else None
    except Unreadable:
        return None


@settings(max_examples=150, deadline=None)
@given(sample=st.sampled_from(SAMPLES), data=st.data())
def test_any_field_replaced_gives_a_schema_valid_typed_event(sample, data):
    event = copy.deepcopy(sample)
    target = event["data"]["object"]
    path = data.draw(st.sampled_from(sorted(_leaf_paths(target), key=str)))
    parent = target
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = data.draw(json_values)
    result = outcome_of(json.dumps(event).encode())
    assert result is not None  # a signed Stripe event is never refused
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
