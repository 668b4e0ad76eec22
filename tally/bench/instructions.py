"""`tally bench --instructions`: what a renewal and a spend cost the database, in instructions.

Throughput on a shared two-core machine moves by 15 % between runs of the
same code; a count of the instructions PostgreSQL executes does not. This
runs the very statements the sidecar and the app send in a single-user
PostgreSQL under valgrind's callgrind and counts what the measured calls
add over a run without them:

1. a throwaway server (autovacuum off, so no statistics gathered at random
   moments change the plans) is migrated and seeded as the benchmark does:
   users with a paid Starter subscription, funded, each having spent a few
   credits; then it is stopped;
2. four copies of its data directory each run one script in `postgres
   --single` under callgrind: `warm-up renewals`, `warm-up + measured
   renewals`, and the same again followed by warm-up and measured spends;
3. instructions per renewal = (second - first) / measured renewals, and
   per spend likewise; every renewal must answer `applied` and every spend
   return its ledger entry, or the figure is refused.

Counts include everything the backend does for the call (parsing the
typed event's JSON, planning, executing, WAL records), not the client's
round trip, the commit's fsync or the wait for other connections.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tally.bench import db
from tally.bench.renewals import Subscribers
from tally.bench.webhooks import DRAW_DOWN
from tally.migrate import prepare_database
from tally.pg import LocalPostgres, service_user

DATABASE = "tally_instructions"
COLLECTED = re.compile(r"Collected : (\d+)")


class Unmeasurable(Exception):
    """valgrind is missing, or the calls did not do what they should."""


@dataclass(frozen=True)
class Counts:
    renewal: float  # instructions per apply_stripe_event of an invoice.paid renewal
    spend: float  # instructions per spend_credits of one credit
    measured: int  # calls of each kind counted
    warmup: int  # calls of each kind run first in the same session

    def lines(self) -> list[str]:
        return [
            f"  apply_stripe_event, invoice.paid renewal: {self.renewal / 1e6:.3f} M instructions",
            f"  spend_credits, 1 credit:                   {self.spend / 1e6:.3f} M instructions",
            f"  ({self.measured} measured calls of each after {self.warmup} in the same"
            " session; single-user PostgreSQL under callgrind)",
        ]


def measure(users: int = 160, warmup: int = 40) -> Counts:
    if shutil.which("valgrind") is None:
        raise Unmeasurable("valgrind not found on PATH (Debian package valgrind)")
    root = Path(tempfile.mkdtemp(prefix="tally-instructions-"))
    root.chmod(0o755)
    try:
        server = LocalPostgres(root / "pg")
        renewals, spends = seeded_statements(server, users)
        scripts = {
            "renewals_warm": renewals[:warmup],
            "renewals_all": renewals,
            "spends_warm": renewals + spends[:warmup],
            "spends_all": renewals + spends,
        }
        counts = {name: count(server, root, name, lines) for name, lines in scripts.items()}
        measured = users - warmup
        check_outcomes(root, users)
        return Counts(
            renewal=(counts["renewals_all"] - counts["renewals_warm"]) / measured,
            spend=(counts["spends_all"] - counts["spends_warm"]) / measured,
            measured=measured,
            warmup=warmup,
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def seeded_statements(server: LocalPostgres, users: int) -> tuple[list[str], list[str]]:
    """Seed a stopped server's data; one renewal and one spend per user, as SQL lines."""
    server.start()
    try:
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            conn.execute("alter system set autovacuum = off")
            conn.execute("select pg_reload_conf()")
            conn.execute(f"create database {DATABASE}")
        url = server.dsn(DATABASE)
        prepare_database(url)
        price_id, _ = db.starter_plan(url)
        ids = db.create_users(url, users, "instructions")
        subscribers = Subscribers(ids, price_id, seed="tally-instructions")
        asyncio.run(db.apply_in_order(url, subscribers.setup_typed(), 4))
        db.fund(url, ids, 100_000)
        db.spend_each(url, ids, DRAW_DOWN)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("checkpoint")
    finally:
        server.stop()
    renewals = [
        f"select public.apply_stripe_event({dollar_quoted(typed)}::jsonb);"
        for typed in subscribers.batch(1).typed()
    ]
    spends = [
        f"select public.spend_credits('{user}', 1, 'instructions-{i}');"
        for i, user in enumerate(ids)
    ]
    return renewals, spends


def dollar_quoted(text: str) -> str:
    tag = "$tally$"
    if tag in text:
        raise Unmeasurable("a typed event contains the quoting tag")
    return f"{tag}{text}{tag}"


def count(server: LocalPostgres, root: Path, name: str, lines: list[str]) -> int:
    """Instructions of one single-user run of `lines` on a copy of the seeded data."""
    datadir = root / name
    shutil.copytree(server.datadir, datadir, symlinks=True)
    script = root / f"{name}.sql"
    script.write_text("\n".join(lines) + "\n")
    user = service_user()
    if user:
        subprocess.run(["chown", "-R", user, str(root)], check=True)
    with script.open() as stdin, (root / f"{name}.out").open("w") as stdout:
        result = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={root / name}.callgrind",
                str(server.bindir / "postgres"),
                "--single",
                "-D",
                str(datadir),
                "-c",
                "shared_buffers=256MB",
                DATABASE,
            ],
            stdin=stdin,
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            user=user,
            cwd=root,
        )
    found = COLLECTED.search(result.stderr)
    if result.returncode != 0 or not found:
        raise Unmeasurable(f"callgrind run {name} failed: {result.stderr[-500:]}")
    return int(found.group(1))


def check_outcomes(root: Path, users: int) -> None:
    """Every renewal applied and every spend posted, in the runs that were counted."""
    renewals = (root / "renewals_all.out").read_text()
    applied = renewals.count('"status": "applied"')
    spends = (root / "spends_all.out").read_text()
    posted = spends.count('"ledger_entry_id"')
    if applied != users or posted != users:
        raise Unmeasurable(
            f"of {users} renewals {applied} applied; of {users} spends {posted} posted:"
            " the counts would measure something else"
        )
