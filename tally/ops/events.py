"""Stripe events that wait or were refused: list them, re-apply them, drain what is ready.

events       parked and rejected events, and why (the sidecar's or the database's reason)
retry        re-read rejected events with the current normaliser and re-apply them
apply-ready  apply parked events whose wait is over, in batches, until none is left
backlog      balance events waiting for delivery to the app
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

from sidecar import events
from sidecar.db import DatabaseError
from sidecar.event_reading import read_event
from tally.ops.output import Row, print_json, render_table
from tally.ops.session import Exit, Ops

PAGE = 100


# -- events ------------------------------------------------------------------------------


def events_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--outcome", choices=["parked", "rejected"], help="only this outcome")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--json", action="store_true", help="machine-readable output")


async def run_events(ops: Ops, args: argparse.Namespace) -> int:
    rows = await ops.database.call(
        "list_unapplied_stripe_events", {"outcome": args.outcome, "max_rows": args.limit}
    )
    if args.json:
        print_json(rows)
        return Exit.OK
    outcomes = [args.outcome] if args.outcome else ["parked", "rejected"]
    if not rows:
        print(f"no {' or '.join(outcomes)} events")
        return Exit.OK
    columns = ["event_id", "type", "outcome", "found_by", "reason", "customer_id", "user_id",
               "received_at"]  # fmt: skip
    print(render_table(rows, columns))
    print(f"\n{len(rows)} event(s). Parked events apply by themselves once what they wait for")
    print("appears (`ops link` for a customer); rejected ones after the fix and `ops retry`.")
    return Exit.OK


# -- retry -------------------------------------------------------------------------------


def retry_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--event-id", help="only this event (evt_...); default: all rejected")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


async def run_retry(ops: Ops, args: argparse.Namespace) -> int:
    results: list[Row] = []
    try:
        if ops.optional_stripe is None:
            # Without the key its mode is unknown: a fresh reading could apply an event of
            # the other mode. The database's stored reading keeps that check.
            results += await retry_as_stored(ops, args.event_id)
        else:
            async for stored in rejected_events(ops, args.event_id):
                results.append(await reapply(ops, stored))
    finally:
        report_retries(results, args.json, reread=ops.optional_stripe is not None)
    return Exit.OK


async def rejected_events(ops: Ops, event_id: str | None) -> AsyncIterator[Row]:
    """Every rejected event with its raw payload, a page at a time."""
    after: str | None = None
    while True:
        page = await ops.database.call(
            "read_rejected_stripe_events",
            {"event_id": event_id, "after_event_id": after, "max_rows": PAGE},
        )
        for stored in page:
            yield stored
        if len(page) < PAGE:
            return
        after = page[-1]["event_id"]


async def reapply(ops: Ops, stored: Row) -> Row:
    """Read the stored raw payload again and re-apply the new typed event.

    Falls back to the database's retry of its stored reading when the raw
    payload cannot be read again, or is not what Stripe signed (characters
    the database could not store were replaced).
    """
    if stored.get("problem") == events.REPLACED_CHARACTERS_PROBLEM:
        return (await retry_as_stored(ops, stored["event_id"]) or [retry_row(stored, None)])[0]
    try:
        envelope = events.read_envelope(stored["raw"])
    except events.Unreadable:
        return (await retry_as_stored(ops, stored["event_id"]) or [retry_row(stored, None)])[0]
    typed = await read_event(envelope, ops.stripe, ops.settings.key_is_live)
    try:
        result = await ops.database.call("reapply_stripe_event", {"event": typed})
    except DatabaseError as refused:  # applied meanwhile (by a wake-up, another operator)
        return {**retry_row(stored, None), "outcome": "skipped", "reason": refused.message}
    return {**retry_row(stored, result), "how": "read again"}


async def retry_as_stored(ops: Ops, event_id: str | None) -> list[Row]:
    result = await ops.database.call("retry_rejected_stripe_events", {"event_id": event_id})
    return [{**retry_row(r, r), "how": "as stored"} for r in result["results"]]


def retry_row(stored: Row, result: Any) -> Row:
    result = result or {}
    return {
        "event_id": stored["event_id"],
        "type": stored.get("type") or result.get("type"),
        "how": "as stored",
        "outcome": result.get("status", "skipped"),
        "reason": result.get("reason"),
    }


def report_retries(results: list[Row], as_json: bool, *, reread: bool) -> None:
    tally = Counter(row["outcome"] for row in results)
    if as_json:
        print_json({"retried": len(results), **{k: tally[k] for k in
                    ("applied", "parked", "rejected")}, "results": results})  # fmt: skip
        return
    if not results:
        print("no rejected events")
        return
    print(render_table(results, ["event_id", "type", "how", "outcome", "reason"]))
    summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(tally.items()))
    print(f"\n{len(results)} retried: {summary}")
    if not reread:
        print("STRIPE_SECRET_KEY is not set: events were retried as stored, not read again")
    if tally["rejected"]:
        print("still rejected: `ops events --outcome rejected` says why")


# -- apply-ready ---------------------------------------------------------------------------


def apply_ready_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch", type=int, default=100, help="events per transaction (1-1000)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


async def run_apply_ready(ops: Ops, args: argparse.Namespace) -> int:
    total = batches = 0
    while applied := int(
        await ops.database.call("apply_ready_stripe_events", {"max_events": args.batch})
    ):
        total, batches = total + applied, batches + 1
    if args.json:
        print_json({"applied": total, "batches": batches})
    else:
        print(f"applied {total} parked event(s) whose wait was over, in {batches} batch(es)")
    return Exit.OK


# -- backlog -------------------------------------------------------------------------------


def backlog_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


async def run_backlog(ops: Ops, args: argparse.Namespace) -> int:
    backlog = await ops.database.call("balance_event_backlog", {})
    if args.json:
        print_json(backlog)
    else:
        print(
            f"{backlog['pending']} balance event(s) waiting for delivery to the app,"
            f" {backlog['failing']} of them failed at least once;"
            f" the oldest waits for {backlog['oldest_seconds']} s"
        )
    return Exit.OK
