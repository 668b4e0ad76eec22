"""Thousands of correctly signed but malformed bodies: never a 500, never a signed event lost.

A body that is a Stripe event (an object with `object: "event"`, a string `id`
and `type`, and an object `data.object`) is answered 200 and stored, as
rejected with its reason when it cannot be read (nested deeper than 64
levels, or with an id over 1000 characters, included); anything else is
answered 400 and nothing is stored for it."""

from __future__ import annotations

import copy
import json
import random
from typing import Any

from tally import stripe_events as se
from tests.sidecar.conftest import PACKS, PLANS, WEBHOOK_SECRET, world

BODIES = 2000
SEED = 20261129
STRANGE_VALUES: list[Any] = [
    None,
    True,
    0,
    -1,
    2**63,
    10**30,
    1.5,
    "",
    "x" * 300,
    "x" * 1200,
    "\u202e\U0001f4a5",
    [],
    {},
    [None],
    {"id": None},
    {"object": "list", "data": "nope"},
]


def samples(seed: int) -> list[dict]:
    """Valid events of every handled type in both layouts, the material to break."""
    out: list[dict] = []
    for layout in ("legacy", "basil"):
        w = world(layout)
        w.ids = se.Ids(f"{seed}-{layout}")
        customer = w.customer(user_id="4f1d7c1e-0000-4000-8000-000000000001")
        sub, events = w.subscribe(customer, PLANS["starter"][0])
        events += w.renew(sub) + w.change_plan(sub, PLANS["pro"][0], invoice_now=True)
        pack, more = w.buy_pack(customer, PACKS["pack_500"][0], asynchronous=True)
        events += more + w.settle(pack) + w.refund(pack, 100)
        dispute, opened = w.open_dispute(pack)
        events += opened + w.close_dispute(dispute, won=False) + w.end_of_period(sub)
        out += events
    return out


# Keys the normaliser reads: most mutations aim at them, the rest anywhere.
READ_KEYS = {
    "id", "type", "created", "livemode", "api_version", "data", "object", "previous_attributes",
    "customer", "status", "mode", "payment_status", "client_reference_id", "metadata", "user_id",
    "price_id", "subscription", "payment_intent", "amount_total", "currency", "lines", "parent",
    "subscription_details", "subscription_item_details", "pricing", "price_details", "price",
    "proration", "period", "start", "end", "plan", "items", "current_period_start",
    "current_period_end", "cancel_at_period_end", "canceled_at", "ended_at", "amount",
    "amount_refunded", "amount_paid", "amount_due", "invoice", "charge", "reason",
    "billing_reason",
}  # fmt: skip


def paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += paths(item, (*prefix, index))
    return found


def mutate(event: dict, rng: random.Random) -> bytes:
    """One of: a field replaced or removed, deep nesting, or raw byte damage."""
    doc = copy.deepcopy(event)
    doc["id"] = f"evt_fuzz_{rng.getrandbits(64):016x}"
    kind = rng.random()
    if kind < 0.75:
        everywhere = paths(doc)
        aimed = [p for p in everywhere if p[-1] in READ_KEYS or isinstance(p[-1], int)]
        path = rng.choice(aimed if rng.random() < 0.9 else everywhere)
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        if rng.random() < 0.3 and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = copy.deepcopy(rng.choice(STRANGE_VALUES))
        return json.dumps(doc).encode()
    if kind < 0.8:
        doc["data"]["object"]["metadata"] = json.loads("[" * 80 + "]" * 80)
        return json.dumps(doc).encode()
    body = bytearray(json.dumps(doc).encode())
    for _ in range(rng.randint(1, 4)):
        body[rng.randrange(len(body))] = rng.choice(b'\x00\xff\x80{}[]":,\\u0')
    if rng.random() < 0.3:
        body = body[: rng.randrange(len(body))]
    return bytes(body)


async def test_malformed_signed_bodies_are_kept_when_they_are_events_and_never_get_a_500(
    sidecar, db, make_user
):
    make_user()
    rng = random.Random(SEED)
    material = samples(SEED)
    statuses: dict[int, int] = {}
    kept, refused = set(), set()
    for _ in range(BODIES):
        body = mutate(rng.choice(material), rng)
        headers = {"Stripe-Signature": se.sign(body, WEBHOOK_SECRET)}
        response = await sidecar.post("/webhooks/stripe", data=body, headers=headers)
        statuses[response.status] = statuses.get(response.status, 0) + 1
        answer = await response.json()
        assert response.status in (200, 400), (response.status, answer, body[:300])
        event = stripe_event_in(body)
        if response.status == 400:
            assert set(answer) == {"error"} and answer["error"]
            assert event is None, (answer, body[:300])
            refused.add(_event_id(body))
        else:
            assert event is not None, body[:300]
            assert answer["status"] in ("applied", "parked", "rejected", "ignored", "duplicate")
            if answer["status"] != "ignored":
                kept.add(answer["event_id"])
    stored = {row["event_id"] for row in db.execute("select event_id from tally.stripe_events")}
    assert kept <= stored
    assert not stored & (refused - {None})
    assert statuses.get(200, 0) > BODIES // 2  # most mutations still leave a Stripe event
    assert statuses.get(400, 0) > BODIES // 20  # and the byte damage breaks some bodies


def stripe_event_in(body: bytes) -> dict | None:
    """The body's event, when it is a Stripe event at all."""
    try:
        doc = json.loads(body.decode("utf-8"), parse_constant=_not_json)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(doc, dict) or doc.get("object", "event") != "event":
        return None
    data = doc.get("data")
    event_id, event_type = doc.get("id"), doc.get("type")
    if not (isinstance(event_id, str) and event_id and isinstance(event_type, str) and event_type):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        return None
    return doc


def _not_json(name: str) -> None:
    raise ValueError(name)


def _event_id(body: bytes) -> str | None:
    try:
        event_id = json.loads(body).get("id")
    except (ValueError, AttributeError, RecursionError):
        return None
    return event_id if isinstance(event_id, str) else None
