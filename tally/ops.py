"""Operator commands: `tally ops <command>` (see docs/operations.md).

Each job is one command against the database named by DATABASE_URL (or
--database-url): the project's Postgres connection string, as the `postgres`
role that owns the migrations.

    events       list parked and rejected Stripe events (why, and since when)
    retry        re-apply every rejected event, after the cause is fixed
    link         link a Stripe customer to a user (parked events apply at once)
    adjust       grant or remove credits, with a written reason
    reconcile    check that every balance equals the sum of its ledger rows
    reviews      list refunds and disputes of subscription invoices to look at

Functions that change credits run as `service_role`, as the sidecar's calls do.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

Row = dict[str, Any]


class OperatorError(RuntimeError):
    """A command that cannot be carried out, with a message for the operator."""


# --------------------------------------------------------------------------
# Queries: one function per job, each taking an open connection
# --------------------------------------------------------------------------


def stuck_events(conn: psycopg.Connection, outcomes: Sequence[str], limit: int) -> list[Row]:
    """Parked and/or rejected events, oldest first."""
    return conn.execute(
        """
        select event_id, type, outcome, reason, customer_id, user_id,
               stripe_created_at, received_at, attempts
          from tally.stripe_events
         where outcome = any(%s)
         order by received_at, event_id
         limit %s
        """,
        (list(outcomes), limit),
    ).fetchall()


def retry_rejected(conn: psycopg.Connection, event_id: str | None = None) -> Any:
    """Re-apply every rejected event (or one); returns what the database reports."""
    with as_service_role(conn):
        row = conn.execute(
            "select public.retry_rejected_stripe_events(%s) as result", (event_id,)
        ).fetchone()
    return row["result"] if row else None


def link_customer(conn: psycopg.Connection, user_id: uuid.UUID, customer_id: str) -> None:
    with as_service_role(conn):
        conn.execute("select public.link_stripe_customer(%s, %s)", (user_id, customer_id))


def adjust(conn: psycopg.Connection, user_id: uuid.UUID, amount: int, reason: str, key: str) -> Any:
    with as_service_role(conn):
        row = conn.execute(
            "select public.adjust_credits(%s, %s, %s, %s) as result",
            (user_id, amount, reason, key),
        ).fetchone()
    return row["result"] if row else None


def balance_mismatches(conn: psycopg.Connection) -> list[Row]:
    """Accounts whose balance differs from their ledger sum, or is negative.

    Also ledger rows of users with no account. Empty means reconciled.
    """
    return conn.execute(
        """
        select coalesce(a.user_id, l.user_id) as user_id,
               a.plan_credits, a.addon_credits,
               coalesce(l.plan_sum, 0) as ledger_plan, coalesce(l.addon_sum, 0) as ledger_addon
          from tally.accounts a
          full join (select user_id, sum(plan_delta) as plan_sum, sum(addon_delta) as addon_sum
                       from tally.ledger_entries group by user_id) l using (user_id)
         where a.user_id is null
            or a.plan_credits is distinct from coalesce(l.plan_sum, 0)
            or a.addon_credits is distinct from coalesce(l.addon_sum, 0)
            or a.plan_credits < 0 or a.addon_credits < 0
         order by 1
        """
    ).fetchall()


def account_count(conn: psycopg.Connection) -> int:
    row = conn.execute("select count(*) as n from tally.accounts").fetchone()
    return int(row["n"]) if row else 0


def open_reviews(conn: psycopg.Connection, include_resolved: bool, limit: int) -> list[Row]:
    return conn.execute(
        """
        select id, kind, object_id, user_id, stripe_event_id, details, created_at, resolved_at
          from tally.operator_reviews
         where %s or resolved_at is null
         order by created_at, id
         limit %s
        """,
        (include_resolved, limit),
    ).fetchall()


@contextmanager
def as_service_role(conn: psycopg.Connection) -> Iterator[None]:
    """One transaction as service_role, the only role granted the credit functions."""
    with conn.transaction():
        conn.execute("set local role service_role")
        yield


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------


def render_table(rows: Sequence[Row], columns: Sequence[str]) -> str:
    """A plain text table, one line per row; JSON values shown compactly."""
    cells = [[format_cell(row.get(column)) for column in columns] for row in rows]
    widths = [max([len(c), *(len(line[i]) for line in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)) for line in cells]
    return "\n".join(line.rstrip() for line in lines)


def format_cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), default=str)
    if hasattr(value, "isoformat"):
        return value.isoformat(timespec="seconds")
    return str(value)


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


# --------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    help: str
    run: Callable[[psycopg.Connection, argparse.Namespace], int]
    arguments: Callable[[argparse.ArgumentParser], None]


def run_events(conn: psycopg.Connection, args: argparse.Namespace) -> int:
    outcomes = [args.outcome] if args.outcome else ["parked", "rejected"]
    rows = stuck_events(conn, outcomes, args.limit)
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print(f"no {' or '.join(outcomes)} events")
        return 0
    columns = ["event_id", "type", "outcome", "reason", "customer_id", "user_id", "received_at"]
    print(render_table(rows, columns))
    print(f"\n{len(rows)} event(s). Parked events apply by themselves once their customer is")
    print("linked (`ops link`); rejected ones after the cause is fixed and `ops retry`.")
    return 0


def run_retry(conn: psycopg.Connection, args: argparse.Namespace) -> int:
    result = retry_rejected(conn, args.event_id)
    print_json(result)
    still = stuck_events(conn, ["rejected"], 1000)
    if still:
        print(f"{len(still)} event(s) still rejected: `ops events --outcome rejected` says why")
    return 0


def run_link(conn: psycopg.Connection, args: argparse.Namespace) -> int:
    link_customer(conn, args.user_id, args.customer_id)
    print(f"linked {args.customer_id} to {args.user_id}; its parked events were applied")
    return 0


def run_adjust(conn: psycopg.Connection, args: argparse.Namespace) -> int:
    if not args.reason.strip():
        raise OperatorError("--reason must say why (it is written on the ledger)")
    key = args.idempotency_key or f"adjust:{uuid.uuid4()}"
    result = adjust(conn, args.user_id, args.amount, args.reason, key)
    print_json({"idempotency_key": key, "result": result})
    return 0


def run_reconcile(conn: psycopg.Connection, args: argparse.Namespace) -> int:
    mismatches = balance_mismatches(conn)
    if args.json:
        print_json({"accounts": account_count(conn), "mismatches": mismatches})
    elif mismatches:
        columns = ["user_id", "plan_credits", "addon_credits", "ledger_plan", "ledger_addon"]
        print(render_table(mismatches, columns))
        print(f"\n{len(mismatches)} account(s) differ from their ledger")
    else:
        print(f"reconciled: all {account_count(conn)} balances equal their ledger sums")
    return 1 if mismatches else 0


def run_reviews(conn: psycopg.Connection, args: argparse.Namespace) -> int:
    rows = open_reviews(conn, args.all, args.limit)
    if args.json:
        print_json(rows)
    elif not rows:
        print("nothing to review")
    else:
        columns = ["id", "kind", "object_id", "user_id", "stripe_event_id", "created_at"]
        print(render_table(rows, [*columns, "details"]))
    return 0


def events_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--outcome", choices=["parked", "rejected"], help="only this outcome")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def retry_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--event-id", help="only this event (evt_...); default: all rejected")


def link_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("user_id", type=uuid.UUID)
    parser.add_argument("customer_id", help="the Stripe customer id (cus_...)")


def adjust_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("user_id", type=uuid.UUID)
    parser.add_argument("amount", type=int, help="credits to add (negative: remove)")
    parser.add_argument("--reason", required=True, help="why, in words (kept on the ledger)")
    parser.add_argument(
        "--idempotency-key",
        help="repeat the command with the same key and it applies once (default: a new key)",
    )


def reconcile_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def reviews_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--all", action="store_true", help="include resolved reviews")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--json", action="store_true", help="machine-readable output")


COMMANDS: dict[str, Command] = {
    "events": Command("list parked and rejected Stripe events", run_events, events_arguments),
    "retry": Command("re-apply rejected events after fixing the cause", run_retry, retry_arguments),
    "link": Command("link a Stripe customer to a user", run_link, link_arguments),
    "adjust": Command("grant (or remove) credits with a reason", run_adjust, adjust_arguments),
    "reconcile": Command(
        "check every balance against its ledger", run_reconcile, reconcile_arguments
    ),
    "reviews": Command("list refunds/disputes to review", run_reviews, reviews_arguments),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tally ops",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        help="Postgres connection string (default: $DATABASE_URL)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name, command in COMMANDS.items():
        sub = commands.add_parser(name, help=command.help, description=command.help)
        command.arguments(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.database_url:
        print("ops: set DATABASE_URL or pass --database-url", file=sys.stderr)
        return 2
    try:
        with psycopg.connect(args.database_url, autocommit=True, row_factory=dict_row) as conn:
            return COMMANDS[args.command].run(conn, args)
    except OperatorError as error:
        print(f"ops {args.command}: {error}", file=sys.stderr)
        return 2
    except psycopg.OperationalError as error:
        print(f"ops: cannot reach the database: {first_line(error)}", file=sys.stderr)
        return 3
    except psycopg.Error as error:
        print(f"ops {args.command}: the database refused: {describe(error)}", file=sys.stderr)
        return 1


def first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def describe(error: psycopg.Error) -> str:
    """SQLSTATE and message, as the database said them (no connection details)."""
    diag = error.diag
    detail = f" ({diag.message_detail})" if diag.message_detail else ""
    return f"[{error.sqlstate}] {diag.message_primary or first_line(error)}{detail}"


if __name__ == "__main__":
    sys.exit(main())
