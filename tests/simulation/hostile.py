"""Hostile webhook input: wrong types in every field the normaliser reads, injection-shaped
ids and metadata, broken or replayed signatures, huge and deeply nested bodies.

"Every field the normaliser reads" is found, not listed: the event is
walked by the sidecar's own normaliser with dictionaries that record each
key looked up, so a field it starts reading later is mutated too.
"""

from __future__ import annotations

import asyncio
import copy
import json
import random
import re
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import psycopg

from sidecar.events import Unreadable, normalise, read_envelope
from tally.stripe_events import StripeWorld, encode, sign
from tests.simulation.database import (
    create_users,
    differences,
    invariant_violations,
    read_catalog,
    read_states,
)
from tests.simulation.model import expected_states
from tests.simulation.stories import Prices

Path = tuple[str | int, ...]

WRONG_VALUES: list[Any] = [
    None,
    True,
    0,
    -1,
    2**63,
    1.5,
    "",
    "x" * 300,
    [],
    {},
    ["evt_1"],
    {"id": 7},
]
INJECTIONS = [
    "'; drop table tally.accounts; --",
    "x' or '1'='1",
    "'); delete from tally.ledger_entries where ('1'='1",
    "$$; update tally.accounts set addon_credits = 1000000; $$",
    '"; select pg_sleep(5); --',
    "evt_1\\'; truncate tally.stripe_events; --",
    "%s%s%s%n",
    "{{7*7}}${jndi:ldap://x}",
    "../../../../etc/passwd",
    "\u202e🙂'\"\\",
]
SQLSTATE_IN_ANSWER = re.compile(r"\(([0-9A-Z]{5})\)")
STRIPE_ID = re.compile(r"\b(evt|cus|sub|si|cs_test|in|il|ch|pi|dp|re|req)_([A-Za-z0-9]{24})\b")


class _Recording(dict):
    """A dict that notes every key looked up in it, with its path from the root."""

    def __init__(self, items: dict[str, Any], path: Path, seen: set[Path]) -> None:
        super().__init__((key, _record(value, (*path, key), seen)) for key, value in items.items())
        self._path = path
        self._seen = seen

    def get(self, key: Any, default: Any = None) -> Any:
        self._seen.add((*self._path, key))
        return super().get(key, default)

    def __getitem__(self, key: Any) -> Any:
        self._seen.add((*self._path, key))
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self._seen.add((*self._path, key))  # type: ignore[arg-type]
        return super().__contains__(key)


def _record(value: Any, path: Path, seen: set[Path]) -> Any:
    if isinstance(value, dict):
        return _Recording(value, path, seen)
    if isinstance(value, list):
        return [_record(item, (*path, index), seen) for index, item in enumerate(value)]
    return value


def fields_read(raw: dict[str, Any]) -> list[Path]:
    """Every path the sidecar's normaliser looks up in `raw` (present or not)."""
    seen: set[Path] = set()
    envelope = read_envelope(_record(raw, (), seen))
    if envelope.is_handled:
        normalise(envelope)
    return sorted(seen, key=lambda path: [str(part) for part in path])


def with_value(raw: dict[str, Any], path: Path, value: Any) -> dict[str, Any]:
    """A copy of `raw` with `value` at `path` (created if absent)."""
    mutated = copy.deepcopy(raw)
    target: Any = mutated
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = copy.deepcopy(value)
    return mutated


def isolated(raw: dict[str, Any], user_id: str, new_user_id: str, suffix: str) -> dict[str, Any]:
    """The same event in a world of its own: every Stripe id suffixed, the user replaced."""
    text = json.dumps(raw).replace(user_id, new_user_id)
    return json.loads(STRIPE_ID.sub(lambda m: f"{m.group(1)}_{m.group(2)}{suffix}", text))


def accepted_typed(raw: dict[str, Any], key_is_live: bool | None = False) -> dict[str, Any] | None:
    """The typed event the sidecar would forward, None if it refuses or ignores the event.

    The sidecars under test run with a test-mode Stripe key: a live-mode event
    gets a problem (and is recorded as rejected), as from theirs.
    """
    try:
        envelope = read_envelope(json.loads(json.dumps(raw)))
        return normalise(envelope, key_is_live=key_is_live) if envelope.is_handled else None
    except Unreadable:
        return None


def sample_events(prices: Prices, user_id: str, seed: int) -> list[dict[str, Any]]:
    """Valid events of every handled type, both layouts, for one user: the material to break."""
    plan, other_plan = sorted(prices.plans)[:2]
    pack_price = sorted(prices.packs)[0]
    events: list[dict[str, Any]] = []
    for layout in ("legacy", "basil"):
        world = StripeWorld(layout, prices=prices.amounts, seed=f"hostile-{seed}-{layout}")
        customer = world.customer(user_id=user_id)
        sub, made = world.subscribe(customer, plan)
        events += made + world.renew(sub)
        events += world.fail_renewal(sub) + world.retry_payment(sub)
        events += world.change_plan(sub, other_plan, invoice_now=True)
        pack, made = world.buy_pack(customer, pack_price, asynchronous=True)
        events += made + world.settle(pack) + world.refund(pack, 100)
        failed, made = world.buy_pack(customer, pack_price, asynchronous=True)
        events += made + world.settle(failed, succeeded=False)
        dispute, opened = world.open_dispute(pack)
        events += opened + world.close_dispute(dispute, won=False)
        events += world.cancel(sub) + world.end_of_period(sub)
    return events


def wrong_type_mutations(
    events: list[dict[str, Any]], rng: random.Random, limit: int | None = None
) -> Iterator[tuple[dict[str, Any], Path, Any]]:
    """(event, path, wrong value) for every field read of every event; a seeded sample if
    `limit` is given."""
    cases = [
        (event, path, value)
        for event in events
        for path in fields_read(event)
        for value in WRONG_VALUES
    ]
    if limit is not None and limit < len(cases):
        cases = rng.sample(cases, limit)
    yield from cases


def injection_mutations(
    events: list[dict[str, Any]], rng: random.Random
) -> Iterator[tuple[dict[str, Any], Path, str]]:
    """Injection-shaped strings in every string field read (ids, customer, metadata, prices)."""
    for event in events:
        for path in fields_read(event):
            current: Any = event
            try:
                for part in path:
                    current = current[part]
            except (KeyError, IndexError, TypeError):
                current = None
            if isinstance(current, str) or path[-1] in ("user_id", "price_id"):
                # A distinct tail keeps injected ids from colliding across cases.
                yield event, path, f"{rng.choice(INJECTIONS)} {rng.getrandbits(32):08x}"


def deeply_nested(depth: int) -> bytes:
    return b'{"id": "evt_deep", "object": "event", "data": ' + b"[" * depth + b"]" * depth + b"}"


def new_user_id(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


@dataclass
class HostileReport:
    """What the hostile phase sent and what came back."""

    cases: int = 0
    accepted: int = 0  # readable, forwarded to the engine and recorded
    statuses: Counter[int] = field(default_factory=Counter)
    # Readable events the database refused (SQLSTATE -> count): not stored, so left
    # out of the model; any is a failure (a valid-looking event must be recorded).
    refused_by_database: Counter[str] = field(default_factory=Counter)
    mismatches: dict[str, Any] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.mismatches
            or self.violations
            or self.refused_by_database
            or self.statuses[500]
            or self.statuses[0]
        )


async def send_isolated(
    url: str,
    secret: str,
    dsn: str,
    cases: list[tuple[dict[str, Any], Path, Any]],
    sample_user: str,
    rng: random.Random,
    concurrency: int = 8,
) -> HostileReport:
    """Send each mutated event in a world of its own; check grants against the model."""
    report = HostileReport(cases=len(cases))
    prepared = []
    cases_of: dict[str, str] = {}  # user -> the case, for failure reports
    for event, path, value in cases:
        user = new_user_id(rng)
        suffix = f"{rng.getrandbits(32):08x}"
        world = isolated(event, sample_user, user, suffix)
        if path == ("id",) and isinstance(value, str) and value:
            # A readable event id of its own: cases sharing one would be one event.
            value = value + suffix
        prepared.append((user, with_value(world, path, value)))
        cases_of[user] = f"{event['type']} {'.'.join(map(str, path))} = {str(value)[:40]!r}"
    users = [user for user, _ in prepared]
    with psycopg.connect(dsn, autocommit=True) as conn:
        create_users(conn, users)
        catalog = read_catalog(conn)
    typed_of = {user: accepted_typed(raw) for user, raw in prepared}
    queue = list(prepared)
    refused: set[str] = set()

    async def worker(session: aiohttp.ClientSession) -> None:
        while queue:
            user, raw = queue.pop()
            body = encode(raw)
            headers = {"Stripe-Signature": sign(body, secret), "Content-Type": "application/json"}
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    text = await response.text()
                    report.statuses[response.status] += 1
            except aiohttp.ClientError:
                report.statuses[0] += 1
                continue
            if typed_of[user] is not None and response.status != 200:
                # A readable event the database refused: say which SQLSTATE.
                refused.add(user)
                found = SQLSTATE_IN_ANSWER.search(text)
                report.refused_by_database[found[1] if found else str(response.status)] += 1

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    accepted = [t for user, t in typed_of.items() if t is not None and user not in refused]
    report.accepted = len(accepted)
    with psycopg.connect(dsn, autocommit=True) as conn:
        expected = expected_states(accepted, catalog, users)
        report.mismatches = {
            f"{user} ({cases_of[user]})": difference
            for user, difference in differences(expected, read_states(conn, users)).items()
        }
        report.violations = invariant_violations(conn, users=users)
    return report
