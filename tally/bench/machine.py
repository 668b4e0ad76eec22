"""What the figures were measured on: CPUs, memory, load, PostgreSQL, date."""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path
from typing import Any

import psycopg


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except (OSError, ValueError):
        pass
    return None


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def describe(database_url: str, commits: str) -> dict[str, Any]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("select version()").fetchone()
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model(),
        "memory_gib": memory_gib(),
        "load_average_at_start": load_average(),
        "postgresql": (row[0] if row else "?").split(" on ")[0],
        "python": platform.python_version(),
        "commits": commits,
    }


def summary_line(machine: dict[str, Any]) -> str:
    return (
        f"machine: {machine['cpus']} CPUs ({machine['cpu_model']}), "
        f"{machine['memory_gib']} GiB, load {machine['load_average_at_start']}; "
        f"{machine['postgresql']}, {machine['commits']}; Python {machine['python']}; "
        f"{machine['date']}"
    )
