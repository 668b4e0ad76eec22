"""Operator commands: `tally ops <command>` (see docs/operations.md).

    events       parked and rejected Stripe events, and why
    retry        re-read rejected events with the current normaliser, re-apply them
    apply-ready  apply parked events whose wait is over
    backlog      balance events waiting for delivery to the app
    replay       apply the events Stripe could not deliver
    reconcile    balances against the ledger; --stripe: the ledger against Stripe
    explain      a user's balance as a story
    link         link a Stripe customer to a user (parked events apply at once)
    adjust       grant or remove credits, with a written reason
    reviews      refunds and disputes of subscription invoices to look at

Every read and write goes through public functions granted to service_role,
so each command works over a direct connection (DATABASE_URL) or PostgREST
(SUPABASE_URL + SUPABASE_SERVICE_ROLE_KEY) alike.
"""

from __future__ import annotations

from tally.ops.cli import main, run
from tally.ops.output import render_table
from tally.ops.reconcile import balance_mismatches

__all__ = ["balance_mismatches", "main", "render_table", "run"]
