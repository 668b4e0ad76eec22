"""Raw Stripe events to typed events, exactly as the sidecar does it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sidecar.events import normalise, read_body
from tally.stripe_events import encode


def to_typed(raw: dict[str, Any]) -> dict[str, Any] | None:
    """The typed event the sidecar forwards for `raw`; None for a type it ignores.

    The event goes through its wire form first, as it would over HTTP.
    """
    envelope = read_body(encode(raw))
    return normalise(envelope) if envelope.is_handled else None


def typed_events(raws: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [typed for typed in map(to_typed, raws) if typed is not None]
