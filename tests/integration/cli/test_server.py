"""The at-least-once guarantee with real processes: SIGKILL loses nothing, SIGTERM duplicates
nothing. Each test runs ``python -m hookgate run`` as a child process, on both queues."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from tests.support.manifests import endpoint_yaml, subscription_yaml
from tests.support.process import RUN_OPTIONS, GatewayProcess
from tests.support.receiver import Recorder

EVENTS = 300


@pytest.fixture
async def slow_receiver() -> AsyncIterator[Recorder]:
    # Slow enough that hundreds of deliveries are still queued or in flight when the
    # gateway is stopped; fast enough that the test takes seconds.
    rec = Recorder(delay={"/sink": 0.03})
    await rec.start()
    yield rec
    await rec.stop()


@pytest.fixture
def make_gateway(tmp_path: Path, queue_url: str, slow_receiver: Recorder
                 ) -> Callable[[], GatewayProcess]:
    config = tmp_path / "config"
    config.mkdir()
    (config / "m.yaml").write_text(
        endpoint_yaml("sink", slow_receiver.url("/sink"), schedule="[0s, 100ms, 1s]",
                      extra="  maxInFlight: 16\n")
        + subscription_yaml("all", "sink", '["*"]'))
    started: list[GatewayProcess] = []

    def make() -> GatewayProcess:
        gp = GatewayProcess(config, tmp_path / "data", tmp_path / "gateway.log", *RUN_OPTIONS,
                            queue=queue_url)
        started.append(gp)
        return gp

    yield make  # type: ignore[misc]
    for gp in started:
        gp.kill()


async def send_all(http: aiohttp.ClientSession, url: str) -> list[str]:
    ids: list[str] = []
    for batch in range(0, EVENTS, 50):
        async def one(i: int) -> str:
            async with http.post(url + "/v1/events",
                                 json={"type": "order.created", "data": {"n": i}}) as resp:
                assert resp.status == 202, await resp.text()
                return str((await resp.json())["id"])
        ids += await asyncio.gather(*(one(i) for i in range(batch, batch + 50)))
    return ids


@pytest.mark.slow
async def test_sigkill_mid_flight_loses_no_accepted_event(
        make_gateway: Callable[[], GatewayProcess], slow_receiver: Recorder,
        http: aiohttp.ClientSession) -> None:
    first = make_gateway()
    await first.start(http)
    ids = await send_all(http, first.url)
    await slow_receiver.wait_for(lambda r: len(r) >= 60, timeout=30)
    first.kill()  # SIGKILL: no chance to finish or hand anything back
    assert len({r.webhook_id for r in slow_receiver.received}) < EVENTS, \
        "everything was delivered before the kill; the test proves nothing"
    second = make_gateway()
    await second.start(http)
    await slow_receiver.wait_for(
        lambda r: {x.webhook_id for x in r if x.status == 204} >= set(ids), timeout=60,
        what=f"all {EVENTS} accepted events after the restart")


@pytest.mark.slow
async def test_sigterm_finishes_in_flight_work_without_duplicates(
        make_gateway: Callable[[], GatewayProcess], slow_receiver: Recorder,
        http: aiohttp.ClientSession) -> None:
    first = make_gateway()
    await first.start(http)
    ids = await send_all(http, first.url)
    await slow_receiver.wait_for(lambda r: len(r) >= 60, timeout=30)
    assert first.proc is not None
    os.kill(first.proc.pid, signal.SIGTERM)
    assert await first.wait_exit() == 0
    delivered_before_restart = len(slow_receiver.received)
    assert delivered_before_restart < EVENTS, "nothing was left for the restart to deliver"
    second = make_gateway()
    await second.start(http)
    await slow_receiver.wait_for(lambda r: {x.webhook_id for x in r} >= set(ids), timeout=60,
                                 what=f"all {EVENTS} events after the restart")
    counts = Counter(r.webhook_id for r in slow_receiver.received)
    assert [i for i, n in counts.items() if n > 1] == []
