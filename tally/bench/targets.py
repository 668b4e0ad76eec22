"""The speed targets docs/benchmarks.md sets, read off one run's figures."""

from __future__ import annotations

from collections.abc import Callable

from tally.bench.report import Figure, Skipped, Target

Figures = dict[str, Figure]


def ratio(figures: Figures, ours: str, theirs: str) -> float | None:
    if ours in figures and theirs in figures and figures[theirs].rate:
        return figures[ours].rate / figures[theirs].rate
    return None


def target(name: str, value: float | None, goal: str, meets: Callable[[float], bool]) -> Target:
    return Target(name, value, goal, None if value is None else meets(value))


def targets(measured: list[Figure | Skipped]) -> list[Target]:
    figures = {f.key: f for f in measured if isinstance(f, Figure)}
    sidecar = figures.get("sidecar_many")
    hot = figures.get("spend_hot")
    empty, grown = figures.get("apply_cost_empty"), figures.get("apply_cost_grown")
    flat = grown.db_ms / empty.db_ms if grown and empty and grown.db_ms and empty.db_ms else None
    return [
        target(
            "sidecar p99 at 16 senders (ms)",
            sidecar and sidecar.percentile_ms(0.99),
            "< 50",
            lambda v: v < 50,
        ),
        target(
            "sidecar / stripe-sync-engine, events/s at 16",
            ratio(figures, "sidecar_many", "sync_engine"),
            ">= 1.5",
            lambda v: v >= 1.5,
        ),
        target(
            "apply_stripe_event database ms per event, 1 sender",
            empty and empty.db_ms,
            "<= 0.5",
            lambda v: v <= 0.5,
        ),
        target(
            "spend_credits / one-statement floor, calls/s",
            ratio(figures, "spend_many", "spend_floor"),
            ">= 0.5",
            lambda v: v >= 0.5,
        ),
        target(
            "reserve_credits / one-statement floor, calls/s",
            ratio(figures, "reserve_many", "spend_floor"),
            ">= 0.5",
            lambda v: v >= 0.5,
        ),
        target(
            "hot account: errors other than PT402 (and failed checks)",
            hot and float(sum(hot.errors.values()) + sum(not c.passed for c in hot.checks)),
            "= 0",
            lambda v: v == 0,
        ),
        target("per-event database cost, grown / empty", flat, "<= 1.3", lambda v: v <= 1.3),
    ]


def comparisons(measured: list[Figure | Skipped]) -> list[Target]:
    """Ratios with no target, that say where the time goes."""
    figures = {f.key: f for f in measured if isinstance(f, Figure)}
    pairs = [
        ("sidecar / floor service (both HTTP, same connections)", "sidecar_many", "floor_http"),
        ("sidecar / floor direct", "sidecar_many", "floor_direct"),
        ("sidecar / apply_stripe_event direct", "sidecar_many", "engine_direct"),
        ("apply_stripe_event direct / floor direct", "engine_direct", "floor_direct"),
        ("floor service / floor direct", "floor_http", "floor_direct"),
        # Where the 1.5x target sits against the least work any design does
        # behind the same HTTP stack: the sidecar can at best approach this.
        ("floor service / stripe-sync-engine", "floor_http", "sync_engine"),
    ]
    return [Target(name, ratio(figures, a, b), "", None) for name, a, b in pairs]
