"""What only the Redis queue promises: restarts of Redis lose nothing, outages say so clearly,
several deliverers share one gateway's stream, and dead letters outlive their event."""

from __future__ import annotations

import asyncio
import re
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from hookgate.deliverer.queues.base import (
    Depth,
    Event,
    QueueUnavailable,
)
from hookgate.deliverer.queues.factory import open_queue
from hookgate.deliverer.queues.redis.address import mask_url
from hookgate.deliverer.queues.redis.keys import Keys
from hookgate.deliverer.queues.redis.partitions import PartitionedQueue
from hookgate.deliverer.queues.redis.queue import RedisQueue
from tests.support.pki import make_pki
from tests.support.ports import loopback_socket, port_of
from tests.support.queue_records import event, ok
from tests.support.redis_server import RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.timeout(60)]

A, B = "shop/a", "shop/b"
GATEWAY = "shop/default"

Opener = Callable[..., AbstractAsyncContextManager[RedisQueue]]


@pytest.fixture
def opened(redis_url: str) -> Opener:
    @asynccontextmanager
    async def opener(url: str = redis_url, **options: float) -> AsyncIterator[RedisQueue]:
        queue = RedisQueue(url, gateway=GATEWAY, **options)  # type: ignore[arg-type]
        await queue.open()
        try:
            yield queue
        finally:
            await queue.close()

    return opener


async def test_nothing_is_lost_when_redis_is_killed_and_restarted(
        redis_server: RedisServer, redis_url: str, opened: Opener) -> None:
    async with opened() as q:
        for n in range(1, 6):
            await q.enqueue(event(n, key=f"k{n}"), [A])
        done, delayed, dead, leased = await q.fetch(4, wait=1)
        await q.complete(done, ok(done))
        await q.retry(delayed, ok(delayed, "retry"), due=time.time() + 3600)
        await q.bury(dead, ok(dead, "dead"), "Exhausted")
        before = await q.depth()
        assert before == Depth(ready=1, delayed=1, dead=1, leased=1)

        redis_server.stop(kill=True)  # a crash: only what AOF has survives
        redis_server.start()

        # the same instance carries on once Redis is back (its old connections are dead)
        assert await q.depth() == before
        assert await q.enqueue(event(9, key="k1"), [A]) == ("evt_1", False)
        record = await q.event("evt_1")
        assert record is not None and [a.outcome for a in record.attempts] == ["success"]
        assert [x.delivery_id for x in await q.dead_letters()] == [dead.id]
        (fresh,) = await q.fetch(10, wait=1)
        assert fresh.event.id == "evt_5"
        await q.complete(leased, ok(leased))  # the lease survived the restart too
        assert await q.depth() == Depth(ready=0, delayed=1, dead=1, leased=1)


async def test_outage_raises_queue_unavailable_and_recovers(
        redis_server: RedisServer, redis_url: str, opened: Opener) -> None:
    async with opened() as q:
        await q.enqueue(event(1), [A])
        redis_server.stop()
        try:
            with pytest.raises(QueueUnavailable) as down:
                await q.enqueue(event(2), [A])
            assert str(down.value) == (
                f"Redis at {redis_url} is unreachable (Connection refused); check that it is "
                "running and that --queue points at it")
            with pytest.raises(QueueUnavailable, match="is unreachable"):
                await q.fetch(10, wait=1)
            with pytest.raises(QueueUnavailable, match="is unreachable"):
                await q.depth()
        finally:
            redis_server.start()
        assert await q.enqueue(event(2), [A]) == ("evt_2", True)
        got = await q.fetch(10, wait=1)
        assert sorted(d.event.id for d in got) == ["evt_1", "evt_2"]


async def test_errors_never_show_the_password() -> None:
    with loopback_socket() as refusing:  # bound, never listening: connections are refused
        url = f"redis://hookgate:s3cret@127.0.0.1:{port_of(refusing)}/0?password=s3cret"
        queue = open_queue(url, gateway=GATEWAY)
        with pytest.raises(QueueUnavailable) as down:
            await queue.open()
    assert "s3cret" not in str(down.value) and "s3cret" not in repr(queue)
    assert "redis://hookgate:***@127.0.0.1:" in str(down.value)
    assert mask_url("rediss://:p%40ss@redis.shop:6380/2") == "rediss://:***@redis.shop:6380/2"
    assert mask_url("redis://redis.shop:6379/0") == "redis://redis.shop:6379/0"


async def test_deliverers_share_the_stream_and_each_delivery_goes_to_one(
        opened: Opener) -> None:
    async with opened() as one, opened() as two:
        assert one.consumer != two.consumer
        for n in range(1, 21):
            await one.enqueue(event(n), [A])
        first = await one.fetch(10, wait=1)
        second = await two.fetch(20, wait=1)
        assert len(first) == 10 and len(second) == 10
        assert not {d.id for d in first} & {d.id for d in second}


async def test_a_late_holder_cannot_undo_the_reclaimer(opened: Opener) -> None:
    async with opened() as slow, opened(visibility_timeout=0.2) as fast:
        await slow.enqueue(event(1), [A])
        (held,) = await slow.fetch(1, wait=1)
        (taken,) = await fast.fetch(1, wait=10)  # waits out the lease, then reclaims
        assert (taken.id, taken.attempt) == (held.id, 2)  # the expired lease counts
        await slow.bury(held, None, "Gone")  # too late: no effect
        await slow.complete(held, ok(held))  # but its attempt is logged
        assert await fast.depth() == Depth(ready=0, delayed=0, dead=0, leased=1)
        await fast.complete(taken, ok(taken))
        assert await fast.depth() == Depth(ready=0, delayed=0, dead=0, leased=0)
        record = await fast.event("evt_1")
        assert record is not None and len(record.attempts) == 2


async def test_dead_letters_stay_replayable_after_their_event_expired(
        redis_url: str, opened: Opener) -> None:
    keys = Keys(GATEWAY)
    async with opened() as q:
        await q.enqueue(event(1, key="k"), [A, B])
        for d in await q.fetch(2, wait=1):
            await q.bury(d, ok(d, "dead"), "Exhausted")
        client = aioredis.Redis.from_url(redis_url)
        try:
            assert await client.ttl(keys.event("evt_1")) > 6 * 86400  # retention
            await client.delete(keys.event("evt_1"))  # as if its TTL ran out
        finally:
            await client.aclose()
        assert await q.event("evt_1") is None
        assert await q.replay(all=True) == 2
        got = await q.fetch(10, wait=1)
        assert sorted(d.endpoint for d in got) == [A, B]
        assert all(d.event == event(1, key="k") and d.attempt == 1 for d in got)
        record = await q.event("evt_1")
        assert record is not None and record.endpoints == (A, B)


async def test_a_delivery_whose_event_expired_is_dropped_not_handed_out(
        redis_url: str, opened: Opener) -> None:
    keys = Keys(GATEWAY)
    async with opened() as q:
        await q.enqueue(event(1), [A, B])
        await q.enqueue(event(2), [A])
        client = aioredis.Redis.from_url(redis_url)
        try:
            await client.delete(keys.event("evt_1"))  # as if its TTL ran out
            got = await q.fetch(10, wait=1)
            assert [(d.event.id, d.endpoint) for d in got] == [("evt_2", A)]
            assert await client.xlen(keys.stream) == 1  # evt_1's entries are gone for good
        finally:
            await client.aclose()


async def test_a_lease_past_its_byte_budget_loads_the_other_events_itself(
        opened: Opener) -> None:
    async with opened(lease_bytes=2500) as q:
        for n in range(1, 6):
            await q.enqueue(Event(id=f"evt_{n}", type="t", body=b"%d" % n * 1000,
                                  accepted_at=1.0), [A, B])
        got = await q.fetch(100, wait=1)
        assert len(got) == 10  # all leased at once; the bodies came in two round trips
        assert all(d.event.body == d.event.id[-1].encode() * 1000 for d in got)


async def test_gateways_do_not_see_each_others_deliveries(redis_url: str) -> None:
    shop = RedisQueue(redis_url, gateway="shop/default")
    billing = RedisQueue(redis_url, gateway="billing/default")
    await shop.open()
    await billing.open()
    try:
        await shop.enqueue(event(1), [A])
        assert await billing.fetch(10, wait=0) == []
        assert (await billing.depth()).ready == 0
        assert len(await shop.fetch(10, wait=1)) == 1
    finally:
        await shop.close()
        await billing.close()


async def test_a_flushed_redis_gets_its_consumer_group_back(redis_url: str,
                                                            opened: Opener) -> None:
    async with opened() as q:
        client = aioredis.Redis.from_url(redis_url)
        try:
            await client.flushall()  # e.g. a Redis restarted without persistence
        finally:
            await client.aclose()
        await q.enqueue(event(1), [A])
        (d,) = await q.fetch(10, wait=1)
        await q.complete(d, ok(d))
        assert await q.depth() == Depth(ready=0, delayed=0, dead=0, leased=0)


# -- minReplicaAcks ---------------------------------------------------------------------------


async def test_an_enqueue_no_replica_confirms_is_refused(redis_url: str) -> None:
    """The session's Redis has no replica: with minReplicaAcks 1 the write happens on the
    master, but the enqueue fails (the client is told 503 and retries)."""
    queue = RedisQueue(redis_url, gateway=GATEWAY, timeout=0.5, min_replica_acks=1)
    await queue.open()
    try:
        with pytest.raises(QueueUnavailable) as refused:
            await queue.enqueue(event(1), ["shop/a"])
        assert "confirmed the write on 0 of the 1 replicas minReplicaAcks asks for" in \
            str(refused.value)
        assert "Idempotency-Key" in str(refused.value)
    finally:
        await queue.close()


@pytest.mark.parametrize("url", ["redis_sentinel_url", "redis_cluster_url"])
async def test_an_enqueue_a_replica_confirmed_is_acknowledged(
        url: str, request: pytest.FixtureRequest) -> None:
    """Through Sentinel, and on a Redis Cluster (each master has a replica; the WAIT goes
    on a plain connection to the master of the queue's slot)."""
    queue = RedisQueue(request.getfixturevalue(url), gateway=GATEWAY, min_replica_acks=1)
    await queue.open()
    try:
        assert await queue.enqueue(event(1), ["shop/a"]) == ("evt_1", True)
        many = await asyncio.gather(*(queue.enqueue(event(n), ["shop/a"])
                                      for n in range(2, 50)))  # batched: one WAIT for all
        assert all(created for _, created in many)
        assert (await queue.depth()).ready == 49
    finally:
        await queue.close()




# -- TLS ---------------------------------------------------------------------------------------


#: Each form of Redis over TLS with an ACL user: one server, Sentinels (with a password of
#: their own) over a master and a replica, a cluster with ``tls-cluster yes``.
TLS_URLS = ["redis_tls_url", "redis_sentinel_tls_url", "redis_cluster_tls_url"]


def _without_ca(url: str) -> tuple[str, str]:
    """``url`` without its ssl_ca_certs option, and that option's value."""
    base, _, query = url.partition("?")
    options = urllib.parse.parse_qsl(query)
    ca = dict(options)["ssl_ca_certs"]
    rest = urllib.parse.urlencode([(k, v) for k, v in options if k != "ssl_ca_certs"])
    return (f"{base}?{rest}" if rest else base), ca


@pytest.mark.parametrize("fixture", TLS_URLS)
async def test_a_tls_server_checked_against_a_mounted_ca(
        request: pytest.FixtureRequest, fixture: str) -> None:
    """The CA comes from a file beside the URL (a deliverer pod's mounted caFrom Secret,
    HOOKGATE_REDIS_CA), or is missing: then the server's certificate is refused, and the
    error says so."""
    url, ca = _without_ca(request.getfixturevalue(fixture))
    queue = RedisQueue(url, gateway=GATEWAY, ca_file=ca)
    await queue.open()
    try:
        assert await queue.enqueue(event(1), ["shop/a"]) == ("evt_1", True)
    finally:
        await queue.close()
    untrusted = RedisQueue(url, gateway=GATEWAY, timeout=2)
    with pytest.raises(QueueUnavailable) as refused:
        await untrusted.open()
    assert "the TLS handshake failed (CERTIFICATE_VERIFY_FAILED" in str(refused.value)
    assert "spec.queue.redis.caFrom" in str(refused.value)
    assert "s3cret" not in str(refused.value)


def _wrong_ca(url: str, tmp: Path) -> str:
    other = make_pki(tmp).write()["ca"]  # a CA that signed nothing of these servers
    return url.replace(_without_ca(url)[1], str(other))


#: A mistake in a TLS URL, and what the error must say to check.
TLS_MISTAKES = {
    "wrong CA": (_wrong_ca, "the TLS handshake failed (CERTIFICATE_VERIFY_FAILED"
                            ": certificate signature failure); check the server's "
                            "certificate and the CA it is checked against"),
    "plain client": (lambda url, _: url.replace("rediss", "redis", 1),
                     "if it speaks TLS only, use rediss://"),
    "wrong password": (lambda url, _: url.replace("s3cret-p%40ss", "s3cret-typo"),
                       "refused PING (invalid username-password pair or user is disabled.); "
                       "check the user and password in --queue"),
}


@pytest.mark.parametrize("mistake", TLS_MISTAKES)
@pytest.mark.parametrize("fixture", TLS_URLS)
async def test_a_tls_mistake_says_what_to_check(request: pytest.FixtureRequest, fixture: str,
                                                mistake: str, tmp_path: Path) -> None:
    spoil, says = TLS_MISTAKES[mistake]
    url = spoil(request.getfixturevalue(fixture), tmp_path)
    queue = RedisQueue(url, gateway=GATEWAY, timeout=2)
    with pytest.raises(QueueUnavailable) as refused:
        await queue.open()
    message = str(refused.value)
    assert says in message, message
    assert "s3cret" not in message and "sentinel-p" not in message
    assert "<redis." not in message  # no client internals


async def test_a_wrong_sentinel_password_points_at_the_sentinels(
        redis_sentinel_tls_url: str) -> None:
    for url in (redis_sentinel_tls_url.replace("sentinel-p%40ss", "typo"),
                re.sub(r"&sentinel_password=[^&]*", "", redis_sentinel_tls_url)):
        queue = RedisQueue(url, gateway=GATEWAY, timeout=2)
        with pytest.raises(QueueUnavailable) as refused:
            await queue.open()
        assert "the Sentinels of rediss+sentinel://hookgate:***@" in str(refused.value)
        assert "check sentinel_password (and sentinel_username) in the URL" in str(
            refused.value)


# -- partitions ------------------------------------------------------------------------------


async def test_a_change_of_the_partition_count_is_refused(redis_url: str) -> None:
    """Deliveries in partitions no deliverer reads would be stranded: the count is fixed."""
    first = PartitionedQueue(redis_url, gateway=GATEWAY, partitions=3)
    await first.open()
    await first.enqueue(event(1), ["shop/a"])
    await first.close()
    for other in (RedisQueue(redis_url, gateway=GATEWAY),
                  PartitionedQueue(redis_url, gateway=GATEWAY, partitions=2)):
        with pytest.raises(QueueUnavailable, match="was made with 3 partition"):
            await other.open()
    again = PartitionedQueue(redis_url, gateway=GATEWAY, partitions=3)
    await again.open()
    try:
        assert (await again.depth()).ready == 1
    finally:
        await again.close()


async def test_on_a_cluster_each_partition_has_its_own_master(redis_cluster_url: str) -> None:
    queue = PartitionedQueue(redis_cluster_url, gateway=GATEWAY, partitions=3)
    await queue.open()
    try:
        await asyncio.gather(*(queue.enqueue(event(n), ["shop/a"]) for n in range(1, 61)))
        assert (await queue.depth()).ready == 60
        client = aioredis.RedisCluster.from_url(
            "redis://" + redis_cluster_url.removeprefix("redis+cluster://").split(",")[0])
        try:
            await client.initialize()
            masters = {client.get_node_from_key(p.keys.stream).name for p in queue.parts}
            counts = [await client.xlen(p.keys.stream) for p in queue.parts]
        finally:
            await client.aclose()
        assert len(masters) == 3, masters
        assert all(c > 5 for c in counts), counts  # events spread over all three
    finally:
        await queue.close()


@pytest.mark.parametrize("url", ["redis_url", "redis_cluster_url"])
async def test_many_calls_at_once_wait_for_a_connection(
        url: str, request: pytest.FixtureRequest) -> None:
    """More calls at once than connections: they queue for one (the cluster client alone
    would refuse the 65th with MaxConnectionsError)."""
    queue = RedisQueue(request.getfixturevalue(url), gateway=GATEWAY, max_connections=8)
    await queue.open()
    try:
        done = await asyncio.gather(*(queue.enqueue(event(n), ["shop/a"])
                                      for n in range(1, 201)))
        assert all(created for _, created in done)
        assert (await queue.depth()).ready == 200
    finally:
        await queue.close()


async def test_a_busy_partition_does_not_starve_a_quiet_one(redis_url: str) -> None:
    """300 deliveries wait in partition 0 and 3 in partition 2: small fetches still bring the
    three within the first few, because each fetch starts at the next partition."""
    from hookgate.deliverer.queues.redis.partitions import _hash

    def key_for(partition: int, n: int) -> str:
        return next(k for i in range(10_000)
                    if _hash(k := f"k{n}-{i}", 3) == partition)

    queue = PartitionedQueue(redis_url, gateway=GATEWAY, partitions=3)
    await queue.open()
    try:
        await asyncio.gather(*(queue.enqueue(event(n, key_for(0, n)), ["shop/a"])
                               for n in range(1, 301)))
        await asyncio.gather(*(queue.enqueue(event(n, key_for(2, n)), ["shop/a"])
                               for n in range(301, 304)))
        seen: list[int] = []
        for _ in range(6):
            got = await queue.fetch(5, wait=1)
            assert len(got) <= 5
            seen += [int(d.event.id.removeprefix("evt_")) for d in got]
        assert {301, 302, 303} <= set(seen), seen  # within 30 of 303 deliveries
    finally:
        await queue.close()


async def test_a_fetch_asks_every_partition_at_once(redis_url: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """What is ready is asked of all partitions together, not one after the other (then a
    delivery waited for a round trip to every other partition before its fetch returned);
    a partition that filled its share is asked again for what is still missing."""
    queue = PartitionedQueue(redis_url, gateway=GATEWAY, partitions=3)
    await queue.open()
    under_way, most, asked = 0, 0, []
    plain_fetch = RedisQueue.fetch

    async def counted(self: RedisQueue, limit: int, wait: float) -> list[Any]:
        nonlocal under_way, most
        under_way += 1
        most = max(most, under_way)
        asked.append((self.keys.partition, limit))
        try:
            return await plain_fetch(self, limit, wait)
        finally:
            under_way -= 1

    monkeypatch.setattr(RedisQueue, "fetch", counted)
    try:
        for n in range(1, 13):  # 12 events, all in partition 1
            await queue.parts[1].enqueue(event(n), [A])
        got = await queue.fetch(9, wait=1)
        assert most == 3, asked  # the first round went to the three at once
        assert len(got) == 9 and {d.event.id for d in got} <= {f"evt_{n}" for n in range(1, 13)}
        # partition 1 filled its share of 3, so it was asked again for the 6 still missing
        assert (1, 6) in asked, asked
    finally:
        monkeypatch.undo()
        await queue.close()
