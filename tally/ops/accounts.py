"""One user's account: link a Stripe customer, adjust credits, look at reviews.

link      link a Stripe customer to a user (its parked events apply at once)
adjust    grant or remove credits, with a written reason
reviews   refunds and disputes of subscription invoices (and second
          subscriptions) that wait for a decision
"""

from __future__ import annotations

import argparse
import uuid

from tally.ops.output import print_json, render_table
from tally.ops.session import Exit, OperatorError, Ops


def link_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("user_id", type=uuid.UUID)
    parser.add_argument("customer_id", help="the Stripe customer id (cus_...)")


async def run_link(ops: Ops, args: argparse.Namespace) -> int:
    await ops.database.link_stripe_customer(str(args.user_id), args.customer_id)
    print(f"linked {args.customer_id} to {args.user_id}; its parked events were applied")
    return Exit.OK


def adjust_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("user_id", type=uuid.UUID)
    parser.add_argument("amount", type=int, help="credits to add (negative: remove)")
    parser.add_argument("--reason", required=True, help="why, in words (kept on the ledger)")
    parser.add_argument(
        "--idempotency-key",
        help="repeat the command with the same key and it applies once (default: a new key)",
    )


async def run_adjust(ops: Ops, args: argparse.Namespace) -> int:
    if not args.reason.strip():
        raise OperatorError("--reason must say why (it is written on the ledger)")
    key = args.idempotency_key or f"adjust:{uuid.uuid4()}"
    result = await ops.database.call(
        "adjust_credits",
        {"user_id": str(args.user_id), "amount": args.amount, "reason": args.reason,
         "idempotency_key": key},
    )  # fmt: skip
    print_json({"idempotency_key": key, "result": result})
    return Exit.OK


def reviews_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--all", action="store_true", help="include resolved reviews")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--json", action="store_true", help="machine-readable output")


async def run_reviews(ops: Ops, args: argparse.Namespace) -> int:
    rows = await ops.database.call(
        "list_operator_reviews", {"include_resolved": args.all, "max_rows": args.limit}
    )
    if args.json:
        print_json(rows)
    elif not rows:
        print("nothing to review")
    else:
        columns = ["id", "kind", "object_id", "user_id", "stripe_event_id", "created_at"]
        print(render_table(rows, [*columns, "details"]))
    return Exit.OK
