"""The ingest door of the HTTP API: ``POST /v1/events`` from internal services."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from aiohttp import web

from hookgate.deliverer.config.live import LiveConfig
from hookgate.deliverer.http_common import (
    BodyStalled,
    check_api_key,
    error_response,
    read_body,
    stalled_response,
)
from hookgate.deliverer.intake.admission import Admission
from hookgate.deliverer.intake.event import BadEvent, build_event, parse_ingest
from hookgate.deliverer.metrics import Metrics
from hookgate.deliverer.queues.base import QueueUnavailable

__all__ = ["add_ingest_routes"]

log = logging.getLogger("hookgate.ingest")


def add_ingest_routes(app: web.Application, *, admission: Admission, live: LiveConfig,
                      metrics: Metrics, body_timeout: float = 30.0,
                      clock: Callable[[], float] = time.time) -> None:
    gw = metrics.gateway

    async def post_event(request: web.Request) -> web.Response:
        snap = live.current  # one config for the whole request
        denied = check_api_key(request, snap.api_keys)
        if denied is not None:
            metrics.events_rejected.labels(gw, "auth").inc()
            return denied
        try:
            raw = await read_body(request, snap.max_body_bytes, body_timeout)
        except BodyStalled as exc:
            metrics.events_rejected.labels(gw, "timeout").inc()
            return stalled_response(exc)
        if raw is None:
            metrics.events_rejected.labels(gw, "too_large").inc()
            return error_response(
                413, "body_too_large", f"the body is larger than {snap.max_body_bytes} "
                "bytes; send a smaller event or raise the gateway's ingest.maxBodyBytes")
        try:
            req = parse_ingest(raw)
            event = build_event(req, clock())
        except BadEvent as exc:
            metrics.events_rejected.labels(gw, "invalid").inc()
            extra = {"field": exc.field} if exc.field else {}
            return error_response(400, "invalid_event", str(exc), **extra)
        try:
            admitted = await admission.admit(event, req.data, snap)
        except QueueUnavailable as exc:
            metrics.events_rejected.labels(gw, "queue_unavailable").inc()
            log.error("event refused, queue unavailable: %s", exc)
            return error_response(503, "queue_unavailable",
                                  f"the event was not accepted: {exc}; send it again later")
        return web.json_response(admitted.answer(), status=202)

    app.router.add_post("/v1/events", post_event)
