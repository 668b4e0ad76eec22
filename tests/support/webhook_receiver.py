"""A stand-in for the app's backend: receives balance events the way an app should.

Each request is verified with the Standard Webhooks library
(``standardwebhooks.Webhook(secret).verify``), as the app's own code would;
a request that does not verify is answered 400 and recorded as refused.
``fail_next`` answers that many requests with ``failure_status`` first, and
``delay`` holds every answer back (a slow backend).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError

PATH = "/hooks/credits"


@dataclass(frozen=True)
class Received:
    webhook_id: str
    payload: dict[str, Any]

    @property
    def type(self) -> str:
        return str(self.payload["type"])

    @property
    def user_id(self) -> str:
        return str(self.payload["data"]["user_id"])


@dataclass
class WebhookReceiver:
    secret: str
    fail_next: int = 0
    failure_status: int = 500
    delay: float = 0.0
    accepted: list[Received] = field(default_factory=list)
    refused: int = 0
    failed: int = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(PATH, self.receive)
        return app

    async def receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_next > 0:
            self.fail_next -= 1
            self.failed += 1
            return web.Response(status=self.failure_status)
        try:
            payload = Webhook(self.secret).verify(body, dict(request.headers))
        except WebhookVerificationError:
            self.refused += 1
            return web.Response(status=400)
        self.accepted.append(Received(request.headers["webhook-id"], payload))
        return web.Response(status=204)

    def of(self, user_id: object, type: str | None = None) -> list[Received]:
        return [
            r
            for r in self.accepted
            if r.user_id == str(user_id) and (type is None or r.type == type)
        ]
