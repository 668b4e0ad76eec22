"""The sidecar's calls to Stripe's API, over stripe-python's StripeClient.

The API version is pinned here, once: the shapes the sidecar sends and reads
do not change when stripe-python is upgraded. ``STRIPE_API_BASE`` (development
only) points every call at a stand-in.

Retries: every POST carries an idempotency key and GETs are safe, so every
call may be repeated. stripe-python retries network errors, 409 (an
idempotency key still in use) and 5xx with exponential backoff
(``max_network_retries``); a 429 it leaves alone, so ``_call`` retries that
itself. The whole call, retries included, is bounded by ``timeout``: a caller
answering a browser gets its 502 quickly. Every failure becomes
``StripeUnavailable`` with a short message, logged with Stripe's request id.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import stripe
from stripe import RequestOptions
from stripe.params import (
    CustomerCreateParams,
    DisputeListParams,
    EventListParams,
    InvoiceListParams,
    RefundListParams,
    SubscriptionListParams,
    SubscriptionScheduleUpdateParams,
    SubscriptionScheduleUpdateParamsPhaseItem,
    SubscriptionUpdateParams,
)
from stripe.params.billing_portal import SessionCreateParams as PortalSessionParams
from stripe.params.checkout import SessionCreateParams as CheckoutSessionParams
from stripe.params.checkout import SessionListParams as CheckoutSessionListParams

from sidecar.observability import logger

STRIPE_API_VERSION = "2025-03-31.basil"
MAX_NETWORK_RETRIES = 2
RATE_LIMIT_BACKOFF = 0.5  # seconds before the first retry of a 429; doubles each time
LIST_PAGE_SIZE = 100
# Statuses of a subscription that still bills (the database's billing profile
# counts the same ones as an active subscription).
LIVE_SUBSCRIPTION_STATUSES = frozenset({"active", "trialing", "past_due", "unpaid", "paused"})
JSON = dict[str, Any]
T = TypeVar("T")


class StripeUnavailable(Exception):
    """Stripe failed, refused or timed out; the caller answers 502 with ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StripeRefused(StripeUnavailable):
    """Stripe answered that the request itself is wrong (400, 404): asking again
    gets the same answer, so a caller that must not wait forever (the event
    path) records the refusal instead of retrying."""


@dataclass(frozen=True)
class CheckoutSession:
    id: str
    url: str | None
    mode: str
    status: str
    expires_at: int
    metadata: dict[str, str]


@dataclass(frozen=True)
class SubscriptionState:
    """What a plan change needs of a subscription, read from Stripe itself."""

    id: str
    status: str
    item_id: str  # the plan's item: the one whose price is in the catalog
    price_id: str
    current_period_start: int
    current_period_end: int
    schedule_id: str | None
    # The subscription's other items (a metered price, say), as a schedule
    # phase lists them: a phase's items replace all of the subscription's.
    other_items: tuple[SubscriptionScheduleUpdateParamsPhaseItem, ...] = ()


def raw(obj: stripe.StripeObject) -> JSON:
    """The object as Stripe sent it: plain JSON values, no stripe-python types."""
    return obj.to_dict(recursive=True, for_json=True)


def _session(obj: stripe.checkout.Session) -> CheckoutSession:
    session = raw(obj)
    return CheckoutSession(
        id=session["id"],
        url=session.get("url"),
        mode=session["mode"],
        status=str(session.get("status")),
        expires_at=int(session.get("expires_at") or 0),
        metadata={str(k): str(v) for k, v in (session.get("metadata") or {}).items()},
    )


def subscription_state(sub: JSON, plan_prices: Collection[str] = ()) -> SubscriptionState:
    """The plan item's price and period (basil: on the item; earlier: on the subscription).

    The plan item is the one whose price is in the catalog (``plan_prices``);
    a subscription may carry other items beside it. Without one, the first.
    """
    items = sub["items"]["data"]
    item = next((i for i in items if i["price"]["id"] in plan_prices), items[0])
    start = item.get("current_period_start", sub.get("current_period_start"))
    end = item.get("current_period_end", sub.get("current_period_end"))
    schedule = sub.get("schedule")
    return SubscriptionState(
        id=sub["id"],
        status=sub["status"],
        item_id=item["id"],
        price_id=item["price"]["id"],
        current_period_start=int(start),
        current_period_end=int(end),
        schedule_id=schedule if isinstance(schedule, str) else None,
        other_items=tuple(_phase_item(i) for i in items if i is not item),
    )


def _phase_item(item: JSON) -> SubscriptionScheduleUpdateParamsPhaseItem:
    """An item as a schedule phase names it; metered prices take no quantity."""
    phase_item: SubscriptionScheduleUpdateParamsPhaseItem = {"price": item["price"]["id"]}
    recurring = item["price"].get("recurring") or {}
    if recurring.get("usage_type") != "metered" and item.get("quantity") is not None:
        phase_item["quantity"] = int(item["quantity"])
    return phase_item


class StripeApi:
    """Async calls to Stripe with our time budget, retries and error mapping."""

    def __init__(
        self,
        secret_key: str,
        session: aiohttp.ClientSession,
        *,
        timeout: float,
        api_base: str | None = None,
        max_network_retries: int = MAX_NETWORK_RETRIES,
    ) -> None:
        # One attempt may use half the budget, so a hung first attempt leaves
        # time for a retry; ``_call`` cuts the whole call at ``timeout``.
        http_client = stripe.AIOHTTPClient(
            session=session, timeout=aiohttp.ClientTimeout(total=timeout / 2)
        )
        self.timeout = timeout
        self.max_network_retries = max_network_retries
        self.client = stripe.StripeClient(
            secret_key,
            stripe_version=STRIPE_API_VERSION,
            http_client=http_client,
            max_network_retries=max_network_retries,
            base_addresses={"api": api_base} if api_base else None,
        )

    # -- the error and time boundary -------------------------------------------------------

    async def _call(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        try:
            async with asyncio.timeout(self.timeout):
                return await self._retrying_rate_limits(call)
        except stripe.InvalidRequestError as error:
            _log_failure(operation, error)
            code = error.code or "no code"
            raise StripeRefused(
                f"Stripe refused to {operation} (HTTP {error.http_status}: {code})"
            ) from error
        except stripe.StripeError as error:
            _log_failure(operation, error)
            raise StripeUnavailable(f"Stripe could not {operation}") from error
        except TimeoutError as error:
            # Retries that ran out of time end here too; the browser needs no difference.
            logger().warning("stripe call timed out", extra={"operation": operation})
            raise StripeUnavailable(f"Stripe could not {operation}") from error

    async def _retrying_rate_limits(self, call: Callable[[], Awaitable[T]]) -> T:
        for attempt in range(self.max_network_retries + 1):
            try:
                return await call()
            except stripe.RateLimitError:
                if attempt == self.max_network_retries:
                    raise
                delay = RATE_LIMIT_BACKOFF * 2**attempt
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
        raise AssertionError("unreachable")

    # -- customers and Checkout ----------------------------------------------------------------

    async def create_customer(self, user_id: str) -> str:
        """Create the user's customer; the idempotency key makes concurrent calls agree."""
        params: CustomerCreateParams = {"metadata": {"user_id": user_id}}
        options: RequestOptions = {"idempotency_key": f"tally-customer-{user_id}"}
        customer = await self._call(
            "create the customer", lambda: self.client.v1.customers.create_async(params, options)
        )
        return customer.id

    async def create_checkout_session(
        self, params: CheckoutSessionParams, idempotency_key: str
    ) -> CheckoutSession:
        options: RequestOptions = {"idempotency_key": idempotency_key}
        session = await self._call(
            "create the Checkout Session",
            lambda: self.client.v1.checkout.sessions.create_async(params, options),
        )
        if session.url is None:  # only embedded sessions lack one; ours are hosted
            raise StripeUnavailable("Stripe returned a Checkout Session without a URL")
        return _session(session)

    async def customer_checkout_sessions(self, customer_id: str) -> list[CheckoutSession]:
        """The customer's newest Checkout Sessions (one page of 100), newest first.

        Open sessions live 24 hours at most, so all of them are on this page
        unless a customer made a hundred sessions in a day; the newest, open
        or not, anchors the next idempotency key.
        """
        params: CheckoutSessionListParams = {"customer": customer_id, "limit": LIST_PAGE_SIZE}
        page = await self._call(
            "list the customer's Checkout Sessions",
            lambda: self.client.v1.checkout.sessions.list_async(params),
        )
        return [_session(s) for s in page.data]

    async def has_live_subscription(self, customer_id: str) -> bool:
        """Whether Stripe bills the customer a subscription that is not over.

        Stripe's word, not the database's: a subscription whose webhooks are
        still on their way (or one made in the Dashboard) counts too.
        """
        params: SubscriptionListParams = {
            "customer": customer_id,
            "status": "all",
            "limit": LIST_PAGE_SIZE,
        }
        async for sub in self._every(
            "list the customer's subscriptions", self.client.v1.subscriptions.list_async, params
        ):
            if sub.get("status") in LIVE_SUBSCRIPTION_STATUSES:
                return True
        return False

    async def expire_checkout_session(self, session_id: str) -> None:
        options: RequestOptions = {"idempotency_key": f"tally-expire-{session_id}"}
        await self._call(
            "expire a Checkout Session",
            lambda: self.client.v1.checkout.sessions.expire_async(session_id, None, options),
        )

    async def create_portal_session(
        self, customer_id: str, return_url: str, configuration: str | None = None
    ) -> str:
        params: PortalSessionParams = {"customer": customer_id, "return_url": return_url}
        if configuration:
            params["configuration"] = configuration
        portal = await self._call(
            "create the Customer Portal session",
            lambda: self.client.v1.billing_portal.sessions.create_async(params),
        )
        return portal.url

    # -- plan changes ----------------------------------------------------------------------

    async def subscription(
        self, subscription_id: str, plan_prices: Collection[str] = ()
    ) -> SubscriptionState:
        sub = await self._call(
            "read the subscription",
            lambda: self.client.v1.subscriptions.retrieve_async(subscription_id),
        )
        return subscription_state(raw(sub), plan_prices)

    async def change_price_now(
        self, sub: SubscriptionState, price_id: str, idempotency_key: str
    ) -> None:
        """Switch the item's price at once and invoice the difference now.

        ``pending_if_incomplete``: if that invoice is not paid, Stripe keeps the
        old price (the update stays pending), so no credits without money.
        """
        params: SubscriptionUpdateParams = {
            "items": [{"id": sub.item_id, "price": price_id}],
            "proration_behavior": "always_invoice",
            "payment_behavior": "pending_if_incomplete",
        }
        options: RequestOptions = {"idempotency_key": idempotency_key}
        await self._call(
            "change the subscription's plan",
            lambda: self.client.v1.subscriptions.update_async(sub.id, params, options),
        )

    async def schedule_price_change(
        self, sub: SubscriptionState, price_id: str, idempotency_key: str
    ) -> str:
        """From the end of the current period on, bill ``price_id``: a subscription schedule.

        Phase 0 keeps the current price until ``current_period_end``; phase 1
        (one billing interval, Stripe's default) bills the new price, after
        which the schedule releases the subscription, which renews on it.
        """
        schedule_id = sub.schedule_id or await self._schedule_of(sub, idempotency_key)
        params: SubscriptionScheduleUpdateParams = {
            "end_behavior": "release",
            "proration_behavior": "none",
            "phases": [
                {
                    "items": [{"price": sub.price_id, "quantity": 1}, *sub.other_items],
                    "start_date": sub.current_period_start,
                    "end_date": sub.current_period_end,
                },
                {"items": [{"price": price_id, "quantity": 1}, *sub.other_items]},
            ],
        }
        options: RequestOptions = {"idempotency_key": f"{idempotency_key}-phases"}
        await self._call(
            "schedule the plan change",
            lambda: self.client.v1.subscription_schedules.update_async(
                schedule_id, params, options
            ),
        )
        return schedule_id

    async def _schedule_of(self, sub: SubscriptionState, idempotency_key: str) -> str:
        options: RequestOptions = {"idempotency_key": f"{idempotency_key}-schedule"}
        schedule = await self._call(
            "schedule the plan change",
            lambda: self.client.v1.subscription_schedules.create_async(
                {"from_subscription": sub.id}, options
            ),
        )
        return schedule.id

    async def release_schedule(self, schedule_id: str) -> None:
        """Drop a scheduled change: the subscription goes on as it is now."""
        options: RequestOptions = {"idempotency_key": f"tally-release-{schedule_id}"}
        await self._call(
            "cancel the scheduled plan change",
            lambda: self.client.v1.subscription_schedules.release_async(schedule_id, None, options),
        )

    # -- reading for the event path ------------------------------------------------------------

    async def invoice_lines(self, invoice_id: str) -> list[JSON]:
        """Every line of an invoice (``GET /v1/invoices/{id}/lines``, all pages), raw."""

        async def every_page() -> list[JSON]:
            page = await self.client.v1.invoices.line_items.list_async(
                invoice_id, {"limit": LIST_PAGE_SIZE}
            )
            return [raw(line) async for line in page.auto_paging_iter()]

        return await self._call("list the invoice's lines", every_page)

    async def list_undelivered_events(
        self, types: Sequence[str], created_gte: int
    ) -> AsyncIterator[JSON]:
        """Events Stripe has not delivered (``delivery_success=false``), newest first, raw.

        Each page is one bounded call; the cursor moves with ``starting_after``.
        """
        params: EventListParams = {
            "delivery_success": False,
            "types": list(types),
            "created": {"gte": created_gte},
            "limit": LIST_PAGE_SIZE,
        }
        async for event in self._every(
            "list undelivered events", self.client.v1.events.list_async, params
        ):
            yield event

    # -- reading for reconciliation ------------------------------------------------------------

    async def paid_invoices(self, created_gte: int) -> AsyncIterator[JSON]:
        """Paid invoices created since ``created_gte``, newest first, raw (first lines only)."""
        params: InvoiceListParams = {
            "status": "paid",
            "created": {"gte": created_gte},
            "limit": LIST_PAGE_SIZE,
        }
        async for invoice in self._every(
            "list paid invoices", self.client.v1.invoices.list_async, params
        ):
            yield invoice

    async def completed_checkout_sessions(self, created_gte: int) -> AsyncIterator[JSON]:
        """Completed Checkout Sessions created since ``created_gte``, newest first, raw."""
        params: CheckoutSessionListParams = {
            "status": "complete",
            "created": {"gte": created_gte},
            "limit": LIST_PAGE_SIZE,
        }
        async for session in self._every(
            "list Checkout Sessions", self.client.v1.checkout.sessions.list_async, params
        ):
            yield session

    async def refunds(self, created_gte: int) -> AsyncIterator[JSON]:
        """Refunds created since ``created_gte``, each with its charge expanded, raw."""
        params: RefundListParams = {
            "created": {"gte": created_gte},
            "limit": LIST_PAGE_SIZE,
            "expand": ["data.charge"],
        }
        async for refund in self._every("list refunds", self.client.v1.refunds.list_async, params):
            yield refund

    async def disputes(self, created_gte: int) -> AsyncIterator[JSON]:
        """Disputes created since ``created_gte``, newest first, raw."""
        params: DisputeListParams = {"created": {"gte": created_gte}, "limit": LIST_PAGE_SIZE}
        async for dispute in self._every(
            "list disputes", self.client.v1.disputes.list_async, params
        ):
            yield dispute

    async def invoice(self, invoice_id: str) -> JSON | None:
        """The invoice, raw; None when Stripe has no such invoice."""
        return await self._find(
            "read the invoice", lambda: self.client.v1.invoices.retrieve_async(invoice_id)
        )

    async def checkout_session(self, session_id: str) -> JSON | None:
        """The Checkout Session, raw; None when Stripe has no such session."""
        return await self._find(
            "read the Checkout Session",
            lambda: self.client.v1.checkout.sessions.retrieve_async(session_id),
        )

    async def _find(
        self, operation: str, call: Callable[[], Awaitable[stripe.StripeObject]]
    ) -> JSON | None:
        try:
            return raw(await self._call(operation, call))
        except StripeUnavailable as unavailable:
            cause = unavailable.__cause__
            if isinstance(cause, stripe.InvalidRequestError) and cause.http_status == 404:
                return None
            raise

    async def _every(
        self,
        operation: str,
        list_page: Callable[[Any], Awaitable[stripe.ListObject[Any]]],
        params: Mapping[str, Any],
    ) -> AsyncIterator[JSON]:
        """Every object of a list, page by page: each page is one bounded call."""
        while True:
            page = await self._call(operation, functools.partial(list_page, params))
            for obj in page.data:
                yield raw(obj)
            if not page.has_more or not page.data:
                return
            params = {**params, "starting_after": page.data[-1].id}


def _log_failure(operation: str, error: stripe.StripeError) -> None:
    logger().warning(
        "stripe call failed",
        extra={
            "operation": operation,
            "stripe_request_id": error.request_id,
            "http_status": error.http_status,
            "stripe_code": error.code,
            "error": type(error).__name__,
        },
    )


def utc_day(now: float | None = None) -> str:
    """Today's UTC date, part of keys that must change once a day at most."""
    return time.strftime("%Y-%m-%d", time.gmtime(time.time() if now is None else now))
