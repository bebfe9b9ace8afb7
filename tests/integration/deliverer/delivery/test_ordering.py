"""Ordered delivery: one key at a time, in accepted order, with failures injected.

The multi-process test runs two ``hookgate run`` processes sharing one Redis; the in-process
test runs on both queues.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.support.gateway import StartGateway
from tests.support.manifests import endpoint_yaml, queue_gateway_yaml, subscription_yaml
from tests.support.process import RUN_OPTIONS, GatewayProcess
from tests.support.receiver import LoopbackReceiver

pytestmark = pytest.mark.timeout(180)

# The blocked head retries quickly, then every second for 7 s more (32 delays, the most a
# schedule takes): the other keys get that long to arrive before the head would run out of
# attempts, where 30 x 20 ms gave them 0.6 s, too little on a loaded 2-core machine.
HOLDING = "[0s" + ", 20ms" * 24 + ", 1s" * 7 + "]"

ORDERED = ("  ordering: {key: data.customer}\n"
           "  circuitBreaker: {failureThreshold: 10000}\n")


@dataclass
class OrderReceiver(LoopbackReceiver):
    """Answers 500 to every third request and while a customer is ``blocked``; records the
    ``seq`` of each delivery answered 2xx, per customer, in arrival order."""

    blocked: set[str] = field(default_factory=set)
    delivered: dict[str, list[int]] = field(default_factory=dict)
    requests: int = 0
    failures: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        data = json.loads(await request.read())["data"]
        self.requests += 1
        if data["customer"] in self.blocked or self.requests % 3 == 0:
            self.failures += 1
            return web.Response(status=500)
        async with self.changed:
            self.delivered.setdefault(data["customer"], []).append(data["seq"])
            self.changed.notify_all()
        return web.Response(status=204)

    async def until(self, predicate: Callable[[dict[str, list[int]]], bool],
                    timeout: float = 60, what: str = "deliveries") -> None:
        await self.wait(lambda: predicate(self.delivered), timeout=timeout, what=what,
                        state=lambda: self.delivered)


@pytest.fixture
async def order_receiver() -> AsyncIterator[OrderReceiver]:
    async with OrderReceiver() as rec:
        yield rec


def complete(counts: dict[str, int]) -> Callable[[dict[str, list[int]]], bool]:
    return lambda got: all(len(got.get(c, [])) >= n for c, n in counts.items())


async def test_ordered_keys_in_process(start_gateway: StartGateway,
                                       order_receiver: OrderReceiver) -> None:
    gw = await start_gateway(
        endpoint_yaml("ordered", f"http://127.0.0.1:{order_receiver.port}/in",
                      schedule=HOLDING, extra=ORDERED)
        + subscription_yaml("all", "ordered", '["*"]'))
    order_receiver.blocked.add("stuck")

    async def customer(name: str, n: int) -> None:
        for seq in range(n):  # each accepted (202) before the next is sent
            await gw.send("order.updated", {"customer": name, "seq": seq})

    await asyncio.gather(*(customer(c, 15) for c in ("a", "b", "c", "stuck")))
    # a failing head holds back only its own key: the others all arrive meanwhile
    await order_receiver.until(complete({"a": 15, "b": 15, "c": 15}), what="keys a, b, c")
    assert "stuck" not in order_receiver.delivered
    order_receiver.blocked.clear()
    await order_receiver.until(complete({"stuck": 15}), what="the stuck key after it recovers")
    for name, seqs in order_receiver.delivered.items():
        assert seqs == list(range(15)), f"{name} out of order: {seqs}"
    assert order_receiver.failures > 10  # failures were injected


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.parametrize("partitions", [1, 3])
async def test_ordering_holds_across_two_deliverers_on_redis(
        tmp_path: Path, redis_url: str, order_receiver: OrderReceiver, partitions: int) -> None:
    """Also with the queue in 3 partitions: a key's deliveries stay in one of them."""
    config = tmp_path / "config"
    config.mkdir()
    (config / "m.yaml").write_text(
        queue_gateway_yaml(redis_url, partitions=partitions) +
        endpoint_yaml("ordered", f"http://127.0.0.1:{order_receiver.port}/in",
                      schedule=HOLDING, extra=ORDERED)
        + subscription_yaml("all", "ordered", '["*"]'))
    procs = [GatewayProcess(config, tmp_path / f"data{i}", tmp_path / f"gw{i}.log", *RUN_OPTIONS,
                            queue=redis_url) for i in range(2)]
    customers, per_customer = [f"c{i}" for i in range(6)], 20
    async with aiohttp.ClientSession() as http:
        try:
            for p in procs:
                await p.start(http)

            async def customer(index: int, name: str) -> None:
                for seq in range(per_customer):  # alternate between the two processes
                    url = procs[(index + seq) % 2].url + "/v1/events"
                    async with http.post(url, json={"type": "order.updated", "data": {
                            "customer": name, "seq": seq}}) as resp:
                        assert resp.status == 202, await resp.text()

            order_receiver.blocked.add("c0")
            await asyncio.gather(*(customer(i, c) for i, c in enumerate(customers)))
            await order_receiver.until(complete({c: per_customer for c in customers[1:]}),
                                      what="every key but the blocked one")
            assert "c0" not in order_receiver.delivered
            order_receiver.blocked.clear()
            await order_receiver.until(complete({"c0": per_customer}), what="the blocked key")
            delivered_by = [await p.successes(http) for p in procs]
        finally:
            for p in procs:
                with contextlib.suppress(Exception):
                    p.kill()
    for name, seqs in order_receiver.delivered.items():
        assert seqs == list(range(per_customer)), f"{name} out of order: {seqs}"
    assert all(n > 0 for n in delivered_by), f"one process delivered nothing: {delivered_by}"
    assert order_receiver.failures > 20
