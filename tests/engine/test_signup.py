"""The signup grant, once per user, and the backfill (docs/policy.md)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from psycopg.rows import dict_row

from tally.migrate import MIGRATIONS, apply_migrations, apply_stand_in
from tests.conftest import assert_balances_equal_ledger_sums, create_user
from tests.support import typed_events as te


def test_new_user_gets_the_signup_grant_as_plan_credits(engine, user):
    assert engine.credits(user) == (500, 0)
    balance = engine.balance(user)
    assert (balance["plan_key"], balance["subscription_status"]) == (None, None)


def test_signup_grant_is_one_ledger_row_of_kind_signup(engine, user):
    (row,) = engine.ledger(user)
    assert (row["kind"], row["plan_delta"], row["addon_delta"], row["plan_after"]) == (
        "signup",
        500,
        0,
        500,
    )


def anonymous_user(db) -> uuid.UUID:
    """A row in auth.users as Supabase Auth writes an anonymous sign-in."""
    user_id = uuid.uuid4()
    db.execute(
        "insert into auth.users (id, aud, role, is_anonymous)"
        " values (%s, 'authenticated', 'authenticated', true)",
        (user_id,),
    )
    return user_id


def convert(db, user_id: uuid.UUID) -> None:
    """The anonymous user links an identity: Supabase Auth sets is_anonymous to false."""
    db.execute(
        "update auth.users set is_anonymous = false, email = %s where id = %s",
        (f"{user_id}@example.test", user_id),
    )


def test_an_anonymous_user_gets_no_signup_credits(engine, db):
    user_id = anonymous_user(db)
    assert engine.credits(user_id) == (0, 0)
    assert engine.ledger(user_id) == []


def test_an_anonymous_user_gets_the_grant_when_it_converts(engine, db):
    user_id = anonymous_user(db)
    convert(db, user_id)
    assert engine.credits(user_id) == (500, 0)
    (row,) = engine.ledger(user_id, "signup")
    assert row["plan_delta"] == 500


def test_a_converted_user_gets_the_grant_once(engine, db):
    user_id = anonymous_user(db)
    convert(db, user_id)
    db.execute("update auth.users set is_anonymous = true where id = %s", (user_id,))
    convert(db, user_id)
    assert engine.credits(user_id) == (500, 0)
    assert len(engine.ledger(user_id, "signup")) == 1


def test_anonymous_sign_ins_farm_nothing(engine, db):
    users = [anonymous_user(db) for _ in range(5)]
    assert [engine.credits(u) for u in users] == [(0, 0)] * 5


def test_an_anonymous_buyer_keeps_its_pack_and_gets_the_grant_on_conversion(engine, db):
    user_id = anonymous_user(db)
    engine.apply(te.Buyer.new(user_id).pack_purchase("pack_500").completed())
    assert engine.credits(user_id) == (0, 500)
    convert(db, user_id)
    assert engine.credits(user_id) == (500, 500)


def test_a_user_converting_while_subscribed_gets_no_stacked_grant(engine, db):
    user_id = anonymous_user(db)
    engine.apply(te.Buyer.new(user_id).subscription("starter").invoice_paid(period=0))
    convert(db, user_id)
    assert engine.credits(user_id) == (1000, 0)
    (row,) = engine.ledger(user_id, "signup")
    assert row["plan_delta"] == 0 and "not added" in row["description"]


def test_updating_the_user_does_not_grant_again(engine, db, user):
    db.execute("update auth.users set email = 'new@example.test' where id = %s", (user,))
    assert engine.credits(user) == (500, 0)
    assert len(engine.ledger(user, "signup")) == 1


@contextmanager
def signup_credits(db, amount: int) -> Iterator[None]:
    """Set the signup grant, and put the seeded 500 back afterwards."""
    db.execute("update tally.settings set signup_credits = %s", (amount,))
    try:
        yield
    finally:
        db.execute("update tally.settings set signup_credits = 500")


def test_signup_grant_amount_is_a_database_setting(engine, db):
    with signup_credits(db, 120):
        user = create_user(db)
    assert engine.credits(user) == (120, 0)


def test_signup_grant_of_zero_opens_an_account(engine, db):
    with signup_credits(db, 0):
        user = create_user(db)
    assert engine.credits(user) == (0, 0)


def test_signup_grant_is_spendable_as_plan_credits(engine, user):
    engine.spend(user, 500)
    assert engine.credits(user) == (0, 0)


def test_a_subscription_period_replaces_the_signup_grant(engine, buyer):
    engine.spend(buyer.user_id, 100)
    engine.apply(buyer.subscription("starter").invoice_paid(period=0))
    assert engine.credits(buyer.user_id) == (1000, 0)


@pytest.fixture
def bare_database(pg_server) -> Iterator[str]:
    """A database with only the Supabase stand-in: as a project before tally."""
    name = f"bare_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(f"create database {name}")
    dsn = pg_server.dsn(name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        apply_stand_in(conn)
    yield dsn
    try:
        assert_balances_equal_ledger_sums(dsn)
    finally:
        with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
            conn.execute(f"drop database if exists {name} with (force)")


def signup_rows(conn: psycopg.Connection) -> list[dict]:
    return conn.execute(
        "select b.user_id, b.plan_credits, b.addon_credits,"
        " (select count(*) from public.credit_ledger l"
        "   where l.user_id = b.user_id and l.kind = 'signup') as grants"
        " from public.credit_balances b order by b.user_id"
    ).fetchall()


def backfill_statements() -> list[str]:
    """The top-level statements of the migrations that grant existing users."""
    statements = [
        match.group(0)
        for path in MIGRATIONS.glob("*.sql")
        for match in re.finditer(r"^select [^;]*auth\.users[^;]*;", path.read_text(), re.M)
    ]
    assert statements, "no backfill statement over auth.users found in the migrations"
    return statements


def test_users_existing_before_the_migration_get_the_signup_grant(bare_database):
    with psycopg.connect(bare_database, autocommit=True, row_factory=dict_row) as conn:
        users = sorted(create_user(conn) for _ in range(3))
        apply_migrations(conn)
        rows = signup_rows(conn)
    assert [(r["user_id"], r["plan_credits"], r["grants"]) for r in rows] == [
        (user, 500, 1) for user in users
    ]


def test_rerunning_the_backfill_grants_nobody_twice(bare_database):
    with psycopg.connect(bare_database, autocommit=True, row_factory=dict_row) as conn:
        early = create_user(conn)
        apply_migrations(conn)
        late = create_user(conn)
        with conn.transaction():
            for statement in backfill_statements():
                conn.execute(statement)
        rows = signup_rows(conn)
    assert {(r["user_id"], r["plan_credits"], r["grants"]) for r in rows} == {
        (early, 500, 1),
        (late, 500, 1),
    }


def test_anonymous_users_existing_before_the_migration_get_nothing_until_they_convert(
    bare_database,
):
    with psycopg.connect(bare_database, autocommit=True, row_factory=dict_row) as conn:
        named = create_user(conn)
        anonymous = anonymous_user(conn)
        apply_migrations(conn)
        before = {r["user_id"]: (r["plan_credits"], r["grants"]) for r in signup_rows(conn)}
        convert(conn, anonymous)
        after = {r["user_id"]: (r["plan_credits"], r["grants"]) for r in signup_rows(conn)}
    assert before == {named: (500, 1), anonymous: (0, 0)}
    assert after == {named: (500, 1), anonymous: (500, 1)}
