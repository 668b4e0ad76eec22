"""Customers' stories delivered through the real sidecar over HTTP, as Stripe delivers them.

Each event 1 to 3 times, shuffled within and across customers, some changes
announced under two event ids, both payload layouts, concurrent senders.
"""

from __future__ import annotations

import dataclasses

from aiohttp.test_utils import TestServer

from sidecar.app import create_app
from tests.chaos.conftest import PRICES
from tests.sidecar.conftest import WEBHOOK_SECRET, base_config
from tests.simulation.run import Report, simulate


async def sidecar_url(aiohttp_server, database_url: str, **overrides) -> str:
    config = dataclasses.replace(base_config(database_url=database_url), **overrides)
    server: TestServer = await aiohttp_server(create_app(config))
    return str(server.make_url("/webhooks/stripe"))


def summary(report: Report) -> str:
    return (
        f"{report.customers} customers, {report.deliveries} deliveries, "
        f"statuses {dict(report.statuses)}, mismatches {dict(list(report.mismatches.items())[:5])},"
        f" violations {report.violations[:5]}, gave up {report.gave_up[:5]}"
    )


async def test_any_delivery_order_through_the_sidecar_ends_where_the_model_says(
    aiohttp_server, chaos_database_url
):
    url = await sidecar_url(aiohttp_server, chaos_database_url)
    report = await simulate(
        url, WEBHOOK_SECRET, chaos_database_url, PRICES, seed=101, customers=40, concurrency=8
    )
    assert report.ok, summary(report)
    assert set(report.statuses) == {200}, summary(report)
    assert report.duplicates > 0 and report.reorderings > 0 and report.twins > 0


async def test_spends_interleaved_with_deliveries_keep_every_invariant(
    aiohttp_server, chaos_database_url
):
    url = await sidecar_url(aiohttp_server, chaos_database_url)
    report = await simulate(
        url,
        WEBHOOK_SECRET,
        chaos_database_url,
        PRICES,
        seed=202,
        customers=30,
        concurrency=8,
        spends=True,
    )
    assert report.ok, summary(report)
    assert report.spends["spent"] > 0 and report.spends["refused (PT402)"] > 0, report.spends
