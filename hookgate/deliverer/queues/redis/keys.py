"""Every Redis key the Redis queue uses, in one place.

All keys of one partition of a gateway share one hash tag, so they live in one Redis Cluster
slot and the queue's Lua scripts may touch several of them atomically. Partition 0's tag is
``{gateway}``; a gateway with P partitions (``spec.queue.partitions``) adds partitions
1..P-1, whose tags ``{gateway#N}`` are chosen (N is searched) so that the P partitions' slots
lie in P different P-ths of the slot space: on a cluster whose masters hold equal slot ranges
in order, as ``redis-cli --cluster create`` makes them, each partition lands on its own
master. Gateway-wide state (pauses, endpoint health, rate limits, the partition count) is kept
in partition 0. Reading this file
tells an operator what ``redis-cli --scan --pattern 'hookgate:{default}:*'`` will show.

Layout for gateway ``G``::

    hookgate:{G}:deliveries            stream, one entry per ready or leased delivery
                                       fields e=event id, p=endpoint, a=attempt
    hookgate:{G}:delayed               zset, score = due time (unix s), member = JSON
                                       [event id, endpoint, attempt]
    hookgate:{G}:event:<event id>      hash t b at s k n (type, body, accepted_at, source,
                                       idempotency key, JSON endpoints); TTL = retention,
                                       extended while deliveries are pending
    hookgate:{G}:attempts:<event id>   list of JSON attempts; TTL = retention
    hookgate:{G}:idem:<key>            string "<expires_at> <event id>"; TTL = idempotency ttl
    hookgate:{G}:dead                  zset, score = dead_at, member = delivery id
    hookgate:{G}:dead:endpoint:<ep>    zset, the same for one endpoint
    hookgate:{G}:dead:letter:<id>      hash: the dead letter (delivery id <id>), plus a copy
                                       of the event fields so replay works after it expired
    hookgate:{G}:order:busy            hash, "<endpoint> <ordering key>" -> delivery id of the
                                       unfinished head of that ordered sequence
    hookgate:{G}:order:wait:<ep> <k>   list of JSON [event id, endpoint, attempt, key]: the
                                       deliveries queued behind that head, oldest first
    hookgate:{G}:order:waiting         integer, how many deliveries wait in those lists
    hookgate:{G}:paused                hash, endpoint -> JSON {reason, message, at}: runtime
                                       pauses (410 Gone, auto-disable)
    hookgate:{G}:health                hash, endpoint -> "<failures> <failing since>
                                       <circuit opened at or ''>" of each endpoint whose
                                       last attempt failed (circuit breaker, auto-disable)
    hookgate:{G}:trial:<ep>            string with a TTL: a deliverer holds the one trial
                                       attempt of <ep>'s half-open circuit
    hookgate:{G}:partitions            string, the partition count the queue was made with
    hookgate:{G}:ratelimit:<ep>        string, the GCRA theoretical arrival time of endpoint
                                       <ep>; expires when the bucket is full again
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

__all__ = ["CONSUMER_GROUP", "PREFIX", "Keys", "partition_tag"]

PREFIX = "hookgate"
#: The one consumer group of a gateway's stream; every deliverer of the gateway joins it.
CONSUMER_GROUP = "deliverers"


@dataclass(frozen=True)
class Keys:
    """The key names of one gateway."""

    gateway: str
    partition: int = 0
    partitions: int = 1

    def __post_init__(self) -> None:
        if not self.gateway or "{" in self.gateway or "}" in self.gateway:
            raise ValueError(f"gateway name {self.gateway!r} cannot be used in Redis key names; "
                             "use a Kubernetes object name")

    @property
    def base(self) -> str:
        return f"{PREFIX}:{{{partition_tag(self.gateway, self.partition, self.partitions)}}}"

    @property
    def partition_count(self) -> str:
        """The partition count the gateway's queue was made with (in partition 0)."""
        return f"{self.base}:partitions"

    @property
    def stream(self) -> str:
        return f"{self.base}:deliveries"

    @property
    def delayed(self) -> str:
        return f"{self.base}:delayed"

    @property
    def dead_index(self) -> str:
        return f"{self.base}:dead"

    def event(self, event_id: str) -> str:
        return f"{self.base}:event:{event_id}"

    def attempts(self, event_id: str) -> str:
        return f"{self.base}:attempts:{event_id}"

    def idempotency(self, key: str) -> str:
        return f"{self.base}:idem:{key}"

    def dead(self, delivery_id: str) -> str:
        return f"{self.base}:dead:letter:{delivery_id}"

    def dead_by_endpoint(self, endpoint: str) -> str:
        return f"{self.base}:dead:endpoint:{endpoint}"

    @property
    def order_busy(self) -> str:
        return f"{self.base}:order:busy"

    @property
    def order_waiting(self) -> str:
        return f"{self.base}:order:waiting"

    def order_wait(self, endpoint: str, key: str) -> str:
        return f"{self.base}:order:wait:{endpoint} {key}"

    @property
    def paused(self) -> str:
        return f"{self.base}:paused"

    @property
    def health(self) -> str:
        return f"{self.base}:health"

    def trial(self, endpoint: str) -> str:
        return f"{self.base}:trial:{endpoint}"

    @property
    def write_probe(self) -> str:
        """The key readiness writes while events are refused (see Queue.probe_write)."""
        return f"{self.base}:probe"

    def rate_limit(self, endpoint: str) -> str:
        return f"{self.base}:ratelimit:{endpoint}"

    def rate_booking(self, delivery: str) -> str:
        """A rate-limit slot booked for one delivery (see delivery/rate_limit.py)."""
        return f"{self.base}:ratebooking:{delivery}"


@cache
def partition_tag(gateway: str, partition: int, partitions: int) -> str:
    """The hash tag of one partition: ``gateway`` for partition 0 (the tag of a gateway
    without partitions, so its data stays where it is), ``gateway#N`` for the others, with
    the smallest N whose slot falls in a P-th of the slot space no other partition uses."""
    if partition == 0:
        return gateway
    share = REDIS_CLUSTER_HASH_SLOTS / partitions
    home = int(key_slot(gateway.encode()) // share)
    # partition 0 keeps its range; the others take the remaining ones in order
    wanted = [r for r in range(partitions) if r != home][partition - 1]
    n = 0
    while int(key_slot(f"{gateway}#{n}".encode()) // share) != wanted:
        n += 1
    return f"{gateway}#{n}"
