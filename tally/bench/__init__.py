"""`tally bench`: the speed figures of docs/benchmarks.md, measured side by side.

command.py runs them; one module per group of figures (webhooks.py, spend.py,
cost.py), the pieces they share beside them.
"""

from __future__ import annotations

from tally.bench.command import main

__all__ = ["main"]
