"""Engine findings of the chaos runs, recognised by their exact signature.

Each is pinned by a strict xfail in tests/chaos/test_known_engine_gaps.py and
described in docs/reliability.md. The chaos checks tolerate these and only
these, and count them; anything else still fails. Delete an entry when the
engine is fixed (its xfail will start failing to say so).
"""

from __future__ import annotations

from typing import Any


def proration_invoice_for_unknown_subscription(
    typed: dict[str, Any] | None, sqlstate: str | None
) -> bool:
    """A proration-only invoice (no subscription line) for a subscription the engine does
    not know yet fails with 23502 (null user_id in tally.subscriptions): the sidecar
    answers 400 and nothing is recorded until Stripe's redelivery finds it known."""
    invoice = (typed or {}).get("invoice") or {}
    return (
        sqlstate == "23502"
        and (typed or {}).get("type") in ("invoice.paid", "invoice.payment_failed")
        and invoice.get("price_id") is None
    )


def period_paid_without_an_end(typed: dict[str, Any] | None) -> bool:
    """An `invoice.paid` whose subscription line has no period end: docs/engine.md says it
    pays no period, the engine grants it."""
    invoice = (typed or {}).get("invoice") or {}
    return (
        (typed or {}).get("type") == "invoice.paid"
        and invoice.get("status") == "paid"
        and invoice.get("price_id") is not None
        and invoice.get("period_start") is not None
        and invoice.get("period_end") is None
    )
