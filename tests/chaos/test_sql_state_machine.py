"""Hypothesis state machines against the SQL engine: Stripe acts, deliveries come in any order.

Each example plays a few customers on their own StripeWorld. Rules let Stripe
act (subscribe, renew, fail and recover, change plan, buy packs, refund,
dispute, cancel...), announce a change under a second event id, and deliver
any sent event, first time or again, in any order, straight to
public.apply_stripe_event as the sidecar would (service_role, typed events
from the sidecar's own normaliser). After every step:

- without spends, every balance and subscription status equals the Python
  model of the set of events delivered so far;
- with spends interleaved, balances equal their ledger sums, are never
  negative, and never exceed what the model allows for the events delivered.
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
from tests.simulation.database import (
    create_users,
    differences,
    invariant_violations,
    paid_facts,
    read_catalog,
    read_states,
)
from tests.simulation.model import UserState, expected_states
from tests.simulation.stories import CustomerLife
from tests.simulation.typed import to_typed

CUSTOMERS_PER_EXAMPLE = 2
FIRST_OUTCOMES = {"applied", "parked", "rejected"}


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
    def stripe_acts(self, data: st.DataObject) -> None:
        life = data.draw(st.sampled_from(self.lives), label="customer")
        action = data.draw(st.sampled_from(sorted(life.actions())), label="action")
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
        event = pending[data.draw(st.integers(0, len(pending) - 1), label="delivered")]
        typed = to_typed(event)
        assert typed is not None
        answer = self.apply(typed)
        note(f"deliver {describe(event)} -> {answer['status']}")
        assert answer["status"] in FIRST_OUTCOMES, answer
        assert answer["event_id"] == typed["id"]
        self.delivered[typed["id"]] = typed
        self.first_outcomes[typed["id"]] = answer["status"]

    @precondition(lambda self: self.delivered)
    @rule(data=st.data())
    def redeliver_a_delivered_event(self, data: st.DataObject) -> None:
        event_id = data.draw(st.sampled_from(sorted(self.delivered)), label="redelivered")
        before = read_states(self.admin, self.users)
        answer = self.apply(self.delivered[event_id])
        note(f"redeliver {event_id} -> {answer['status']}")
        if self.first_outcomes[event_id] == "applied":
            assert answer["status"] == "duplicate", answer
        assert read_states(self.admin, self.users) == before

    def apply(self, typed: dict[str, Any]) -> dict[str, Any]:
        row = self.service.execute(
            "select public.apply_stripe_event(%s)", (Jsonb(typed),)
        ).fetchone()
        assert row is not None
        return row[0]

    # -- invariants -------------------------------------------------------------------------

    def expected(self) -> dict[str, UserState]:
        return expected_states(self.delivered.values(), self.catalog, self.users)

    @invariant()
    def balances_equal_ledger_sums_and_are_never_negative(self) -> None:
        if self.lives:
            owners = {life.story.customer_id: life.story.user_id for life in self.lives}
            facts = paid_facts(self.delivered.values(), self.catalog, owners)
            problems = invariant_violations(self.admin, facts, users=self.users)
            assert not problems, problems

    @invariant()
    def balances_equal_the_model(self) -> None:
        if self.lives:
            assert differences(self.expected(), read_states(self.admin, self.users)) == {}


class SpendingMachine(DeliveryMachine):
    """The same, with spends and their reversals interleaved with deliveries."""

    def __init__(self) -> None:
        super().__init__()
        self.spend_keys: list[str] = []

    @rule(data=st.data(), amount=st.integers(1, 6000))
    def the_app_spends(self, data: st.DataObject, amount: int) -> None:
        user = data.draw(st.sampled_from(self.users), label="spender")
        key = f"spend-{uuid.uuid4()}"
        before = read_states(self.admin, [user])[user]
        try:
            self.service.execute(
                "select public.spend_credits(%s::uuid, %s, %s)", (user, amount, key)
            )
        except psycopg.errors.Error as error:
            assert error.sqlstate == "PT402", error
            assert amount > before.total_credits
            return
        assert amount <= before.total_credits
        self.spend_keys.append(key)

    @precondition(lambda self: self.spend_keys)
    @rule(data=st.data())
    def the_app_gives_a_spend_back(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(self.spend_keys), label="reversed")
        self.service.execute("select public.reverse_spend(%s)", (key,))

    @invariant()
    def balances_equal_the_model(self) -> None:
        """Spends make the end state order-dependent: only the model's ceiling holds."""
        if not self.lives:
            return
        ceiling = self.expected()
        for user, state in read_states(self.admin, self.users).items():
            assert state.plan_credits <= ceiling[user].plan_credits, (user, state, ceiling[user])
            assert state.addon_credits <= ceiling[user].addon_credits, (user, state, ceiling[user])


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


def test_spends_interleaved_with_deliveries_never_break_the_ledger(admin, service):
    run_state_machine_as_test(
        bind(SpendingMachine, admin, service), settings=machine_settings(50, 45)
    )
