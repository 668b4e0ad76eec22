"""tally/check_supabase_cli.py: what the real Supabase CLI is given."""

from __future__ import annotations

from tally import check_supabase_cli as check
from tally.migrate import migration_files


def test_the_cli_project_holds_the_migrations_but_never_the_local_stand_in(tmp_path):
    project = check.project_copy(tmp_path)
    copied = sorted(p.name for p in (project / "supabase" / "migrations").glob("*.sql"))
    assert copied == [p.name for p in migration_files()]
    assert not (project / "supabase" / "local").exists()


def test_the_cli_is_told_the_local_server_has_no_tls():
    url = check.cli_url("postgresql://postgres@127.0.0.1:5432/db")
    assert url == "postgresql://postgres@127.0.0.1:5432/db?sslmode=disable"


def test_the_history_check_passes_when_every_migration_is_recorded(database_url):
    # The harness's database was migrated by tally/migrate.py, which records
    # versions exactly where the CLI does: the same check must accept it.
    check.check_history_matches(database_url)
