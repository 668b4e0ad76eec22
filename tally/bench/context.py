"""What every figure of one run shares: the server, the sizes, the secret, the plan."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tally.bench.drive import CpuMeter, children_cpu_seconds, own_cpu_seconds, process_cpu_seconds
from tally.bench.server import Server


@dataclass(frozen=True)
class Sizes:
    """How much each figure does; `--quick` shrinks everything to seconds."""

    subscribers: int  # users whose renewals the webhook figures send
    rounds_one: int  # renewals per subscriber at one sender
    rounds_many: int  # renewals per subscriber at `senders`
    cost_rounds: int  # renewals per subscriber for the per-event cost figures
    spend_accounts: int
    spends: int
    hot_spends: int
    history_rows: int

    @classmethod
    def full(cls, history_rows: int) -> Sizes:
        return cls(1000, 1, 4, 1, 1000, 20_000, 10_000, history_rows)

    @classmethod
    def quick(cls, history_rows: int) -> Sizes:
        return cls(32, 1, 2, 1, 100, 400, 320, history_rows)


@dataclass(frozen=True)
class Context:
    server: Server
    sizes: Sizes
    secret: str  # the webhook signing secret every server under test is given
    workdir: Path  # logs of the processes started
    price_id: str  # the Starter plan's Stripe price
    monthly: int  # the Starter plan's monthly credits
    senders: int = 16
    hot_senders: int = 32

    @staticmethod
    def warmup(senders: int, total: int) -> int:
        """Calls run untimed first: a few per connection, at most a quarter of the run."""
        return min(total // 4, max(16, 2 * senders))

    @property
    def url(self) -> str:
        return self.server.database_url

    def cpu_meter(self, **processes: int) -> CpuMeter:
        """CPU of the named processes, of PostgreSQL (when local) and of this client."""
        sources: dict[str, Callable[[], float | None]] = {
            name: (lambda pid=pid: process_cpu_seconds(pid)) for name, pid in processes.items()
        }
        postmaster = self.server.postmaster_pid
        if postmaster is not None:
            sources["postgres"] = lambda: children_cpu_seconds(postmaster)
        sources["client"] = own_cpu_seconds
        return CpuMeter(sources)
