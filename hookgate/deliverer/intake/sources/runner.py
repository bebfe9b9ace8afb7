"""Runs a consumer for every broker source of the live config, in every deliverer process.

The runner reconciles on each config change: a new broker source gets a
:class:`~hookgate.deliverer.intake.sources.worker.SourceWorker`, a removed one is stopped, a
changed one (settings, mapping or secrets) is restarted. Processes share a source's messages the
broker's way (one Kafka consumer group, competing consumers on the other brokers), so
scaling deliverers out scales consumption too.

``GET /v1/sources`` shows each source's state in this process (``SourceReady``, counts,
lag). The operator does not read it yet: a WebhookSource's status says whether its
configuration compiled, not whether a consumer runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from hookgate.deliverer.config.live import LiveConfig, Snapshot
from hookgate.deliverer.http_common import check_api_key
from hookgate.deliverer.intake.admission import Admission
from hookgate.deliverer.intake.sources.worker import SourceMetrics, SourceWorker
from hookgate.deliverer.metrics import Metrics
from hookgate.model.routing import SourceConfig

__all__ = ["SourceRunner"]

log = logging.getLogger("hookgate.source")


class SourceRunner:
    def __init__(self, admission: Admission, live: LiveConfig, metrics: Metrics, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.admission = admission
        self.live = live
        self.metrics = SourceMetrics(metrics)
        self.clock = clock
        self.workers: dict[str, tuple[SourceWorker, asyncio.Task[None]]] = {}
        self._specs: dict[str, tuple[SourceConfig, dict[str, str]]] = {}
        self._stopping: set[asyncio.Task[None]] = set()
        self._running = False
        live.subscribe(self._changed)

    def start(self) -> None:
        """Start consuming every broker source of the current config."""
        self._running = True
        self.reconcile(self.live.current)

    def _changed(self, snap: Snapshot) -> None:
        if self._running:
            self.reconcile(snap)

    def reconcile(self, snap: Snapshot) -> None:
        wanted = {key: (src, dict(snap.source_secrets.get(key, {})))
                  for key, src in snap.config.sources.items() if src.broker is not None}
        for key in list(self.workers):
            if self._specs.get(key) != wanted.get(key):
                self._stop(key)
        for key, spec in wanted.items():
            if key not in self.workers:
                self._start(key, *spec)

    def _start(self, key: str, config: SourceConfig, secrets: dict[str, str]) -> None:
        worker = SourceWorker(config, secrets, admission=self.admission, metrics=self.metrics,
                              clock=self.clock)
        task = asyncio.create_task(worker.run(), name=f"source {key}")
        self.workers[key] = (worker, task)
        self._specs[key] = (config, secrets)
        log.info("source %s: consuming %s", key, config.broker.kind if config.broker else "?")

    def _stop(self, key: str) -> None:
        _, task = self.workers.pop(key)
        self._specs.pop(key, None)
        task.cancel()
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)
        self.metrics.forget(key)
        log.info("source %s: stopped consuming", key)

    async def stop(self) -> None:
        """Stop every consumer. Messages being handled are not acknowledged: the broker
        hands them out again, and their idempotency keys make them duplicates."""
        self._running = False
        for key in list(self.workers):
            self._stop(key)
        tasks = list(self._stopping)
        if tasks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait(tasks, timeout=10.0)

    def states(self) -> list[dict[str, Any]]:
        return [worker.state.to_json() for worker, _ in
                sorted(self.workers.values(), key=lambda w: w[0].config.key)]

    def add_routes(self, app: web.Application) -> None:
        """``GET /v1/sources``: the state of each broker source in this process."""
        async def list_sources(request: web.Request) -> web.Response:
            denied = check_api_key(request, self.live.current.api_keys)
            if denied is not None:
                return denied
            return web.json_response({"items": self.states()})

        app.router.add_get("/v1/sources", list_sources)

