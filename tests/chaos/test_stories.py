"""The story generator and the delivery planner: coherent, reproducible, hostile enough."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import jsonschema

from tests.chaos.conftest import PRICES
from tests.simulation.delivery import plan_deliveries
from tests.simulation.stories import SUBSCRIPTION_DISPUTES, new_user_ids, write_stories
from tests.simulation.typed import typed_events

SCHEMA = json.loads(Path("schema/typed_event.schema.json").read_text())


def stories(seed: int = 11, customers: int = 120):
    return write_stories(seed, PRICES, new_user_ids(seed, customers))


def test_stories_are_reproducible_from_the_seed():
    first, second = stories(), stories()
    assert [e["id"] for s in first for e in s.events] == [e["id"] for s in second for e in s.events]


def test_every_generated_event_normalises_to_a_valid_typed_event():
    raws = [event for story in stories() for event in story.events]
    validator = jsonschema.Draft202012Validator(SCHEMA)
    typed = typed_events(raws)
    assert len(typed) == len(raws)
    assert [error.message for event in typed for error in validator.iter_errors(event)] == []


def test_stories_cover_every_handled_event_type_in_both_layouts():
    typed = typed_events(event for story in stories() for event in story.events)
    seen = Counter((event["type"], event["layout"]) for event in typed)
    types = {kind for kind, _ in seen}
    assert len(types) == 12, sorted(types)
    assert {layout for _, layout in seen} == {"legacy", "basil"}


def test_stories_reach_every_flow_of_the_credit_policy():
    typed = typed_events(event for story in stories() for event in story.events)
    invoices = [e["invoice"] for e in typed if "invoice" in e]
    upgrades = [i for i in invoices if i["billing_reason"] == "subscription_update"]
    assert {i["status"] for i in upgrades} == {"paid", "open"}  # changes billed at once
    assert any(ln["is_proration"] for i in invoices if i["billing_reason"] == "subscription_cycle"
               for ln in i["lines"])  # changes billed with the renewal  # fmt: skip
    paid_by = {i["payment_intent_id"]: i["id"] for i in invoices if i["payment_intent_id"]}
    paid_by |= {
        e["invoice_payment"]["payment_intent_id"]: e["invoice_payment"]["invoice_id"]
        for e in typed
        if e["type"] == "invoice_payment.paid"
    }
    refunded = {e["charge"]["payment_intent_id"] for e in typed if e["type"] == "charge.refunded"}
    disputed = {e["dispute"]["payment_intent_id"] for e in typed if "dispute" in e}
    assert refunded & set(paid_by)  # refunds of subscription payments
    assert bool(disputed & set(paid_by)) == SUBSCRIPTION_DISPUTES  # and disputes, once fixed
    previous = [e["subscription"]["previous"] or {} for e in typed if "subscription" in e]
    assert {p.get("cancel_at_period_end") for p in previous} >= {True, False}  # cancel, resume


def test_stories_announce_some_changes_under_two_event_ids():
    assert sum(story.twins for story in stories()) > 0


def test_a_delivery_plan_sends_every_event_one_to_three_times_out_of_order():
    written = stories()
    plan = plan_deliveries(written, random.Random(3))
    counts = Counter(event["id"] for event in plan.deliveries)
    assert set(counts) == {event["id"] for story in written for event in story.events}
    assert set(counts.values()) == {1, 2, 3}
    assert plan.duplicates == len(plan.deliveries) - plan.events > 0
    assert plan.reorderings > 0
