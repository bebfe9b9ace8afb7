"""The delivery loop: lease deliveries from the queue, post them, record what happened.

Before each attempt the delivery passes the endpoint's policies, in this order; any of them
may postpone it (handed back to the queue's delayed set: not attempted, not counted, no
worker held):

1. paused: by its manifest, or at runtime (410 Gone, auto-disable; kept in the queue so
   every process sees it, and re-read every second);
2. circuit breaker (:mod:`~hookgate.deliverer.delivery.circuit`): open after consecutive
   failures, counted by every deliverer together;
3. isolation: at most ``maxInFlight`` deliveries under way per endpoint. A saturated
   endpoint's deliveries come back after a delay that grows (to 2 s) the longer it stays
   saturated, so an endpoint hanging until its timeout costs little queue traffic while a
   busy healthy one is rechecked every 50-100 ms;
4. rate limit (:mod:`~hookgate.deliverer.delivery.rate_limit`): GCRA per endpoint, shared through
   Redis; a delivery that may not go yet books the next slot and comes back then, so a
   backlog comes back at the allowed rate, in order, instead of all at once.

After an attempt: 2xx completes; 410 buries the delivery (Gone) and pauses the endpoint; a
refused address (SSRF guard) buries it at once (AddressRefused); other failures retry on
the schedule. An endpoint failing without a single success for ``autoDisableAfter`` is
paused. Pauses and dead letters are announced as ``hookgate.*`` events to the gateway's
operations endpoint, signed like every delivery.

Failures are recorded in the queue (:meth:`Queue.record_failure`), for every endpoint with a
circuit breaker or ``autoDisableAfter``, and the record is cleared by the next success: that
shared record is the breaker's count and the auto-disable clock, so every deliverer agrees
on them and a restart keeps them. It is re-read every second with the pauses.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from hookgate.deliverer.config.live import LiveConfig
from hookgate.deliverer.delivery.circuit import Circuit, Circuits, State, Transition
from hookgate.deliverer.delivery.rate_limit import RateLimiter, limiter_for
from hookgate.deliverer.delivery.retry import Verdict, decide, parse_retry_after
from hookgate.deliverer.delivery.sender import Sender
from hookgate.deliverer.headers import RESERVED
from hookgate.deliverer.metrics import EndpointSeries, Metrics
from hookgate.deliverer.queues.base import (
    Attempt,
    Delivery,
    EndpointHealth,
    Event,
    PausedEndpoint,
    Queue,
    QueueUnavailable,
    event_body,
    new_event_id,
)
from hookgate.model.compiler import EndpointAuth
from hookgate.model.routing import EndpointConfig
from hookgate.signing import SigningKey

__all__ = ["Dispatcher"]

log = logging.getLogger("hookgate.dispatcher")

PAUSED_RECHECK = 5.0  # seconds before a delivery to a paused endpoint is looked at again
SATURATED_RECHECK = 0.05  # seconds before a delivery to a saturated endpoint is tried again
SATURATED_MAX = 2.0  # longest recheck delay of an endpoint saturated for a long time
SHARED_REFRESH = 1.0  # seconds between reads of the pauses and endpoint health in the queue
TRIAL_MARGIN = 5.0  # seconds a trial claim outlives the endpoint's timeout
QUEUE_BACKOFF = (0.5, 10.0)  # first and longest wait after the queue became unreachable
NOT_ENDPOINT_FAILURES = frozenset({"AddressRefused"})
# Successful deliveries whose completion the queue has not written yet, per worker, at most:
# a queue whose writes lag (a group commit waits for the disk) slows the workers only then.
UNCONFIRMED_MAX = 4


def _kept_headers(event: Event, endpoint: EndpointConfig) -> dict[str, str]:
    """The headers an inbound source kept with the event; the endpoint's own headers and the
    gateway's (signature, content type, ...) win over them."""
    if not event.headers:
        return {}
    taken = RESERVED | {name.lower() for name in endpoint.headers}
    return {k: v for k, v in event.headers if k.lower() not in taken}


class Dispatcher:
    def __init__(self, queue: Queue, sender: Sender, live: LiveConfig, metrics: Metrics, *,
                 concurrency: int = 256, batch: int = 256, poll: float = 1.0,
                 clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None,
                 limiter: RateLimiter | None = None) -> None:
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
        # A fixed pool of ``concurrency`` workers takes fetched deliveries from ``_ready``
        # (a task per delivery cost more CPU than anything else the dispatcher did).
        self._ready: collections.deque[Delivery] = collections.deque()
        self._idle: collections.deque[asyncio.Future[None]] = collections.deque()
        self._workers: list[asyncio.Task[None]] = []
        self._busy = 0
        self._slot_freed = asyncio.Event()
        self._unconfirmed = 0  # completions handed to the queue, not yet written
        self._confirmed = asyncio.Event()
        self._confirmed.set()
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self.limiter = limiter or limiter_for(queue, clock)
        self.circuits = Circuits(clock, self._circuit_changed)
        self.paused: dict[str, PausedEndpoint] = {}  # runtime pauses, as last read
        self.postponements: Counter[tuple[str, str]] = Counter()  # (endpoint, reason)
        self._saturated_since: dict[str, float] = {}
        self.health: dict[str, EndpointHealth] = {}  # failing endpoints, as last read

    # -- runtime state -------------------------------------------------------------------

    def _circuit_changed(self, t: Transition) -> None:
        self.metrics.circuit_state.labels(self.metrics.gateway, t.endpoint).set(t.after.value)
        level = logging.WARNING if t.after is State.OPEN else logging.INFO
        log.log(level, "circuit of endpoint %s: %s -> %s (%s)", t.endpoint, t.before.title,
                t.after.title, t.reason)

    def endpoint_states(self) -> dict[str, dict[str, Any]]:
        """Runtime state of every configured endpoint: paused (and why), circuit state.

        For ``GET /v1/endpoints`` (``hookgate endpoints list``).
        """
        out: dict[str, dict[str, Any]] = {}
        for key, ep in sorted(self.live.current.config.endpoints.items()):
            pause = self.paused.get(key)
            circuit = (self.circuits.get(key, ep.circuit_breaker).state
                       if ep.circuit_breaker is not None else State.CLOSED)
            out[key] = {
                "endpoint": key, "url": ep.url,
                "paused": ep.paused or pause is not None,
                "pausedBy": "spec" if ep.paused else pause.reason if pause else None,
                "pauseMessage": pause.message if pause else None,
                "pausedAt": pause.at if pause else None,
                "circuit": circuit.title,
                "inFlight": self.in_flight.get(key, 0),
                "failingSince": health.failing_since if (health := self.health.get(key))
                else None,
            }
        return out

    async def refresh_shared_state(self) -> None:
        """Read the runtime pauses and the endpoint health from the queue: other deliverers
        (or this one before a restart) may have changed them."""
        paused = await self.queue.paused_endpoints()
        for key in set(self.paused) | set(paused):
            self.metrics.endpoint_paused.labels(self.metrics.gateway, key).set(
                1 if key in paused else 0)
        self.paused = paused
        read_at = self.clock()
        self.health = await self.queue.endpoint_health()
        self.circuits.sync({k: (h.failures, h.opened_at) for k, h in self.health.items()},
                           read_at)

    async def _watch_shared_state(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.refresh_shared_state()
            except QueueUnavailable as exc:
                log.debug("could not read paused endpoints and endpoint health: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), SHARED_REFRESH)

    async def pause(self, endpoint: str, reason: str, message: str) -> None:
        """Pause ``endpoint`` for every process and announce it on the operations endpoint."""
        pause = PausedEndpoint(endpoint=endpoint, reason=reason, message=message,
                               at=self.clock())
        created = await self.queue.pause_endpoint(pause)
        self.paused.setdefault(endpoint, pause)
        self.metrics.endpoint_paused.labels(self.metrics.gateway, endpoint).set(1)
        if created:
            log.warning("endpoint %s paused (%s): %s; resume it with `hookgate endpoints "
                        "resume %s`", endpoint, reason, message, endpoint.split("/", 1)[-1])
            await self.announce("hookgate.endpoint.paused", {
                "endpoint": endpoint, "reason": reason, "message": message})

    async def resume(self, endpoint: str) -> bool:
        """Lift a runtime pause; the endpoint's waiting deliveries go out within seconds."""
        resumed = await self.queue.resume_endpoint(endpoint)
        await self.queue.record_success(endpoint)  # the auto-disable clock starts again
        self.paused.pop(endpoint, None)
        self.health.pop(endpoint, None)
        self.metrics.endpoint_paused.labels(self.metrics.gateway, endpoint).set(0)
        if resumed:
            log.info("endpoint %s resumed", endpoint)
            await self.announce("hookgate.endpoint.resumed", {"endpoint": endpoint})
        return resumed

    async def announce(self, event_type: str, data: dict[str, Any]) -> None:
        """Enqueue an operational event for the operations endpoint, if there is one.

        Nothing is said about the operations endpoint itself, so a broken one cannot feed
        on its own failures.
        """
        target = self.live.current.config.operations_endpoint
        if target is None or data.get("endpoint") == target:
            return
        now = self.clock()
        event = Event(id=new_event_id(now), type=event_type,
                      body=event_body(event_type, data, now), accepted_at=now)
        try:
            await self.queue.enqueue(event, [target])
        except QueueUnavailable as exc:
            log.error("operational event %s not sent: %s", event_type, exc)

    async def run(self) -> None:
        """Deliver until :meth:`stop`; survives the queue going away and coming back."""
        backoff = QUEUE_BACKOFF[0]
        with contextlib.suppress(QueueUnavailable):  # pauses and breakers before the first lease
            await self.refresh_shared_state()
        watcher = asyncio.create_task(self._watch_shared_state(), name="shared-state")
        self._workers = [asyncio.create_task(self._work(), name=f"delivery-{n}")
                         for n in range(self.concurrency)]
        try:
            backlog = False  # the last fetch came back full: more is waiting
            while not self._stopping.is_set():
                # While there is a backlog, up to one batch waits leased beyond the workers:
                # a worker that finishes finds its next delivery at once instead of waiting
                # for a fetch round trip (fetch latency, not CPU, bounded a drain to 80 % of a
                # core without it). Otherwise fetch only for idle workers, so deliveries
                # handed back meanwhile (rate limit, retries) are seen by the next fetch.
                free = (self.concurrency + (self.batch if backlog else 0) - self._busy
                        - len(self._ready))
                if free <= 0:
                    self._slot_freed.clear()
                    await self._slot_freed.wait()
                    continue
                try:
                    want = min(self.batch, free)
                    batch = await self.queue.fetch(want, wait=self.poll)
                    backlog = len(batch) == want
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
                self._ready.extend(batch)
                self._wake_workers(len(batch))
        finally:
            watcher.cancel()
            if not self._stopping.is_set():  # cancelled, not stopped: take the workers along
                for worker in self._workers:
                    worker.cancel()
            self._stopped.set()

    def _wake_workers(self, n: int) -> None:
        while n > 0 and self._idle:
            waiter = self._idle.popleft()
            if not waiter.done():
                waiter.set_result(None)
                n -= 1

    async def _work(self) -> None:
        """One worker: attempt ready deliveries one after the other until the stop."""
        loop = asyncio.get_running_loop()
        while True:
            if not self._ready:
                if self._stopping.is_set():
                    return
                waiter: asyncio.Future[None] = loop.create_future()
                self._idle.append(waiter)
                await waiter
                continue
            delivery = self._ready.popleft()
            self._busy += 1
            try:
                await self._deliver(delivery)
            except Exception:
                log.exception("delivery %s failed unexpectedly; it is attempted again when its "
                              "lease expires", delivery.id)
            finally:
                self._busy -= 1
                self._slot_freed.set()

    async def stop(self, grace: float) -> None:
        """Stop taking work, let in-flight deliveries finish for ``grace`` seconds, then hand
        whatever is still unfinished back to the queue so another deliverer takes it."""
        self._stopping.set()
        self._slot_freed.set()
        await self._stopped.wait()
        unstarted = list(self._ready)
        self._ready.clear()
        await self._release(unstarted)
        self._wake_workers(len(self._idle))  # idle workers see the stop and return
        deadline = time.monotonic() + grace
        if self._workers:
            _, pending = await asyncio.wait(self._workers, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        while self._unconfirmed:  # completions under way are written before the queue closes
            self._confirmed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._confirmed.wait(),
                                       max(0.1, deadline - time.monotonic()))
            if time.monotonic() >= deadline:
                break

    async def _release(self, deliveries: list[Delivery]) -> None:
        if deliveries:
            try:
                await self.queue.release(deliveries)
            except QueueUnavailable as exc:
                log.warning("could not hand back %d deliveries (%s); they return to the queue "
                            "when their lease expires", len(deliveries), exc)

    async def _postpone(self, d: Delivery, due: float, reason: str) -> None:
        self.postponements[(d.endpoint, reason)] += 1
        self.metrics.postponed.labels(self.metrics.gateway, d.endpoint, reason).inc()
        await self.queue.postpone(d, due)

    async def _deliver(self, d: Delivery) -> None:
        snap = self.live.current
        endpoint = snap.config.endpoints.get(d.endpoint)
        now = self.clock()
        admitted = None
        try:
            if endpoint is None:
                log.warning("endpoint %s no longer exists; delivery %s goes to dead letters",
                            d.endpoint, d.id)
                await self.queue.bury(d, None, "EndpointDeleted")
                self.metrics.delivery.of(d.endpoint).count("dead")
                return
            if d.attempt > len(endpoint.retry_schedule):
                await self._exhausted_by_reclaims(d, len(endpoint.retry_schedule))
                return
            if endpoint.paused or d.endpoint in self.paused:
                await self._postpone(d, now + PAUSED_RECHECK * (1 + self.rng.random() / 2),
                                     "paused")
                return
            if endpoint.circuit_breaker is not None:
                circuit = self.circuits.get(d.endpoint, endpoint.circuit_breaker)
                retry_at = circuit.admit()
                if retry_at is not None:
                    await self._check_auto_disable(endpoint, now)
                    await self._postpone(d, retry_at + self.rng.random() * 0.5, "circuit_open")
                    return
                admitted = circuit
                if circuit.trial and not await self.queue.claim_trial(
                        d.endpoint, now + endpoint.timeout + TRIAL_MARGIN):
                    await self._postpone(d, now + min(1.0, endpoint.circuit_breaker.cooldown)
                                         * (1 + self.rng.random()), "circuit_open")
                    return  # another deliverer is trying it (``finally`` cancels ours)
            if self.in_flight[d.endpoint] >= endpoint.max_in_flight:
                since = self._saturated_since.setdefault(d.endpoint, now)
                delay = min(SATURATED_MAX, max(SATURATED_RECHECK, (now - since) / 2))
                await self._postpone(d, now + delay * (1 + self.rng.random()), "saturated")
                return
            if endpoint.rate_limit is not None:
                wait = await self.limiter.acquire(d.endpoint, endpoint.rate_limit, d.id)
                if wait > 0:  # its slot is booked: it comes back then
                    await self._postpone(d, self.clock() + wait, "rate_limited")
                    return
            trial, admitted = admitted, None  # from here _attempt reports to the circuit
            await self._attempt(d, endpoint, snap.keys.get(d.endpoint, ()),
                                snap.auth.get(d.endpoint), trial)
        except asyncio.CancelledError:
            await asyncio.shield(self._release([d]))
            raise
        except QueueUnavailable as exc:
            log.error("could not record the outcome of delivery %s (%s); it will be attempted "
                      "again when its lease expires", d.id, exc)
        finally:
            if admitted is not None:  # let through as a trial, but not attempted after all
                admitted.cancel()

    async def _check_auto_disable(self, endpoint: EndpointConfig, now: float) -> None:
        health = self.health.get(endpoint.key)
        after = endpoint.auto_disable_after
        if health is None or after is None or now - health.failing_since < after:
            return
        since = health.failing_since
        if endpoint.key in self.paused:
            return
        await self.pause(endpoint.key, "AutoDisabled",
                         f"every delivery attempt failed for {now - since:.0f}s "
                         f"(autoDisableAfter {after:g}s)")

    async def _attempt(self, d: Delivery, endpoint: EndpointConfig,
                       keys: tuple[SigningKey, ...], auth: EndpointAuth | None = None,
                       circuit: Circuit | None = None) -> None:
        key = d.endpoint
        series = self.metrics.delivery.of(key)
        self.in_flight[key] += 1
        series.in_flight += 1
        started = self.clock()
        try:
            resp = await self.sender.send(endpoint, keys, d.event.id, d.event.body, auth=auth,
                                          extra_headers=_kept_headers(d.event, endpoint))
        except BaseException:
            if circuit is not None:
                circuit.cancel()
            raise
        finally:
            self.in_flight[key] -= 1
            if not self.in_flight[key]:
                del self.in_flight[key]
            if self.in_flight[key] < endpoint.max_in_flight:
                self._saturated_since.pop(key, None)
            series.in_flight -= 1
        ok = resp.status is not None and 200 <= resp.status < 300
        if resp.refused:
            if circuit is not None:
                circuit.cancel()
        else:
            await self._record_health(endpoint, ok, started, circuit)
        if resp.refused:
            attempt = Attempt(endpoint=key, attempt=d.attempt, at=started,
                              duration=resp.duration, status=None, error=resp.error,
                              outcome="dead")
            log.warning("delivery %s to %s refused: %s; kept as a dead letter "
                        "(AddressRefused)", d.id, key, resp.error)
            await self.queue.bury(d, attempt, "AddressRefused")
            series.count("dead")
            await self._announce_dead(d, "AddressRefused", resp.error)
            return
        series.duration.observe(resp.duration)
        retry_after = parse_retry_after(resp.retry_after, started)
        decision = decide(resp.status, d.attempt, endpoint.retry_schedule, self.rng, retry_after)
        attempt = Attempt(endpoint=key, attempt=d.attempt, at=started, duration=resp.duration,
                          status=resp.status, error=resp.error,
                          outcome="success" if decision.verdict is Verdict.SUCCESS
                          else "retry" if decision.verdict is Verdict.RETRY else "dead")
        # Outcomes are counted once the queue recorded them, so a scrape never shows a
        # success whose end-to-end latency is still missing.
        if decision.verdict is Verdict.SUCCESS:
            # The worker goes on to its next delivery while the completion is written: with
            # hundreds of completions a second, waiting for each write kept a tenth of the
            # workers off the network. Unconfirmed completions are bounded, and awaited on stop.
            recorded = self.queue.complete_soon(d, attempt)
            self._unconfirmed += 1
            recorded.add_done_callback(functools.partial(
                self._recorded, d, series, started + resp.duration - d.event.accepted_at))
            if self._unconfirmed >= UNCONFIRMED_MAX * self.concurrency:
                self._confirmed.clear()
                await self._confirmed.wait()
        elif decision.verdict is Verdict.RETRY:
            log.info("delivery %s to %s failed (attempt %d: %s); retrying in %.1fs",
                     d.id, key, d.attempt, resp.error, decision.delay)
            await self.queue.retry(d, attempt, self.clock() + decision.delay)
            series.count(decision.verdict.value)
        else:
            log.warning("delivery %s to %s failed for good (attempt %d: %s); kept as a dead "
                        "letter (%s)", d.id, key, d.attempt, resp.error, decision.reason)
            await self.queue.bury(d, attempt, decision.reason)
            series.count(decision.verdict.value)
            if decision.verdict is Verdict.GONE:
                await self.pause(key, "Gone", f"the endpoint answered 410 Gone to delivery "
                                 f"{d.id}")
            await self._announce_dead(d, decision.reason, resp.error)
        if not ok:
            await self._check_auto_disable(endpoint, self.clock())

    async def _record_health(self, endpoint: EndpointConfig, ok: bool, started: float,
                             circuit: Circuit | None) -> None:
        """Tell the shared record (and this deliverer's breaker) how an attempt went. Only
        endpoints with a breaker or auto-disable keep a record; a success writes only if a
        failure is on record."""
        key = endpoint.key
        if circuit is None and endpoint.auto_disable_after is None:
            return
        if ok:
            if key in self.health or (circuit is not None and circuit.failures):
                await self.queue.record_success(key)
                self.health.pop(key, None)
            if circuit is not None:
                circuit.success()
            return
        health = self.health[key] = await self.queue.record_failure(
            key, started, reopen=circuit is not None and circuit.trial,
            open_after=endpoint.circuit_breaker.failure_threshold
            if endpoint.circuit_breaker is not None else None)
        if circuit is not None:
            circuit.failure(health.failures, health.opened_at)

    def _recorded(self, d: Delivery, series: EndpointSeries, end_to_end: float,
                  recorded: asyncio.Future[None]) -> None:
        """A successful delivery's completion was written (or could not be)."""
        self._unconfirmed -= 1
        if self._unconfirmed < UNCONFIRMED_MAX * self.concurrency:
            self._confirmed.set()
        error = None if recorded.cancelled() else recorded.exception()
        if error is None:
            series.count(Verdict.SUCCESS.value)
            series.end_to_end.observe(end_to_end)
        else:
            log.error("could not record the success of delivery %s (%s); it will be delivered "
                      "again when its lease expires", d.id, error)

    async def _exhausted_by_reclaims(self, d: Delivery, attempts: int) -> None:
        """A delivery past its schedule without a recorded failure: its leases expired (a
        deliverer died or hung while delivering it, each time counted as an attempt), or the
        schedule was shortened. Kept as a dead letter instead of being handed out again."""
        error = (f"attempt {d.attempt} is past the {attempts} of the retry schedule; attempts "
                 "whose lease expired (a deliverer died or hung while delivering) count")
        log.error("delivery %s to %s: %s; kept as a dead letter (Exhausted)", d.id, d.endpoint,
                  error)
        await self.queue.bury(d, None, "Exhausted")
        self.metrics.delivery.of(d.endpoint).count("dead")
        await self._announce_dead(d, "Exhausted", error)

    async def _announce_dead(self, d: Delivery, reason: str, error: str | None) -> None:
        await self.announce("hookgate.delivery.exhausted", {
            "endpoint": d.endpoint, "deliveryId": d.id, "eventId": d.event.id,
            "eventType": d.event.type, "attempts": d.attempt, "reason": reason,
            "error": error})
