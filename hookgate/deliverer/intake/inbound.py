"""The inbound side of the HTTP API: third parties post to the paths of WebhookSources.

One middleware serves every source path: it looks the request path up in the live config,
so sources added, changed or removed by a config change are served at once, without a
restart and without re-registering routes. A request to a source path is verified on its
raw body (:mod:`hookgate.deliverer.intake.verify`), turned into an event of that source and
admitted (:mod:`hookgate.deliverer.intake.admission`); the sender gets ``202 {"id"}`` once
the event is durably stored. Ingest API keys do not apply here: the sender proves itself
with its signature.

Every verification failure gets the same 401 body, whatever the reason, so a forger learns
nothing; the reason is counted in ``hookgate_inbound_rejected_total`` and logged.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any

from aiohttp import web

from hookgate.deliverer.config.live import LiveConfig, Snapshot
from hookgate.deliverer.headers import RESERVED
from hookgate.deliverer.http_common import (
    BodyStalled,
    error_response,
    read_body,
    stalled_response,
)
from hookgate.deliverer.intake.admission import Admission
from hookgate.deliverer.intake.event import (
    EVENT_TYPE_PATTERN,
    TOO_DEEP,
    BadEvent,
    IngestRequest,
    build_event,
)
from hookgate.deliverer.intake.verify import Rejected, get_header, verify_request
from hookgate.deliverer.metrics import Metrics
from hookgate.deliverer.queues.base import QueueUnavailable
from hookgate.model.routing import SourceConfig

__all__ = ["UNAUTHORIZED", "add_inbound_routes", "decode_payload", "event_type_of",
           "idempotency_key", "kept_headers"]

log = logging.getLogger("hookgate.inbound")

#: The one answer to a request that fails verification, whatever the reason.
UNAUTHORIZED = {"error": {"code": "unauthorized", "message": "signature verification failed"}}

#: Where each scheme's senders put the event type, when the source does not say.
_TYPE_HEADERS = {"github": "X-GitHub-Event", "shopify": "X-Shopify-Topic"}
_FORM = "application/x-www-form-urlencoded"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def decode_payload(raw: bytes, content_type: str) -> Any:
    """The event data of a verified body.

    JSON is parsed. A form (``application/x-www-form-urlencoded``, as GitHub sends when the
    webhook's content type is set to form) with a ``payload`` field is that field's JSON;
    another form becomes an object of its fields. Other text is kept as a string; an empty
    body is ``null``.
    """
    mime = content_type.split(";", 1)[0].strip().lower()
    if mime == _FORM:
        try:
            fields = urllib.parse.parse_qs(raw.decode("utf-8"), keep_blank_values=True)
        except (UnicodeDecodeError, ValueError):
            raise BadEvent("the form body is not UTF-8 url-encoded text") from None
        if "payload" in fields:
            try:
                return json.loads(fields["payload"][0])
            except RecursionError:
                raise BadEvent(TOO_DEEP) from None
            except json.JSONDecodeError as exc:
                raise BadEvent(f"the form's payload field is not valid JSON: {exc}") from None
        return {k: v[0] if len(v) == 1 else v for k, v in fields.items()}
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except RecursionError:
        raise BadEvent(TOO_DEEP) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        if mime == "application/json" or mime.endswith("+json"):
            raise BadEvent(f"the body is not valid JSON: {exc}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadEvent("the body is neither JSON nor UTF-8 text") from None


def event_type_of(source: SourceConfig, headers: Mapping[str, str], data: Any) -> str:
    """The event type: from the configured header or payload field, else the scheme's
    convention (X-GitHub-Event, X-Shopify-Topic, the payload's ``type``), then prefixed."""
    header = source.event_type_header
    field = source.event_type_field
    if header is None and field is None:
        header = _TYPE_HEADERS.get(source.scheme)
        field = None if header else "type"
    value: Any
    if header is not None:
        value = get_header(headers, header)
        where = f"the {header} header"
    else:
        assert field is not None
        value = data
        for part in field.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        where = f"the payload field {field}"
    if not isinstance(value, str) or not value:
        raise BadEvent(f"no event type: {where} is missing or not a string", field=field)
    event_type = source.event_type_prefix + value
    if not EVENT_TYPE_PATTERN.match(event_type):
        raise BadEvent(f"event type {event_type[:300]!r} from {where} is not valid: it may "
                       "hold letters, digits and . _ : - / (at most 255)", field=field)
    return event_type


def idempotency_key(source: SourceConfig, delivery_id: str | None) -> str | None:
    """Scoped by source, so two providers' ids can never collide with each other or with
    keys given to the ingest API."""
    return f"src:{source.key}:{delivery_id}" if delivery_id else None


def kept_headers(source: SourceConfig, headers: Any) -> tuple[tuple[str, str], ...]:
    """The request headers the source keeps, by their configured name; repeated headers are
    joined with ", ". Headers the gateway sets on deliveries itself are never kept."""
    out: list[tuple[str, str]] = []
    for name in source.keep_headers:
        if name.lower() in RESERVED:
            continue
        values = headers.getall(name, []) if hasattr(headers, "getall") else \
            [v for k, v in headers.items() if k.lower() == name.lower()]
        if values:
            out.append((name, ", ".join(values)))
    return tuple(out)


def add_inbound_routes(app: web.Application, *, admission: Admission, live: LiveConfig,
                       metrics: Metrics, body_timeout: float = 30.0,
                       clock: Callable[[], float] = time.time) -> None:
    """Serve the paths of the live config's sources (as a middleware: paths change live)."""
    gw = metrics.gateway
    index: dict[str, Any] = {"version": None, "paths": {}}

    def source_at(snap: Snapshot, path: str) -> SourceConfig | None:
        if index["version"] != snap.version:
            # broker sources have no path: they are consumed, not served
            index["paths"] = {s.path: s for s in snap.config.sources.values() if s.path}
            index["version"] = snap.version
        paths: dict[str, SourceConfig] = index["paths"]
        return paths.get(path)

    @web.middleware
    async def inbound(request: web.Request, handler: Handler) -> web.StreamResponse:
        snap = live.current
        source = source_at(snap, request.path)
        if source is None:
            return await handler(request)
        if request.method != "POST":
            return web.json_response(
                {"error": {"code": "method_not_allowed",
                           "message": "a webhook source takes POST requests only"}},
                status=405, headers={"Allow": "POST"})
        return await receive(request, snap, source)

    def refuse(source: SourceConfig, reason: str) -> None:
        metrics.inbound_rejected.labels(gw, source.key, reason).inc()

    async def receive(request: web.Request, snap: Snapshot, source: SourceConfig
                      ) -> web.Response:
        limit = snap.max_body_bytes
        try:
            raw = await read_body(request, limit, body_timeout)
        except BodyStalled as exc:
            refuse(source, "timeout")
            return stalled_response(exc)
        if raw is None:
            refuse(source, "too_large")
            return error_response(
                413, "body_too_large", f"the body is larger than {limit} bytes; the "
                "gateway's ingest.maxBodyBytes sets the limit")
        now = clock()
        try:
            delivery_id = verify_request(source, snap.source_secrets.get(source.key, {}),
                                         request.headers, raw, now)
        except Rejected as exc:
            refuse(source, exc.reason)
            log.warning("inbound request to %s (%s) refused: %s", source.key, source.path, exc)
            return web.json_response(UNAUTHORIZED, status=401)
        try:
            data = decode_payload(raw, request.headers.get("Content-Type", ""))
            req = IngestRequest(type=event_type_of(source, request.headers, data), data=data,
                                idempotency_key=idempotency_key(source, delivery_id))
            event = replace(build_event(req, now, source=source.key),
                            headers=kept_headers(source, request.headers))
        except BadEvent as exc:
            refuse(source, "invalid_event")
            extra = {"field": exc.field} if exc.field else {}
            return error_response(400, "invalid_event", str(exc), **extra)
        try:
            admitted = await admission.admit(event, data, snap)
        except QueueUnavailable as exc:
            refuse(source, "queue_unavailable")
            log.error("inbound event from %s refused, queue unavailable: %s", source.key, exc)
            return error_response(503, "queue_unavailable",
                                  "the event was not accepted; send it again later")
        metrics.inbound_accepted.labels(gw, source.key).inc()
        return web.json_response(admitted.answer(), status=202)

    app.middlewares.append(inbound)
