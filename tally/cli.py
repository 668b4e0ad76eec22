"""The `tally` command: one entry point for running, testing and operating tally.

Installed as a console script by `pip install .`; `python3 scripts/tally.py`
is the zero-install bootstrapper that creates `.venv` and calls this module.
Each subcommand is a module with its own `main(argv)`; this file only routes.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

from tally.paths import ROOT


@dataclass(frozen=True)
class Subcommand:
    summary: str
    module: str


SUBCOMMANDS: dict[str, Subcommand] = {
    "demo": Subcommand(
        "run the product locally and play a customer's life through it", "tally.demo"
    ),
    "test": Subcommand("run the whole test suite against a real PostgreSQL", "pytest"),
    "dev": Subcommand("keep the local stack running (for `stripe listen`)", "tally.dev"),
    "ops": Subcommand("operator jobs: events, retry, replay, reconcile, explain...", "tally.ops"),
    "bench": Subcommand("measure speed against the targets (docs/benchmarks.md)", "tally.bench"),
    "stripe-setup": Subcommand(
        "create or update the Stripe portal configuration and webhook endpoint",
        "tally.stripe_setup",
    ),
}


def usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = ["usage: tally <command> [args...]", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {sub.summary}" for name, sub in SUBCOMMANDS.items()]
    lines += ["", "`tally <command> --help` describes each command."]
    return "\n".join(lines)


def run_tests(argv: list[str]) -> int:
    """pytest from the project root, so its configuration and tests are found."""
    return subprocess.call([sys.executable, "-m", "pytest", *argv], cwd=ROOT)


def entry(module: str) -> Callable[[list[str]], int]:
    if module == "pytest":
        return run_tests
    main: Callable[[list[str]], int | None] = importlib.import_module(module).main
    return lambda argv: main(argv) or 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in SUBCOMMANDS:
        print(f"tally: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    os.chdir(ROOT)
    return entry(SUBCOMMANDS[name].module)(rest)


if __name__ == "__main__":
    sys.exit(main())
