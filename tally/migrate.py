"""Apply the stand-in, migrations and seed to a database.

Versions are recorded in supabase_migrations.schema_migrations exactly where
and how the Supabase CLI records them, so `supabase migration up --db-url`
and this runner can manage the same database.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import psycopg

from tally.paths import MIGRATIONS, SEED, STAND_IN

HISTORY_DDL = """
create schema if not exists supabase_migrations;
create table if not exists supabase_migrations.schema_migrations (
  version text not null primary key
);
alter table supabase_migrations.schema_migrations add column if not exists statements text[];
alter table supabase_migrations.schema_migrations add column if not exists name text;
"""


def migration_files() -> list[Path]:
    return sorted(MIGRATIONS.glob("*.sql"))


def split_version(path: Path) -> tuple[str, str]:
    version, _, name = path.stem.partition("_")
    return version, name


def apply_stand_in(conn: psycopg.Connection) -> None:
    with conn.transaction():
        conn.execute(STAND_IN.read_text())


def apply_migrations(conn: psycopg.Connection) -> list[str]:
    """Apply each pending migration in its own transaction; return versions applied."""
    with conn.transaction():
        conn.execute(HISTORY_DDL)
    done = {
        row[0] for row in conn.execute("select version from supabase_migrations.schema_migrations")
    }
    applied = []
    for path in migration_files():
        version, name = split_version(path)
        if version in done:
            continue
        sql = path.read_text()
        with conn.transaction():
            conn.execute(sql)
            conn.execute(
                "insert into supabase_migrations.schema_migrations (version, name, statements)"
                " values (%s, %s, %s)",
                (version, name, [sql]),
            )
        applied.append(version)
    return applied


def apply_seed(conn: psycopg.Connection) -> None:
    if SEED.exists():
        with conn.transaction():
            conn.execute(SEED.read_text())


def prepare_database(dsn: str, *, stand_in: bool = True, seed: bool = True) -> list[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        if stand_in:
            apply_stand_in(conn)
        applied = apply_migrations(conn)
        if seed:
            apply_seed(conn)
    return applied


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("database_url")
    parser.add_argument(
        "--no-stand-in", action="store_true", help="the database is a real Supabase project"
    )
    parser.add_argument("--no-seed", action="store_true")
    args = parser.parse_args()
    applied = prepare_database(
        args.database_url, stand_in=not args.no_stand_in, seed=not args.no_seed
    )
    print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none pending'}")


if __name__ == "__main__":
    main()
