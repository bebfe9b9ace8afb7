"""A gateway whose queue cannot write (its disk is full) is not ready, and is again once it
can write. The full disk is real: the gateway process's file-size limit (RLIMIT_FSIZE, set
from outside with prlimit) makes every write past it fail with EFBIG, as a full disk does."""

from __future__ import annotations

import resource
from pathlib import Path

import aiohttp
import pytest

from tests.support.manifests import endpoint_yaml, subscription_yaml
from tests.support.process import GatewayProcess
from tests.support.receiver import Recorder
from tests.support.waiting import wait_for

LIMIT = 2 * 1024 * 1024  # bytes any file of the gateway may grow to


@pytest.mark.timeout(120)
async def test_readiness_fails_while_the_queue_cannot_write_and_recovers(
        tmp_path: Path, receiver: Recorder) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "m.yaml").write_text(endpoint_yaml("a", receiver.url("/a"))
                                   + subscription_yaml("all", "a", '["*"]'))
    gateway = GatewayProcess(config, tmp_path / "data", tmp_path / "gw.log")
    async with aiohttp.ClientSession() as http:
        await gateway.start(http)
        assert gateway.proc is not None
        try:
            # the soft limit only: raising a hard limit again needs CAP_SYS_RESOURCE
            _, hard = resource.prlimit(gateway.proc.pid, resource.RLIMIT_FSIZE)
            resource.prlimit(gateway.proc.pid, resource.RLIMIT_FSIZE, (LIMIT, hard))
            for size in (100_000, 10_000):  # fill the queue's files until writes fail
                event = {"type": "blob", "data": "x" * size}

                async def refused(event: dict[str, object] = event) -> bool:
                    async with http.post(gateway.url + "/v1/events", json=event) as resp:
                        return resp.status == 503

                # bounded: 2 MiB hold a few hundred such events at most
                await wait_for(refused, timeout=60, interval=0,
                               what=f"a {size}-byte event refused past the limit")
            async with http.get(gateway.url + "/readyz") as resp:
                assert resp.status == 503
                doc = await resp.json()
            assert doc["error"]["code"] == "queue_unwritable", doc
            assert "check free disk space" in doc["error"]["message"]

            # space again: readiness comes back by itself, and events are accepted
            resource.prlimit(gateway.proc.pid, resource.RLIMIT_FSIZE, (hard, hard))
            async with http.get(gateway.url + "/readyz") as resp:
                assert resp.status == 200, await resp.text()
            async with http.post(gateway.url + "/v1/events",
                                 json={"type": "after", "data": {}}) as resp:
                assert resp.status == 202
            await receiver.wait_for(lambda r: any(b'"after"' in x.body for x in r),
                                    timeout=30, what="the event accepted after recovery")
        finally:
            gateway.kill()
