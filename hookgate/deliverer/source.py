"""Broker sources: events taken from Kafka, SQS, Pub/Sub, RabbitMQ, NATS JetStream or Redis.

Every broker is consumed the same way, by a :class:`SourceWorker` around one broker's
:class:`Consumer`::

    receive a batch ─► message_to_event (pure) ─► route ─► queue.enqueue ─► ack the batch
                          └─ bad message ─► queue.bury_message (dead letter) ──────┘

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

import abc
import asyncio
import contextlib
import importlib
import json
import logging
import random
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from prometheus_client import Counter, Gauge

from hookgate.deliverer.client_sender import RESERVED
from hookgate.deliverer.event import EVENT_TYPE_PATTERN, new_event_id
from hookgate.deliverer.live_config import LiveConfig
from hookgate.deliverer.metrics import Metrics
from hookgate.deliverer.queue import Event, Queue, QueueUnavailable
from hookgate.deliverer.web_ingest import IngestSettings, route_event
from hookgate.model.routing import SourceConfig

__all__ = ["EXTRAS", "BadMessage", "Consumer", "MappedEvent", "Message", "MissingLibrary",
           "SourceMapping", "SourceMetrics", "SourceState", "SourceUnavailable", "SourceWorker",
           "make_consumer", "message_to_event"]

log = logging.getLogger("hookgate.source")

T = TypeVar("T")

#: Broker kind -> (module with its Consumer class, the pip extra that brings its library).
EXTRAS: dict[str, tuple[str, str | None]] = {
    "redis": ("hookgate.deliverer.source_redis", None),
    "nats": ("hookgate.deliverer.source_nats", "nats"),
    "amqp": ("hookgate.deliverer.source_amqp", "amqp"),
    "kafka": ("hookgate.deliverer.source_kafka", "kafka"),
    "sqs": ("hookgate.deliverer.source_sqs", None),
    "pubsub": ("hookgate.deliverer.source_pubsub", "pubsub"),
}


# -- messages and their mapping to events (pure) ---------------------------------------------

@dataclass(frozen=True)
class Message:
    """One message as a broker handed it over."""

    raw: bytes  # the payload, exactly as the producer sent it
    headers: Mapping[str, str]  # headers / attributes / properties, as text
    message_id: str | None  # the broker's id: stable across redeliveries of this message
    handle: Any = None  # what the consumer needs to acknowledge it


class BadMessage(ValueError):
    """A message that cannot become an event; ``reason`` is one CamelCase word."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class SourceMapping:
    """How a source's messages become events (from its ``SourceConfig``)."""

    source: str  # the source key, the events' source
    event_type_header: str | None = None
    event_type_field: str | None = "type"
    event_type_prefix: str = ""
    keep_headers: tuple[str, ...] = ()
    idempotency_header: str | None = None
    idempotency_field: str | None = None
    max_bytes: int = 256 * 1024

    @classmethod
    def of(cls, config: SourceConfig, max_bytes: int) -> SourceMapping:
        return cls(source=config.key, event_type_header=config.event_type_header,
                   event_type_field=config.event_type_field,
                   event_type_prefix=config.event_type_prefix,
                   keep_headers=config.keep_headers,
                   idempotency_header=config.idempotency_header,
                   idempotency_field=config.idempotency_field, max_bytes=max_bytes)


@dataclass(frozen=True)
class MappedEvent:
    event: Event
    data: Any  # the parsed payload, for routing filters
    headers: tuple[tuple[str, str], ...]  # the kept headers (also event.headers)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    lower = name.lower()
    return next((v for k, v in headers.items() if k.lower() == lower), None)


def _field(data: Any, path: str) -> Any:
    for part in path.split("."):
        data = data.get(part) if isinstance(data, dict) else None
    return data


def message_to_event(mapping: SourceMapping, raw: bytes, headers: Mapping[str, str],
                     message_id: str | None, now: float) -> MappedEvent:
    """The event a broker message becomes, or :class:`BadMessage` saying why it cannot.

    The delivery body embeds the producer's bytes verbatim as ``data``, so what a receiver
    gets (and what the signature covers) is exactly what was published.
    """
    if len(raw) > mapping.max_bytes:
        raise BadMessage("TooLarge", f"the message is {len(raw)} bytes, over the limit of "
                         f"{mapping.max_bytes} (the gateway's ingest.maxBodyBytes)")
    try:
        text = raw.decode("utf-8")
        data = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadMessage("NotJSON", f"the payload is not UTF-8 JSON: {exc}") from None
    if mapping.event_type_header is not None:
        value: Any = _header(headers, mapping.event_type_header)
        where = f"the {mapping.event_type_header} header"
    else:
        path = mapping.event_type_field or "type"
        value = _field(data, path)
        where = f"the payload field {path}"
    if not isinstance(value, str) or not value:
        raise BadMessage("NoEventType", f"no event type: {where} is missing or not a string")
    event_type = mapping.event_type_prefix + value
    if not EVENT_TYPE_PATTERN.match(event_type):
        raise BadMessage("InvalidEventType",
                         f"event type {event_type[:300]!r} from {where} is not valid: it may "
                         "hold letters, digits and . _ : - / (at most 255)")
    key: Any = message_id
    if mapping.idempotency_header is not None:
        key = _header(headers, mapping.idempotency_header)
    elif mapping.idempotency_field is not None:
        key = _field(data, mapping.idempotency_field)
        key = str(key) if isinstance(key, int | str) and not isinstance(key, bool) else None
    timestamp = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")
    prefix = json.dumps({"type": event_type, "timestamp": timestamp.replace("+00:00", "Z")},
                        separators=(",", ":"), ensure_ascii=False)
    body = prefix[:-1].encode() + b',"data":' + raw + b"}"
    kept = tuple((name, value) for name in mapping.keep_headers
                 if name.lower() not in RESERVED
                 and (value := _header(headers, name)) is not None)
    return MappedEvent(
        event=Event(id=new_event_id(now), type=event_type, body=body, accepted_at=now,
                    source=mapping.source,
                    idempotency_key=f"src:{mapping.source}:{key}" if key else None,
                    headers=kept),
        data=data, headers=kept)


# -- the consumer of one broker ----------------------------------------------------------------

class SourceUnavailable(Exception):
    """The broker cannot be consumed now; the message says what failed and what to do."""

    reason = "BrokerUnavailable"


class MissingLibrary(SourceUnavailable):
    reason = "LibraryMissing"


class Consumer(abc.ABC):
    """One broker's side: connect, receive batches, acknowledge them, close."""

    ack_timeout = 30.0  # seconds an acknowledgement may take before the broker counts as lost

    def __init__(self, config: SourceConfig, secrets: Mapping[str, str]) -> None:
        assert config.broker is not None
        self.config = config
        self.settings: Mapping[str, Any] = config.broker.settings
        self.secrets = secrets

    @abc.abstractmethod
    async def connect(self) -> None:
        """Connect and make sure the stream/queue/subscription can be read."""

    @abc.abstractmethod
    async def receive(self, wait: float) -> Sequence[Message]:
        """The next messages, waiting up to ``wait`` seconds for the first one."""

    @abc.abstractmethod
    async def ack(self, messages: Sequence[Message]) -> None:
        """Acknowledge handled messages: the broker forgets them (or commits past them)."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def lag(self) -> int | None:
        """Messages waiting for this source, where the broker tells it cheaply."""
        return None


def make_consumer(config: SourceConfig, secrets: Mapping[str, str]) -> Consumer:
    """The consumer for the source's broker; :class:`MissingLibrary` when its client
    library is not installed."""
    assert config.broker is not None
    kind = config.broker.kind
    module_name, extra = EXTRAS[kind]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise MissingLibrary(
            f"the {kind} client library is not installed ({exc.name or exc}): "
            f"pip install 'hookgate[{extra or kind}]'") from None
    consumer: Consumer = module.CONSUMER(config, secrets)
    return consumer


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
        self.metrics = metrics
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

    def __init__(self, config: SourceConfig, secrets: Mapping[str, str], *, queue: Queue,
                 live: LiveConfig, metrics: SourceMetrics, settings: IngestSettings,
                 clock: Callable[[], float] = time.time,
                 factory: Callable[[SourceConfig, Mapping[str, str]], Consumer] = make_consumer
                 ) -> None:
        assert config.broker is not None
        self.config = config
        self.secrets = secrets
        self.queue = queue
        self.live = live
        self.metrics = metrics
        self.settings = settings
        self.clock = clock
        self.factory = factory
        self.state = SourceState(config.key, config.broker.kind, since=clock())
        self._lag_at = 0.0

    def _set(self, ready: bool, reason: str, message: str) -> None:
        if not ready:
            log.debug("source %s: %s: %s", self.config.key, reason, message)
        if self.state.set(ready, reason, message, self.clock()):
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
                        await self._handle(messages)
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

    async def _handle(self, messages: Sequence[Message]) -> None:
        for message in messages:
            await self._handle_one(message)

    async def _handle_one(self, message: Message) -> None:
        """Enqueue the message's event, or keep the message as a dead letter; retry while
        the queue is away (the message stays unacknowledged meanwhile)."""
        gw, key = self.metrics.gateway, self.config.key
        delay = self.backoff[0]
        while True:
            now = self.clock()
            mapping = SourceMapping.of(self.config, self.settings.max_body_bytes)
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
                event = mapped.event
                route = route_event(self.live, self.metrics.metrics, event, mapped.data)
                _, created = await self.queue.enqueue(
                    event, route.endpoints, idempotency_ttl=self.settings.idempotency_ttl,
                    ordering_keys=route.ordering_keys)
            except QueueUnavailable as exc:
                self._set(False, "QueueUnavailable",
                          f"{exc}; messages stay unacknowledged in the broker until it is back")
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, self.backoff[1])
                continue
            if not self.state.ready:
                self._set(True, "Consuming", "connected; consuming")
            if created:
                self.state.enqueued += 1
                self.metrics.messages.labels(gw, key, "enqueued").inc()
                self.metrics.metrics.events_ingested.labels(gw, key).inc()
            else:
                self.state.duplicates += 1
                self.metrics.messages.labels(gw, key, "duplicate").inc()
            return
