"""Slow bodies: a body that has not arrived in time is answered 408 (no handler waits forever)."""

from __future__ import annotations

import asyncio
import time

import pytest

from sidecar.bodies import UNDECODABLE
from tests.sidecar.conftest import stored_events, user_token

BODY_TIMEOUT = 0.5


async def trickle(client, path: str, headers: dict[str, str], *, declared: int = 200) -> bytes:
    """Send the headers, then one byte every 0.1 s; return what the server answered."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Content-Length: {declared}\r\n{head}\r\n".encode()
    )
    answer = asyncio.ensure_future(_response(reader))
    try:
        for _ in range(declared):
            if answer.done():
                break
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(0.1)
        return await asyncio.wait_for(answer, 5)
    finally:
        answer.cancel()
        writer.close()


async def _response(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head + await reader.readexactly(length)


@pytest.mark.parametrize("path", ["/webhooks/stripe", "/billing/checkout", "/billing/plan"])
async def test_a_trickled_body_is_answered_408_at_the_deadline(make_sidecar, make_user, path):
    client = await make_sidecar(body_timeout=BODY_TIMEOUT)
    headers = {"Authorization": f"Bearer {user_token(make_user())}"}
    started = time.monotonic()
    answer = await trickle(client, path, headers)
    assert answer.startswith(b"HTTP/1.1 408")
    assert b"request body not received in time" in answer
    assert time.monotonic() - started < BODY_TIMEOUT + 1.5


async def test_a_body_that_arrives_in_time_is_served(make_sidecar):
    client = await make_sidecar(body_timeout=BODY_TIMEOUT)
    response = await client.post("/webhooks/stripe", data=b"{}")
    assert response.status == 400  # unsigned, but read and answered by the handler


def test_the_default_deadline_is_ten_seconds():
    from sidecar.config import Config

    config = Config(
        webhook_secrets=("whsec_x",), stripe_secret_key="sk_x", app_base_url="https://a"
    )
    assert config.body_timeout == 10.0


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
@pytest.mark.parametrize("path", ["/webhooks/stripe", "/billing/checkout", "/billing/plan"])
async def test_a_body_that_is_not_compressed_as_its_content_encoding_says_is_answered_400(
    sidecar, db, make_user, path, encoding
):
    headers = {
        "Content-Encoding": encoding,
        "Stripe-Signature": "t=1,v1=00",
        "Authorization": f"Bearer {user_token(make_user())}",
    }
    before = stored_events(db)
    response = await sidecar.post(path, data=b"\x1f\x8b\x08not-compressed" * 10, headers=headers)
    assert response.status == 400
    assert await response.json() == {"error": UNDECODABLE}
    assert "decoded" in UNDECODABLE
    assert stored_events(db) == before
