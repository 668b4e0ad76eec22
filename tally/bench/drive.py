"""Drive calls at a fixed concurrency and time each one.

`senders` workers share one queue of calls; each takes the next as soon as
its previous one answered, as a pool of webhook deliveries or app servers
would. Every call yields an outcome label ("ok", an SQLSTATE, "HTTP 503"...),
never an exception, so one failure never stops a run.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

Item = TypeVar("Item")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass
class Run:
    seconds: float
    latencies: list[float]
    outcomes: Counter[str]
    # CPU milliseconds per timed call, by process, when a meter was given.
    cpu_ms: dict[str, float] = field(default_factory=dict)
    warmup_outcomes: Counter[str] = field(default_factory=Counter)


async def drive(
    items: Sequence[Item],
    senders: int,
    call: Callable[[Item], Awaitable[str]],
    *,
    warmup: int = 0,
    before_timing: Callable[[], Awaitable[None]] | None = None,
    meter: CpuMeter | None = None,
) -> Run:
    """Run `call` on every item, `senders` at a time; time each and the whole.

    The first `warmup` items run first, untimed, at the same concurrency: a
    long-running service has its connections open and its plans cached, and
    a cold start would otherwise fill the slowest percentile. Then
    `before_timing` runs (to reset server-side statistics) and the rest is
    timed, with the CPU the meter's processes use.
    """
    warmed = await _run_all(items[:warmup], senders, call, [])
    if before_timing is not None:
        await before_timing()
    cpu_before = meter.start() if meter else {}
    latencies: list[float] = []
    started = time.perf_counter()
    outcomes = await _run_all(items[warmup:], senders, call, latencies)
    seconds = time.perf_counter() - started
    cpu = meter.per_call_ms(cpu_before, len(latencies)) if meter else {}
    return Run(seconds, latencies, outcomes, cpu, warmed)


async def _run_all(
    items: Sequence[Item],
    senders: int,
    call: Callable[[Item], Awaitable[str]],
    latencies: list[float],
) -> Counter[str]:
    queue = iter(items)  # shared: each worker takes the next item not yet taken
    outcomes: Counter[str] = Counter()

    async def worker() -> None:
        for item in queue:
            started = time.perf_counter()
            outcome = await call(item)
            latencies.append(time.perf_counter() - started)
            outcomes[outcome] += 1

    await asyncio.gather(*(worker() for _ in range(senders)))
    return outcomes


# --------------------------------------------------------------------------
# CPU time of the processes involved (Linux /proc; empty elsewhere)
# --------------------------------------------------------------------------


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of one process, or None when unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def children_cpu_seconds(parent: int) -> float | None:
    """CPU seconds of `parent`, its live children and the children it has reaped.

    PostgreSQL's backends are the postmaster's children; one that exits has
    its CPU time added to the postmaster's cutime/cstime, so nothing is lost.
    """
    try:
        fields = Path(f"/proc/{parent}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    total = sum(int(value) for value in fields[11:15]) / CLOCK_TICKS
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == parent:
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


@dataclass
class CpuMeter:
    """CPU seconds used by named processes between `start` and `stop`.

    Each source is a function returning cumulative CPU seconds (or None).
    """

    sources: dict[str, Callable[[], float | None]]

    def start(self) -> dict[str, float | None]:
        return {name: source() for name, source in self.sources.items()}

    def per_call_ms(self, before: dict[str, float | None], calls: int) -> dict[str, float]:
        used: dict[str, float] = {}
        for name, source in self.sources.items():
            now, then = source(), before.get(name)
            if now is not None and then is not None and calls:
                used[name] = (now - then) * 1000 / calls
        return used


def own_cpu_seconds() -> float:
    """CPU seconds of this process (the load generator)."""
    usage = os.times()
    return usage.user + usage.system
