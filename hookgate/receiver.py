"""``hookgate receive``: a local webhook receiver that verifies and prints each delivery.

For trying Hookgate out and for debugging an endpoint's config: point an endpoint at it and
watch signed deliveries arrive. It answers 204 to valid deliveries and 401 to the others.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import TextIO

from aiohttp import web

from hookgate.deliverer.signing import InvalidSignature, secret_key, verify

__all__ = ["build_receiver_app"]


def build_receiver_app(secrets: list[str], out: TextIO = sys.stdout,
                       clock: Callable[[], float] = time.time) -> web.Application:
    keys = [secret_key(s) for s in secrets]

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            msg_id = verify(keys, request.headers, body, clock()) if keys else \
                request.headers.get("webhook-id", "?")
            verdict = "verified" if keys else "NOT verified (no --secret given)"
            status = 204
        except InvalidSignature as exc:
            msg_id = request.headers.get("webhook-id", "?")
            verdict, status = f"REJECTED: {exc}", 401
        try:
            shown = json.dumps(json.loads(body), indent=2)
        except ValueError:
            shown = body.decode(errors="replace")
        print(f"--- {request.method} {request.path} webhook-id={msg_id} signature {verdict}\n"
              f"{shown}", file=out, flush=True)
        return web.Response(status=status)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", receive)
    return app
