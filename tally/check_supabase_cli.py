"""Apply the migrations with the real Supabase CLI and lint them (a CI step).

The migrations must apply unchanged with `supabase migration up
--db-url ...`. This installs the pinned CLI from npm into a temporary
directory, starts a fresh local PostgreSQL holding only the Supabase
stand-in (what a new Supabase project already has), runs the CLI's
`migration up` from a copy of the project's supabase/ directory, then
`supabase db lint --fail-on error` (plpgsql_check: every PL/pgSQL function
is type-checked against the schema). Finally our own runner must find
nothing pending: both record versions in the same place.

Needs node/npm and the plpgsql_check extension for the server's major
version (Debian: postgresql-15-plpgsql-check).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from tally.migrate import apply_migrations, apply_stand_in, migration_files, split_version
from tally.paths import ROOT
from tally.pg import LocalPostgres

SUPABASE_CLI_VERSION = "2.117.0"
DATABASE = "supabase_cli_check"


class CheckFailed(RuntimeError):
    pass


def install_cli(into: Path) -> Path:
    """`npm i -E supabase@<pinned>` into a directory of its own; the CLI's path."""
    run(
        ["npm", "install", "--no-audit", "--no-fund", "--silent", "--prefix", str(into),
         "-E", f"supabase@{SUPABASE_CLI_VERSION}"],
        "installing the Supabase CLI from npm",
    )  # fmt: skip
    cli = into / "node_modules" / ".bin" / "supabase"
    version = run([str(cli), "--version"], "asking the CLI its version").strip()
    if version != SUPABASE_CLI_VERSION:
        raise CheckFailed(f"expected Supabase CLI {SUPABASE_CLI_VERSION}, got {version!r}")
    return cli


def run(command: list[str], what: str, cwd: Path | None = None) -> str:
    print(f"$ {' '.join(command)}", flush=True)
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    output = (result.stdout + result.stderr).strip()
    if output:
        print(output, flush=True)
    if result.returncode != 0:
        raise CheckFailed(f"{what} failed (exit {result.returncode})")
    return result.stdout


@contextmanager
def stand_in_only_database(root: Path) -> Iterator[str]:
    """A fresh database with only what a new Supabase project has."""
    server = LocalPostgres(root, fast_and_unsafe=True)
    server.start()
    try:
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            conn.execute(f"create database {DATABASE}")
        dsn = server.dsn(DATABASE)
        with psycopg.connect(dsn, autocommit=True) as conn:
            apply_stand_in(conn)
            require_plpgsql_check(conn)
        yield dsn
    finally:
        server.stop(mode="immediate")


def require_plpgsql_check(conn: psycopg.Connection) -> None:
    """`db lint` creates plpgsql_check itself (and rolls back): it must be installable."""
    row = conn.execute(
        "select exists (select 1 from pg_available_extensions where name = 'plpgsql_check'),"
        " current_setting('server_version_num')::int / 10000"
    ).fetchone()
    available, major = row if row else (False, 0)
    if not available:
        raise CheckFailed(
            f"plpgsql_check is not installed for PostgreSQL {major}: "
            f"apt-get install -y postgresql-{major}-plpgsql-check"
        )


def project_copy(workdir: Path) -> Path:
    """supabase/ without the local stand-in, as a Supabase project would hold it."""
    shutil.copytree(ROOT / "supabase", workdir / "supabase", ignore=shutil.ignore_patterns("local"))
    return workdir


def cli_url(dsn: str) -> str:
    # The CLI insists on TLS unless told otherwise; the local server has none.
    return f"{dsn}?sslmode=disable"


def check_history_matches(dsn: str) -> None:
    """The CLI recorded every migration, and our runner agrees nothing is pending."""
    expected = [split_version(path)[0] for path in migration_files()]
    with psycopg.connect(dsn, autocommit=True) as conn:
        recorded = [
            row[0]
            for row in conn.execute(
                "select version from supabase_migrations.schema_migrations order by version"
            )
        ]
        pending = apply_migrations(conn)
    if recorded != expected:
        raise CheckFailed(f"the CLI recorded {recorded}, the project has {expected}")
    if pending:
        raise CheckFailed(f"tally/migrate.py still found {pending} pending after the CLI")
    print(f"history: {len(recorded)} migration(s) recorded by the CLI, none pending for ours")


def check(cli: Path | None) -> None:
    with tempfile.TemporaryDirectory(prefix="tally-supabase-cli-") as tmp:
        tmpdir = Path(tmp)
        os.chmod(tmpdir, 0o755)  # the server's unprivileged user must reach its data dir
        cli = cli or install_cli(tmpdir / "cli")
        project = project_copy(tmpdir / "project")
        with stand_in_only_database(tmpdir / "pg") as dsn:
            run([str(cli), "migration", "up", "--db-url", cli_url(dsn)], "migration up", project)
            check_history_matches(dsn)
            run(
                [str(cli), "db", "lint", "--db-url", cli_url(dsn), "--fail-on", "error"],
                "db lint",
                project,
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cli", type=Path, help="an installed supabase binary to use instead")
    args = parser.parse_args(argv)
    try:
        check(args.cli)
    except CheckFailed as error:
        print(f"supabase cli check: {error}", file=sys.stderr)
        return 1
    print("supabase cli check: migrations applied with the Supabase CLI and lint clean")
    return 0


if __name__ == "__main__":
    sys.exit(main())
