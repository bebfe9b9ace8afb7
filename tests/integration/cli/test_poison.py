"""A delivery that takes down every deliverer that takes it (here: each process is killed
while it delivers) runs out of attempts and ends as a dead letter, instead of being handed
out again forever. Real ``hookgate run`` processes, on both queues."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.manifests import endpoint_yaml, subscription_yaml
from tests.support.process import GatewayProcess
from tests.support.receiver import Recorder
from tests.support.waiting import wait_for


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_a_delivery_that_kills_its_deliverers_becomes_a_dead_letter(
        tmp_path: Path, queue_url: str, receiver: Recorder,
        http: aiohttp.ClientSession) -> None:
    receiver.hang.add("/poison")  # every attempt is under way when its process dies
    config = tmp_path / "config"
    config.mkdir()
    (config / "m.yaml").write_text(
        endpoint_yaml("poison", receiver.url("/poison"), schedule="[0s, 100ms]",
                      timeout="30s") + subscription_yaml("all", "poison", '["*"]'))

    def gateway(n: int) -> GatewayProcess:
        return GatewayProcess(config, tmp_path / "data", tmp_path / f"gw{n}.log",
                              "--visibility-timeout", "2", "--grace", "1", queue=queue_url)

    first = gateway(0)
    await first.start(http)
    async with http.post(first.url + "/v1/events", json={"type": "x", "data": {}}) as resp:
        assert resp.status == 202
        event_id = (await resp.json())["id"]
    running = first
    try:
        for n in (1, 2):  # attempt n arrives, and its process dies with it
            await receiver.wait_for(lambda _, n=n: receiver.arrived("/poison") == n,
                                    timeout=30, what=f"attempt {n} under way")
            running.kill()
            running = gateway(n)
            await running.start(http)

        async def letters() -> list[dict[str, Any]]:
            async with http.get(running.url + "/v1/dead-letters") as resp:
                return list((await resp.json())["items"])

        (letter,) = await wait_for(letters, timeout=30, what="the poison delivery dead")
        assert (letter["event_id"], letter["reason"]) == (event_id, "Exhausted")
        assert letter["attempts"] == 2  # the two attempts its killed deliverers made
        assert receiver.arrived("/poison") == 2  # and no third
    finally:
        running.kill()
