"""The admin side of the HTTP API: the attempt log, dead letters and endpoint runtime state.

``hookgate events show`` and ``hookgate dlq ...`` are thin clients of these routes, so they
work the same against the embedded queue and Redis, locally and in a cluster.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

from aiohttp import web

from hookgate.deliverer.config.live import LiveConfig
from hookgate.deliverer.http_common import check_api_key, error_response
from hookgate.deliverer.queues.base import Queue, QueueUnavailable

__all__ = ["add_admin_routes"]


def add_admin_routes(app: web.Application, *, queue: Queue, live: LiveConfig,
                     endpoint_states: Callable[[], Awaitable[dict[str, Any]]] | None = None,
                     resume: Callable[[str], Awaitable[bool]] | None = None) -> None:
    def endpoint_key(name: str | None) -> str | None:
        if not name:
            return None
        namespace = live.current.config.gateway.split("/", 1)[0]
        return name if "/" in name else f"{namespace}/{name}"

    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith(("/v1/events/", "/v1/dead-letters", "/v1/endpoints")):
            denied = check_api_key(request, live.current.api_keys)
            if denied is not None:
                return denied
            try:
                response: web.StreamResponse = await handler(request)
                return response
            except QueueUnavailable as exc:
                return error_response(503, "queue_unavailable", str(exc))
        response = await handler(request)
        return response

    async def get_event(request: web.Request) -> web.Response:
        record = await queue.event(request.match_info["id"])
        if record is None:
            return error_response(404, "not_found",
                                  "no event with that id (events are kept for 7 days)")
        ev = record.event
        try:
            payload: Any = json.loads(ev.body)
        except ValueError:
            payload = ev.body.decode(errors="replace")
        return web.json_response({
            "id": ev.id, "type": ev.type, "acceptedAt": ev.accepted_at, "source": ev.source,
            "idempotencyKey": ev.idempotency_key, "payload": payload,
            "endpoints": list(record.endpoints),
            "attempts": [asdict(a) for a in record.attempts],
        })

    async def list_dead(request: web.Request) -> web.Response:
        try:
            limit = int(request.query.get("limit", "100"))
        except ValueError:
            return error_response(400, "invalid_limit", "limit must be a whole number")
        items = await queue.dead_letters(endpoint_key(request.query.get("endpoint")), limit)
        return web.json_response({"items": [asdict(d) for d in items]})

    async def replay(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not ({"ids", "endpoint", "all"} & set(body)):
            return error_response(
                400, "invalid_replay", 'send {"ids": [...]}, {"endpoint": "name"} or '
                '{"all": true}')
        ids = body.get("ids") or []
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            return error_response(400, "invalid_replay", '"ids" must be a list of strings')
        count = await queue.replay(ids=ids, endpoint=endpoint_key(body.get("endpoint")),
                                   all=body.get("all") is True)
        return web.json_response({"requeued": count})

    async def list_endpoints(request: web.Request) -> web.Response:
        assert endpoint_states is not None
        states = await endpoint_states()
        return web.json_response({"items": list(states.values())})

    async def resume_endpoint(request: web.Request) -> web.Response:
        assert endpoint_states is not None and resume is not None
        key = endpoint_key(request.match_info["name"])
        assert key is not None
        if key not in await endpoint_states():
            return error_response(404, "not_found", f"no endpoint {key!r} in this gateway; "
                                  "`hookgate endpoints list` shows them")
        resumed = await resume(key)
        return web.json_response({"endpoint": key, "resumed": resumed})

    app.middlewares.append(guard)
    if endpoint_states is not None:
        app.router.add_get("/v1/endpoints", list_endpoints)
        app.router.add_post("/v1/endpoints/{name:.+}/resume", resume_endpoint)
    app.router.add_get("/v1/events/{id}", get_event)
    app.router.add_get("/v1/dead-letters", list_dead)
    app.router.add_post("/v1/dead-letters/replay", replay)
