"""scripts/tally.py (the README's bootstrapper) and the `tally` command it runs."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

from tally import cli

ROOT = Path(__file__).resolve().parents[2]


def _load_bootstrapper():
    """scripts/tally.py is a file to run, not a package: load it by path."""
    spec = importlib.util.spec_from_file_location("bootstrapper", ROOT / "scripts" / "tally.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tally = _load_bootstrapper()


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
    assert "unknown command 'deploy'" in result.stderr
    for command in cli.SUBCOMMANDS:
        assert command in result.stderr


def test_help_lists_every_command():
    result = run_tally("--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: tally <command>")
    for command, sub in cli.SUBCOMMANDS.items():
        assert f"  {command}" in result.stdout and sub.summary in result.stdout


def test_the_installed_console_script_runs_the_same_command():
    console_script = Path(sys.executable).parent / "tally"
    result = subprocess.run(
        [str(console_script), "ops", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "reconcile" in result.stdout


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
        "import runpy\n"
        f"run_in_environment = runpy.run_path({str(ROOT / 'scripts' / 'tally.py')!r})"
        "['run_in_environment']\n"
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
