"""The ingest side of the HTTP API: ``POST /v1/events``, health, readiness and metrics."""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from hookgate.deliverer.event import BadEvent, build_event, parse_ingest
from hookgate.deliverer.live_config import LiveConfig
from hookgate.deliverer.metrics import Metrics
from hookgate.deliverer.queue import Event, Queue, QueueUnavailable
from hookgate.model.expressions import activation
from hookgate.model.routing import Route

__all__ = ["IngestSettings", "add_ingest_routes", "error_response", "read_body", "route_event"]

log = logging.getLogger("hookgate.ingest")

QUEUE_RETRY_AFTER = "5"  # seconds a client should wait when the queue is away


@dataclass
class IngestSettings:
    max_body_bytes: int = 256 * 1024
    idempotency_ttl: float = 24 * 3600
    api_keys: Collection[str] = field(default_factory=tuple)


def error_response(status: int, code: str, message: str, **extra: Any) -> web.Response:
    """The one error shape of the API: ``{"error": {"code", "message", ...}}``."""
    headers = {"Retry-After": QUEUE_RETRY_AFTER} if status == 503 else None
    return web.json_response({"error": {"code": code, "message": message, **extra}},
                             status=status, headers=headers)


async def read_body(request: web.Request, limit: int) -> bytes | None:
    """The whole body, or None once it exceeds ``limit`` bytes. (``content.read(n)`` returns
    only what has arrived so far: a chunked upload would be cut short.)"""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def check_api_key(request: web.Request, keys: Collection[str]) -> web.Response | None:
    """None when the request may go on; otherwise the 401 to send."""
    if not keys:
        return None
    given = request.headers.get("Authorization", "")
    given = given.removeprefix("Bearer ").strip() if given.startswith("Bearer ") else \
        request.headers.get("X-Hookgate-Key", "")
    if not given:
        return error_response(401, "missing_api_key",
                              "no API key: send it as 'Authorization: Bearer <key>'")
    if not any(hmac.compare_digest(given.encode(), k.encode()) for k in keys):
        return error_response(401, "invalid_api_key",
                              "the API key is not valid; check it against the gateway's keys")
    return None


_reported: set[tuple[int, str]] = set()  # (id of a Router, subscription) already logged


def route_event(live: LiveConfig, metrics: Metrics, event: Event, data: Any) -> Route:
    """Where ``event`` goes: type globs, then CEL filters, with ordering keys.

    A filter that cannot be evaluated on the event counts as no match; it is counted in
    ``hookgate_filter_errors_total`` and logged once per subscription and config.
    """
    router = live.current.router
    route = router.route(event.type, event.source, activation(
        type=event.type, data=data, source=event.source, id=event.id, time=event.accepted_at))
    for subject, message in route.errors:
        metrics.filter_errors.labels(metrics.gateway, subject).inc()
        if (id(router), subject) not in _reported:
            if len(_reported) > 10_000:
                _reported.clear()
            _reported.add((id(router), subject))
            log.warning("%s could not be evaluated on event %s (%s): %s; counted as no match "
                        "(logged once per config)", subject, event.id, event.type, message)
    return route


def add_ingest_routes(app: web.Application, *, queue: Queue, live: LiveConfig,
                      metrics: Metrics, settings: IngestSettings,
                      ready: Callable[[], bool], clock: Callable[[], float] = time.time) -> None:
    gw = metrics.gateway

    async def post_event(request: web.Request) -> web.Response:
        denied = check_api_key(request, settings.api_keys)
        if denied is not None:
            metrics.events_rejected.labels(gw, "auth").inc()
            return denied
        raw = None
        if (request.content_length or 0) <= settings.max_body_bytes:
            raw = await read_body(request, settings.max_body_bytes)
        if raw is None:
            metrics.events_rejected.labels(gw, "too_large").inc()
            return error_response(
                413, "body_too_large", f"the body is larger than {settings.max_body_bytes} "
                "bytes; send a smaller event or raise the gateway's ingest.maxBodyBytes")
        try:
            req = parse_ingest(raw)
        except BadEvent as exc:
            metrics.events_rejected.labels(gw, "invalid").inc()
            extra = {"field": exc.field} if exc.field else {}
            return error_response(400, "invalid_event", str(exc), **extra)
        event = build_event(req, clock())
        route = route_event(live, metrics, event, req.data)
        endpoints = route.endpoints
        try:
            event_id, created = await queue.enqueue(event, endpoints,
                                                    idempotency_ttl=settings.idempotency_ttl,
                                                    ordering_keys=route.ordering_keys)
        except QueueUnavailable as exc:
            metrics.events_rejected.labels(gw, "queue_unavailable").inc()
            log.error("event refused, queue unavailable: %s", exc)
            return error_response(503, "queue_unavailable",
                                  f"the event was not accepted: {exc}; send it again later")
        if created:
            metrics.events_ingested.labels(gw, event.source or "api").inc()
        body: dict[str, Any] = {"id": event_id}
        if created:
            body["deliveries"] = len(endpoints)
        else:
            body["duplicate"] = True
        return web.json_response(body, status=202)

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        if not ready():
            return error_response(503, "not_ready", "the gateway is starting or stopping")
        try:
            await queue.depth()
        except QueueUnavailable as exc:
            return error_response(503, "queue_unavailable", str(exc))
        return web.json_response({"status": "ready", "config": live.current.version})

    async def get_metrics(request: web.Request) -> web.Response:
        try:
            metrics.set_depth(await queue.depth())
        except QueueUnavailable as exc:
            log.warning("queue depth not available for metrics: %s", exc)
        return web.Response(body=metrics.render(),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    app.router.add_post("/v1/events", post_event)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", get_metrics)
