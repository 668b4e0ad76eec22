"""Standard Webhooks signing of balance events (sidecar/jobs/signing.py), pure."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from sidecar.jobs.signing import sign_request, webhook_id

KEY = b"tally-test-app-webhook-key-32byt"
SECRET = "whsec_" + base64.b64encode(KEY).decode()
PAYLOAD = {
    "type": "credits.low",
    "timestamp": "2026-11-29T09:00:00.000000Z",
    "data": {"user_id": "5d0c4f4e-0000-4000-8000-000000000001", "available_credits": 99},
}


def test_a_signed_request_verifies_with_the_standard_webhooks_library():
    request = sign_request(Webhook(SECRET), "bal_1", PAYLOAD, time.time())
    assert Webhook(SECRET).verify(request.body, request.headers) == PAYLOAD


def test_the_signature_is_hmac_sha256_of_id_timestamp_and_body():
    request = sign_request(Webhook(SECRET), "bal_7", PAYLOAD, 1_790_000_000.9)
    signed = b"bal_7.1790000000." + request.body
    expected = base64.b64encode(hmac.new(KEY, signed, hashlib.sha256).digest()).decode()
    assert request.headers["webhook-signature"] == f"v1,{expected}"
    assert request.headers["webhook-timestamp"] == "1790000000"
    assert request.headers["webhook-id"] == "bal_7"


def test_a_changed_body_does_not_verify():
    request = sign_request(Webhook(SECRET), "bal_1", PAYLOAD, time.time())
    forged = request.body.replace(b"99", b"9999")
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(forged, request.headers)


def test_another_secret_does_not_verify():
    other = "whsec_" + base64.b64encode(b"another-key-of-thirty-two-bytes!").decode()
    request = sign_request(Webhook(other), "bal_1", PAYLOAD, time.time())
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(request.body, request.headers)


def test_the_body_is_the_payload_as_json():
    request = sign_request(Webhook(SECRET), "bal_1", PAYLOAD, time.time())
    assert request.headers["content-type"] == "application/json"
    assert b'"type":"credits.low"' in request.body


def test_the_webhook_id_names_the_outbox_row():
    assert webhook_id(42) == "bal_42"
