"""`tally bench`: every speed figure of docs/benchmarks.md, side by side, in one run.

    tally bench [--quick] [--json out.json] [--skip-sync-engine]
                [--database-url URL] [--history-rows N]
    tally bench --engine-only [tally.bench_engine options]
    tally bench --instructions [--json out.json]

Without --database-url a throwaway local PostgreSQL with durable commits and
pg_stat_statements is started, migrated, measured and removed. With it, the
migrated database there is used: bench users, floor tables, a million rows
of history and a database for the stripe-sync-engine are added to it, so
give it a disposable database. Figures are printed, never asserted; the
command fails only when a correctness check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from tally.bench import cost, db, instructions, spend, targets, webhooks
from tally.bench.context import Context, Sizes
from tally.bench.machine import describe, summary_line
from tally.bench.renewals import Subscribers
from tally.bench.report import Figure, Skipped, failed_checks, table, write_json
from tally.bench.server import Server, given_server, redact, throwaway_server
from tally.dev import StackError, new_webhook_secret
from tally.paths import ROOT
from tally.pg import PostgresUnavailable

DEFAULT_HISTORY_ROWS = 1_000_000
QUICK_HISTORY_ROWS = 20_000


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tally bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--skip-sync-engine",
        action="store_true",
        help="do not install and run @supabase/stripe-sync-engine (no npm or no network)",
    )
    parser.add_argument("--database-url", help="a migrated, disposable database to use")
    parser.add_argument(
        "--history-rows",
        type=int,
        help=f"ledger rows and stored events to grow to before measuring flatness"
        f" (default {DEFAULT_HISTORY_ROWS:,}; --quick: {QUICK_HISTORY_ROWS:,}; 0 skips it)",
    )
    parser.add_argument(
        "--engine-only",
        action="store_true",
        help="run only the older SQL-level benchmark (tally/bench_engine.py; its options follow)",
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="only count the instructions PostgreSQL executes per renewal and per spend"
        " (valgrind; repeatable where timings are not)",
    )
    parser.add_argument("--senders", type=int, default=16)
    parser.add_argument("--hot-senders", type=int, default=32)
    return parser.parse_args(argv)


def sizes_of(args: argparse.Namespace) -> Sizes:
    default = QUICK_HISTORY_ROWS if args.quick else DEFAULT_HISTORY_ROWS
    rows = default if args.history_rows is None else args.history_rows
    return Sizes.quick(rows) if args.quick else Sizes.full(rows)


@contextmanager
def benchmark_server(url: str | None) -> Iterator[Server]:
    if url:
        with given_server(url) as server:
            yield server
    else:
        with throwaway_server() as server:
            yield server


def commit_mode(url: str) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        fsync = conn.execute("show fsync").fetchone()
        sync = conn.execute("show synchronous_commit").fetchone()
    durable = fsync and fsync[0] == "on" and sync and sync[0] != "off"
    settings = f"fsync {fsync[0] if fsync else '?'}, synchronous_commit {sync[0] if sync else '?'}"
    return f"{'durable' if durable else 'NOT durable'} commits ({settings})"


def subscribers_for(ctx: Context) -> Subscribers:
    """Users with a paid Starter subscription each, applied directly (untimed)."""
    users = db.create_users(ctx.url, ctx.sizes.subscribers, "renewals")
    subscribers = Subscribers(users, ctx.price_id, seed=f"tally-bench-{os.getpid()}")
    asyncio.run(db.apply_in_order(ctx.url, subscribers.setup_typed(), min(8, ctx.senders)))
    return subscribers


def measure(
    ctx: Context, skip_sync_engine: str | None
) -> tuple[list[Figure | Skipped], dict[str, Any]]:
    """Every figure in turn; each is printed as soon as it is measured."""
    figures: list[Figure | Skipped] = []

    def record(*measured: Figure | Skipped) -> None:
        for figure in measured:
            figures.append(figure)
            print(progress(figure), flush=True)

    subscribers = subscribers_for(ctx)
    record(
        cost.cost_figure(
            ctx, subscribers, "apply_cost_empty", "apply_stripe_event cost per event (1 conn)"
        )
    )
    diagnostics = {"nested_statements": cost.nested_statements(ctx, subscribers)}
    sidecar, batch = webhooks.sidecar_figures(ctx, subscribers)
    record(*sidecar)
    record(webhooks.engine_figure(ctx, subscribers))
    record(webhooks.floor_direct_figure(ctx, subscribers, batch))
    record(webhooks.floor_http_figure(ctx, subscribers, batch))
    if skip_sync_engine:
        record(Skipped("sync_engine", webhooks.SYNC_ENGINE_TITLE, skip_sync_engine))
    else:
        record(webhooks.sync_engine_figure(ctx, batch))
    record(*spend.many_accounts(ctx))
    record(spend.hot_account(ctx))
    if ctx.sizes.history_rows > 0:
        record(cost.grown_figure(ctx, subscribers))
    else:
        record(Skipped("apply_cost_grown", "apply_stripe_event cost, grown", "--history-rows 0"))
    return figures, diagnostics


def progress(figure: Figure | Skipped) -> str:
    if isinstance(figure, Skipped):
        return f"  skipped  {figure.title}: {figure.reason}"
    verdict = "ok" if figure.passed else "FAILED"
    return (
        f"  {verdict:<7}  {figure.title}: {figure.rate:,.0f}/s,"
        f" p99 {figure.percentile_ms(0.99):.1f} ms"
    )


def print_report(
    figures: list[Figure | Skipped], diagnostics: dict[str, Any], machine: dict[str, Any]
) -> list[str]:
    """The table, the targets, the comparisons; returns the failed checks."""
    print("\n" + table(figures))
    measured = targets.targets(figures)
    print("\nagainst the targets (docs/benchmarks.md):")
    print("\n".join(t.line() for t in measured))
    print("\nratios of throughput (no target; where the time goes):")
    print("\n".join(t.line() for t in targets.comparisons(figures)))
    print_cpu(figures)
    print_nested(diagnostics.get("nested_statements", {}))
    print_notes(figures)
    problems = failed_checks(figures)
    for problem in problems:
        print(f"FAILED CHECK  {problem}")
    met = [t for t in measured if t.met]
    missed = [t.name for t in measured if t.met is False]
    ran = sum(isinstance(f, Figure) for f in figures)
    print(
        f"\nbench: {ran} figures measured, {len(figures) - ran} skipped, "
        f"{len(problems)} failed checks; targets met {len(met)} of "
        f"{sum(t.met is not None for t in measured)}"
        + (f" (not met: {'; '.join(missed)})" if missed else "")
        + f"; {machine['cpus']} CPUs, {machine['date']}"
    )
    return problems


def print_cpu(figures: list[Figure | Skipped]) -> None:
    print("\nCPU ms per call, by process (all processes share the machine's CPUs):")
    metered = [f for f in figures if isinstance(f, Figure) and f.cpu_ms]
    width = max((len(f.title) for f in metered), default=0)
    for figure in metered:
        parts = ", ".join(f"{name} {ms:.2f}" for name, ms in figure.cpu_ms.items())
        print(f"  {figure.title:<{width}}  {parts}")


def print_nested(nested: dict[str, Any]) -> None:
    if "statements" not in nested:
        return
    print(
        f"\ninside apply_stripe_event (nested statements tracked, {nested['events']} events;"
        f" {nested['apply_ms_per_event_while_tracking']:.3f} ms per event while tracking):"
    )
    for statement in nested["statements"]:
        print(
            f"  {statement['ms_per_event']:.4f} ms/event  {statement['calls_per_event']:>5} calls"
            f"  {statement['query'][:90]}"
        )


def print_notes(figures: list[Figure | Skipped]) -> None:
    notes = [(f.title, n) for f in figures if isinstance(f, Figure) for n in f.notes]
    if notes:
        print("\nnotes:")
        print("\n".join(f"  {title}: {note}" for title, note in notes))


def sync_engine_skip_reason(args: argparse.Namespace) -> str | None:
    if args.skip_sync_engine:
        return "--skip-sync-engine"
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} not found on PATH (or pass --skip-sync-engine)"
    return None


def run_instructions(args: argparse.Namespace) -> int:
    print("instructions PostgreSQL executes per call (tally/bench/instructions.py):")
    try:
        counts = instructions.measure()
    except instructions.Unmeasurable as problem:
        print(f"bench --instructions: {problem}", file=sys.stderr)
        return 1
    print("\n".join(counts.lines()))
    if args.json:
        args.json.write_text(json.dumps(dataclasses.asdict(counts), indent=2) + "\n")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.instructions:
        return run_instructions(args)
    skip_reason = sync_engine_skip_reason(args)
    if skip_reason:
        print(f"stripe-sync-engine figure skipped: {skip_reason}")
    workdir = Path(tempfile.mkdtemp(prefix="tally-bench-"))
    workdir.chmod(0o755)
    problems = ["interrupted"]
    try:
        with benchmark_server(args.database_url) as server:
            price_id, monthly = db.starter_plan(server.database_url)
            ctx = Context(
                server,
                sizes_of(args),
                new_webhook_secret(),
                workdir,
                price_id,
                monthly,
                args.senders,
                args.hot_senders,
            )
            machine = describe(server.database_url, commit_mode(server.database_url))
            machine["database"] = redact(server.database_url)
            machine["statements"] = server.statements_note
            print(summary_line(machine))
            print(f"database cost from: {server.statements_note}\n")
            figures, diagnostics = measure(ctx, skip_reason)
            problems = print_report(figures, diagnostics, machine)
            if args.json:
                all_targets = targets.targets(figures) + targets.comparisons(figures)
                write_json(args.json, machine, figures, all_targets, diagnostics)
    finally:
        if problems:
            print(f"logs of the processes started: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if problems else 0


def interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else list(argv)
    if "--engine-only" in args_in:
        # bench_engine builds its events with tests/support, which is not
        # installed: it is found from the checkout, as pytest finds it.
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        from tally import bench_engine

        args_in.remove("--engine-only")
        return bench_engine.main(args_in)
    args = parse(args_in)
    signal.signal(signal.SIGTERM, interrupt)  # stop what was started, as on Ctrl-C
    try:
        return run(args)
    except KeyboardInterrupt:
        print("\ninterrupted; everything the benchmark started is stopped", file=sys.stderr)
        return 130
    except (StackError, PostgresUnavailable, psycopg.Error) as problem:
        print(f"bench: {problem}", file=sys.stderr)
        return 1
