"""The sidecar's calls to Stripe's API: customers, Checkout and Portal sessions.

The API version is pinned here, once: the shapes the sidecar sends and reads
do not change when stripe-python is upgraded. Every failure (Stripe error,
network error, timeout) becomes ``StripeUnavailable`` with a short message,
logged with Stripe's request id.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import stripe
from stripe import RequestOptions
from stripe.params import CustomerCreateParams
from stripe.params.billing_portal import SessionCreateParams as PortalSessionParams
from stripe.params.checkout import SessionCreateParams as CheckoutSessionParams

from sidecar.observability import logger

STRIPE_API_VERSION = "2025-03-31.basil"
T = TypeVar("T")
IDEMPOTENCY_IN_USE_RETRY_DELAY = 0.5


class StripeUnavailable(Exception):
    """Stripe failed or timed out; the caller answers 502 with ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StripeApi:
    """Thin async wrapper over stripe.StripeClient with our timeouts and error mapping."""

    def __init__(
        self,
        secret_key: str,
        session: aiohttp.ClientSession,
        *,
        timeout: float,
        api_base: str | None = None,
    ) -> None:
        http_client = stripe.AIOHTTPClient(
            session=session, timeout=aiohttp.ClientTimeout(total=timeout)
        )
        self.timeout = timeout
        self.client = stripe.StripeClient(
            secret_key,
            stripe_version=STRIPE_API_VERSION,
            http_client=http_client,
            max_network_retries=0,
            base_addresses={"api": api_base} if api_base else None,
        )

    async def _call(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        try:
            async with asyncio.timeout(self.timeout + 1):
                return await call()
        except stripe.StripeError as error:
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
            raise StripeUnavailable(f"Stripe could not {operation}") from error
        except TimeoutError as error:
            logger().warning("stripe call timed out", extra={"operation": operation})
            raise StripeUnavailable(f"Stripe timed out trying to {operation}") from error

    async def create_customer(self, user_id: str) -> str:
        """Create the user's customer; the idempotency key makes concurrent calls agree."""
        params: CustomerCreateParams = {"metadata": {"user_id": user_id}}
        options: RequestOptions = {"idempotency_key": f"tally-customer-{user_id}"}

        async def create() -> stripe.Customer:
            try:
                return await self.client.v1.customers.create_async(params, options)
            except stripe.IdempotencyError:
                # A concurrent request holds the key: its result is ours once it finishes.
                await asyncio.sleep(IDEMPOTENCY_IN_USE_RETRY_DELAY)
                return await self.client.v1.customers.create_async(params, options)

        customer = await self._call("create the customer", create)
        return customer.id

    async def create_checkout_session(
        self, params: CheckoutSessionParams, idempotency_key: str
    ) -> str:
        options: RequestOptions = {"idempotency_key": idempotency_key}
        session = await self._call(
            "create the Checkout Session",
            lambda: self.client.v1.checkout.sessions.create_async(params, options),
        )
        if session.url is None:  # only embedded sessions lack one; ours are hosted
            raise StripeUnavailable("Stripe returned a Checkout Session without a URL")
        return session.url

    async def invoice_lines(self, invoice_id: str) -> list[dict[str, Any]]:
        """Every line of an invoice (all pages of GET /v1/invoices/{id}/lines), as sent."""

        async def fetch() -> list[dict[str, Any]]:
            page = await self.client.v1.invoices.line_items.list_async(invoice_id, {"limit": 100})
            return [line.to_dict() async for line in page.auto_paging_iter()]

        return await self._call("list the invoice's lines", fetch)

    async def create_portal_session(self, customer_id: str, return_url: str) -> str:
        params: PortalSessionParams = {"customer": customer_id, "return_url": return_url}
        portal = await self._call(
            "create the Customer Portal session",
            lambda: self.client.v1.billing_portal.sessions.create_async(params),
        )
        return portal.url
