"""The operator's readiness: not before kopf has started, not while the API server does not
answer, and one API read per max_age however often the kubelet asks (fake clock)."""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestClient, TestServer

from hookgate.operator.readiness import Readiness
from tests.support.clock import FakeClock


class Api:
    def __init__(self) -> None:
        self.calls = 0
        self.failure: Exception | None = None
        self.hang = False

    async def __call__(self) -> None:
        self.calls += 1
        if self.hang:
            await asyncio.Event().wait()
        if self.failure is not None:
            raise self.failure


async def test_not_ready_until_started_then_ready_when_the_api_answers() -> None:
    api = Api()
    readiness = Readiness(api, clock=FakeClock(0))
    verdict = await readiness.verdict()
    assert not verdict.ready and "starting" in verdict.reason
    assert api.calls == 0  # nothing asked of the API before kopf has started
    readiness.started.set()
    assert (await readiness.verdict()).ready


async def test_an_api_failure_makes_it_unready_and_a_recovery_ready_again() -> None:
    api, clock = Api(), FakeClock(0)
    readiness = Readiness(api, clock=clock, max_age=5)
    readiness.started.set()
    api.failure = RuntimeError("403: forbidden")
    verdict = await readiness.verdict()
    assert not verdict.ready and "403: forbidden" in verdict.reason
    api.failure = None
    assert not (await readiness.verdict()).ready  # the reading is kept for max_age
    clock.advance(5)
    assert (await readiness.verdict()).ready
    assert api.calls == 2


async def test_a_hung_api_read_is_bounded_by_the_timeout() -> None:
    api = Api()
    api.hang = True
    readiness = Readiness(api, clock=FakeClock(0), timeout=0.05)
    readiness.started.set()
    verdict = await readiness.verdict()
    assert not verdict.ready and "did not answer in 0.05s" in verdict.reason


async def test_concurrent_probes_share_one_api_read() -> None:
    api = Api()
    readiness = Readiness(api, clock=FakeClock(0))
    readiness.started.set()
    verdicts = await asyncio.gather(*(readiness.verdict() for _ in range(10)))
    assert all(v.ready for v in verdicts) and api.calls == 1


async def test_readyz_answers_503_with_the_reason_then_200() -> None:
    api = Api()
    readiness = Readiness(api, clock=FakeClock(0), max_age=0)
    async with TestClient(TestServer(readiness.app())) as client:
        resp = await client.get("/readyz")
        assert resp.status == 503
        assert await resp.json() == {"ready": False, "reason": "the operator is starting"}
        readiness.started.set()
        resp = await client.get("/readyz")
        assert resp.status == 200 and (await resp.json())["ready"] is True
