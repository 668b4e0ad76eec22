"""The README's entry point: `python3 scripts/tally.py demo | test | dev`.

Works on a fresh machine with only Python 3.11+: it creates .venv, installs
the project into it (once, or again when pyproject.toml changes) and runs the
chosen command inside it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
PYTHON = VENV / "bin" / "python"
STAMP = VENV / ".tally-installed"

COMMANDS = {
    "demo": ["-m", "scripts.demo"],
    "dev": ["-m", "scripts.dev"],
    "test": ["-m", "pytest"],
}


def ensure_environment() -> None:
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    if not PYTHON.exists():
        venv.create(VENV, with_pip=True)
    pip = [str(PYTHON), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "-e", f"{ROOT}[dev]"], check=True)
    STAMP.write_text(wanted)


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(f"usage: python3 scripts/tally.py {{{'|'.join(COMMANDS)}}} [args...]")
        return 2
    if sys.version_info < (3, 11):  # noqa: UP036 -- runs under any system python
        print("tally needs Python 3.11 or newer")
        return 2
    ensure_environment()
    command = [str(PYTHON), *COMMANDS[sys.argv[1]], *sys.argv[2:]]
    os.chdir(ROOT)
    return subprocess.run(command).returncode


if __name__ == "__main__":
    sys.exit(main())
