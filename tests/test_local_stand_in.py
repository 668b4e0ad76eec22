"""The local stand-in behaves like Supabase where the migrations rely on it."""

from __future__ import annotations

from tests.conftest import acting_as


def test_auth_uid_reads_the_subject_of_the_request_claims(db, make_user):
    user_id = make_user()
    with acting_as(db, "authenticated", user_id):
        assert db.execute("select auth.uid() as uid").fetchone()["uid"] == user_id


def test_auth_role_reads_the_role_of_the_request_claims(db):
    with acting_as(db, "anon"):
        assert db.execute("select auth.role() as role").fetchone()["role"] == "anon"


def test_auth_uid_is_null_without_claims(db):
    assert db.execute("select auth.uid() as uid").fetchone()["uid"] is None


def test_migrations_are_recorded_where_the_supabase_cli_looks(db):
    rows = db.execute("select version, name from supabase_migrations.schema_migrations").fetchall()
    versions = [row["version"] for row in rows]
    assert versions == sorted(versions)
