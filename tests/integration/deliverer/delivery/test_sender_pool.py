"""The sender's connection pool follows the SSRF guard: connections kept alive under old
``allowCIDRs`` do not outlive a change of them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from hookgate.deliverer.delivery.network_guard import LOOPBACK_CIDRS
from hookgate.deliverer.delivery.sender import Sender
from hookgate.model.routing import EndpointConfig
from hookgate.signing import signing_key
from tests.support.receiver import LoopbackReceiver

pytestmark = pytest.mark.timeout(60)

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@dataclass
class Server(LoopbackReceiver):
    """Answers 204; ``/slow`` only once :attr:`release` is set. Records the client port of
    each request, which tells a kept-alive connection from a new one."""

    ports: list[tuple[str, int]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    slow_started: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.ports.append((request.path, peer[1] if peer else 0))
        if request.path == "/slow":
            self.slow_started.set()
            await self.release.wait()
        return web.Response(status=204)


@pytest.fixture
async def server() -> AsyncIterator[tuple[Server, int]]:
    async with Server() as srv:
        yield srv, srv.port


async def test_narrowed_exceptions_stop_deliveries_on_kept_alive_connections(
        server: tuple[Server, int]) -> None:
    srv, port = server
    sender = Sender(max_connections=4, allow_cidrs=LOOPBACK_CIDRS)
    await sender.open()
    keys = (signing_key(SECRET),)
    # a host name, so the address is checked by the resolver on connect, not per request
    fast = EndpointConfig("shop/a", f"http://localhost:{port}/fast", 10, (0,))
    slow = EndpointConfig("shop/a", f"http://localhost:{port}/slow", 10, (0,))
    try:
        under_way = asyncio.create_task(sender.send(slow, keys, "msg_slow", b"{}"))
        await asyncio.wait_for(srv.slow_started.wait(), 10)
        for n in (1, 2):
            response = await sender.send(fast, keys, f"msg_{n}", b"{}")
            assert response.status == 204, response
        assert srv.ports[1][1] == srv.ports[2][1]  # the second one reused the connection

        sender.set_allowed(())  # loopback no longer allowed; that connection is idle, alive
        refused = await sender.send(fast, keys, "msg_3", b"{}")
        assert refused.refused and refused.status is None, refused
        assert "127.0.0.1 is loopback" in (refused.error or ""), refused.error
        assert [path for path, _ in srv.ports] == ["/slow", "/fast", "/fast"]

        srv.release.set()  # what was under way before the change finishes normally
        finished = await asyncio.wait_for(under_way, 10)
        assert finished.status == 204, finished

        sender.set_allowed(LOOPBACK_CIDRS)  # allowed again: a new connection
        again = await sender.send(fast, keys, "msg_4", b"{}")
        assert again.status == 204
        assert srv.ports[-1][1] not in {p for _, p in srv.ports[:-1]}
    finally:
        await sender.close()
