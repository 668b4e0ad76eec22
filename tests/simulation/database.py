"""The simulation's view of a tally database: catalog, users, final states, invariants.

Reads only what the contract names (public.plans, public.credit_packs,
the account balances and the ledger) plus tally.settings for the signup
grant, so a check never depends on how the engine computes things.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg

from tests.simulation.model import Catalog, UserState


@dataclass(frozen=True)
class CatalogEntry:
    key: str
    price_id: str
    credits: int
    amount: int  # what Stripe charges for it, in cents


# The simulation's own catalog, next to whatever the seed holds.
CHAOS_PLANS = (
    CatalogEntry("chaos_basic", "price_chaos_basic", 1000, 1900),
    CatalogEntry("chaos_pro", "price_chaos_pro", 5000, 4900),
    CatalogEntry("chaos_team", "price_chaos_team", 20000, 14900),
)
CHAOS_PACKS = (
    CatalogEntry("chaos_pack_s", "price_chaos_pack_s", 500, 500),
    CatalogEntry("chaos_pack_l", "price_chaos_pack_l", 3000, 2700),
)


def install_catalog(conn: psycopg.Connection) -> None:
    """Add the simulation's plans and packs (idempotent)."""
    for entry in CHAOS_PLANS:
        conn.execute(
            "insert into public.plans (key, name, stripe_price_id, monthly_credits)"
            " values (%s, %s, %s, %s) on conflict (key) do nothing",
            (entry.key, entry.key.replace("_", " "), entry.price_id, entry.credits),
        )
    for entry in CHAOS_PACKS:
        conn.execute(
            "insert into public.credit_packs (key, name, stripe_price_id, credits)"
            " values (%s, %s, %s, %s) on conflict (key) do nothing",
            (entry.key, entry.key.replace("_", " "), entry.price_id, entry.credits),
        )


def read_catalog(conn: psycopg.Connection) -> Catalog:
    plans = dict(conn.execute("select stripe_price_id, monthly_credits from public.plans"))
    packs = dict(conn.execute("select stripe_price_id, credits from public.credit_packs"))
    (signup,) = conn.execute("select signup_credits from tally.settings").fetchone()
    return Catalog(plans=plans, packs=packs, signup_credits=signup)


def create_users(conn: psycopg.Connection, user_ids: Iterable[str]) -> None:
    """Sign users up as Supabase Auth does (the engine grants the signup credits)."""
    with conn.cursor() as cur:
        cur.executemany(
            "insert into auth.users (id, aud, role, email)"
            " values (%s, 'authenticated', 'authenticated', %s)",
            [(user_id, f"{user_id}@chaos.test") for user_id in user_ids],
        )


def read_states(conn: psycopg.Connection, user_ids: Iterable[str]) -> dict[str, UserState]:
    """Each user's balance parts and subscription status, from public.credit_balances."""
    rows = conn.execute(
        "select user_id::text, plan_credits, addon_credits, subscription_status"
        " from public.credit_balances where user_id = any(%s::uuid[])",
        (list(user_ids),),
    ).fetchall()
    return {row[0]: UserState(row[1], row[2], row[3]) for row in rows}


@dataclass(frozen=True)
class Balance:
    """A user's row of public.credit_balances, as the app reads it."""

    plan_credits: int
    addon_credits: int
    held_credits: int
    available_credits: int
    subscription_status: str | None

    @property
    def total_credits(self) -> int:
        return self.plan_credits + self.addon_credits


def read_balances(conn: psycopg.Connection, user_ids: Iterable[str]) -> dict[str, Balance]:
    rows = conn.execute(
        "select user_id::text, plan_credits, addon_credits, held_credits, available_credits,"
        " subscription_status from public.credit_balances where user_id = any(%s::uuid[])",
        (list(user_ids),),
    ).fetchall()
    return {row[0]: Balance(*row[1:]) for row in rows}


def comparable(states: Mapping[str, UserState]) -> dict[str, tuple[int, int, str | None]]:
    """The parts of a state the engine must reproduce exactly."""
    return {
        user: (s.plan_credits, s.addon_credits, s.subscription_status) for user, s in states.items()
    }


def differences(
    expected: Mapping[str, UserState], actual: Mapping[str, UserState]
) -> dict[str, tuple[Any, Any]]:
    want, got = comparable(expected), comparable(actual)
    return {
        user: (want.get(user), got.get(user))
        for user in sorted(set(want) | set(got))
        if want.get(user) != got.get(user)
    }


@dataclass(frozen=True)
class PaidFacts:
    """What the delivered events actually paid for, per user (from typed events)."""

    periods: Mapping[str, set[tuple[str, int]]]  # user -> {(subscription, period start)}
    sessions: Mapping[str, set[str]]  # user -> {Checkout Session}
    session_credits: Mapping[str, int]  # Checkout Session -> pack credits


def paid_facts(
    events: Iterable[Mapping[str, Any]], catalog: Catalog, owner_of: Mapping[str, str]
) -> PaidFacts:
    """Paid periods and packs named by the events; `owner_of` maps customer -> user."""
    periods: dict[str, set[tuple[str, int]]] = defaultdict(set)
    sessions: dict[str, set[str]] = defaultdict(set)
    credits: dict[str, int] = {}
    for event in events:
        invoice = event.get("invoice")
        if event["type"] == "invoice.paid" and invoice and invoice.get("status") == "paid":
            user = owner_of.get(invoice.get("customer_id") or "")
            for start in _period_starts(invoice, catalog):
                if user:
                    periods[user].add((invoice["subscription_id"], start))
        session = event.get("checkout_session")
        if session and session.get("mode") == "payment":
            paid = event["type"] == "checkout.session.async_payment_succeeded" or (
                event["type"] == "checkout.session.completed"
                and session.get("payment_status") == "paid"
            )
            price = session.get("metadata_price_id")
            user = owner_of.get(session.get("customer_id") or "")
            if paid and user and price in catalog.packs:
                sessions[user].add(session["id"])
                credits[session["id"]] = catalog.packs[price]
    return PaidFacts(periods, sessions, credits)


def _period_starts(invoice: Mapping[str, Any], catalog: Catalog) -> set[int]:
    """Starts of the periods an invoice's plan lines (catalog prices, not prorations) bill."""
    return {
        line["period_start"]
        for line in invoice.get("lines") or ()
        if line.get("price_id") in catalog.plans
        and not line.get("is_proration")
        and line.get("period_start") is not None
    }


def invariant_violations(
    conn: psycopg.Connection,
    facts: PaidFacts | None = None,
    *,
    users: Iterable[str] | None = None,
) -> list[str]:
    """Every broken invariant, described; empty when all hold.

    Balances equal their ledger sums and are never negative; live holds never
    set aside more than the balance; each period and each pack is granted at
    most once; with `facts`, no user got more period
    grants or pack credits than their paid events allow. `users` limits the
    checks to those users (None: everyone).
    """
    scope = None if users is None else list(users)
    only = "(%(users)s::uuid[] is null or user_id = any(%(users)s::uuid[]))"
    params = {"users": scope}
    problems = [
        f"user {row[0]}: balance {row[1]}/{row[2]} but ledger sums {row[3]}/{row[4]}"
        for row in conn.execute(
            f"""
            select a.user_id, a.plan_credits, a.addon_credits,
                   coalesce(sum(l.plan_delta), 0), coalesce(sum(l.addon_delta), 0)
              from tally.accounts a left join tally.ledger_entries l using (user_id)
             where {only.replace("user_id", "a.user_id")}
             group by a.user_id
            having a.plan_credits <> coalesce(sum(l.plan_delta), 0)
                or a.addon_credits <> coalesce(sum(l.addon_delta), 0)
                or a.plan_credits < 0 or a.addon_credits < 0
            """,
            params,
        )
    ]
    problems += [
        f"Checkout Session {row[0]} granted {row[1]} times"
        for row in conn.execute(
            "select checkout_session_id, count(*) from tally.ledger_entries"
            f" where kind = 'addon_purchase' and {only}"
            " group by checkout_session_id having count(*) > 1",
            params,
        )
    ]
    problems += [
        f"period {row[0]} of user {row[1]} granted {row[2]} times"
        for row in conn.execute(
            "select business_key, user_id, count(*) from tally.ledger_entries"
            f" where kind = 'subscription_period' and {only}"
            " group by business_key, user_id having count(*) > 1",
            params,
        )
    ]
    problems += [
        f"user {row[0]} has a negative balance after ledger entry {row[1]}"
        for row in conn.execute(
            "select user_id, id from tally.ledger_entries"
            f" where (plan_after < 0 or addon_after < 0) and {only}",
            params,
        )
    ]
    problems += [
        f"user {row[0]}: {row[1]} credits held but a balance of {row[2]}"
        for row in conn.execute(
            "select a.user_id, sum(h.amount), a.plan_credits + a.addon_credits"
            " from tally.holds h join tally.accounts a using (user_id)"
            " where h.status = 'held' and h.expires_at > now()"
            f" and {only.replace('user_id', 'a.user_id')}"
            " group by a.user_id, a.plan_credits, a.addon_credits"
            " having sum(h.amount) > a.plan_credits + a.addon_credits",
            params,
        )
    ]
    if facts is not None:
        problems += _grants_beyond_payments(conn, facts, params, only)
    return problems


def _grants_beyond_payments(
    conn: psycopg.Connection, facts: PaidFacts, params: dict[str, Any], only: str
) -> list[str]:
    problems = []
    for user, periods, packs in conn.execute(
        f"""
        select user_id::text,
               count(*) filter (where kind = 'subscription_period'),
               array_remove(array_agg(checkout_session_id)
                            filter (where kind = 'addon_purchase'), null)
          from tally.ledger_entries where {only} group by user_id
        """,
        params,
    ):
        if periods > len(facts.periods.get(user, ())):
            problems.append(
                f"user {user}: {periods} period grants for "
                f"{len(facts.periods.get(user, ()))} paid periods"
            )
        unpaid = set(packs or ()) - facts.sessions.get(user, set())
        if unpaid:
            problems.append(f"user {user}: pack credits for unpaid sessions {sorted(unpaid)}")
    for session, granted in conn.execute(
        "select checkout_session_id, sum(addon_delta) from tally.ledger_entries"
        f" where kind = 'addon_purchase' and {only} group by checkout_session_id",
        params,
    ):
        if granted > facts.session_credits.get(session, 0):
            problems.append(f"Checkout Session {session}: {granted} credits granted")
    return problems
