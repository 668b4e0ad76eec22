"""Holds: reserve_credits, commit_hold, release_hold (docs/app-integration.md).

A hold sets credits aside for a job whose cost is known only at its end: no
spend or other hold can use them. Commit spends up to what is held (plan
credits first, as a spend) and frees the rest; release frees it all; each
once per user and key. A hold past its ttl no longer counts and cannot be
committed (PT410). When a reset, a downgrade or a clawback leaves the
balance below what is held, the newest holds shrink to fit: held credits
are always covered by the balance and available credits never go below zero.
"""

from __future__ import annotations

import time
import uuid

import psycopg
import pytest

from tests.engine.test_concurrency import run_in_parallel
from tests.support import typed_events as te
from tests.support.postgrest_errors import postgrest_status


def sqlstate_of(call) -> str | None:
    try:
        call()
    except psycopg.Error as error:
        return error.sqlstate
    return None


def parts(engine, user) -> tuple[int, int, int, int]:
    """(plan, add-on, held, available) as credit_balances shows them."""
    row = engine.balance(user)
    return row["plan_credits"], row["addon_credits"], row["held_credits"], row["available_credits"]


def test_a_hold_sets_credits_aside_without_moving_the_balance(engine, user, key):
    result = engine.reserve(user, 200, key)
    assert (result["held"], result["status"], result["available_credits"]) == (200, "held", 300)
    assert parts(engine, user) == (500, 0, 200, 300)
    assert engine.ledger(user) == engine.ledger(user, "signup")  # nothing on the ledger


def test_spends_draw_only_on_available_credits(engine, user, key):
    engine.reserve(user, 400, key)
    assert sqlstate_of(lambda: engine.spend(user, 101)) == "PT402"
    engine.spend(user, 100)
    assert parts(engine, user) == (400, 0, 400, 0)


def test_a_hold_larger_than_what_is_available_raises_pt402(engine, user, key):
    engine.reserve(user, 300, f"{key}-1")
    assert sqlstate_of(lambda: engine.reserve(user, 201, f"{key}-2")) == "PT402"
    assert postgrest_status("PT402") == 402
    assert parts(engine, user) == (500, 0, 300, 200)


def test_commit_spends_what_the_job_used_and_frees_the_rest(engine, user, key):
    engine.apply(te.Buyer.new(user).pack_purchase("pack_500").completed())
    engine.reserve(user, 800, key)
    result = engine.commit(user, key, 650)
    assert (result["committed"], result["released"], result["status"]) == (650, 150, "committed")
    assert parts(engine, user) == (0, 350, 0, 350)  # plan credits first, as a spend
    (row,) = engine.ledger(user, "hold_commit")
    assert (row["plan_delta"], row["addon_delta"], row["idempotency_key"]) == (-500, -150, key)


def test_commit_without_an_amount_spends_everything_held(engine, user, key):
    engine.reserve(user, 120, key)
    assert engine.commit(user, key)["committed"] == 120
    assert parts(engine, user) == (380, 0, 0, 380)


def test_commit_spends_at_most_what_is_held(engine, user, key):
    engine.reserve(user, 100, key)
    result = engine.commit(user, key, 250)
    assert (result["committed"], result["released"]) == (100, 0)
    assert parts(engine, user) == (400, 0, 0, 400)


def test_release_frees_everything_held(engine, user, key):
    engine.reserve(user, 300, key)
    result = engine.release(user, key)
    assert (result["status"], result["released"]) == ("released", 300)
    assert parts(engine, user) == (500, 0, 0, 500)


@pytest.mark.parametrize("call", ["reserve", "commit", "release"])
def test_repeating_a_call_returns_its_first_result_and_changes_nothing(engine, user, key, call):
    engine.reserve(user, 300, key)
    first = {
        "reserve": lambda: engine.reserve(user, 300, key),
        "commit": lambda: engine.commit(user, key, 100),
        "release": lambda: engine.release(user, key),
    }[call]
    original = first() if call != "reserve" else engine.reserve(user, 300, key)
    again = first()
    assert again["replayed"] is True
    assert {k: v for k, v in again.items() if k != "replayed"} == {
        k: v for k, v in original.items() if k != "replayed"
    }
    assert len(engine.ledger(user, "hold_commit")) == (1 if call == "commit" else 0)


def test_a_finished_hold_answers_its_first_finish_whatever_is_called_next(engine, user, key):
    engine.reserve(user, 300, key)
    committed = engine.commit(user, key, 100)
    assert engine.release(user, key)["status"] == "committed"
    assert engine.commit(user, key, 300)["committed"] == committed["committed"] == 100
    assert parts(engine, user) == (400, 0, 0, 400)


def test_hold_keys_belong_to_their_user(engine, user, make_user, key):
    other = make_user()
    engine.reserve(user, 100, key)
    engine.reserve(other, 200, key)
    assert sqlstate_of(lambda: engine.commit(uuid.uuid4(), key)) == "PT404"
    engine.commit(other, key)
    assert parts(engine, user) == (500, 0, 100, 400)
    assert parts(engine, other) == (300, 0, 0, 300)


def test_a_key_reused_for_another_amount_returns_the_first_hold_and_holds_nothing_more(
    engine, user, key
):
    first = engine.reserve(user, 100, key)
    second = engine.reserve(user, 150, key)
    assert {**second, "replayed": False} == {**first, "replayed": False}
    assert second["replayed"] is True
    assert parts(engine, user) == (500, 0, 100, 400)


def test_what_a_hold_committed_is_a_spend_that_can_be_given_back_once(engine, user, key):
    engine.reserve(user, 100, key)
    engine.commit(user, key, 60)
    assert parts(engine, user) == (440, 0, 0, 440)
    reversed_ = engine.reverse(user, key, "the job failed")
    assert (reversed_["plan_returned"], reversed_["addon_returned"]) == (60, 0)
    assert parts(engine, user) == (500, 0, 0, 500)
    assert engine.reverse(user, key)["replayed"] is True
    assert parts(engine, user) == (500, 0, 0, 500)
    assert [e["kind"] for e in engine.ledger(user)][-2:] == ["hold_commit", "spend_reversal"]


@pytest.mark.parametrize("finish", ["release", "commit nothing"])
def test_a_hold_that_spent_nothing_has_no_spend_to_give_back(engine, user, key, finish):
    engine.reserve(user, 100, key)
    if finish == "release":
        engine.release(user, key)
    else:
        engine.commit(user, key, 0)
    assert sqlstate_of(lambda: engine.reverse(user, key)) == "PT404"
    assert parts(engine, user) == (500, 0, 0, 500)


def test_a_spend_and_a_hold_under_one_key_leave_the_key_to_the_spend(engine, user, key):
    engine.spend(user, 10, key=key)
    engine.reserve(user, 100, key)
    engine.commit(user, key, 60)
    assert engine.reverse(user, key)["plan_returned"] == 10
    assert parts(engine, user) == (440, 0, 0, 440)


@pytest.mark.parametrize(("amount", "ttl"), [(0, 900), (-5, 900), (10, 0), (10, 10**7)])
def test_nonsense_arguments_raise_22023(engine, user, key, amount, ttl):
    assert sqlstate_of(lambda: engine.reserve(user, amount, key, ttl)) == "22023"


def test_an_unknown_hold_raises_pt404(engine, user):
    assert sqlstate_of(lambda: engine.commit(user, "never-reserved")) == "PT404"
    assert sqlstate_of(lambda: engine.release(user, "never-reserved")) == "PT404"


def test_an_expired_hold_no_longer_counts_and_cannot_be_committed(engine, user, key):
    engine.reserve(user, 300, key, ttl_seconds=1)
    time.sleep(1.2)
    assert parts(engine, user) == (500, 0, 0, 500)
    assert sqlstate_of(lambda: engine.commit(user, key)) == "PT410"
    assert postgrest_status("PT410") == 410
    engine.spend(user, 500)  # what it held is available again
    assert engine.release(user, key)["released"] == 0


def test_the_sweeper_marks_expired_holds_and_commit_still_refuses_them(engine, user, key):
    engine.reserve(user, 300, key, ttl_seconds=1)
    time.sleep(1.2)
    assert engine.call("select public.expire_holds() as n") >= 1
    assert sqlstate_of(lambda: engine.commit(user, key)) == "PT410"
    assert engine.release(user, key)["status"] == "expired"


def test_a_period_reset_below_what_is_held_shrinks_the_newest_holds(engine, user, key):
    sub = te.Buyer.new(user).subscription("pro")
    engine.apply(sub.invoice_paid(period=0))
    engine.reserve(user, 3000, f"{key}-old")
    engine.reserve(user, 1500, f"{key}-new")
    engine.apply(sub.plan_changed(period=0, plan="starter", previous_plan="pro",
                                  created=te.at(0, 100)))  # fmt: skip
    plan, addon, held, available = parts(engine, user)
    assert (plan, addon, held, available) == (1000, 0, 1000, 0)
    assert engine.commit(user, f"{key}-new")["committed"] == 0  # shrunk away first
    assert engine.commit(user, f"{key}-old")["committed"] == 1000


def test_a_clawback_below_what_is_held_shrinks_the_holds_to_fit(engine, user, key):
    purchase = te.Buyer.new(user).pack_purchase("pack_2000")
    engine.apply(purchase.completed())
    engine.reserve(user, 2400, key)
    engine.apply(purchase.refunded(amount_refunded=purchase.amount))
    assert parts(engine, user) == (500, 0, 500, 0)


def test_thirty_two_callers_reserving_on_one_account_never_overbook(database_url, engine, user):
    def reserve(n: int):
        def job(conn: psycopg.Connection):
            return conn.execute(
                "select public.reserve_credits(%s::uuid, 30, %s)", (str(user), f"job-{n}")
            ).fetchone()[0]

        return job

    results = run_in_parallel(database_url, [reserve(n) for n in range(32)])
    errors = [r for r in results if isinstance(r, psycopg.Error)]
    assert {e.sqlstate for e in errors} <= {"PT402"}
    held = 30 * (len(results) - len(errors))
    assert held == 480  # 16 of 30 fit in 500
    assert parts(engine, user) == (500, 0, 480, 20)


BALANCE_PARTS = (
    "user_id", "plan_credits", "addon_credits", "total_credits", "held_credits",
    "available_credits",
)  # fmt: skip


def test_spend_and_reserve_answer_the_balance_parts_credit_balances_shows(engine, user, key):
    """They build their answer from what they know; it must be what clients read."""
    engine.reserve(user, 50, f"{key}-expired", ttl_seconds=1)
    time.sleep(1.2)  # an expired hold, still marked held, counts for nothing
    engine.reserve(user, 120, f"{key}-live")
    for call in (lambda: engine.spend(user, 30), lambda: engine.reserve(user, 200, f"{key}-new")):
        result, shown = call(), engine.balance(user)
        assert {k: str(result[k]) for k in BALANCE_PARTS} == {
            k: str(shown[k]) for k in BALANCE_PARTS
        }
    assert parts(engine, user) == (470, 0, 320, 150)
