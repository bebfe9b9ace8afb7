from __future__ import annotations

import json

import pytest

from hookgate.deliverer.intake.event import BadEvent, build_event, parse_ingest
from hookgate.deliverer.queues.base import new_event_id


@pytest.mark.parametrize(("raw", "message"), [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b'{"data": {}}', '"type" is required'),
    (b'{"type": "", "data": {}}', '"type" is required'),
    (b'{"type": "a b", "data": {}}', '"type" may hold'),
    (b'{"type": "order.created"}', '"data" is required'),
    (b'{"type": "x", "data": 1, "colour": "red"}', "unknown field(s) colour"),
    (b'{"type": "x", "data": 1, "id": 5}', '"id" must be a string'),
    (b'{"type": "x", "data": 1, "idempotencyKey": "a/b"}', '"idempotencyKey" must be'),
    (b"\xff\xfe", "not valid JSON"),
])
def test_bad_requests_say_what_was_wrong(raw: bytes, message: str) -> None:
    with pytest.raises(BadEvent, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_ingest(raw)


def test_body_is_serialised_once_with_type_timestamp_and_data() -> None:
    req = parse_ingest('{"type": "order.created", "data": {"amount": 120, "név": "Ádám"}}'
                       .encode())
    event = build_event(req, 1_800_000_000.25)
    assert json.loads(event.body) == {"type": "order.created",
                                      "timestamp": "2027-01-15T08:00:00.250Z",
                                      "data": {"amount": 120, "név": "Ádám"}}
    assert event.id.startswith("evt_") and len(event.id) == 30


def test_client_id_doubles_as_idempotency_key() -> None:
    event = build_event(parse_ingest(b'{"type": "x", "data": null, "id": "order-7"}'), 0)
    assert (event.id, event.idempotency_key) == ("order-7", "order-7")
    event = build_event(parse_ingest(
        b'{"type": "x", "data": null, "idempotencyKey": "k1"}'), 0)
    assert event.idempotency_key == "k1" and event.id != "k1"


def test_event_ids_sort_by_time() -> None:
    assert new_event_id(1_000) < new_event_id(2_000)


def test_json_nested_past_the_parser_limit_is_a_clear_400_not_a_crash() -> None:
    raw = b'{"type": "x", "data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(BadEvent, match="nests deeper than the parser allows"):
        parse_ingest(raw)


def test_a_lone_surrogate_in_data_is_refused_with_the_field() -> None:
    req = parse_ingest(b'{"type": "x", "data": {"name": "\\ud800"}}')
    with pytest.raises(BadEvent, match="lone UTF-16 surrogate") as info:
        build_event(req, 1_700_000_000.0)
    assert info.value.field == "data"
