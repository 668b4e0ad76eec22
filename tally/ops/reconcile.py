"""`ops reconcile [--stripe [--since 30d] [--repair]]`: prove balances, then against money.

First, always: every balance equals the sum of its ledger entries. With
``--stripe``, then: what Stripe says was paid or taken back since ``--since``
(tally/ops/stripe_facts.py) against what tally recorded under the same
business keys (tally/ops/compare.py), per user, with Stripe ids. A grant
tally has and Stripe's lists did not show is looked up in Stripe one by one
(it may be older than the window) before it is called extra.

``--repair`` applies what is missing through the webhook's path (the fact's
Stripe-shaped event, normalised and applied like a delivery), then compares
again. Extras are never repaired automatically: `ops adjust` with a reason
is the operator's decision. Exit status 1 while anything differs.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from dataclasses import asdict

import psycopg
from psycopg.rows import tuple_row

from sidecar.replay import Replayed, apply_raw_event
from sidecar.stripe_api import StripeApi
from tally.ops.compare import Comparison, Difference, Records, Unlisted, compare, extra, objects_of
from tally.ops.output import Row, print_json, render_table
from tally.ops.session import Exit, Ops, Since, iso
from tally.ops.stripe_facts import Fact, stripe_side

DIFFERENCE_COLUMNS = ["status", "kind", "stripe_id", "stripe_says", "tally_says"]
UNKNOWN_USER = "(no user known)"


def reconcile_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--stripe", action="store_true", help="also compare with what Stripe says was paid"
    )
    parser.add_argument(
        "--since",
        type=Since.parse,
        default=Since.parse("30d"),
        help="with --stripe: objects created since (a duration like 30d, or a date)",
    )
    parser.add_argument(
        "--repair", action="store_true", help="with --stripe: apply what is missing"
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")


async def run_reconcile(ops: Ops, args: argparse.Namespace) -> int:
    ledger = await ops.database.call("reconcile_balances", {})
    if not args.stripe:
        report_ledger(ledger, as_json=args.json)
        return Exit.DIFFERS if ledger["mismatches"] else Exit.OK
    since = args.since.start()
    side = await stripe_side(ops.stripe, since)
    found = await compare_with_tally(ops, side.facts, since)
    remaining, repairs = found.differences, []
    if args.repair:
        repairs = await repair(ops, found.differences)
        remaining = (await compare_with_tally(ops, side.facts, since)).differences
    report = {
        "since": iso(since),
        "compared": found.compared,
        "matched": found.matched,
        "differences": [d.as_row() for d in found.differences],
        "repairs": [asdict(r) for r in repairs],
        "remaining": [d.as_row() for d in remaining],
        "skipped": side.skipped,
    }
    if args.json:
        print_json({"ledger": ledger, "stripe": report})
    else:
        report_ledger(ledger, as_json=False)
        report_stripe(report, found.differences, repaired=args.repair)
    return Exit.DIFFERS if ledger["mismatches"] or remaining else Exit.OK


def balance_mismatches(conn: psycopg.Connection) -> list[Row]:
    """The ledger check over a psycopg connection the caller holds (the demo's)."""
    cursor = conn.cursor(row_factory=tuple_row)
    row = cursor.execute("select public.reconcile_balances()").fetchone()
    return list(row[0]["mismatches"]) if row else []


async def compare_with_tally(ops: Ops, facts: list[Fact], since: int) -> Comparison:
    doc = await ops.database.call(
        "reconcile_records", {"since": iso(since), "objects": objects_of(facts)}
    )
    comparison = compare(facts, Records(doc))
    for unlisted in comparison.unlisted:
        comparison.compared += 1
        stripe_says = await what_stripe_has(ops.stripe, unlisted)
        if stripe_says is not None:
            comparison.differences.append(extra(unlisted, stripe_says))
    return comparison


async def what_stripe_has(stripe: StripeApi, unlisted: Unlisted) -> str | None:
    """None when Stripe backs the grant (paid, just outside the window); else what it has."""
    if unlisted.kind == "invoice":
        invoice = await stripe.invoice(unlisted.stripe_id)
        if invoice is None:
            return "no such invoice"
        return None if invoice.get("status") == "paid" else f"invoice {invoice.get('status')}"
    session = await stripe.checkout_session(unlisted.stripe_id)
    if session is None:
        return "no such Checkout Session"
    paid = session.get("payment_status") == "paid"
    return None if paid else f"Checkout Session {session.get('payment_status')}"


async def repair(ops: Ops, differences: Iterable[Difference]) -> list[Replayed]:
    """Apply each missing fact's event through the webhook's path."""
    return [
        await apply_raw_event(ops.database, ops.stripe, d.fact.event, ops.settings.key_is_live)
        for d in differences
        if d.status == "missing" and d.fact is not None
    ]


# -- output --------------------------------------------------------------------------------


def report_ledger(ledger: Row, *, as_json: bool) -> None:
    mismatches = ledger["mismatches"]
    if as_json:
        print_json(ledger)
    elif mismatches:
        columns = ["user_id", "plan_credits", "addon_credits", "ledger_plan", "ledger_addon"]
        print(render_table(mismatches, columns))
        print(f"\n{len(mismatches)} account(s) differ from their ledger")
    else:
        print(f"reconciled: all {ledger['accounts']} balances equal their ledger sums")


def report_stripe(report: Row, differences: list[Difference], *, repaired: bool) -> None:
    print(
        f"\nStripe since {report['since']}: {report['compared']} payment(s) and reversal(s)"
        f" compared, {report['matched']} match, {len(differences)} differ"
    )
    for user_id, rows in by_user(differences).items():
        print(f"\nuser {user_id}\n{render_table(rows, DIFFERENCE_COLUMNS)}")
    for line in report["skipped"]:
        print(f"not compared: {line}")
    if repaired and report["repairs"]:
        print(f"\nrepairs:\n{render_table(report['repairs'], ['event_id', 'outcome', 'reason'])}")
    if repaired:
        left = len(report["remaining"])
        print(
            "\nafter repair: everything matches" if not left else f"\nafter repair: {left} differ"
        )
    elif any(d.status == "missing" for d in differences):
        print("\n`--repair` applies what is missing; extras need the operator (`ops adjust`)")


def by_user(differences: list[Difference]) -> dict[str, list[Row]]:
    grouped: dict[str, list[Row]] = {}
    for difference in sorted(differences, key=lambda d: (d.user_id or "~", d.kind, d.stripe_id)):
        grouped.setdefault(difference.user_id or UNKNOWN_USER, []).append(difference.as_row())
    return grouped
