"""Access: no user reaches another user's data, through the sidecar or the database.

The database matrix is generated from the catalog (pg_class, pg_proc) for
schemas public and tally, so an object added later is checked (or flagged)
without anyone remembering to list it. Each relation is actually queried
and written as `anon` and as `authenticated` (with a user's claims, the way
PostgREST runs a request), not only looked up with has_*_privilege.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid

import jwt
import psycopg
import pytest
from aiohttp.test_utils import TestServer
from psycopg import sql
from psycopg.types.json import Jsonb

from sidecar.app import create_app
from tally.stripe_events import StripeWorld
from tests.chaos.conftest import PRICES
from tests.conftest import acting_as
from tests.sidecar.conftest import JWT_SECRET, base_config, user_token
from tests.simulation.database import create_users
from tests.simulation.typed import to_typed
from tests.support.fakes import FakeStripe

PUBLIC_RELATIONS = {"plans", "credit_packs", "credit_balances", "credit_ledger"}
CATALOG = {"plans", "credit_packs"}
SERVICE_FUNCTIONS = {
    "apply_stripe_event",
    "apply_stripe_events",
    "spend_credits",
    "reverse_spend",
    "adjust_credits",
    "link_stripe_customer",
    "reserve_credits",
    "commit_hold",
    "release_hold",
}
CLIENT_ROLES = ("anon", "authenticated")
# Errors that mean "this relation cannot be written at all" (a view that is not
# updatable, an append-only ledger trigger), not a permission that was granted.
NOT_WRITABLE = {"55000", "0A000", "42501"}


def relations(conn: psycopg.Connection) -> list[tuple[str, str, str]]:
    return conn.execute(
        "select n.nspname, c.relname, c.relkind from pg_class c"
        " join pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname in ('public', 'tally') and c.relkind in ('r', 'v', 'm', 'p', 'f')"
        " order by 1, 2"
    ).fetchall()


def column_to_write(conn: psycopg.Connection, schema: str, name: str) -> str:
    """`user_id` where there is one (moving rows to another user), else the first column."""
    return conn.execute(
        "select attname from pg_attribute where attrelid = %s::regclass and attnum > 0"
        " and not attisdropped order by attname <> 'user_id', attnum limit 1",
        (f"{schema}.{name}",),
    ).fetchone()[0]


def attempt(conn, role: str, user: str, statement: sql.Composable) -> tuple[bool, list]:
    """Run `statement` as `role` (with `user`'s claims); (permitted, rows)."""
    try:
        with acting_as(conn, role, uuid.UUID(user) if role == "authenticated" else None):
            cursor = conn.execute(statement)
            return True, cursor.fetchall() if cursor.description else []
    except psycopg.errors.InsufficientPrivilege:
        return False, []
    except psycopg.errors.IntegrityError:
        return True, []  # past the permission check: only a constraint said no
    except psycopg.errors.Error as problem:
        note = f"{role} {statement.as_string(conn)}: {problem.sqlstate} {problem}"
        assert problem.sqlstate in NOT_WRITABLE, note
        return False, []


@pytest.fixture
def two_users_with_history(admin, service):
    """Users A and B, each with a signup grant, a pack, a spend and a hold."""
    users = [str(uuid.uuid4()), str(uuid.uuid4())]
    create_users(admin, users)
    pack = sorted(PRICES.packs)[0]
    for user in users:
        world = StripeWorld(prices=PRICES.amounts, seed=user)
        _, events = world.buy_pack(world.customer(user_id=user), pack)
        for event in events:
            service.execute("select public.apply_stripe_event(%s)", (Jsonb(to_typed(event)),))
        service.execute("select public.spend_credits(%s::uuid, 7, %s)", (user, f"access-{user}"))
        service.execute(
            "select public.reserve_credits(%s::uuid, 5, %s)", (user, f"access-hold-{user}")
        )
    return users


def test_public_holds_only_what_clients_may_read(admin):
    found = {name for schema, name, _ in relations(admin) if schema == "public"}
    assert found == PUBLIC_RELATIONS


def test_public_views_run_with_the_callers_rights(admin):
    for schema, name, kind in relations(admin):
        if schema == "public" and kind == "v":
            options = admin.execute(
                "select reloptions from pg_class where oid = %s::regclass", (f"{schema}.{name}",)
            ).fetchone()[0]
            assert "security_invoker=true" in (options or []), name


@pytest.mark.parametrize("role", CLIENT_ROLES)
def test_clients_can_write_no_relation(admin, two_users_with_history, role):
    user = two_users_with_history[0]
    permitted = []
    for schema, name, _ in relations(admin):
        table = sql.Identifier(schema, name)
        column = sql.Identifier(column_to_write(admin, schema, name))
        writes = {
            "insert": sql.SQL("insert into {} default values").format(table),
            "update": sql.SQL("update {} set {} = {} where true").format(table, column, column),
            "delete": sql.SQL("delete from {} where true").format(table),
        }
        for operation, statement in writes.items():
            if attempt(admin, role, user, statement)[0]:
                permitted.append(f"{operation} {schema}.{name}")
    assert permitted == []


@pytest.mark.parametrize("role", CLIENT_ROLES)
def test_clients_read_only_the_catalog_and_their_own_rows(admin, two_users_with_history, role):
    user, other = two_users_with_history
    readable = set()
    for schema, name, _ in relations(admin):
        statement = sql.SQL("select to_jsonb(t) from {} t").format(sql.Identifier(schema, name))
        permitted, rows = attempt(admin, role, user, statement)
        if not permitted:
            continue
        readable.add(f"{schema}.{name}")
        if name in CATALOG and schema == "public":
            continue
        owners = {row[0].get("user_id") for row in rows}
        assert owners == {user}, (schema, name, owners)
        assert other not in json.dumps([row[0] for row in rows]), (schema, name)
    expected = {f"public.{name}" for name in CATALOG}
    if role == "authenticated":
        expected |= {"public.credit_balances", "public.credit_ledger"}
    assert expected <= readable
    assert {r for r in readable if r.startswith("public.")} == expected


def test_a_user_sees_every_row_of_their_own_ledger_and_balance(admin, two_users_with_history):
    for user in two_users_with_history:
        with acting_as(admin, "authenticated", uuid.UUID(user)):
            ledger = admin.execute("select count(*) from public.credit_ledger").fetchone()[0]
            balances = admin.execute("select user_id::text from public.credit_balances").fetchall()
        total = admin.execute(
            "select count(*) from tally.ledger_entries where user_id = %s", (user,)
        ).fetchone()[0]
        assert ledger == total >= 3
        assert balances == [(user,)]


def test_no_client_role_may_execute_any_function(admin):
    executable = admin.execute(
        "select r.rolname, n.nspname || '.' || p.proname from pg_proc p"
        " join pg_namespace n on n.oid = p.pronamespace"
        " cross join pg_roles r"
        " where n.nspname in ('public', 'tally') and r.rolname in ('anon', 'authenticated')"
        " and has_function_privilege(r.oid, p.oid, 'execute')"
    ).fetchall()
    assert executable == []


def test_the_service_role_may_execute_the_public_functions_of_the_contract(admin):
    rows = admin.execute(
        "select p.proname from pg_proc p join pg_namespace n on n.oid = p.pronamespace"
        " where n.nspname = 'public' and has_function_privilege('service_role', p.oid, 'execute')"
    ).fetchall()
    assert {row[0] for row in rows} >= SERVICE_FUNCTIONS


def test_every_security_definer_function_pins_an_empty_search_path(admin):
    loose = admin.execute(
        "select n.nspname || '.' || p.proname, p.proconfig from pg_proc p"
        " join pg_namespace n on n.oid = p.pronamespace"
        " where n.nspname in ('public', 'tally') and p.prosecdef"
        " and not coalesce(p.proconfig, '{}') && array['search_path=\"\"', 'search_path=''''']"
    ).fetchall()
    assert loose == []


def test_every_function_a_client_role_or_a_trigger_can_enter_pins_an_empty_search_path(admin):
    """Helpers without the pin run only inside these, where the empty path is in force."""
    loose = admin.execute(
        "select distinct n.nspname || '.' || p.proname from pg_proc p"
        " join pg_namespace n on n.oid = p.pronamespace"
        " cross join pg_roles r"
        " where n.nspname in ('public', 'tally') and p.prokind = 'f'"
        " and p.prolang <> (select oid from pg_language where lanname = 'sql')"
        " and r.rolname in ('anon', 'authenticated', 'service_role')"
        " and (has_function_privilege(r.oid, p.oid, 'execute')"
        "      or p.prorettype = 'trigger'::regtype)"
        " and not coalesce(p.proconfig, '{}') && array['search_path=\"\"', 'search_path=''''']"
    ).fetchall()
    assert loose == []


def test_clients_may_use_no_sequence(admin):
    usable = admin.execute(
        "select r.rolname, c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " cross join pg_roles r where c.relkind = 'S' and n.nspname in ('public', 'tally')"
        " and r.rolname in ('anon', 'authenticated')"
        " and has_sequence_privilege(r.oid, c.oid, 'usage, select, update')"
    ).fetchall()
    assert usable == []


# -- the sidecar's endpoints -----------------------------------------------------------------


@pytest.fixture
async def stripe(aiohttp_server) -> tuple[FakeStripe, str]:
    fake = FakeStripe()
    server: TestServer = await aiohttp_server(fake.app())
    return fake, str(server.make_url("")).rstrip("/")


@pytest.fixture
async def billing(aiohttp_client, chaos_database_url, stripe):
    config = base_config(database_url=chaos_database_url, stripe_api_base=stripe[1])
    return await aiohttp_client(create_app(dataclasses.replace(config)))


def forged_tokens(victim: str) -> dict[str, str]:
    now = int(time.time())
    claims = {"sub": victim, "role": "authenticated", "aud": "authenticated", "exp": now + 600}
    return {
        "wrong secret": jwt.encode(claims, "another-secret-of-at-least-32-characters!!"),
        "alg none": jwt.encode(claims, None, algorithm="none"),
        "expired": user_token(victim, expires_in=-120),
        "service role claim": jwt.encode({**claims, "role": "service_role"}, "x" * 40),
        "not a user id": user_token("'; select 1; --"),
        "a user that does not exist": user_token(uuid.uuid4()),
        "no bearer": "",
    }


async def test_forged_tokens_for_another_user_get_a_401(billing, admin, stripe):
    victim = str(uuid.uuid4())
    create_users(admin, [victim])
    for what, token in forged_tokens(victim).items():
        for path in ("/billing/checkout", "/billing/portal"):
            response = await billing.post(
                path, json={"pack": "chaos_pack_s"}, headers={"Authorization": f"Bearer {token}"}
            )
            assert response.status == 401, (what, path, await response.text())
    assert stripe[0].requests == []


async def test_a_user_cannot_buy_or_open_a_portal_for_someone_else(billing, admin, service, stripe):
    fake = stripe[0]
    me, other = str(uuid.uuid4()), str(uuid.uuid4())
    create_users(admin, [me, other])
    service.execute(
        "select public.link_stripe_customer(%s::uuid, 'cus_of_the_other_user')", (other,)
    )
    mine = {"Authorization": f"Bearer {user_token(me)}"}
    smuggled = [
        {"pack": "chaos_pack_s", "user_id": other},
        {"pack": "chaos_pack_s", "customer": "cus_of_the_other_user"},
        {"user_id": other},
    ]
    for body in smuggled:
        response = await billing.post("/billing/checkout", json=body, headers=mine)
        assert response.status == 400, await response.text()
    response = await billing.post(
        f"/billing/checkout?user_id={other}",
        json={"pack": "chaos_pack_s"},
        headers={**mine, "X-User-Id": other, "X-Customer-Id": "cus_of_the_other_user"},
    )
    assert response.status == 200, await response.text()
    sessions = fake.of_path("/v1/checkout/sessions")
    assert len(sessions) == 1
    form = sessions[0].form
    assert form["client_reference_id"] == me
    assert form["metadata[user_id]"] == me
    assert form["customer"] != "cus_of_the_other_user"
    assert other not in json.dumps([request.form for request in fake.requests])
    portal = await billing.post("/billing/portal", json={}, headers=mine)
    assert portal.status == 200
    (opened,) = fake.of_path("/v1/billing_portal/sessions")
    assert opened.form["customer"] == form["customer"]


async def test_a_user_token_opens_no_door_to_the_webhook(billing, admin):
    user = str(uuid.uuid4())
    create_users(admin, [user])
    world = StripeWorld(prices=PRICES.amounts, seed=user)
    _, events = world.buy_pack(world.customer(user_id=user), sorted(PRICES.packs)[0])
    response = await billing.post(
        "/webhooks/stripe",
        data=json.dumps(events[0]),
        headers={"Authorization": f"Bearer {user_token(user)}", "Content-Type": "application/json"},
    )
    assert response.status == 400
    balance = admin.execute(
        "select addon_credits from public.credit_balances where user_id = %s", (user,)
    ).fetchone()[0]
    assert balance == 0


async def test_no_endpoint_answers_a_read_of_anyones_data(billing):
    token = {"Authorization": f"Bearer {user_token(uuid.uuid4())}"}
    for path in ("/billing/checkout", "/billing/portal", "/webhooks/stripe"):
        assert (await billing.get(path, headers=token)).status == 405
    for path in ("/billing/balance", "/credit_balances", "/rest/v1/credit_balances", "/admin"):
        assert (await billing.get(path, headers=token)).status == 404


def test_jwt_secret_is_the_one_tokens_are_checked_against():
    # Guards the forged-token test: a token signed with the real secret does verify.
    claims = jwt.decode(
        user_token(uuid.uuid4()), JWT_SECRET, algorithms=["HS256"], audience="authenticated"
    )
    assert claims["role"] == "authenticated"
