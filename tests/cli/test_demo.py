"""tally/demo.py: the customer lifecycle passes every check against the real stack."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from tally import demo, dev
from tally.pg import free_port


def test_the_lifecycle_ends_with_the_pro_allowance_and_one_pack(database_url):
    secret = dev.new_webhook_secret()
    settings = dev.SidecarSettings(database_url, [secret], port=free_port())
    with (
        tempfile.TemporaryFile("w+") as log,
        dev.running_sidecar(settings, output=log),
    ):
        runner = demo.Demo(database_url, f"http://127.0.0.1:{settings.port}", secret)
        catalog = demo.load_catalog(database_url)
        demo.play(runner, catalog)
    failures = {r.step: r.problems for r in runner.results if not r.ok}
    assert failures == {}
    final = runner.results[-1].balance
    assert (final.plan_credits, final.addon_credits) == (catalog.pro, catalog.pack)
    assert final.subscription_status == "canceled"
    assert runner.reconciled()


def test_a_failed_step_is_reported_with_what_differs():
    expected = demo.Expected(plan=1000, addon=0, status="active")
    balance = demo.Balance(700, 0, 700, 0, 700, "starter", "past_due")
    assert expected.problems("duplicate", balance) == [
        "outcome duplicate, expected applied",
        "plan/add-on 700/0, expected 1000/0",
        "status past_due, expected active",
    ]


def test_the_summary_file_holds_the_catalog_and_every_step(tmp_path: Path):
    catalog = demo.Catalog(500, 1000, 5000, 500, "p_s", "p_p", "p_k", "500 credits")
    runner = demo.Demo("postgresql://unused", "http://unused", "whsec_x")
    runner.results.append(
        demo.StepResult(
            "sign up", "-", "-", "created", demo.Balance(500, 0, 500, 0, 500, None, None)
        )
    )
    path = tmp_path / "summary.json"
    demo.write_summary(path, catalog, runner, reconciled=True)
    summary = json.loads(path.read_text())
    assert summary["catalog"] == {"signup": 500, "starter": 1000, "pro": 5000, "pack": 500}
    assert summary["steps"][0]["ok"] is True
    assert summary["reconciled"] is True
