"""Standard Webhooks signing of balance events, pure (no I/O).

The receiver verifies with any Standard Webhooks library: ``webhook-id``
names the event (stable across retries, so the receiver can drop repeats),
``webhook-timestamp`` is the attempt's time in Unix seconds, and
``webhook-signature`` is ``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``
under the secret's key (``whsec_`` + base64).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime

from standardwebhooks import Webhook

from sidecar.db import JSON

USER_AGENT = "tally-sidecar"


@dataclass(frozen=True)
class SignedRequest:
    body: bytes
    headers: dict[str, str]


def webhook_id(outbox_id: int) -> str:
    """The id of an outbox row as the app sees it: the same on every attempt."""
    return f"bal_{outbox_id}"


def encode(payload: JSON) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


def sign_request(webhook: Webhook, message_id: str, payload: JSON, now: float) -> SignedRequest:
    """The body and headers of one attempt at time ``now`` (Unix seconds)."""
    # Whole seconds: the header and the signed text must name the same instant.
    timestamp = datetime.fromtimestamp(math.floor(now), tz=UTC)
    body = encode(payload)
    headers = {
        "webhook-id": message_id,
        "webhook-timestamp": str(math.floor(now)),
        "webhook-signature": webhook.sign(message_id, timestamp, body),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }
    return SignedRequest(body.encode(), headers)
