"""How a source that cannot connect reports it: a warning when the failure is new, not at
every retry; retries back off."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Sequence

import pytest

from hookgate.deliverer.config.live import LiveConfig
from hookgate.deliverer.intake.admission import Admission
from hookgate.deliverer.intake.sources.base import Consumer, Message, SourceUnavailable
from hookgate.deliverer.intake.sources.worker import SourceMetrics, SourceWorker
from hookgate.deliverer.metrics import Metrics
from hookgate.model.bundle import GatewayConfig
from hookgate.model.compiler import Compiled
from hookgate.model.routing import BrokerConfig, RoutingConfig, SourceConfig
from tests.support.waiting import wait_for


class Refusing(Consumer):
    """A broker that refuses every connection with the message it is given."""

    def __init__(self, attempts: list[tuple[float, str]], message: str) -> None:
        self.attempts = attempts
        self.message = message

    async def connect(self) -> None:
        self.attempts.append((time.monotonic(), self.message))
        raise SourceUnavailable(self.message)

    async def receive(self, wait: float) -> Sequence[Message]:
        raise AssertionError("never connected")

    async def ack(self, messages: Sequence[Message]) -> None:
        raise AssertionError("never connected")

    async def close(self) -> None:
        pass


async def test_a_refusal_is_logged_once_however_often_it_is_retried(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="hookgate.source")
    config = SourceConfig(key="shop/src", path="", scheme="broker",
                          broker=BrokerConfig("nats", {}))
    live = LiveConfig(GatewayConfig(Compiled(
        config=RoutingConfig("shop/default", {}, (), sources={"shop/src": config}),
        signing_keys={})))
    metrics = Metrics("shop/default")
    attempts: list[tuple[float, str]] = []
    messages = ["wrong password"] * 4 + ["not reachable"] * 2

    def factory(*_: object) -> Consumer:
        return Refusing(attempts, messages[min(len(attempts), len(messages) - 1)])

    worker = SourceWorker(config, {}, admission=Admission(None, live, metrics),  # type: ignore[arg-type]
                          metrics=SourceMetrics(metrics), factory=factory)
    worker.backoff = (0.05, 5.0)
    task = asyncio.create_task(worker.run())
    try:
        await wait_for(lambda: len(attempts) >= 6, timeout=10, what="six attempts",
                       state=lambda: attempts)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["source shop/src (nats): not ready (BrokerUnavailable): wrong password",
                        "source shop/src (nats): not ready (BrokerUnavailable): not reachable"]
    assert worker.state.message == "not reachable" and not worker.state.ready
    times = [t for t, _ in attempts[:6]]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[4] > gaps[0] * 4, gaps  # 0.05 s doubling, ±20 %: the fifth gap is ~16x
