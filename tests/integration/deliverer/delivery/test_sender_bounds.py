"""The sender reads a receiver's answer only up to a bound: an endpoint that answers 2xx with
an endless body cannot make a deliverer read (and hold) it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from hookgate.deliverer.delivery.network_guard import LOOPBACK_CIDRS
from hookgate.deliverer.delivery.sender import DRAIN_LIMIT, Sender
from hookgate.model.routing import EndpointConfig
from hookgate.signing import signing_key

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
CHUNK = 64 * 1024
OFFERED = 1024 * 1024 * 1024  # what the receiver would send if the sender read it all


class Flood:
    """A receiver answering 200 with a 1 GiB body, counting what it managed to write."""

    def __init__(self) -> None:
        self.written = 0
        self.done = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(status=200)
        resp.content_length = OFFERED
        await resp.prepare(request)
        chunk = b"x" * CHUNK
        try:
            while self.written < OFFERED:
                await resp.write(chunk)
                self.written += CHUNK
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.done.set()
        return resp


@pytest.fixture
async def flood() -> AsyncIterator[tuple[Flood, int]]:
    receiver = Flood()
    app = web.Application()
    app.router.add_post("/{tail:.*}", receiver.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield receiver, port
    await runner.cleanup()


@pytest.mark.timeout(60)
async def test_a_huge_success_body_is_not_read(flood: tuple[Flood, int]) -> None:
    receiver, port = flood
    sender = Sender(max_connections=4, allow_cidrs=LOOPBACK_CIDRS)
    await sender.open()
    try:
        endpoint = EndpointConfig("shop/a", f"http://127.0.0.1:{port}/in", 10, (0,))
        response = await sender.send(endpoint, (signing_key(SECRET),), "msg_1", b"{}")
        assert response.status == 200 and response.error is None
        await asyncio.wait_for(receiver.done.wait(), 30)
    finally:
        await sender.close()
    # the connection was closed after the drain limit: the receiver could write what the
    # socket buffers hold, nowhere near the 1 GiB it offered
    assert DRAIN_LIMIT < receiver.written < 64 * 1024 * 1024, receiver.written
