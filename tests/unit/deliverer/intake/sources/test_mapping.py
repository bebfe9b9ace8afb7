"""Broker messages become events: the producer's bytes verbatim, the type and idempotency key
from a header or a payload field, and bad messages with the reason."""

from __future__ import annotations

import json

import pytest

from hookgate.deliverer.intake.sources.mapping import BadMessage, SourceMapping, message_to_event

NOW = 1_700_000_000.25
MAPPING = SourceMapping(source="shop/orders", event_type_header="event-type",
                        keep_headers=("trace-id", "absent"))


def test_body_embeds_the_producers_bytes_verbatim() -> None:
    raw = b'{ "id": 42,\n  "name": "\xc3\xbc" }'
    mapped = message_to_event(MAPPING, raw, {"Event-Type": "order.paid", "trace-id": "t1"},
                              "orders/0/7", NOW)
    ev = mapped.event
    assert ev.body == (b'{"type":"order.paid","timestamp":"2023-11-14T22:13:20.250Z",'
                       b'"data":' + raw + b"}")
    assert json.loads(ev.body)["data"] == {"id": 42, "name": "ü"}
    assert (ev.type, ev.source, ev.accepted_at) == ("order.paid", "shop/orders", NOW)
    assert ev.idempotency_key == "src:shop/orders:orders/0/7"
    assert ev.id.startswith("evt_")
    assert mapped.data == {"id": 42, "name": "ü"}
    assert mapped.headers == ev.headers == (("trace-id", "t1"),)


def test_type_from_a_payload_field_with_a_prefix_and_key_from_a_field() -> None:
    mapping = SourceMapping(source="s/x", event_type_field="meta.kind", event_type_prefix="shop.",
                            idempotency_field="meta.id")
    mapped = message_to_event(mapping, b'{"meta": {"kind": "paid", "id": 9}}', {}, "m-1", NOW)
    assert mapped.event.type == "shop.paid"
    assert mapped.event.idempotency_key == "src:s/x:9"
    by_header = SourceMapping(source="s/x", idempotency_header="Msg-Id")
    mapped = message_to_event(by_header, b'{"type": "a"}', {"msg-id": "abc"}, "m-1", NOW)
    assert mapped.event.idempotency_key == "src:s/x:abc"
    assert message_to_event(SourceMapping(source="s/x"), b'{"type": "a"}', {}, None,
                            NOW).event.idempotency_key is None


@pytest.mark.parametrize(("raw", "headers", "reason"), [
    (b"not json", {"event-type": "a"}, "NotJSON"),
    (b'{"a": 1', {"event-type": "a"}, "NotJSON"),
    (b'\xff{"a": 1}', {"event-type": "a"}, "NotJSON"),
    ('{"a": "x"}'.encode("utf-16"), {"event-type": "a"}, "NotJSON"),  # JSON, not UTF-8
    (b'{"a": 1}', {}, "NoEventType"),
    (b'{"a": 1}', {"event-type": ""}, "NoEventType"),
    (b'{"a": 1}', {"event-type": "bad type!"}, "InvalidEventType"),
    (b'{"pad": "' + b"x" * 200 + b'"}', {"event-type": "a"}, "TooLarge"),
])
def test_bad_messages_say_why(raw: bytes, headers: dict[str, str], reason: str) -> None:
    mapping = SourceMapping(source="s/x", event_type_header="event-type", max_bytes=100)
    with pytest.raises(BadMessage) as info:
        message_to_event(mapping, raw, headers, "1", NOW)
    assert info.value.reason == reason
    assert str(info.value)
