"""`ops replay [--since 72h]`: apply the events Stripe could not deliver.

After an outage longer than Stripe's retries (three days), or any time: the
Events API lists what was not delivered, and each event goes through the
webhook's normaliser and RPC (sidecar/replay.py). Safe to repeat: what was
applied answers duplicate. The sidecar runs the same replay by itself.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict

from sidecar.replay import MAX_LOOKBACK, Replayed, counts, replay
from tally.ops.output import print_json, render_table
from tally.ops.session import Exit, Ops, Since, iso

COLUMNS = ["event_id", "type", "created", "outcome", "reason"]


def replay_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--since",
        type=Since.parse,
        default=Since.parse("72h"),
        help="how far back: a duration (72h, 7d) or a date; at most 30 days (default 72h)",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")


async def run_replay(ops: Ops, args: argparse.Namespace) -> int:
    now = time.time()
    since = max(args.since.start(now), int(now - MAX_LOOKBACK))
    if since > args.since.start(now):
        print(
            f"ops replay: Stripe lists events of 30 days only: since {iso(since)}", file=sys.stderr
        )
    results: list[Replayed] = []
    try:
        listed = replay(ops.database, ops.stripe, since=since, key_is_live=ops.settings.key_is_live)
        async for result in listed:
            results.append(result)
    finally:
        # Printed also when Stripe or the database goes away half-way: what was done is done.
        report(results, since, args.json)
    return Exit.OK if all(result.is_recorded for result in results) else Exit.DIFFERS


def report(results: list[Replayed], since: int, as_json: bool) -> None:
    if as_json:
        print_json({"since": iso(since), "counts": counts(results),
                    "events": [asdict(r) for r in results]})  # fmt: skip
        return
    if not results:
        print(f"no undelivered events since {iso(since)}")
        return
    rows = [{**asdict(r), "created": iso(r.created) if r.created else None} for r in results]
    print(render_table(rows, COLUMNS))
    summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts(results).items()))
    print(f"\n{len(results)} undelivered event(s) since {iso(since)}: {summary}")
    if any(not r.is_recorded for r in results):
        print(
            "some events were not recorded (see their reason); run the replay again after the fix"
        )
