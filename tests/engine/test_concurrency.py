"""Real parallel connections against one account (docs/policy.md, docs/events.md).

Each worker thread has its own psycopg connection acting as service_role;
a barrier releases them together so the calls really overlap in Postgres.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from tests.support import typed_events as te


def run_in_parallel(
    database_url: str, jobs: list[Callable[[psycopg.Connection], Any]]
) -> list[Any]:
    """Run each job on its own connection, all released at once; return results or errors."""
    connections = [psycopg.connect(database_url, autocommit=True) for _ in jobs]
    barrier = threading.Barrier(len(jobs))

    def run(index: int) -> Any:
        conn = connections[index]
        conn.execute("set role service_role")
        barrier.wait()
        try:
            return jobs[index](conn)
        except psycopg.Error as error:
            return error

    try:
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            return list(pool.map(run, range(len(jobs))))
    finally:
        for conn in connections:
            conn.close()


def apply_job(event: dict[str, Any]) -> Callable[[psycopg.Connection], Any]:
    def job(conn: psycopg.Connection) -> Any:
        return conn.execute("select public.apply_stripe_event(%s)", (Jsonb(event),)).fetchone()[0]

    return job


def spend_job(user: uuid.UUID, amount: int, key: str) -> Callable[[psycopg.Connection], Any]:
    def job(conn: psycopg.Connection) -> Any:
        return conn.execute(
            "select public.spend_credits(%s::uuid, %s, %s)", (str(user), amount, key)
        ).fetchone()[0]

    return job


def errors_in(results: list[Any]) -> list[psycopg.Error]:
    return [r for r in results if isinstance(r, psycopg.Error)]


def test_fifty_concurrent_deliveries_of_one_event_grant_once(database_url, engine, buyer):
    event = buyer.subscription("starter").invoice_paid(period=0)
    results = run_in_parallel(database_url, [apply_job(event)] * 50)
    assert errors_in(results) == []
    statuses = Counter(result["status"] for result in results)
    assert statuses == {"applied": 1, "duplicate": 49}
    assert engine.credits(buyer.user_id) == (1000, 0)
    assert len(engine.ledger(buyer.user_id, "subscription_period")) == 1


def test_fifty_concurrent_deliveries_of_one_pack_purchase_grant_once(database_url, engine, buyer):
    event = buyer.pack_purchase("pack_2000").completed()
    results = run_in_parallel(database_url, [apply_job(event)] * 50)
    assert errors_in(results) == []
    assert engine.credits(buyer.user_id) == (500, 2000)


def test_concurrent_events_announcing_one_period_under_different_ids_grant_once(
    database_url, engine, buyer
):
    paid = buyer.subscription("pro").invoice_paid(period=0)
    events = [te.with_event_id(paid) for _ in range(20)]
    results = run_in_parallel(database_url, [apply_job(event) for event in events])
    assert errors_in(results) == []
    assert engine.credits(buyer.user_id) == (5000, 0)
    assert len(engine.ledger(buyer.user_id, "subscription_period")) == 1


def test_twenty_concurrent_purchases_of_different_packs_all_count(database_url, engine, buyer):
    packs = ["pack_500", "pack_2000"] * 10
    events = [buyer.pack_purchase(pack).completed() for pack in packs]
    results = run_in_parallel(database_url, [apply_job(event) for event in events])
    assert errors_in(results) == []
    assert {result["status"] for result in results} == {"applied"}
    assert engine.credits(buyer.user_id) == (500, 10 * 500 + 10 * 2000)
    assert len(engine.ledger(buyer.user_id, "addon_purchase")) == 20


def test_thirty_two_concurrent_spenders_never_overdraw_or_lose_an_update(
    database_url, engine, buyer
):
    engine.apply(buyer.pack_purchase("pack_500").completed())  # 500 plan + 500 add-on
    spends_per_worker, amount = 5, 10  # demand 32 * 5 * 10 = 1600 > 1000

    def worker(index: int) -> Callable[[psycopg.Connection], Any]:
        def job(conn: psycopg.Connection) -> list[Any]:
            outcomes: list[Any] = []
            for n in range(spends_per_worker):
                try:
                    outcomes.append(
                        spend_job(buyer.user_id, amount, f"w{index}-{n}-{uuid.uuid4()}")(conn)
                    )
                except psycopg.Error as error:
                    outcomes.append(error)
            return outcomes

        return job

    results = run_in_parallel(database_url, [worker(i) for i in range(32)])
    outcomes = [outcome for worker_outcomes in results for outcome in worker_outcomes]
    errors = [o for o in outcomes if isinstance(o, psycopg.Error)]
    assert {error.sqlstate for error in errors} <= {"PT402"}, {e.sqlstate for e in errors}
    successes = len(outcomes) - len(errors)
    assert successes * amount == 1000  # everything was spent, nothing twice
    assert engine.credits(buyer.user_id) == (0, 0)
    assert len(engine.ledger(buyer.user_id, "spend")) == successes


def test_concurrent_spends_and_grants_on_one_account_all_count(database_url, engine, buyer):
    purchases = [buyer.pack_purchase("pack_500").completed() for _ in range(10)]
    jobs = [apply_job(event) for event in purchases]
    jobs += [spend_job(buyer.user_id, 50, f"mixed-{n}-{uuid.uuid4()}") for n in range(10)]
    results = run_in_parallel(database_url, jobs)
    assert errors_in(results) == []
    plan, addon = engine.credits(buyer.user_id)
    assert plan + addon == 500 + 10 * 500 - 10 * 50


def test_concurrent_parking_and_linking_of_one_customer_lose_no_event(database_url, engine, buyer):
    sub = buyer.subscription("starter", with_user_metadata=False)
    packs = [
        buyer.pack_purchase("pack_500").completed(client_reference_id=None, metadata_user_id=None)
        for _ in range(10)
    ]
    jobs = [apply_job(sub.invoice_paid(period=0))] + [apply_job(event) for event in packs]

    def link(conn: psycopg.Connection) -> None:
        conn.execute(
            "select public.link_stripe_customer(%s::uuid, %s)",
            (buyer.user_id, buyer.customer_id),
        )

    results = run_in_parallel(database_url, [*jobs, link])
    assert errors_in(results) == []
    assert engine.credits(buyer.user_id) == (1000, 5000)


def lifecycle(buyer: te.Buyer) -> list[dict[str, Any]]:
    """One customer's busy month: subscription, renewals, upgrade, packs, refund, dispute."""
    sub = buyer.subscription("starter")
    packs = [buyer.pack_purchase("pack_500") for _ in range(4)]
    events = [
        sub.checkout(),
        sub.created(created=te.at(0, 1)),
        sub.invoice_paid(period=0),
        sub.invoice_paid(period=1),
        sub.updated(period=1, created=te.at(1, 6)),
        *sub.upgrade(period=1, plan="pro", at_time=te.at(1, 6)),
    ]
    for n, pack in enumerate(packs):
        events.append(pack.completed(created=te.at(0, 100 + n)))
    events.append(packs[0].refunded(amount_refunded=250, created=te.at(0, 200)))
    events.append(packs[1].dispute(dispute_id=te.new_id("dp"), created=te.at(0, 300)))
    return events


def test_concurrent_different_events_of_one_user_serialise_and_end_as_in_order(
    database_url, engine, make_user
):
    in_order = te.Buyer.new(make_user())
    engine.apply_all(*lifecycle(in_order))
    at_once = te.Buyer.new(make_user())
    events = lifecycle(at_once)
    results = run_in_parallel(database_url, [apply_job(event) for event in events + events])
    assert errors_in(results) == []
    # Upgraded 6 s into period 1: 4,000 x (period - 6 s) / period, rounded down.
    assert engine.credits(at_once.user_id) == engine.credits(in_order.user_id) == (4999, 1250)
