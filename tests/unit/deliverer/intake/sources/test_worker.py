"""The source worker's at-least-once order against fakes: enqueue, then ack; bad messages
become dead letters."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from hookgate.deliverer.config.live import LiveConfig
from hookgate.deliverer.intake.admission import Admission
from hookgate.deliverer.intake.sources.base import (
    Consumer,
    Message,
    SourceUnavailable,
)
from hookgate.deliverer.intake.sources.worker import SourceMetrics, SourceWorker
from hookgate.deliverer.metrics import Metrics
from hookgate.deliverer.queues.base import Event
from hookgate.model.bundle import GatewayConfig
from hookgate.model.compiler import Compiled
from hookgate.model.routing import (
    BrokerConfig,
    EndpointConfig,
    RoutingConfig,
    SourceConfig,
    SubscriptionConfig,
)
from tests.support.waiting import wait_for


class FakeQueue:
    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.events: list[Event] = []
        self.buried: list[tuple[str, str, bytes]] = []

    async def enqueue(self, event: Event, endpoints: Sequence[str], **_: Any
                      ) -> tuple[str, bool]:
        self.log.append(f"enqueue {json.loads(event.body)['data']['n']}")
        self.events.append(event)
        return event.id, True

    async def bury_message(self, source: str, reason: str, raw: bytes,
                           headers: Mapping[str, str], error: str | None = None) -> str:
        self.log.append(f"bury {reason}")
        self.buried.append((source, reason, raw))
        return "msg_1/" + source


class FakeConsumer(Consumer):
    def __init__(self, log: list[str], batches: list[list[Message]], fail_connect: int = 0
                 ) -> None:
        self.log = log
        self.batches = batches
        self.fail_connect = fail_connect

    async def connect(self) -> None:
        if self.fail_connect:
            self.fail_connect -= 1
            raise SourceUnavailable("broker down")
        self.log.append("connect")

    async def receive(self, wait: float) -> Sequence[Message]:
        if self.batches:
            return self.batches.pop(0)
        await asyncio.sleep(wait)
        return []

    async def ack(self, messages: Sequence[Message]) -> None:
        self.log.append(f"ack {len(messages)}")

    async def close(self) -> None:
        self.log.append("close")


def msg(n: int) -> Message:
    return Message(raw=b'{"n": %d}' % n, headers={"event-type": "order.paid"},
                   message_id=str(n))


def source_setup() -> tuple[SourceConfig, LiveConfig, Metrics]:
    """A broker source routed to one endpoint, its live config and metrics."""
    config = SourceConfig(key="shop/src", path="", scheme="broker",
                          event_type_header="event-type", event_type_field=None,
                          broker=BrokerConfig("redis", {}))
    routing = RoutingConfig(
        "shop/default", {"shop/a": EndpointConfig("shop/a", "http://x/", 5, (0,))},
        (SubscriptionConfig("shop/all", "shop/a", ("*",)),), sources={"shop/src": config})
    return config, LiveConfig(GatewayConfig(Compiled(config=routing, signing_keys={}))), \
        Metrics("shop/default")


async def test_worker_acks_a_batch_only_after_enqueueing_it_and_buries_bad_ones() -> None:
    log: list[str] = []
    config, live, metrics = source_setup()
    queue = FakeQueue(log)
    bad = Message(raw=b"nope", headers={}, message_id="x")
    consumers = [FakeConsumer(log, [], fail_connect=1),
                 FakeConsumer(log, [[msg(1), bad, msg(2)], [msg(3)]])]
    admission = Admission(queue, live, metrics)  # type: ignore[arg-type]
    worker = SourceWorker(config, {}, admission=admission, metrics=SourceMetrics(metrics),
                          factory=lambda c, s: consumers.pop(0))
    worker.backoff = (0.01, 0.05)
    worker.receive_wait = 0.01
    task = asyncio.create_task(worker.run())
    try:
        await wait_for(lambda: "ack 1" in log, timeout=5, what="the second batch acked",
                       state=lambda: log)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    # the first consumer could not connect: closed, and the next one tried after a backoff
    assert log[:7] == ["close", "connect", "enqueue 1", "bury NotJSON", "enqueue 2", "ack 3",
                       "enqueue 3"]
    assert log[7] == "ack 1"
    assert queue.buried == [("shop/src", "NotJSON", b"nope")]
    assert worker.state.ready and worker.state.enqueued == 3 and worker.state.dead_letters == 1
    assert log[-1] == "close"


async def test_the_lag_is_still_read_while_the_queue_refuses_the_messages() -> None:
    """While Hookgate's queue is away the worker retries one message; the broker's backlog
    grows meanwhile, and the gauge must follow it (it is what an alert watches then)."""
    from hookgate.deliverer.queues.base import QueueUnavailable

    class DownQueue(FakeQueue):
        async def enqueue(self, event: Event, endpoints: Sequence[str], **_: Any
                          ) -> tuple[str, bool]:
            raise QueueUnavailable("Redis at redis://q is unreachable")

    class Backlogged(FakeConsumer):
        backlog = 0

        async def lag(self) -> int | None:
            self.backlog += 10  # more is published while the queue is away
            return self.backlog

    log: list[str] = []
    config, live, metrics = source_setup()
    consumer = Backlogged(log, [[msg(1)]])
    admission = Admission(DownQueue(log), live, metrics)  # type: ignore[arg-type]
    worker = SourceWorker(config, {}, admission=admission, metrics=SourceMetrics(metrics),
                          factory=lambda c, s: consumer)
    worker.backoff = (0.01, 0.02)
    worker.lag_interval = 0.0
    task = asyncio.create_task(worker.run())
    try:
        await wait_for(lambda: (worker.state.lag or 0) >= 30, timeout=5,
                       what="lag readings while the queue is down",
                       state=lambda: (worker.state.lag, worker.state.reason))
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert worker.state.reason == "QueueUnavailable" and "ack 1" not in log
    assert metrics.registry.get_sample_value(
        "hookgate_source_lag", {"gateway": "shop/default", "source": "shop/src"}) >= 30
