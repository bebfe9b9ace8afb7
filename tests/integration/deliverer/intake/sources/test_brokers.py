"""Broker sources end to end, against each real broker: messages become signed deliveries,
bad ones become dead letters, a broker restart is survived, messages wait in the broker while
Hookgate's queue is down, and a gateway killed with SIGKILL mid-consume loses nothing and
turns no message into two events."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from standardwebhooks.webhooks import Webhook

from tests.integration.deliverer.intake.sources.conftest import BROKERS
from tests.support.broker_harness import Harness
from tests.support.gateway import Running, StartGateway
from tests.support.manifests import SECRET, endpoint_yaml, subscription_yaml
from tests.support.process import GatewayProcess, sources_ready
from tests.support.receiver import Recorder
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(240)


def message(n: int, etype: str = "order.created") -> tuple[bytes, dict[str, str]]:
    # not how json.dumps would write it: the bytes must arrive exactly as published
    raw = b'{ "n": %d,  "note": "\xc3\xbcn\xc3\xaf" }' % n
    return raw, {"event-type": etype, "trace-id": f"t-{n}"}


def numbers(received: list[Any]) -> set[int]:
    out = set()
    for r in received:
        if r.status < 300:
            out.add(json.loads(r.body)["data"]["n"])
    return out


def manifests(broker: Harness, url: str) -> str:
    return (endpoint_yaml("sink", url) + subscription_yaml("orders", "sink", '["order.*"]')
            + broker.source_yaml())


async def source_state(gw: Running) -> dict[str, Any]:
    status, doc = await gw.get("/v1/sources")
    assert status == 200, doc
    (state,) = doc["items"]
    return dict(state)


async def test_messages_become_signed_deliveries_and_bad_ones_dead_letters(
        broker: Harness, start_gateway: StartGateway, receiver: Recorder) -> None:
    gw = await start_gateway(manifests(broker, receiver.url("/sink")))
    good = [message(n) for n in range(20)]
    poison = [(b"not json {", {"event-type": "order.created"}),  # not JSON
              (b'{"n": -1}', {"trace-id": "x"})]  # no event type
    await broker.publish(good[:10] + poison + good[10:])
    await receiver.wait_for(lambda r: numbers(r) == set(range(20)), timeout=60,
                            what="20 deliveries")
    by_n = {json.loads(r.body)["data"]["n"]: r for r in receiver.received}
    for n, (raw, _) in enumerate(good):
        got = by_n[n]
        payload = Webhook(SECRET).verify(got.body, got.headers)
        assert payload["type"] == "order.created"
        assert got.body.endswith(b',"data":' + raw + b"}"), got.body  # the producer's bytes
        assert got.headers["trace-id"] == f"t-{n}"  # keepHeaders: carried to the delivery

    async def letters() -> list[dict[str, Any]]:
        status, doc = await gw.get("/v1/dead-letters?endpoint=src")
        assert status == 200
        return list(doc["items"]) if len(doc["items"]) >= 2 else []

    kept = await wait_for(letters, timeout=30, what="two dead letters of the source")
    assert sorted(x["reason"] for x in kept) == ["NoEventType", "NotJSON"]
    assert {x["endpoint"] for x in kept} == {"default/src"}
    not_json = next(x for x in kept if x["reason"] == "NotJSON")
    status, record = await gw.get(f"/v1/events/{not_json['event_id']}")
    assert status == 200 and record["payload"] == "not json {"

    state = await source_state(gw)
    assert state["ready"] is True and state["broker"] == broker.kind
    assert state["conditions"][0]["type"] == "SourceReady"
    assert state["enqueued"] >= 20 and state["deadLetters"] == 2
    _, text = await gw.get("/metrics")
    assert 'hookgate_source_up{gateway="default/default",source="default/src"} 1.0' in text
    assert ('hookgate_source_dead_letters_total{gateway="default/default",reason="NotJSON",'
            'source="default/src"} 1.0') in text


async def test_consumption_resumes_after_a_broker_restart(
        broker: Harness, start_gateway: StartGateway, receiver: Recorder) -> None:
    gw = await start_gateway(manifests(broker, receiver.url("/sink")))
    await broker.publish([message(n) for n in range(5)])
    await receiver.wait_for(lambda r: numbers(r) >= set(range(5)), timeout=60)

    await asyncio.to_thread(broker.stop_server)

    async def down() -> bool:
        return not (await source_state(gw))["ready"]

    await wait_for(down, timeout=60, what="the source to report the broker down")
    _, text = await gw.get("/metrics")
    assert 'hookgate_source_up{gateway="default/default",source="default/src"} 0.0' in text

    await asyncio.to_thread(broker.start_server)
    await broker.publish([message(n) for n in range(5, 10)])
    await receiver.wait_for(lambda r: numbers(r) >= set(range(10)), timeout=90,
                            what="deliveries after the broker came back")
    assert (await source_state(gw))["ready"] is True


def consuming_gateway(config: Path, tmp_path: Path) -> GatewayProcess:
    """``hookgate run`` on its embedded queue, ready once it consumes its source."""
    return GatewayProcess(config, tmp_path / "data", tmp_path / "gateway.log",
                          "--visibility-timeout", "5", ready=sources_ready, ready_timeout=60,
                          what="the gateway to consume its source")


@pytest.mark.slow
async def test_sigkill_mid_consume_loses_no_message(
        broker: Harness, receiver: Recorder, http: aiohttp.ClientSession,
        tmp_path: Path) -> None:
    total = 300
    config = tmp_path / "config"
    config.mkdir()
    (config / "m.yaml").write_text(manifests(broker, receiver.url("/sink")))
    started: list[GatewayProcess] = []
    try:
        first = consuming_gateway(config, tmp_path)
        started.append(first)
        await first.start(http)

        async def publish() -> None:
            for start in range(0, total, 10):
                await broker.publish([message(n) for n in range(start, start + 10)])
                await asyncio.sleep(0.05)

        publisher = asyncio.create_task(publish())
        await receiver.wait_for(lambda r: len(numbers(r)) >= 60, timeout=60)
        first.kill()  # mid-consume: no chance to acknowledge or hand anything back
        await asyncio.wait_for(publisher, 60)
        assert len(numbers(receiver.received)) < total, "all delivered before the kill"

        second = consuming_gateway(config, tmp_path)
        started.append(second)
        await second.start(http)
        await receiver.wait_for(lambda r: numbers(r) == set(range(total)), timeout=120,
                                what=f"all {total} messages after the restart")
    finally:
        for gp in started:
            gp.kill()
    # At least once: a delivery under way at the kill may arrive twice, but a message the
    # broker handed out again must not become a second event (its idempotency key).
    ids_by_n = event_ids(receiver.received)
    assert all(len(ids) == 1 for ids in ids_by_n.values()), \
        {n: ids for n, ids in ids_by_n.items() if len(ids) > 1}
    duplicates = sum(1 for r in receiver.received if r.status < 300) - total
    print(f"\n{broker.kind}: {total} messages, {duplicates} duplicate deliveries after SIGKILL")


def event_ids(received: list[Any]) -> dict[int, set[str]]:
    """The event ids (webhook-id) each message number arrived with."""
    out: dict[int, set[str]] = {}
    for r in received:
        if r.status < 300:
            out.setdefault(json.loads(r.body)["data"]["n"], set()).add(r.webhook_id)
    return out


@pytest.mark.redis
@pytest.mark.parametrize("queue_url", ["redis"], indirect=True)
# the Redis broker of these tests is the queue's server itself: stopping one stops both
@pytest.mark.parametrize("broker", [b for b in BROKERS if b != "redis"], indirect=True)
async def test_messages_stay_in_the_broker_while_the_queue_is_down(
        broker: Harness, start_gateway: StartGateway, receiver: Recorder,
        redis_server: RedisServer) -> None:
    gw = await start_gateway(manifests(broker, receiver.url("/sink")))
    await broker.publish([message(n) for n in range(3)])
    await receiver.wait_for(lambda r: numbers(r) >= set(range(3)), timeout=60)

    redis_server.stop()  # Hookgate's own queue, not the broker
    await broker.publish([message(n) for n in range(3, 13)])

    async def waiting() -> bool:
        state = await source_state(gw)
        return not state["ready"] and state["conditions"][0]["reason"] == "QueueUnavailable"

    await wait_for(waiting, timeout=60, what="the source to report the queue unavailable")
    assert "stay unacknowledged" in (await source_state(gw))["conditions"][0]["message"]
    assert numbers(receiver.received) == set(range(3))

    redis_server.start()
    await receiver.wait_for(lambda r: numbers(r) == set(range(13)), timeout=90,
                            what="the messages kept in the broker, after the queue is back")
    assert all(len(ids) == 1 for ids in event_ids(receiver.received).values())
    assert (await source_state(gw))["ready"] is True


@pytest.mark.redis
async def test_two_deliverers_share_a_source_the_brokers_way(
        broker: Harness, receiver: Recorder, redis_url: str, tmp_path: Path) -> None:
    """Two gateway processes on one Redis queue, as in a cluster, consume the same source:
    every message is delivered and both take a share."""
    from hookgate.deliverer.config.files import FileConfig
    from hookgate.deliverer.delivery.network_guard import LOOPBACK_CIDRS
    from hookgate.deliverer.gateway import Gateway, GatewaySettings
    from hookgate.deliverer.queues.factory import open_queue

    config = tmp_path / "config"
    config.mkdir()
    (config / "m.yaml").write_text(manifests(broker, receiver.url("/sink")))
    gateways: list[Gateway] = []
    try:
        for i in range(2):
            loaded = FileConfig(config, tmp_path / f"data{i}", announce=lambda _: None).load()
            gateway = Gateway.create(
                open_queue(redis_url, gateway=loaded.compiled.config.gateway),
                loaded, GatewaySettings(port=0, grace=2, extra_allow_cidrs=LOOPBACK_CIDRS))
            await gateway.start()
            gateways.append(gateway)

        async def both_ready() -> bool:
            return all(g.sources.states() and g.sources.states()[0]["ready"] for g in gateways)

        await wait_for(both_ready, timeout=60, what="both deliverers to consume")
        total = 100
        for start in range(0, total, 5):  # spread over seconds: Kafka rebalances meanwhile
            await broker.publish([message(n) for n in range(start, start + 5)])
            await asyncio.sleep(0.3)
        await receiver.wait_for(lambda r: numbers(r) == set(range(total)), timeout=90,
                                what=f"all {total} messages")
        shares = [g.sources.states()[0]["enqueued"] for g in gateways]
        assert sum(shares) >= total and all(shares), shares
    finally:
        for gateway in gateways:
            await gateway.stop()


@pytest.mark.parametrize("broker", ["kafka"], indirect=True)
async def test_kafka_with_sasl_credentials_from_a_secret(
        broker: Harness, start_gateway: StartGateway, receiver: Recorder) -> None:
    from tests.support.brokers import SASL_PASSWORD

    server = broker.server
    sasl = (f"{{kafka: {{bootstrapServers: ['127.0.0.1:{server.sasl_port}'], "
            f"topics: [{broker.name}], group: g-{broker.name}, "
            "sasl: {mechanism: PLAIN, secretRef: {name: kafka-user}}}}")

    def secret(password: str) -> str:
        return ("apiVersion: v1\nkind: Secret\nmetadata: {name: kafka-user}\n"
                f"stringData: {{username: hookgate, password: '{password}'}}\n---\n")

    base = endpoint_yaml("sink", receiver.url("/sink")) + subscription_yaml(
        "orders", "sink", '["order.*"]')
    source = broker.source_yaml().replace(broker.broker_yaml(), sasl)
    gw = await start_gateway(base + source + secret("wrong"))

    async def refused() -> dict[str, Any] | None:
        state = await source_state(gw)
        return state if state["conditions"][0]["reason"] == "BrokerUnavailable" else None

    state = await wait_for(refused, timeout=60, what="a wrong password to be reported")
    assert not state["ready"]
    assert "SASL credentials" in state["conditions"][0]["message"], state

    gw.files.config_dir.joinpath("manifests.yaml").write_text(
        base + source + secret(SASL_PASSWORD))  # fixed: the source restarts with it
    await broker.publish([message(n) for n in range(5)])
    await receiver.wait_for(lambda r: numbers(r) == set(range(5)), timeout=60)


@pytest.mark.parametrize("broker", ["amqp"], indirect=True)
async def test_amqp_with_a_wrong_password_is_reported_and_fixed_live(
        broker: Harness, start_gateway: StartGateway, receiver: Recorder) -> None:
    good = broker.server.url
    bad = good.replace("guest:guest@", "guest:wrong-pw@")
    base = (endpoint_yaml("sink", receiver.url("/sink"))
            + subscription_yaml("orders", "sink", '["order.*"]') + broker.source_yaml())
    manifests_with = base.replace(good, "{url}")
    assert "{url}" in manifests_with
    gw = await start_gateway(manifests_with.replace("{url}", bad))

    async def refused() -> dict[str, Any] | None:
        state = await source_state(gw)
        reason = state["conditions"][0]["reason"]
        return state if not state["ready"] and reason != "Connecting" else None

    state = await wait_for(refused, timeout=60, what="a wrong password to be reported")
    message_text = state["conditions"][0]["message"]
    assert "refused the user and password" in message_text, state
    assert "wrong-pw" not in message_text

    gw.files.config_dir.joinpath("manifests.yaml").write_text(
        manifests_with.replace("{url}", good))  # fixed: the source restarts with it
    await broker.publish([message(n) for n in range(5)])
    await receiver.wait_for(lambda r: numbers(r) == set(range(5)), timeout=60)
