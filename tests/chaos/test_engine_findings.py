"""What the chaos runs found against the contract, kept as regression tests.

Each was a failure of the engine, found by the state machines, the large run
or the hostile input, reduced to its smallest form (docs/reliability.md,
"Findings"), and fixed in the engine.
"""

from __future__ import annotations

import uuid

from psycopg.types.json import Jsonb

from tally.stripe_events import StripeWorld
from tests.chaos.conftest import PRICES
from tests.simulation.database import create_users, read_states
from tests.simulation.typed import to_typed


def apply(service, raw: dict) -> dict:
    return service.execute(
        "select public.apply_stripe_event(%s)", (Jsonb(to_typed(raw)),)
    ).fetchone()[0]


def test_a_proration_invoice_arriving_first_is_recorded(admin, service):
    user = str(uuid.uuid4())
    create_users(admin, [user])
    world = StripeWorld("basil", prices=PRICES.amounts, seed=user)
    sub, _ = world.subscribe(world.customer(user_id=user), "price_chaos_basic")
    changed = world.change_plan(sub, "price_chaos_pro", invoice_now=True)
    proration = next(event for event in changed if event["type"] == "invoice.paid")
    assert apply(service, proration)["status"] in {"applied", "parked", "rejected"}


def test_a_reversed_spend_does_not_bring_back_refunded_credits(admin, service):
    user = str(uuid.uuid4())
    create_users(admin, [user])
    world = StripeWorld("basil", prices=PRICES.amounts, seed=user)
    pack, bought = world.buy_pack(world.customer(user_id=user), "price_chaos_pack_s")
    for event in bought:
        apply(service, event)
    service.execute("select public.spend_credits(%s::uuid, 1000, 'job-1')", (user,))
    for event in world.refund(pack, pack.amount // 2):  # half the pack: 250 credits
        apply(service, event)
    service.execute("select public.reverse_spend('job-1')")
    # Without the spend the user would hold 500 - 250 add-on credits; never more with it.
    assert read_states(admin, [user])[user].addon_credits <= 250


def test_a_line_without_a_period_end_pays_no_period(admin, service):
    user = str(uuid.uuid4())
    create_users(admin, [user])
    world = StripeWorld("basil", prices=PRICES.amounts, seed=user)
    _, events = world.subscribe(world.customer(user_id=user), "price_chaos_basic")
    paid = next(event for event in events if event["type"] == "invoice.paid")
    paid["data"]["object"]["lines"]["data"][0]["period"]["end"] = None
    typed = to_typed(paid)
    assert typed["invoice"]["period_end"] is None
    apply(service, paid)
    assert read_states(admin, [user])[user].plan_credits == 500
