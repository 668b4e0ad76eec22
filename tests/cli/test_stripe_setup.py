"""`tally stripe-setup` against the Stripe stand-in: creates once, then updates or leaves alone."""

from __future__ import annotations

import asyncio
import io
from contextlib import redirect_stderr, redirect_stdout

import pytest

from sidecar.events import HANDLED_TYPES
from sidecar.stripe_api import STRIPE_API_VERSION
from tally import stripe_setup
from tests.sidecar.conftest import PLANS, seed_catalog
from tests.support.stripe_stand_in import StripeStandIn

URL = "https://tally.example.com/webhooks/stripe"


@pytest.fixture
def stand_in() -> StripeStandIn:
    stand_in = StripeStandIn()
    seed_catalog(stand_in)
    return stand_in


@pytest.fixture
async def setup(aiohttp_server, stand_in, database_url, monkeypatch):
    server = await aiohttp_server(stand_in.app())
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_test_setup")
    monkeypatch.setenv("STRIPE_API_BASE", str(server.make_url("")).rstrip("/"))
    monkeypatch.delenv("ENV", raising=False)

    async def run(*extra: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()

        def call() -> int:
            with redirect_stdout(out), redirect_stderr(err):
                return stripe_setup.main(
                    ["--webhook-url", URL, "--database-url", database_url, *extra]
                )

        # The command is synchronous; the stand-in answers from this event loop.
        code = await asyncio.to_thread(call)
        return code, out.getvalue(), err.getvalue()

    return run


def writes(stand_in):
    return [r for r in stand_in.requests if r.method == "POST"]


async def test_the_first_run_creates_the_portal_configuration_and_the_endpoint(setup, stand_in):
    code, out, _ = await setup()
    assert code == 0
    (configuration,) = stand_in.all("billing_portal.configuration")
    (endpoint,) = stand_in.all("webhook_endpoint")
    assert f"portal configuration {configuration['id']}: created" in out
    assert f"webhook endpoint {endpoint['id']}: created" in out
    assert stand_in.webhook_secrets[endpoint["id"]] in out  # shown once, at creation
    assert f"STRIPE_PORTAL_CONFIGURATION={configuration['id']}" in out


async def test_the_portal_allows_plan_changes_billed_now_and_downgrades_at_period_end(
    setup, stand_in
):
    await setup()
    (create,) = stand_in.of_path("/v1/billing_portal/configurations")
    form = create.form
    feature = "features[subscription_update]"
    assert form[f"{feature}[enabled]"] == "true"
    assert form[f"{feature}[default_allowed_updates][0]"] == "price"
    assert form[f"{feature}[proration_behavior]"] == "always_invoice"
    assert (
        form[f"{feature}[schedule_at_period_end][conditions][0][type]"] == "decreasing_item_amount"
    )
    assert form["features[subscription_cancel][mode]"] == "at_period_end"
    assert form["features[subscription_cancel][proration_behavior]"] == "none"
    assert form["features[invoice_history][enabled]"] == "true"
    assert form["features[customer_update][enabled]"] == "true"
    (configuration,) = stand_in.all("billing_portal.configuration")
    products = configuration["features"]["subscription_update"]["products"]
    assert products == [
        {"product": "prod_pro", "prices": [PLANS["pro"][0]]},
        {"product": "prod_starter", "prices": [PLANS["starter"][0]]},
    ]


async def test_the_endpoint_has_exactly_the_handled_types_and_the_pinned_version(setup, stand_in):
    await setup()
    (create,) = stand_in.of_path("/v1/webhook_endpoints")
    (endpoint,) = stand_in.all("webhook_endpoint")
    assert create.params["url"] == URL
    assert create.params["api_version"] == STRIPE_API_VERSION == "2025-03-31.basil"
    assert sorted(endpoint["enabled_events"]) == sorted(stripe_setup.WEBHOOK_EVENTS)
    assert len(set(stripe_setup.WEBHOOK_EVENTS)) == 12
    assert set(HANDLED_TYPES) <= set(stripe_setup.WEBHOOK_EVENTS)


async def test_a_second_run_changes_nothing_and_shows_no_secret(setup, stand_in):
    await setup()
    before = len(writes(stand_in))
    code, out, _ = await setup()
    assert code == 0
    assert out.count(": unchanged") == 2
    assert "whsec_" not in out
    assert len(writes(stand_in)) == before
    assert len(stand_in.all("billing_portal.configuration")) == 1
    assert len(stand_in.all("webhook_endpoint")) == 1


async def test_a_changed_catalog_updates_the_portal_configuration(setup, stand_in, db):
    await setup()
    db.execute(
        "insert into public.plans (key, name, stripe_price_id, monthly_credits)"
        " values ('team', 'Team', 'price_team_fake', 20000)"
    )
    stand_in.add_price("price_team_fake", product="prod_team", unit_amount=9900)
    code, out, _ = await setup()
    assert code == 0
    (configuration,) = stand_in.all("billing_portal.configuration")
    assert f"portal configuration {configuration['id']}: updated" in out
    assert "webhook endpoint" in out and ": unchanged" in out
    products = configuration["features"]["subscription_update"]["products"]
    assert {"product": "prod_team", "prices": ["price_team_fake"]} in products


async def test_an_endpoint_with_other_events_is_updated_not_duplicated(setup, stand_in):
    stand_in.add(
        {
            "id": "we_existing",
            "object": "webhook_endpoint",
            "api_version": STRIPE_API_VERSION,
            "created": 1,
            "enabled_events": ["invoice.paid"],
            "metadata": {},
            "status": "disabled",
            "url": URL,
        }
    )
    code, out, _ = await setup()
    assert code == 0
    assert "webhook endpoint we_existing: updated" in out
    (endpoint,) = stand_in.all("webhook_endpoint")
    assert endpoint["status"] == "enabled"
    assert sorted(endpoint["enabled_events"]) == sorted(stripe_setup.WEBHOOK_EVENTS)


async def test_a_stripe_error_is_a_clear_message_and_a_nonzero_exit(setup, stand_in):
    stand_in.fail_with = 400
    code, out, err = await setup()
    assert code == 1
    assert err.startswith("stripe-setup: Stripe refused:")
    assert "req_fake_failure" in err
    assert "Traceback" not in out + err


async def test_missing_settings_are_named(setup, monkeypatch):
    monkeypatch.delenv("STRIPE_SECRET_KEY")
    code, _, err = await setup()
    assert (code, err.strip()) == (2, "stripe-setup: set STRIPE_SECRET_KEY")


async def test_a_stand_in_is_refused_in_production(setup, monkeypatch):
    monkeypatch.setenv("ENV", "production")
    code, _, err = await setup()
    assert code == 2
    assert "not allowed in production" in err
