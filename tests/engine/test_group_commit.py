"""Issue 13: public.apply_stripe_events, group commit with every event alone.

Several typed events share one transaction, each in a subtransaction of its
own: every event gets its own outcome, in order, and one that fails (even
after it wrote) leaves nothing behind while the others commit.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.conftest import assert_balances_equal_ledger_sums
from tests.engine.conftest import Engine, new_user
from tests.support import typed_events as te

PACK_CREDITS = 500  # pack_500


def apply_together(engine: Engine, events: list[Any]) -> list[dict[str, Any]]:
    return engine.call("select public.apply_stripe_events(%s) as result", (Jsonb(events),))


def stored(engine: Engine, event_id: str) -> str | None:
    row = engine.db.execute(
        "select outcome from tally.stripe_events where event_id = %s", (event_id,)
    ).fetchone()
    return row["outcome"] if row else None


def test_events_applied_together_each_get_their_own_outcome_in_order(engine: Engine):
    first, second = (te.Buyer.new(new_user(engine)) for _ in range(2))
    purchase = first.pack_purchase().completed()
    events = [purchase, second.pack_purchase().completed(), purchase]
    results = apply_together(engine, events)
    assert [r["status"] for r in results] == ["applied", "applied", "duplicate"]
    assert [r["event_id"] for r in results] == [e["id"] for e in events]
    assert engine.credits(first.user_id)[1] == engine.credits(second.user_id)[1] == PACK_CREDITS


def test_an_event_refused_among_others_is_answered_with_its_sqlstate_and_stores_nothing(
    engine: Engine,
):
    buyer = te.Buyer.new(new_user(engine))
    good = buyer.pack_purchase().completed()
    malformed = {"id": "evt_no_raw", "type": "invoice.paid"}
    results = apply_together(engine, [malformed, good])
    assert results[0]["status"] == "error"
    assert (results[0]["event_id"], results[0]["sqlstate"]) == ("evt_no_raw", "22023")
    assert results[1]["status"] == "applied"
    assert stored(engine, "evt_no_raw") is None
    assert stored(engine, good["id"]) == "applied"


@pytest.fixture
def failing_ledger(engine: Engine):
    """A ledger that refuses entries of one event: a failure after the event has written."""
    engine.db.execute(
        "create function tally.refuse_for_the_test() returns trigger language plpgsql as $$"
        " begin raise exception 'refused for the test' using errcode = 'XX001'; end $$"
    )
    engine.db.execute(
        "create trigger refuse_one_event before insert on tally.ledger_entries for each row"
        " when (new.stripe_event_id = 'evt_refused_by_the_ledger')"
        " execute function tally.refuse_for_the_test()"
    )
    yield
    engine.db.execute("drop trigger refuse_one_event on tally.ledger_entries")
    engine.db.execute("drop function tally.refuse_for_the_test()")


def test_an_event_failing_after_it_wrote_is_undone_alone_and_the_others_commit(
    engine: Engine, database_url: str, failing_ledger
):
    before, failing, after = (te.Buyer.new(new_user(engine)) for _ in range(3))
    doomed = failing.pack_purchase().completed()
    doomed["id"] = "evt_refused_by_the_ledger"
    events = [before.pack_purchase().completed(), doomed, after.pack_purchase().completed()]
    results = apply_together(engine, events)
    assert [r["status"] for r in results] == ["applied", "error", "applied"]
    assert results[1]["sqlstate"] == "XX001"
    # Its event row, purchase record and customer link went with it: Stripe's retry applies it.
    assert stored(engine, doomed["id"]) is None
    assert engine.credits(failing.user_id)[1] == 0
    assert engine.credits(before.user_id)[1] == engine.credits(after.user_id)[1] == PACK_CREDITS
    assert_balances_equal_ledger_sums(database_url)


@pytest.mark.parametrize("events", [[], "not a list", [{}] * 101], ids=["empty", "text", "101"])
def test_anything_but_one_to_a_hundred_events_is_refused_with_22023(engine: Engine, events):
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        apply_together(engine, events)
