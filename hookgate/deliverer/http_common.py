"""What every side of the HTTP API shares: the one error shape, bounded body reads, API keys."""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from aiohttp import web

__all__ = ["QUEUE_RETRY_AFTER", "BodyStalled", "check_api_key", "error_response",
           "internal_errors", "read_body", "stalled_response"]

log = logging.getLogger("hookgate.http")

QUEUE_RETRY_AFTER = "5"  # seconds a client should wait when the queue is away


def error_response(status: int, code: str, message: str, **extra: Any) -> web.Response:
    """The one error shape of the API: ``{"error": {"code", "message", ...}}``. A 503 tells
    the client when to try again (``Retry-After``)."""
    headers = {"Retry-After": QUEUE_RETRY_AFTER} if status == 503 else None
    return web.json_response({"error": {"code": code, "message": message, **extra}},
                             status=status, headers=headers)


class BodyStalled(Exception):
    """The client did not send the whole body within the gateway's body timeout."""


async def read_body(request: web.Request, limit: int, deadline: float) -> bytes | None:
    """The whole body, or None when it is larger than ``limit`` bytes: a declared
    ``Content-Length`` over the limit is refused before reading, a chunked body once it
    passes the limit. :class:`BodyStalled` when it has not all arrived within ``deadline``
    seconds, so a client that stops sending cannot hold a connection and a handler.
    (``content.read(n)`` returns only what has arrived so far: a chunked upload would be
    cut short.)"""
    if (request.content_length or 0) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(deadline):
            async for chunk in request.content.iter_any():
                size += len(chunk)
                if size > limit:
                    return None
                chunks.append(chunk)
    except TimeoutError:
        raise BodyStalled(f"the body did not arrive within {deadline:g}s") from None
    return b"".join(chunks)


def stalled_response(error: BodyStalled) -> web.Response:
    """The 408 for a stalled body; the connection is closed after it."""
    response = error_response(408, "request_timeout",
                              f"{error}; send the whole request without pausing")
    response.force_close()
    return response


def check_api_key(request: web.Request, keys: Collection[str]) -> web.Response | None:
    """None when the request may go on; otherwise the 401 to send. No keys: no check."""
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


@web.middleware
async def internal_errors(request: web.Request,
                          handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                          ) -> web.StreamResponse:
    """A failure no handler expected still gets the API's JSON error shape (and is logged
    with its traceback), never aiohttp's plain-text 500."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return error_response(
            500, "internal_error", "the gateway failed on this request (logged); it may not "
            "have been accepted: send it again (an event with an id or idempotencyKey is "
            "never stored twice)")
