"""Stripe-Signature verification: pure, no I/O, testable alone.

Stripe signs ``"<t>.<raw body>"`` with HMAC-SHA256 under the endpoint's
signing secret and sends ``Stripe-Signature: t=<unix>,v1=<hex>[,v1=...][,v0=...]``.
Only ``v1`` counts (``v0`` is a test scheme). Every secret in the list is
tried, so a rolled secret and its successor both verify during the overlap.
The tolerance is always explicit: a verifier without one accepts replays.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

TOLERANCE_SECONDS = 300
MAX_HEADER_LENGTH = 4096
# Unix seconds have 10 digits until 2286; 12 leaves room and keeps the number
# far inside a float, so the age check below can never overflow.
MAX_TIMESTAMP_DIGITS = 12
SCHEME = "v1"


class SignatureError(Exception):
    """The request is not provably from Stripe; ``reason`` is safe to return to the caller."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_header(header: str) -> tuple[int, list[str]]:
    """The timestamp and the v1 signatures of a Stripe-Signature header."""
    if len(header) > MAX_HEADER_LENGTH:
        raise SignatureError("Stripe-Signature header too long")
    timestamps: list[str] = []
    signatures: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            raise SignatureError("malformed Stripe-Signature header")
        if key == "t":
            timestamps.append(value)
        elif key == SCHEME:
            signatures.append(value)
    if len(timestamps) != 1 or not _is_timestamp(timestamps[0]):
        raise SignatureError("Stripe-Signature header has no valid timestamp")
    if not signatures:
        raise SignatureError("Stripe-Signature header has no v1 signature")
    return int(timestamps[0]), signatures


def _is_timestamp(text: str) -> bool:
    return 0 < len(text) <= MAX_TIMESTAMP_DIGITS and text.isascii() and text.isdigit()


def expected_signature(payload: bytes, secret: str, timestamp: int) -> str:
    signed = f"{timestamp}.".encode() + payload
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def verify(
    payload: bytes,
    header: str | None,
    secrets: Sequence[str],
    *,
    now: float,
    tolerance: int,
) -> int:
    """Check ``header`` against ``payload``; return the signed timestamp.

    Raises SignatureError when the header is missing or malformed, the
    timestamp is more than ``tolerance`` seconds away from ``now`` (either
    way), or no v1 signature matches any secret. Comparisons are constant-time.
    """
    if not header:
        raise SignatureError("missing Stripe-Signature header")
    timestamp, signatures = parse_header(header)
    if abs(now - timestamp) > tolerance:
        raise SignatureError("timestamp outside the tolerance zone")
    candidates = [s.encode() for s in signatures if s.isascii()]
    matched = False
    for secret in secrets:
        wanted = expected_signature(payload, secret, timestamp).encode()
        for candidate in candidates:
            # No early exit: the time taken does not depend on which secret matched.
            matched |= hmac.compare_digest(wanted, candidate)
    if not matched:
        raise SignatureError("no valid v1 signature for this payload")
    return timestamp
