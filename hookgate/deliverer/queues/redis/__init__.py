"""The Redis Streams queue: the implementation, its key names and its Lua scripts."""

from hookgate.deliverer.queues.redis.partitions import PartitionedQueue
from hookgate.deliverer.queues.redis.queue import RedisQueue

__all__ = ["PartitionedQueue", "RedisQueue"]
