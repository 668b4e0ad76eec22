"""The story generator and the delivery planner: coherent, reproducible, hostile enough."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import jsonschema

from tests.chaos.conftest import PRICES
from tests.simulation.delivery import plan_deliveries
from tests.simulation.stories import new_user_ids, write_stories
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
    assert len(types) == 11, sorted(types)
    assert {layout for _, layout in seen} == {"legacy", "basil"}


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
