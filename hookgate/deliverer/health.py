"""Liveness, readiness and metrics: ``GET /healthz``, ``/readyz`` and ``/metrics``."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from hookgate.deliverer.config.live import LiveConfig
from hookgate.deliverer.http_common import error_response
from hookgate.deliverer.metrics import Metrics
from hookgate.deliverer.queues.base import Queue, QueueUnavailable

__all__ = ["add_health_routes"]

log = logging.getLogger("hookgate.health")


def add_health_routes(app: web.Application, *, queue: Queue, live: LiveConfig,
                      metrics: Metrics, ready: Callable[[], bool],
                      writable: Callable[[], Awaitable[None]]) -> None:
    """``writable`` raises ``QueueUnavailable`` while the queue refuses writes (a full disk,
    Redis out of memory): readiness then fails, so load balancers send events elsewhere
    instead of to a gateway that can only answer 503."""
    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        if not ready():
            return error_response(503, "not_ready", "the gateway is starting or stopping")
        try:
            await queue.depth()
        except QueueUnavailable as exc:
            return error_response(503, "queue_unavailable", str(exc))
        try:
            await writable()
        except QueueUnavailable as exc:
            return error_response(503, "queue_unwritable",
                                  f"the queue refuses writes, so events are refused: {exc}")
        return web.json_response({"status": "ready", "config": live.current.version})

    async def get_metrics(request: web.Request) -> web.Response:
        try:
            metrics.set_depth(await queue.depth())
        except QueueUnavailable as exc:
            log.warning("queue depth not available for metrics: %s", exc)
        return web.Response(body=metrics.render(),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", get_metrics)
