"""One simulation run: customers' stories delivered through a sidecar, then checked.

Used by the chaos tests (small) and by python -m tests.simulation (large). The
sidecar may run in-process or as a process; faults are injected by callables
the caller schedules (they know how to restart Postgres or kill the sidecar).
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from tests.simulation.database import (
    create_users,
    differences,
    invariant_violations,
    paid_facts,
    read_catalog,
    read_states,
)
from tests.simulation.delivery import DeliveryPlan, Sender, plan_deliveries
from tests.simulation.model import Catalog, UserState, World
from tests.simulation.stories import Prices, Story, new_user_ids, write_stories
from tests.simulation.typed import typed_events

Fault = Callable[[], Awaitable[Any]]


@dataclass
class FaultSchedule:
    """Faults fired once each when the sender reaches their attempt number.

    A fault runs in the background: other senders keep sending while Postgres
    restarts or the sidecar is down, and their failures are retried. Faults do
    not overlap (a second kill must not hit a sidecar still starting up).
    """

    faults: list[tuple[int, str, Fault]] = field(default_factory=list)
    fired: Counter[str] = field(default_factory=Counter)
    running: list[asyncio.Task] = field(default_factory=list)

    def add(self, at_attempt: int, name: str, fault: Fault) -> None:
        self.faults.append((at_attempt, name, fault))
        self.faults.sort(key=lambda item: item[0])

    def __call__(self, attempt: int) -> None:
        # One fault at a time: the next waits until the system is back up.
        if any(not task.done() for task in self.running):
            return
        if self.faults and self.faults[0][0] <= attempt:
            _, name, fault = self.faults.pop(0)
            self.fired[name] += 1
            self.running.append(asyncio.ensure_future(fault()))

    async def settle(self) -> None:
        await asyncio.gather(*self.running)


@dataclass
class Report:
    """Counts and results of one run; `ok` when the engine ended where it must."""

    seed: int
    customers: int
    events: int = 0
    deliveries: int = 0
    duplicates: int = 0
    twins: int = 0
    reorderings: int = 0
    attempts: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    event_types: Counter[str] = field(default_factory=Counter)
    layouts: Counter[str] = field(default_factory=Counter)
    invoices: Counter[str] = field(default_factory=Counter)  # "paid subscription_update"...
    faults: Counter[str] = field(default_factory=Counter)
    spends: Counter[str] = field(default_factory=Counter)
    gave_up: list[str] = field(default_factory=list)
    mismatches: dict[str, Any] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def redeliveries(self) -> int:
        return self.attempts - self.deliveries

    @property
    def ok(self) -> bool:
        # A 400 says "bad input, nothing stored": never right for a story's valid event.
        return not (
            self.gave_up
            or self.mismatches
            or self.violations
            or self.statuses[500]
            or self.statuses[400]
        )


async def simulate(
    url: str,
    secret: str,
    dsn: str,
    prices: Prices,
    *,
    seed: int,
    customers: int,
    concurrency: int = 8,
    spends: bool = False,
    faults: FaultSchedule | None = None,
    retry_delay: float = 0.05,
) -> Report:
    """Play `customers` stories through the sidecar at `url`; compare with the model."""
    rng = random.Random(seed)
    users = new_user_ids(seed, customers)
    with psycopg.connect(dsn, autocommit=True) as conn:
        create_users(conn, users)
        catalog = read_catalog(conn)
    stories = write_stories(seed, prices, users)
    plan = plan_deliveries(stories, rng)
    report = _report_of_plan(seed, stories, plan)
    sender = Sender(url, secret, concurrency=concurrency, retry_delay=retry_delay)
    sender.before_attempt = faults
    spender = _Spender(dsn, users, random.Random(seed + 1)) if spends else None
    spending = asyncio.ensure_future(spender.run()) if spender else None
    stats = await sender.send_all(plan.deliveries)
    if faults is not None:
        await faults.settle()
        report.faults = faults.fired
    if spender is not None and spending is not None:
        spender.stop = True
        await spending
        report.spends = spender.results
    report.attempts = stats.attempts
    report.statuses = stats.statuses
    report.outcomes = stats.outcomes
    report.gave_up = stats.gave_up
    report.seconds = stats.seconds
    _check(report, dsn, stories, catalog, users, exact=not spends)
    return report


def _report_of_plan(seed: int, stories: list[Story], plan: DeliveryPlan) -> Report:
    report = Report(seed=seed, customers=len(stories))
    report.events = plan.events
    report.deliveries = len(plan.deliveries)
    report.duplicates = plan.duplicates
    report.twins = plan.twins
    report.reorderings = plan.reorderings
    for story in stories:
        for event in story.events:
            report.event_types[event["type"]] += 1
            report.layouts[event["api_version"]] += 1
            if event["type"].startswith("invoice."):
                invoice = event["data"]["object"]
                report.invoices[f"{invoice['status']} {invoice['billing_reason']}"] += 1
    return report


def _check(
    report: Report,
    dsn: str,
    stories: list[Story],
    catalog: Catalog,
    users: list[str],
    *,
    exact: bool,
) -> None:
    typed = typed_events(event for story in stories for event in story.events)
    world = World(typed, catalog, users)
    expected = {user: world.state_of(user) for user in users}
    owners = {story.customer_id: story.user_id for story in stories}
    with psycopg.connect(dsn, autocommit=True) as conn:
        actual = read_states(conn, users)
        report.violations = invariant_violations(
            conn, paid_facts(typed, catalog, owners), users=users
        )
    report.violations += _beyond_what_was_paid(world, actual)
    if exact:
        report.mismatches = differences(expected, actual)
        return
    # With spends in between, the model is a ceiling: nothing beyond what was paid.
    for user, state in actual.items():
        ceiling = expected[user]
        if state.plan_credits > ceiling.plan_credits or state.addon_credits > ceiling.addon_credits:
            report.mismatches[user] = (ceiling, state)


def _beyond_what_was_paid(world: World, actual: dict[str, UserState]) -> list[str]:
    """The money model: no plan credits beyond what the current period's invoices paid for."""
    problems = []
    for user, state in actual.items():
        paid_for = world.plan_ceiling(user)
        if state.plan_credits > paid_for:
            problems.append(f"user {user}: {state.plan_credits} plan credits, {paid_for} paid for")
    return problems


@dataclass
class _Spender:
    """The app spending, holding and now and then giving back credits while webhooks arrive."""

    dsn: str
    users: list[str]
    rng: random.Random
    stop: bool = False
    results: Counter[str] = field(default_factory=Counter)
    spent: list[tuple[str, str]] = field(default_factory=list)  # (user, key) not yet reversed
    held: list[tuple[str, str]] = field(default_factory=list)  # (user, key) not yet finished

    async def run(self) -> None:
        while not self.stop:
            try:
                async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
                    await conn.execute("set role service_role")
                    while not self.stop:
                        await self._one(conn)
                        await asyncio.sleep(0)
            except psycopg.OperationalError:
                self.results["connection lost"] += 1
                await asyncio.sleep(0.1)

    async def _one(self, conn: psycopg.AsyncConnection) -> None:
        roll = self.rng.random()
        if self.spent and roll < 0.1:
            user, key = self.spent.pop(self.rng.randrange(len(self.spent)))
            await conn.execute("select public.reverse_spend(%s::uuid, %s)", (user, key))
            self.results["reversed"] += 1
        elif self.held and roll < 0.25:
            await self._finish_hold(conn)
        elif roll < 0.4:
            await self._try(conn, "reserve_credits", "reserved", self.held)
        else:
            await self._try(conn, "spend_credits", "spent", self.spent)

    async def _try(
        self, conn: psycopg.AsyncConnection, function: str, done: str, keys: list
    ) -> None:
        """Spend or reserve a random amount; PT402 (not enough available) is expected."""
        user, key = self.rng.choice(self.users), f"chaos-{uuid.uuid4()}"
        amount = self.rng.randrange(1, 3000)
        try:
            # Long-lived holds: an expiry in the middle of a run would only blur the counts.
            ttl = ", 86400" if function == "reserve_credits" else ""
            await conn.execute(
                f"select public.{function}(%s::uuid, %s, %s{ttl})", (user, amount, key)
            )
        except psycopg.errors.DatabaseError as problem:
            if problem.sqlstate != "PT402":
                raise
            self.results["refused (PT402)"] += 1
        else:
            self.results[done] += 1
            keys.append((user, key))

    async def _finish_hold(self, conn: psycopg.AsyncConnection) -> None:
        user, key = self.held.pop(self.rng.randrange(len(self.held)))
        if self.rng.random() < 0.7:
            amount = self.rng.choice([None, self.rng.randrange(0, 3000)])
            await conn.execute("select public.commit_hold(%s::uuid, %s, %s)", (user, key, amount))
            self.results["committed"] += 1
        else:
            await conn.execute("select public.release_hold(%s::uuid, %s)", (user, key))
            self.results["released"] += 1
