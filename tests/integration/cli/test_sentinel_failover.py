"""The master of a Sentinel-watched Redis dies under load (``kill -9``): a replica takes
over, ``hookgate run`` goes on without a restart, and with ``minReplicaAcks: 1`` no event it
acknowledged is lost.

Real servers on loopback: a master, a replica and three Sentinels (tests/support/
redis_server.py); a real ``hookgate run`` on ``redis+sentinel://``; a real receiver. The
load is bounded in count and time; the figures (recovery time, refusals, duplicates) are
printed, not asserted: they depend on how busy the machine is.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import aiohttp
import pytest

from tests.support.load import offer_events
from tests.support.manifests import endpoint_yaml, subscription_yaml
from tests.support.process import RUN_OPTIONS, GatewayProcess
from tests.support.receiver import Recorder
from tests.support.redis_server import RedisServer, find_redis_server, start_sentinel_set
from tests.support.waiting import wait_for_blocking

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(240)]

EVENTS = 2000  # offered in all, at most
RATE = 250  # events per second offered
KILL_AFTER = 600  # acknowledged events before the master is killed


@pytest.mark.parametrize("acks", [int(os.environ.get("HOOKGATE_TEST_REPLICA_ACKS", "1"))])
async def test_a_master_killed_under_load_loses_no_acknowledged_event(
        tmp_path: Path, receiver: Recorder, acks: int) -> None:
    binary = find_redis_server()
    assert binary is not None, "redis-server is needed (make system-deps)"
    redis = start_sentinel_set(binary, tmp_path / "redis")
    try:
        config = tmp_path / "config"
        config.mkdir()
        (config / "m.yaml").write_text(
            "apiVersion: hookgate.io/v1alpha1\nkind: WebhookGateway\n"
            "metadata: {name: default}\n"
            f"spec:\n  queue:\n    redis: {{url: {json.dumps(redis.url)}, "
            f"minReplicaAcks: {acks}}}\n---\n"
            + endpoint_yaml("sink", receiver.url("/sink"), schedule="[0s, 100ms, 1s, 5s]")
            + subscription_yaml("all", "sink", '["*"]'))
        gateway = GatewayProcess(config, tmp_path / "data", tmp_path / "gw.log", *RUN_OPTIONS,
                                 queue=redis.url)
        promoted_at = 0.0
        failover: list[asyncio.Task[None]] = []
        async with aiohttp.ClientSession() as http:
            await gateway.start(http)
            try:
                async def restart_as_replica(old: RedisServer) -> None:
                    nonlocal promoted_at
                    await asyncio.to_thread(
                        wait_for_blocking, lambda: redis.master_port() not in (None, old.port),
                        timeout=30, interval=0.1, what="the Sentinels to promote the replica")
                    promoted_at = time.monotonic()
                    await asyncio.to_thread(old.start)  # as a pod restarts: now a replica

                async def kill_master() -> None:
                    old = redis.nodes[0] if redis.master_port() == redis.nodes[0].port \
                        else redis.nodes[1]
                    old.stop(kill=True)  # kill -9: no shutdown, no final sync
                    failover.append(asyncio.create_task(restart_as_replica(old)))

                load = await offer_events(http, gateway.url, events=EVENTS, rate=RATE,
                                          seconds=60, act_after=KILL_AFTER, act=kill_master)
                assert failover, f"only {len(load.acknowledged)} events were acknowledged"
                await failover[0]
                recovered = load.recovered_in
                assert recovered is not None, "no event was acknowledged after the failover"
                wanted = set(load.acknowledged)
                await receiver.wait_for(
                    lambda got: wanted <= {r.webhook_id for r in got}, timeout=120,
                    what=f"all {len(wanted)} acknowledged events to be delivered")
            finally:
                gateway.kill()
        ids = [r.webhook_id for r in receiver.received]
        lost = wanted - set(ids)
        duplicates = len(ids) - len(set(ids))
        print(f"\nSentinel failover under {RATE}/s offered: {len(wanted)} acknowledged, "
              f"{load.refused} refused (503) while the master was away; replica promoted "
              f"{promoted_at - load.marked_at:.1f}s and events acknowledged again "
              f"{recovered:.1f}s after kill -9; {len(lost)} lost, "
              f"{duplicates} delivered twice")
        if acks:
            assert not lost  # 0 acks: reported only, replication to the replica is async
    finally:
        redis.stop()
