"""Outbound delivery end to end: ingest → queue → signed POST to a real receiver."""

from __future__ import annotations

import asyncio
import json
import time

from standardwebhooks.webhooks import Webhook

from hookgate import __version__
from tests.support.gateway import StartGateway
from tests.support.manifests import SECRET, endpoint_yaml, subscription_yaml
from tests.support.receiver import Recorder
from tests.support.waiting import wait_for


async def test_event_is_delivered_signed_and_verifiable(start_gateway: StartGateway,
                                                        receiver: Recorder) -> None:
    gw = await start_gateway(
        endpoint_yaml("acme", receiver.url("/acme"), extra="  headers: {X-Tenant: acme}\n")
        + subscription_yaml("orders", "acme", '["order.*"]'))
    event_id = await gw.send("order.created", {"id": 42, "amount": 120})
    (got,) = await receiver.wait_for(lambda r: len(r) == 1)
    assert got.webhook_id == event_id
    payload = Webhook(SECRET).verify(got.body, got.headers)
    assert payload["type"] == "order.created" and payload["data"] == {"id": 42, "amount": 120}
    assert got.headers["content-type"] == "application/json"
    assert got.headers["user-agent"] == f"hookgate/{__version__}"
    assert got.headers["x-tenant"] == "acme"
    assert abs(int(got.headers["webhook-timestamp"]) - time.time()) < 60


async def test_each_matching_endpoint_gets_one_copy(start_gateway: StartGateway,
                                                    receiver: Recorder) -> None:
    gw = await start_gateway(
        endpoint_yaml("a", receiver.url("/a")) + endpoint_yaml("b", receiver.url("/b"))
        + subscription_yaml("a-orders", "a", '["order.*"]')
        + subscription_yaml("a-all", "a", '["*"]')
        + subscription_yaml("b-paid", "b", '["invoice.paid"]'))
    status, doc = await gw.post("/v1/events", {"type": "order.created", "data": {}})
    assert (status, doc["deliveries"]) == (202, 1)
    await gw.send("invoice.paid")
    await receiver.wait_for(lambda r: len(r) == 3)
    assert sorted(r.path for r in receiver.received) == ["/a", "/a", "/b"]
    assert sorted(json.loads(r.body)["type"] for r in receiver.on("/a")) == [
        "invoice.paid", "order.created"]


async def test_retry_then_success_keeps_the_webhook_id(start_gateway: StartGateway,
                                                       receiver: Recorder) -> None:
    receiver.script["/flaky"] = lambda n: 500 if n < 3 else 200
    gw = await start_gateway(endpoint_yaml("flaky", receiver.url("/flaky"))
                             + subscription_yaml("all", "flaky", '["*"]'))
    event_id = await gw.send("order.created")
    got = await receiver.wait_for(lambda r: any(x.status == 200 for x in r))
    assert [r.status for r in got] == [500, 500, 200]
    assert {r.webhook_id for r in got} == {event_id}
    assert len({r.body for r in got}) == 1  # the same bytes every time
    for r in got:
        Webhook(SECRET).verify(r.body, r.headers)
    attempts = await gw.attempts(event_id, 3)
    assert [(a["attempt"], a["status"], a["outcome"]) for a in attempts] == [
        (1, 500, "retry"), (2, 500, "retry"), (3, 200, "success")]


async def test_exhausted_delivery_becomes_a_dead_letter_and_replays(
        start_gateway: StartGateway, receiver: Recorder) -> None:
    broken = True
    receiver.script["/down"] = lambda n: 503 if broken else 204
    gw = await start_gateway(endpoint_yaml("down", receiver.url("/down"), schedule="[0s, 50ms]")
                             + subscription_yaml("all", "down", '["*"]'))
    event_id = await gw.send("order.created")
    await receiver.wait_for(lambda r: len(r) == 2)

    async def dead_letters() -> list[dict[str, object]]:
        status, doc = await gw.get("/v1/dead-letters?endpoint=down")
        assert status == 200
        return list(doc["items"])

    (letter,) = await wait_for(dead_letters, what="the dead letter")
    assert (letter["event_id"], letter["reason"], letter["attempts"]) == (event_id, "Exhausted", 2)
    broken = False
    status, doc = await gw.post("/v1/dead-letters/replay", {"endpoint": "down"})
    assert (status, doc) == (200, {"requeued": 1})
    got = await receiver.wait_for(lambda r: any(x.status == 204 for x in r))
    assert got[-1].webhook_id == event_id
    status, doc = await gw.get("/v1/dead-letters")
    assert doc["items"] == []


async def test_idempotency_key_deduplicates(start_gateway: StartGateway,
                                            receiver: Recorder) -> None:
    gw = await start_gateway(endpoint_yaml("a", receiver.url("/a"))
                             + subscription_yaml("all", "a", '["*"]'))
    first = await gw.post("/v1/events", {"type": "x", "data": 1, "idempotencyKey": "k-1"})
    again = await gw.post("/v1/events", {"type": "x", "data": 2, "idempotencyKey": "k-1"})
    other = await gw.post("/v1/events", {"type": "x", "data": 3, "idempotencyKey": "k-2"})
    assert first[0] == again[0] == other[0] == 202
    assert again[1] == {"id": first[1]["id"], "duplicate": True}
    assert other[1]["id"] != first[1]["id"]
    await receiver.wait_for(lambda r: len(r) == 2)
    assert sorted(json.loads(r.body)["data"] for r in receiver.received) == [1, 3]


async def test_a_hanging_endpoint_does_not_hold_back_another(start_gateway: StartGateway,
                                                             receiver: Recorder) -> None:
    receiver.hang.add("/slow")
    gw = await start_gateway(
        endpoint_yaml("slow", receiver.url("/slow"), timeout="30s",
                      extra="  maxInFlight: 2\n")
        + endpoint_yaml("fast", receiver.url("/fast"))
        + subscription_yaml("slow-all", "slow", '["*"]')
        + subscription_yaml("fast-all", "fast", '["*"]'), concurrency=8, grace=0.5)
    for i in range(20):
        await gw.send("tick", {"i": i})
    await receiver.wait_for(lambda r: len([x for x in r if x.path == "/fast"]) == 20,
                            timeout=10, what="all 20 deliveries to the healthy endpoint")
    # what an operator sees: two deliveries hanging on the slow endpoint, no more
    assert await gw.metric("hookgate_deliveries_in_flight", endpoint="default/slow") == 2.0


async def test_config_change_applies_without_restart(start_gateway: StartGateway,
                                                     receiver: Recorder) -> None:
    base = endpoint_yaml("a", receiver.url("/a")) + endpoint_yaml("b", receiver.url("/b"))
    gw = await start_gateway(base + subscription_yaml("s", "a", '["*"]'))
    await gw.send("one")
    await receiver.wait_for(lambda r: len(r) == 1)
    applied = asyncio.Event()
    gw.gateway.live.subscribe(lambda _snapshot: applied.set())
    (gw.files.config_dir / "manifests.yaml").write_text(base + subscription_yaml("s", "b", '["*"]'))
    await asyncio.wait_for(applied.wait(), 5)
    await gw.send("two")
    await receiver.wait_for(lambda r: len(r) == 2)
    assert [r.path for r in receiver.received] == ["/a", "/b"]


async def test_invalid_config_change_keeps_the_running_config(start_gateway: StartGateway,
                                                              receiver: Recorder) -> None:
    gw = await start_gateway(endpoint_yaml("a", receiver.url("/a"))
                             + subscription_yaml("s", "a", '["*"]'))
    before = gw.gateway.live.current
    (gw.files.config_dir / "broken.yaml").write_text(subscription_yaml("t", "missing", '["*"]'))

    async def refused() -> list[Exception]:
        return gw.rejected

    (error,) = await wait_for(refused, what="the broken change to be refused")
    assert "endpoint 'missing' does not exist" in str(error)
    await gw.send("still.routed")
    await receiver.wait_for(lambda r: len(r) == 1)
    assert gw.gateway.live.current is before


async def test_deleting_an_endpoint_turns_its_queued_deliveries_into_dead_letters(
        start_gateway: StartGateway, receiver: Recorder) -> None:
    receiver.script["/gone-soon"] = lambda n: 503
    keep = endpoint_yaml("keep", receiver.url("/keep")) + subscription_yaml("k", "keep", '["*"]')
    gw = await start_gateway(
        keep + endpoint_yaml("gone-soon", receiver.url("/gone-soon"), schedule="[0s, 1s, 1s]")
        + subscription_yaml("g", "gone-soon", '["*"]'))
    event_id = await gw.send("order.created")
    await receiver.wait_for(lambda r: len(r) == 2)  # one attempt each; gone-soon now waits
    (gw.files.config_dir / "manifests.yaml").write_text(keep)

    async def dead() -> list[dict[str, object]]:
        status, doc = await gw.get("/v1/dead-letters")
        assert status == 200
        return list(doc["items"])

    (letter,) = await wait_for(dead, what="the deleted endpoint's dead letter")
    assert (letter["event_id"], letter["endpoint"], letter["reason"]) == (
        event_id, "default/gone-soon", "EndpointDeleted")
