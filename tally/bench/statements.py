"""pg_stat_statements, read for the apply calls the sidecar sends.

One event alone is `APPLY_SQL`; webhooks the sidecar applies together (group
commit, sidecar/db/group_commit.py) are one `APPLY_MANY_SQL` per batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
import psycopg

from sidecar.db.postgres import APPLY_MANY_SQL, APPLY_SQL


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

    def totals(self, query: str = APPLY_SQL) -> tuple[int, float]:
        """(calls, total execution ms) of one apply statement since the last reset."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            row = conn.execute(
                "select coalesce(sum(calls), 0), coalesce(sum(total_exec_time), 0)"
                "  from pg_stat_statements s join pg_database d on d.oid = s.dbid"
                " where d.datname = current_database() and s.query = %s",
                (query,),
            ).fetchone()
        return (int(row[0]), float(row[1])) if row else (0, 0.0)

    def apply_ms_per_event(self, events: int) -> float | None:
        """Execution ms of the apply statements, alone or in batches, per event applied."""
        total_ms = self.totals(APPLY_SQL)[1] + self.totals(APPLY_MANY_SQL)[1]
        return total_ms / events if events else None
