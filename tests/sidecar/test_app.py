"""Health, readiness, metrics, logs and start-up of the sidecar process."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path

import aiohttp
import pytest

from sidecar.observability import JsonFormatter
from tally import stripe_events as se
from tests.sidecar.conftest import PACKS, WEBHOOK_SECRET, deliver, world

ROOT = Path(__file__).resolve().parents[2]


async def test_healthz_answers_without_a_database(make_sidecar, unused_tcp_port):
    client = await make_sidecar(database_url=f"postgresql://postgres@127.0.0.1:{unused_tcp_port}/x")
    response = await client.get("/healthz")
    assert (response.status, await response.json()) == (200, {"status": "ok"})


async def test_readyz_is_503_without_a_database(make_sidecar, unused_tcp_port):
    client = await make_sidecar(database_url=f"postgresql://postgres@127.0.0.1:{unused_tcp_port}/x")
    response = await client.get("/readyz")
    assert response.status == 503


async def test_readyz_names_nothing_internal_when_the_database_refuses(
    make_sidecar, pg_server, database_url
):
    # A role that does not exist: the server answers, but refuses the connection.
    refused = pg_server.dsn(database_url.rsplit("/", 1)[1], user="no_such_role")
    client = await make_sidecar(database_url=refused)
    response = await client.get("/readyz")
    assert (response.status, await response.json()) == (503, {"error": "database unavailable"})


async def test_metrics_count_events_by_type_and_outcome(sidecar, make_user):
    user = make_user()
    w = world()
    _, out = w.buy_pack(w.customer(user_id=str(user)), PACKS["pack_500"][0])
    await deliver(sidecar, out[-1])
    await deliver(sidecar, out[-1])
    await deliver(sidecar, w.unhandled("customer.updated"))
    text = await (await sidecar.get("/metrics")).text()
    assert (
        'tally_stripe_events_total{outcome="applied",type="checkout.session.completed"} 1.0' in text
    )
    assert (
        'tally_stripe_events_total{outcome="duplicate",type="checkout.session.completed"} 1.0'
        in text
    )
    assert 'tally_stripe_events_total{outcome="ignored",type="customer.updated"} 1.0' in text
    assert "tally_apply_stripe_event_seconds_count 2.0" in text


async def test_metrics_count_responses_by_route_and_status(sidecar):
    await sidecar.post("/webhooks/stripe", data=b"{}")
    await sidecar.get("/nowhere")
    text = await (await sidecar.get("/metrics")).text()
    assert 'tally_http_responses_total{route="/webhooks/stripe",status="400"} 1.0' in text
    assert 'tally_http_responses_total{route="unmatched",status="404"} 1.0' in text


METRICS_TOKEN = "m" * 40


@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong", f"Basic {METRICS_TOKEN}", f"Bearer {METRICS_TOKEN}x"]
)
async def test_metrics_with_a_token_refuse_anyone_without_it(make_sidecar, authorization):
    client = await make_sidecar(metrics_token=METRICS_TOKEN)
    headers = {"Authorization": authorization} if authorization else {}
    response = await client.get("/metrics", headers=headers)
    assert response.status == 401
    assert "tally_" not in await response.text()


async def test_metrics_with_a_token_answer_the_bearer(make_sidecar):
    client = await make_sidecar(metrics_token=METRICS_TOKEN)
    response = await client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert response.status == 200
    assert "tally_http_responses_total" in await response.text()


async def test_metrics_port_serves_metrics_and_the_main_port_does_not(
    make_sidecar, unused_tcp_port
):
    client = await make_sidecar(metrics_port=unused_tcp_port, host="127.0.0.1")
    assert (await client.get("/metrics")).status == 404
    await client.get("/healthz")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{unused_tcp_port}/metrics") as response:
            assert response.status == 200
            text = await response.text()
        async with http.get(f"http://127.0.0.1:{unused_tcp_port}/healthz") as other:
            assert other.status == 404
    assert 'tally_http_responses_total{route="/healthz",status="200"} 1.0' in text


async def test_logs_one_json_line_per_event_without_payload_or_secrets(sidecar, make_user, caplog):
    user = make_user()
    w = world()
    _, out = w.buy_pack(
        w.customer(user_id=str(user), email="secret-buyer@example.test"), PACKS["pack_500"][0]
    )
    with caplog.at_level(logging.INFO, logger="sidecar"):
        await deliver(sidecar, out[-1])
    lines = [JsonFormatter().format(r) for r in caplog.records if r.name == "sidecar"]
    (line,) = [json.loads(text) for text in lines if '"stripe event"' in text]
    assert line["event_id"] == out[-1]["id"]
    assert line["event_type"] == "checkout.session.completed"
    assert line["outcome"] == "applied"
    assert isinstance(line["duration_ms"], float)
    for text in lines:
        assert "secret-buyer" not in text and WEBHOOK_SECRET not in text
        assert "payment_intent" not in text


async def test_refused_webhooks_are_logged_with_their_reason(sidecar, caplog):
    body = b'{"id": "evt_1"}'
    with caplog.at_level(logging.INFO, logger="sidecar"):
        await sidecar.post("/webhooks/stripe", data=body, headers={"Stripe-Signature": "x"})
    (record,) = [r for r in caplog.records if r.name == "sidecar"]
    assert (
        json.loads(JsonFormatter().format(record))["reason"] == "malformed Stripe-Signature header"
    )


async def test_wrong_method_is_405_not_500(sidecar):
    response = await sidecar.get("/webhooks/stripe")
    assert response.status == 405


# -- the process -----------------------------------------------------------------------------


async def run_sidecar(env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sidecar",
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_process_refuses_to_start_with_a_message_per_problem():
    process = await run_sidecar(
        {
            "ENV": "production",
            "APP_BASE_URL": "http://localhost:3000",
            "STRIPE_SECRET_KEY": "sk_live_topsecret",
        }
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    message = stderr.decode()
    assert process.returncode == 2
    assert "APP_BASE_URL must use https in production" in message
    assert "STRIPE_WEBHOOK_SECRETS is not set" in message
    assert "sk_live_topsecret" not in message


async def test_process_in_production_warns_about_a_test_mode_key(
    database_url, unused_tcp_port_factory
):
    port, metrics_port = unused_tcp_port_factory(), unused_tcp_port_factory()
    process = await run_sidecar(
        {
            "ENV": "production",
            "DATABASE_URL": database_url,
            "STRIPE_WEBHOOK_SECRETS": "whsec_" + "k" * 40,
            "STRIPE_SECRET_KEY": "sk_test_" + "s" * 30,
            "APP_BASE_URL": "https://app.example.com",
            "SUPABASE_JWT_SECRET": "j" * 40,
            "METRICS_PORT": str(metrics_port),
            "PORT": str(port),
            "HOST": "127.0.0.1",
        }
    )
    try:
        async with aiohttp.ClientSession() as http:
            await wait_until_up(http, f"http://127.0.0.1:{port}/healthz")
            async with http.get(f"http://127.0.0.1:{metrics_port}/metrics") as response:
                assert response.status == 200
    finally:
        process.terminate()
        stdout, _ = await asyncio.wait_for(process.communicate(), 30)
    logged = [json.loads(line) for line in stdout.decode().splitlines()]
    (warning,) = [e for e in logged if e["level"] == "warning"]
    assert warning["msg"] == "STRIPE_SECRET_KEY is a test-mode key in production"
    assert "s" * 30 not in stdout.decode()


async def test_process_starts_and_serves_signed_webhooks(database_url, unused_tcp_port, make_user):
    user = make_user()
    process = await run_sidecar(
        {
            "DATABASE_URL": database_url,
            "STRIPE_WEBHOOK_SECRETS": WEBHOOK_SECRET,
            "STRIPE_SECRET_KEY": "sk_test_x",
            "APP_BASE_URL": "http://localhost:3000",
            "SUPABASE_JWT_SECRET": "jwt-secret-of-at-least-32-characters-long",
            "PORT": str(unused_tcp_port),
            "HOST": "127.0.0.1",
        }
    )
    base = f"http://127.0.0.1:{unused_tcp_port}"
    try:
        async with aiohttp.ClientSession() as http:
            await wait_until_up(http, f"{base}/healthz")
            w = world()
            _, out = w.buy_pack(w.customer(user_id=str(user)), PACKS["pack_500"][0])
            body, headers = se.signed_request(out[-1], WEBHOOK_SECRET)
            async with http.post(f"{base}/webhooks/stripe", data=body, headers=headers) as response:
                assert (response.status, (await response.json())["status"]) == (200, "applied")
    finally:
        process.terminate()
        stdout, _ = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode in (0, -15)
    logged = [json.loads(line) for line in stdout.decode().splitlines()]
    assert any(e.get("event_id") == out[-1]["id"] and e["outcome"] == "applied" for e in logged)


async def wait_until_up(http: aiohttp.ClientSession, url: str) -> None:
    for _ in range(100):
        try:
            async with http.get(url) as response:
                if response.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            await asyncio.sleep(0.1)
    pytest.fail("the sidecar did not start")
