"""The queue contract: one suite, run against the SQLite and the Redis backend alike.

Time is moved with an injected clock, never slept through; waiting happens only inside
``fetch(wait=...)``, bounded, as the dispatcher does it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hookgate.deliverer.queues.base import (
    Attempt,
    Delivery,
    Depth,
    Event,
    PausedEndpoint,
    Queue,
    QueueUnavailable,
    delivery_id,
)
from hookgate.deliverer.queues.redis.partitions import PartitionedQueue
from hookgate.deliverer.queues.redis.queue import RedisQueue
from hookgate.deliverer.queues.sqlite import SQLiteQueue
from tests.support.clock import FakeClock
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(60)

A, B, C = "shop/a", "shop/b", "shop/c"


@dataclass
class Backend:
    """Makes queues of one kind sharing one store, and knows how another consumer appears."""

    name: str
    clock: FakeClock
    make: Callable[..., Queue]
    opened: list[Queue] = field(default_factory=list)

    async def open(self, **options: float) -> Queue:
        queue = self.make(**options)
        await queue.open()
        self.opened.append(queue)
        return queue

    async def other_consumer(self, first: Queue) -> Queue:
        """A second consumer that sees ``first``'s leases once they expire.

        SQLite has one process per file: the other consumer is the next process, after the
        first one died. Redis: a second deliverer, whose lease on silent entries expires fast.
        """
        if self.name == "sqlite":
            await first.close()
            return await self.open()
        return await self.open(visibility_timeout=0.2)


#: Redis, reached each way the queue supports: one server, through Sentinel and as a Redis
#: Cluster, each also over TLS with an ACL user (the TLS Sentinels with a password of their
#: own); and a queue in 3 partitions on one server and on the cluster (where each lands on
#: its own master).
REDIS_URLS = {"redis": "redis_url", "sentinel": "redis_sentinel_url", "tls": "redis_tls_url",
              "cluster": "redis_cluster_url", "sentinel-tls": "redis_sentinel_tls_url",
              "cluster-tls": "redis_cluster_tls_url", "partitioned": "redis_url",
              "cluster-partitioned": "redis_cluster_url"}
#: Backends whose gateway queue is spread over 3 partitions (on one server, on the cluster).
PARTITIONED = {"partitioned": 3, "cluster-partitioned": 3}


@pytest.fixture(params=["sqlite", *(pytest.param(name, marks=pytest.mark.redis)
                                    for name in REDIS_URLS)])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    clock = FakeClock()
    make: Callable[..., Queue]
    if request.param == "sqlite":
        path = tmp_path / "queue.db"

        def make(visibility_timeout: float = 30.0) -> Queue:
            return SQLiteQueue(path, visibility_timeout=visibility_timeout, clock=clock)
    else:
        url = request.getfixturevalue(REDIS_URLS[request.param])

        partitions = PARTITIONED.get(request.param, 1)

        def make(visibility_timeout: float = 30.0) -> Queue:
            if partitions > 1:
                return PartitionedQueue(url, gateway="shop/default", partitions=partitions,
                                        visibility_timeout=visibility_timeout, clock=clock)
            return RedisQueue(url, gateway="shop/default", visibility_timeout=visibility_timeout,
                              clock=clock)
    backend = Backend(request.param, clock, make)
    yield backend
    for queue in backend.opened:
        await queue.close()


@pytest.fixture
async def queue(backend: Backend) -> Queue:
    return await backend.open()


def event(n: int = 1, key: str | None = None, body: bytes | None = None) -> Event:
    body = body if body is not None else b'{"type":"order.paid","data":{"n":%d}}' % n
    return Event(id=f"evt_{n}", type="order.paid", body=body, accepted_at=1_700_000_000.5 + n,
                 source="api", idempotency_key=key)


def outcome(d: Delivery, result: str = "success", status: int | None = 200,
            error: str | None = None) -> Attempt:
    return Attempt(endpoint=d.endpoint, attempt=d.attempt, at=1_700_000_100.0, duration=0.25,
                   status=status, error=error, outcome=result)


async def take(queue: Queue, n: int, wait: float = 5.0) -> list[Delivery]:
    """Fetch until ``n`` deliveries arrived (each fetch bounded), then check nothing more."""
    got: list[Delivery] = []
    deadline = time.monotonic() + wait
    while len(got) < n and time.monotonic() < deadline:
        got += await queue.fetch(n - len(got), wait=deadline - time.monotonic())
    assert len(got) == n, f"expected {n} deliveries, got {got}"
    return got


async def test_enqueue_fetch_complete_logs_the_attempt(queue: Queue) -> None:
    body = b'{"type":"order.paid","data":{"bytes":"\xff\x00"}}'  # stored as raw bytes
    ev = event(1, body=body)
    assert await queue.enqueue(ev, [A]) == ("evt_1", True)
    (d,) = await take(queue, 1)
    assert (d.id, d.endpoint, d.attempt, d.event) == (delivery_id("evt_1", A), A, 1, ev)
    assert d.event.body == body
    await queue.complete(d, outcome(d))
    record = await queue.event("evt_1")
    assert record is not None
    assert record.event == ev and record.endpoints == (A,)
    assert record.attempts == (outcome(d),)
    assert await queue.fetch(10, wait=0) == []
    assert await queue.depth() == Depth(ready=0, delayed=0, dead=0, leased=0)


async def test_fan_out_gives_one_delivery_per_endpoint(queue: Queue) -> None:
    await queue.enqueue(event(1), [A, B, C, A])
    got = await take(queue, 3)
    assert sorted(d.endpoint for d in got) == [A, B, C]
    assert len({d.id for d in got}) == 3 and len({d.token for d in got}) == 3
    assert {d.event.id for d in got} == {"evt_1"}
    assert (await queue.event("evt_1")).endpoints == (A, B, C)  # type: ignore[union-attr]


async def test_fetch_is_oldest_first_and_respects_limit(backend: Backend, queue: Queue) -> None:
    for n in range(1, 6):
        await queue.enqueue(event(n), [A])
    first = await queue.fetch(2, wait=1)
    rest = await take(queue, 3)
    assert len(first) == 2
    if backend.name in PARTITIONED:  # oldest first within each partition, not across them
        assert sorted(d.event.id for d in first + rest) == [f"evt_{n}" for n in range(1, 6)]
        return
    assert [d.event.id for d in first] == ["evt_1", "evt_2"]
    assert [d.event.id for d in rest] == ["evt_3", "evt_4", "evt_5"]


async def test_waiting_fetch_wakes_on_enqueue(queue: Queue) -> None:
    waiting = asyncio.create_task(queue.fetch(10, wait=30))
    await asyncio.sleep(0)  # let it start waiting; correctness does not depend on it
    await queue.enqueue(event(1), [A])
    started = time.monotonic()
    got = await asyncio.wait_for(waiting, 10)
    assert [d.event.id for d in got] == ["evt_1"]
    assert time.monotonic() - started < 5  # woken, not timed out


async def test_fetch_with_nothing_ready_returns_empty_after_wait(queue: Queue) -> None:
    started = time.monotonic()
    assert await queue.fetch(10, wait=0.2) == []
    assert 0.15 < time.monotonic() - started < 5


async def test_retry_becomes_ready_at_its_due_time(backend: Backend, queue: Queue) -> None:
    await queue.enqueue(event(1), [A])
    (d,) = await take(queue, 1)
    failed = outcome(d, "retry", 500, "HTTP 500")
    await queue.retry(d, failed, due=backend.clock() + 30)
    assert await queue.depth() == Depth(ready=0, delayed=1, dead=0, leased=0)
    assert await queue.fetch(10, wait=0) == []
    backend.clock.advance(29)
    assert await queue.fetch(10, wait=0) == []
    backend.clock.advance(1.5)
    (again,) = await take(queue, 1)
    assert (again.id, again.attempt, again.event) == (d.id, 2, d.event)
    assert again.token
    await queue.complete(again, outcome(again))
    record = await queue.event("evt_1")
    assert record is not None
    assert [(a.attempt, a.outcome) for a in record.attempts] == [(1, "retry"), (2, "success")]


async def test_postpone_counts_no_attempt(backend: Backend, queue: Queue) -> None:
    await queue.enqueue(event(1), [A])
    (d,) = await take(queue, 1)
    await queue.postpone(d, due=backend.clock() + 10)
    assert (await queue.depth()).delayed == 1
    assert await queue.fetch(10, wait=0) == []
    backend.clock.advance(10)
    (again,) = await take(queue, 1)
    assert (again.id, again.attempt) == (d.id, 1)
    assert (await queue.event("evt_1")).attempts == ()  # type: ignore[union-attr]


async def test_release_makes_leased_deliveries_ready_at_once(queue: Queue) -> None:
    await queue.enqueue(event(1), [A, B])
    got = await take(queue, 2)
    assert (await queue.depth()).leased == 2
    await queue.release(got)
    assert await queue.depth() == Depth(ready=2, delayed=0, dead=0, leased=0)
    again = await queue.fetch(10, wait=0)
    assert sorted((d.id, d.attempt) for d in again) == sorted((d.id, d.attempt) for d in got)


async def test_bury_then_replay_by_id_endpoint_and_all(backend: Backend, queue: Queue) -> None:
    await queue.enqueue(event(1), [A, B])
    await queue.enqueue(event(2), [A])
    await queue.enqueue(event(3), [C])
    first = {d.id: d for d in await take(queue, 4)}
    # one of them dies after two attempts, the others at once
    tired = first[delivery_id("evt_1", A)]
    await queue.retry(tired, outcome(tired, "retry", 503, "HTTP 503"), due=backend.clock())
    (tired,) = await take(queue, 1)
    assert tired.attempt == 2
    await queue.bury(tired, outcome(tired, "dead", 503, "HTTP 503"), "Exhausted")
    for d in first.values():
        if d.id != tired.id:
            await queue.bury(d, None, "EndpointDeleted")
    assert await queue.depth() == Depth(ready=0, delayed=0, dead=4, leased=0)

    letters = {x.delivery_id: x for x in await queue.dead_letters()}
    assert set(letters) == set(first)
    dead = letters[tired.id]
    assert (dead.event_id, dead.event_type, dead.endpoint, dead.attempts, dead.reason,
            dead.error) == ("evt_1", "order.paid", A, 2, "Exhausted", "HTTP 503")
    assert letters[delivery_id("evt_3", C)].attempts == 0
    assert {x.delivery_id for x in await queue.dead_letters(endpoint=A)} == {
        delivery_id("evt_1", A), delivery_id("evt_2", A)}
    assert len(await queue.dead_letters(limit=2)) == 2

    assert await queue.replay(ids=[tired.id]) == 1
    (replayed,) = await take(queue, 1)
    assert (replayed.id, replayed.attempt, replayed.event) == (tired.id, 1, tired.event)
    assert await queue.replay(ids=[tired.id]) == 0  # no longer dead

    assert await queue.replay(endpoint=A) == 1
    (by_endpoint,) = await take(queue, 1)
    assert by_endpoint.id == delivery_id("evt_2", A)

    assert await queue.replay(all=True) == 2
    rest = await take(queue, 2)
    assert {d.id for d in rest} == {delivery_id("evt_1", B), delivery_id("evt_3", C)}
    assert all(d.attempt == 1 for d in rest)
    assert await queue.dead_letters() == []
    assert await queue.replay(all=True) == 0
    assert await queue.replay() == 0


async def test_idempotency_key_within_ttl_returns_original(backend: Backend,
                                                           queue: Queue) -> None:
    assert await queue.enqueue(event(1, key="order-42"), [A], idempotency_ttl=60) == (
        "evt_1", True)
    assert await queue.enqueue(event(2, key="order-42"), [A, B], idempotency_ttl=60) == (
        "evt_1", False)
    assert await queue.event("evt_2") is None
    (first,) = await take(queue, 1)
    assert await queue.fetch(10, wait=0) == []
    await queue.complete(first, outcome(first))
    backend.clock.advance(61)
    assert await queue.enqueue(event(3, key="order-42"), [A], idempotency_ttl=60) == (
        "evt_3", True)
    (d,) = await take(queue, 1)
    assert d.event.id == "evt_3" and d.event.idempotency_key == "order-42"


async def test_same_event_id_twice_stores_nothing_new(queue: Queue) -> None:
    assert await queue.enqueue(event(1), [A]) == ("evt_1", True)
    assert await queue.enqueue(event(1), [A, B]) == ("evt_1", False)
    assert len(await take(queue, 1)) == 1
    assert await queue.fetch(10, wait=0) == []


async def test_expired_lease_is_reclaimed_by_another_consumer(backend: Backend,
                                                              queue: Queue) -> None:
    await queue.enqueue(event(1), [A, B])
    leased = {d.id: d for d in await take(queue, 2)}
    other = await backend.other_consumer(queue)
    reclaimed = await take(other, 2, wait=15)
    # the lease that expired counts as an attempt: a poison delivery runs out of attempts
    assert {(d.id, d.attempt) for d in reclaimed} == {(d.id, d.attempt + 1)
                                                     for d in leased.values()}
    for d in reclaimed:
        await other.complete(d, outcome(d))
    assert await other.depth() == Depth(ready=0, delayed=0, dead=0, leased=0)


async def test_depth_counts_each_state(backend: Backend, queue: Queue) -> None:
    for n in range(1, 5):
        await queue.enqueue(event(n), [A])
    assert await queue.depth() == Depth(ready=4, delayed=0, dead=0, leased=0)
    got = await queue.fetch(3, wait=1)
    assert len(got) == 3
    assert await queue.depth() == Depth(ready=1, delayed=0, dead=0, leased=3)
    await queue.retry(got[0], outcome(got[0], "retry", 500), due=backend.clock() + 60)
    await queue.bury(got[1], outcome(got[1], "dead", 500), "Exhausted")
    assert await queue.depth() == Depth(ready=1, delayed=1, dead=1, leased=1)
    await queue.complete(got[2], outcome(got[2]))
    assert await queue.depth() == Depth(ready=1, delayed=1, dead=1, leased=0)
    backend.clock.advance(60)  # a retry that fell due counts as ready before anyone fetches
    assert await queue.depth() == Depth(ready=2, delayed=0, dead=1, leased=0)


async def test_close_ends_a_waiting_fetch_empty_handed(backend: Backend) -> None:
    queue = await backend.open()
    waiting = asyncio.create_task(queue.fetch(10, wait=30))
    await asyncio.sleep(0)
    await queue.close()
    assert await asyncio.wait_for(waiting, 10) == []


async def test_unknown_event_is_none(queue: Queue) -> None:
    assert await queue.event("evt_nope") is None
    assert await queue.dead_letters(endpoint="shop/nope") == []


async def test_event_without_endpoints_is_kept_but_not_delivered(queue: Queue) -> None:
    assert await queue.enqueue(event(1), []) == ("evt_1", True)
    assert await queue.fetch(10, wait=0) == []
    record = await queue.event("evt_1")
    assert record is not None and record.endpoints == ()


# -- ordered delivery (an endpoint with ordering.key) ------------------------------------------


async def test_ordered_deliveries_go_out_one_at_a_time_per_key(queue: Queue) -> None:
    for n in range(1, 5):  # keys: x y x y
        await queue.enqueue(event(n), [A, B], ordering_keys={A: "xy"[(n - 1) % 2]})
    first = await take(queue, 6)  # A's heads of x and y, and all four of B (unordered)
    assert sorted(d.event.id for d in first if d.endpoint == A) == ["evt_1", "evt_2"]
    assert {d.ordering_key for d in first if d.endpoint == A} == {"x", "y"}
    assert all(d.ordering_key is None for d in first if d.endpoint == B)
    assert await queue.fetch(10, wait=0.1) == []  # evt_3 and evt_4 wait for their heads
    head_x = next(d for d in first if d.endpoint == A and d.ordering_key == "x")
    await queue.complete(head_x, outcome(head_x))
    (nxt,) = await take(queue, 1)
    assert (nxt.event.id, nxt.ordering_key) == ("evt_3", "x")
    assert await queue.fetch(10, wait=0.1) == []  # y is still held by evt_2


async def test_completions_made_together_each_count(queue: Queue) -> None:
    """Both backends write completions made in the same moment together: a fan-out event,
    ordered heads and unordered deliveries finished at once must each take effect."""
    for n in range(1, 5):  # A ordered by keys x y x y, B unordered
        await queue.enqueue(event(n), [A, B], ordering_keys={A: "xy"[(n - 1) % 2]})
    first = await take(queue, 6)
    await asyncio.gather(*(queue.complete(d, outcome(d)) for d in first))
    second = await take(queue, 2)  # the heads' successors, released by the completions
    assert sorted((d.event.id, d.ordering_key) for d in second) == [("evt_3", "x"),
                                                                      ("evt_4", "y")]
    await asyncio.gather(*(queue.complete(d, outcome(d)) for d in second))
    assert await queue.depth() == Depth(ready=0, delayed=0, dead=0, leased=0)
    for n in range(1, 5):
        record = await queue.event(f"evt_{n}")
        assert record is not None
        assert sorted(a.endpoint for a in record.attempts) == [A, B]


async def test_a_failing_head_holds_back_only_its_own_key(backend: Backend, queue: Queue) -> None:
    await queue.enqueue(event(1), [A], ordering_keys={A: "k1"})
    await queue.enqueue(event(2), [A], ordering_keys={A: "k1"})
    await queue.enqueue(event(3), [A], ordering_keys={A: "k2"})
    got = await take(queue, 2)
    head = next(d for d in got if d.event.id == "evt_1")
    other = next(d for d in got if d.event.id == "evt_3")
    await queue.retry(head, outcome(head, "retry", 500, "HTTP 500"), due=backend.clock() + 30)
    await queue.complete(other, outcome(other))
    assert await queue.fetch(10, wait=0.1) == []  # evt_2 waits behind the retrying head
    backend.clock.advance(31)
    (again,) = await take(queue, 1)
    assert (again.event.id, again.attempt, again.ordering_key) == ("evt_1", 2, "k1")
    await queue.release([again])  # a graceful stop keeps the key held too
    (again,) = await take(queue, 1)
    assert again.event.id == "evt_1"
    await queue.bury(again, outcome(again, "dead", 500, "HTTP 500"), "Exhausted")
    (second,) = await take(queue, 1)  # burying the head lets the next one go
    assert (second.event.id, second.ordering_key) == ("evt_2", "k1")
    await queue.complete(second, outcome(second))
    assert await queue.fetch(10, wait=0) == []
    assert (await queue.depth()).ready == 0


async def test_ordered_key_survives_postpone_and_lease_expiry(backend: Backend,
                                                              queue: Queue) -> None:
    await queue.enqueue(event(1), [A], ordering_keys={A: "k"})
    await queue.enqueue(event(2), [A], ordering_keys={A: "k"})
    (head,) = await take(queue, 1)
    await queue.postpone(head, due=backend.clock() + 5)
    assert await queue.fetch(10, wait=0.1) == []
    backend.clock.advance(5)
    (head,) = await take(queue, 1)
    assert head.event.id == "evt_1"
    other = await backend.other_consumer(queue)
    (reclaimed,) = await take(other, 1, wait=15)
    assert (reclaimed.event.id, reclaimed.ordering_key) == ("evt_1", "k")
    await other.complete(reclaimed, outcome(reclaimed))
    (second,) = await take(other, 1)
    assert second.event.id == "evt_2"


async def test_replayed_dead_letters_rejoin_their_sequence_in_order(queue: Queue) -> None:
    """Dead letters of one key replayed together go out one at a time, in the order they
    died, after the key's deliveries still waiting; other keys are not held back."""
    for n in (1, 2):  # both die, one after the other
        await queue.enqueue(event(n), [A], ordering_keys={A: "k"})
        (d,) = await take(queue, 1)
        await queue.bury(d, outcome(d, "dead", 500, "HTTP 500"), "Exhausted")
    await queue.enqueue(event(3), [A], ordering_keys={A: "k"})  # the live head of k
    await queue.enqueue(event(4), [A], ordering_keys={A: "k"})  # waiting behind it
    (head,) = await take(queue, 1)
    assert head.event.id == "evt_3"
    assert await queue.replay(endpoint=A) == 2
    assert await queue.fetch(10, wait=0.1) == []  # both wait behind evt_3 (and evt_4)
    await queue.enqueue(event(5), [A], ordering_keys={A: "other"})
    (free,) = await take(queue, 1)
    assert free.event.id == "evt_5"
    order = [head.event.id]
    while len(order) < 4:
        await queue.complete(head, outcome(head))
        (head,) = await take(queue, 1)
        assert head.ordering_key == "k" and head.attempt == 1
        assert await queue.fetch(10, wait=0) == []  # one at a time
        order.append(head.event.id)
    assert order == ["evt_3", "evt_4", "evt_1", "evt_2"]


async def test_a_replayed_ordered_dead_letter_goes_at_once_when_its_key_is_idle(
        queue: Queue) -> None:
    await queue.enqueue(event(1), [A], ordering_keys={A: "k"})
    (d,) = await take(queue, 1)
    await queue.bury(d, None, "EndpointDeleted")
    assert await queue.replay([d.id]) == 1
    (again,) = await take(queue, 1)
    assert (again.event.id, again.ordering_key) == ("evt_1", "k")
    await queue.enqueue(event(2), [A], ordering_keys={A: "k"})
    assert await queue.fetch(10, wait=0.1) == []  # the replayed one holds the key again
    await queue.complete(again, outcome(again))
    (nxt,) = await take(queue, 1)
    assert nxt.event.id == "evt_2"


# -- runtime pauses ------------------------------------------------------------------------------


async def test_runtime_pause_is_stored_and_lifted(queue: Queue) -> None:
    assert await queue.paused_endpoints() == {}
    pause = PausedEndpoint(endpoint=A, reason="Gone", message="HTTP 410", at=1_700_000_000.0)
    assert await queue.pause_endpoint(pause) is True
    assert await queue.pause_endpoint(pause) is False  # already paused: the first reason stays
    assert await queue.paused_endpoints() == {A: pause}
    assert await queue.resume_endpoint(A) is True
    assert await queue.resume_endpoint(A) is False
    assert await queue.paused_endpoints() == {}


# -- endpoint health (circuit breakers, auto-disable) ----------------------------------------


async def two_deliverers(backend: Backend) -> tuple[Queue, Queue]:
    """Two deliverers on one store; SQLite has one process per file, so it is one twice."""
    first = await backend.open()
    return first, (first if backend.name == "sqlite" else await backend.open())


async def test_failures_are_counted_across_consumers_until_a_success(backend: Backend) -> None:
    first, second = await two_deliverers(backend)
    assert await first.endpoint_health() == {}
    h = await first.record_failure(A, 1_700_000_010.0)
    assert (h.endpoint, h.failures, h.failing_since, h.opened_at) == (A, 1, 1_700_000_010.0, None)
    h = await second.record_failure(A, 1_700_000_005.0)  # an earlier attempt, finished later
    assert (h.failures, h.failing_since) == (2, 1_700_000_005.0)
    await second.record_failure(B, 1_700_000_020.0)
    seen = await first.endpoint_health()
    assert set(seen) == {A, B} and seen[A].failures == 2 and seen[B].failures == 1
    await first.record_success(A)
    assert set(await second.endpoint_health()) == {B}
    assert (await second.record_failure(A, 1_700_000_030.0)).failures == 1  # a new run


async def test_the_failure_that_reaches_the_threshold_opens_the_circuit(
        backend: Backend) -> None:
    first, second = await two_deliverers(backend)
    now = backend.clock.now
    assert await first.claim_trial(A, now + 30) is False  # nothing on record: nothing to try
    h = await first.record_failure(A, 1_700_000_000.0, open_after=2, reopen=True)
    assert (h.failures, h.opened_at) == (1, None)  # closed: reopen does not apply
    h = await second.record_failure(A, 1_700_000_001.0, open_after=2)
    assert (h.failures, h.opened_at) == (2, now)  # opened by the queue's clock
    assert (await first.endpoint_health())[A].opened_at == now
    backend.clock.now += 10
    h = await first.record_failure(A, 1_700_000_002.0, open_after=2)
    assert (h.failures, h.opened_at) == (3, now)  # open already: the opening stays
    h = await first.record_failure(B, 1_700_000_002.0)  # no breaker: never opens
    assert h.opened_at is None


async def test_one_trial_at_a_time_and_a_failed_trial_restarts_the_cooldown(
        backend: Backend) -> None:
    first, second = await two_deliverers(backend)
    await first.record_failure(A, 1_700_000_000.0, open_after=1)
    assert await first.claim_trial(A, backend.clock.now + 30) is True
    assert await second.claim_trial(A, backend.clock.now + 30) is False  # held by the first
    backend.clock.now += 5
    h = await first.record_failure(A, 1_700_000_005.0, open_after=1, reopen=True)
    assert h.opened_at == backend.clock.now  # a new cooldown, and the claim is free again
    assert await second.claim_trial(A, backend.clock.now + 30) is True
    await first.record_success(A)  # a trial succeeded: record and claim are gone
    assert await first.endpoint_health() == {}
    await first.record_failure(A, 1_700_000_050.0, open_after=1)
    assert await first.claim_trial(A, backend.clock.now + 30) is True


async def test_a_trial_claim_lapses_at_its_time(backend: Backend) -> None:
    queue = await backend.open()
    await queue.record_failure(A, 1_700_000_000.0)
    assert await queue.claim_trial(A, backend.clock.now + 0.05) is True  # its holder died
    backend.clock.now += 1
    # SQLite compares with the queue's clock; Redis lets the claim's TTL (real time) run out
    assert await wait_for(lambda: queue.claim_trial(A, backend.clock.now + 30), timeout=5,
                          what="the lapsed claim to be taken again")


async def test_endpoint_health_survives_a_restart(backend: Backend) -> None:
    queue = await backend.open()
    await queue.record_failure(A, 1_700_000_000.0, open_after=1)
    await queue.close()
    again = await backend.open()
    h = (await again.endpoint_health())[A]
    assert (h.failures, h.failing_since, h.opened_at) == (1, 1_700_000_000.0, backend.clock.now)


async def test_broker_message_is_kept_as_a_dead_letter_of_its_source(queue: Queue) -> None:
    raw = b"\xffnot json\x00"  # kept byte for byte
    letter = await queue.bury_message("shop/orders-kafka", "NotJSON", raw,
                                      {"event-type": "order.paid", "kafka-offset": "7"},
                                      "the payload is not JSON")
    await queue.enqueue(event(1), [A])
    (d,) = await take(queue, 1)
    await queue.bury(d, None, "EndpointDeleted")

    (kept,) = await queue.dead_letters(endpoint="shop/orders-kafka")
    assert kept.delivery_id == letter
    assert (kept.endpoint, kept.attempts, kept.reason, kept.error, kept.event_type) == (
        "shop/orders-kafka", 0, "NotJSON", "the payload is not JSON", "")
    assert kept.headers == {"event-type": "order.paid", "kafka-offset": "7"}
    assert len(await queue.dead_letters()) == 2
    record = await queue.event(kept.event_id)
    assert record is not None and record.event.body == raw
    assert record.event.source == "shop/orders-kafka"
    assert (await queue.depth()).dead == 2

    # nothing to replay: the message never became an event; the delivery's letter still is
    assert await queue.replay(ids=[letter]) == 0
    assert await queue.replay(endpoint="shop/orders-kafka") == 0
    assert await queue.replay(all=True) == 1
    assert [x.delivery_id for x in await queue.dead_letters()] == [letter]
    assert await queue.replay(all=True) == 0


async def test_a_write_probe_succeeds_on_an_open_queue_and_fails_on_a_closed_one(
        queue: Queue) -> None:
    await queue.probe_write()
    await queue.probe_write()  # the same row or key, rewritten: nothing accumulates
    assert await queue.depth() == Depth(ready=0, delayed=0, dead=0, leased=0)
    await queue.close()
    with pytest.raises(QueueUnavailable):
        await queue.probe_write()
