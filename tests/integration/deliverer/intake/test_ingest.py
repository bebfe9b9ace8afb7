"""The ingest API's answers to bad input, API keys, health and metrics."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from tests.support.gateway import StartGateway
from tests.support.manifests import endpoint_yaml, subscription_yaml
from tests.support.receiver import Recorder
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_for

KEYS = """\
apiVersion: hookgate.io/v1alpha1
kind: WebhookGateway
metadata: {name: default}
spec:
  ingest: {apiKeysFrom: {secretRef: {name: ingest-keys}}, maxBodyBytes: 2048}
---
apiVersion: v1
kind: Secret
metadata: {name: ingest-keys}
stringData: {ci: key-one, billing: key-two}
---
"""


@pytest.mark.parametrize(("raw", "status", "code", "message"), [
    (b"{oops", 400, "invalid_event", "body is not valid JSON"),
    (b'{"data": {}}', 400, "invalid_event", '"type" is required'),
    (b'{"type": "x", "data": {}, "extra": 1}', 400, "invalid_event", "unknown field(s) extra"),
    (b'{"type": "x", "data": "' + b"a" * 300_000 + b'"}', 413, "body_too_large",
     "larger than 262144 bytes"),
])
async def test_bad_requests_get_a_clear_error_and_store_nothing(
        start_gateway: StartGateway, receiver: Recorder, raw: bytes, status: int, code: str,
        message: str) -> None:
    gw = await start_gateway(endpoint_yaml("a", receiver.url("/a"))
                             + subscription_yaml("all", "a", '["*"]'))
    got_status, doc = await gw.post("/v1/events", raw=raw,
                                     headers={"Content-Type": "application/json"})
    assert got_status == status
    assert doc["error"]["code"] == code
    assert message in doc["error"]["message"]
    depth = await gw.gateway.queue.depth()
    assert (depth.ready, depth.leased, depth.delayed) == (0, 0, 0)


async def test_api_keys_are_required_when_configured(start_gateway: StartGateway,
                                                     receiver: Recorder) -> None:
    gw = await start_gateway(KEYS + endpoint_yaml("a", receiver.url("/a"))
                             + subscription_yaml("all", "a", '["*"]'))
    event = {"type": "x", "data": {}}
    status, doc = await gw.post("/v1/events", event)
    assert (status, doc["error"]["code"]) == (401, "missing_api_key")
    status, doc = await gw.post("/v1/events", event, headers={"Authorization": "Bearer nope"})
    assert (status, doc["error"]["code"]) == (401, "invalid_api_key")
    for key in ("key-one", "key-two"):
        status, _ = await gw.post("/v1/events", event, headers={"Authorization": f"Bearer {key}"})
        assert status == 202
    status, doc = await gw.get("/v1/dead-letters")
    assert status == 401  # the admin API is guarded by the same keys
    status, doc = await gw.post("/v1/events", {"type": "x", "data": "a" * 4000},
                                headers={"Authorization": "Bearer key-one"})
    assert (status, doc["error"]["code"]) == (413, "body_too_large")


async def test_health_readiness_and_metrics(start_gateway: StartGateway,
                                            receiver: Recorder) -> None:
    receiver.script["/a"] = lambda n: 500 if n == 1 else 204
    gw = await start_gateway(endpoint_yaml("a", receiver.url("/a"))
                             + subscription_yaml("all", "a", '["*"]'))
    assert (await gw.get("/healthz"))[0] == 200
    assert (await gw.get("/readyz"))[0] == 200
    await gw.send("order.created")
    await receiver.wait_for(lambda r: len(r) == 2)
    await gw.post("/v1/events", raw=b"{bad")

    async def text() -> str:
        status, body = await gw.get("/metrics")
        assert status == 200
        return str(body) if 'outcome="success"' in str(body) else ""

    body = await wait_for(text, what="the success to be counted")
    labels = 'endpoint="default/a",gateway="default/default"'
    assert f'hookgate_deliveries_total{{{labels},outcome="retry"}} 1.0' in body
    assert f'hookgate_deliveries_total{{{labels},outcome="success"}} 1.0' in body
    assert 'hookgate_events_ingested_total{gateway="default/default",source="api"} 1.0' in body
    assert 'hookgate_events_rejected_total{gateway="default/default",reason="invalid"} 1.0' in body
    assert f"hookgate_end_to_end_latency_seconds_count{{{labels}}} 1.0" in body
    assert f"hookgate_delivery_duration_seconds_count{{{labels}}} 2.0" in body
    assert 'hookgate_queue_depth{gateway="default/default",state="dead"} 0.0' in body


async def test_unknown_event_id_is_a_404_with_retention_hint(start_gateway: StartGateway,
                                                             receiver: Recorder) -> None:
    gw = await start_gateway(endpoint_yaml("a", receiver.url("/a")))
    status, doc = await gw.get("/v1/events/evt_nope")
    assert status == 404 and "7 days" in doc["error"]["message"]


@pytest.mark.redis
@pytest.mark.parametrize("queue_url", ["redis"], indirect=True)
async def test_a_dead_redis_refuses_events_clearly_and_recovers(
        start_gateway: StartGateway, receiver: Recorder, redis_server: RedisServer) -> None:
    gw = await start_gateway(endpoint_yaml("a", receiver.url("/a"))
                             + subscription_yaml("all", "a", '["*"]'))
    redis_server.stop()
    async with gw.http.post(gw.url + "/v1/events", json={"type": "x", "data": {}}) as resp:
        status, doc = resp.status, await resp.json()
        assert resp.headers["Retry-After"] == "5"  # when to send it again
    assert status == 503
    assert doc["error"]["code"] == "queue_unavailable"
    assert "unreachable" in doc["error"]["message"] and "send it again" in doc["error"]["message"]
    assert (await gw.get("/readyz"))[0] == 503
    redis_server.start()

    async def accepted() -> bool:
        status, _ = await gw.post("/v1/events", {"type": "x", "data": {"after": True}})
        return status == 202

    await wait_for(accepted, what="ingest to accept events again")
    await receiver.wait_for(lambda r: len(r) >= 1)
    assert (await gw.get("/readyz"))[0] == 200


async def test_a_chunked_body_is_read_whole(start_gateway: StartGateway,
                                            receiver: Recorder) -> None:
    gw = await start_gateway(endpoint_yaml("a", receiver.url("/a"))
                             + subscription_yaml("all", "a", '["*"]'))
    payload = {"blob": "x" * 200_000}

    async def chunks() -> AsyncIterator[bytes]:
        raw = json.dumps({"type": "big", "data": payload}).encode()
        for i in range(0, len(raw), 8192):
            yield raw[i:i + 8192]

    async with gw.http.post(gw.url + "/v1/events", data=chunks(),
                            headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 202, await resp.text()
    (got,) = await receiver.wait_for(lambda r: len(r) == 1)
    assert json.loads(got.body)["data"] == payload


async def test_a_chunked_body_over_the_limit_is_refused_without_reading_it_all(
        start_gateway: StartGateway, receiver: Recorder) -> None:
    gw = await start_gateway(endpoint_yaml("a", receiver.url("/a"))
                             + subscription_yaml("all", "a", '["*"]'))
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"type": "big", "data": "'
        for _ in range(4096):  # bounded: 256 MiB at most
            sent += 65536
            yield b"x" * 65536

    async with gw.http.post(gw.url + "/v1/events", data=endless(),
                            headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 413
        doc = await resp.json()
    assert doc["error"]["code"] == "body_too_large" and "262144 bytes" in doc["error"]["message"]
    assert sent < 64 * 1024 * 1024, sent  # the gateway stopped reading near the limit
    assert receiver.received == []
