"""A raw Stripe event's typed reading, with what Stripe must be asked for.

One path for the webhook, the replay of undelivered events and the
operator's retries, so each reads an event the same way.
"""

from __future__ import annotations

from sidecar import events
from sidecar.db import JSON
from sidecar.stripe_api import StripeApi, StripeRefused


async def read_event(
    envelope: events.Envelope, stripe: StripeApi | None, key_is_live: bool | None
) -> JSON:
    """The typed event, with every line of an invoice that embeds only the first page.

    Lines are read only for an event that has no problem already. When
    Stripe refuses to list them (the invoice unknown to this key, say),
    the refusal is the event's problem: it is recorded as rejected, to be
    retried by an operator, rather than refused until Stripe gives up.
    Raises StripeUnavailable when Stripe fails (a later attempt may work).
    Without Stripe (``None``) the embedded lines are all there is: callers
    that may lack a key check ``events.more_lines_of`` first.
    """
    invoice_id = events.lines_to_fetch(envelope, key_is_live)
    if invoice_id is None or stripe is None:
        return events.normalise(envelope, key_is_live=key_is_live)
    try:
        lines = await stripe.invoice_lines(invoice_id)
    except StripeRefused as refused:
        return events.normalise(envelope, key_is_live=key_is_live, lines_problem=refused.reason)
    return events.normalise(envelope, lines=lines, key_is_live=key_is_live)
