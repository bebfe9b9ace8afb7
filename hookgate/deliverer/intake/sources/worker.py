"""Broker sources: events taken from Kafka, SQS, Pub/Sub, RabbitMQ, NATS JetStream or Redis.

Every broker is consumed the same way, by a :class:`SourceWorker` around one broker's
:class:`Consumer`::

    receive a batch ─► message_to_event (pure) ─► admission.admit ─► ack the batch
                          └─ bad message ─► queue.bury_message (dead letter) ──┘

A message is acknowledged (committed, deleted) only after its event is durably enqueued, so a
process killed at any instant loses nothing: the broker hands unacknowledged messages out
again, and the idempotency key (the broker's message id unless configured) makes the second
copy a duplicate instead of a second event. A bad message (not JSON, no event type, too big)
is kept as a dead letter of the source and acknowledged, so it never blocks what follows.

A broker that is down, unreachable or misconfigured (or whose client library is missing) sets
the source's state to not ready with the reason; the worker reconnects with capped, jittered
exponential backoff, never crashing the gateway and never spinning.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from prometheus_client import Counter, Gauge

from hookgate.deliverer.intake.admission import Admission
from hookgate.deliverer.intake.sources.base import (
    Consumer,
    Message,
    SourceUnavailable,
    make_consumer,
)
from hookgate.deliverer.intake.sources.mapping import BadMessage, SourceMapping, message_to_event
from hookgate.deliverer.metrics import Metrics
from hookgate.deliverer.queues.base import QueueUnavailable
from hookgate.model.routing import SourceConfig

__all__ = ["SourceMetrics", "SourceState", "SourceWorker", "bounded"]

log = logging.getLogger("hookgate.source")

T = TypeVar("T")


# -- state and metrics ---------------------------------------------------------------------------

@dataclass
class SourceState:
    """What a source is doing in this process, for ``GET /v1/sources`` and the operator's
    ``SourceReady`` condition."""

    source: str
    broker: str
    ready: bool = False
    reason: str = "Connecting"
    message: str = "connecting to the broker"
    since: float = field(default_factory=time.time)
    enqueued: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    lag: int | None = None

    def set(self, ready: bool, reason: str, message: str, now: float) -> bool:
        """Change the state; True when readiness changed."""
        changed = ready != self.ready
        if changed or reason != self.reason:
            self.since = now
        self.ready, self.reason, self.message = ready, reason, message
        return changed

    def to_json(self) -> dict[str, Any]:
        transition = datetime.fromtimestamp(self.since, UTC).isoformat(timespec="seconds")
        return {
            "source": self.source, "broker": self.broker, "ready": self.ready,
            "conditions": [{"type": "SourceReady", "status": "True" if self.ready else "False",
                            "reason": self.reason, "message": self.message,
                            "lastTransitionTime": transition.replace("+00:00", "Z")}],
            "enqueued": self.enqueued, "duplicates": self.duplicates,
            "deadLetters": self.dead_letters, "lag": self.lag,
        }


class SourceMetrics:
    """The broker sources' metrics, in the gateway's registry."""

    def __init__(self, metrics: Metrics) -> None:
        r = metrics.registry
        self.gateway = metrics.gateway
        self.up = Gauge("hookgate_source_up",
                        "1 while a broker source is connected and consuming in this process, "
                        "else 0.", ["gateway", "source"], registry=r)
        self.lag = Gauge("hookgate_source_lag",
                         "Messages of a broker source not consumed yet (Kafka consumer group "
                         "lag, Redis stream group lag, NATS pending), where the broker tells it.",
                         ["gateway", "source"], registry=r)
        self.messages = Counter(
            "hookgate_source_messages",
            "Broker messages handled, by outcome (enqueued, duplicate, dead_letter).",
            ["gateway", "source", "outcome"], registry=r)
        self.dead_letters = Counter(
            "hookgate_source_dead_letters",
            "Broker messages kept as dead letters, by reason (NotJSON, NoEventType, TooLarge, "
            "InvalidEventType).", ["gateway", "source", "reason"], registry=r)

    def forget(self, source: str) -> None:
        for gauge in (self.up, self.lag):
            with contextlib.suppress(KeyError):
                gauge.remove(self.gateway, source)


# -- the worker: consume, enqueue, acknowledge, reconnect -----------------------------------------

def _cancelling() -> bool:
    """Whether the running task itself is being cancelled (not a library's inner task)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def bounded(work: Coroutine[Any, Any, T], seconds: float, what: str) -> T:
    """``work``'s result within ``seconds``, else :class:`SourceUnavailable`.

    Unlike ``asyncio.wait_for`` it never waits for a timed-out call to finish cancelling:
    a broker library that swallows cancellation (or lets its inner tasks' cancellation
    escape) cannot hang the worker or stop it.
    """
    task = asyncio.ensure_future(work)
    task.add_done_callback(_consume_result)  # an abandoned call's error is not "unretrieved"
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        task.cancel()
        raise SourceUnavailable(f"{what} took longer than {seconds:g}s")
    try:
        return task.result()
    except asyncio.CancelledError:
        raise SourceUnavailable(f"{what} was interrupted") from None


def _consume_result(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not log it as never retrieved


async def _close(consumer: Consumer) -> None:
    """Close a consumer, bounded; its errors are dropped: the connection is being given up
    anyway."""
    try:
        await bounded(consumer.close(), 5, "closing the consumer")
    except Exception as exc:
        log.debug("closing a %s consumer: %s", type(consumer).__name__, exc)


class SourceWorker:
    """Consumes one broker source until cancelled."""

    #: seconds between reconnection attempts: doubling from the first to the second value
    backoff: tuple[float, float] = (0.5, 30.0)
    receive_wait = 1.0  # seconds one receive waits for messages
    lag_interval = 5.0  # seconds between lag readings

    def __init__(self, config: SourceConfig, secrets: Mapping[str, str], *,
                 admission: Admission, metrics: SourceMetrics,
                 clock: Callable[[], float] = time.time,
                 factory: Callable[[SourceConfig, Mapping[str, str]], Consumer] = make_consumer
                 ) -> None:
        assert config.broker is not None
        self.config = config
        self.secrets = secrets
        self.admission = admission
        self.queue = admission.queue
        self.metrics = metrics
        self.clock = clock
        self.factory = factory
        self.state = SourceState(config.key, config.broker.kind, since=clock())
        self._lag_at = 0.0

    def _set(self, ready: bool, reason: str, message: str) -> None:
        """Change the state; logged when readiness changes, and a failure when it is not the
        same as the last one: a source that never connects says why once, not at every
        retry."""
        if not ready:
            log.debug("source %s: %s: %s", self.config.key, reason, message)
        same = (self.state.reason, self.state.message) == (reason, message)
        if self.state.set(ready, reason, message, self.clock()) or not (ready or same):
            level = logging.INFO if ready else logging.WARNING
            log.log(level, "source %s (%s): %s", self.config.key, self.state.broker,
                    "consuming" if ready else f"not ready ({reason}): {message}")
        self.metrics.up.labels(self.metrics.gateway, self.config.key).set(1 if ready else 0)

    async def run(self) -> None:
        delay = self.backoff[0]
        self.metrics.up.labels(self.metrics.gateway, self.config.key).set(0)
        while True:
            consumer: Consumer | None = None
            try:
                consumer = self.factory(self.config, self.secrets)
                await bounded(consumer.connect(), 30, "connecting to the broker")
                self._set(True, "Consuming", "connected; consuming")
                while True:
                    messages = await bounded(consumer.receive(self.receive_wait),
                                             self.receive_wait + 30, "receiving messages")
                    if messages:
                        await self._handle(messages, consumer)
                        await bounded(consumer.ack(messages), consumer.ack_timeout,
                                      "acknowledging messages")
                    delay = self.backoff[0]
                    await self._read_lag(consumer)
            except asyncio.CancelledError:
                if _cancelling():
                    raise
                # a broker library let its own tasks' cancellation escape: not ours
                self._set(False, "BrokerUnavailable",
                          "the broker client was interrupted; reconnecting with backoff")
            except SourceUnavailable as exc:
                self._set(False, exc.reason, str(exc))
            except Exception as exc:  # a broker library's error: reconnect, never crash
                self._set(False, "BrokerUnavailable",
                          f"{type(exc).__name__}: {exc}".rstrip(": ")
                          + "; reconnecting with backoff")
            finally:
                if consumer is not None:
                    await _close(consumer)
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, self.backoff[1])

    async def _read_lag(self, consumer: Consumer) -> None:
        now = time.monotonic()
        if now - self._lag_at < self.lag_interval:
            return
        self._lag_at = now
        try:
            lag = await bounded(consumer.lag(), 5, "reading the lag")
        except Exception as exc:  # lag is a nicety; consuming goes on
            log.debug("source %s: lag not available: %s", self.config.key, exc)
            return
        self.state.lag = lag
        if lag is not None:
            self.metrics.lag.labels(self.metrics.gateway, self.config.key).set(lag)

    async def _handle(self, messages: Sequence[Message], consumer: Consumer) -> None:
        for message in messages:
            await self._handle_one(message, consumer)

    async def _handle_one(self, message: Message, consumer: Consumer) -> None:
        """Enqueue the message's event, or keep the message as a dead letter; retry while
        the queue is away (the message stays unacknowledged meanwhile, and the lag is still
        read: the backlog in the broker is what an alert wants to see then)."""
        gw, key = self.metrics.gateway, self.config.key
        delay = self.backoff[0]
        while True:
            now = self.clock()
            snap = self.admission.live.current
            mapping = SourceMapping.of(self.config, snap.max_body_bytes)
            try:
                try:
                    mapped = message_to_event(mapping, message.raw, message.headers,
                                              message.message_id, now)
                except BadMessage as bad:
                    headers = dict(message.headers)
                    if message.message_id is not None:
                        headers.setdefault("hookgate-message-id", message.message_id)
                    letter = await self.queue.bury_message(key, bad.reason, message.raw,
                                                           headers, str(bad))
                    self.state.dead_letters += 1
                    self.metrics.messages.labels(gw, key, "dead_letter").inc()
                    self.metrics.dead_letters.labels(gw, key, bad.reason).inc()
                    log.warning("source %s: message %s kept as dead letter %s: %s", key,
                                message.message_id, letter, bad)
                    return
                admitted = await self.admission.admit(mapped.event, mapped.data, snap)
            except QueueUnavailable as exc:
                self._set(False, "QueueUnavailable",
                          f"{exc}; messages stay unacknowledged in the broker until it is back")
                await self._read_lag(consumer)
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, self.backoff[1])
                continue
            if not self.state.ready:
                self._set(True, "Consuming", "connected; consuming")
            if admitted.created:
                self.state.enqueued += 1
                self.metrics.messages.labels(gw, key, "enqueued").inc()
            else:
                self.state.duplicates += 1
                self.metrics.messages.labels(gw, key, "duplicate").inc()
            return
