"""Real Stripe events gathered from public repositories, replayed through the sidecar.

Each file of tests/corpus/stripe_events/ is an event as Stripe (or a
well-known library's fixture of it) sent it, unmodified; PROVENANCE.md says
where each came from. Signed as Stripe signs and POSTed to the webhook, every
one is answered 200 with the outcome expected.json records for it, never 400
or 500: nothing signed is lost (docs/events.md, rule 7).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tally import stripe_events as se
from tests.sidecar.conftest import WEBHOOK_SECRET

CORPUS = Path(__file__).resolve().parent / "stripe_events"
EXPECTED: dict[str, dict[str, str]] = json.loads((CORPUS / "expected.json").read_text())
FILES = sorted(path.name for path in CORPUS.glob("*.json") if path.name not in
               ("manifest.json", "expected.json"))  # fmt: skip


def test_every_file_of_the_corpus_has_an_expected_outcome():
    assert sorted(EXPECTED) == FILES


@pytest.mark.parametrize("name", FILES)
async def test_a_real_event_is_answered_200_with_its_expected_outcome(sidecar, db, name):
    body = (CORPUS / name).read_bytes()  # exactly as found: signed as it is
    # Fixtures of different projects reuse ids (evt_00000000000000): each file
    # is judged alone, as the first delivery of its event.
    db.execute("delete from tally.stripe_events where event_id = %s", (json.loads(body)["id"],))
    signature = se.sign(body, WEBHOOK_SECRET)
    headers = {"Stripe-Signature": signature, "Content-Type": "application/json"}
    response = await sidecar.post("/webhooks/stripe", data=body, headers=headers)
    answer = await response.json()
    assert response.status == 200, answer
    expected = EXPECTED[name]
    assert answer["status"] == expected["status"], answer
    if "reason" in expected:
        assert expected["reason"] in (answer.get("reason") or ""), answer
    if answer["status"] != "ignored":
        stored = db.execute(
            "select raw from tally.stripe_events where event_id = %s", (answer["event_id"],)
        ).fetchone()
        assert stored["raw"] == json.loads(body)
