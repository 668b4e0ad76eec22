"""Faults to inject in the middle of a run. Each is a coroutine function.

They stand for what production throws at the system: the database
restarting (cleanly or by crashing), connections cut by an operator or a
pooler, statements running into timeouts, rows locked for longer than the
sidecar waits, and the sidecar itself killed mid-request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import psycopg
from psycopg import sql

from tally.pg import LocalPostgres
from tests.simulation.processes import SidecarProcess

Fault = Callable[[], Awaitable[None]]


def terminate_backends(admin_dsn: str, dbname: str) -> Fault:
    """pg_terminate_backend on every connection to the database (the sidecar's pool too)."""

    async def fault() -> None:
        await asyncio.to_thread(_terminate, admin_dsn, dbname)

    return fault


def _terminate(admin_dsn: str, dbname: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity"
            " where datname = %s and pid <> pg_backend_pid()",
            (dbname,),
        )


def restart_postgres(server: LocalPostgres, mode: str = "fast") -> Fault:
    """Stop the server (`fast`: clean; `immediate`: a crash, recovered from WAL) and start it."""

    async def fault() -> None:
        def restart() -> None:
            server.stop(mode=mode)
            server.start()

        await asyncio.to_thread(restart)

    return fault


def statement_timeouts(admin_dsn: str, dbname: str, seconds: float = 1.5) -> Fault:
    """Every statement of the database times out after 1 ms for a while."""

    async def fault() -> None:
        await asyncio.to_thread(_set_timeout, admin_dsn, dbname, "1ms")
        await asyncio.to_thread(_terminate, admin_dsn, dbname)  # new sessions get the setting
        await asyncio.sleep(seconds)
        await asyncio.to_thread(_set_timeout, admin_dsn, dbname, None)
        await asyncio.to_thread(_terminate, admin_dsn, dbname)

    return fault


def _set_timeout(admin_dsn: str, dbname: str, value: str | None) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        name = sql.Identifier(dbname)
        if value is None:
            conn.execute(sql.SQL("alter database {} reset statement_timeout").format(name))
        else:
            conn.execute(
                sql.SQL("alter database {} set statement_timeout = {}").format(
                    name, sql.Literal(value)
                )
            )


def hold_account_locks(dsn: str, user_ids: Sequence[str], seconds: float = 2.5) -> Fault:
    """Lock some accounts longer than the sidecar waits: its calls time out and are retried."""

    async def fault() -> None:
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            await conn.execute(
                "select 1 from tally.accounts where user_id = any(%s::uuid[]) for update",
                (list(user_ids),),
            )
            await asyncio.sleep(seconds)
            await conn.rollback()

    return fault


def kill_sidecar(sidecar: SidecarProcess, down_for: float = 0.3) -> Fault:
    """SIGKILL the sidecar process mid-request, then start it again."""

    async def fault() -> None:
        await asyncio.to_thread(sidecar.kill)
        await asyncio.sleep(down_for)
        await asyncio.to_thread(sidecar.start)

    return fault
