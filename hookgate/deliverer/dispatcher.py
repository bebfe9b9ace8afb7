"""The delivery loop: lease deliveries from the queue, post them, record what happened.

Isolation: each endpoint may have at most ``maxInFlight`` deliveries under way; a delivery
for an endpoint at its limit is postponed (not attempted, not counted) instead of holding a
worker slot, so an endpoint that hangs until its timeout cannot starve the others. Waiting
retries live in the queue's delayed set, never in a worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Callable

from hookgate.deliverer.client_sender import Sender
from hookgate.deliverer.live_config import LiveConfig
from hookgate.deliverer.metrics import Metrics
from hookgate.deliverer.queue import Attempt, Delivery, Queue, QueueUnavailable
from hookgate.deliverer.retry import Verdict, decide, parse_retry_after
from hookgate.model.routing import EndpointConfig

__all__ = ["Dispatcher"]

log = logging.getLogger("hookgate.dispatcher")

PAUSED_RECHECK = 5.0  # seconds before a delivery to a paused endpoint is looked at again
SATURATED_RECHECK = 0.05  # seconds before a delivery to a saturated endpoint is tried again
QUEUE_BACKOFF = (0.5, 10.0)  # first and longest wait after the queue became unreachable


class Dispatcher:
    def __init__(self, queue: Queue, sender: Sender, live: LiveConfig, metrics: Metrics, *,
                 concurrency: int = 256, batch: int = 64, poll: float = 1.0,
                 clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None) -> None:
        self.queue = queue
        self.sender = sender
        self.live = live
        self.metrics = metrics
        self.concurrency = concurrency
        self.batch = batch
        self.poll = poll
        self.clock = clock
        self.rng = rng or random.Random()
        self.in_flight: Counter[str] = Counter()
        self._tasks: dict[asyncio.Task[None], Delivery] = {}
        self._slot_freed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()

    @property
    def busy(self) -> int:
        return len(self._tasks)

    async def run(self) -> None:
        """Deliver until :meth:`stop`; survives the queue going away and coming back."""
        backoff = QUEUE_BACKOFF[0]
        try:
            while not self._stopping.is_set():
                free = self.concurrency - len(self._tasks)
                if free <= 0:
                    self._slot_freed.clear()
                    await self._slot_freed.wait()
                    continue
                try:
                    batch = await self.queue.fetch(min(self.batch, free), wait=self.poll)
                    backoff = QUEUE_BACKOFF[0]
                except QueueUnavailable as exc:
                    log.error("cannot fetch deliveries: %s; trying again in %.1fs", exc, backoff)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), backoff)
                    backoff = min(backoff * 2, QUEUE_BACKOFF[1])
                    continue
                if self._stopping.is_set():
                    await self._release(batch)
                    break
                for delivery in batch:
                    task = asyncio.create_task(self._deliver(delivery))
                    self._tasks[task] = delivery
                    task.add_done_callback(self._done)
        finally:
            self._stopped.set()

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        self._slot_freed.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("delivery task failed", exc_info=task.exception())

    async def stop(self, grace: float) -> None:
        """Stop taking work, let in-flight deliveries finish for ``grace`` seconds, then hand
        whatever is still unfinished back to the queue so another deliverer takes it."""
        self._stopping.set()
        self._slot_freed.set()
        await self._stopped.wait()
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)

    async def _release(self, deliveries: list[Delivery]) -> None:
        if deliveries:
            try:
                await self.queue.release(deliveries)
            except QueueUnavailable as exc:
                log.warning("could not hand back %d deliveries (%s); they return to the queue "
                            "when their lease expires", len(deliveries), exc)

    async def _deliver(self, d: Delivery) -> None:
        snap = self.live.current
        endpoint = snap.config.endpoints.get(d.endpoint)
        now = self.clock()
        try:
            if endpoint is None:
                log.warning("endpoint %s no longer exists; delivery %s goes to dead letters",
                            d.endpoint, d.id)
                await self.queue.bury(d, None, "EndpointDeleted")
                self.metrics.deliveries.labels(self.metrics.gateway, d.endpoint, "dead").inc()
                return
            if endpoint.paused:
                await self.queue.postpone(d, now + PAUSED_RECHECK)
                return
            if self.in_flight[d.endpoint] >= endpoint.max_in_flight:
                await self.queue.postpone(d, now + SATURATED_RECHECK * (1 + self.rng.random()))
                return
            await self._attempt(d, endpoint, snap.keys.get(d.endpoint, ()))
        except asyncio.CancelledError:
            await asyncio.shield(self._release([d]))
            raise
        except QueueUnavailable as exc:
            log.error("could not record the outcome of delivery %s (%s); it will be attempted "
                      "again when its lease expires", d.id, exc)

    async def _attempt(self, d: Delivery, endpoint: EndpointConfig,
                       keys: tuple[bytes, ...]) -> None:
        gw, key = self.metrics.gateway, d.endpoint
        self.in_flight[key] += 1
        self.metrics.in_flight.labels(gw, key).inc()
        started = self.clock()
        try:
            resp = await self.sender.send(endpoint, keys, d.event.id, d.event.body)
        finally:
            self.in_flight[key] -= 1
            if not self.in_flight[key]:
                del self.in_flight[key]
            self.metrics.in_flight.labels(gw, key).dec()
        self.metrics.delivery_duration.labels(gw, key).observe(resp.duration)
        retry_after = parse_retry_after(resp.retry_after, started)
        decision = decide(resp.status, d.attempt, endpoint.retry_schedule, self.rng, retry_after)
        attempt = Attempt(endpoint=key, attempt=d.attempt, at=started, duration=resp.duration,
                          status=resp.status, error=resp.error,
                          outcome="success" if decision.verdict is Verdict.SUCCESS
                          else "retry" if decision.verdict is Verdict.RETRY else "dead")
        self.metrics.deliveries.labels(gw, key, decision.verdict.value).inc()
        if decision.verdict is Verdict.SUCCESS:
            await self.queue.complete(d, attempt)
            self.metrics.end_to_end.labels(gw, key).observe(self.clock() - d.event.accepted_at)
        elif decision.verdict is Verdict.RETRY:
            log.info("delivery %s to %s failed (attempt %d: %s); retrying in %.1fs",
                     d.id, key, d.attempt, resp.error, decision.delay)
            await self.queue.retry(d, attempt, self.clock() + decision.delay)
        else:
            log.warning("delivery %s to %s failed for good (attempt %d: %s); kept as a dead "
                        "letter (%s)", d.id, key, d.attempt, resp.error, decision.reason)
            await self.queue.bury(d, attempt, decision.reason)
