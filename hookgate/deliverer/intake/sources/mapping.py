"""How a broker message becomes an event (pure).

The delivery body embeds the producer's bytes verbatim as ``data``, so what a receiver gets
(and what the signature covers) is exactly what was published. A message that cannot become
an event raises :class:`BadMessage` with a one-word reason; the worker keeps it as a dead
letter of the source.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hookgate.deliverer.headers import RESERVED
from hookgate.deliverer.intake.event import EVENT_TYPE_PATTERN, TOO_DEEP
from hookgate.deliverer.queues.base import Event, event_timestamp, new_event_id
from hookgate.model.routing import SourceConfig

__all__ = ["BadMessage", "MappedEvent", "SourceMapping", "message_to_event"]


class BadMessage(ValueError):
    """A message that cannot become an event; ``reason`` is one CamelCase word."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class SourceMapping:
    """How a source's messages become events (from its ``SourceConfig``)."""

    source: str  # the source key, the events' source
    event_type_header: str | None = None
    event_type_field: str | None = "type"
    event_type_prefix: str = ""
    keep_headers: tuple[str, ...] = ()
    idempotency_header: str | None = None
    idempotency_field: str | None = None
    max_bytes: int = 256 * 1024

    @classmethod
    def of(cls, config: SourceConfig, max_bytes: int) -> SourceMapping:
        return cls(source=config.key, event_type_header=config.event_type_header,
                   event_type_field=config.event_type_field,
                   event_type_prefix=config.event_type_prefix,
                   keep_headers=config.keep_headers,
                   idempotency_header=config.idempotency_header,
                   idempotency_field=config.idempotency_field, max_bytes=max_bytes)


@dataclass(frozen=True)
class MappedEvent:
    event: Event
    data: Any  # the parsed payload, for routing filters
    headers: tuple[tuple[str, str], ...]  # the kept headers (also event.headers)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    lower = name.lower()
    return next((v for k, v in headers.items() if k.lower() == lower), None)


def _field(data: Any, path: str) -> Any:
    for part in path.split("."):
        data = data.get(part) if isinstance(data, dict) else None
    return data


def message_to_event(mapping: SourceMapping, raw: bytes, headers: Mapping[str, str],
                     message_id: str | None, now: float) -> MappedEvent:
    """The event a broker message becomes, or :class:`BadMessage` saying why it cannot.

    The delivery body embeds the producer's bytes verbatim as ``data``, so what a receiver
    gets (and what the signature covers) is exactly what was published.
    """
    if len(raw) > mapping.max_bytes:
        raise BadMessage("TooLarge", f"the message is {len(raw)} bytes, over the limit of "
                         f"{mapping.max_bytes} (the gateway's ingest.maxBodyBytes)")
    try:
        text = raw.decode("utf-8")
        data = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadMessage("NotJSON", f"the payload is not UTF-8 JSON: {exc}") from None
    except RecursionError:
        raise BadMessage("TooDeep", TOO_DEEP) from None
    if mapping.event_type_header is not None:
        value: Any = _header(headers, mapping.event_type_header)
        where = f"the {mapping.event_type_header} header"
    else:
        path = mapping.event_type_field or "type"
        value = _field(data, path)
        where = f"the payload field {path}"
    if not isinstance(value, str) or not value:
        raise BadMessage("NoEventType", f"no event type: {where} is missing or not a string")
    event_type = mapping.event_type_prefix + value
    if not EVENT_TYPE_PATTERN.match(event_type):
        raise BadMessage("InvalidEventType",
                         f"event type {event_type[:300]!r} from {where} is not valid: it may "
                         "hold letters, digits and . _ : - / (at most 255)")
    key: Any = message_id
    if mapping.idempotency_header is not None:
        key = _header(headers, mapping.idempotency_header)
    elif mapping.idempotency_field is not None:
        key = _field(data, mapping.idempotency_field)
        key = str(key) if isinstance(key, int | str) and not isinstance(key, bool) else None
    prefix = json.dumps({"type": event_type, "timestamp": event_timestamp(now)},
                        separators=(",", ":"), ensure_ascii=False)
    body = prefix[:-1].encode() + b',"data":' + raw + b"}"
    kept = tuple((name, value) for name in mapping.keep_headers
                 if name.lower() not in RESERVED
                 and (value := _header(headers, name)) is not None)
    return MappedEvent(
        event=Event(id=new_event_id(now), type=event_type, body=body, accepted_at=now,
                    source=mapping.source,
                    idempotency_key=f"src:{mapping.source}:{key}" if key else None,
                    headers=kept),
        data=data, headers=kept)
