"""The sidecar as a real process (`python -m sidecar`), to kill with SIGKILL and start again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from tally.paths import ROOT
from tally.pg import free_port


@dataclass
class SidecarProcess:
    """`python -m sidecar` on a loopback port, against `database_url`."""

    database_url: str
    webhook_secret: str
    port: int = field(default_factory=free_port)
    db_timeout: float = 3.0
    log_path: Path | None = None
    process: subprocess.Popen | None = None
    kills: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(ROOT),
            "ENV": "development",
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "DATABASE_URL": self.database_url,
            "DB_TIMEOUT": str(self.db_timeout),
            "STRIPE_WEBHOOK_SECRETS": self.webhook_secret,
            "STRIPE_SECRET_KEY": "sk_test_chaos",
            "APP_BASE_URL": "http://localhost:3000",
            "SUPABASE_JWT_SECRET": "chaos-jwt-secret-with-at-least-32-characters",
        }

    def start(self, timeout: float = 20.0) -> SidecarProcess:
        if self.log_path is None:
            self.process = self._spawn(subprocess.DEVNULL)
        else:
            with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
                self.process = self._spawn(log)
        self.wait_healthy(timeout)
        return self

    def _spawn(self, log: IO[bytes] | int) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "sidecar"],
            cwd=ROOT,
            env=self.environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"sidecar exited with {self.process.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.05)
        raise RuntimeError("sidecar did not become healthy")

    def kill(self) -> None:
        """SIGKILL: no shutdown, in-flight requests cut mid-way."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.kills += 1

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
