"""Fixtures for `tally ops`: the real command against the real database and the Stripe stand-in.

The command runs in the test's event loop (``tally.ops.run``), where the
stand-ins answer; its environment is a plain mapping, as an operator's shell
would hold it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest
from psycopg.types.json import Jsonb

from sidecar.events import normalise, read_envelope
from tally import ops
from tests.sidecar import conftest as sidecar
from tests.sidecar.conftest import SERVICE_ROLE_KEY

# The stand-ins, as the sidecar's tests set them up.
fake_stripe = sidecar.fake_stripe
stripe_base = sidecar.stripe_base
fake_postgrest = sidecar.fake_postgrest
postgrest_url = sidecar.postgrest_url


@dataclass(frozen=True)
class Ran:
    code: int
    out: str
    err: str


RunOps = Callable[..., Awaitable[Ran]]


@pytest.fixture
def ops_env(database_url: str, stripe_base: str) -> dict[str, str]:
    """What an operator sets in development: the database, the key, the stand-in."""
    return {
        "DATABASE_URL": database_url,
        "STRIPE_SECRET_KEY": "sk_test_fake",
        "STRIPE_API_BASE": stripe_base,
        "STRIPE_TIMEOUT": "0.5",
    }


@pytest.fixture
def postgrest_env(ops_env: dict[str, str], postgrest_url: str) -> dict[str, str]:
    """The same, through PostgREST: no direct database connection at all."""
    env = {k: v for k, v in ops_env.items() if k != "DATABASE_URL"}
    return {**env, "SUPABASE_URL": postgrest_url, "SUPABASE_SERVICE_ROLE_KEY": SERVICE_ROLE_KEY}


@pytest.fixture
def run_ops(ops_env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> RunOps:
    async def run(*argv: str, env: dict[str, str] | None = None) -> Ran:
        code = await ops.run(list(argv), ops_env if env is None else env)
        captured = capsys.readouterr()
        return Ran(code, captured.out, captured.err)

    return run


def apply_event(db, event: dict, **reading: object) -> dict:
    """Apply a Stripe event as the webhook would (``reading`` overrides the typed event)."""
    typed = {**normalise(read_envelope(event), key_is_live=False), **reading}
    with db.transaction():
        db.execute("set local role service_role")
        row = db.execute("select public.apply_stripe_event(%s) as r", (Jsonb(typed),)).fetchone()
    return row["r"]


def account(db, user_id) -> tuple[int, int]:
    row = db.execute(
        "select plan_credits, addon_credits from tally.accounts where user_id = %s", (user_id,)
    ).fetchone()
    return row["plan_credits"], row["addon_credits"]


def outcome_of(db, event_id: str) -> str | None:
    row = db.execute(
        "select outcome from tally.stripe_events where event_id = %s", (event_id,)
    ).fetchone()
    return row["outcome"] if row else None
