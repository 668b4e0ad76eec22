"""POST /billing/checkout and /billing/portal against a fake Stripe API."""

from __future__ import annotations

import asyncio
import logging
import uuid

import jwt
import pytest

from sidecar.context import CONFIG
from sidecar.observability import JsonFormatter
from sidecar.stripe_api import STRIPE_API_VERSION
from tally import stripe_events as se
from tests.sidecar.conftest import (
    JWT_SECRET,
    PACKS,
    PLANS,
    deliver_all,
    subscribe,
    user_token,
    world,
)

STARTER_PRICE, _ = PLANS["starter"]
PACK_PRICE, _ = PACKS["pack_500"]


async def checkout(client, user, body, token=None):
    headers = {"Authorization": f"Bearer {token or user_token(user)}"}
    response = await client.post("/billing/checkout", json=body, headers=headers)
    return response.status, await response.json()


async def portal(client, user, token=None):
    headers = {"Authorization": f"Bearer {token or user_token(user)}"}
    response = await client.post("/billing/portal", headers=headers)
    return response.status, await response.json()


def only(requests):
    assert len(requests) == 1, requests
    return requests[0]


# -- checkout ------------------------------------------------------------------------------


async def test_plan_checkout_answers_the_session_url(sidecar, make_user):
    status, answer = await checkout(sidecar, make_user(), {"plan": "starter"})
    assert status == 200
    assert answer["url"].startswith("https://checkout.stripe.com/")


async def test_plan_checkout_carries_the_user_everywhere(sidecar, fake_stripe, make_user):
    user = str(make_user())
    await checkout(sidecar, user, {"plan": "starter"})
    form = only(fake_stripe.of_path("/v1/checkout/sessions")).form
    assert form["mode"] == "subscription"
    assert form["client_reference_id"] == user
    assert form["metadata[user_id]"] == user
    assert form["metadata[price_id]"] == STARTER_PRICE
    assert form["subscription_data[metadata][user_id]"] == user
    assert form["line_items[0][price]"] == STARTER_PRICE
    assert "payment_intent_data[metadata][user_id]" not in form


async def test_pack_checkout_is_a_payment_with_user_on_the_payment_intent(
    sidecar, fake_stripe, make_user
):
    user = str(make_user())
    status, _ = await checkout(sidecar, user, {"pack": "pack_500"})
    form = only(fake_stripe.of_path("/v1/checkout/sessions")).form
    assert status == 200
    assert form["mode"] == "payment"
    assert form["metadata[price_id]"] == PACK_PRICE
    assert form["payment_intent_data[metadata][user_id]"] == user
    assert "subscription_data[metadata][user_id]" not in form


async def test_redirect_urls_come_from_app_base_url(sidecar, fake_stripe, make_user):
    await checkout(sidecar, make_user(), {"pack": "pack_500"})
    form = only(fake_stripe.of_path("/v1/checkout/sessions")).form
    assert form["success_url"].startswith("https://app.example.com/billing/success")
    assert form["cancel_url"] == "https://app.example.com/billing/cancel"


async def test_requests_use_the_pinned_api_version_and_idempotency_keys(
    sidecar, fake_stripe, make_user
):
    user = str(make_user())
    await checkout(sidecar, user, {"pack": "pack_500"})
    customer = only(fake_stripe.of_path("/v1/customers"))
    session = only(fake_stripe.of_path("/v1/checkout/sessions"))
    assert {r.stripe_version for r in fake_stripe.requests} == {STRIPE_API_VERSION}
    assert customer.idempotency_key == f"tally-customer-{user}"
    assert session.idempotency_key.startswith(f"tally-checkout-{user}-")
    assert customer.authorization == "Bearer sk_test_fake"


async def test_creates_the_customer_once_and_stores_the_link(sidecar, fake_stripe, db, make_user):
    user = make_user()
    await checkout(sidecar, user, {"pack": "pack_500"})
    await checkout(sidecar, user, {"pack": "pack_2000"})
    created = only(fake_stripe.of_path("/v1/customers"))
    assert created.form["metadata[user_id]"] == str(user)
    profile = db.execute("select public.get_billing_profile(%s) as p", (user,)).fetchone()["p"]
    sessions = fake_stripe.of_path("/v1/checkout/sessions")
    assert {s.form["customer"] for s in sessions} == {profile["customer_id"]}


async def test_unknown_key_is_400(sidecar, fake_stripe, make_user):
    status, answer = await checkout(sidecar, make_user(), {"plan": "platinum"})
    assert (status, answer["error"]) == (400, "unknown or inactive plan")
    assert fake_stripe.requests == []


async def test_inactive_pack_is_400(sidecar, db, make_user):
    db.execute("update public.credit_packs set active = false where key = 'pack_2000'")
    status, answer = await checkout(sidecar, make_user(), {"pack": "pack_2000"})
    assert (status, answer["error"]) == (400, "unknown or inactive pack")


@pytest.mark.parametrize(
    "body",
    [{}, {"plan": "starter", "pack": "pack_500"}, {"plan": 7}, {"user_id": "x"}, ["plan"], "plan"],
)
async def test_malformed_body_is_400(sidecar, make_user, body):
    status, _ = await checkout(sidecar, make_user(), body)
    assert status == 400


async def test_non_json_body_is_400(sidecar, make_user):
    headers = {"Authorization": f"Bearer {user_token(make_user())}"}
    response = await sidecar.post("/billing/checkout", data=b"\xff\xfe", headers=headers)
    assert response.status == 400


async def test_second_subscription_is_409(sidecar, fake_stripe, make_user):
    user = make_user()
    await subscribe(sidecar, fake_stripe, user, STARTER_PRICE)
    status, answer = await checkout(sidecar, user, {"plan": "pro"})
    assert status == 409
    assert "portal" in answer["error"]
    assert fake_stripe.of_path("/v1/checkout/sessions") == []


async def paid_before_its_webhooks(stand_in, status="active"):
    """Stripe holds the user's paid plan session and subscription; no webhook arrived yet."""
    (session,) = stand_in.all("checkout.session")
    w = world()
    sub, _ = w.subscribe(w.customer(), STARTER_PRICE)
    stored = {**w.subscription_object(sub), "customer": session["customer"], "status": status}
    stand_in.add(stored)
    session.update(status="complete", payment_status="paid", subscription=stored["id"], url=None)
    return stored


async def test_a_paid_plan_whose_webhooks_are_not_in_yet_makes_another_plan_409(
    sidecar, fake_stripe, make_user
):
    user = make_user()
    assert (await checkout(sidecar, user, {"plan": "starter"}))[0] == 200
    await paid_before_its_webhooks(fake_stripe)
    status, answer = await checkout(sidecar, user, {"plan": "pro"})
    assert status == 409 and "already subscribed" in answer["error"]
    (listing,) = fake_stripe.of_path("/v1/subscriptions", method="GET")
    assert listing.form["status"] == "all"
    assert len(fake_stripe.all("checkout.session")) == 1  # no second session to pay


async def test_a_customer_whose_subscription_is_over_may_subscribe_again(
    sidecar, fake_stripe, make_user
):
    user = make_user()
    assert (await checkout(sidecar, user, {"plan": "starter"}))[0] == 200
    await paid_before_its_webhooks(fake_stripe, status="canceled")
    status, answer = await checkout(sidecar, user, {"plan": "pro"})
    assert status == 200 and answer["url"]


async def test_a_subscriber_may_still_buy_a_pack(sidecar, fake_stripe, make_user):
    user = make_user()
    await subscribe(sidecar, fake_stripe, user, STARTER_PRICE)
    status, _ = await checkout(sidecar, user, {"pack": "pack_500"})
    assert status == 200


async def test_stripe_500_is_502_with_a_short_message(sidecar, fake_stripe, make_user):
    fake_stripe.fail_with = 500
    status, answer = await checkout(sidecar, make_user(), {"pack": "pack_500"})
    assert (status, answer) == (502, {"error": "Stripe could not create the customer"})


async def test_stripe_timeout_is_502(sidecar, fake_stripe, make_user):
    fake_stripe.hang = True
    status, answer = await checkout(sidecar, make_user(), {"pack": "pack_500"})
    assert status == 502
    assert "Stripe" in answer["error"]


async def test_stripe_failure_on_session_keeps_the_customer_link(
    sidecar, fake_stripe, db, make_user
):
    user = make_user()
    await checkout(sidecar, user, {"pack": "pack_2000"})
    fake_stripe.fail_next(5, "500", path="/v1/checkout/sessions", method="POST")
    status, answer = await checkout(sidecar, user, {"pack": "pack_500"})
    assert (status, answer["error"]) == (502, "Stripe could not create the Checkout Session")
    profile = db.execute("select public.get_billing_profile(%s) as p", (user,)).fetchone()["p"]
    failed_session = fake_stripe.of_path("/v1/checkout/sessions")[-1]
    assert failed_session.form["customer"] == profile["customer_id"]
    assert len(fake_stripe.of_path("/v1/customers")) == 1


# -- tokens ------------------------------------------------------------------------------


async def test_missing_token_is_401(sidecar):
    response = await sidecar.post("/billing/checkout", json={"plan": "starter"})
    assert (response.status, await response.json()) == (401, {"error": "missing bearer token"})


@pytest.mark.parametrize(
    ("token_of", "reason"),
    [
        (lambda u: user_token(u, expires_in=-60), "token expired"),
        (lambda u: user_token(u, secret="another-secret-of-at-least-32-chars!"), "invalid token"),
        (lambda u: user_token(u, role="anon"), "token is not for a signed-in user"),
        (lambda u: user_token(u, aud="somebody-else"), "invalid token"),
        (lambda u: "not.a.jwt", "malformed token"),
        (lambda u: user_token("not-a-uuid"), "token subject is not a user id"),
    ],
)
async def test_bad_tokens_are_401(sidecar, fake_stripe, make_user, token_of, reason):
    user = make_user()
    status, answer = await checkout(sidecar, user, {"plan": "starter"}, token=token_of(user))
    assert (status, answer["error"]) == (401, reason)
    assert fake_stripe.requests == []


async def test_token_of_a_deleted_user_is_401(sidecar):
    status, answer = await checkout(sidecar, uuid.uuid4(), {"plan": "starter"})
    assert (status, answer["error"]) == (401, "user does not exist")


async def test_unsigned_token_is_401(sidecar, make_user):
    user = make_user()
    token = jwt.encode({"sub": str(user), "role": "authenticated"}, None, algorithm="none")
    status, answer = await checkout(sidecar, user, {"plan": "starter"}, token=token)
    assert (status, answer["error"]) == (401, "token algorithm not accepted")


# -- portal --------------------------------------------------------------------------------


async def test_portal_without_customer_is_404(sidecar, fake_stripe, make_user):
    status, _ = await portal(sidecar, make_user())
    assert status == 404
    assert fake_stripe.requests == []


async def test_portal_answers_the_session_url_for_the_users_customer(
    sidecar, fake_stripe, make_user
):
    user = make_user()
    await checkout(sidecar, user, {"pack": "pack_500"})
    status, answer = await portal(sidecar, user)
    request = only(fake_stripe.of_path("/v1/billing_portal/sessions"))
    customer = only(fake_stripe.of_path("/v1/checkout/sessions")).form["customer"]
    assert status == 200
    assert answer["url"].startswith("https://billing.stripe.com/")
    assert request.form == {"customer": customer, "return_url": "https://app.example.com/billing"}


async def test_portal_stripe_failure_is_502(sidecar, fake_stripe, make_user):
    user = make_user()
    await checkout(sidecar, user, {"pack": "pack_500"})
    fake_stripe.fail_with = 503
    status, _ = await portal(sidecar, user)
    assert status == 502


async def test_billing_works_over_postgrest(postgrest_sidecar, fake_postgrest, make_user):
    user = make_user()
    # SUPABASE_URL is the PostgREST stand-in's, so tokens must name it as issuer.
    token = user_token(user, iss=postgrest_sidecar.app[CONFIG].token_issuer)
    status, _ = await checkout(postgrest_sidecar, user, {"pack": "pack_500"}, token=token)
    assert status == 200
    assert (await portal(postgrest_sidecar, user, token=token))[0] == 200
    called = {name for name, _ in fake_postgrest.calls}
    assert {"get_billing_profile", "credit_packs", "link_stripe_customer"} <= called


async def test_stripe_failures_are_logged_with_stripes_request_id(
    sidecar, fake_stripe, make_user, caplog
):
    fake_stripe.fail_with = 400  # not retried: the answer is Stripe's error itself
    with caplog.at_level(logging.WARNING, logger="sidecar"):
        await checkout(sidecar, make_user(), {"pack": "pack_500"})
    (record,) = [r for r in caplog.records if r.getMessage() == "stripe call failed"]
    assert record.stripe_request_id == "req_fake_failure"
    assert record.http_status == 400
    assert "sk_test_fake" not in JsonFormatter().format(record)


# -- browsers ------------------------------------------------------------------------------


async def test_preflight_from_the_app_origin_is_granted(sidecar):
    response = await sidecar.options(
        "/billing/checkout",
        headers={"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"},
    )
    assert response.status == 204
    assert "Authorization" in response.headers["Access-Control-Allow-Headers"]


async def test_preflight_from_another_origin_is_refused(sidecar):
    response = await sidecar.options(
        "/billing/portal", headers={"Origin": "https://evil.example.net"}
    )
    assert response.status == 403
    assert "Access-Control-Allow-Origin" not in response.headers


async def test_answers_to_the_app_origin_carry_the_cors_grant(sidecar, make_user):
    headers = {
        "Authorization": f"Bearer {user_token(make_user())}",
        "Origin": "https://app.example.com",
    }
    response = await sidecar.post("/billing/portal", headers=headers)
    assert response.status == 404
    assert response.headers["Access-Control-Allow-Origin"] == "https://app.example.com"


async def test_webhooks_carry_no_cors_grant(sidecar):
    response = await sidecar.post(
        "/webhooks/stripe", data=b"{}", headers={"Origin": "https://app.example.com"}
    )
    assert "Access-Control-Allow-Origin" not in response.headers


async def test_concurrent_first_checkouts_share_one_customer(sidecar, fake_stripe, db, make_user):
    user = make_user()
    answers = await asyncio.gather(
        *(checkout(sidecar, user, {"pack": "pack_500"}) for _ in range(3))
    )
    assert [status for status, _ in answers] == [200, 200, 200]
    customers = {s.form["customer"] for s in fake_stripe.of_path("/v1/checkout/sessions")}
    profile = db.execute("select public.get_billing_profile(%s) as p", (user,)).fetchone()["p"]
    assert customers == {profile["customer_id"]}


# -- token issuer ----------------------------------------------------------------------------

PROJECT_URL = "https://project.supabase.co"


async def test_a_token_from_the_projects_auth_is_accepted_when_supabase_url_is_set(
    make_sidecar, make_user
):
    client = await make_sidecar(supabase_url=PROJECT_URL)
    status, _ = await checkout(client, make_user(), {"pack": "pack_500"})
    assert status == 200


@pytest.mark.parametrize(
    "issuer", ["https://other-project.supabase.co/auth/v1", f"{PROJECT_URL}/auth/v2", None]
)
async def test_a_token_from_another_issuer_is_401_when_supabase_url_is_set(
    make_sidecar, fake_stripe, make_user, issuer
):
    client = await make_sidecar(supabase_url=PROJECT_URL)
    user = make_user()
    token = user_token(user, iss=issuer or "dropped")
    if issuer is None:  # no iss claim at all
        claims = jwt.decode(token, options={"verify_signature": False})
        del claims["iss"]
        token = jwt.encode(claims, JWT_SECRET, algorithm="HS256")
    status, answer = await checkout(client, user, {"pack": "pack_500"}, token=token)
    assert (status, answer["error"]) == (401, "invalid token")
    assert fake_stripe.requests == []


# -- the billing customer ----------------------------------------------------------------------


def links(db, user):
    return db.execute(
        "select customer_id, source from tally.customers where user_id = %s order by linked_at",
        (user,),
    ).fetchall()


async def test_a_customer_linked_later_by_an_event_never_takes_over_the_portal(
    sidecar, fake_stripe, db, make_user
):
    user = make_user()
    await checkout(sidecar, user, {"pack": "pack_500"})
    (mine,) = [c["id"] for c in fake_stripe.all("customer")]
    w = world()
    _, out = w.buy_pack(w.customer(user_id=str(user)), PACK_PRICE)
    await deliver_all(sidecar, out)
    assert len(links(db, user)) == 2  # the event did link its customer too
    status, _ = await portal(sidecar, user)
    assert status == 200
    assert only(fake_stripe.of_path("/v1/billing_portal/sessions")).form["customer"] == mine
    await checkout(sidecar, user, {"pack": "pack_2000"})
    assert fake_stripe.of_path("/v1/checkout/sessions")[-1].form["customer"] == mine


async def test_without_a_sidecar_customer_the_oldest_event_link_is_the_billing_customer(
    sidecar, fake_stripe, db, make_user
):
    user = make_user()
    w = world()
    first, second = w.customer(user_id=str(user)), w.customer(user_id=str(user))
    for cust in (first, second):
        fake_stripe.add(se.customer(id=cust.id, created=cust.created))
        _, out = w.buy_pack(cust, PACK_PRICE)
        await deliver_all(sidecar, out)
    assert [row["customer_id"] for row in links(db, user)] == [first.id, second.id]
    await portal(sidecar, user)
    assert only(fake_stripe.of_path("/v1/billing_portal/sessions")).form["customer"] == first.id


async def test_the_profile_names_the_active_subscription(sidecar, fake_stripe, db, make_user):
    user = make_user()
    _, sub = await subscribe(sidecar, fake_stripe, user, STARTER_PRICE)
    profile = db.execute("select public.get_billing_profile(%s) as p", (user,)).fetchone()["p"]
    assert profile["active_subscription"] == {
        "id": sub.id,
        "price_id": STARTER_PRICE,
        "plan_key": "starter",
        "status": "active",
        "current_period_end": sub.current_period_end,
    }
    nobody = db.execute("select public.get_billing_profile(%s) as p", (make_user(),)).fetchone()
    assert nobody["p"]["active_subscription"] is None


# -- one subscription per user ---------------------------------------------------------------


def open_sessions(stand_in):
    return [s for s in stand_in.all("checkout.session") if s["status"] == "open"]


async def test_a_double_click_on_a_plan_gets_the_same_session(sidecar, fake_stripe, make_user):
    user = make_user()
    first = await checkout(sidecar, user, {"plan": "starter"})
    second = await checkout(sidecar, user, {"plan": "starter"})
    assert first == second
    assert first[0] == 200
    assert len(fake_stripe.of_path("/v1/checkout/sessions")) == 1


async def test_a_double_click_on_a_pack_buys_it_once(sidecar, fake_stripe, make_user):
    user = make_user()
    first = await checkout(sidecar, user, {"pack": "pack_500"})
    assert await checkout(sidecar, user, {"pack": "pack_500"}) == first
    assert len(open_sessions(fake_stripe)) == 1


async def test_two_different_packs_may_be_open_side_by_side(sidecar, fake_stripe, make_user):
    user = make_user()
    await checkout(sidecar, user, {"pack": "pack_500"})
    await checkout(sidecar, user, {"pack": "pack_2000"})
    assert len(open_sessions(fake_stripe)) == 2


async def test_asking_for_another_plan_expires_the_open_plan_session(
    sidecar, fake_stripe, make_user
):
    user = make_user()
    _, starter = await checkout(sidecar, user, {"plan": "starter"})
    status, pro = await checkout(sidecar, user, {"plan": "pro"})
    assert status == 200 and pro["url"] != starter["url"]
    (still_open,) = open_sessions(fake_stripe)
    assert still_open["url"] == pro["url"]
    assert still_open["metadata"]["price_id"] == PLANS["pro"][0]
    (expired,) = fake_stripe.requests[-2:-1]
    assert expired.path.endswith("/expire")


async def test_concurrent_plan_checkouts_end_with_one_open_session(sidecar, fake_stripe, make_user):
    fake_stripe.latency = 0.05  # Stripe takes a moment: the requests overlap
    user = make_user()
    answers = await asyncio.gather(
        *(checkout(sidecar, user, {"plan": "starter"}) for _ in range(6))
    )
    urls = {answer["url"] for status, answer in answers if status == 200}
    assert {status for status, _ in answers} <= {200, 409}
    assert len(urls) == 1
    assert len(open_sessions(fake_stripe)) == 1
    assert len(fake_stripe.of_path("/v1/checkout/sessions")) == 1


async def test_concurrent_checkouts_for_different_plans_leave_one_payable(
    sidecar, fake_stripe, make_user
):
    fake_stripe.latency = 0.05
    user = make_user()
    answers = await asyncio.gather(
        *(checkout(sidecar, user, {"plan": key}) for key in ["starter", "pro"] * 3)
    )
    assert {status for status, _ in answers} <= {200, 409}
    assert len(open_sessions(fake_stripe)) == 1


async def test_concurrent_plan_checkouts_of_a_subscriber_are_all_409(
    sidecar, fake_stripe, make_user
):
    user = make_user()
    await subscribe(sidecar, fake_stripe, user, STARTER_PRICE)
    answers = await asyncio.gather(*(checkout(sidecar, user, {"plan": "pro"}) for _ in range(4)))
    assert [status for status, _ in answers] == [409] * 4
    assert fake_stripe.of_path("/v1/checkout/sessions") == []


async def test_idempotency_keys_name_the_request_not_a_random_number(
    sidecar, fake_stripe, make_user
):
    user = make_user()
    fake_stripe.fail_next(1, "drop", path="/v1/checkout/sessions", method="POST")
    status, _ = await checkout(sidecar, user, {"plan": "starter"})
    assert status == 200
    first, retry = fake_stripe.of_path("/v1/checkout/sessions")
    assert first.idempotency_key == retry.idempotency_key
    # The session expires unpaid: the next checkout is a new request with a new key.
    (session,) = open_sessions(fake_stripe)
    session.update(status="expired", url=None)
    assert (await checkout(sidecar, user, {"plan": "starter"}))[0] == 200
    assert fake_stripe.of_path("/v1/checkout/sessions")[-1].idempotency_key != first.idempotency_key


# -- rate limit ----------------------------------------------------------------------------------


async def test_billing_calls_past_the_rate_limit_are_429(make_sidecar, fake_stripe, make_user):
    client = await make_sidecar(billing_rate_limit=3, billing_rate_window=60)
    user, other = make_user(), make_user()
    assert [(await portal(client, user))[0] for _ in range(3)] == [404] * 3
    headers = {"Authorization": f"Bearer {user_token(user)}"}
    response = await client.post("/billing/checkout", json={"pack": "pack_500"}, headers=headers)
    assert response.status == 429
    assert 0 < int(response.headers["Retry-After"]) <= 60
    assert (await response.json())["error"].startswith("too many billing requests")
    assert fake_stripe.requests == []
    assert (await portal(client, other))[0] == 404  # another user has their own count


async def test_the_rate_limit_is_shared_by_every_machine(make_sidecar, make_user):
    machines = [await make_sidecar(billing_rate_limit=4) for _ in range(2)]
    user = make_user()
    statuses = [(await portal(machines[n % 2], user))[0] for n in range(5)]
    assert statuses == [404, 404, 404, 404, 429]


async def test_a_hanging_stripe_is_a_502_within_the_time_budget(sidecar, fake_stripe, make_user):
    fake_stripe.hang = True
    started = asyncio.get_running_loop().time()
    status, _ = await checkout(sidecar, make_user(), {"plan": "starter"})
    assert status == 502
    assert asyncio.get_running_loop().time() - started < 1.5  # STRIPE_TIMEOUT is 1 s here
