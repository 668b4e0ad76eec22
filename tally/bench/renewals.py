"""Streams of Stripe renewals: each event pays a new period of some user's subscription.

Every user gets one Starter subscription (built by tally/stripe_events.py's
StripeWorld, basil layout, as Checkout creates it). A round renews every
subscription once; a batch is some rounds, users interleaved, so that one
user's consecutive periods are a whole round apart and arrive in order even
at 16 concurrent senders. Each event in a batch is a distinct paid period,
so each one really resets the user's plan credits.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from sidecar import events as sidecar_events
from tally.stripe_events import DAY, StripeWorld, Subscription, encode, sign

JSON = dict[str, Any]
PRICE_IN_CENTS = 1900


@dataclass(frozen=True)
class Delivery:
    """One webhook delivery: the body and its Stripe-Signature header."""

    body: bytes
    signature: str
    event_id: str
    user_id: str


@dataclass
class Batch:
    """Renewal events, encoded once; signed only right before they are sent."""

    events: list[JSON]
    bodies: list[bytes]
    user_ids: list[str]
    # The newest period each user enters in this batch (Unix seconds).
    newest_period: dict[str, int] = field(default_factory=dict)

    @property
    def event_ids(self) -> list[str]:
        return [event["id"] for event in self.events]

    def __len__(self) -> int:
        return len(self.events)

    def signed(self, secret: str) -> list[Delivery]:
        """Signatures made now: Stripe-Signature timestamps must be at most 5 minutes old."""
        now = int(time.time())
        return [
            Delivery(body, sign(body, secret, now), event["id"], user)
            for body, event, user in zip(self.bodies, self.events, self.user_ids, strict=True)
        ]

    def typed(self) -> list[str]:
        """Each event as the sidecar hands it to apply_stripe_event (JSON text)."""
        return [json.dumps(typed_event(body)) for body in self.bodies]


def typed_event(body: bytes) -> JSON:
    """The typed event the sidecar makes of a webhook body."""
    envelope = sidecar_events.read_envelope(sidecar_events.parse_body(body))
    return sidecar_events.normalise(envelope)


class Subscribers:
    """Users with one Starter subscription each, renewed a round at a time."""

    def __init__(self, users: list[uuid.UUID], price_id: str, seed: str) -> None:
        # Far enough back that a year of monthly renewals stays in the past.
        start = int(time.time()) - 500 * DAY
        self.world = StripeWorld(
            layout="basil", prices={price_id: PRICE_IN_CENTS}, start=start, seed=seed
        )
        self.users = [str(user) for user in users]
        self.subscriptions: list[Subscription] = []
        self.setup: list[list[JSON]] = []
        for user in self.users:
            sub, events = self.world.subscribe(self.world.customer(user_id=user), price_id)
            self.subscriptions.append(sub)
            self.setup.append(events)

    def setup_typed(self) -> list[list[str]]:
        """Per user, in Stripe's order: subscription created, first invoice, checkout."""
        return [[json.dumps(typed_event(encode(e))) for e in events] for events in self.setup]

    def batch(self, rounds: int) -> Batch:
        events: list[JSON] = []
        users: list[str] = []
        newest: dict[str, int] = {}
        for _ in range(rounds):
            for user, sub in zip(self.users, self.subscriptions, strict=True):
                events.append(renewal_invoice(self.world.renew(sub)))
                users.append(user)
                newest[user] = sub.current_period_start
        return Batch(events, [encode(e) for e in events], users, newest)


def renewal_invoice(events: list[JSON]) -> JSON:
    """The `invoice.paid` of a renewal (its subscription update is not sent)."""
    return next(e for e in events if e["type"] == "invoice.paid")
