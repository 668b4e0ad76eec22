"""The `tally ops` command line: one subcommand per job, one line per error.

Every command needs only DATABASE_URL (or SUPABASE_URL and
SUPABASE_SERVICE_ROLE_KEY), STRIPE_SECRET_KEY when it reads from Stripe and,
in development, STRIPE_API_BASE. Exit statuses: tally.ops.session.Exit.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from sidecar.db import DatabaseError, DatabaseUnavailable
from sidecar.stripe_api import StripeUnavailable
from tally.ops import accounts, events, explain, reconcile, replay
from tally.ops.session import Exit, OperatorError, Ops, Settings, open_ops

USAGE = """\
Each job is one command against the database named by DATABASE_URL (or
--database-url), or SUPABASE_URL + SUPABASE_SERVICE_ROLE_KEY; commands that
read Stripe need STRIPE_SECRET_KEY. See docs/operations.md.

exit status: 0 done (everything matches), 1 something differs, waits or was
refused (see the output), 2 a usage or settings problem, 3 the database
cannot be reached, 4 Stripe cannot be reached.
"""


@dataclass(frozen=True)
class Command:
    help: str
    run: Callable[[Ops, argparse.Namespace], Awaitable[int]]
    arguments: Callable[[argparse.ArgumentParser], None]


COMMANDS: dict[str, Command] = {
    "events": Command(
        "list parked and rejected Stripe events, and why",
        events.run_events,
        events.events_arguments,
    ),
    "retry": Command(
        "re-read rejected events with the current normaliser and re-apply them",
        events.run_retry,
        events.retry_arguments,
    ),
    "apply-ready": Command(
        "apply parked events whose wait is over, until none is left",
        events.run_apply_ready,
        events.apply_ready_arguments,
    ),
    "backlog": Command(
        "balance events waiting for delivery to the app",
        events.run_backlog,
        events.backlog_arguments,
    ),
    "replay": Command(
        "apply the events Stripe could not deliver (after an outage)",
        replay.run_replay,
        replay.replay_arguments,
    ),
    "reconcile": Command(
        "check every balance against its ledger; --stripe: the ledger against Stripe",
        reconcile.run_reconcile,
        reconcile.reconcile_arguments,
    ),
    "explain": Command(
        "tell a user's balance as a story", explain.run_explain, explain.explain_arguments
    ),
    "link": Command("link a Stripe customer to a user", accounts.run_link, accounts.link_arguments),
    "adjust": Command(
        "grant (or remove) credits with a reason", accounts.run_adjust, accounts.adjust_arguments
    ),
    "reviews": Command(
        "list refunds and disputes to review", accounts.run_reviews, accounts.reviews_arguments
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tally ops",
        description="Operator jobs for tally.",
        epilog=USAGE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--database-url", help="Postgres connection string (default: $DATABASE_URL)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name, command in COMMANDS.items():
        sub = commands.add_parser(name, help=command.help, description=command.help)
        command.arguments(sub)
    return parser


async def run(argv: list[str], environ: Mapping[str, str]) -> int:
    """The command's exit status; every failure is one line on stderr, never a traceback."""
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.read(environ, args.database_url)
        async with open_ops(settings) as ops:
            return int(await COMMANDS[args.command].run(ops, args))
    except OperatorError as error:
        print(f"ops {args.command}: {error}", file=sys.stderr)
        return Exit.USAGE
    except DatabaseUnavailable as error:
        print(f"ops: cannot reach the database: {error}", file=sys.stderr)
        return Exit.DATABASE_UNREACHABLE
    except DatabaseError as error:
        print(f"ops {args.command}: the database refused: [{error.sqlstate}] {error.message}",
              file=sys.stderr)  # fmt: skip
        return Exit.DIFFERS
    except StripeUnavailable as error:
        print(f"ops {args.command}: cannot reach Stripe: {error.reason}", file=sys.stderr)
        return Exit.STRIPE_UNREACHABLE


def main(argv: list[str] | None = None) -> int:
    try:
        return asyncio.run(run(sys.argv[1:] if argv is None else argv, os.environ))
    except KeyboardInterrupt:
        return 130
