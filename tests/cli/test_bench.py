"""`tally bench --quick`: the benchmark runs end to end and every correctness check passes.

Speed is never asserted here: only that the run completes, prints its table
and summary, and that each figure's checks (balances, nothing lost, no error
but PT402 where expected) passed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from tally.paths import ROOT


@pytest.fixture(scope="module")
def quick_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "tally.bench", "--quick", "--skip-sync-engine", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    document = json.loads(out.read_text()) if out.exists() else {}
    return result, document


def test_the_quick_run_completes_and_prints_the_table_and_summary(quick_run):
    result, _ = quick_run
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "figure" in result.stdout and "senders" in result.stdout
    assert "against the targets" in result.stdout
    assert "0 failed checks" in result.stdout


def test_every_figure_that_ran_passed_its_checks(quick_run):
    _, document = quick_run
    ran = [f for f in document["figures"] if "skipped" not in f]
    assert document["passed"] is True
    assert ran and all(f["passed"] and f["checks"] for f in ran)
    assert not [c for f in ran for c in f["checks"] if not c["passed"]]


def test_the_run_measures_sidecar_floor_spends_and_cost_figures(quick_run):
    _, document = quick_run
    ran = {f["key"] for f in document["figures"] if "skipped" not in f}
    assert {
        "apply_cost_empty",
        "sidecar_1",
        "sidecar_many",
        "engine_direct",
        "floor_direct",
        "floor_http",
        "spend_many",
        "spend_floor",
        "spend_hot",
        "apply_cost_grown",
    } <= ran


def test_the_hot_account_refuses_only_with_pt402(quick_run):
    _, document = quick_run
    (hot,) = [f for f in document["figures"] if f["key"] == "spend_hot"]
    assert set(hot["outcomes"]) <= {"ok", "PT402"}
    assert hot["errors"] == {}


def test_the_skipped_sync_engine_says_why(quick_run):
    result, document = quick_run
    (sync,) = [f for f in document["figures"] if f["key"] == "sync_engine"]
    assert sync["skipped"] == "--skip-sync-engine"
    assert "stripe-sync-engine figure skipped: --skip-sync-engine" in result.stdout


def test_help_names_the_options():
    result = subprocess.run(
        [sys.executable, "-m", "tally.bench", "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0
    assert "--skip-sync-engine" in result.stdout and "--history-rows" in result.stdout
