"""A Redis Cluster master that holds one partition of a gateway's queue dies under load
(``kill -9``): its replica takes over, ``hookgate run`` goes on without a restart (events
spill to the live partitions meanwhile), and with ``minReplicaAcks: 1`` no acknowledged
event is lost.

Real servers on loopback: three masters with a replica each (tests/support/redis_server.py),
a real ``hookgate run`` on ``redis+cluster://`` with the queue in 3 partitions (one per
master), a real receiver. Bounded in count and time; the recovery time, refusals and
duplicates are printed, not asserted.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from hookgate.deliverer.queues.redis.keys import Keys
from tests.support.load import offer_events
from tests.support.manifests import endpoint_yaml, queue_gateway_yaml, subscription_yaml
from tests.support.process import RUN_OPTIONS, GatewayProcess
from tests.support.receiver import Recorder
from tests.support.redis_server import RedisServer, find_redis_server, start_redis_cluster

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(240)]

EVENTS = 2000
RATE = 250
KILL_AFTER = 600
GATEWAY = "default/default"


async def owner_of(cluster_url: str, key: str) -> int | None:
    """The port of the master serving ``key`` now, as the cluster itself says."""
    seed = cluster_url.removeprefix("redis+cluster://").split(",")
    for address in seed:
        client = aioredis.RedisCluster.from_url(f"redis://{address}")
        try:
            await client.initialize()
            return int(client.get_node_from_key(key).port)
        except Exception:  # this seed is the dead one: ask the next
            continue
        finally:
            await client.aclose()
    return None


async def test_a_killed_master_of_one_partition_is_replaced_and_delivery_goes_on(
        tmp_path: Path, receiver: Recorder) -> None:
    binary = find_redis_server()
    assert binary is not None, "redis-server is needed (make system-deps)"
    cluster = start_redis_cluster(binary, tmp_path / "redis")
    try:
        config = tmp_path / "config"
        config.mkdir()
        (config / "m.yaml").write_text(
            queue_gateway_yaml(cluster.url, partitions=3, min_replica_acks=1)
            + endpoint_yaml("sink", receiver.url("/sink"), schedule="[0s, 100ms, 1s, 5s]")
            + subscription_yaml("all", "sink", '["*"]'))
        gateway = GatewayProcess(config, tmp_path / "data", tmp_path / "gw.log", *RUN_OPTIONS,
                                 queue=cluster.url)
        victim_key = Keys(GATEWAY, 1, 3).stream  # partition 1's master is the one to die
        promoted_at = 0.0
        failover: list[asyncio.Task[None]] = []
        async with aiohttp.ClientSession() as http:
            await gateway.start(http)
            try:
                async def fail_over(old: RedisServer, killed_at: float) -> None:
                    nonlocal promoted_at
                    while time.monotonic() - killed_at < 60:
                        if await owner_of(cluster.url, victim_key) not in (None, old.port):
                            promoted_at = time.monotonic()
                            break
                        await asyncio.sleep(0.1)  # polling the cluster, which we do not drive
                    await asyncio.to_thread(old.start)  # as a pod restarts: now a replica

                async def kill_master() -> None:
                    port = await owner_of(cluster.url, victim_key)
                    old = next(node for node in cluster.nodes if node.port == port)
                    old.stop(kill=True)
                    failover.append(asyncio.create_task(fail_over(old, time.monotonic())))

                load = await offer_events(http, gateway.url, events=EVENTS, rate=RATE,
                                          seconds=60, act_after=KILL_AFTER, act=kill_master)
                assert failover, f"only {len(load.acknowledged)} acknowledged"
                await failover[0]
                assert promoted_at, "no replica took over the killed master's slots"
                wanted = set(load.acknowledged)
                # acknowledged after the kill: by masters alive then, so none may be lost
                after = load.after_mark
                await receiver.wait_for(lambda r: after <= {x.webhook_id for x in r},
                                        timeout=120, what=f"the {len(after)} events "
                                        "acknowledged after the kill to be delivered")
            finally:
                gateway.kill()
        ids = [r.webhook_id for r in receiver.received]
        lost = wanted - set(ids)
        print(f"\ncluster failover of one partition's master under {RATE}/s offered: "
              f"{len(wanted)} acknowledged ({len(after)} after the kill), {load.refused} "
              f"refused; replica promoted {promoted_at - load.marked_at:.1f}s after kill -9; "
              f"{len(lost)} acknowledged not delivered, {len(ids) - len(set(ids))} "
              "delivered twice")
        assert after and not after - set(ids)  # went on without a restart
        assert not lost  # minReplicaAcks 1: every acknowledged event was on a replica too
    finally:
        cluster.stop()
