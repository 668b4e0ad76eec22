"""The run command: `python3 scripts/tally.py demo`.

Brings up the whole product locally (a throwaway PostgreSQL with the stand-in,
migrations and seed; the sidecar as a child process) and plays one customer's
lifecycle through it: every Stripe event is a complete event in Stripe's own
payload layout, signed like Stripe signs it and POSTed to /webhooks/stripe;
spending goes through public.spend_credits as the app's backend would call
it; balances are read as the signed-in user reads them (row-level security).

Each step's outcome and balances are printed and checked against the credit
policy (docs/policy.md); the command exits 1 if any step differs, 0 otherwise, and
stops everything it started, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from tally.dev import (
    SidecarSettings,
    StackError,
    local_database,
    new_webhook_secret,
    running_sidecar,
)
from tally.ops import balance_mismatches
from tally.pg import PostgresUnavailable, free_port
from tally.stripe_events import DAY, StripeWorld, layout_for, signed_request

JSON = dict[str, Any]
# What each plan and pack costs in Stripe (cents); credits come from the catalog.
PRICES_IN_CENTS = {"starter": 900, "pro": 2900, "pack": 500}
FIRST_SPEND = 300
SECOND_SPEND = 200
HOLD, HOLD_USED = 400, 250


@dataclass(frozen=True)
class Catalog:
    """The seeded catalog: what the demo buys, and how many credits each gives."""

    signup: int
    starter: int
    pro: int
    pack: int
    starter_price: str
    pro_price: str
    pack_price: str
    pack_name: str

    def credits(self) -> dict[str, int]:
        return {"signup": self.signup, "starter": self.starter, "pro": self.pro, "pack": self.pack}


@dataclass(frozen=True)
class Balance:
    plan_credits: int
    addon_credits: int
    total_credits: int
    held_credits: int
    available_credits: int
    plan_key: str | None
    subscription_status: str | None


@dataclass(frozen=True)
class Expected:
    plan: int
    addon: int
    status: str | None = None
    outcomes: tuple[str, ...] = ("applied",)
    held: int = 0

    def problems(self, outcome: str, balance: Balance) -> list[str]:
        found = []
        if outcome not in self.outcomes:
            found.append(f"outcome {outcome}, expected {'/'.join(self.outcomes)}")
        if (balance.plan_credits, balance.addon_credits) != (self.plan, self.addon):
            found.append(
                f"plan/add-on {balance.plan_credits}/{balance.addon_credits},"
                f" expected {self.plan}/{self.addon}"
            )
        if balance.held_credits != self.held:
            found.append(f"held {balance.held_credits}, expected {self.held}")
        if self.status is not None and balance.subscription_status != self.status:
            found.append(f"status {balance.subscription_status}, expected {self.status}")
        return found


@dataclass
class StepResult:
    step: str
    event_type: str
    layout: str
    outcome: str
    balance: Balance
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class Demo:
    """Plays steps against the running stack and records what each one did."""

    def __init__(self, dsn: str, base_url: str, secret: str) -> None:
        self.dsn = dsn
        self.base_url = base_url
        self.secret = secret
        self.results: list[StepResult] = []
        self.user_id: uuid.UUID | None = None

    # -- actions --------------------------------------------------------------

    def sign_up(self, email: str, expected: Expected) -> uuid.UUID:
        """A new row in auth.users, as Supabase Auth writes on sign-up."""
        self.user_id = uuid.uuid4()
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(
                "insert into auth.users (id, aud, role, email)"
                " values (%s, 'authenticated', 'authenticated', %s)",
                (self.user_id, email),
            )
        self.record("sign up (row in auth.users)", "-", "-", "created", expected)
        return self.user_id

    def deliver(self, step: str, event: JSON, expected: Expected) -> None:
        """POST one signed webhook delivery, as Stripe does."""
        body, headers = signed_request(event, self.secret)
        outcome = self.post("/webhooks/stripe", body, headers)
        self.record(step, event["type"], layout_for(event["api_version"]), outcome, expected)

    def spend(self, step: str, amount: int, key: str, expected: Expected) -> None:
        """public.spend_credits, called as the app's backend (service_role) calls it."""
        self.call(step, f"spend_credits({amount})", "spent", expected,
                  "select public.spend_credits(%s, %s, %s, %s)",
                  (self.user_id, amount, key, "demo: generated outreach lines"))  # fmt: skip

    def reserve(self, step: str, amount: int, key: str, expected: Expected) -> None:
        """public.reserve_credits: set credits aside for a job whose cost comes at its end."""
        self.call(step, f"reserve_credits({amount})", "held", expected,
                  "select public.reserve_credits(%s, %s, %s, 900, %s)",
                  (self.user_id, amount, key, "demo: a long generation job"))  # fmt: skip

    def commit(self, step: str, amount: int, key: str, expected: Expected) -> None:
        """public.commit_hold: spend what the job used of its hold, free the rest."""
        self.call(step, f"commit_hold({amount})", "committed", expected,
                  "select public.commit_hold(%s, %s, %s)", (self.user_id, key, amount))  # fmt: skip

    def call(
        self, step: str, label: str, done: str, expected: Expected, sql: str, args: tuple
    ) -> None:
        """A credit function, called as the app's backend (service_role) calls it."""
        outcome = done
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn, conn.transaction():
                conn.execute("set local role service_role")
                conn.execute(sql, args)
        except psycopg.Error as error:
            outcome = f"error {error.sqlstate}: {error.diag.message_primary}"
        self.record(step, label, "-", outcome, expected)

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> str:
        request = urllib.request.Request(
            self.base_url + path, data=body, headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return str(json.loads(response.read())["status"])
        except urllib.error.HTTPError as error:
            return f"HTTP {error.code}: {error.read()[:200].decode(errors='replace')}"
        except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
            return f"no answer: {error}"

    # -- observation -------------------------------------------------------------

    def balance(self) -> Balance:
        """The user's row of public.credit_balances, read as that user (RLS applies)."""
        claims = json.dumps({"sub": str(self.user_id), "role": "authenticated"})
        with (
            psycopg.connect(self.dsn, autocommit=True, row_factory=dict_row) as conn,
            conn.transaction(force_rollback=True),
        ):
            conn.execute("set local role authenticated")
            conn.execute("select set_config('request.jwt.claims', %s, true)", (claims,))
            row = conn.execute(
                "select plan_credits, addon_credits, total_credits, held_credits,"
                " available_credits, plan_key, subscription_status from public.credit_balances"
            ).fetchone()
        if row is None:
            return Balance(0, 0, 0, 0, 0, None, None)
        return Balance(**row)

    def app_events(self) -> list[JSON]:
        """The balance events written for the app's backend (credits.low, .depleted, .granted)."""
        with psycopg.connect(self.dsn, autocommit=True, row_factory=dict_row) as conn:
            return conn.execute(
                "select payload from tally.balance_events where user_id = %s order by id",
                (self.user_id,),
            ).fetchall()

    def record(
        self, step: str, event_type: str, layout: str, outcome: str, expected: Expected
    ) -> None:
        balance = self.balance()
        problems = expected.problems(outcome, balance)
        result = StepResult(step, event_type, layout, outcome, balance, problems)
        self.results.append(result)
        print_row(len(self.results), result)

    def reconciled(self) -> bool:
        with psycopg.connect(self.dsn, autocommit=True, row_factory=dict_row) as conn:
            return not balance_mismatches(conn)


# --------------------------------------------------------------------------
# The lifecycle
# --------------------------------------------------------------------------


def load_catalog(dsn: str) -> Catalog:
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        plans = {
            row["key"]: row
            for row in conn.execute(
                "select key, stripe_price_id, monthly_credits from public.plans"
                " where key in ('starter', 'pro')"
            )
        }
        pack = conn.execute(
            "select key, name, stripe_price_id, credits from public.credit_packs"
            " where active order by credits, key limit 1"
        ).fetchone()
        signup = conn.execute("select signup_credits from tally.settings").fetchone()
    missing = {"starter", "pro"} - plans.keys()
    if missing or pack is None or signup is None:
        raise StackError(f"the seed lacks the demo catalog: plans {missing or 'ok'}, pack {pack}")
    return Catalog(
        signup=signup["signup_credits"],
        starter=plans["starter"]["monthly_credits"],
        pro=plans["pro"]["monthly_credits"],
        pack=pack["credits"],
        starter_price=plans["starter"]["stripe_price_id"],
        pro_price=plans["pro"]["stripe_price_id"],
        pack_price=pack["stripe_price_id"],
        pack_name=pack["name"],
    )


def play(demo: Demo, catalog: Catalog) -> None:
    """One customer, from sign-up to cancellation (numbers: docs/policy.md)."""
    c = catalog
    world = StripeWorld(
        layout="basil",
        prices={
            c.starter_price: PRICES_IN_CENTS["starter"],
            c.pro_price: PRICES_IN_CENTS["pro"],
            c.pack_price: PRICES_IN_CENTS["pack"],
        },
        # Two months ago, so that the last period paid is the current one.
        start=int(time.time()) - 61 * DAY,
        seed="tally-demo",
    )
    user = demo.sign_up("ada@example.test", Expected(c.signup, 0, outcomes=("created",)))
    ada = world.customer(user_id=str(user), email="ada@example.test")

    sub, (created, first_invoice, paid_by, checkout) = world.subscribe(ada, c.starter_price)
    demo.deliver("subscribe to starter: subscription created", created, Expected(c.signup, 0))
    demo.deliver("first invoice paid: plan credits set", first_invoice, Expected(c.starter, 0))
    demo.deliver("which payment paid it (basil)", paid_by, Expected(c.starter, 0))
    demo.deliver("checkout completed (often last)", checkout, Expected(c.starter, 0, "active"))
    left = c.starter - FIRST_SPEND
    demo.spend(
        "spend (plan credits first)",
        FIRST_SPEND,
        "demo-spend-1",
        Expected(left, 0, outcomes=("spent",)),
    )

    renewal_invoice, _paid_by, renewal_update = world.renew(sub)
    demo.deliver("renewal paid: plan credits reset", renewal_invoice, Expected(c.starter, 0))
    demo.deliver(
        "same renewal delivered again",
        renewal_invoice,
        Expected(c.starter, 0, outcomes=("duplicate",)),
    )
    left = c.starter - SECOND_SPEND
    demo.spend(
        "spend in the new period",
        SECOND_SPEND,
        "demo-spend-2",
        Expected(left, 0, outcomes=("spent",)),
    )

    world.layout = "legacy"  # an endpoint pinned to an older API version
    _pack, (pack_paid,) = world.buy_pack(ada, c.pack_price)
    demo.deliver(f"add-on pack paid ({c.pack_name})", pack_paid, Expected(left, c.pack))
    world.layout = "basil"

    # Halfway through the period the customer upgrades; Stripe bills the
    # change at once (proration_behavior=always_invoice). Credits come only
    # from that paid invoice: half the period left pays for half of the
    # difference between the plans.
    world.clock.now = sub.current_period_start + 15 * DAY
    changed, proration_paid, joined = world.change_plan(
        sub, c.pro_price, invoice_now=True, same_second=True
    )
    demo.deliver("upgrade to pro: nothing paid yet", changed, Expected(left, c.pack, "active"))
    upgraded = c.starter + (c.pro - c.starter) // 2 - SECOND_SPEND
    demo.deliver("upgrade's proration invoice paid", proration_paid, Expected(upgraded, c.pack))
    demo.deliver("which payment paid it (basil)", joined, Expected(upgraded, c.pack))
    demo.deliver(
        "late: renewal's update (starter) after upgrade",
        renewal_update,
        Expected(upgraded, c.pack, "active", outcomes=("applied", "duplicate")),
    )

    demo.reserve("hold credits for a long job", HOLD, "demo-job-1",
                 Expected(upgraded, c.pack, outcomes=("held",), held=HOLD))  # fmt: skip
    used = upgraded - HOLD_USED
    demo.commit("job done: commit less than held", HOLD_USED, "demo-job-1",
                Expected(used, c.pack, outcomes=("committed",)))  # fmt: skip

    failed_invoice, now_past_due = world.fail_renewal(sub)
    demo.deliver("next renewal fails", failed_invoice, Expected(used, c.pack))
    demo.deliver("subscription past_due", now_past_due, Expected(used, c.pack, "past_due"))
    retried_invoice, _joined, active_again = world.retry_payment(sub)
    demo.deliver("payment retried and paid: reset", retried_invoice, Expected(c.pro, c.pack))
    demo.deliver("subscription active again", active_again, Expected(c.pro, c.pack, "active"))
    demo.deliver(
        "same payment, new event id",
        world.twin(retried_invoice),
        Expected(c.pro, c.pack, "active", outcomes=("applied", "duplicate")),
    )

    (deleted,) = world.cancel(sub, at_period_end=False)
    demo.deliver("cancelled now: credits kept", deleted, Expected(c.pro, c.pack, "canceled"))


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------

COLUMNS = (
    ("#", 2),
    ("step", 46),
    ("event", 29),
    ("layout", 6),
    ("outcome", 9),
    ("plan", 5),
    ("add-on", 6),
    ("total", 5),
    ("held", 4),
    ("plan key", 8),
    ("status", 8),
    ("check", 5),
)


def print_header() -> None:
    print("  ".join(name.ljust(width) for name, width in COLUMNS))
    print("  ".join("-" * width for _, width in COLUMNS))


def print_row(number: int, result: StepResult) -> None:
    b = result.balance
    cells = (
        str(number),
        result.step,
        result.event_type,
        result.layout,
        result.outcome,
        str(b.plan_credits),
        str(b.addon_credits),
        str(b.total_credits),
        str(b.held_credits),
        b.plan_key or "-",
        b.subscription_status or "-",
        "ok" if result.ok else "FAIL",
    )
    line = "  ".join(cell.ljust(width) for cell, (_, width) in zip(cells, COLUMNS, strict=True))
    print(line.rstrip(), flush=True)
    for problem in result.problems:
        print(f"{'':4}^ {problem}", flush=True)


def print_app_events(rows: list[JSON]) -> None:
    """What the app's backend receives (signed webhooks to APP_WEBHOOK_URL)."""
    print("\nbalance events for the app's backend:")
    for row in rows:
        payload = row["payload"]
        data = payload["data"]
        detail = ", ".join(f"{key} {data[key]}" for key in ("granted", "threshold") if key in data)
        print(
            f"  {payload['type']:<17} available {data['available_credits']:>5}"
            f"  ({data['reason']}{', ' + detail if detail else ''})"
        )


def write_summary(path: Path, catalog: Catalog, demo: Demo, reconciled: bool) -> None:
    steps = [
        {
            "step": r.step,
            "event_type": r.event_type,
            "layout": r.layout,
            "outcome": r.outcome,
            "balance": asdict(r.balance),
            "ok": r.ok,
            "problems": r.problems,
        }
        for r in demo.results
    ]
    summary = {"catalog": catalog.credits(), "steps": steps, "reconciled": reconciled}
    path.write_text(json.dumps(summary, indent=2))


# --------------------------------------------------------------------------
# Running it
# --------------------------------------------------------------------------


@contextmanager
def stack(workdir: Path) -> Iterator[tuple[str, str, str]]:
    """Local Postgres + sidecar; yields (database url, sidecar url, webhook secret)."""
    secret = new_webhook_secret()
    log_path = workdir / "sidecar.log"
    print("starting a local PostgreSQL, applying the stand-in, migrations and seed...")
    with local_database(workdir / "pg") as dsn, log_path.open("w") as log:
        settings = SidecarSettings(database_url=dsn, webhook_secrets=[secret], port=free_port())
        print(f"starting the sidecar on port {settings.port} (log: {log_path})...\n")
        try:
            with running_sidecar(settings, output=log):
                yield dsn, f"http://127.0.0.1:{settings.port}", secret
        except StackError:
            log.flush()
            print(log_path.read_text()[-3000:], file=sys.stderr)
            raise


def run(summary_path: Path | None) -> int:
    with tempfile.TemporaryDirectory(prefix="tally-demo-") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)  # the server's unprivileged user must reach its data dir
        with stack(workdir) as (dsn, base_url, secret):
            catalog = load_catalog(dsn)
            demo = Demo(dsn, base_url, secret)
            print_header()
            play(demo, catalog)
            reconciled = demo.reconciled()
            print_app_events(demo.app_events())
    failed = [r for r in demo.results if not r.ok]
    print(
        f"\n{len(demo.results)} steps, {len(failed)} failed;"
        f" ledger {'reconciles' if reconciled else 'DOES NOT reconcile'} with every balance"
    )
    if summary_path:
        write_summary(summary_path, catalog, demo, reconciled)
    return 0 if not failed and reconciled else 1


def interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="also write the steps and balances here")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, interrupt)  # stop everything on SIGTERM too, like Ctrl-C
    try:
        return run(args.json)
    except KeyboardInterrupt:
        print("\ninterrupted; everything the demo started is stopped", file=sys.stderr)
        return 130
    except (StackError, PostgresUnavailable) as error:
        print(f"demo: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
