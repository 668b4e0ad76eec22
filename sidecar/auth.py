"""Supabase access tokens: who is calling /billing/*.

Tokens are JWTs signed either with the project's shared secret (HS256,
``SUPABASE_JWT_SECRET``) or with an asymmetric signing key (ES256/RS256)
published at ``{SUPABASE_URL}/auth/v1/.well-known/jwks.json``. A token is
accepted only if its signature, ``exp`` and audience verify, its issuer is
the project's Auth (``{SUPABASE_URL}/auth/v1``, when SUPABASE_URL is set) and
its role is ``authenticated``; the user id is its ``sub`` and nothing else.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import aiohttp
import jwt

AUDIENCE = "authenticated"
ROLE = "authenticated"
ASYMMETRIC_ALGORITHMS = ("ES256", "RS256")
LEEWAY_SECONDS = 5
JWKS_MAX_AGE = 600.0
JWKS_MIN_REFRESH_INTERVAL = 30.0


class TokenError(Exception):
    """No valid user token; ``reason`` is safe to return (401)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KeysUnavailable(Exception):
    """The JWKS could not be fetched, so the token cannot be checked now (503)."""


def bearer_token(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise TokenError("missing bearer token")
    return token.strip()


class JwksCache:
    """The project's signing keys by kid, refetched when old or when a kid is unknown."""

    def __init__(self, url: str, session: aiohttp.ClientSession, timeout: float) -> None:
        self.url = url
        self.session = session
        self.timeout = timeout
        self.keys: dict[str, jwt.PyJWK] = {}
        self.fetched_at = float("-inf")
        self.lock = asyncio.Lock()

    async def key(self, kid: str) -> jwt.PyJWK:
        age = time.monotonic() - self.fetched_at
        if kid not in self.keys or age > JWKS_MAX_AGE:
            await self._refresh(force=age > JWKS_MAX_AGE)
        if kid not in self.keys:
            raise TokenError("token signed with an unknown key")
        return self.keys[kid]

    async def _refresh(self, *, force: bool) -> None:
        async with self.lock:
            if not force and time.monotonic() - self.fetched_at < JWKS_MIN_REFRESH_INTERVAL:
                return  # Someone just fetched: an unknown kid stays unknown for a while.
            try:
                async with self.session.get(
                    self.url, timeout=aiohttp.ClientTimeout(total=self.timeout)
                ) as response:
                    response.raise_for_status()
                    document = await response.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError, ValueError) as error:
                raise KeysUnavailable(
                    f"cannot fetch signing keys ({type(error).__name__})"
                ) from error
            try:
                keys = jwt.PyJWKSet.from_dict(document).keys
            except (jwt.PyJWKSetError, jwt.InvalidKeyError, AttributeError, TypeError, KeyError):
                keys = []  # No usable key: every asymmetric token is refused (401).
            self.keys = {k.key_id: k for k in keys if k.key_id}
            self.fetched_at = time.monotonic()


class TokenVerifier:
    def __init__(
        self, hs256_secret: str | None, jwks: JwksCache | None, issuer: str | None = None
    ) -> None:
        self.hs256_secret = hs256_secret
        self.jwks = jwks
        # A token of another project (or another Auth) signed with a shared or
        # leaked key is still not ours.
        self.issuer = issuer

    async def user_id(self, authorization: str | None) -> str:
        """The verified user id (``sub``) of the request's bearer token."""
        token = bearer_token(authorization)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenError("malformed token") from None
        key, algorithm = await self._key_for(header)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=AUDIENCE,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "sub", *(["iss"] if self.issuer else [])]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("token expired") from None
        except jwt.PyJWTError:
            raise TokenError("invalid token") from None
        return _subject(claims)

    async def _key_for(self, header: dict[str, Any]) -> tuple[Any, str]:
        algorithm = header.get("alg")
        if algorithm == "HS256" and self.hs256_secret:
            return self.hs256_secret, algorithm
        if algorithm in ASYMMETRIC_ALGORITHMS and self.jwks:
            kid = header.get("kid")
            if not isinstance(kid, str):
                raise TokenError("token has no key id")
            return await self.jwks.key(kid), algorithm
        raise TokenError("token algorithm not accepted")


def _subject(claims: dict[str, Any]) -> str:
    if claims.get("role") != ROLE:
        raise TokenError("token is not for a signed-in user")
    try:
        return str(uuid.UUID(str(claims["sub"])))
    except ValueError:
        raise TokenError("token subject is not a user id") from None
