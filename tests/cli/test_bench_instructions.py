"""`tally bench --instructions`: counts come only from calls that did what they should."""

from __future__ import annotations

import shutil

import pytest

from tally.bench import instructions

pytestmark = pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind not installed")


@pytest.fixture(scope="module")
def counts() -> instructions.Counts:
    return instructions.measure(users=8, warmup=2)


def test_a_renewal_and_a_spend_are_counted_per_call(counts):
    assert counts.measured == 6 and counts.warmup == 2
    # A renewal does far more than a spend (period, ledger, events, broadcast).
    assert 0 < counts.spend < counts.renewal


def test_the_report_names_both_calls(counts):
    text = "\n".join(counts.lines())
    assert "apply_stripe_event" in text and "spend_credits" in text


def test_a_script_whose_calls_did_not_apply_is_refused(tmp_path):
    (tmp_path / "renewals_all.out").write_text('"status": "rejected"\n')
    (tmp_path / "spends_all.out").write_text("")
    with pytest.raises(instructions.Unmeasurable, match="0 applied"):
        instructions.check_outcomes(tmp_path, users=1)
