"""Per-endpoint rate limits: GCRA (the generic cell rate algorithm, a leaky bucket in one
number) with reservations, in-process on the embedded queue and in Redis for a pool of
deliverers.

GCRA keeps one value per endpoint, the theoretical arrival time ``tat``. With emission
interval ``T = 1 / perSecond`` a delivery arriving at ``now`` gets the slot
``max(now, max(tat, now) + T - burst * T)`` and moves ``tat`` on by ``T``. So ``burst``
deliveries may go out at once, then one every ``T``.

A delivery whose slot lies ahead keeps it: the slot is booked under the delivery's id, the
dispatcher postpones the delivery to it (it waits, it never fails, no attempt is counted),
and when the delivery comes back it goes at once, without taking another slot. Every slot is
used by the delivery it was booked for, however late the queue hands it back, so a backlog
drains at the configured rate; before, a refusal booked nothing, and a delivery that came
back a moment before a late predecessor was refused again and sent behind the backlog,
which drained a limited endpoint at about half its rate. A booked slot that is never used
(the endpoint was paused, the process died) is lost: the limit errs on the slow side.

On Redis the decision and the booking are one Lua script, so every deliverer sharing the
queue shares the limit and the bookings exactly. Times come from the deliverers' clocks (as
everywhere in the Redis queue, they must be synchronised, e.g. by NTP).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from hookgate.deliverer.queues.base import Queue
from hookgate.model.routing import RateLimitConfig

__all__ = ["LocalRateLimiter", "RateLimiter", "RedisRateLimiter", "gcra", "limiter_for"]

#: A slot this close ahead counts as now (clock steps, float rounding).
_EPSILON = 1e-6


def gcra(tat: float | None, now: float, limit: RateLimitConfig) -> tuple[float, float]:
    """One GCRA booking: ``(slot, new_tat)``: when the next delivery may go (``now`` or
    later) and the ``tat`` to store once it is booked."""
    interval = 1.0 / limit.per_second
    base = max(tat if tat is not None else now, now)
    return max(now, base + interval - limit.burst * interval), base + interval


class RateLimiter(Protocol):
    async def acquire(self, endpoint: str, limit: RateLimitConfig, delivery: str) -> float:
        """Take ``delivery``'s share of ``endpoint``'s rate: 0 if it may go now, otherwise
        the seconds until its booked slot. Asking again for the same delivery returns its
        slot (0 once it has come) and books nothing more."""
        ...


class LocalRateLimiter:
    """GCRA in this process: exact when one process delivers (the embedded queue)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._tat: dict[str, float] = {}
        self._booked: dict[str, float] = {}  # delivery id -> its slot

    async def acquire(self, endpoint: str, limit: RateLimitConfig, delivery: str) -> float:
        return self.take(endpoint, limit, delivery)

    def take(self, endpoint: str, limit: RateLimitConfig, delivery: str) -> float:
        now = self.clock()
        slot = self._booked.get(delivery)
        if slot is None:
            slot, self._tat[endpoint] = gcra(self._tat.get(endpoint), now, limit)
            if slot <= now + _EPSILON:
                return 0.0
            if len(self._booked) >= 100_000:  # slots of deliveries that never came back
                cutoff = now - 3600.0
                self._booked = {k: v for k, v in self._booked.items() if v > cutoff}
            self._booked[delivery] = slot
        if slot <= now + _EPSILON:
            del self._booked[delivery]
            return 0.0
        return slot - now


# KEYS limit key, booking key of the delivery; ARGV now, interval, burst. Returns the wait in
# seconds as a string ('0': go now). A booking lives until a minute after its slot.
_GCRA = """
local now = tonumber(ARGV[1])
local booked = redis.call('GET', KEYS[2])
if booked then
  booked = tonumber(booked)
  if booked <= now + 1e-6 then
    redis.call('DEL', KEYS[2])
    return '0'
  end
  return string.format('%.6f', booked - now)
end
local interval = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or ARGV[1])
if tat < now then tat = now end
local slot = tat + interval - burst * interval
if slot < now then slot = now end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.6f', new_tat),
           'PX', math.ceil((new_tat - now) * 1000) + 1000)
if slot <= now + 1e-6 then return '0' end
redis.call('SET', KEYS[2], string.format('%.6f', slot),
           'PX', math.ceil((slot - now) * 1000) + 60000)
return string.format('%.6f', slot - now)
"""


class RedisRateLimiter:
    """GCRA with bookings in Redis, shared by every deliverer of a gateway (key names from
    ``queues.redis.keys``)."""

    def __init__(self, queue: Any, clock: Callable[[], float] = time.time) -> None:
        self.queue = queue  # a RedisQueue: its connection, key names and script batching
        self.clock = clock

    async def acquire(self, endpoint: str, limit: RateLimitConfig, delivery: str) -> float:
        keys = [self.queue.keys.rate_limit(endpoint), self.queue.keys.rate_booking(delivery)]
        args = [repr(self.clock()), repr(1.0 / limit.per_second), limit.burst]
        result = await self.queue.run_script("rate limiting", _GCRA, keys, args)
        return float(result)


def limiter_for(queue: Queue, clock: Callable[[], float] = time.time) -> RateLimiter:
    """The limiter that fits the queue: shared in Redis, local otherwise."""
    from hookgate.deliverer.queues.redis import PartitionedQueue, RedisQueue

    if isinstance(queue, RedisQueue | PartitionedQueue):  # partitioned: in partition 0
        return RedisRateLimiter(queue, clock)
    return LocalRateLimiter()
