"""What the delivery promises for endpoints that fail: throttling honoured end to end,
timeouts and refused connections retried on the schedule and logged, a paused endpoint
held until it is resumed. Real receivers on loopback, on both queue backends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.integration.deliverer.delivery.test_policies import dead_letters
from tests.support.gateway import StartGateway
from tests.support.manifests import endpoint_yaml, subscription_yaml
from tests.support.ports import loopback_socket, port_of
from tests.support.receiver import Recorder
from tests.support.waiting import wait_for


async def test_a_receivers_retry_after_is_honoured_end_to_end(
        start_gateway: StartGateway, receiver: Recorder) -> None:
    receiver.script["/a"] = lambda n: 429 if n == 1 else 204
    receiver.reply_headers["/a"] = lambda n: {"Retry-After": "2"} if n == 1 else {}
    # the schedule alone would retry after 100 ms
    gw = await start_gateway(endpoint_yaml("a", receiver.url("/a"), schedule="[0s, 100ms]")
                             + subscription_yaml("all", "a", '["*"]'))
    event_id = await gw.send("order.created")
    first, second = await receiver.wait_for(lambda r: len(r) >= 2, timeout=15)
    # a lower bound only: a slow machine makes the gap longer, never shorter
    assert second.at - first.at >= 1.9, second.at - first.at
    attempts = await gw.attempts(event_id, 2)
    assert [(a["status"], a["outcome"]) for a in attempts] == [(429, "retry"), (204, "success")]


async def test_a_timeout_is_retried_on_the_schedule_then_dead_lettered(
        start_gateway: StartGateway, receiver: Recorder) -> None:
    receiver.hang.add("/hang")
    gw = await start_gateway(endpoint_yaml("slow", receiver.url("/hang"), timeout="500ms",
                                           schedule="[0s, 100ms]")
                             + subscription_yaml("all", "slow", '["*"]'))
    event_id = await gw.send("order.created")
    attempts = await gw.attempts(event_id, 2)
    assert [(a["status"], a["outcome"]) for a in attempts] == [(None, "retry"), (None, "dead")]
    assert all(a["error"] == "timed out after 0.5s" for a in attempts), attempts
    (letter,) = await wait_for(lambda: dead_letters(gw, "slow"), what="the dead letter")
    assert (letter["reason"], letter["attempts"]) == ("Exhausted", 2)


async def test_a_port_nobody_listens_on_is_retried_then_dead_lettered(
        start_gateway: StartGateway) -> None:
    closed = loopback_socket()  # bound, never listening: connecting to it is refused
    try:
        url = f"http://127.0.0.1:{port_of(closed)}/in"
        gw = await start_gateway(endpoint_yaml("gone", url, schedule="[0s, 100ms, 100ms]")
                                 + subscription_yaml("all", "gone", '["*"]'))
        event_id = await gw.send("order.created")
        attempts = await gw.attempts(event_id, 3)
    finally:
        closed.close()
    assert [a["outcome"] for a in attempts] == ["retry", "retry", "dead"]
    errors = [a["error"] for a in attempts]
    assert all("cannot connect" in (e or "") and "refused" in e.lower() for e in errors), errors


async def test_a_paused_endpoint_holds_its_deliveries_until_resumed(
        start_gateway: StartGateway, receiver: Recorder, tmp_path: Path) -> None:
    paused = endpoint_yaml("p", receiver.url("/p"), extra="  paused: true\n")
    rest = subscription_yaml("all", "p", '["*"]')
    gw = await start_gateway(paused + rest)
    event_id = await gw.send("order.created")

    async def postponed() -> str:
        _, text = await gw.get("/metrics")
        line = ('hookgate_deliveries_postponed_total{endpoint="default/p",'
                'gateway="default/default",reason="paused"}')
        return text if line in text else ""

    await wait_for(postponed, what="the delivery postponed as paused")
    assert receiver.received == []
    state: dict[str, Any] = next(e for e in (await gw.get("/v1/endpoints"))[1]["items"]
                                 if e["endpoint"] == "default/p")
    assert state["paused"] and state["pausedBy"] == "spec", state

    (tmp_path / "config" / "manifests.yaml").write_text(
        paused.replace("  paused: true\n", "") + rest)
    (got,) = await receiver.wait_for(lambda r: len(r) == 1, timeout=20,
                                     what="the held delivery after the resume")
    assert got.webhook_id == event_id
