"""Input built to break a parser gets the API's JSON error, is counted, and stores nothing;
an inbound webhook met by a dead queue is refused with Retry-After, not lost."""

from __future__ import annotations

import pytest

from tests.integration.deliverer.intake.test_inbound import SHARED, github_headers
from tests.support.gateway import StartGateway
from tests.support.manifests import endpoint_yaml, subscription_yaml
from tests.support.receiver import Recorder
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_for

DEEP = b"[" * 100_000 + b"]" * 100_000
#: A GitHub source at /in/default/gh, verified with SHARED.
GITHUB_SOURCE = ("apiVersion: hookgate.io/v1alpha1\nkind: WebhookSource\nmetadata: {name: gh}\n"
                 "spec:\n  verify: {scheme: github, secretRef: {name: gh-secret}}\n---\n"
                 "apiVersion: v1\nkind: Secret\nmetadata: {name: gh-secret}\n"
                 f"stringData: {{secret: {SHARED}}}\n---\n")


@pytest.mark.parametrize(("raw", "message"), [
    (b'{"type": "x", "data": ' + DEEP + b"}", "nests deeper than the parser allows"),
    (b'{"type": "x", "data": {"name": "\\ud800"}}', "lone UTF-16 surrogate"),
])
async def test_ingest_refuses_what_cannot_become_an_event(
        start_gateway: StartGateway, receiver: Recorder, raw: bytes, message: str) -> None:
    gw = await start_gateway(endpoint_yaml("a", receiver.url("/a"))
                             + subscription_yaml("all", "a", '["*"]'))
    status, doc = await gw.post("/v1/events", raw=raw,
                                headers={"Content-Type": "application/json"})
    assert (status, doc["error"]["code"]) == (400, "invalid_event")
    assert message in doc["error"]["message"]
    _, metrics = await gw.get("/metrics")
    assert ('hookgate_events_rejected_total{gateway="default/default",reason="invalid"} 1.0'
            in metrics)
    depth = await gw.gateway.queue.depth()
    assert (depth.ready, depth.leased, depth.delayed) == (0, 0, 0)
    # and the gateway goes on serving
    assert (await gw.post("/v1/events", {"type": "x", "data": {}}))[0] == 202


async def test_an_inbound_body_nested_too_deep_is_a_clear_400(
        start_gateway: StartGateway, receiver: Recorder) -> None:
    gw = await start_gateway(GITHUB_SOURCE + endpoint_yaml("a", receiver.url("/a"))
                             + subscription_yaml("all", "a", '["*"]'))
    status, doc = await gw.post("/in/default/gh", raw=DEEP,
                                headers=github_headers(SHARED, DEEP, "guid-1"))
    assert (status, doc["error"]["code"]) == (400, "invalid_event")
    assert "nests deeper than the parser allows" in doc["error"]["message"]


@pytest.mark.redis
@pytest.mark.parametrize("queue_url", ["redis"], indirect=True)
async def test_an_inbound_webhook_is_refused_with_retry_after_while_the_queue_is_down(
        start_gateway: StartGateway, receiver: Recorder, redis_server: RedisServer) -> None:
    gw = await start_gateway(GITHUB_SOURCE + endpoint_yaml("a", receiver.url("/a"))
                             + subscription_yaml("all", "a", '["*"]'))
    body = b'{"zen": "Keep it logically awesome."}'
    redis_server.stop()
    async with gw.http.post(gw.url + "/in/default/gh", data=body,
                            headers=github_headers(SHARED, body, "guid-2")) as resp:
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "5"
        assert (await resp.json())["error"]["code"] == "queue_unavailable"
    redis_server.start()

    # the provider's retry of the same delivery is accepted once the queue is back
    async def accepted() -> bool:
        async with gw.http.post(gw.url + "/in/default/gh", data=body,
                                headers=github_headers(SHARED, body, "guid-2")) as resp:
            return resp.status == 202

    await wait_for(accepted, what="the inbound webhook accepted after the restart")
    await receiver.wait_for(lambda r: len(r) == 1)


@pytest.mark.parametrize("content_type", [None, "", "text/plain",
                                          "application/x-www-form-urlencoded"])
async def test_the_body_is_read_as_json_whatever_its_content_type(
        start_gateway: StartGateway, receiver: Recorder, content_type: str | None) -> None:
    gw = await start_gateway(endpoint_yaml("a", receiver.url("/a"))
                             + subscription_yaml("all", "a", '["*"]'))
    headers = {} if content_type is None else {"Content-Type": content_type}
    status, doc = await gw.post("/v1/events", raw=b'{"type": "x", "data": {"n": 1}}',
                                headers=headers)
    assert status == 202, doc
    status, doc = await gw.post("/v1/events", raw=b"type=x&data=1", headers=headers)
    assert (status, doc["error"]["code"]) == (400, "invalid_event")
    assert "not valid JSON" in doc["error"]["message"]
