"""The sidecar's Stripe client against the stand-in: parameters, pages, retries, failures."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from sidecar.stripe_api import STRIPE_API_VERSION, StripeApi, StripeRefused, StripeUnavailable
from tally import stripe_events as se
from tests.support.stripe_stand_in import StripeStandIn

HANDLED = ("invoice.paid", "checkout.session.completed")
NOW = int(time.time())


@pytest.fixture
def stand_in() -> StripeStandIn:
    return StripeStandIn()


@pytest.fixture
async def make_api(aiohttp_server, stand_in):
    server = await aiohttp_server(stand_in.app())
    base = str(server.make_url("")).rstrip("/")
    async with aiohttp.ClientSession() as session:

        def make(timeout: float = 5.0) -> StripeApi:
            return StripeApi("sk_test_fake", session, timeout=timeout, api_base=base)

        yield make


@pytest.fixture
def api(make_api) -> StripeApi:
    return make_api()


def invoice_with_lines(count: int) -> tuple[dict, list[dict]]:
    w = se.StripeWorld("basil", start=NOW - 3600)
    sub, _ = w.subscribe(w.customer(user_id="u"), "price_x")
    lines = [
        se.invoice_line(
            layout="basil",
            id=f"il_{n:04d}",
            invoice="in_many",
            price_obj=w.price_object("price_x"),
            amount=n,
            period_start=NOW,
            period_end=NOW + se.MONTH,
            subscription=sub.id,
            subscription_item=sub.item_id,
        )
        for n in range(count)
    ]
    invoice = se.invoice(
        layout="basil",
        id="in_many",
        customer=sub.customer.id,
        subscription=sub.id,
        subscription_metadata={"user_id": "u"},
        lines=lines,
        status="paid",
        created=NOW,
        billing_reason="subscription_cycle",
    )
    return invoice, lines


# -- invoice lines ---------------------------------------------------------------------------


async def test_invoice_lines_reads_every_page_as_stripe_sent_it(api, stand_in):
    invoice, lines = invoice_with_lines(250)
    stand_in.add_invoice(invoice, lines)
    assert await api.invoice_lines("in_many") == lines
    pages = stand_in.of_path("/v1/invoices/in_many/lines", "GET")
    assert [p.form for p in pages] == [
        {"limit": "100"},
        {"limit": "100", "starting_after": "il_0099"},
        {"limit": "100", "starting_after": "il_0199"},
    ]
    assert {p.stripe_version for p in pages} == {STRIPE_API_VERSION}


@pytest.mark.parametrize("kind", ["500", "429", "409", "drop"])
async def test_invoice_lines_retries_a_transient_failure_then_succeeds(api, stand_in, kind):
    invoice, lines = invoice_with_lines(3)
    stand_in.add_invoice(invoice, lines)
    stand_in.fail_next(2, kind)
    assert await api.invoice_lines("in_many") == lines
    assert len(stand_in.requests) == 3


async def test_invoice_lines_of_an_unknown_invoice_is_a_refusal_not_a_failure(api):
    # A refusal is a kind of StripeUnavailable (billing answers 502 for both);
    # the event path tells them apart: asking again would get the same 404.
    with pytest.raises(StripeRefused, match=r"refused to list the invoice's lines \(HTTP 404"):
        await api.invoice_lines("in_missing")


async def test_a_failing_stripe_is_not_a_refusal(make_api, stand_in):
    api = make_api(timeout=1.0)
    stand_in.fail_with = 503
    with pytest.raises(StripeUnavailable) as raised:
        await api.invoice_lines("in_many")
    assert not isinstance(raised.value, StripeRefused)


async def test_persistent_failure_gives_up_within_the_time_budget(make_api, stand_in):
    api = make_api(timeout=1.0)
    stand_in.fail_with = 503
    started = time.monotonic()
    with pytest.raises(StripeUnavailable):
        await api.invoice_lines("in_many")
    assert time.monotonic() - started < 1.5


async def test_a_hanging_stripe_is_cut_at_the_time_budget(make_api, stand_in):
    api = make_api(timeout=0.6)
    stand_in.hang = True
    started = time.monotonic()
    with pytest.raises(StripeUnavailable):
        await api.invoice_lines("in_many")
    assert time.monotonic() - started < 1.0


# -- undelivered events ------------------------------------------------------------------------


def stored_events(stand_in: StripeStandIn, count: int) -> list[dict]:
    w = se.StripeWorld("basil", start=NOW - 7200)
    events = []
    for _ in range(count):
        _, out = w.buy_pack(w.customer(user_id="u"), "price_pack")
        events += out
    for event in events:
        stand_in.add_event(event)
    return events


async def test_undelivered_events_sends_the_filters_and_follows_the_cursor(api, stand_in):
    events = [e for e in stored_events(stand_in, 120) if e["type"] in HANDLED]
    got = [e async for e in api.list_undelivered_events(HANDLED, NOW - 86400)]
    assert [e["id"] for e in got] == [e["id"] for e in reversed(events)]  # newest first
    assert got[0] == events[-1]
    first, second = stand_in.of_path("/v1/events", "GET")
    expected = {
        "delivery_success": "false",
        "types[0]": "invoice.paid",
        "types[1]": "checkout.session.completed",
        "created[gte]": str(NOW - 86400),
        "limit": "100",
    }
    assert first.form == expected
    assert second.form == {**expected, "starting_after": got[99]["id"]}


async def test_undelivered_events_skips_delivered_ones_and_older_ones(api, stand_in):
    w = se.StripeWorld("basil", start=NOW - 7200)
    _, old = w.buy_pack(w.customer(user_id="u"), "price_pack")
    w.clock.advance(3600)
    _, new = w.buy_pack(w.customer(user_id="u"), "price_pack")
    _, delivered = w.buy_pack(w.customer(user_id="u"), "price_pack")
    for event in old + new:
        stand_in.add_event(event)
    for event in delivered:
        stand_in.add_event(event, delivered=True)
    got = [e["id"] async for e in api.list_undelivered_events(HANDLED, NOW - 3600)]
    assert got == [e["id"] for e in reversed(new) if e["type"] in HANDLED]


# -- idempotency ---------------------------------------------------------------------------------


async def test_concurrent_calls_with_one_key_agree_on_one_customer(make_api, stand_in):
    stand_in.latency = 0.3  # the first request is still running when the second arrives
    api = make_api()
    first, second = await asyncio.gather(api.create_customer("u1"), api.create_customer("u1"))
    assert first == second
    assert len(stand_in.all("customer")) == 1
    requests = stand_in.of_path("/v1/customers")
    assert len(requests) == 3  # the second got a 409 (key in use), retried, got the replay
    assert {r.idempotency_key for r in requests} == {"tally-customer-u1"}
