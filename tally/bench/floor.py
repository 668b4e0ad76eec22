"""The floor: the least per-event work any correct design does.

In one transaction (one statement, one round trip): insert the event id
(a redelivery does nothing), lock and update the user's account row, insert
a ledger row, store the raw payload. Plain tables in a schema of their own
(`bench_floor`), no functions, no triggers, no row-level security.

It runs two ways over the same number of connections as the sidecar:
directly from the benchmark (the database's floor) and behind a trivial
aiohttp endpoint in its own process (floor_server.py) that verifies the
signature with the sidecar's own code, reads the event id and user id and
runs the statement (the floor of a webhook service, the sidecar's peer).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import psycopg

FLOOR_SCHEMA = "bench_floor"

FLOOR_DDL = f"""
drop schema if exists {FLOOR_SCHEMA} cascade;
create schema {FLOOR_SCHEMA};
create table {FLOOR_SCHEMA}.events (
  event_id text primary key,
  payload jsonb not null,
  received_at timestamptz not null default now()
);
create table {FLOOR_SCHEMA}.accounts (
  user_id uuid primary key,
  balance integer not null check (balance >= 0),
  updated_at timestamptz not null default now()
);
create table {FLOOR_SCHEMA}.ledger (
  id bigint generated always as identity primary key,
  user_id uuid not null,
  delta integer not null,
  balance_after integer not null,
  event_id text not null,
  created_at timestamptz not null default now()
);
-- A user reads their ledger: any design indexes it by user.
create index on {FLOOR_SCHEMA}.ledger (user_id, created_at);
grant usage on schema {FLOOR_SCHEMA} to service_role;
grant select, insert, update on all tables in schema {FLOOR_SCHEMA} to service_role;
"""

# $1 event id, $2 user id, $3 raw payload (JSON text), $4 the balance to set.
FLOOR_SQL = f"""
with event as (
  insert into {FLOOR_SCHEMA}.events (event_id, payload) values ($1, $3::text::jsonb)
  on conflict (event_id) do nothing
  returning event_id
), before as (
  select a.user_id, a.balance from {FLOOR_SCHEMA}.accounts a
   where a.user_id = $2::text::uuid and exists (select from event)
     for update
), account as (
  update {FLOOR_SCHEMA}.accounts a set balance = $4, updated_at = now()
    from before where a.user_id = before.user_id
  returning a.user_id, a.balance, before.balance as previous
)
insert into {FLOOR_SCHEMA}.ledger (user_id, delta, balance_after, event_id)
select user_id, balance - previous, balance, $1 from account
returning id
"""


def create_floor(url: str, users: Sequence[uuid.UUID | str], balance: int = 0) -> None:
    """Fresh floor tables with one account per user."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(FLOOR_DDL)
        conn.execute(
            f"insert into {FLOOR_SCHEMA}.accounts (user_id, balance) select unnest(%s::uuid[]), %s",
            ([str(u) for u in users], balance),
        )


def floor_counts(url: str, expected_balance: int) -> tuple[int, int, int]:
    """(events stored, ledger rows, accounts not at the expected balance)."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            f"""select (select count(*) from {FLOOR_SCHEMA}.events),
                       (select count(*) from {FLOOR_SCHEMA}.ledger),
                       (select count(*) from {FLOOR_SCHEMA}.accounts where balance <> %s)""",
            (expected_balance,),
        ).fetchone()
    return (row[0], row[1], row[2]) if row else (0, 0, -1)


def drop_floor(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"drop schema if exists {FLOOR_SCHEMA} cascade")


# --------------------------------------------------------------------------
# The one-statement spend floor (figure 4)
# --------------------------------------------------------------------------

SPEND_FLOOR_DDL = f"""
create schema if not exists {FLOOR_SCHEMA};
drop table if exists {FLOOR_SCHEMA}.balances;
create table {FLOOR_SCHEMA}.balances (
  user_id uuid primary key,
  balance integer not null check (balance >= 0)
);
grant usage on schema {FLOOR_SCHEMA} to service_role;
grant select, update on {FLOOR_SCHEMA}.balances to service_role;
"""

SPEND_FLOOR_SQL = (
    f"update {FLOOR_SCHEMA}.balances set balance = balance - $2"
    " where user_id = $1::text::uuid and balance >= $2"
    " returning balance"
)


def create_spend_floor(url: str, start: dict[str, int]) -> None:
    """A plain balances table holding the same accounts and balances."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SPEND_FLOOR_DDL)
        conn.execute(
            f"insert into {FLOOR_SCHEMA}.balances (user_id, balance)"
            " select * from unnest(%s::uuid[], %s::integer[])",
            (list(start), list(start.values())),
        )


def spend_floor_balances(url: str) -> dict[str, int]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(f"select user_id::text, balance from {FLOOR_SCHEMA}.balances")
        return {row[0]: row[1] for row in rows}
