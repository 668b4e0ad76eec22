"""Measure the credit engine's two hot paths at the SQL level.

    python -m tally.bench_engine [--database-url URL] [--connections 8]

Prints calls per second and latency percentiles of:

- `apply_stripe_event`: a stream of distinct, valid typed events (pack
  purchases, subscription periods and renewals, refunds) for many users;
- `spend_credits` on many accounts (each call on a random account);
- `spend_credits` on one hot account (every connection on the same row).

Every call runs as `service_role`, as the sidecar's PostgREST key does.
With `--database-url` (or DATABASE_URL) the migrated database there is used
and fresh users are created in it; without, a throwaway local PostgreSQL
with durable commits (fsync on) is started, migrated and removed. Figures
are printed, never asserted: speed is measured here, not in tests.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from tally.migrate import prepare_database
from tally.pg import LocalPostgres
from tests.support import typed_events as te

# Set unless --no-durable-commits (an Event: a process-wide flag without `global`).
DURABLE_COMMITS = threading.Event()


@dataclass
class Figures:
    name: str
    connections: int
    calls: int
    errors: dict[str, int]
    seconds: float
    latencies: list[float]

    def line(self) -> str:
        ordered = sorted(self.latencies)
        p50 = statistics.median(ordered) * 1000
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
        errors = ", ".join(f"{k}: {v}" for k, v in sorted(self.errors.items())) or "none"
        return (
            f"{self.name:<34} {self.connections:>3} conn  {self.calls:>7} calls  "
            f"{self.calls / self.seconds:>9.0f} calls/s  p50 {p50:6.2f} ms  "
            f"p99 {p99:6.2f} ms  errors: {errors}"
        )


def run_calls(
    database_url: str,
    name: str,
    connections: int,
    work: list[tuple[str, tuple[Any, ...]]],
) -> Figures:
    """Run (sql, params) calls over `connections` parallel connections."""
    shares = [work[i::connections] for i in range(connections)]
    latencies: list[list[float]] = [[] for _ in range(connections)]
    errors: dict[str, int] = {}
    lock = threading.Lock()
    conns = [psycopg.connect(database_url, autocommit=True) for _ in range(connections)]
    for conn in conns:
        conn.execute("set role service_role")
        if not DURABLE_COMMITS.is_set():
            # --no-durable-commits: the engine's own cost, not the disk's flush.
            conn.execute("set synchronous_commit = off")
    barrier = threading.Barrier(connections + 1)

    def worker(index: int) -> None:
        conn, mine = conns[index], latencies[index]
        barrier.wait()
        for sql, params in shares[index]:
            started = time.perf_counter()
            try:
                conn.execute(sql, params, prepare=True).fetchone()
            except psycopg.Error as error:
                with lock:
                    errors[error.sqlstate or "?"] = errors.get(error.sqlstate or "?", 0) + 1
            mine.append(time.perf_counter() - started)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    for conn in conns:
        conn.close()
    flat = [latency for share in latencies for latency in share]
    return Figures(name, connections, len(work), errors, seconds, flat)


def create_users(database_url: str, count: int) -> list[uuid.UUID]:
    users = [uuid.uuid4() for _ in range(count)]
    with psycopg.connect(database_url, autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany(
            "insert into auth.users (id, aud, role, email) values (%s, 'authenticated',"
            " 'authenticated', %s)",
            [(user, f"bench-{user}@example.test") for user in users],
        )
    return users


def event_stream(users: list[uuid.UUID], count: int) -> list[dict[str, Any]]:
    """`count` distinct events; each user's story in Stripe's order."""
    events: list[dict[str, Any]] = []
    stories = [story_of(te.Buyer.new(user)) for user in users]
    while len(events) < count:
        progressed = False
        for story in stories:
            event = next(story, None)
            if event is not None:
                events.append(event)
                progressed = True
            if len(events) == count:
                break
        if not progressed:
            raise ValueError(f"not enough users for {count} events")
    return events


def story_of(buyer: te.Buyer) -> Iterator[dict[str, Any]]:
    sub = buyer.subscription("starter")
    yield sub.checkout()
    yield sub.created(created=te.at(0, 1))
    yield sub.invoice_paid(period=0)
    pack = buyer.pack_purchase("pack_2000")
    yield pack.completed(created=te.at(0, 100))
    yield pack.refunded(amount_refunded=300, created=te.at(0, 200))
    for period in range(1, 6):
        yield sub.invoice_paid(period=period)
        yield buyer.pack_purchase("pack_500").completed(created=te.at(period, 100))


def bench_apply(database_url: str, connections: int, count: int) -> Figures:
    users = create_users(database_url, max(connections * 4, count // 15 + 1))
    events = event_stream(users, count)
    sql = "select public.apply_stripe_event(%s)"
    return run_calls(
        database_url, "apply_stripe_event", connections, [(sql, (Jsonb(e),)) for e in events]
    )


def fund(database_url: str, users: list[uuid.UUID], credits: int) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("set role service_role")
        for user in users:
            conn.execute(
                "select public.adjust_credits(%s, %s, 'benchmark funding', %s)",
                (user, credits, f"bench-fund-{user}"),
            )


def spend_work(users: list[uuid.UUID], count: int) -> list[tuple[str, tuple[Any, ...]]]:
    sql = "select public.spend_credits(%s, 1, %s)"
    run = uuid.uuid4().hex[:8]
    return [(sql, (random.choice(users), f"bench-{run}-{n}")) for n in range(count)]


def bench_spend_many(database_url: str, connections: int, count: int) -> Figures:
    users = create_users(database_url, 1000)
    fund(database_url, users, count)
    return run_calls(
        database_url, "spend_credits (many accounts)", connections, spend_work(users, count)
    )


def bench_spend_hot(database_url: str, connections: int, count: int) -> Figures:
    users = create_users(database_url, 1)
    fund(database_url, users, count)
    return run_calls(
        database_url, "spend_credits (one hot account)", connections, spend_work(users, count)
    )


@contextmanager
def throwaway_database() -> Iterator[str]:
    root = Path(tempfile.mkdtemp(prefix="tally-bench-pg-"))
    server = LocalPostgres(root).start()
    try:
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            conn.execute("create database tally_bench")
        prepare_database(server.dsn("tally_bench"))
        yield server.dsn("tally_bench")
    finally:
        server.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--hot-connections", type=int, default=32)
    parser.add_argument("--events", type=int, default=6000)
    parser.add_argument("--spends", type=int, default=20000)
    parser.add_argument(
        "--no-durable-commits",
        action="store_true",
        help="synchronous_commit = off on the benchmark's connections",
    )
    args = parser.parse_args(argv)
    if not args.no_durable_commits:
        DURABLE_COMMITS.set()
    benches: list[Callable[[str], Figures]] = [
        lambda url: bench_apply(url, args.connections, args.events),
        lambda url: bench_spend_many(url, args.connections, args.spends),
        lambda url: bench_spend_hot(url, args.connections, args.spends // 2),
        lambda url: bench_spend_hot(url, args.hot_connections, args.spends // 2),
    ]
    with nullcontext_url(args.database_url) if args.database_url else throwaway_database() as url:
        commits = "durable" if DURABLE_COMMITS.is_set() else "synchronous_commit off"
        print(f"engine benchmark, {os.cpu_count()} CPUs, {commits}, PostgreSQL at {redact(url)}")
        for bench in benches:
            print(bench(url).line(), flush=True)
    return 0


@contextmanager
def nullcontext_url(url: str) -> Iterator[str]:
    yield url


def redact(url: str) -> str:
    """The URL without any password."""
    scheme, _, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    return f"{scheme}://{credentials.split(':')[0]}{at}{host}" if at else url


if __name__ == "__main__":
    sys.exit(main())
