"""Our signatures, checked by the official Standard Webhooks library as an independent judge."""

from __future__ import annotations

import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from hookgate.deliverer.delivery.sender import delivery_headers
from hookgate.model.routing import EndpointConfig
from hookgate.signing import (
    InvalidSignature,
    generate_secret,
    secret_key,
    signature_header,
    verify,
)

BODY = b'{"type":"order.created","timestamp":"2026-11-28T10:00:00.000Z","data":{"id":1}}'


def endpoint(**headers: str) -> EndpointConfig:
    return EndpointConfig(key="default/acme", url="http://127.0.0.1:1/", timeout=1,
                          retry_schedule=(0,), headers=headers)


def test_standard_webhooks_library_verifies_our_headers() -> None:
    secret = generate_secret()
    headers = delivery_headers(endpoint(), [secret_key(secret)], "evt_1", int(time.time()), BODY)
    assert Webhook(secret).verify(BODY, headers) == {"type": "order.created",
                                                     "timestamp": "2026-11-28T10:00:00.000Z",
                                                     "data": {"id": 1}}


def test_a_tampered_body_fails_the_standard_library() -> None:
    secret = generate_secret()
    headers = delivery_headers(endpoint(), [secret_key(secret)], "evt_1", int(time.time()), BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY.replace(b"1}", b"2}"), headers)


def test_during_rotation_either_secret_verifies() -> None:
    old, new = generate_secret(), generate_secret()
    headers = delivery_headers(endpoint(), [secret_key(new), secret_key(old)], "evt_2",
                               int(time.time()), BODY)
    assert len(headers["webhook-signature"].split()) == 2
    Webhook(old).verify(BODY, headers)
    Webhook(new).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(BODY, headers)


def test_endpoint_headers_cannot_replace_signature_headers() -> None:
    secret = generate_secret()
    headers = delivery_headers(endpoint(**{"X-Tenant": "acme", "Webhook-Signature": "v1,forged"}),
                               [secret_key(secret)], "evt_3", int(time.time()), BODY)
    assert headers["X-Tenant"] == "acme"
    assert "Webhook-Signature" not in headers
    Webhook(secret).verify(BODY, headers)


def test_our_verify_agrees_with_the_library_and_rejects_stale_timestamps() -> None:
    secret = generate_secret()
    now = int(time.time())
    header = signature_header([secret_key(secret)], "evt_4", now, BODY)
    headers = {"Webhook-Id": "evt_4", "Webhook-Timestamp": str(now), "Webhook-Signature": header}
    assert verify([secret_key(secret)], headers, BODY, now) == "evt_4"
    with pytest.raises(InvalidSignature, match="too far"):
        verify([secret_key(secret)], headers, BODY, now + 301)
    with pytest.raises(InvalidSignature, match="no signature matches"):
        verify([secret_key(generate_secret())], headers, BODY, now)
    with pytest.raises(InvalidSignature, match="missing"):
        verify([secret_key(secret)], {}, BODY, now)


@pytest.mark.parametrize("bad", ["nope", "whsec_!!!"])
def test_malformed_secrets_are_refused_with_a_reason(bad: str) -> None:
    with pytest.raises(ValueError, match="whsec_"):
        secret_key(bad)


@pytest.mark.parametrize("size", [0, 1, 24, 32, 63, 64, 65, 200])
def test_cached_hmac_is_hmac_sha256_for_every_key_length(size: int) -> None:
    import hashlib
    import hmac
    import os

    from hookgate.signing import hmac_sha256

    key, content = os.urandom(size), os.urandom(1500)
    expected = hmac.new(key, content, hashlib.sha256).digest()
    assert hmac_sha256(key, content) == expected
    assert hmac_sha256(key, content) == expected  # the cached keyed state is not consumed
    assert hmac_sha256(key, content[:-1]) == hmac.new(key, content[:-1], hashlib.sha256).digest()
