"""The Stripe stand-in speaks Stripe's wire format (raw HTTP, no client library)."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.stripe_stand_in import StripeStandIn
from tests.support.stripe_wire import decode_form

AUTH = {"Authorization": "Bearer sk_test_x"}


@pytest.fixture
def stand_in() -> StripeStandIn:
    return StripeStandIn()


@pytest.fixture
async def http(aiohttp_client, stand_in):
    return await aiohttp_client(stand_in.app())


def test_nested_form_keys_decode_to_objects_and_lists():
    pairs = [
        ("items[0][id]", "si_1"),
        ("items[0][price]", "price_2"),
        ("metadata[user_id]", "u"),
        ("expand[]", "a"),
        ("expand[]", "b"),
        ("created[gte]", "5"),
    ]
    assert decode_form(pairs) == {
        "items": [{"id": "si_1", "price": "price_2"}],
        "metadata": {"user_id": "u"},
        "expand": ["a", "b"],
        "created": {"gte": "5"},
    }


async def test_errors_have_stripes_shape_and_a_request_id(http):
    response = await http.get("/v1/customers/cus_missing", headers=AUTH)
    assert response.status == 404
    assert response.headers["Request-Id"].startswith("req_")
    assert (await response.json())["error"] == {
        "type": "invalid_request_error",
        "code": "resource_missing",
        "message": "No such customer: 'cus_missing'",
        "param": "id",
    }


async def test_an_unknown_parameter_is_refused_by_name(http):
    response = await http.post("/v1/customers", data={"colour": "blue"}, headers=AUTH)
    body = await response.json()
    assert (response.status, body["error"]["param"]) == (400, "colour")


async def test_a_request_without_a_secret_key_is_401(http):
    response = await http.post("/v1/customers", data={})
    assert response.status == 401


async def test_same_key_and_params_replay_the_first_answer(http, stand_in):
    headers = {**AUTH, "Idempotency-Key": "k1"}
    first = await http.post("/v1/customers", data={"metadata[user_id]": "u"}, headers=headers)
    again = await http.post("/v1/customers", data={"metadata[user_id]": "u"}, headers=headers)
    assert (await first.json())["id"] == (await again.json())["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(stand_in.all("customer")) == 1


async def test_same_key_with_other_params_is_an_idempotency_error(http):
    headers = {**AUTH, "Idempotency-Key": "k2"}
    await http.post("/v1/customers", data={"metadata[user_id]": "u"}, headers=headers)
    response = await http.post("/v1/customers", data={"metadata[user_id]": "v"}, headers=headers)
    error = (await response.json())["error"]
    assert (response.status, error["type"]) == (400, "idempotency_error")
    assert "same parameters" in error["message"]


async def test_a_key_still_in_flight_is_a_409(http, stand_in):
    stand_in.latency = 0.3
    headers = {**AUTH, "Idempotency-Key": "k3"}
    first, second = await asyncio.gather(
        http.post("/v1/customers", data={}, headers=headers),
        http.post("/v1/customers", data={}, headers=headers),
    )
    statuses = sorted([first.status, second.status])
    assert statuses == [200, 409]
    loser = first if first.status == 409 else second
    assert (await loser.json())["error"]["code"] == "idempotency_key_in_use"


async def test_lists_page_newest_first_with_has_more_and_url(http, stand_in):
    for n in range(5):
        stand_in.add({"id": f"re_{n}", "object": "refund", "created": 100 + n, "charge": "ch_1"})
    first = await (await http.get("/v1/refunds?limit=2", headers=AUTH)).json()
    assert [r["id"] for r in first["data"]] == ["re_4", "re_3"]
    assert (first["object"], first["url"], first["has_more"]) == ("list", "/v1/refunds", True)
    last = await (
        await http.get("/v1/refunds?limit=2&starting_after=re_1&created[gte]=100", headers=AUTH)
    ).json()
    assert ([r["id"] for r in last["data"]], last["has_more"]) == (["re_0"], False)


async def test_injected_failures_hit_the_next_calls_only(http, stand_in):
    stand_in.fail_next(1, "429")
    limited = await http.post("/v1/customers", data={}, headers=AUTH)
    assert (limited.status, (await limited.json())["error"]["code"]) == (429, "rate_limit")
    assert (await http.post("/v1/customers", data={}, headers=AUTH)).status == 200


async def test_webhook_endpoint_secret_is_returned_only_on_creation(http):
    data = {"url": "https://x.example/webhooks/stripe", "enabled_events[0]": "invoice.paid"}
    created = await (await http.post("/v1/webhook_endpoints", data=data, headers=AUTH)).json()
    assert created["secret"].startswith("whsec_")
    listed = await (await http.get("/v1/webhook_endpoints", headers=AUTH)).json()
    assert "secret" not in listed["data"][0]


async def test_reconciliation_lists_filter_seeded_objects(http, stand_in):
    from tally import stripe_events as se

    for n, status in enumerate(["paid", "open", "paid"]):
        stand_in.add_invoice(
            se.invoice(
                layout="basil",
                id=f"in_{n}",
                customer="cus_1",
                subscription=None,
                subscription_metadata=None,
                lines=[],
                status=status,
                created=1000 + n,
                billing_reason="manual",
            )
        )
    paid = await (await http.get("/v1/invoices?status=paid&created[gte]=1001", headers=AUTH)).json()
    assert [i["id"] for i in paid["data"]] == ["in_2"]
    stand_in.add_dispute(se.dispute(id="dp_1", charge="ch_1", payment_intent=None, amount=5,
                                    status="needs_response", created=7))  # fmt: skip
    disputes = await (await http.get("/v1/disputes?charge=ch_1", headers=AUTH)).json()
    assert [d["id"] for d in disputes["data"]] == ["dp_1"]
