"""What one benchmark run measured: figures, their correctness checks, the table.

A figure is one timed run (a number of calls at a concurrency) with the
outcome of every call and the checks made on the database afterwards. The
table puts the figures side by side; the targets section compares the ratios
and costs docs/benchmarks.md names against what was measured.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tally.bench.drive import Run

OK = "ok"


@dataclass(frozen=True)
class Check:
    """One correctness check made after a figure's run."""

    name: str
    passed: bool
    detail: str = ""


@dataclass
class Figure:
    """One timed run and what it left behind."""

    key: str
    title: str
    senders: int
    seconds: float
    latencies: list[float]
    outcomes: Counter[str]
    # Outcomes other than OK that the run expects (PT402 on a hot account).
    expected: frozenset[str] = frozenset()
    checks: list[Check] = field(default_factory=list)
    # Per-event database cost (ms) from pg_stat_statements, where measured.
    db_ms: float | None = None
    # CPU milliseconds per call, by process (sidecar, postgres, ...), where measured.
    cpu_ms: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def calls(self) -> int:
        return sum(self.outcomes.values())

    @property
    def rate(self) -> float:
        return self.calls / self.seconds if self.seconds > 0 else 0.0

    @property
    def errors(self) -> Counter[str]:
        return Counter(
            {k: v for k, v in self.outcomes.items() if k != OK and k not in self.expected}
        )

    @property
    def passed(self) -> bool:
        return not self.errors and all(check.passed for check in self.checks)

    def percentile_ms(self, fraction: float) -> float:
        """The latency below which `fraction` of the calls finished (nearest rank)."""
        if not self.latencies:
            return math.nan
        ordered = sorted(self.latencies)
        rank = max(1, math.ceil(fraction * len(ordered)))
        return ordered[rank - 1] * 1000

    @classmethod
    def of_run(
        cls,
        key: str,
        title: str,
        senders: int,
        run: Run,
        checks: list[Check],
        expected: frozenset[str] = frozenset(),
    ) -> Figure:
        """A figure from a timed run; failures in its warm-up fail a check."""
        figure = cls(key, title, senders, run.seconds, run.latencies, run.outcomes, expected)
        figure.cpu_ms = run.cpu_ms
        warm_errors = {
            k: v for k, v in run.warmup_outcomes.items() if k != OK and k not in expected
        }
        warmed = sum(run.warmup_outcomes.values())
        figure.checks = [
            Check(
                "warm-up calls succeeded",
                not warm_errors,
                f"{warmed} calls, {warm_errors or 'no'} errors",
            ),
            *checks,
        ]
        return figure

    def as_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "title": self.title,
            "senders": self.senders,
            "calls": self.calls,
            "seconds": round(self.seconds, 3),
            "per_second": round(self.rate, 1),
            "p50_ms": round(self.percentile_ms(0.50), 3),
            "p99_ms": round(self.percentile_ms(0.99), 3),
            "outcomes": dict(self.outcomes),
            "errors": dict(self.errors),
            "db_ms_per_call": None if self.db_ms is None else round(self.db_ms, 4),
            "cpu_ms_per_call": {k: round(v, 3) for k, v in self.cpu_ms.items()},
            "checks": [vars(check) for check in self.checks],
            "passed": self.passed,
            "notes": self.notes,
        }


@dataclass(frozen=True)
class Skipped:
    """A figure that was not run, and why."""

    key: str
    title: str
    reason: str


@dataclass(frozen=True)
class Target:
    """A number docs/benchmarks.md sets, beside the measured one."""

    name: str
    measured: float | None
    goal: str  # empty: a comparison shown for information, with no target
    met: bool | None  # None: not measured, or no target

    def line(self) -> str:
        value = "-" if self.measured is None else f"{self.measured:,.2f}"
        if not self.goal:
            return f"  {self.name:<56} {value:>9}"
        verdict = {True: "met", False: "NOT met", None: "not measured"}[self.met]
        return f"  {self.name:<56} {value:>9}  target {self.goal:<7} {verdict}"


COLUMNS = ("figure", "senders", "calls", "per s", "p50 ms", "p99 ms", "db ms", "errors", "check")


def table(figures: list[Figure | Skipped]) -> str:
    rows = [COLUMNS, tuple("-" * len(c) for c in COLUMNS)]
    rows += [row(figure) for figure in figures]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()
        for r in rows
    )


def row(figure: Figure | Skipped) -> tuple[str, ...]:
    if isinstance(figure, Skipped):
        return (figure.title, "-", "-", "-", "-", "-", "-", "-", "skipped")
    errors = ", ".join(f"{k} {v}" for k, v in sorted(figure.errors.items())) or "0"
    expected = sum(figure.outcomes[k] for k in figure.expected)
    if expected:
        errors += f" (+{expected} {'/'.join(sorted(figure.expected))})"
    return (
        figure.title,
        str(figure.senders),
        str(figure.calls),
        f"{figure.rate:,.0f}",
        f"{figure.percentile_ms(0.50):.2f}",
        f"{figure.percentile_ms(0.99):.2f}",
        "-" if figure.db_ms is None else f"{figure.db_ms:.3f}",
        errors,
        "ok" if figure.passed else "FAILED",
    )


def failed_checks(figures: list[Figure | Skipped]) -> list[str]:
    problems: list[str] = []
    for figure in figures:
        if isinstance(figure, Skipped):
            continue
        if figure.errors:
            problems.append(f"{figure.title}: errors {dict(figure.errors)}")
        problems += [
            f"{figure.title}: {check.name}: {check.detail}"
            for check in figure.checks
            if not check.passed
        ]
    return problems


def write_json(
    path: Path,
    machine: dict[str, Any],
    figures: list[Figure | Skipped],
    targets: list[Target],
    diagnostics: dict[str, Any],
) -> None:
    document = {
        "machine": machine,
        "figures": [
            {"key": f.key, "title": f.title, "skipped": f.reason}
            if isinstance(f, Skipped)
            else f.as_json()
            for f in figures
        ],
        "targets": [vars(t) for t in targets],
        "diagnostics": diagnostics,
        "passed": not failed_checks(figures),
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
