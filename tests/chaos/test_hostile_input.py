"""Hostile input at the webhook: never a 500, never a crash, never a grant the model does not give.

Every mutated event lives in a world of its own (fresh user, fresh Stripe
ids), so what it may grant is exactly what the policy model gives for the
typed events the sidecar accepted; everything refused is stored nowhere.
"""

from __future__ import annotations

import io
import json
import random
import time
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.app import create_app
from tally.stripe_events import encode, sign
from tests.chaos.conftest import PRICES
from tests.sidecar.conftest import WEBHOOK_SECRET, base_config
from tests.simulation import hostile
from tests.simulation.database import (
    create_users,
    differences,
    invariant_violations,
    read_catalog,
    read_states,
)
from tests.simulation.model import expected_states

SAMPLE_USER = "4f1d7c1e-0000-4000-8000-000000000001"
WRONG_TYPE_CASES = 500
INJECTION_CASES = 150


@pytest.fixture
async def client(aiohttp_client, chaos_database_url):
    return await aiohttp_client(create_app(base_config(database_url=chaos_database_url)))


async def post(client, body: bytes, signature: str | None = "sign", **headers: str):
    if signature == "sign":
        headers["Stripe-Signature"] = sign(body, WEBHOOK_SECRET)
    elif signature is not None:
        headers["Stripe-Signature"] = signature
    # A stream, as aiohttp wants for large bodies (raw bytes over 1 MiB warn).
    response = await client.post("/webhooks/stripe", data=io.BytesIO(body), headers=headers)
    text = await response.text()
    assert response.status != 500, text
    return response.status, text


def stored_events(admin) -> int:
    return admin.execute("select count(*) from tally.stripe_events").fetchone()[0]


def ledger_rows(admin) -> int:
    return admin.execute("select count(*) from tally.ledger_entries").fetchone()[0]


async def send_isolated_cases(client, admin, cases, rng) -> tuple[list[str], list[dict[str, Any]]]:
    """Each (event, path, value) in a world of its own; the users and accepted typed events."""
    users, accepted = [], []
    prepared = []
    for event, path, value in cases:
        user = hostile.new_user_id(rng)
        world = hostile.isolated(event, SAMPLE_USER, user, uuid.uuid4().hex[:8])
        prepared.append((user, hostile.with_value(world, path, value)))
        users.append(user)
    create_users(admin, users)
    before = stored_events(admin)
    for _user, mutated in prepared:
        typed = hostile.accepted_typed(mutated)
        status, text = await post(client, encode(mutated))
        if typed is None:
            assert status in (200, 400), text
            assert status == 400 or json.loads(text)["status"] == "ignored", text
            continue
        assert status == 200, text
        accepted.append(typed)
    # An injected event id can repeat across cases: a repeat is a duplicate, stored once.
    assert stored_events(admin) == before + len({typed["id"] for typed in accepted})
    return users, accepted


def assert_grants_match_the_model(admin, users, accepted) -> None:
    expected = expected_states(accepted, read_catalog(admin), users)
    assert differences(expected, read_states(admin, users)) == {}
    assert invariant_violations(admin, users=users) == []


async def test_wrong_types_in_every_field_the_normaliser_reads_grant_nothing_wrong(client, admin):
    rng = random.Random(505)
    events = hostile.sample_events(PRICES, SAMPLE_USER, 505)
    cases = list(hostile.wrong_type_mutations(events, rng, limit=WRONG_TYPE_CASES))
    users, accepted = await send_isolated_cases(client, admin, cases, rng)
    assert 0 < len(accepted) < len(cases)
    assert_grants_match_the_model(admin, users, accepted)


async def test_injection_shaped_ids_and_metadata_are_only_data(client, admin):
    rng = random.Random(606)
    events = hostile.sample_events(PRICES, SAMPLE_USER, 606)
    cases = list(hostile.injection_mutations(events, rng))
    cases = rng.sample(cases, min(INJECTION_CASES, len(cases)))
    users, accepted = await send_isolated_cases(client, admin, cases, rng)
    assert_grants_match_the_model(admin, users, accepted)
    tables = admin.execute(
        "select count(*) from pg_tables where schemaname in ('tally', 'public')"
    ).fetchone()[0]
    assert tables > 0 and ledger_rows(admin) > 0
    assert (await client.get("/healthz")).status == 200


async def test_unsigned_forged_and_replayed_deliveries_store_nothing(client, admin, make_user):
    user = str(make_user())
    event = hostile.sample_events(PRICES, user, 707)[0]
    body = encode(event)
    before = (stored_events(admin), ledger_rows(admin))
    stale = int(time.time()) - 301
    attempts = [
        None,  # unsigned
        "",
        "garbage",
        sign(body, "whsec_someone_else"),
        sign(body, WEBHOOK_SECRET, stale),  # an old signature replayed past the tolerance
        sign(body, WEBHOOK_SECRET, int(time.time()) + 3600),  # from the future
        sign(body, WEBHOOK_SECRET, scheme="v0"),
        sign(body, WEBHOOK_SECRET).replace("v1=", "v1=00"),
        "t=abc,v1=" + "0" * 64,
        ",".join([sign(body, "whsec_x")] * 200),
    ]
    for signature in attempts:
        status, text = await post(client, body, signature)
        assert status == 400, (signature, text)
    tampered = encode({**event, "id": event["id"] + "x"})
    status, _ = await post(client, tampered, sign(body, WEBHOOK_SECRET))
    assert status == 400
    assert (stored_events(admin), ledger_rows(admin)) == before


async def test_huge_and_deeply_nested_bodies_are_refused_without_harm(client, admin):
    before = stored_events(admin)
    huge = b'{"id": "evt_huge", "pad": "' + b"x" * (1024 * 1024 + 10) + b'"}'
    assert (await post(client, huge))[0] == 413
    assert (await post(client, huge, None))[0] == 413
    for depth in (65, 1000, 200_000):
        assert (await post(client, hostile.deeply_nested(depth)))[0] == 400
    assert stored_events(admin) == before
    assert (await client.get("/healthz")).status == 200


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    body=st.one_of(
        st.binary(max_size=512),
        JSON_VALUES.map(lambda value: json.dumps(value).encode()),
        st.fixed_dictionaries(
            {
                "id": JSON_VALUES,
                "object": st.just("event"),
                "type": JSON_VALUES,
                "created": JSON_VALUES,
                "data": JSON_VALUES,
            }
        ).map(lambda value: json.dumps(value).encode()),
    ),
    signed=st.booleans(),
    header=st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=200),
    content_type=st.sampled_from(
        ["application/json", "text/plain", "", "application/x-www-form-urlencoded"]
    ),
)
async def test_fuzzed_bodies_and_headers_never_get_a_500(
    client, admin, body, signed, header, content_type
):
    before = ledger_rows(admin)
    signature = "sign" if signed else header
    status, _ = await post(client, body, signature, **{"Content-Type": content_type})
    assert status in (200, 400, 413)
    assert ledger_rows(admin) == before
