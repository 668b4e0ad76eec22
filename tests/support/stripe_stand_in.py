"""A stand-in for Stripe's API: a small aiohttp server speaking its wire format.

The sidecar and ``tally stripe-setup`` talk to it through stripe-python, as
they would to ``https://api.stripe.com``; tests read what was asked and seed
what Stripe would hold. What it does as Stripe does:

- form-encoded parameters with nested keys (``stripe_wire.decode_form``); an
  unknown top-level parameter is refused by name, so a guessed parameter name
  fails a test instead of passing silently;
- ``Idempotency-Key`` on POSTs: the same key with the same parameters replays
  the first answer (header ``Idempotent-Replayed: true``); with other
  parameters (or on another endpoint) it is a 400 ``idempotency_error``; while
  the first request with the key is still running, a 409
  ``idempotency_key_in_use``;
- Stripe's error body and a ``Request-Id`` header on every answer; list pages
  (``limit``, ``starting_after``, ``ending_before``, ``has_more``, ``url``),
  newest first; ``expand[]`` of ids that name stored objects.

Objects are shaped by ``tally.stripe_events`` (the API version pinned by the
sidecar, ``2025-03-31.basil``). Tests seed them with ``add_*`` (events,
invoices with all their lines, subscriptions, prices, sessions, refunds,
disputes) and make calls fail with ``fail_next`` (HTTP 500 or 429, a dropped
connection, a hang). Injected failures happen before the request "executes",
as a load balancer's 5xx or a rate limit would: nothing is saved under its
idempotency key, so a retry can succeed. Every request is recorded.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from tally import stripe_events as se
from tests.support.stripe_wire import (
    JSON,
    LIST_PARAMS,
    StripeError,
    as_bool,
    as_int,
    check_params,
    decode_form,
    error_response,
    invalid,
    list_page,
    missing,
    newest_first,
    require,
)

FailureKind = Literal["500", "429", "409", "drop", "hang"]
Handler = Callable[[web.Request, JSON], Awaitable[JSON]]


@dataclass
class StripeRequest:
    """One request as it reached the stand-in."""

    method: str
    path: str
    form: dict[str, str]  # the flat pairs, as sent (query string for GETs)
    idempotency_key: str | None
    stripe_version: str | None
    authorization: str | None
    params: JSON = field(default_factory=dict)  # the nested parameters Stripe reads


@dataclass
class Failure:
    kind: FailureKind
    path: str | None  # None: any path
    method: str | None  # None: any method


@dataclass
class _Saved:
    signature: tuple[str, str, tuple[tuple[str, str], ...]]
    status: int
    body: JSON


class StripeStandIn:
    """Stripe's API for tests: objects in memory, requests recorded, failures on demand."""

    def __init__(self, *, latency: float = 0.0, hang_seconds: float = 3600.0) -> None:
        self.requests: list[StripeRequest] = []
        self.ids = se.Ids("stripe-stand-in")
        self.latency = latency  # seconds each executing POST takes (makes overlaps testable)
        self.hang_seconds = hang_seconds
        # Persistent misbehaviour, for simple tests: every call fails or hangs.
        self.fail_with: int | None = None
        self.hang = False
        self._failures: deque[Failure] = deque()
        self._saved: dict[str, _Saved] = {}
        self._in_flight: set[str] = set()
        self.objects: dict[str, dict[str, JSON]] = {}
        self.invoice_lines: dict[str, list[JSON]] = {}
        self.undelivered: set[str] = set()
        self.webhook_secrets: dict[str, str] = {}

    # -- set-up by tests -------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        routes: list[tuple[str, str, Handler]] = [
            ("POST", "/v1/customers", self.create_customer),
            ("GET", "/v1/customers/{id}", self.retrieve("customer")),
            ("POST", "/v1/checkout/sessions", self.create_checkout_session),
            ("GET", "/v1/checkout/sessions", self.list_checkout_sessions),
            ("GET", "/v1/checkout/sessions/{id}", self.retrieve("checkout.session")),
            ("POST", "/v1/checkout/sessions/{id}/expire", self.expire_checkout_session),
            ("POST", "/v1/billing_portal/sessions", self.create_portal_session),
            ("POST", "/v1/billing_portal/configurations", self.create_portal_configuration),
            ("POST", "/v1/billing_portal/configurations/{id}", self.update_portal_configuration),
            ("GET", "/v1/billing_portal/configurations", self.list_portal_configurations),
            (
                "GET",
                "/v1/billing_portal/configurations/{id}",
                self.retrieve("billing_portal.configuration"),
            ),
            ("POST", "/v1/webhook_endpoints", self.create_webhook_endpoint),
            ("POST", "/v1/webhook_endpoints/{id}", self.update_webhook_endpoint),
            ("GET", "/v1/webhook_endpoints", self.list_webhook_endpoints),
            ("GET", "/v1/webhook_endpoints/{id}", self.retrieve("webhook_endpoint")),
            ("GET", "/v1/prices/{id}", self.retrieve("price")),
            ("GET", "/v1/subscriptions", self.list_subscriptions),
            ("GET", "/v1/subscriptions/{id}", self.retrieve("subscription")),
            ("POST", "/v1/subscriptions/{id}", self.update_subscription),
            ("POST", "/v1/subscription_schedules", self.create_schedule),
            ("GET", "/v1/subscription_schedules/{id}", self.retrieve("subscription_schedule")),
            ("POST", "/v1/subscription_schedules/{id}", self.update_schedule),
            ("POST", "/v1/subscription_schedules/{id}/release", self.release_schedule),
            ("GET", "/v1/invoices", self.list_invoices),
            ("GET", "/v1/invoices/{id}", self.retrieve("invoice")),
            ("GET", "/v1/invoices/{id}/lines", self.list_invoice_lines),
            ("GET", "/v1/events", self.list_events),
            ("GET", "/v1/events/{id}", self.retrieve("event")),
            ("GET", "/v1/refunds", self.lister("refund", ("charge", "payment_intent"))),
            ("GET", "/v1/disputes", self.lister("dispute", ("charge", "payment_intent"))),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, path, self._endpoint(handler))
        return app

    def fail_next(
        self,
        count: int = 1,
        kind: FailureKind = "500",
        *,
        path: str | None = None,
        method: str | None = None,
    ) -> StripeStandIn:
        """The next ``count`` calls (to ``method`` ``path``, or any) fail this way."""
        self._failures.extend(Failure(kind, path, method) for _ in range(count))
        return self

    def heal(self) -> StripeStandIn:
        """Stripe is back: the failures still queued are dropped."""
        self._failures.clear()
        return self

    def of_path(self, path: str, method: str | None = "POST") -> list[StripeRequest]:
        """The requests to ``path``: the writes by default, ``method=None`` for all."""
        return [r for r in self.requests if r.path == path and method in (None, r.method)]

    def add(self, obj: JSON) -> JSON:
        """Store any Stripe object (by its ``object`` and ``id``); returns the stored copy."""
        stored = copy.deepcopy(obj)
        self.objects.setdefault(stored["object"], {})[stored["id"]] = stored
        return stored

    # Readable names for seeding; each stores the object as Stripe holds it.
    def add_customer(self, customer: JSON) -> JSON:
        return self.add(customer)

    def add_subscription(self, subscription: JSON) -> JSON:
        return self.add(subscription)

    def add_checkout_session(self, session: JSON) -> JSON:
        return self.add(session)

    def add_refund(self, refund: JSON) -> JSON:
        return self.add(refund)

    def add_dispute(self, dispute: JSON) -> JSON:
        return self.add(dispute)

    def add_event(self, event: JSON, *, delivered: bool = False) -> JSON:
        """An event of the Events API; undelivered unless told (what replay looks for)."""
        stored = self.add(event)
        if not delivered:
            self.undelivered.add(stored["id"])
        return stored

    def add_invoice(self, invoice: JSON, lines: list[JSON] | None = None, embedded: int = 10):
        """An invoice with all its lines; the object embeds only the first ``embedded``."""
        every_line = copy.deepcopy(lines if lines is not None else invoice["lines"]["data"])
        stored = self.add(invoice)
        self.invoice_lines[stored["id"]] = every_line
        stored["lines"] = {
            "object": "list",
            "data": copy.deepcopy(every_line[:embedded]),
            "has_more": len(every_line) > embedded,
            "total_count": len(every_line),
            "url": f"/v1/invoices/{stored['id']}/lines",
        }
        return stored

    def add_price(self, price_id: str, *, product: str, unit_amount: int = 1000, recurring=True):
        return self.add(
            se.price(
                id=price_id,
                unit_amount=unit_amount,
                product=product,
                created=self.now(),
                recurring=recurring,
            )
        )

    def get(self, kind: str, object_id: str) -> JSON:
        return self.objects[kind][object_id]

    def all(self, kind: str) -> list[JSON]:
        return list(self.objects.get(kind, {}).values())

    @staticmethod
    def now() -> int:
        return int(time.time())

    # -- the request pipeline ----------------------------------------------------------------

    def _endpoint(self, handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def endpoint(request: web.Request) -> web.StreamResponse:
            request_id = self.ids.new("req")
            pairs = await self._pairs(request)
            recorded = self._record(request, pairs)
            failure = await self._misbehave(request)
            if failure is not None:
                return failure
            try:
                if recorded.authorization is None or not recorded.authorization.startswith(
                    "Bearer sk_"
                ):
                    raise StripeError(401, "invalid_request_error", "Invalid API Key provided")
                recorded.params = decode_form(pairs)
                return await self._execute(request, recorded, handler, request_id)
            except StripeError as problem:
                return error_response(problem, request_id)

        return endpoint

    @staticmethod
    async def _pairs(request: web.Request) -> list[tuple[str, str]]:
        if request.method == "GET":
            return list(request.query.items())
        form = await request.post()
        return [(k, v) for k, v in form.items() if isinstance(v, str)]

    def _record(self, request: web.Request, pairs: list[tuple[str, str]]) -> StripeRequest:
        recorded = StripeRequest(
            request.method,
            request.path,
            dict(pairs),
            request.headers.get("Idempotency-Key"),
            request.headers.get("Stripe-Version"),
            request.headers.get("Authorization"),
        )
        self.requests.append(recorded)
        return recorded

    async def _misbehave(self, request: web.Request) -> web.StreamResponse | None:
        failure = self._take_failure(request.method, request.path)
        if self.hang or (failure and failure.kind == "hang"):
            await asyncio.sleep(self.hang_seconds)
        if failure and failure.kind == "drop":
            assert request.transport is not None
            request.transport.close()  # the client sees the connection end without an answer
            return web.Response()
        status = int(failure.kind) if failure and failure.kind != "hang" else self.fail_with
        if status is None:
            return None
        return error_response(_injected(status), "req_fake_failure")

    def _take_failure(self, method: str, path: str) -> Failure | None:
        for failure in self._failures:
            if failure.path in (None, path) and failure.method in (None, method):
                self._failures.remove(failure)
                return failure
        return None

    async def _execute(
        self, request: web.Request, recorded: StripeRequest, handler: Handler, request_id: str
    ) -> web.Response:
        key = recorded.idempotency_key if request.method == "POST" else None
        signature = (request.method, request.path, tuple(sorted(recorded.form.items())))
        if key is not None:
            replay = self._replay(key, signature, request_id)
            if replay is not None:
                return replay
            self._in_flight.add(key)
        try:
            if request.method == "POST" and self.latency:
                await asyncio.sleep(self.latency)
            try:
                status, body = 200, self._expand(await handler(request, recorded.params), recorded)
            except StripeError as problem:
                status, body = problem.status, problem.body
            if key is not None:
                self._saved[key] = _Saved(signature, status, body)
        finally:
            if key is not None:
                self._in_flight.discard(key)
        return web.json_response(body, status=status, headers={"Request-Id": request_id})

    def _replay(self, key: str, signature: Any, request_id: str) -> web.Response | None:
        if key in self._in_flight:
            raise StripeError(
                409,
                "idempotency_error",
                "There is currently another in-progress request using this Idempotent Key"
                " (that probably means you submitted twice, and the other request is still"
                f" going through): {key}. Please try again later.",
                code="idempotency_key_in_use",
            )
        saved = self._saved.get(key)
        if saved is None:
            return None
        if saved.signature != signature:
            raise StripeError(
                400,
                "idempotency_error",
                "Keys for idempotent requests can only be used with the same parameters they"
                f" were first used with. Try using a key other than '{key}' if you meant to"
                " execute a different request.",
            )
        headers = {"Request-Id": request_id, "Idempotent-Replayed": "true"}
        return web.json_response(saved.body, status=saved.status, headers=headers)

    def _expand(self, body: JSON, recorded: StripeRequest) -> JSON:
        body = copy.deepcopy(body)
        for path in recorded.params.get("expand", []):
            self._expand_path(body, path.split("."))
        return body

    def _expand_path(self, node: Any, parts: list[str]) -> None:
        head, rest = parts[0], parts[1:]
        if head == "data" and isinstance(node.get("data"), list):
            for item in node["data"]:
                self._expand_path(item, rest)
            return
        value = node.get(head)
        if rest:
            if isinstance(value, dict):
                self._expand_path(value, rest)
            return
        if isinstance(value, str):
            for collection in self.objects.values():
                if value in collection:
                    node[head] = copy.deepcopy(collection[value])
                    return

    # -- generic handlers ------------------------------------------------------------------

    def retrieve(self, kind: str) -> Handler:
        async def handler(request: web.Request, params: JSON) -> JSON:
            check_params(params, ())
            return self._stored(kind, request.match_info["id"])

        return handler

    def _stored(self, kind: str, object_id: str) -> JSON:
        found = self.objects.get(kind, {}).get(object_id)
        if found is None:
            raise missing(kind.split(".")[-1].replace("_", " "), object_id)
        return self._rendered(found)

    def _rendered(self, obj: JSON) -> JSON:
        if obj.get("object") == "webhook_endpoint":
            return {k: v for k, v in obj.items() if k != "secret"}
        return obj

    def lister(self, kind: str, filters: tuple[str, ...]) -> Handler:
        async def handler(request: web.Request, params: JSON) -> JSON:
            check_params(params, (*LIST_PARAMS, *filters))
            return self._list(kind, params, filters, request.path)

        return handler

    def _list(self, kind: str, params: JSON, filters: tuple[str, ...], url: str) -> JSON:
        objects = [
            self._rendered(o)
            for o in self.all(kind)
            if all(str(o.get(f)) == params[f] for f in filters if f in params)
        ]
        return list_page(newest_first(objects), params, url)

    # -- customers and Checkout ----------------------------------------------------------------

    async def create_customer(self, request: web.Request, params: JSON) -> JSON:
        check_params(params, ("metadata", "email", "name", "description"))
        return self.add(
            se.customer(
                id=self.ids.new("cus"),
                created=self.now(),
                email=params.get("email"),
                metadata=params.get("metadata") or {},
            )
        )

    async def create_checkout_session(self, request: web.Request, params: JSON) -> JSON:
        check_params(
            params,
            (
                "mode",
                "customer",
                "customer_email",
                "client_reference_id",
                "line_items",
                "metadata",
                "success_url",
                "cancel_url",
                "subscription_data",
                "payment_intent_data",
                "allow_promotion_codes",
                "expires_at",
                "ui_mode",
            ),
        )
        require(params, "mode", "success_url", "line_items")
        if params["mode"] not in ("payment", "subscription", "setup"):
            raise invalid(f"Invalid mode: {params['mode']}", param="mode")
        if params.get("customer") and params["customer"] not in self.objects.get("customer", {}):
            raise missing("customer", params["customer"], "customer")
        created = self.now()
        session = se.checkout_session(
            id=self.ids.new("cs_test"),
            mode=params["mode"],
            created=created,
            payment_status="unpaid",
            status="open",
            customer=params.get("customer"),
            client_reference_id=params.get("client_reference_id"),
            metadata=params.get("metadata") or {},
            success_url=params["success_url"],
            cancel_url=params.get("cancel_url", ""),
        )
        if "expires_at" in params:
            session["expires_at"] = as_int(params["expires_at"], "expires_at")
        return self.add(session)

    async def list_checkout_sessions(self, request: web.Request, params: JSON) -> JSON:
        filters = ("customer", "status", "payment_intent", "subscription")
        check_params(params, (*LIST_PARAMS, *filters))
        return self._list("checkout.session", params, filters, request.path)

    async def expire_checkout_session(self, request: web.Request, params: JSON) -> JSON:
        check_params(params, ())
        session = self.objects.get("checkout.session", {}).get(request.match_info["id"])
        if session is None:
            raise missing("checkout.session", request.match_info["id"])
        if session["status"] != "open":
            raise invalid(
                "Only Checkout Sessions with a status of `open` can be expired. This"
                f" Checkout Session has a status of `{session['status']}`."
            )
        session.update(status="expired", url=None)
        return session

    async def create_portal_session(self, request: web.Request, params: JSON) -> JSON:
        check_params(params, ("customer", "return_url", "configuration", "flow_data", "locale"))
        require(params, "customer")
        if params["customer"] not in self.objects.get("customer", {}):
            raise missing("customer", params["customer"], "customer")
        if "configuration" in params:
            self._stored("billing_portal.configuration", params["configuration"])
        session = se.billing_portal_session(
            id=self.ids.new("bps"),
            customer=params["customer"],
            created=self.now(),
            return_url=params.get("return_url", ""),
        )
        if "configuration" in params:
            session["configuration"] = params["configuration"]
        return self.add(session)

    # -- portal configurations and webhook endpoints -----------------------------------------

    PORTAL_PARAMS = ("features", "business_profile", "default_return_url", "metadata", "login_page")

    async def create_portal_configuration(self, request: web.Request, params: JSON) -> JSON:
        check_params(params, self.PORTAL_PARAMS)
        require(params, "features")
        now = self.now()
        configuration = {
            "id": self.ids.new("bpc"),
            "object": "billing_portal.configuration",
            "active": True,
            "application": None,
            "business_profile": {
                "headline": None,
                "privacy_policy_url": None,
                "terms_of_service_url": None,
            },
            "created": now,
            "default_return_url": None,
            "features": _default_portal_features(),
            "is_default": False,
            "livemode": False,
            "login_page": {"enabled": False, "url": None},
            "metadata": {},
            "updated": now,
        }
        _apply_portal_params(configuration, params)
        return self.add(configuration)

    async def update_portal_configuration(self, request: web.Request, params: JSON) -> JSON:
        check_params(params, (*self.PORTAL_PARAMS, "active"))
        configuration = self.objects.get("billing_portal.configuration", {}).get(
            request.match_info["id"]
        )
        if configuration is None:
            raise missing("billing_portal.configuration", request.match_info["id"])
        _apply_portal_params(configuration, params)
        if "active" in params:
            configuration["active"] = as_bool(params["active"], "active")
        configuration["updated"] = self.now()
        return configuration

    async def list_portal_configurations(self, request: web.Request, params: JSON) -> JSON:
        check_params(params, ("limit", "starting_after", "ending_before", "active", "is_default"))
        objects = [
            c
            for c in self.all("billing_portal.configuration")
            if all(c[f] == as_bool(params[f], f) for f in ("active", "is_default") if f in params)
        ]
        return list_page(newest_first(objects), params, request.path)

    ENDPOINT_PARAMS = ("url", "enabled_events", "api_version", "description", "metadata", "connect")

    async def create_webhook_endpoint(self, request: web.Request, params: JSON) -> JSON:
        check_params(params, self.ENDPOINT_PARAMS)
        require(params, "url", "enabled_events")
        endpoint_id = self.ids.new("we")
        secret = "whsec_" + secrets.token_urlsafe(24)
        endpoint = {
            "id": endpoint_id,
            "object": "webhook_endpoint",
            "api_version": params.get("api_version"),
            "application": None,
            "created": self.now(),
            "description": params.get("description"),
            "enabled_events": list(params["enabled_events"]),
            "livemode": False,
            "metadata": dict(params.get("metadata") or {}),
            "secret": secret,
            "status": "enabled",
            "url": params["url"],
        }
        self.webhook_secrets[endpoint_id] = secret
        return self.add(endpoint)

    async def update_webhook_endpoint(self, request: web.Request, params: JSON) -> JSON:
        allowed = ("url", "enabled_events", "description", "metadata", "disabled")
        check_params(params, allowed)  # api_version cannot change: Stripe has no such parameter
        endpoint = self.objects.get("webhook_endpoint", {}).get(request.match_info["id"])
        if endpoint is None:
            raise missing("webhook_endpoint", request.match_info["id"])
        for name in ("url", "description"):
            if name in params:
                endpoint[name] = params[name]
        if "enabled_events" in params:
            endpoint["enabled_events"] = list(params["enabled_events"])
        if "metadata" in params:
            endpoint["metadata"] = _merged_metadata(endpoint["metadata"], params["metadata"])
        if "disabled" in params:
            disabled = as_bool(params["disabled"], "disabled")
            endpoint["status"] = "disabled" if disabled else "enabled"
        return self._rendered(endpoint)

    async def list_webhook_endpoints(self, request: web.Request, params: JSON) -> JSON:
        check_params(params, ("limit", "starting_after", "ending_before"))
        return self._list("webhook_endpoint", params, (), request.path)

    # -- subscriptions and schedules -----------------------------------------------------------

    async def list_subscriptions(self, request: web.Request, params: JSON) -> JSON:
        """Stripe's default leaves canceled subscriptions out; ``status=all`` lists all."""
        check_params(params, (*LIST_PARAMS, "customer", "price", "status"))
        status = params.get("status")
        objects = [
            self._rendered(sub)
            for sub in self.all("subscription")
            if str(sub.get("customer")) == params.get("customer", str(sub.get("customer")))
            and (
                status == "all"
                or sub["status"] == status
                or (status is None and sub["status"] != "canceled")
            )
        ]
        return list_page(newest_first(objects), params, request.path)

    async def update_subscription(self, request: web.Request, params: JSON) -> JSON:
        check_params(
            params,
            (
                "items",
                "proration_behavior",
                "payment_behavior",
                "metadata",
                "cancel_at_period_end",
                "proration_date",
            ),
        )
        sub = self._live("subscription", request.match_info["id"])
        for position, change in enumerate(params.get("items", [])):
            self._change_item(sub, change, position)
        if "metadata" in params:
            sub["metadata"] = _merged_metadata(sub["metadata"], params["metadata"])
        if "cancel_at_period_end" in params:
            sub["cancel_at_period_end"] = as_bool(
                params["cancel_at_period_end"], "cancel_at_period_end"
            )
        return sub

    def _change_item(self, sub: JSON, change: JSON, position: int) -> None:
        items = {item["id"]: item for item in sub["items"]["data"]}
        item_id = change.get("id")
        if item_id not in items:
            raise invalid(
                f"Invalid subscription_item id: {item_id}", param=f"items[{position}][id]"
            )
        if "price" in change:
            price = self.objects.get("price", {}).get(change["price"])
            if price is None:
                raise missing("price", change["price"], f"items[{position}][price]")
            items[item_id]["price"] = copy.deepcopy(price)

    def _live(self, kind: str, object_id: str) -> JSON:
        found = self.objects.get(kind, {}).get(object_id)
        if found is None:
            raise missing(kind.replace("_", " "), object_id)
        return found

    async def create_schedule(self, request: web.Request, params: JSON) -> JSON:
        check_params(
            params,
            ("from_subscription", "customer", "phases", "end_behavior", "start_date", "metadata"),
        )
        require(params, "from_subscription")
        others = set(params) - {"from_subscription", "expand"}
        if others:
            raise invalid(
                "You cannot set other parameters when using `from_subscription`.",
                param=sorted(others)[0],
            )
        sub = self._live("subscription", params["from_subscription"])
        if sub.get("schedule"):
            raise invalid(
                f"You cannot migrate a subscription that is already attached to a schedule:"
                f" `{sub['schedule']}`.",
                param="from_subscription",
            )
        start, end = _current_period(sub)
        item = sub["items"]["data"][0]
        schedule = {
            "id": self.ids.new("sub_sched"),
            "object": "subscription_schedule",
            "canceled_at": None,
            "completed_at": None,
            "created": self.now(),
            "current_phase": {"start_date": start, "end_date": end},
            "customer": sub["customer"],
            "end_behavior": "release",
            "livemode": False,
            "metadata": {},
            "phases": [
                {
                    "start_date": start,
                    "end_date": end,
                    "items": [{"price": item["price"]["id"], "quantity": item.get("quantity", 1)}],
                    "proration_behavior": "create_prorations",
                }
            ],
            "released_at": None,
            "released_subscription": None,
            "status": "active",
            "subscription": sub["id"],
        }
        sub["schedule"] = schedule["id"]
        return self.add(schedule)

    async def update_schedule(self, request: web.Request, params: JSON) -> JSON:
        check_params(params, ("phases", "end_behavior", "proration_behavior", "metadata"))
        schedule = self._live("subscription_schedule", request.match_info["id"])
        if schedule["status"] not in ("active", "not_started"):
            raise invalid(
                f"You cannot update a subscription schedule that is {schedule['status']}."
            )
        if "end_behavior" in params:
            if params["end_behavior"] not in ("release", "cancel"):
                raise invalid("Invalid end_behavior", param="end_behavior")
            schedule["end_behavior"] = params["end_behavior"]
        if "phases" in params:
            schedule["phases"] = _phases(params["phases"])
            first = schedule["phases"][0]
            schedule["current_phase"] = {
                "start_date": first["start_date"],
                "end_date": first["end_date"],
            }
        return schedule

    async def release_schedule(self, request: web.Request, params: JSON) -> JSON:
        check_params(params, ("preserve_cancel_date",))
        schedule = self._live("subscription_schedule", request.match_info["id"])
        sub = self.objects.get("subscription", {}).get(schedule["subscription"])
        if sub is not None:
            sub["schedule"] = None
        schedule.update(
            status="released",
            released_at=self.now(),
            released_subscription=schedule["subscription"],
            subscription=None,
            current_phase=None,
        )
        return schedule

    # -- invoices and events ---------------------------------------------------------------

    async def list_invoices(self, request: web.Request, params: JSON) -> JSON:
        filters = ("customer", "status", "subscription")
        check_params(params, (*LIST_PARAMS, *filters))
        return self._list("invoice", params, filters, request.path)

    async def list_invoice_lines(self, request: web.Request, params: JSON) -> JSON:
        check_params(params, ("limit", "starting_after", "ending_before"))
        invoice_id = request.match_info["id"]
        if invoice_id not in self.invoice_lines:
            raise missing("invoice", invoice_id)
        # Lines keep the invoice's order (oldest first), unlike object lists.
        return list_page(self.invoice_lines[invoice_id], params, request.path)

    async def list_events(self, request: web.Request, params: JSON) -> JSON:
        check_params(params, (*LIST_PARAMS, "type", "types", "delivery_success"))
        if "type" in params and "types" in params:
            raise invalid("You may pass either `type` or `types`, but not both.", param="types")
        types = params.get("types") or ([params["type"]] if "type" in params else None)
        if types is not None and len(types) > 20:
            raise invalid("`types` may contain at most 20 event types.", param="types")
        delivered = params.get("delivery_success")
        events = [
            e
            for e in self.all("event")
            if (types is None or e["type"] in types)
            and (
                delivered is None
                or as_bool(delivered, "delivery_success") != (e["id"] in self.undelivered)
            )
        ]
        return list_page(newest_first(events), params, request.path)


# -- object helpers ------------------------------------------------------------------------


def _injected(status: int) -> StripeError:
    if status == 429:
        return StripeError(
            429,
            "invalid_request_error",
            "Request rate limit exceeded. Learn more about rate limits here"
            " https://stripe.com/docs/rate-limits.",
            code="rate_limit",
        )
    if status == 409:
        return StripeError(
            409,
            "idempotency_error",
            "There is currently another in-progress request using this Idempotent Key.",
            code="idempotency_key_in_use",
        )
    return StripeError(status, "api_error", "An unknown error occurred")


def _current_period(sub: JSON) -> tuple[int, int]:
    item = sub["items"]["data"][0]
    if "current_period_start" in item:  # basil and later
        return item["current_period_start"], item["current_period_end"]
    return sub["current_period_start"], sub["current_period_end"]


def _phases(phases: Any) -> list[JSON]:
    if not isinstance(phases, list) or not phases:
        raise invalid("phases must be a non-empty list", param="phases")
    rendered: list[JSON] = []
    for position, phase in enumerate(phases):
        check_params(phase, ("items", "start_date", "end_date", "iterations", "proration_behavior"))
        if not phase.get("items"):
            raise invalid("Missing required param: items.", param=f"phases[{position}][items]")
        start = phase.get("start_date") or (rendered[-1]["end_date"] if rendered else None)
        if start is None:
            raise invalid("The first phase must have a start_date.", param="phases[0][start_date]")
        start = as_int(start, f"phases[{position}][start_date]")
        end = phase.get("end_date")
        rendered.append(
            {
                "start_date": start,
                "end_date": as_int(end, f"phases[{position}][end_date]") if end else None,
                "items": [
                    {"price": item["price"], "quantity": as_int(item.get("quantity", 1), "q")}
                    for item in phase["items"]
                ],
                "proration_behavior": phase.get("proration_behavior", "create_prorations"),
            }
        )
    for before, after in itertools.pairwise(rendered):
        if before["end_date"] is not None and before["end_date"] != after["start_date"]:
            raise invalid("Phases must be sequential.", param="phases")
    return rendered


def _merged_metadata(current: JSON, update: Any) -> JSON:
    if update == "":
        return {}
    merged = {**current, **update}
    return {k: v for k, v in merged.items() if v != ""}


def _default_portal_features() -> JSON:
    return {
        "customer_update": {"allowed_updates": [], "enabled": False},
        "invoice_history": {"enabled": False},
        "payment_method_update": {"enabled": False},
        "subscription_cancel": {
            "cancellation_reason": {
                "enabled": False,
                "options": ["too_expensive", "missing_features", "switched_service", "unused"],
            },
            "enabled": False,
            "mode": "at_period_end",
            "proration_behavior": "none",
        },
        "subscription_update": {
            "default_allowed_updates": [],
            "enabled": False,
            "products": [],
            "proration_behavior": "none",
            "schedule_at_period_end": {"conditions": []},
        },
    }


PORTAL_FEATURES = {
    "customer_update": {"allowed_updates", "enabled"},
    "invoice_history": {"enabled"},
    "payment_method_update": {"enabled"},
    "subscription_cancel": {"cancellation_reason", "enabled", "mode", "proration_behavior"},
    "subscription_update": {
        "default_allowed_updates",
        "enabled",
        "products",
        "proration_behavior",
        "schedule_at_period_end",
    },
}


def _apply_portal_params(configuration: JSON, params: JSON) -> None:
    for name in ("default_return_url",):
        if name in params:
            configuration[name] = params[name] or None
    if "business_profile" in params:
        configuration["business_profile"].update(params["business_profile"])
    if "metadata" in params:
        configuration["metadata"] = _merged_metadata(configuration["metadata"], params["metadata"])
    for feature, values in (params.get("features") or {}).items():
        if feature not in PORTAL_FEATURES:
            raise invalid(
                f"Received unknown parameter: features[{feature}]", param=f"features[{feature}]"
            )
        for name, value in values.items():
            if name not in PORTAL_FEATURES[feature]:
                raise invalid(
                    f"Received unknown parameter: features[{feature}][{name}]",
                    param=f"features[{feature}][{name}]",
                )
            configuration["features"][feature][name] = _portal_value(name, value)


def _portal_value(name: str, value: Any) -> Any:
    if name == "enabled":
        return as_bool(value, name)
    if name == "products":
        return [{"prices": list(p["prices"]), "product": p["product"]} for p in value]
    if name == "cancellation_reason":
        return {"enabled": as_bool(value["enabled"], name), "options": value.get("options", [])}
    if name == "schedule_at_period_end":
        return {"conditions": [{"type": c["type"]} for c in value.get("conditions", [])]}
    return value
