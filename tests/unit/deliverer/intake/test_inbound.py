"""The inbound HTTP side's pure helpers: decoding payloads, event types by provider
convention or mapping, idempotency keys and kept headers."""

from __future__ import annotations

import pytest

from hookgate.deliverer.intake.event import BadEvent
from hookgate.deliverer.intake.inbound import (
    decode_payload,
    event_type_of,
    idempotency_key,
    kept_headers,
)
from hookgate.model.routing import SourceConfig

NOW = 1_700_000_000


def test_decode_payload() -> None:
    assert decode_payload(b'{"a": 1}', "application/json") == {"a": 1}
    assert decode_payload(b'[1, 2]', "") == [1, 2]
    assert decode_payload(b"", "application/json") is None
    assert decode_payload(b"plain words", "text/plain") == "plain words"
    form = b"payload=%7B%22zen%22%3A%22Keep+it+logically+awesome.%22%7D"
    assert decode_payload(form, "application/x-www-form-urlencoded; charset=utf-8") == {
        "zen": "Keep it logically awesome."}
    assert decode_payload(b"a=1&b=2&b=3", "application/x-www-form-urlencoded") == {
        "a": "1", "b": ["2", "3"]}
    with pytest.raises(BadEvent, match="not valid JSON"):
        decode_payload(b"{oops", "application/json")
    with pytest.raises(BadEvent, match="payload field is not valid JSON"):
        decode_payload(b"payload=%7Boops", "application/x-www-form-urlencoded")
    with pytest.raises(BadEvent, match="neither JSON nor UTF-8"):
        decode_payload(b"\xff\xfe", "application/octet-stream")


def test_event_type_conventions_and_mapping() -> None:
    def source(scheme: str, **kw: object) -> SourceConfig:
        return SourceConfig(key="ns/s", path="/p", scheme=scheme, **kw)  # type: ignore[arg-type]

    assert event_type_of(source("github"), {"x-github-event": "push"}, {}) == "push"
    assert event_type_of(source("shopify", event_type_prefix="shopify."),
                         {"X-Shopify-Topic": "orders/create"}, {}) == "shopify.orders/create"
    assert event_type_of(source("stripe"), {}, {"type": "invoice.paid"}) == "invoice.paid"
    assert event_type_of(source("standard-webhooks"), {}, {"type": "a.b"}) == "a.b"
    nested = source("hmac", event_type_field="data.kind")
    assert event_type_of(nested, {}, {"data": {"kind": "k"}}) == "k"
    by_header = source("stripe", event_type_header="X-Kind")
    assert event_type_of(by_header, {"X-Kind": "h"}, {"type": "ignored"}) == "h"
    with pytest.raises(BadEvent, match="X-GitHub-Event header is missing"):
        event_type_of(source("github"), {}, {"type": "x"})
    with pytest.raises(BadEvent, match=r"payload field data\.kind"):
        event_type_of(nested, {}, {"data": "flat"})
    with pytest.raises(BadEvent, match="not valid"):
        event_type_of(source("stripe"), {}, {"type": "has space"})


def test_idempotency_keys_and_kept_headers() -> None:
    src = SourceConfig(key="ns/gh", path="/p", scheme="github",
                       keep_headers=("X-GitHub-Delivery", "X-Absent", "Webhook-Id", "X-Multi"))
    assert idempotency_key(src, "guid") == "src:ns/gh:guid"
    assert idempotency_key(src, None) is None
    headers = {"x-github-delivery": "guid", "webhook-id": "forged", "X-Multi": "a"}
    assert kept_headers(src, headers) == (("X-GitHub-Delivery", "guid"), ("X-Multi", "a"))
