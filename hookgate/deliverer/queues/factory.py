"""Opening a queue by its URL: the one place that knows every backend."""

from __future__ import annotations

from hookgate.deliverer.queues.base import Queue

__all__ = ["open_queue"]


def open_queue(url: str, *, gateway: str, visibility_timeout: float = 60.0,
               min_replica_acks: int = 0, redis_ca: str | None = None,
               partitions: int = 1) -> Queue:
    """A queue for ``url``: ``sqlite:PATH`` (embedded), or Redis: ``redis://``,
    ``redis+sentinel://``, ``redis+cluster://`` (``rediss...`` for TLS) or ``unix://``.

    ``min_replica_acks``, ``redis_ca`` (the CA bundle of a ``rediss`` server whose URL
    names none) and ``partitions`` (``spec.queue.partitions``) apply to Redis (the SQLite
    queue is one file on one disk, synced before every acknowledgement). Raises
    ``ValueError`` naming the accepted forms for anything else.
    """
    if url.startswith("sqlite:"):
        from hookgate.deliverer.queues.sqlite import SQLiteQueue

        return SQLiteQueue(url.removeprefix("sqlite:"), visibility_timeout=visibility_timeout)
    if url.startswith(("redis://", "rediss://", "redis+", "rediss+", "unix://")):
        from hookgate.deliverer.queues.redis import PartitionedQueue, RedisQueue

        if partitions > 1:
            return PartitionedQueue(url, gateway=gateway, partitions=partitions,
                                    visibility_timeout=visibility_timeout,
                                    min_replica_acks=min_replica_acks, ca_file=redis_ca)
        return RedisQueue(url, gateway=gateway, visibility_timeout=visibility_timeout,
                          min_replica_acks=min_replica_acks, ca_file=redis_ca)
    raise ValueError(f"queue {url!r} is not supported; use sqlite:PATH, redis://HOST:PORT/DB, "
                     "redis+sentinel://HOST:PORT,.../MASTER or redis+cluster://HOST:PORT,...")
