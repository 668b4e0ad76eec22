"""pg_stat_statements, read for one statement: the apply call the sidecar sends."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
import psycopg

from tally.bench.db import APPLY_SQL


@dataclass(frozen=True)
class ApplyStatements:
    """The apply statement's counters in one database (read as the connecting superuser)."""

    url: str

    async def reset(self) -> None:
        """Forget everything counted so far, in every database."""
        conn = await asyncpg.connect(self.url)
        try:
            await conn.execute("select pg_stat_statements_reset()")
        finally:
            await conn.close()

    def totals(self) -> tuple[int, float]:
        """(calls, total execution ms) of the apply statement since the last reset."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            row = conn.execute(
                "select coalesce(sum(calls), 0), coalesce(sum(total_exec_time), 0)"
                "  from pg_stat_statements s join pg_database d on d.oid = s.dbid"
                " where d.datname = current_database() and s.query = %s",
                (APPLY_SQL,),
            ).fetchone()
        return (int(row[0]), float(row[1])) if row else (0, 0.0)

    def apply_ms(self) -> float | None:
        """Mean execution ms per apply call since the last reset."""
        calls, total_ms = self.totals()
        return total_ms / calls if calls else None
