"""scripts/tally.py: the README's entry point."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from scripts import tally

ROOT = Path(__file__).resolve().parents[2]


def run_tally(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "tally.py"), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_an_unknown_command_prints_the_commands_and_exits_2():
    result = run_tally("deploy")
    assert result.returncode == 2
    assert "usage: python3 scripts/tally.py {demo|dev|ops|test}" in result.stdout


def test_ops_is_reachable_through_the_entry_point():
    result = run_tally("ops", "--help")
    assert result.returncode == 0
    assert "reconcile" in result.stdout


def test_the_commands_exit_code_is_passed_on():
    assert tally.run_in_environment([sys.executable, "-c", "raise SystemExit(3)"]) == 3


def test_sigterm_is_passed_to_the_command_which_stops_in_its_own_way():
    waiter = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(7))\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    entry = (
        "import sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from scripts.tally import run_in_environment\n"
        f"sys.exit(run_in_environment([sys.executable, '-c', {waiter!r}]))\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", entry], stdout=subprocess.PIPE, text=True
    ) as process:
        assert process.stdout.readline().strip() == "ready"
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(timeout=30) == 7


def test_the_sigterm_handler_is_restored_afterwards():
    before = signal.getsignal(signal.SIGTERM)
    tally.run_in_environment([sys.executable, "-c", "pass"])
    assert signal.getsignal(signal.SIGTERM) == before
