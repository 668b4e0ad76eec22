"""The typed event's JSON text: orjson where it can, the standard library where it cannot."""

from __future__ import annotations

import json

import orjson

from sidecar import wire


def test_an_ordinary_event_encodes_to_the_same_document_as_the_standard_library():
    event = {"id": "evt_1", "amount": 1999, "nested": {"list": [1, 2.5, None, True]}, "name": "Zoë"}
    assert json.loads(wire.dumps(event)) == event


def test_integers_beyond_64_bits_fall_back_and_keep_every_digit():
    event = {"id": "evt_1", "amount_paid": 2**70, "refunds": [-(2**65)]}
    text = wire.dumps(event)
    assert json.loads(text) == event
    assert str(2**70) in text


def test_the_result_is_text_postgres_can_take_as_a_parameter():
    assert isinstance(wire.dumps({"a": 1}), str)


def test_a_number_beyond_a_double_is_written_null_where_json_would_write_infinity():
    """`json.loads('1e400')` is inf; PostgreSQL refuses `Infinity`, and would answer 503 forever."""
    event = json.loads('{"id": "evt_1", "amount": 1e400}')
    assert json.loads(wire.dumps(event)) == {"id": "evt_1", "amount": None}


def test_a_big_integer_and_a_number_beyond_a_double_together_give_json_postgres_reads():
    """Before, the big integer sent the document to `json.dumps`, which wrote `Infinity`."""
    event = json.loads('{"id": "evt_1", "x1": 1180591620717411303424, "x2": 1e400, "x3": [-1e400]}')
    text = wire.dumps(event)
    assert "Infinity" not in text
    assert json.loads(text) == {"id": "evt_1", "x1": 2**70, "x2": None, "x3": [None]}
    assert "1180591620717411303424" in text


def test_the_exact_text_of_a_body_is_written_as_it_is():
    raw = orjson.Fragment('{"x": 1e400, "y": ' + "9" * 5000 + "}")
    assert wire.dumps({"id": "evt_1", "raw": raw}) == (
        '{"id":"evt_1","raw":{"x": 1e400, "y": ' + "9" * 5000 + "}}"
    )
