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
from tests.sidecar.conftest import (
    JWT_SECRET,
    PACKS,
    PLANS,
    subscribe,
    user_token,
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
    customer, session = fake_stripe.requests
    assert {customer.stripe_version, session.stripe_version} == {STRIPE_API_VERSION}
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
    await checkout(sidecar, user, {"pack": "pack_500"})
    fake_stripe.fail_with = 500
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
