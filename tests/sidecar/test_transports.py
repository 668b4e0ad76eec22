"""Both database transports behave the same, and failures become 503 with nothing half-done."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import psycopg
import pytest

from sidecar.db import DatabaseError
from sidecar.db.postgres import PostgresDatabase
from sidecar.db.postgrest import PostgrestDatabase
from tests.sidecar.conftest import (
    ANON_KEY,
    JWT_SECRET,
    PACKS,
    PLANS,
    SERVICE_ROLE_KEY,
    SIGNUP_CREDITS,
    credits,
    deliver,
    deliver_all,
    stored_events,
    user_token,
    world,
)
from tests.support.fakes import FakePostgrest
from tests.support.postgrest_errors import postgrest_status

PACK_PRICE, PACK_CREDITS = PACKS["pack_500"]
STARTER_PRICE, STARTER_CREDITS = PLANS["starter"]


# -- the same behaviour on both ---------------------------------------------------------------


async def test_pack_purchase_and_redelivery_on_each_transport(any_sidecar, db, make_user):
    user = make_user()
    w = world()
    _, out = w.buy_pack(w.customer(user_id=str(user)), PACK_PRICE)
    assert await deliver_all(any_sidecar, out + out) == ["applied", "duplicate"]
    assert credits(db, user) == (SIGNUP_CREDITS, PACK_CREDITS)


async def test_subscription_lifecycle_on_each_transport(any_sidecar, db, make_user):
    user = make_user()
    w = world("legacy")
    sub, out = w.subscribe(w.customer(user_id=str(user)), STARTER_PRICE)
    await deliver_all(any_sidecar, out + w.renew(sub) + w.cancel(sub, at_period_end=False))
    assert credits(db, user) == (STARTER_CREDITS, 0)


async def test_parked_event_applies_when_linked_on_each_transport(any_sidecar, db, make_user):
    user = make_user()
    w = world()
    customer = w.customer(user_id=None)
    _, out = w.subscribe(customer, STARTER_PRICE, via_checkout=False)
    waiting = [e for e in out if e["type"] != "invoice_payment.paid"]  # needs no user
    assert set(await deliver_all(any_sidecar, waiting)) == {"parked"}
    db.execute("select public.link_stripe_customer(%s, %s)", (user, customer.id))
    assert credits(db, user) == (STARTER_CREDITS, 0)


async def test_postgrest_calls_run_as_service_role(postgrest_sidecar, fake_postgrest, make_user):
    user = make_user()
    w = world()
    _, out = w.buy_pack(w.customer(user_id=str(user)), PACK_PRICE)
    await deliver_all(postgrest_sidecar, out)
    applies = [call for call in fake_postgrest.calls if call[0] == "apply_stripe_event"]
    assert applies == [("apply_stripe_event", "service_role")]
    # The background jobs call too (sidecar/jobs), and also as service_role.
    assert {role for _, role in fake_postgrest.calls} == {"service_role"}


async def test_readyz_goes_through_each_transport(any_sidecar):
    response = await any_sidecar.get("/readyz")
    assert (response.status, await response.json()) == (200, {"status": "ready"})


# -- the PostgREST stand-in speaks PostgREST -------------------------------------------------


@pytest.mark.parametrize(
    ("sqlstate", "role", "status"),
    [
        ("PT402", "service_role", 402),
        ("23505", "service_role", 409),
        ("23503", "service_role", 409),
        ("22023", "service_role", 400),
        ("P0001", "service_role", 400),
        ("P0002", "service_role", 500),
        ("PT404", "service_role", 404),
        ("42501", "anon", 401),
        ("42501", "authenticated", 403),
        ("42883", "service_role", 404),
        ("08006", "service_role", 503),
        ("53300", "service_role", 503),
        ("54001", "service_role", 500),
        ("57014", "service_role", 500),
    ],
)
def test_stand_in_maps_sqlstates_like_postgrest(sqlstate, role, status):
    assert postgrest_status(sqlstate, role) == status


async def rpc(url: str, function: str, args: dict, *, apikey: str, token: str | None):
    headers = {"apikey": apikey}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with httpx.AsyncClient() as client:
        return await client.post(f"{url}/rest/v1/rpc/{function}", json=args, headers=headers)


async def test_stand_in_answers_402_with_postgrest_error_body(postgrest_url, make_user):
    user = make_user()
    response = await rpc(
        postgrest_url,
        "spend_credits",
        {"user_id": str(user), "amount": SIGNUP_CREDITS + 1, "idempotency_key": "k1"},
        apikey=SERVICE_ROLE_KEY,
        token=SERVICE_ROLE_KEY,
    )
    assert response.status_code == 402
    assert set(response.json()) == {"code", "message", "details", "hint"}
    assert response.json()["code"] == "PT402"


async def test_stand_in_refuses_anon_with_401(postgrest_url, make_user):
    user = make_user()
    response = await rpc(
        postgrest_url, "get_billing_profile", {"user_id": str(user)}, apikey=ANON_KEY, token=None
    )
    assert (response.status_code, response.json()["code"]) == (401, "42501")


async def test_stand_in_refuses_signed_in_users_with_403(postgrest_url, make_user):
    user = make_user()
    response = await rpc(
        postgrest_url,
        "get_billing_profile",
        {"user_id": str(user)},
        apikey=ANON_KEY,
        token=user_token(user),
    )
    assert (response.status_code, response.json()["code"]) == (403, "42501")


async def test_stand_in_refuses_an_unknown_apikey(postgrest_url):
    response = await rpc(postgrest_url, "get_billing_profile", {}, apikey="nope", token=None)
    assert response.status_code == 401


async def test_stand_in_answers_404_for_an_unknown_function(postgrest_url):
    response = await rpc(
        postgrest_url, "no_such_function", {}, apikey=SERVICE_ROLE_KEY, token=SERVICE_ROLE_KEY
    )
    assert (response.status_code, response.json()["code"]) == (404, "PGRST202")


# -- failures: 503 and nothing half-done ---------------------------------------------------


async def test_postgrest_unreachable_gives_503(make_sidecar, db, make_user, unused_tcp_port):
    client = await make_sidecar(
        transport="postgrest",
        database_url=None,
        supabase_url=f"http://127.0.0.1:{unused_tcp_port}",
        supabase_service_role_key=SERVICE_ROLE_KEY,
    )
    user = make_user()
    w = world()
    _, out = w.buy_pack(w.customer(user_id=str(user)), PACK_PRICE)
    status, answer = await deliver(client, out[-1])
    assert (status, answer["error"]) == (503, "database unavailable; retry later")
    assert stored_events(db) == 0
    assert (await client.get("/readyz")).status == 503


async def test_postgrest_connection_error_body_gives_503(
    aiohttp_server, make_sidecar, database_url, db, make_user
):
    # PostgREST up, its database unreachable: it answers 503 PGRST000 itself.
    broken = FakePostgrest("postgresql://postgres@127.0.0.1:1/none", JWT_SECRET, {SERVICE_ROLE_KEY})
    server = await aiohttp_server(broken.app())
    client = await make_sidecar(
        transport="postgrest",
        database_url=None,
        supabase_url=str(server.make_url("")).rstrip("/"),
        supabase_service_role_key=SERVICE_ROLE_KEY,
    )
    user = make_user()
    w = world()
    _, out = w.buy_pack(w.customer(user_id=str(user)), PACK_PRICE)
    status, _ = await deliver(client, out[-1])
    assert status == 503
    assert stored_events(db) == 0


async def test_statement_timeout_gives_503_then_redelivery_grants_once(
    make_sidecar, database_url, db, make_user
):
    client = await make_sidecar(db_timeout=0.5)
    user = make_user()
    w = world()
    _, out = w.buy_pack(w.customer(user_id=str(user)), PACK_PRICE)
    with psycopg.connect(database_url) as blocker:
        blocker.execute("select 1 from tally.accounts where user_id = %s for update", (user,))
        status, _ = await deliver(client, out[-1])
        assert status == 503
    assert stored_events(db) == 0
    assert await deliver_all(client, out) == ["applied"]
    assert credits(db, user) == (SIGNUP_CREDITS, PACK_CREDITS)


async def test_database_stopped_mid_test_gives_503_then_exactly_one_grant(
    sidecar, pg_server, db, database_url, make_user
):
    user = make_user()
    w = world()
    _, out = w.buy_pack(w.customer(user_id=str(user)), PACK_PRICE)
    assert (await sidecar.get("/readyz")).status == 200  # the pool holds a connection now
    db.close()
    await asyncio.to_thread(pg_server.stop)
    try:
        status, answer = await deliver(sidecar, out[-1])
        assert (status, answer["error"]) == (503, "database unavailable; retry later")
        assert (await sidecar.get("/readyz")).status == 503
    finally:
        await asyncio.to_thread(pg_server.start)
    assert await deliver_all(sidecar, out) == ["applied"]
    assert await deliver_all(sidecar, out) == ["duplicate"]
    with psycopg.connect(database_url, autocommit=True) as conn:
        grants = conn.execute(
            "select count(*) from tally.ledger_entries where user_id = %s"
            " and kind = 'addon_purchase'",
            (user,),
        ).fetchone()[0]
    assert grants == 1


# -- the transports alone ---------------------------------------------------------------------


@pytest.fixture(params=["postgres", "postgrest"])
async def transport(request, database_url, aiohttp_server, fake_postgrest):
    if request.param == "postgres":
        database = await PostgresDatabase.open(database_url, timeout=3, role="service_role")
    else:
        server = await aiohttp_server(fake_postgrest.app())
        url = str(server.make_url("")).rstrip("/")
        database = PostgrestDatabase.open(url, SERVICE_ROLE_KEY, timeout=3)
    yield database
    await database.close()


async def test_an_invalid_typed_event_is_refused_with_22023(transport, db):
    with pytest.raises(DatabaseError) as refused:
        await transport.apply_stripe_event({"schema_version": 1, "id": "evt_1"})
    assert refused.value.sqlstate == "22023"
    assert stored_events(db) == 0


async def test_linking_an_unknown_user_is_refused_with_its_sqlstate(transport):
    with pytest.raises(DatabaseError) as refused:
        await transport.link_stripe_customer(str(uuid.uuid4()), "cus_123")
    assert refused.value.sqlstate == "PT404"


async def test_billing_profile_and_catalog_read_the_same_on_both(transport, make_user):
    user = make_user()
    assert await transport.get_billing_profile(str(user)) == {
        "user_exists": True,
        "customer_id": None,
        "has_active_subscription": False,
        "active_subscription": None,
    }
    assert await transport.catalog_price("plan", "starter") == (STARTER_PRICE, True)
    assert await transport.catalog_price("pack", "nope") is None


async def test_direct_transport_acting_as_service_role_keeps_grants(database_url, make_user):
    # DATABASE_ROLE=service_role: the service role's grants apply, as through PostgREST.
    database = await PostgresDatabase.open(database_url, timeout=3, role="authenticated")
    try:
        with pytest.raises(DatabaseError) as refused:
            await database.get_billing_profile(str(make_user()))
        assert refused.value.sqlstate == "42501"
    finally:
        await database.close()


async def test_a_direct_call_is_one_query_and_leaves_the_connection_as_it_found_it(
    database_url, db, make_user
):
    # The pool gives connections back without asyncpg's reset query (sidecar/db/postgres.py):
    # the last query the backend ran is the call itself, and the session keeps its role and
    # settings, with no transaction left open, after a call that succeeded and one refused.
    database = await PostgresDatabase.open(database_url, timeout=3, max_size=1, role="service_role")
    try:
        await database.get_billing_profile(str(make_user()))
        with pytest.raises(DatabaseError):
            await database.link_stripe_customer(str(uuid.uuid4()), "cus_123")
        profile = await database.get_billing_profile(str(make_user()))
        assert profile["user_exists"] is True
        (backend,) = db.execute(
            "select query, state, backend_xid from pg_stat_activity"
            " where datname = current_database() and pid <> pg_backend_pid()"
            "   and backend_type = 'client backend'"
        ).fetchall()
        assert backend["query"].startswith("select public.get_billing_profile(")
        assert (backend["state"], backend["backend_xid"]) == ("idle", None)
        async with database.pool.acquire() as conn:
            session = await conn.fetchrow(
                "select current_user as role, current_setting('lock_timeout') as lock_timeout,"
                "       pg_catalog.current_setting('search_path') as search_path"
            )
        assert session["role"] == "service_role"
        assert session["lock_timeout"] == "0"
        assert "tally" not in session["search_path"]
    finally:
        await database.close()


async def test_unhandled_types_need_no_database(make_sidecar, unused_tcp_port):
    client = await make_sidecar(database_url=f"postgresql://postgres@127.0.0.1:{unused_tcp_port}/x")
    status, answer = await deliver(client, world().unhandled("invoice.created"))
    assert (status, answer["status"]) == (200, "ignored")


async def test_plans_billing_leases_and_rate_limits_work_the_same_on_both(transport, make_user):
    user = str(make_user())
    assert {p.key: p.monthly_credits for p in await transport.plans()} == {
        "starter": 1000,
        "pro": 5000,
    }
    assert await transport.acquire_billing_lock(user, "machine-a", 30) is True
    assert await transport.acquire_billing_lock(user, "machine-b", 30) is False
    await transport.release_billing_lock(user, "machine-a")
    assert await transport.acquire_billing_lock(user, "machine-b", 30) is True
    first = await transport.hit_billing_rate_limit(user, 1, 60)
    second = await transport.hit_billing_rate_limit(user, 1, 60)
    assert (first.allowed, second.allowed) == (True, False)
    assert 0 < second.retry_after <= 60


def test_a_billing_lease_expires_by_itself(db, make_user):
    user = make_user()
    take = "select public.acquire_billing_lock(%s, %s, %s) as taken"
    assert db.execute(take, (user, "crashed-machine", 1)).fetchone()["taken"] is True
    assert db.execute(take, (user, "other", 30)).fetchone()["taken"] is False
    db.execute("update tally.billing_locks set expires_at = now() - interval '1 second'")
    assert db.execute(take, (user, "other", 30)).fetchone()["taken"] is True


@pytest.fixture
def short_service_role_timeout(db):
    """service_role's statement_timeout lowered for one test (a cluster-wide role setting)."""
    before = db.execute(
        "select coalesce((select c from pg_db_role_setting s, unnest(s.setconfig) c"
        " where s.setrole = 'service_role'::regrole and s.setdatabase = 0"
        " and c like 'statement_timeout=%'), '') as setting"
    ).fetchone()["setting"]
    assert before == "statement_timeout=30s"  # what the migrations set
    db.execute("alter role service_role set statement_timeout = '1s'")
    yield
    db.execute("alter role service_role set statement_timeout = '30s'")


async def test_a_postgrest_call_the_client_gave_up_on_is_stopped_by_the_server(
    make_sidecar, postgrest_url, database_url, db, make_user, short_service_role_timeout
):
    # The sidecar stops waiting after DB_TIMEOUT; PostgREST applies
    # service_role's statement_timeout, so the database stops the call too
    # instead of leaving it blocked behind the lock.
    client = await make_sidecar(
        transport="postgrest", database_url=None, supabase_url=postgrest_url,
        supabase_service_role_key=SERVICE_ROLE_KEY, db_timeout=0.3,
    )  # fmt: skip
    user = make_user()
    w = world()
    _, out = w.buy_pack(w.customer(user_id=str(user)), PACK_PRICE)
    with psycopg.connect(database_url) as blocker:
        blocker.execute("select 1 from tally.accounts where user_id = %s for update", (user,))
        status, _ = await deliver(client, out[-1])
        assert status == 503
        await asyncio.sleep(1.5)
        waiting = db.execute(
            "select count(*) as n from pg_stat_activity where datname = current_database()"
            " and query like '%%apply_stripe_event%%' and state = 'active'"
            " and pid <> pg_backend_pid()"
        ).fetchone()["n"]
        assert waiting == 0
    assert stored_events(db) == 0
    assert await deliver_all(client, out) == ["applied"]
