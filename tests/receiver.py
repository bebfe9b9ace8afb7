"""A real HTTP webhook receiver on loopback that records what it gets.

Tests script its answers per path (status codes, delays, hanging) and wait on what arrives
through :meth:`Recorder.wait_for`, which wakes on every request: no sleeping, no polling.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

__all__ = ["Received", "Recorder", "free_port", "serve_on_loopback"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def serve_on_loopback(handle: Callable[[web.Request], Awaitable[web.StreamResponse]],
                            port: int = 0) -> tuple[web.AppRunner, int]:
    """Serve ``handle`` for every POST path on 127.0.0.1; returns the runner and the port."""
    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
    await runner.setup()
    port = port or free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int  # what the recorder answered

    @property
    def webhook_id(self) -> str:
        return self.headers.get("webhook-id", "")


@dataclass
class Recorder:
    """Answers 204 unless told otherwise by :attr:`script` (path -> callable(n) -> status)."""

    script: dict[str, Callable[[int], int]] = field(default_factory=dict)
    delay: dict[str, float] = field(default_factory=dict)
    hang: set[str] = field(default_factory=set)
    received: list[Received] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._counts: dict[str, int] = {}

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def on(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port or free_port())
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        path = request.path
        n = self._counts[path] = self._counts.get(path, 0) + 1
        if path in self.hang:
            await asyncio.Event().wait()  # until the client gives up
        if path in self.delay:
            await asyncio.sleep(self.delay[path])
        status = self.script[path](n) if path in self.script else 204
        async with self._changed:
            self.received.append(Received(path, {k.lower(): v for k, v in request.headers.items()},
                                          body, status))
            self._changed.notify_all()
        return web.Response(status=status)

    async def wait_for(self, predicate: Callable[[list[Received]], bool],
                       timeout: float = 10.0, what: str = "deliveries") -> list[Received]:
        """Wait until ``predicate(received)`` holds; fail with what arrived otherwise."""
        async def check() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: predicate(self.received))
        try:
            await asyncio.wait_for(check(), timeout)
        except TimeoutError:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; received "
                                 f"{len(self.received)}: {[r.path for r in self.received][:20]}"
                                 ) from None
        return self.received
