"""Webhook deliveries over HTTP, and the server processes that receive them.

The sender is an aiohttp client with one keep-alive connection per sender,
as Stripe's delivery workers hold theirs. Each server under test (the
sidecar, the floor service, the stripe-sync-engine wrapper) is a process of
its own on loopback, started ready (GET /readyz answers 200) and stopped
with SIGTERM.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import aiohttp

from tally.bench.drive import CpuMeter, Run, drive
from tally.bench.renewals import Delivery
from tally.dev import StackError, stop_process, wait_until_ready
from tally.paths import ROOT

OK = "ok"
Judge = Callable[[int, bytes], str]


def applied(status: int, body: bytes) -> str:
    """A 200 whose JSON says "applied" is OK (tally's sidecar, the floor service)."""
    if status != 200:
        return f"HTTP {status}"
    try:
        outcome = json.loads(body).get("status")
    except (ValueError, AttributeError):
        return "unreadable answer"
    return OK if outcome == "applied" else f"outcome {outcome}"


def accepted(status: int, body: bytes) -> str:
    """Any 2xx is OK (the stripe-sync-engine wrapper answers 200 once stored)."""
    return OK if 200 <= status < 300 else f"HTTP {status}"


async def deliver(
    url: str,
    deliveries: Sequence[Delivery],
    senders: int,
    judge: Judge,
    *,
    warmup: int = 0,
    meter: CpuMeter | None = None,
    before_timing: Callable[[], Awaitable[None]] | None = None,
) -> Run:
    """POST every delivery to `url`, `senders` at a time (the first `warmup` untimed)."""
    connector = aiohttp.TCPConnector(limit=senders, force_close=False)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def send(delivery: Delivery) -> str:
            headers = {
                "Stripe-Signature": delivery.signature,
                "Content-Type": "application/json",
            }
            try:
                async with session.post(url, data=delivery.body, headers=headers) as response:
                    return judge(response.status, await response.read())
            except (aiohttp.ClientError, TimeoutError) as error:
                return type(error).__name__

        return await drive(
            deliveries, senders, send, warmup=warmup, meter=meter, before_timing=before_timing
        )


@contextmanager
def server_process(
    command: list[str], env: dict[str, str], port: int, log_path: Path
) -> Iterator[subprocess.Popen[str]]:
    """A server under test, ready to serve on `port`; stopped on the way out."""
    with log_path.open("a") as log:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # Ctrl-C reaches the benchmark, which stops it in order
        )
    try:
        try:
            wait_until_ready(f"http://127.0.0.1:{port}", process)
        except StackError as problem:
            tail = log_path.read_text()[-2000:]
            raise StackError(f"{' '.join(command[:3])}: {problem}; its log ends:\n{tail}") from None
        yield process
    finally:
        stop_process(process)
