"""`ops explain <user-id>`: a balance told as a story.

Each ledger entry, oldest first, with its Stripe object (or spend key), its
kind, the sentence the database wrote for it and the balance after it; then
the balance now with what live holds set aside, and the user's events that
wait (parked) or were refused (rejected). The answer to "why is my balance X".
"""

from __future__ import annotations

import argparse
import uuid
from typing import Any

from tally.ops.output import Row, print_json, render_table, short_time, signed
from tally.ops.session import Exit, OperatorError, Ops

COLUMNS = ["#", "when", "kind", "plan", "add-on", "balance", "stripe object / key", "what happened"]


def explain_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("user_id", type=uuid.UUID)
    parser.add_argument("--limit", type=int, default=500, help="newest ledger entries shown")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


async def run_explain(ops: Ops, args: argparse.Namespace) -> int:
    story = await ops.database.call(
        "explain_balance", {"user_id": str(args.user_id), "max_rows": args.limit}
    )
    if not story["user_exists"] and story["balance"] is None:
        raise OperatorError(f"no user {args.user_id} (no row in auth.users, no account)")
    if args.json:
        print_json(story)
        return Exit.OK
    print("\n\n".join(part for part in story_parts(story) if part))
    return Exit.OK


def story_parts(story: dict[str, Any]) -> list[str]:
    return [
        ledger_part(story),
        balance_part(story["balance"]),
        holds_part(story["holds"]),
        events_part(story["events"]),
    ]


def ledger_part(story: dict[str, Any]) -> str:
    entries = story["entries"]
    if not entries:
        return f"user {story['user_id']}: no ledger entries yet"
    rows = [
        entry_row(n, entry) for n, entry in enumerate(entries, start=story["entries_before"] + 1)
    ]
    heading = f"user {story['user_id']}, ledger oldest first"
    if story["entries_before"]:
        first = entries[0]
        before = (first["plan_after"] - first["plan_delta"]) + (
            first["addon_after"] - first["addon_delta"]
        )
        heading += f" ({story['entries_before']} earlier entries not shown; balance {before})"
    return f"{heading}:\n\n{render_table(rows, COLUMNS)}"


def entry_row(number: int, entry: Row) -> Row:
    what = entry["description"]
    if entry["shortfall"]:
        what += f" ({entry['shortfall']} could not be taken back: already spent)"
    return {
        "#": number,
        "when": entry["created_at"],
        "kind": entry["kind"],
        "plan": signed(entry["plan_delta"]),
        "add-on": signed(entry["addon_delta"]),
        "balance": entry["plan_after"] + entry["addon_after"],
        "stripe object / key": entry["stripe_object_id"]
        or entry["checkout_session_id"]
        or entry["idempotency_key"],
        "what happened": what,
    }


def balance_part(balance: Row | None) -> str:
    if balance is None:
        return "no account yet (an anonymous user gets one when it converts)"
    lines = [
        f"now: {balance['total_credits']} credits (plan {balance['plan_credits']},"
        f" add-on {balance['addon_credits']}); {balance['held_credits']} held,"
        f" {balance['available_credits']} available"
    ]
    if balance["plan_key"] or balance["subscription_status"]:
        ends = balance["current_period_end"]
        lines.append(
            f"plan {balance['plan_key'] or '-'}, subscription {balance['subscription_status']}"
            + (f", period ends {short_time(ends)}" if ends else "")
            + (" (cancels then)" if balance["cancel_at_period_end"] else "")
        )
    return "\n".join(lines)


def holds_part(holds: list[Row]) -> str:
    if not holds:
        return ""
    lines = [
        f"  {h['idempotency_key']}: {h['amount']} until {short_time(h['expires_at'])}"
        + (f" ({h['reason']})" if h["reason"] else "")
        for h in holds
    ]
    return "live holds:\n" + "\n".join(lines)


def events_part(events: list[Row]) -> str:
    if not events:
        return ""
    lines = [f"  {e['event_id']} ({e['type']}) {e['outcome']}: {e['reason']}" for e in events]
    return "waiting or refused events (`ops events`, `ops retry`):\n" + "\n".join(lines)
