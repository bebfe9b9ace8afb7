"""Connecting to a gateway's Redis, whichever way it is reached (see
:mod:`~hookgate.deliverer.queues.redis.address`).

Every form gives a ``redis.asyncio.Redis`` with at most ``max_connections`` calls under way:
with hundreds of deliveries in flight, callers queue for one instead of failing with "Too many
connections" (a blocking pool for one server and Sentinel; for a cluster, whose client raises
instead, the queue bounds its concurrent calls itself). A pooled connection that broke (a
restart, an idle timeout, a failover) is retried once at once; running a queue script twice
is harmless (each checks its lease or event first). Timeouts are not retried: a slow Redis
must surface within ``timeout``.

With Sentinel the pool asks the Sentinels for the master on every new connection, and a
connection to a master that became a replica is dropped on its first ``READONLY`` answer, so
after a failover the next call reaches the new master without a restart. With Redis Cluster
the client follows ``MOVED`` and ``ASK`` redirections; every key of a gateway carries the
gateway's hash tag, so a gateway's queue is on one master (and its replicas).
"""

from __future__ import annotations

from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from hookgate.deliverer.queues.redis.address import Kind, RedisAddress

__all__ = ["connect"]


class _BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """A Sentinel-managed pool that waits for a free connection, like the single-server one."""


class _Sentinel(Sentinel):
    """Sentinels whose "no master found" says why: the client words it with the repr of
    every Sentinel client and only the type of what failed. This one raises it short, with
    the first Sentinel's own error (a TLS failure, a refused password) as its cause."""

    async def discover_master(self, service_name: str) -> Any:
        try:
            return await super().discover_master(service_name)
        except MasterNotFoundError:
            for sentinel in self.sentinels:
                try:
                    await sentinel.ping()
                except (RedisConnectionError, RedisTimeoutError, OSError) as e:
                    raise MasterNotFoundError(
                        f"no Sentinel answered about {service_name!r}") from e
            raise MasterNotFoundError(
                f"no Sentinel knows a master named {service_name!r}") from None


def connect(address: RedisAddress, *, max_connections: int, timeout: float,
            socket_timeout: float) -> aioredis.Redis:
    """A client for ``address``; nothing is sent until its first command."""
    common: dict[str, Any] = {
        "socket_timeout": socket_timeout, "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        "decode_responses": False, **address.ssl_options,
    }
    if address.kind is Kind.SINGLE:
        # the options were read by address.parse and are passed as arguments
        url = address.url.partition("?")[0] if address.options else address.url
        pool = BlockingConnectionPool.from_url(url, max_connections=max_connections,
                                               timeout=timeout, username=address.username,
                                               password=address.password, **common)
        return aioredis.Redis.from_pool(pool)
    if address.kind is Kind.SENTINEL:
        assert address.master is not None
        tls = {"ssl": True, **address.ssl_options} if address.tls else {}
        sentinel_auth = {k.removeprefix("sentinel_"): v for k, v in address.options.items()
                         if k in ("sentinel_username", "sentinel_password")}
        # a Sentinel that fails is passed over at once for the next one (the client's
        # default would retry it with backoff, for tens of seconds)
        sentinel = _Sentinel(list(address.hosts), min_other_sentinels=0,  # type: ignore[no-untyped-call]
                             sentinel_kwargs={"socket_timeout": timeout,
                                              "socket_connect_timeout": timeout,
                                              "retry": Retry(NoBackoff(), 0),
                                              **sentinel_auth, **tls},
                             **tls)
        options: dict[str, Any] = {**common, **tls}
        master: aioredis.Redis = sentinel.master_for(
            address.master, connection_pool_class=_BlockingSentinelPool,
            max_connections=max_connections, timeout=timeout, db=address.db,
            username=address.username, password=address.password, **options)
        return master
    # The cluster client does not wait for a free connection: past max_connections to a node
    # it raises. The queue bounds its own concurrent calls to max_connections instead
    # (RedisQueue._slots), and the client gets room above that for the few direct commands.
    cluster = RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in address.hosts],
        max_connections=max_connections * 4, username=address.username,
        password=address.password, ssl=address.tls, **common)
    return cast(aioredis.Redis, cluster)  # the same commands; the queue's keys share one slot
