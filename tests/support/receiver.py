"""A real HTTP webhook receiver on loopback that records what it gets.

Tests script its answers per path (status codes, delays, hanging) and wait on what arrives
through :meth:`Recorder.wait_for`, which wakes on every request: no sleeping, no polling.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Self

from aiohttp import web

from tests.support.waiting import wait_for

__all__ = ["LoopbackReceiver", "Received", "Recorder", "bound_port", "serve_on_loopback"]


def bound_port(runner: web.AppRunner) -> int:
    """The port a started runner's (first) site listens on."""
    return int(runner.addresses[0][1])


async def serve_on_loopback(handle: Callable[[web.Request], Awaitable[web.StreamResponse]]
                            ) -> tuple[web.AppRunner, int]:
    """Serve ``handle`` for every POST path on 127.0.0.1, on a port of the kernel's pick
    (bound here: no race); returns the runner and the port."""
    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, bound_port(runner)


@dataclass
class LoopbackReceiver:
    """A receiver a test writes itself: :meth:`handle` answers every POST path on loopback,
    records under ``changed`` (notifying it) and :meth:`wait` waits on what it recorded.

    ``async with Receiver() as rec:`` starts and stops it.
    """

    port: int = 0
    runner: web.AppRunner | None = None
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError

    async def start(self) -> None:
        self.runner, self.port = await serve_on_loopback(self.handle)

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def wait(self, predicate: Callable[[], bool], *, timeout: float, what: str,
                   state: Callable[[], object] | None = None) -> None:
        await wait_for(predicate, on=self.changed, timeout=timeout, what=what, state=state)


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int  # what the recorder answered
    at: float = 0.0  # time.monotonic() when the request arrived

    @property
    def webhook_id(self) -> str:
        return self.headers.get("webhook-id", "")


@dataclass
class Recorder:
    """Answers 204 unless told otherwise by :attr:`script` (path -> callable(n) -> status),
    with the headers :attr:`reply_headers` gives (path -> callable(n) -> headers)."""

    script: dict[str, Callable[[int], int]] = field(default_factory=dict)
    reply_headers: dict[str, Callable[[int], dict[str, str]]] = field(default_factory=dict)
    delay: dict[str, float] = field(default_factory=dict)
    hang: set[str] = field(default_factory=set)
    received: list[Received] = field(default_factory=list)
    port: int = 0  # 0: the kernel picks one when it starts, bound right there

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
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self.port = bound_port(self._runner)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        arrived = time.monotonic()
        body = await request.read()
        path = request.path
        async with self._changed:  # requests are counted as they arrive, hanging ones too
            n = self._counts[path] = self._counts.get(path, 0) + 1
            self._changed.notify_all()
        if path in self.hang:
            await asyncio.Event().wait()  # until the client gives up
        if path in self.delay:
            await asyncio.sleep(self.delay[path])
        status = self.script[path](n) if path in self.script else 204
        async with self._changed:
            self.received.append(Received(path, {k.lower(): v for k, v in request.headers.items()},
                                          body, status, arrived))
            self._changed.notify_all()
        headers = self.reply_headers[path](n) if path in self.reply_headers else None
        return web.Response(status=status, headers=headers)

    def arrived(self, path: str) -> int:
        """Requests to ``path`` that arrived so far, answered or not (hanging ones too)."""
        return self._counts.get(path, 0)

    async def wait_for(self, predicate: Callable[[list[Received]], bool],
                       timeout: float = 10.0, what: str = "deliveries") -> list[Received]:
        """Wait until ``predicate(received)`` holds; fail with what arrived otherwise."""
        await wait_for(lambda: predicate(self.received), on=self._changed, timeout=timeout,
                       what=what, state=lambda: (f"{len(self.received)} received: "
                                                 f"{[r.path for r in self.received][:20]}"))
        return self.received
