"""How operator commands print: plain tables for people, JSON for machines."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

Row = dict[str, Any]
# Timestamps as the database's JSON writes them: shown to the second.
_TIMESTAMP = re.compile(r"(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})(?:\.\d+)?(?:\+00:00|Z)")


def render_table(rows: Sequence[Row], columns: Sequence[str]) -> str:
    """A plain text table, one line per row; JSON values shown compactly."""
    cells = [[format_cell(row.get(column)) for column in columns] for row in rows]
    widths = [max([len(c), *(len(line[i]) for line in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)) for line in cells]
    return "\n".join(line.rstrip() for line in lines)


def format_cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), default=str)
    if hasattr(value, "isoformat"):
        return str(value.isoformat(timespec="seconds"))
    if isinstance(value, str):
        return short_time(value)
    return str(value)


def short_time(text: str) -> str:
    """``2026-11-29T06:09:24.123+00:00`` as ``2026-11-29 06:09:24`` (UTC); other text as is."""
    match = _TIMESTAMP.fullmatch(text)
    return f"{match[1]} {match[2]}" if match else text


def signed(number: int) -> str:
    return f"+{number}" if number > 0 else str(number)


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))
