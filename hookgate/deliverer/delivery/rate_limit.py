"""Per-endpoint rate limits: GCRA (the generic cell rate algorithm, a leaky bucket in one
number), in-process on the embedded queue and in Redis for a pool of deliverers.

GCRA keeps one value per endpoint, the theoretical arrival time ``tat``. With emission
interval ``T = 1 / perSecond`` a delivery is allowed at ``now`` when
``tat - now <= (burst - 1) * T``; it then moves ``tat`` to ``max(tat, now) + T``. So
``burst`` deliveries may go out at once, then one every ``T``. A refusal says when the next
one is allowed, and the dispatcher postpones the delivery to then: it waits, it never fails,
and no attempt is counted.

On Redis the check-and-update is one Lua script, so every deliverer sharing the queue shares
the limit exactly. Times come from the deliverers' clocks (as everywhere in the Redis queue,
they must be synchronised, e.g. by NTP).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from hookgate.deliverer.queues.base import Queue
from hookgate.model.routing import RateLimitConfig

__all__ = ["LocalRateLimiter", "RateLimiter", "RedisRateLimiter", "gcra", "limiter_for"]


def gcra(tat: float | None, now: float, limit: RateLimitConfig) -> tuple[float, float]:
    """One GCRA decision: ``(wait, new_tat)``. ``wait`` is 0 when allowed (then ``new_tat``
    is the value to store), otherwise the seconds until it would be (``new_tat == tat``)."""
    interval = 1.0 / limit.per_second
    base = max(tat if tat is not None else now, now)
    allowed_at = base + interval - limit.burst * interval
    if allowed_at <= now + 1e-9:
        return 0.0, base + interval
    return allowed_at - now, base if tat is not None else now


class RateLimiter(Protocol):
    async def acquire(self, endpoint: str, limit: RateLimitConfig) -> float:
        """Take one delivery's share of ``endpoint``'s rate: 0 if it may go now, otherwise
        the seconds to wait before asking again (nothing was taken)."""
        ...


class LocalRateLimiter:
    """GCRA in this process: exact when one process delivers (the embedded queue)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._tat: dict[str, float] = {}

    async def acquire(self, endpoint: str, limit: RateLimitConfig) -> float:
        return self.take(endpoint, limit)

    def take(self, endpoint: str, limit: RateLimitConfig) -> float:
        now = self.clock()
        wait, tat = gcra(self._tat.get(endpoint), now, limit)
        if wait == 0.0:
            self._tat[endpoint] = tat
        return wait


# KEYS limit key; ARGV now, interval, burst. Returns the wait in seconds as a string.
_GCRA = """
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or ARGV[1])
if tat < now then tat = now end
local allowed_at = tat + interval - burst * interval
if allowed_at <= now + 1e-9 then
  local new_tat = tat + interval
  redis.call('SET', KEYS[1], string.format('%.6f', new_tat),
             'PX', math.ceil((new_tat - now) * 1000) + 1000)
  return '0'
end
return string.format('%.6f', allowed_at - now)
"""


class RedisRateLimiter:
    """GCRA in Redis, shared by every deliverer of a gateway (key name from
    ``queues.redis.keys``)."""

    def __init__(self, queue: Any, clock: Callable[[], float] = time.time) -> None:
        self.queue = queue  # a RedisQueue: its connection, key names and script batching
        self.clock = clock

    async def acquire(self, endpoint: str, limit: RateLimitConfig) -> float:
        key = self.queue.keys.rate_limit(endpoint)
        args = [repr(self.clock()), repr(1.0 / limit.per_second), limit.burst]
        result = await self.queue.run_script("rate limiting", _GCRA, [key], args)
        return float(result)


def limiter_for(queue: Queue, clock: Callable[[], float] = time.time) -> RateLimiter:
    """The limiter that fits the queue: shared in Redis, local otherwise."""
    from hookgate.deliverer.queues.redis import RedisQueue

    if isinstance(queue, RedisQueue):
        return RedisRateLimiter(queue, clock)
    return LocalRateLimiter()
