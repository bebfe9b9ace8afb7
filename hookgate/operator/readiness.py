"""The operator's readiness probe: ``GET /readyz`` answers 200 only when the operator has
started and the API server answers it.

"Started" is kopf's ready flag: the start-up handlers have run and kopf has begun its
watches. "The API server answers" is a cheap authenticated read the operator needs anyway
(listing WebhookGateways, limit 1, where it watches), so a pod whose token, RBAC or network
is broken is not Ready. The read is done at most once every ``max_age`` seconds however
often the kubelet asks, and is bounded by ``timeout``.

Liveness stays with kopf's own endpoint (``/healthz`` on ``--liveness``): an API server that
is away makes the operator unready, never restarted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

__all__ = ["Readiness", "Verdict", "serve_readiness"]


@dataclass(frozen=True)
class Verdict:
    ready: bool
    reason: str


class Readiness:
    def __init__(self, check: Callable[[], Awaitable[None]], *,
                 started: asyncio.Event | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 max_age: float = 5.0, timeout: float = 5.0) -> None:
        self.check = check
        self.started = started if started is not None else asyncio.Event()
        self.clock = clock
        self.max_age = max_age
        self.timeout = timeout
        self._last: tuple[float, Verdict] | None = None
        self._lock = asyncio.Lock()

    async def verdict(self) -> Verdict:
        if not self.started.is_set():
            return Verdict(False, "the operator is starting")
        async with self._lock:  # concurrent probes share one API read
            if self._last is not None and self.clock() - self._last[0] < self.max_age:
                return self._last[1]
            try:
                await asyncio.wait_for(self.check(), self.timeout)
                verdict = Verdict(True, "started, and the API server answers")
            except TimeoutError:
                verdict = Verdict(False, f"the API server did not answer in {self.timeout:g}s")
            except Exception as exc:  # any failure of the read means not ready
                verdict = Verdict(False, f"the API server read failed: {exc}")
            self._last = (self.clock(), verdict)
            return verdict

    def app(self) -> web.Application:
        async def readyz(_: web.Request) -> web.Response:
            verdict = await self.verdict()
            return web.json_response({"ready": verdict.ready, "reason": verdict.reason},
                                     status=200 if verdict.ready else 503)

        app = web.Application()
        app.router.add_get("/readyz", readyz)
        return app


async def serve_readiness(readiness: Readiness, host: str, port: int) -> web.AppRunner:
    """Listen on HOST:PORT; the caller cleans the returned runner up."""
    runner = web.AppRunner(readiness.app(), handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
