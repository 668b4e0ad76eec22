"""The README's zero-install entry point: `python3 scripts/tally.py <command>`.

Works on a fresh machine with only Python 3.11+: it creates .venv, installs
the project into it (once, or again when pyproject.toml changes) and runs the
`tally` command (tally/cli.py) inside it with the same arguments. After
`pip install .`, `tally <command>` does the same without this file.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
PYTHON = VENV / "bin" / "python"
STAMP = VENV / ".tally-installed"


def ensure_environment() -> None:
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    if not PYTHON.exists():
        print(f"creating {VENV} and installing the project (once)...", flush=True)
    pip = pip_command()
    subprocess.run([*pip, "install", "--disable-pip-version-check", "-q", "-e", f"{ROOT}[dev]"],
                   check=True)  # fmt: skip
    STAMP.write_text(wanted)


def pip_command() -> list[str]:
    """A pip that installs into .venv, creating .venv if needed.

    Debian's python3 may lack ensurepip (the python3-venv package): then the
    venv is made without pip and the system's pip installs into it.
    """
    if not PYTHON.exists():
        try:
            venv.create(VENV, with_pip=True)
        except subprocess.CalledProcessError:
            venv.create(VENV, with_pip=False, clear=True)
    if subprocess.run([str(PYTHON), "-m", "pip", "--version"], capture_output=True).returncode == 0:
        return [str(PYTHON), "-m", "pip"]
    if subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode:
        sys.exit("tally needs pip: install python3-pip and python3-venv, then run this again")
    return [sys.executable, "-m", "pip", "--python", str(PYTHON)]


def run_in_environment(command: list[str]) -> int:
    """Run the command; Ctrl-C and SIGTERM reach it, and it stops itself in order."""
    started: list[subprocess.Popen[bytes]] = []

    def forward(signum: int, frame: object) -> None:
        for child in started:
            child.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, forward)  # before the child exists: no gap
    try:
        child = subprocess.Popen(command)
        started.append(child)
        while True:
            try:
                return child.wait()
            except KeyboardInterrupt:
                continue  # the terminal sent the same Ctrl-C to the child
    finally:
        signal.signal(signal.SIGTERM, previous)


def main() -> int:
    if sys.version_info < (3, 11):  # noqa: UP036 -- runs under any system python
        print("tally needs Python 3.11 or newer")
        return 2
    ensure_environment()
    command = [str(PYTHON), "-m", "tally", *sys.argv[1:]]
    os.chdir(ROOT)
    return run_in_environment(command)


if __name__ == "__main__":
    sys.exit(main())
