"""The large seeded chaos run: thousands of customers through a real sidecar process.

    .venv/bin/python -m tests.simulation                 # 2,000 customers, faults, hostile input
    .venv/bin/python -m tests.simulation --customers 200 --no-faults --json out.json

Brings up its own PostgreSQL (durable settings: a crash must not lose a
commit), applies the migrations, starts `python -m sidecar` and then:

1. delivers every customer's story (each event 1 to 3 times, shuffled across
   customers, two event ids for some changes, both layouts) from concurrent
   senders that redeliver every non-2xx like Stripe, while faults hit:
   connections terminated, statement timeouts, rows locked past the sidecar's
   timeout, Postgres restarted and crashed, the sidecar killed with SIGKILL;
   the final state must equal the policy model exactly, and no plan credits
   exceed what the current period's paid invoices paid for;
2. delivers more stories with the app spending, reserving, committing,
   releasing and reversing credits in between: invariants (balance = ledger
   sum, never negative, holds within the balance, nothing beyond what was
   paid, each period and pack granted at most once);
3. sends hostile input: wrong types in every field the normaliser reads,
   injection-shaped ids and metadata, forged and replayed signatures, huge
   and deeply nested bodies; never a 500, grants exactly as the model says.

Exits 0 when everything held; prints a summary (and writes JSON with --json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import psycopg

from tally.migrate import prepare_database
from tally.pg import LocalPostgres
from tally.stripe_events import encode, sign
from tests.simulation import faults, hostile
from tests.simulation.database import CHAOS_PACKS, CHAOS_PLANS, install_catalog
from tests.simulation.processes import SidecarProcess
from tests.simulation.run import FaultSchedule, Report, simulate
from tests.simulation.stories import Prices, new_user_ids

DBNAME = "chaos"
SECRET = "whsec_chaos_simulation"
PRICES = Prices(
    plans={entry.price_id: entry.amount for entry in CHAOS_PLANS},
    packs={entry.price_id: entry.amount for entry in CHAOS_PACKS},
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=20261129)
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--spend-customers", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--no-faults", action="store_true")
    parser.add_argument("--hostile-limit", type=int, default=None, help="wrong-type cases (all)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--keep-log", type=Path, help="copy the sidecar's log here")
    return parser.parse_args()


def schedule_faults(
    server: LocalPostgres, sidecar: SidecarProcess, users: list[str], deliveries: int
) -> FaultSchedule:
    """Faults spread over the run, at fixed fractions of the planned deliveries."""
    dsn, admin = server.dsn(DBNAME), server.dsn()
    plan = [
        (0.08, "connections terminated", faults.terminate_backends(admin, DBNAME)),
        (0.16, "statement timeouts (1 ms for 1.5 s)", faults.statement_timeouts(admin, DBNAME)),
        (0.24, "sidecar killed (SIGKILL)", faults.kill_sidecar(sidecar)),
        (0.33, "postgres restarted (fast)", faults.restart_postgres(server, "fast")),
        (0.42, "rows locked past the timeout", faults.hold_account_locks(dsn, users[:200])),
        (0.50, "connections terminated", faults.terminate_backends(admin, DBNAME)),
        (0.58, "postgres crashed (immediate)", faults.restart_postgres(server, "immediate")),
        (0.66, "sidecar killed (SIGKILL)", faults.kill_sidecar(sidecar)),
        (0.75, "statement timeouts (1 ms for 1.5 s)", faults.statement_timeouts(admin, DBNAME)),
        (0.84, "postgres crashed (immediate)", faults.restart_postgres(server, "immediate")),
        (0.92, "sidecar killed (SIGKILL)", faults.kill_sidecar(sidecar)),
    ]
    schedule = FaultSchedule()
    for fraction, name, fault in plan:
        schedule.add(int(deliveries * fraction), name, fault)
    return schedule


async def signature_attacks(url: str, event: dict[str, Any]) -> dict[str, int]:
    """Forged, stale, replayed, oversize and nested deliveries: statuses by attack."""
    body = encode(event)
    now = int(time.time())
    attacks: dict[str, tuple[bytes, str | None]] = {
        "unsigned": (body, None),
        "wrong secret": (body, sign(body, "whsec_someone_else")),
        "stale (301 s old) signature replayed": (body, sign(body, SECRET, now - 301)),
        "future timestamp": (body, sign(body, SECRET, now + 3600)),
        "v0 scheme only": (body, sign(body, SECRET, scheme="v0")),
        "body changed after signing": (body + b" ", sign(body, SECRET)),
        "1 MiB + 1 body": (b"{" + b" " * (1024 * 1024) + b"}", None),
        "nested 100,000 deep": (hostile.deeply_nested(100_000), "sign"),
    }
    statuses = {}
    async with aiohttp.ClientSession() as session:
        for name, (payload, signature) in attacks.items():
            headers = {"Content-Type": "application/json"}
            if signature == "sign":
                headers["Stripe-Signature"] = sign(payload, SECRET)
            elif signature:
                headers["Stripe-Signature"] = signature
            async with session.post(url, data=payload, headers=headers) as response:
                statuses[name] = response.status
    return statuses


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="tally-simulate-"))
    # Its own directory: the server runs as an unprivileged user that must reach it.
    server = LocalPostgres(Path(tempfile.mkdtemp(prefix="tally-simulate-pg-"))).start()
    sidecar: SidecarProcess | None = None
    try:
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            conn.execute(f"create database {DBNAME}")
        prepare_database(server.dsn(DBNAME))
        with psycopg.connect(server.dsn(DBNAME), autocommit=True) as conn:
            install_catalog(conn)
        sidecar = SidecarProcess(
            server.dsn(DBNAME), SECRET, db_timeout=2.0, log_path=root / "sidecar.log"
        ).start()
        url = f"{sidecar.url}/webhooks/stripe"
        results: dict[str, Any] = {"machine": machine(server.dsn()), "seed": args.seed}

        started = time.perf_counter()
        schedule = None
        if not args.no_faults:
            users = new_user_ids(args.seed, args.customers)
            # Deliveries are about 16 per customer; faults land at fractions of that.
            schedule = schedule_faults(server, sidecar, users, 16 * args.customers)
        main = await simulate(
            url, SECRET, server.dsn(DBNAME), PRICES, seed=args.seed,
            customers=args.customers, concurrency=args.concurrency, faults=schedule,
        )  # fmt: skip
        results["main"] = describe(main, time.perf_counter() - started)
        print_report("1. stories with faults, no spends: exact model", results["main"])

        started = time.perf_counter()
        spending = await simulate(
            url, SECRET, server.dsn(DBNAME), PRICES, seed=args.seed + 1,
            customers=args.spend_customers, concurrency=args.concurrency, spends=True,
        )  # fmt: skip
        results["spends"] = describe(spending, time.perf_counter() - started)
        print_report("2. stories with spends interleaved: invariants", results["spends"])

        started = time.perf_counter()
        results["hostile"] = await hostile_phase(url, server.dsn(DBNAME), args)
        results["hostile"]["seconds"] = round(time.perf_counter() - started, 1)
        print_report("3. hostile input", results["hostile"])

        log = (root / "sidecar.log").read_text(errors="replace")
        results["sidecar_unhandled_errors"] = log.count('"unhandled error"')
        results["ok"] = (
            main.ok and spending.ok and results["hostile"]["ok"]
            and results["sidecar_unhandled_errors"] == 0
        )  # fmt: skip
        return results
    finally:
        if sidecar is not None:
            sidecar.stop()
        if args.keep_log and (root / "sidecar.log").exists():
            shutil.copy(root / "sidecar.log", args.keep_log)
        server.stop(mode="fast")
        shutil.rmtree(server.root, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)


async def hostile_phase(url: str, dsn: str, args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed + 2)
    sample_user = str(new_user_ids(args.seed + 2, 1)[0])
    events = hostile.sample_events(PRICES, sample_user, args.seed)
    wrong = list(hostile.wrong_type_mutations(events, rng, limit=args.hostile_limit))
    injected = list(hostile.injection_mutations(events, rng))
    wrong_report = await hostile.send_isolated(url, SECRET, dsn, wrong, sample_user, rng)
    injected_report = await hostile.send_isolated(url, SECRET, dsn, injected, sample_user, rng)
    attacks = await signature_attacks(url, events[0])
    refused_as_expected = all(
        status == (413 if "MiB" in name else 400) for name, status in attacks.items()
    )
    return {
        "wrong_type_cases": wrong_report.cases,
        "wrong_type_accepted": wrong_report.accepted,
        "wrong_type_statuses": dict(wrong_report.statuses),
        "injection_cases": injected_report.cases,
        "injection_accepted": injected_report.accepted,
        "injection_statuses": dict(injected_report.statuses),
        "readable_but_refused_by_database": dict(
            wrong_report.refused_by_database + injected_report.refused_by_database
        ),
        "attacks": attacks,
        "mismatches": len(wrong_report.mismatches) + len(injected_report.mismatches),
        "mismatch_examples": {
            k: str(v)
            for k, v in [*wrong_report.mismatches.items(), *injected_report.mismatches.items()][:8]
        },
        "violations": wrong_report.violations + injected_report.violations,
        "ok": wrong_report.ok and injected_report.ok and refused_as_expected,
    }


def describe(report: Report, seconds: float) -> dict[str, Any]:
    return {
        "customers": report.customers,
        "events": report.events,
        "deliveries": report.deliveries,
        "duplicate_deliveries": report.duplicates,
        "changes_under_two_event_ids": report.twins,
        "reordered_deliveries": report.reorderings,
        "http_attempts": report.attempts,
        "redeliveries_after_non_2xx": report.redeliveries,
        "statuses": {str(k): v for k, v in sorted(report.statuses.items())},
        "outcomes": dict(report.outcomes),
        "event_types": dict(report.event_types),
        "api_versions": dict(report.layouts),
        "invoices": dict(report.invoices),
        "faults": dict(report.faults),
        "spends": dict(report.spends),
        "never_acknowledged": len(report.gave_up),
        "model_mismatches": len(report.mismatches),
        "mismatch_examples": {k: str(v) for k, v in list(report.mismatches.items())[:5]},
        "invariant_violations": report.violations[:20],
        "seconds": round(seconds, 1),
        "ok": report.ok,
    }


def machine(dsn: str) -> dict[str, Any]:
    memory = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        memory = meminfo.read_text().splitlines()[0].split(":")[1].strip()
    with psycopg.connect(dsn) as conn:
        postgres = conn.execute("show server_version").fetchone()[0]
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "postgres": postgres,
        "cpus": os.cpu_count(),
        "memory": memory,
    }


def print_report(title: str, section: dict[str, Any]) -> None:
    print(f"\n== {title}")
    for key, value in section.items():
        print(f"  {key}: {value}")


def main() -> int:
    args = parse_args()
    results = asyncio.run(main_async(args))
    print(f"\nmachine: {results['machine']}")
    print(f"sidecar unhandled errors (500s) in its log: {results['sidecar_unhandled_errors']}")
    findings = {
        "valid story events answered 400": results["main"]["statuses"].get("400", 0)
        + results["spends"]["statuses"].get("400", 0),
        "readable hostile events refused by the database": sum(
            results["hostile"]["readable_but_refused_by_database"].values()
        ),
    }
    print(f"engine findings (each also fails the run): {findings}")
    print("RESULT:", "everything held" if results["ok"] else "FAILED")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0 if results["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
