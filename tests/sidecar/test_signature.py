"""Stripe-Signature verification, alone (no HTTP, no clock)."""

from __future__ import annotations

import pytest

from sidecar.signature import SignatureError, verify
from tally.stripe_events import sign

BODY = b'{"id": "evt_1", "object": "event"}'
NOW = 1_800_000_000
SECRETS = ("whsec_current", "whsec_next")


def check(header: str | None, body: bytes = BODY, now: float = NOW) -> int:
    return verify(body, header, SECRETS, now=now, tolerance=300)


def test_accepts_a_valid_signature_and_returns_its_timestamp():
    assert check(sign(BODY, "whsec_current", NOW)) == NOW


def test_accepts_the_second_of_two_rolled_secrets():
    assert check(sign(BODY, "whsec_next", NOW)) == NOW


def test_accepts_when_any_of_several_v1_signatures_matches():
    good = sign(BODY, "whsec_current", NOW).split(",")[1]
    bad = sign(BODY, "whsec_other", NOW).split(",")[1]
    assert check(f"t={NOW},{bad},{good}") == NOW


def test_rejects_a_wrong_secret():
    with pytest.raises(SignatureError, match="no valid v1 signature"):
        check(sign(BODY, "whsec_other", NOW))


def test_rejects_stale_timestamp():
    with pytest.raises(SignatureError, match="tolerance"):
        check(sign(BODY, "whsec_current", NOW - 301))


def test_rejects_timestamp_far_in_the_future():
    with pytest.raises(SignatureError, match="tolerance"):
        check(sign(BODY, "whsec_current", NOW + 301))


def test_accepts_timestamp_at_the_edge_of_the_tolerance():
    assert check(sign(BODY, "whsec_current", NOW - 300)) == NOW - 300


def test_rejects_v0_only_signature():
    with pytest.raises(SignatureError, match="no v1"):
        check(sign(BODY, "whsec_current", NOW, scheme="v0"))


def test_rejects_missing_header():
    with pytest.raises(SignatureError, match="missing"):
        check(None)


def test_rejects_empty_header():
    with pytest.raises(SignatureError, match="missing"):
        check("")


@pytest.mark.parametrize(
    "header",
    [
        "garbage",
        "t=,v1=abc",
        f"v1={'0' * 64}",
        f"t=12x,v1={'0' * 64}",
        f"t={NOW},t={NOW},v1={'0' * 64}",
        f"t=-{NOW},v1={'0' * 64}",
        f"t=١٢٣,v1={'0' * 64}",
        "t=" + "9" * 5000,
    ],
)
def test_rejects_malformed_header(header):
    with pytest.raises(SignatureError):
        check(header)


def test_rejects_body_changed_by_one_byte():
    header = sign(BODY, "whsec_current", NOW)
    changed = BODY[:-2] + b"X" + BODY[-1:]
    with pytest.raises(SignatureError, match="no valid v1 signature"):
        check(header, body=changed)


def test_rejects_a_non_ascii_signature_without_crashing():
    with pytest.raises(SignatureError):
        check(f"t={NOW},v1=é{'0' * 63}")


def test_rejects_everything_when_no_secret_is_configured():
    with pytest.raises(SignatureError):
        verify(BODY, sign(BODY, "whsec_current", NOW), (), now=NOW, tolerance=300)


@pytest.mark.parametrize("digits", [13, 400, 4000])
def test_rejects_a_timestamp_too_long_to_be_unix_seconds(digits):
    with pytest.raises(SignatureError, match="no valid timestamp"):
        check(f"t={'9' * digits},v1=00")
