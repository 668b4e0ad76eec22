"""The demo catalog, read from supabase/seed.sql (its one source), and its Stripe prices.

Credits and price ids come from the seed the database gets; what each price
costs in Stripe (cents) exists only on Stripe's side, so the tests' prices
are defined here, once, and used by every test that needs them.
"""

from __future__ import annotations

import re

from tally.paths import MIGRATIONS, SEED

_ROW = re.compile(r"\('([a-z0-9_-]+)', '[^']*', '([^']+)', (\d+)\)")


def _rows(table: str) -> dict[str, tuple[str, int]]:
    text = SEED.read_text()
    block = text[text.index(f"insert into public.{table}") :].split(";", 1)[0]
    return {key: (price, int(credits)) for key, price, credits in _ROW.findall(block)}


def _signup_credits() -> int:
    catalog = next(MIGRATIONS.glob("*_create_catalog.sql")).read_text()
    seeded = r"insert into tally\.settings \(singleton, signup_credits\) values \(true, (\d+)\)"
    found = re.search(seeded, catalog)
    assert found, "the catalog migration no longer seeds tally.settings as expected"
    return int(found.group(1))


# key -> (Stripe price id, monthly credits / credits)
PLANS: dict[str, tuple[str, int]] = _rows("plans")
PACKS: dict[str, tuple[str, int]] = _rows("credit_packs")
SIGNUP_CREDITS = _signup_credits()

# What each price costs in Stripe, in cents (Checkout's amount_total, the
# charge's amount, the invoice's amount_paid).
PLAN_AMOUNTS: dict[str, int] = {"starter": 900, "pro": 2900}
PACK_AMOUNTS: dict[str, int] = {"pack_500": 500, "pack_2000": 1500}
PRICE_AMOUNTS: dict[str, int] = {
    **{PLANS[key][0]: cents for key, cents in PLAN_AMOUNTS.items()},
    **{PACKS[key][0]: cents for key, cents in PACK_AMOUNTS.items()},
}
