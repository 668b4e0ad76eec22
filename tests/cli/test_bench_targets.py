"""The bench's targets and ratios are computed from the figures of one run."""

from __future__ import annotations

from collections import Counter

from tally.bench import targets
from tally.bench.report import Figure, Skipped


def figure(key: str, calls: int, seconds: float = 1.0) -> Figure:
    return Figure(key, key, 16, seconds, [0.01] * calls, Counter(ok=calls))


def ratios_by_name(measured: list[Figure | Skipped]) -> dict[str, float | None]:
    return {t.name: t.measured for t in targets.comparisons(measured)}


def test_the_floor_service_is_set_beside_the_sync_engine():
    ratios = ratios_by_name([figure("floor_http", 1500), figure("sync_engine", 1000)])
    assert ratios["floor service / stripe-sync-engine"] == 1.5


def test_a_ratio_whose_figure_was_skipped_is_not_measured():
    ratios = ratios_by_name([figure("floor_http", 1500), Skipped("sync_engine", "t", "no node")])
    assert ratios["floor service / stripe-sync-engine"] is None


def test_the_sidecar_target_is_its_rate_over_the_sync_engines():
    measured = [figure("sidecar_many", 600), figure("sync_engine", 1200)]
    by_name = {t.name: t for t in targets.targets(measured)}
    (sync,) = [t for name, t in by_name.items() if "stripe-sync-engine" in name]
    assert sync.measured == 0.5
    assert sync.met is False
