"""Config changes start, restart and stop broker consumers live (on Redis Streams, the
cheapest broker to run), and a source whose broker is unreachable reports why."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.broker_harness import RedisHarness
from tests.support.gateway import Running, StartGateway
from tests.support.manifests import endpoint_yaml, subscription_yaml
from tests.support.ports import loopback_socket, port_of
from tests.support.receiver import Recorder
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]


async def states(gw: Running) -> list[dict[str, Any]]:
    status, doc = await gw.get("/v1/sources")
    assert status == 200
    return list(doc["items"])


async def test_sources_start_and_stop_with_the_config(
        start_gateway: StartGateway, receiver: Recorder, redis_server: RedisServer) -> None:
    redis_server.start()
    broker = RedisHarness(redis_server, "live-orders")
    await broker.setup()
    try:
        base = (endpoint_yaml("sink", receiver.url("/sink"))
                + subscription_yaml("all", "sink", '["*"]'))
        gw = await start_gateway(base)
        assert await states(gw) == []

        gw.files.config_dir.joinpath("manifests.yaml").write_text(base + broker.source_yaml())
        await broker.publish([(b'{"n": 1}', {"event-type": "order.paid"})])
        await receiver.wait_for(lambda r: len(r) == 1, timeout=30)
        assert json.loads(receiver.received[0].body)["data"] == {"n": 1}

        # a changed source is restarted: now the type comes from the payload
        gw.files.config_dir.joinpath("manifests.yaml").write_text(
            base + broker.source_yaml().replace("{header: event-type}", "{field: kind}"))

        async def restarted() -> bool:
            await broker.publish([(b'{"n": 2, "kind": "invoice.paid"}', {})])
            return any(json.loads(r.body)["type"] == "invoice.paid" for r in receiver.received)

        await wait_for(restarted, timeout=30, interval=0.5, what="the changed mapping")

        gw.files.config_dir.joinpath("manifests.yaml").write_text(base)

        async def stopped() -> bool:
            return await states(gw) == []

        await wait_for(stopped, timeout=30, what="the consumer to stop")
        _, text = await gw.get("/metrics")
        assert 'hookgate_source_up{gateway="default/default",source="default/src"}' not in text
    finally:
        await broker.teardown()


async def test_an_unreachable_broker_is_reported_not_ready(
        start_gateway: StartGateway, receiver: Recorder) -> None:
    with loopback_socket() as refusing:  # bound, never listening: connections are refused
        dead = f"redis://127.0.0.1:{port_of(refusing)}/0"
        gw = await start_gateway(
            endpoint_yaml("sink", receiver.url("/sink")) + subscription_yaml("all", "sink", '["*"]')
            + "apiVersion: hookgate.io/v1alpha1\nkind: WebhookSource\nmetadata: {name: src}\n"
              f"spec:\n  broker: {{redis: {{url: '{dead}', stream: s}}}}\n---\n")

        async def reported() -> dict[str, Any] | None:
            (state,) = await states(gw)
            return state if state["conditions"][0]["reason"] == "BrokerUnavailable" else None

        state = await wait_for(reported, timeout=30, what="the source to report the broker")
        assert state["ready"] is False
        condition = state["conditions"][0]
        assert condition["type"] == "SourceReady" and condition["status"] == "False"
        assert "not reachable" in condition["message"]
        _, text = await gw.get("/metrics")
        assert 'hookgate_source_up{gateway="default/default",source="default/src"} 0.0' in text
        # the gateway itself is fine: the HTTP API still takes events
        await gw.send("order.created")
        await receiver.wait_for(lambda r: len(r) == 1)
