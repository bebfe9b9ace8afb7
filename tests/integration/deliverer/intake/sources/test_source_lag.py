"""``hookgate_source_lag`` against the real brokers that report a lag: the backlog a source
finds when it starts, then 0 once it has consumed it.

The messages are published before the gateway runs, so they wait in the broker. The worker
reads the lag after each batch it has enqueued and acknowledged, at most every
``SourceWorker.lag_interval`` (5 s; left as it is: it is what keeps the first reading on
``/metrics`` long enough to be scraped). The first reading comes right after the first batch
(``batch`` messages at most, the consumer's own setting), so it shows the rest of the backlog;
the next one, once everything is consumed, shows 0. Kafka reports lag too but only over the
partitions already assigned, 0 before the group's first rebalance, so its first reading is
not the backlog; SQS and RabbitMQ count messages a consumer has prefetched as not waiting, and
Pub/Sub reports none.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

import pytest

from tests.integration.deliverer.intake.sources.test_brokers import (
    manifests,
    message,
    numbers,
    source_state,
)
from tests.support.broker_harness import Harness
from tests.support.gateway import Running, StartGateway
from tests.support.receiver import Recorder
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(120)

SOURCE = "default/src"


def batch_of(kind: str) -> int:
    """How many messages the broker's consumer takes in one receive at most."""
    return int(import_module(f"hookgate.deliverer.intake.sources.{kind}").CONSUMER.batch)


async def lag_metric(gw: Running) -> float | None:
    return await gw.metric("hookgate_source_lag", source=SOURCE)


@pytest.mark.parametrize("broker", ["redis", "nats"], indirect=True)
async def test_source_lag_shows_the_backlog_then_zero_once_consumed(
        broker: Harness, start_gateway: StartGateway, receiver: Recorder) -> None:
    taken, backlog = batch_of(broker.kind), 40
    total = taken + backlog
    await broker.publish([message(n) for n in range(total)])  # nobody consumes yet

    gw = await start_gateway(manifests(broker, receiver.url("/sink")))

    async def first_reading() -> list[float]:  # a list: a reading of 0 is an answer too
        value = await lag_metric(gw)
        return [] if value is None else [value]

    (first,) = await wait_for(first_reading, timeout=60, what="the first lag reading")
    # what was left in the broker after the first receive: at least the rest of the backlog
    # (a broker may hand out less than a full batch at first, never more)
    assert backlog <= first <= total, (first, backlog, total)
    if broker.kind == "redis":  # XREADGROUP COUNT gives exactly a batch when there are more
        assert first == backlog
    state: dict[str, Any] = await source_state(gw)
    assert state["lag"] == first, state  # GET /v1/sources says the same

    # everything is consumed and delivered; the next reading says so
    await receiver.wait_for(lambda r: numbers(r) == set(range(total)), timeout=60,
                            what=f"all {total} messages delivered")

    async def drained() -> bool:
        return await lag_metric(gw) == 0

    await wait_for(drained, timeout=30, what="hookgate_source_lag to go to 0")
    state = await source_state(gw)
    assert state["lag"] == 0 and state["enqueued"] == total, state
