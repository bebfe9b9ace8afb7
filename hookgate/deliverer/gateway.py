"""One running gateway: queue, live routing config, HTTP API and dispatcher, wired together.

``hookgate run`` (config from files) and ``hookgate deliverer`` (config from the cluster)
both build a :class:`Gateway`; only where the config comes from differs.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from hookgate.deliverer.admin import add_admin_routes
from hookgate.deliverer.config.live import LiveConfig, Snapshot
from hookgate.deliverer.delivery.dispatcher import Dispatcher
from hookgate.deliverer.delivery.sender import Sender
from hookgate.deliverer.health import add_health_routes
from hookgate.deliverer.http_common import internal_errors
from hookgate.deliverer.intake.admission import DEFAULT_IDEMPOTENCY_TTL, Admission
from hookgate.deliverer.intake.inbound import add_inbound_routes
from hookgate.deliverer.intake.ingest import add_ingest_routes
from hookgate.deliverer.intake.sources.runner import SourceRunner
from hookgate.deliverer.metrics import Metrics
from hookgate.deliverer.queues.base import Queue, QueueUnavailable
from hookgate.model.bundle import GatewayConfig

__all__ = ["Gateway", "GatewaySettings", "settle_heap"]

log = logging.getLogger("hookgate.gateway")

#: Seconds the server goes on reading (and dropping) a body it answered without reading,
#: so the client sees the answer (413, 408) instead of a reset; aiohttp's default is 10.
LINGER = 2.0


@dataclass
class GatewaySettings:
    host: str = "127.0.0.1"
    port: int = 8080
    concurrency: int = 256
    grace: float = 30.0  # seconds in-flight deliveries get to finish on SIGTERM
    retention: float = 7 * 24 * 3600  # how long the attempt log keeps finished events
    idempotency_ttl: float = DEFAULT_IDEMPOTENCY_TTL
    # A connection with no request under way (idle between requests, or whose request
    # headers never complete) is closed after idle_timeout seconds; a request body that has
    # not all arrived after body_timeout seconds gets a 408. Slow clients cannot hold
    # connections open for as long as they like.
    idle_timeout: float = 60.0
    body_timeout: float = 30.0
    # SSRF guard exceptions on top of the gateway's network.allowCIDRs (`hookgate run`
    # allows loopback, so a local receiver works)
    extra_allow_cidrs: tuple[str, ...] = ()


class Gateway:
    """Queue, config, HTTP API, broker consumers and dispatcher of one gateway process."""

    def __init__(self, queue: Queue, live: LiveConfig, settings: GatewaySettings, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.queue = queue
        self.live = live
        self.settings = settings
        self.clock = clock
        self.metrics = Metrics(live.current.config.gateway)
        self.sender = Sender(max_connections=settings.concurrency,
                             allow_cidrs=live.current.allow_cidrs)
        self.dispatcher = Dispatcher(queue, self.sender, live, self.metrics,
                                     concurrency=settings.concurrency, clock=clock)
        self.admission = Admission(queue, live, self.metrics,
                                   idempotency_ttl=settings.idempotency_ttl)
        # consumers of the config's broker sources, started and stopped with config changes
        self.sources = SourceRunner(self.admission, live, self.metrics, clock=clock)
        live.subscribe(self._switched)
        self.ready = False
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.port = settings.port

    def build_app(self) -> web.Application:
        # Ingest bodies are capped by the handlers themselves (the limit can change with the
        # config), with a clear error; aiohttp's limit only guards the admin routes.
        app = web.Application(client_max_size=1024 * 1024, middlewares=[internal_errors])
        add_health_routes(app, queue=self.queue, live=self.live, metrics=self.metrics,
                          ready=lambda: self.ready, writable=self.admission.writable)
        body_timeout = self.settings.body_timeout
        add_ingest_routes(app, admission=self.admission, live=self.live, metrics=self.metrics,
                          body_timeout=body_timeout, clock=self.clock)
        add_inbound_routes(app, admission=self.admission, live=self.live,
                           metrics=self.metrics, body_timeout=body_timeout, clock=self.clock)
        add_admin_routes(app, queue=self.queue, live=self.live,
                         endpoint_states=self.endpoint_states, resume=self.dispatcher.resume)
        self.sources.add_routes(app)
        return app

    @classmethod
    def create(cls, queue: Queue, config: GatewayConfig, settings: GatewaySettings,
               **kwargs: Callable[[], float]) -> Gateway:
        live = LiveConfig(config, extra_allow_cidrs=settings.extra_allow_cidrs)
        return cls(queue, live, settings, **kwargs)

    def apply(self, config: GatewayConfig) -> None:
        """Switch to a new config in one step (:meth:`LiveConfig.apply`); requests and
        deliveries under way finish on the snapshot they started with."""
        self.live.apply(config)
        self.metrics.config_reloads.labels(self.metrics.gateway, "ok").inc()
        settle_heap()
        log.info("config applied: %d endpoints, %d subscriptions",
                 len(config.compiled.config.endpoints),
                 len(config.compiled.config.subscriptions))

    def _switched(self, snapshot: Snapshot) -> None:
        """What follows the config in the same step: the SSRF guard's exceptions and the
        per-endpoint metric series of endpoints that are gone."""
        self.sender.set_allowed(snapshot.allow_cidrs)
        self.metrics.delivery.forget(set(snapshot.config.endpoints))

    async def endpoint_states(self) -> dict[str, Any]:
        """Runtime state of each endpoint: pauses and circuit breakers as stored now."""
        await self.dispatcher.refresh_shared_state()
        return self.dispatcher.endpoint_states()

    def reject(self, error: Exception) -> None:
        """A config change that could not be applied: counted; the source logged why."""
        self.metrics.config_reloads.labels(self.metrics.gateway, "error").inc()

    async def start(self) -> None:
        """Open the queue, listen, start delivering; on failure, undo what was done."""
        await self.queue.open()
        await self.sender.open()
        self._runner = web.AppRunner(self.build_app(), access_log=None,
                                     shutdown_timeout=self.settings.grace,
                                     keepalive_timeout=self.settings.idle_timeout,
                                     lingering_time=LINGER)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            await self.sender.close()
            await self.queue.close()
            raise
        server = getattr(site, "_server", None)
        if server is not None and server.sockets:
            self.port = server.sockets[0].getsockname()[1]
        self._tasks = [asyncio.create_task(self.dispatcher.run(), name="dispatcher"),
                       asyncio.create_task(self._purge_loop(), name="purge")]
        self.sources.start()
        settle_heap()
        self.ready = True
        log.info("gateway %s listening on http://%s:%d", self.live.current.config.gateway,
                 self.settings.host, self.port)

    async def stop(self) -> None:
        """Graceful stop: refuse readiness, finish or hand back in-flight work, close."""
        self.ready = False
        await self.sources.stop()
        await self.dispatcher.stop(self.settings.grace)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._runner is not None:
            await self._runner.cleanup()
        await self.sender.close()
        await self.queue.close()
        log.info("gateway stopped")

    async def _purge_loop(self) -> None:
        while True:
            try:
                dropped = await self.queue.purge(self.clock() - self.settings.retention)
                if dropped:
                    log.info("dropped %d events older than the retention", dropped)
            except QueueUnavailable as exc:
                log.warning("retention purge skipped: %s", exc)
            await asyncio.sleep(3600)


def settle_heap() -> None:
    """Tune the cyclic garbage collector for a process that keeps a large, steady heap.

    In a delivery drain its passes took a tenth of the event loop's time (py-spy): the
    default young-generation threshold (700 allocations) made it walk the hundreds of
    deliveries in flight every few requests, and older passes walked the whole config.
    What the gateway holds for good (modules, the routing config) is frozen out of its
    generations, and young passes run every 50,000 allocations: almost everything a
    delivery allocates is freed by reference counting long before that."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, *gc.get_threshold()[1:])
