"""Row-level security and grants, exercised as PostgREST's real roles (docs/interface.md).

`acting_as` switches role and sets request.jwt.claims exactly as PostgREST
does for a request, inside a transaction that is rolled back.
"""

from __future__ import annotations

import uuid

import psycopg
import pytest

from tests.conftest import acting_as
from tests.support import typed_events as te

CLIENT_ROLES = ["anon", "authenticated"]
PUBLIC_RELATIONS = ["plans", "credit_packs", "credit_balances", "credit_ledger"]
CATALOG = ["plans", "credit_packs"]

# Every credit-changing function of docs/interface.md (and the operator's retry), called
# with arguments that would succeed for service_role.
FUNCTION_CALLS = {
    "apply_stripe_event": "select public.apply_stripe_event(%(event)s::jsonb)",
    "apply_stripe_events": "select public.apply_stripe_events(jsonb_build_array(%(event)s::jsonb))",
    "spend_credits": "select public.spend_credits(%(user)s::uuid, 1, 'k-' || %(nonce)s)",
    "reverse_spend": "select public.reverse_spend(%(user)s::uuid, %(spend_key)s)",
    "reserve_credits": "select public.reserve_credits(%(user)s::uuid, 1, 'h-' || %(nonce)s)",
    "commit_hold": "select public.commit_hold(%(user)s::uuid, %(hold_key)s)",
    "release_hold": "select public.release_hold(%(user)s::uuid, %(hold_key)s)",
    "adjust_credits": "select public.adjust_credits(%(user)s::uuid, 5, 'gift', 'a-' || %(nonce)s)",
    "link_stripe_customer": (
        "select public.link_stripe_customer(%(user)s::uuid, 'cus_x' || %(nonce)s)"
    ),
    "retry_rejected_stripe_events": "select public.retry_rejected_stripe_events()",
}


@pytest.fixture
def owner(make_user, engine):
    user = make_user()
    engine.apply(te.Buyer.new(user).pack_purchase("pack_500").completed())
    engine.spend(user, 10, key=f"owner-spend-{user}")
    engine.reserve(user, 5, f"owner-hold-{user}")
    return user


@pytest.fixture
def stranger(make_user, engine):
    user = make_user()
    engine.spend(user, 20, key=f"stranger-spend-{user}")
    return user


def call_args(user, spend_key: str) -> dict:
    event = te.Buyer.new(user).pack_purchase("pack_500").completed()
    return {
        "event": psycopg.types.json.Jsonb(event),
        "user": str(user),
        "nonce": uuid.uuid4().hex,
        "spend_key": spend_key,
        "hold_key": f"owner-hold-{user}",
    }


def user_ids(db, relation: str) -> set[uuid.UUID]:
    return {row["user_id"] for row in db.execute(f"select user_id from public.{relation}")}


def sqlstate_of(db, sql: str, params=None) -> str | None:
    try:
        db.execute(sql, params)
    except psycopg.Error as error:
        return error.sqlstate
    return None


@pytest.mark.parametrize("relation", ["credit_balances", "credit_ledger"])
def test_owner_reads_only_their_own_rows(db, owner, stranger, relation):
    with acting_as(db, "authenticated", owner):
        assert user_ids(db, relation) == {owner}


@pytest.mark.parametrize("relation", ["credit_balances", "credit_ledger"])
def test_another_user_does_not_see_the_owners_rows(db, owner, stranger, relation):
    with acting_as(db, "authenticated", stranger):
        assert owner not in user_ids(db, relation)


def test_owner_sees_their_balance(db, owner):
    with acting_as(db, "authenticated", owner):
        row = db.execute("select * from public.credit_balances").fetchone()
    assert (row["plan_credits"], row["addon_credits"], row["total_credits"]) == (490, 500, 990)


def test_owner_sees_their_ledger_newest_first(db, owner, engine):
    engine.adjust(owner, 7, "goodwill")
    with acting_as(db, "authenticated", owner):
        kinds = [row["kind"] for row in db.execute("select kind from public.credit_ledger")]
    assert kinds == ["adjustment", "spend", "addon_purchase", "signup"]


@pytest.mark.parametrize("relation", ["credit_balances", "credit_ledger"])
def test_anon_reads_no_balance_or_ledger_row(db, owner, relation):
    with acting_as(db, "anon"):
        try:
            rows = db.execute(f"select * from public.{relation}").fetchall()
        except psycopg.errors.InsufficientPrivilege:
            rows = []
    assert rows == []


@pytest.mark.parametrize("role", CLIENT_ROLES)
@pytest.mark.parametrize("relation", CATALOG)
def test_everyone_reads_the_catalog(db, owner, role, relation):
    with acting_as(db, role, owner if role == "authenticated" else None):
        keys = {row["key"] for row in db.execute(f"select key from public.{relation}")}
    expected = te.PLANS if relation == "plans" else te.PACKS
    assert keys == set(expected)


def writes(relation: str) -> dict[str, str]:
    insert_values = {
        "plans": "('hack', 'Hack', 'price_hack', 99999, true)",
        "credit_packs": "('hack', 'Hack', 'price_hack', 99999, true)",
    }
    columns = {
        "plans": "(key, name, stripe_price_id, monthly_credits, active)",
        "credit_packs": "(key, name, stripe_price_id, credits, active)",
    }
    set_clause = {
        "plans": "monthly_credits = 99999",
        "credit_packs": "credits = 99999",
        "credit_balances": "plan_credits = 99999",
        "credit_ledger": "plan_delta = 99999",
    }
    statements = {
        "update": f"update public.{relation} set {set_clause[relation]}",
        "delete": f"delete from public.{relation}",
        "truncate": f"truncate public.{relation}",
    }
    if relation in insert_values:
        statements["insert"] = (
            f"insert into public.{relation} {columns[relation]} values {insert_values[relation]}"
        )
    else:
        statements["insert"] = (
            f"insert into public.{relation} (user_id) values ('{uuid.uuid4()}'::uuid)"
        )
    return statements


WRITE_CASES = [
    pytest.param(role, relation, verb, id=f"{role}-{verb}-{relation}")
    for role in CLIENT_ROLES
    for relation in PUBLIC_RELATIONS
    for verb in ("insert", "update", "delete", *(("truncate",) if relation in CATALOG else ()))
]


@pytest.mark.parametrize(("role", "relation", "verb"), WRITE_CASES)
def test_no_client_can_write_any_public_table_or_view(db, owner, role, relation, verb):
    with acting_as(db, role, owner if role == "authenticated" else None):
        state = sqlstate_of(db, writes(relation)[verb])
    assert state == "42501"


FUNCTION_CASES = [
    pytest.param(role, name, id=f"{role}-{name}")
    for role in CLIENT_ROLES
    for name in FUNCTION_CALLS
]


@pytest.mark.parametrize(("role", "function"), FUNCTION_CASES)
def test_no_client_can_execute_credit_changing_functions(db, owner, role, function):
    params = call_args(owner, f"owner-spend-{owner}")
    with acting_as(db, role, owner if role == "authenticated" else None):
        state = sqlstate_of(db, FUNCTION_CALLS[function], params)
    assert state == "42501"


@pytest.mark.parametrize("function", list(FUNCTION_CALLS))
def test_service_role_can_execute_credit_changing_functions(db, owner, function):
    params = call_args(owner, f"owner-spend-{owner}")
    with acting_as(db, "service_role"):
        assert sqlstate_of(db, FUNCTION_CALLS[function], params) is None


@pytest.mark.parametrize("function", list(FUNCTION_CALLS))
def test_credit_changing_functions_are_security_definer_with_an_empty_search_path(db, function):
    row = db.execute(
        "select p.prosecdef, p.proconfig from pg_proc p"
        " join pg_namespace n on n.oid = p.pronamespace"
        " where n.nspname = 'public' and p.proname = %s",
        (function,),
    ).fetchone()
    assert row is not None, f"public.{function} does not exist"
    assert row["prosecdef"] is True
    assert 'search_path=""' in (row["proconfig"] or [])


def test_no_public_function_is_executable_by_clients(db):
    # docs/interface.md names no function for clients: they read views and tables only.
    rows = db.execute(
        "select p.oid::regprocedure::text as function, r.rolname from pg_proc p"
        " join pg_namespace n on n.oid = p.pronamespace"
        " cross join (values ('anon'), ('authenticated')) as r (rolname)"
        " where n.nspname = 'public' and has_function_privilege(r.rolname, p.oid, 'execute')"
    ).fetchall()
    assert rows == []


@pytest.mark.parametrize("relation", ["plans", "credit_packs"])
def test_every_public_table_has_row_level_security_enabled(db, relation):
    row = db.execute(
        "select relrowsecurity from pg_class where oid = %s::regclass", (f"public.{relation}",)
    ).fetchone()
    assert row["relrowsecurity"] is True


def test_every_table_of_the_private_schema_has_row_level_security_enabled(db):
    rows = db.execute(
        "select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname = 'tally' and c.relkind = 'r' and not c.relrowsecurity"
    ).fetchall()
    assert rows == []


def test_public_holds_no_table_beyond_the_catalog(db):
    rows = db.execute(
        "select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname = 'public' and c.relkind in ('r', 'p')"
    ).fetchall()
    assert {row["relname"] for row in rows} == {"plans", "credit_packs"}


@pytest.mark.parametrize("role", CLIENT_ROLES)
def test_clients_cannot_read_stripe_events(db, owner, role):
    with acting_as(db, role, owner if role == "authenticated" else None):
        assert sqlstate_of(db, "select * from tally.stripe_events") == "42501"


@pytest.mark.parametrize("role", CLIENT_ROLES)
def test_clients_cannot_write_accounts_directly(db, owner, role):
    with acting_as(db, role, owner if role == "authenticated" else None):
        state = sqlstate_of(db, "update tally.accounts set plan_credits = 99999")
    assert state == "42501"


@pytest.mark.parametrize(
    "statement",
    [
        "update public.credit_ledger set plan_delta = 99999",
        "delete from public.credit_ledger",
        "update tally.ledger_entries set plan_delta = 99999",
        "delete from tally.ledger_entries",
    ],
)
def test_service_role_cannot_update_or_delete_ledger_rows(db, owner, statement):
    with acting_as(db, "service_role"):
        assert sqlstate_of(db, statement) is not None
    assert len(db.execute("select 1 from tally.ledger_entries").fetchall()) >= 3


@pytest.mark.parametrize(
    "statement",
    [
        "update tally.ledger_entries set plan_delta = 99999",
        "delete from tally.ledger_entries",
        "truncate tally.ledger_entries cascade",
    ],
)
def test_even_the_owner_of_the_tables_cannot_rewrite_the_ledger(db, owner, statement):
    with db.transaction(force_rollback=True):
        assert sqlstate_of(db, statement) is not None


def test_service_role_reads_every_balance(db, owner, stranger):
    with acting_as(db, "service_role"):
        assert {owner, stranger} <= user_ids(db, "credit_balances")


def test_service_role_cannot_rewrite_balances_through_the_view(db, owner):
    with acting_as(db, "service_role"):
        assert sqlstate_of(db, "update public.credit_balances set plan_credits = 99999") is not None


def test_a_function_created_later_in_public_is_executable_by_no_client(db):
    # The migrations revoke Postgres' default EXECUTE for PUBLIC: a function
    # the app (or a later migration) adds is closed until it is granted.
    with db.transaction(force_rollback=True):
        db.execute("create function public.later_addition() returns int language sql as 'select 1'")
        for role in ("anon", "authenticated"):
            row = db.execute(
                "select has_function_privilege(%s, 'public.later_addition()', 'execute') as ok",
                (role,),
            ).fetchone()
            assert row["ok"] is False, role


def test_credit_changing_functions_bound_their_lock_waits(db):
    rows = db.execute(
        "select p.proname, p.proconfig from pg_proc p join pg_namespace n on n.oid = p.pronamespace"
        " where n.nspname = 'public' and p.prosecdef and p.proname = any(%s)",
        (list(FUNCTION_CALLS),),
    ).fetchall()
    unbounded = [r["proname"] for r in rows if not any(
        c.startswith("lock_timeout=") for c in (r["proconfig"] or []))]  # fmt: skip
    assert unbounded == [], unbounded
