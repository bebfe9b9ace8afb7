"""Turning an ingest request body into an :class:`~hookgate.deliverer.queues.base.Event`.

Pure functions: parsing and validation say exactly what was wrong with a request, and the
delivery body is serialised here, once, so every attempt sends the same bytes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from hookgate.deliverer.queues.base import Event, event_body, new_event_id

__all__ = ["EVENT_TYPE_PATTERN", "TOO_DEEP", "BadEvent", "IngestRequest", "build_event",
           "parse_ingest"]

EVENT_TYPE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-/]{0,254}$")
ID_PATTERN = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
ALLOWED_FIELDS = ("type", "data", "id", "idempotencyKey")
TOO_DEEP = ("the JSON nests deeper than the parser allows (about 1,000 levels of arrays or "
            "objects); send a flatter event")
LONE_SURROGATE = ('the data holds a lone UTF-16 surrogate escape (such as "\\ud800"), which '
                  "is not valid Unicode and cannot be delivered; send valid UTF-8 text")


class BadEvent(ValueError):
    """An ingest request that cannot become an event; ``str()`` is the client's message."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class IngestRequest:
    type: str
    data: Any
    id: str | None = None
    idempotency_key: str | None = None


def parse_ingest(raw: bytes) -> IngestRequest:
    """Validate a ``POST /v1/events`` body."""
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadEvent(f"body is not valid JSON: {exc}; send a JSON object like "
                       '{"type": "order.created", "data": {...}}') from None
    except RecursionError:
        raise BadEvent(TOO_DEEP) from None
    if not isinstance(doc, dict):
        raise BadEvent('body must be a JSON object like {"type": "order.created", "data": {...}}')
    unknown = sorted(set(doc) - set(ALLOWED_FIELDS))
    if unknown:
        raise BadEvent(f"unknown field(s) {', '.join(unknown)}; allowed: "
                       f"{', '.join(ALLOWED_FIELDS)}", field=unknown[0])
    etype = doc.get("type")
    if not isinstance(etype, str) or not etype:
        raise BadEvent('"type" is required: a string such as "order.created"', field="type")
    if not EVENT_TYPE_PATTERN.match(etype):
        raise BadEvent('"type" may hold letters, digits and . _ : - / (at most 255), '
                       "starting with a letter or digit", field="type")
    if "data" not in doc:
        raise BadEvent('"data" is required: the event payload (any JSON value)', field="data")
    for name in ("id", "idempotencyKey"):
        value = doc.get(name)
        if value is not None and (not isinstance(value, str) or not ID_PATTERN.match(value)):
            raise BadEvent(f'"{name}" must be a string of at most 128 letters, digits '
                           "or . _ : -", field=name)
    return IngestRequest(type=etype, data=doc["data"], id=doc.get("id"),
                         idempotency_key=doc.get("idempotencyKey"))


def build_event(req: IngestRequest, now: float, source: str | None = None) -> Event:
    """The event to enqueue, with its delivery body serialised once; :class:`BadEvent` when
    the data cannot be serialised as UTF-8 JSON."""
    try:
        body = event_body(req.type, req.data, now)
    except UnicodeEncodeError:
        raise BadEvent(LONE_SURROGATE, field="data") from None
    # The idempotency key defaults to a client-supplied id, so a retried POST with the same
    # id never becomes two events.
    key = req.idempotency_key or req.id
    return Event(id=req.id or new_event_id(now), type=req.type, body=body, accepted_at=now,
                 source=source, idempotency_key=key)
