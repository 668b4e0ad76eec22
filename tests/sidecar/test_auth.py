"""Supabase access tokens signed with asymmetric keys, checked against the project's JWKS."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sidecar.auth import JwksCache, KeysUnavailable, TokenError, TokenVerifier

EC_KEY = ec.generate_private_key(ec.SECP256R1())
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(private_key, kid: str, alg: str) -> dict:
    jwk = json.loads(jwt.algorithms.get_default_algorithms()[alg].to_jwk(private_key.public_key()))
    return {**jwk, "kid": kid, "alg": alg, "use": "sig"}


def token(private_key, kid: str, alg: str, *, user: str | None = None, **claims) -> str:
    now = int(time.time())
    payload = {
        "sub": user or str(uuid.uuid4()),
        "role": "authenticated",
        "aud": "authenticated",
        "iat": now,
        "exp": now + 600,
        **claims,
    }
    return jwt.encode(payload, private_key, algorithm=alg, headers={"kid": kid})


class FakeJwks:
    """Serves /auth/v1/.well-known/jwks.json like Supabase Auth; counts fetches."""

    def __init__(self, keys: list[dict]) -> None:
        self.keys = keys
        self.fetches = 0
        self.broken = False

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/auth/v1/.well-known/jwks.json", self.serve)
        return app

    async def serve(self, request: web.Request) -> web.Response:
        self.fetches += 1
        if self.broken:
            return web.Response(status=502)
        return web.json_response({"keys": self.keys})


@pytest.fixture
def jwks() -> FakeJwks:
    return FakeJwks([public_jwk(EC_KEY, "ec-1", "ES256"), public_jwk(RSA_KEY, "rsa-1", "RS256")])


@pytest.fixture
async def verifier(aiohttp_server, jwks: FakeJwks):
    server = await aiohttp_server(jwks.app())
    url = str(server.make_url("/auth/v1/.well-known/jwks.json"))
    async with aiohttp.ClientSession() as session:
        yield TokenVerifier("hs-secret-of-at-least-thirty-two-chars", JwksCache(url, session, 2.0))


async def test_accepts_an_es256_token_from_the_jwks(verifier):
    user = str(uuid.uuid4())
    assert await verifier.user_id(f"Bearer {token(EC_KEY, 'ec-1', 'ES256', user=user)}") == user


async def test_accepts_an_rs256_token_from_the_jwks(verifier):
    user = str(uuid.uuid4())
    assert await verifier.user_id(f"Bearer {token(RSA_KEY, 'rsa-1', 'RS256', user=user)}") == user


async def test_fetches_the_jwks_once_for_many_tokens(verifier, jwks):
    for _ in range(5):
        await verifier.user_id(f"Bearer {token(EC_KEY, 'ec-1', 'ES256')}")
    assert jwks.fetches == 1


async def test_rejects_a_token_signed_by_another_key_under_a_known_kid(verifier):
    impostor = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(TokenError, match="invalid token"):
        await verifier.user_id(f"Bearer {token(impostor, 'ec-1', 'ES256')}")


async def test_rejects_an_unknown_kid_without_refetching_every_time(verifier, jwks):
    for _ in range(3):
        with pytest.raises(TokenError, match="unknown key"):
            await verifier.user_id(f"Bearer {token(EC_KEY, 'ec-unknown', 'ES256')}")
    assert jwks.fetches == 1


async def test_rejects_an_expired_asymmetric_token(verifier):
    expired = token(EC_KEY, "ec-1", "ES256", exp=int(time.time()) - 60)
    with pytest.raises(TokenError, match="expired"):
        await verifier.user_id(f"Bearer {expired}")


async def test_rejects_a_service_role_token(verifier):
    service = token(EC_KEY, "ec-1", "ES256", role="service_role")
    with pytest.raises(TokenError, match="not for a signed-in user"):
        await verifier.user_id(f"Bearer {service}")


async def test_rejects_an_asymmetric_token_without_kid(verifier):
    now = int(time.time())
    claims = {
        "sub": str(uuid.uuid4()),
        "role": "authenticated",
        "aud": "authenticated",
        "exp": now + 60,
    }
    no_kid = jwt.encode(claims, EC_KEY, algorithm="ES256")
    with pytest.raises(TokenError, match="no key id"):
        await verifier.user_id(f"Bearer {no_kid}")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def test_rejects_hs256_signed_with_the_published_key_as_secret(verifier):
    # Algorithm confusion: an HS256 token whose "secret" is the public JWK must not pass.
    public = json.dumps(public_jwk(EC_KEY, "ec-1", "ES256")).encode()
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "ec-1"}).encode())
    claims = {
        "sub": str(uuid.uuid4()),
        "role": "authenticated",
        "aud": "authenticated",
        "exp": int(time.time()) + 60,
    }
    body = b64(json.dumps(claims).encode())
    mac = hmac.new(public, f"{header}.{body}".encode(), hashlib.sha256).digest()
    with pytest.raises(TokenError, match="invalid token"):
        await verifier.user_id(f"Bearer {header}.{body}.{b64(mac)}")


async def test_unreachable_jwks_is_keys_unavailable(verifier, jwks):
    jwks.broken = True
    with pytest.raises(KeysUnavailable):
        await verifier.user_id(f"Bearer {token(EC_KEY, 'ec-1', 'ES256')}")


async def test_rejects_asymmetric_tokens_when_no_jwks_is_configured():
    plain = TokenVerifier("hs-secret-of-at-least-thirty-two-chars", None)
    with pytest.raises(TokenError, match="algorithm not accepted"):
        await plain.user_id(f"Bearer {token(EC_KEY, 'ec-1', 'ES256')}")


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer ", "Bearer"])
async def test_rejects_requests_without_a_bearer_token(header):
    plain = TokenVerifier("hs-secret-of-at-least-thirty-two-chars", None)
    with pytest.raises(TokenError, match="missing bearer token"):
        await plain.user_id(header)


async def test_checkout_accepts_an_es256_token_through_http(
    aiohttp_server, jwks, make_sidecar, make_user
):
    server = await aiohttp_server(jwks.app())
    client = await make_sidecar(
        supabase_jwt_secret=None, jwks_url=str(server.make_url("/auth/v1/.well-known/jwks.json"))
    )
    user = str(make_user())
    headers = {"Authorization": f"Bearer {token(EC_KEY, 'ec-1', 'ES256', user=user)}"}
    response = await client.post("/billing/checkout", json={"pack": "pack_500"}, headers=headers)
    assert response.status == 200
