"""The cheap scan that sends a body with exotic numbers to the exact reading."""

from __future__ import annotations

import pytest

from sidecar.salvage import has_exotic_number

FIXTURE_INVOICE = (
    b'{"id": "in_1MtHbELkdIwHu7ixl4OzzPMv", "amount_paid": 1999, "created": 1680644467}'
)


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": 12345678901234567890}',
        b'{"a": [-99999999999999999999999]}',
        b'{"a": 1e400}',
        b'{"a":1.5E-400}',
        b'{"a": 2.5e+308}',
    ],
)
def test_a_number_beyond_64_bits_or_with_a_long_exponent_is_found(body):
    assert has_exotic_number(body)


@pytest.mark.parametrize(
    "body",
    [FIXTURE_INVOICE, b'{"a": 1e99, "b": 9223372036854775807}', b'{"id": "cus_Ae123"}'],
)
def test_ordinary_numbers_and_ids_are_not(body):
    assert not has_exotic_number(body)
