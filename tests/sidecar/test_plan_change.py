"""POST /billing/plan: upgrades now and billed now, downgrades at the period's end."""

from __future__ import annotations

import copy

import pytest

from tests.sidecar.conftest import PLANS, subscribe, user_token

STARTER, _ = PLANS["starter"]
PRO, _ = PLANS["pro"]


async def change(client, user, body, token=None):
    headers = {"Authorization": f"Bearer {token or user_token(user)}"}
    response = await client.post("/billing/plan", json=body, headers=headers)
    return response.status, await response.json()


def writes(stand_in):
    return [r for r in stand_in.requests if r.method == "POST"]


async def test_an_upgrade_takes_effect_at_once_and_is_invoiced_at_once(
    sidecar, fake_stripe, make_user
):
    user = make_user()
    _, sub = await subscribe(sidecar, fake_stripe, user, STARTER)
    status, answer = await change(sidecar, user, {"plan": "pro"})
    assert (status, answer) == (200, {"status": "upgraded", "plan": "pro"})
    (update,) = writes(fake_stripe)
    assert update.path == f"/v1/subscriptions/{sub.id}"
    assert update.form == {
        "items[0][id]": sub.item_id,
        "items[0][price]": PRO,
        "proration_behavior": "always_invoice",
        "payment_behavior": "pending_if_incomplete",
    }
    assert update.idempotency_key == f"tally-plan-{sub.id}-{PRO}-{sub.current_period_end}"
    assert fake_stripe.get("subscription", sub.id)["items"]["data"][0]["price"]["id"] == PRO


async def test_a_downgrade_is_scheduled_for_the_end_of_the_period(sidecar, fake_stripe, make_user):
    user = make_user()
    _, sub = await subscribe(sidecar, fake_stripe, user, PRO)
    status, answer = await change(sidecar, user, {"plan": "starter"})
    assert (status, answer) == (
        200,
        {"status": "scheduled", "plan": "starter", "effective_at": sub.current_period_end},
    )
    create, update = writes(fake_stripe)
    assert (create.path, create.form) == (
        "/v1/subscription_schedules",
        {"from_subscription": sub.id},
    )
    schedule_id = fake_stripe.get("subscription", sub.id)["schedule"]
    assert update.path == f"/v1/subscription_schedules/{schedule_id}"
    assert update.form == {
        "end_behavior": "release",
        "proration_behavior": "none",
        "phases[0][items][0][price]": PRO,
        "phases[0][items][0][quantity]": "1",
        "phases[0][start_date]": str(sub.current_period_start),
        "phases[0][end_date]": str(sub.current_period_end),
        "phases[1][items][0][price]": STARTER,
        "phases[1][items][0][quantity]": "1",
    }
    phases = fake_stripe.get("subscription_schedule", schedule_id)["phases"]
    assert [p["items"][0]["price"] for p in phases] == [PRO, STARTER]
    # Nothing changes before the period ends.
    assert fake_stripe.get("subscription", sub.id)["items"]["data"][0]["price"]["id"] == PRO


async def test_asking_twice_for_a_downgrade_schedules_it_once(sidecar, fake_stripe, make_user):
    user = make_user()
    await subscribe(sidecar, fake_stripe, user, PRO)
    await change(sidecar, user, {"plan": "starter"})
    status, answer = await change(sidecar, user, {"plan": "starter"})
    assert (status, answer["status"]) == (200, "scheduled")
    assert len(fake_stripe.all("subscription_schedule")) == 1


async def test_the_current_plan_is_a_no_op_that_drops_a_scheduled_downgrade(
    sidecar, fake_stripe, make_user
):
    user = make_user()
    _, sub = await subscribe(sidecar, fake_stripe, user, PRO)
    assert (await change(sidecar, user, {"plan": "pro"}))[1] == {
        "status": "unchanged",
        "plan": "pro",
    }
    assert writes(fake_stripe) == []
    await change(sidecar, user, {"plan": "starter"})
    status, answer = await change(sidecar, user, {"plan": "pro"})
    assert (status, answer["status"]) == (200, "unchanged")
    (schedule,) = fake_stripe.all("subscription_schedule")
    assert schedule["status"] == "released"
    assert fake_stripe.get("subscription", sub.id)["schedule"] is None


async def test_an_upgrade_after_a_scheduled_downgrade_drops_the_schedule_first(
    sidecar, fake_stripe, db, make_user
):
    db.execute(
        "insert into public.plans (key, name, stripe_price_id, monthly_credits)"
        " values ('basic', 'Basic', 'price_basic_fake', 500)"
    )
    fake_stripe.add_price("price_basic_fake", product="prod_basic", unit_amount=900)
    user = make_user()
    _, sub = await subscribe(sidecar, fake_stripe, user, STARTER)
    assert (await change(sidecar, user, {"plan": "basic"}))[1]["status"] == "scheduled"
    schedule_id = fake_stripe.get("subscription", sub.id)["schedule"]
    status, answer = await change(sidecar, user, {"plan": "pro"})
    assert (status, answer["status"]) == (200, "upgraded")
    release, update = writes(fake_stripe)[-2:]
    assert release.path == f"/v1/subscription_schedules/{schedule_id}/release"
    assert (update.path, update.form["items[0][price]"]) == (f"/v1/subscriptions/{sub.id}", PRO)
    assert fake_stripe.get("subscription", sub.id)["schedule"] is None


def add_items_before_the_plan(stand_in, sub_id):
    """A metered item and a licensed add-on (quantity 3), listed before the plan's item."""
    stored = stand_in.get("subscription", sub_id)
    plan_item = stored["items"]["data"][0]
    metered = copy.deepcopy(plan_item)
    metered["id"] = "si_metered_first"
    metered["price"] = {**copy.deepcopy(plan_item["price"]), "id": "price_api_calls_fake"}
    metered["price"]["recurring"] = {"interval": "month", "usage_type": "metered"}
    metered.pop("quantity", None)
    seats = copy.deepcopy(plan_item)
    seats["id"] = "si_seats"
    seats["price"] = {**copy.deepcopy(plan_item["price"]), "id": "price_seats_fake"}
    seats["price"]["recurring"] = {"interval": "month", "usage_type": "licensed"}
    seats["quantity"] = 3
    stored["items"]["data"][:0] = [metered, seats]
    return plan_item["id"]


async def test_an_upgrade_changes_the_plan_item_and_leaves_other_items_alone(
    sidecar, fake_stripe, make_user
):
    user = make_user()
    _, sub = await subscribe(sidecar, fake_stripe, user, STARTER)
    plan_item = add_items_before_the_plan(fake_stripe, sub.id)
    status, answer = await change(sidecar, user, {"plan": "pro"})
    assert (status, answer) == (200, {"status": "upgraded", "plan": "pro"})
    (update,) = writes(fake_stripe)
    assert (update.form["items[0][id]"], update.form["items[0][price]"]) == (plan_item, PRO)
    assert "items[1][id]" not in update.form
    prices = [i["price"]["id"] for i in fake_stripe.get("subscription", sub.id)["items"]["data"]]
    assert prices == ["price_api_calls_fake", "price_seats_fake", PRO]


async def test_a_scheduled_downgrade_keeps_the_other_items_in_both_phases(
    sidecar, fake_stripe, make_user
):
    user = make_user()
    _, sub = await subscribe(sidecar, fake_stripe, user, PRO)
    add_items_before_the_plan(fake_stripe, sub.id)
    status, answer = await change(sidecar, user, {"plan": "starter"})
    assert (status, answer["status"]) == (200, "scheduled")
    _, update = writes(fake_stripe)
    for phase, price in ((0, PRO), (1, STARTER)):
        assert {
            k: v for k, v in update.form.items() if k.startswith(f"phases[{phase}][items]")
        } == {
            f"phases[{phase}][items][0][price]": price,
            f"phases[{phase}][items][0][quantity]": "1",
            # A metered price takes no quantity; the add-on keeps its own.
            f"phases[{phase}][items][1][price]": "price_api_calls_fake",
            f"phases[{phase}][items][2][price]": "price_seats_fake",
            f"phases[{phase}][items][2][quantity]": "3",
        }


async def test_the_plan_item_decides_unchanged_whatever_comes_first(
    sidecar, fake_stripe, make_user
):
    user = make_user()
    _, sub = await subscribe(sidecar, fake_stripe, user, PRO)
    add_items_before_the_plan(fake_stripe, sub.id)
    assert (await change(sidecar, user, {"plan": "pro"}))[1]["status"] == "unchanged"
    assert writes(fake_stripe) == []


async def test_without_an_active_subscription_it_is_409(sidecar, fake_stripe, make_user):
    status, answer = await change(sidecar, make_user(), {"plan": "pro"})
    assert status == 409
    assert "no active subscription" in answer["error"]
    assert fake_stripe.requests == []


@pytest.mark.parametrize("body", [{"plan": "platinum"}, {"pack": "pack_500"}, {}, ["pro"]])
async def test_an_unknown_plan_or_a_malformed_body_is_400(sidecar, fake_stripe, make_user, body):
    user = make_user()
    await subscribe(sidecar, fake_stripe, user, STARTER)
    assert (await change(sidecar, user, body))[0] == 400
    assert writes(fake_stripe) == []


async def test_an_inactive_plan_is_400(sidecar, fake_stripe, db, make_user):
    user = make_user()
    await subscribe(sidecar, fake_stripe, user, STARTER)
    db.execute("update public.plans set active = false where key = 'pro'")
    assert await change(sidecar, user, {"plan": "pro"}) == (
        400,
        {"error": "unknown or inactive plan"},
    )


async def test_without_a_valid_token_it_is_401(sidecar, make_user):
    response = await sidecar.post("/billing/plan", json={"plan": "pro"})
    assert response.status == 401
    user = make_user()
    status, _ = await change(sidecar, user, {"plan": "pro"}, token=user_token(user, role="anon"))
    assert status == 401


async def test_past_the_rate_limit_it_is_429(make_sidecar, make_user):
    client = await make_sidecar(billing_rate_limit=1)
    user = make_user()
    await change(client, user, {"plan": "pro"})
    assert (await change(client, user, {"plan": "pro"}))[0] == 429


async def test_a_stripe_failure_is_502_after_retries(sidecar, fake_stripe, make_user):
    user = make_user()
    _, sub = await subscribe(sidecar, fake_stripe, user, STARTER)
    fake_stripe.fail_next(10, "500", path=f"/v1/subscriptions/{sub.id}", method="POST")
    status, answer = await change(sidecar, user, {"plan": "pro"})
    assert (status, answer) == (502, {"error": "Stripe could not change the subscription's plan"})
    assert len(fake_stripe.of_path(f"/v1/subscriptions/{sub.id}")) >= 2  # retried


async def test_a_transient_stripe_failure_is_retried_to_success(sidecar, fake_stripe, make_user):
    user = make_user()
    _, sub = await subscribe(sidecar, fake_stripe, user, STARTER)
    fake_stripe.fail_next(1, "drop", path=f"/v1/subscriptions/{sub.id}", method="POST")
    status, _ = await change(sidecar, user, {"plan": "pro"})
    assert status == 200
    first, retry = fake_stripe.of_path(f"/v1/subscriptions/{sub.id}")
    assert first.idempotency_key == retry.idempotency_key
