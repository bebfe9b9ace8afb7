"""``hookgate receive``: a local webhook receiver that verifies and prints each delivery.

For trying Hookgate out and for debugging an endpoint's config: point an endpoint at it and
watch signed deliveries arrive. It answers 204 to valid deliveries and 401 to the others.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from aiohttp import web

from hookgate.signing import InvalidSignature, secret_key, verify

__all__ = ["build_receiver_app"]


def build_receiver_app(secrets: list[str], out: TextIO = sys.stdout,
                       clock: Callable[[], float] = time.time,
                       secrets_file: Path | None = None) -> web.Application:
    """``secrets_file``: the generated-secrets file of a local ``hookgate run``; its secrets
    are trusted too, read on each request since the gateway may create it later."""
    given = [secret_key(s) for s in secrets]

    def keys() -> list[bytes]:
        if secrets_file is None or not secrets_file.exists():
            return given
        try:
            generated = json.loads(secrets_file.read_text())
            return given + [secret_key(s) for s in generated.values()]
        except (OSError, ValueError):
            return given

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        trusted = keys()
        try:
            msg_id = verify(trusted, request.headers, body, clock()) if trusted else \
                request.headers.get("webhook-id", "?")
            verdict = "verified" if trusted else "NOT verified (no --secret given)"
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
