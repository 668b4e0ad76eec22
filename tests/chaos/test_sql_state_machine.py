"""Hypothesis state machines against the SQL engine: Stripe acts, deliveries come in any order.

Each example plays a few customers on their own StripeWorld. Rules let Stripe
act (subscribe, renew, fail and recover, change plan at once or billed later,
schedule a change, buy packs, refund and dispute packs and subscription
invoices, cancel, take a cancellation back...), announce a change under a
second event id, and deliver any sent event, first time or again, in any
order, straight to public.apply_stripe_event as the sidecar would
(service_role, typed events from the sidecar's own normaliser).

- Without the app's calls, after every step every balance and subscription
  status equals the Python model of the set of events delivered so far
  (tests/simulation/model.py).
- With spends, reversals and holds interleaved, the model replays them in the
  order they happened (tests/simulation/calls.py): plan credits and holds
  equal it exactly; add-on credits stay between what the packs paid for less
  what spends took and what the packs paid for.
- Always: balances equal their ledger sums and are never negative, holds fit
  in the balance (available >= 0, held <= balance), and no period's plan
  credits exceed what its paid invoices paid for (the money model).
"""

from __future__ import annotations

import os
import random
import uuid
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, Phase, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from psycopg.types.json import Jsonb

from tests.chaos.conftest import PRICES
from tests.simulation.calls import CallsModel, InsufficientCredits
from tests.simulation.database import (
    Balance,
    create_users,
    differences,
    invariant_violations,
    paid_facts,
    read_balances,
    read_catalog,
    read_states,
)
from tests.simulation.model import World
from tests.simulation.stories import CustomerLife
from tests.simulation.typed import to_typed

CUSTOMERS_PER_EXAMPLE = 2
FIRST_OUTCOMES = {"applied", "parked", "rejected"}
HOLD_TTL = 86_400  # no hold expires while an example runs


def machine_settings(examples: int, steps: int) -> settings:
    # TALLY_CHAOS_SHRINK=0 reports the first failure as found (the notes say what
    # happened), instead of minutes of shrinking.
    phases = list(Phase)
    if os.environ.get("TALLY_CHAOS_SHRINK") == "0":
        phases.remove(Phase.shrink)
    return settings(
        max_examples=examples,
        stateful_step_count=steps,
        deadline=None,
        phases=phases,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


def describe(event: dict[str, Any]) -> str:
    """One line saying what an event is, for failure reports."""
    obj = event["data"]["object"]
    status = obj.get("status") or obj.get("payment_status")
    previous = event["data"].get("previous_attributes")
    changed = sorted(previous) if previous else ""
    return f"{event['id']} {event['type']} t={event['created']} {obj['id']} {status} {changed}"


class DeliveryMachine(RuleBasedStateMachine):
    """Stripe acts and delivers; the engine must end where the model says."""

    admin: psycopg.Connection
    service: psycopg.Connection

    def __init__(self) -> None:
        super().__init__()
        self.catalog = read_catalog(self.admin)
        self.lives: list[CustomerLife] = []
        self.sent: list[dict[str, Any]] = []  # raw events Stripe has sent, in its order
        self.delivered: dict[str, dict[str, Any]] = {}  # event id -> typed event
        self.first_outcomes: dict[str, str] = {}

    @initialize(seed=st.integers(0, 2**32 - 1))
    def open_accounts(self, seed: int) -> None:
        users = [str(uuid.uuid4()) for _ in range(CUSTOMERS_PER_EXAMPLE)]
        create_users(self.admin, users)
        rng = random.Random(seed)
        # Fresh Stripe ids each run: Hypothesis replays examples against the same database.
        self.lives = [CustomerLife(rng, PRICES, user, str(uuid.uuid4())) for user in users]

    @property
    def users(self) -> list[str]:
        return [life.story.user_id for life in self.lives]

    # -- Stripe acts ------------------------------------------------------------------------

    @rule(data=st.data())
    def a_subscriber_changes_plan(self, data: st.DataObject) -> None:
        """Plan changes are what the money rules are about: more of them than lives take."""
        subscribed = [life for life in self.lives if "change_plan" in life.actions()]
        if subscribed:
            life = data.draw(st.sampled_from(subscribed), label="subscriber")
            self.perform(life, "change_plan")

    @rule(data=st.data())
    def stripe_acts(self, data: st.DataObject) -> None:
        life = data.draw(st.sampled_from(self.lives), label="customer")
        # As often as the life's weights say (sampled_from alone would draw them evenly).
        weighted = [
            a for a, w in sorted(life.actions().items()) for _ in range(max(1, round(2 * w)))
        ]
        action = data.draw(st.sampled_from(weighted), label="action")
        self.perform(life, action)

    def perform(self, life: CustomerLife, action: str) -> None:
        events = life.perform(action)
        note(f"{life.story.user_id[:8]} {action}: {len(events)} events")
        self.sent.extend(events)

    @precondition(lambda self: self.sent)
    @rule(data=st.data())
    def stripe_announces_a_change_twice(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(0, len(self.sent) - 1), label="twinned")
        event = self.sent[index]
        life = next(life for life in self.lives if any(e is event for e in life.world.sent))
        twin = life.world.twin(event)
        note(f"twin {describe(twin)}")
        self.sent.append(twin)

    # -- deliveries -------------------------------------------------------------------------

    def undelivered(self) -> list[dict[str, Any]]:
        return [event for event in self.sent if event["id"] not in self.delivered]

    @precondition(lambda self: self.undelivered())
    @rule(data=st.data())
    def deliver_any_pending_event(self, data: st.DataObject) -> None:
        pending = self.undelivered()
        self.deliver(pending[data.draw(st.integers(0, len(pending) - 1), label="delivered")])

    @precondition(lambda self: self.undelivered())
    @rule(data=st.data(), count=st.integers(2, 5))
    def deliver_some_pending_events(self, data: st.DataObject, count: int) -> None:
        """Several deliveries between two checks (more of each life gets delivered)."""
        for _ in range(count):
            pending = self.undelivered()
            if not pending:
                return
            self.deliver(pending[data.draw(st.integers(0, len(pending) - 1), label="delivered")])

    def deliver(self, event: dict[str, Any]) -> None:
        typed = to_typed(event)
        assert typed is not None
        answer = self.apply(typed)
        note(f"deliver {describe(event)} -> {answer['status']} {answer.get('reason') or ''}")
        assert answer["status"] in FIRST_OUTCOMES, answer
        assert answer["event_id"] == typed["id"]
        self.delivered[typed["id"]] = typed
        self.first_outcomes[typed["id"]] = answer["status"]
        self.after_delivery(typed)

    def after_delivery(self, typed: dict[str, Any]) -> None:
        """What a subclass keeps up to date when an event is applied."""

    @precondition(lambda self: self.delivered)
    @rule(data=st.data())
    def redeliver_a_delivered_event(self, data: st.DataObject) -> None:
        event_id = data.draw(st.sampled_from(sorted(self.delivered)), label="redelivered")
        before = read_balances(self.admin, self.users)
        answer = self.apply(self.delivered[event_id])
        note(f"redeliver {event_id} -> {answer['status']}")
        if self.first_outcomes[event_id] == "applied":
            assert answer["status"] == "duplicate", answer
        assert read_balances(self.admin, self.users) == before

    def apply(self, typed: dict[str, Any]) -> dict[str, Any]:
        row = self.service.execute(
            "select public.apply_stripe_event(%s)", (Jsonb(typed),)
        ).fetchone()
        assert row is not None
        return row[0]

    # -- invariants -------------------------------------------------------------------------

    def world(self) -> World:
        return World(self.delivered.values(), self.catalog, self.users)

    @invariant()
    def balances_equal_ledger_sums_and_holds_fit_in_them(self) -> None:
        if self.lives:
            owners = {life.story.customer_id: life.story.user_id for life in self.lives}
            facts = paid_facts(self.delivered.values(), self.catalog, owners)
            problems = invariant_violations(self.admin, facts, users=self.users)
            assert not problems, problems
            for user, balance in read_balances(self.admin, self.users).items():
                assert 0 <= balance.held_credits <= balance.total_credits, (user, balance)
                assert balance.available_credits == balance.total_credits - balance.held_credits

    @invariant()
    def balances_equal_the_model(self) -> None:
        if self.lives:
            expected = {user: self.world().state_of(user) for user in self.users}
            assert differences(expected, read_states(self.admin, self.users)) == {}

    @invariant()
    def no_plan_credits_beyond_what_was_paid_for(self) -> None:
        """The money model, apart from the fold: the current period's paid invoices."""
        if self.lives:
            world = self.world()
            for user, balance in read_balances(self.admin, self.users).items():
                period = world.current_period(user)
                ceiling = self.catalog.signup_credits if period is None else period.paid_for
                assert balance.plan_credits <= ceiling, (user, balance, period)


class CallsMachine(DeliveryMachine):
    """The same, with the app's spends, reversals and holds interleaved with deliveries."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: CallsModel | None = None
        self.spent: list[tuple[str, str]] = []  # (user, key) of spends made
        self.holds: list[tuple[str, str]] = []  # (user, key) of holds made
        self.amounts: dict[tuple[str, str], int] = {}

    @initialize(seed=st.integers(0, 2**32 - 1))
    def open_accounts(self, seed: int) -> None:
        super().open_accounts(seed)
        self.calls = CallsModel(self.catalog, self.users)

    def model(self) -> CallsModel:
        assert self.calls is not None
        return self.calls

    def balance(self, user: str) -> Balance:
        return read_balances(self.admin, [user])[user]

    def after_delivery(self, typed: dict[str, Any]) -> None:
        model = self.model()
        model.deliver(typed)
        # Holds shrink to fit what the event left of the balance.
        for user, balance in read_balances(self.admin, self.users).items():
            model.fit_holds(user, model.plan_credits(user) + balance.addon_credits)

    def call(self, sql: str, *args: Any) -> dict[str, Any] | str:
        """One call as service_role: its result, or the SQLSTATE it raised."""
        try:
            row = self.service.execute(sql, args).fetchone()
        except psycopg.errors.Error as error:
            return error.sqlstate or "?"
        assert row is not None
        return row[0]

    # -- the app's calls --------------------------------------------------------------------

    @rule(data=st.data(), amount=st.integers(1, 6000))
    def the_app_spends(self, data: st.DataObject, amount: int) -> None:
        user = data.draw(st.sampled_from(self.users), label="spender")
        key = f"spend-{uuid.uuid4()}"
        addon = self.balance(user).addon_credits
        answer = self.call("select public.spend_credits(%s::uuid, %s, %s)", user, amount, key)
        note(f"spend {user[:8]} {amount} -> {answer}")
        try:
            draw = self.model().spend(user, amount, key, addon)
        except InsufficientCredits:
            assert answer == "PT402", answer
            return
        assert isinstance(answer, dict), answer
        assert (answer["from_plan"], answer["from_addon"]) == (draw.from_plan, draw.from_addon)
        self.spent.append((user, key))
        self.amounts[(user, key)] = amount

    @precondition(lambda self: self.spent)
    @rule(data=st.data())
    def the_app_gives_a_spend_back(self, data: st.DataObject) -> None:
        user, key = data.draw(st.sampled_from(self.spent), label="reversed")
        answer = self.call("select public.reverse_spend(%s::uuid, %s)", user, key)
        note(f"reverse {user[:8]} {key[-6:]} -> {answer}")
        assert isinstance(answer, dict), answer
        self.model().reverse(user, key)

    @rule(data=st.data(), amount=st.integers(1, 6000))
    def the_app_reserves(self, data: st.DataObject, amount: int) -> None:
        user = data.draw(st.sampled_from(self.users), label="holder")
        key = f"hold-{uuid.uuid4()}"
        addon = self.balance(user).addon_credits
        answer = self.call(
            "select public.reserve_credits(%s::uuid, %s, %s, %s)", user, amount, key, HOLD_TTL
        )
        note(f"reserve {user[:8]} {amount} -> {answer}")
        try:
            self.model().reserve(user, amount, key, addon)
        except InsufficientCredits:
            assert answer == "PT402", answer
            return
        assert isinstance(answer, dict) and answer["held"] == amount, answer
        self.holds.append((user, key))
        self.amounts[(user, key)] = amount

    @precondition(lambda self: self.holds)
    @rule(data=st.data(), amount=st.one_of(st.none(), st.integers(0, 6000)))
    def the_app_commits_a_hold(self, data: st.DataObject, amount: int | None) -> None:
        user, key = data.draw(st.sampled_from(self.holds), label="committed")
        addon = self.balance(user).addon_credits
        answer = self.call("select public.commit_hold(%s::uuid, %s, %s)", user, key, amount)
        note(f"commit {user[:8]} {key[-6:]} {amount} -> {answer}")
        assert isinstance(answer, dict), answer
        draw = self.model().commit(user, key, amount, addon)
        if draw is not None:
            assert answer["committed"] == draw.from_plan + draw.from_addon, (answer, draw)

    @precondition(lambda self: self.holds)
    @rule(data=st.data())
    def the_app_releases_a_hold(self, data: st.DataObject) -> None:
        user, key = data.draw(st.sampled_from(self.holds), label="released")
        answer = self.call("select public.release_hold(%s::uuid, %s)", user, key)
        note(f"release {user[:8]} {key[-6:]} -> {answer}")
        assert isinstance(answer, dict), answer
        self.model().release(user, key)

    @precondition(lambda self: self.spent or self.holds)
    @rule(data=st.data())
    def the_app_repeats_a_call(self, data: st.DataObject) -> None:
        """A spend or a hold again with the same user, key and amount: its first result,
        and nothing changes."""
        user, key = data.draw(st.sampled_from(self.spent + self.holds), label="repeated")
        function = "spend_credits" if (user, key) in self.spent else "reserve_credits"
        before = read_balances(self.admin, self.users)
        answer = self.call(
            f"select public.{function}(%s::uuid, %s, %s)", user, self.amounts[(user, key)], key
        )
        note(f"repeat {function} {user[:8]} {key[-6:]} -> {answer}")
        assert isinstance(answer, dict) and answer["replayed"] is True, answer
        assert read_balances(self.admin, self.users) == before

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def balances_equal_the_model(self) -> None:
        """Plan credits, holds and status exactly; add-on credits within their bounds."""
        if self.calls is None:
            return
        model = self.model()
        for user, balance in read_balances(self.admin, self.users).items():
            assert balance.plan_credits == model.plan_credits(user), (user, balance)
            low, high = model.addon_bounds(user)
            assert low <= balance.addon_credits <= high, (user, balance, low, high)
            assert balance.held_credits == model.held(user), (user, balance, model.held(user))
            assert balance.subscription_status == model.status_of(user), (user, balance)

    @invariant()
    def no_plan_credits_beyond_what_was_paid_for(self) -> None:
        """The money model: what the period's invoices paid for, less what was spent of it."""
        if self.calls is None:
            return
        for user, balance in read_balances(self.admin, self.users).items():
            assert balance.plan_credits <= self.model().paid_for_now(user), (user, balance)


def bind(
    machine: type[DeliveryMachine], admin: psycopg.Connection, service: psycopg.Connection
) -> type[DeliveryMachine]:
    return type(machine.__name__, (machine,), {"admin": admin, "service": service})


@pytest.mark.parametrize(("examples", "steps"), [(80, 45)])
def test_any_delivery_order_with_duplicates_ends_where_the_model_says(
    admin, service, examples, steps
):
    run_state_machine_as_test(
        bind(DeliveryMachine, admin, service), settings=machine_settings(examples, steps)
    )


def test_spends_and_holds_interleaved_with_deliveries_keep_to_the_model(admin, service):
    run_state_machine_as_test(bind(CallsMachine, admin, service), settings=machine_settings(60, 50))
