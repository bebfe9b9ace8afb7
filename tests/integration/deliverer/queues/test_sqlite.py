"""What only the embedded SQLite queue promises: one owner per file, restarts lose nothing."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from pathlib import Path

import pytest

from hookgate.deliverer.queues.base import (
    Depth,
    Event,
    QueueUnavailable,
)
from hookgate.deliverer.queues.factory import open_queue
from hookgate.deliverer.queues.sqlite import SQLiteQueue, lock_path
from tests.support.clock import FakeClock
from tests.support.queue_records import event, ok

pytestmark = pytest.mark.timeout(60)

A, B = "shop/a", "shop/b"


async def test_every_state_survives_close_and_reopen(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "data" / "queue.db"  # the data directory is created on demand
    q = SQLiteQueue(path, clock=clock)
    await q.open()
    for n in range(1, 6):
        await q.enqueue(event(n, key=f"k{n}"), [A])
    done, delayed, dead, leased = await q.fetch(4, wait=1)
    await q.complete(done, ok(done))
    await q.retry(delayed, ok(delayed, "retry"), due=clock() + 100)
    await q.bury(dead, ok(dead, "dead"), "Exhausted")
    assert await q.depth() == Depth(ready=1, delayed=1, dead=1, leased=1)
    await q.close()

    again = SQLiteQueue(path, clock=clock)
    await again.open()
    try:
        # the lease died with its process and is ready again at once
        assert await again.depth() == Depth(ready=2, delayed=1, dead=1, leased=0)
        assert await again.enqueue(event(9, key="k1"), [A]) == ("evt_1", False)
        record = await again.event(done.event.id)
        assert record is not None and [a.outcome for a in record.attempts] == ["success"]
        assert [x.delivery_id for x in await again.dead_letters()] == [dead.id]
        got = await again.fetch(10, wait=0)
        # the lease the closed process held counts as an attempt (it may have been made)
        assert sorted((d.id, d.attempt) for d in got) == sorted(
            [(leased.id, 2), ("evt_5/shop/a", 1)])
        for d in got:
            await again.complete(d, ok(d))
        clock.now += 100
        (retried,) = await again.fetch(10, wait=0)
        assert (retried.id, retried.attempt) == (delayed.id, 2)
    finally:
        await again.close()


async def test_second_opener_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    first = open_queue(f"sqlite:{path}", gateway="default")
    await first.open()
    second = SQLiteQueue(path)
    with pytest.raises(QueueUnavailable) as refused:
        await second.open()
    message = str(refused.value)
    assert f"queue file {path} is used by another hookgate process (pid {os.getpid()}?)" in (
        message)
    assert "stop it or use another --data-dir" in message
    await first.close()
    await second.open()  # free once the owner is gone
    await second.close()
    assert lock_path(path).exists()


async def test_file_is_in_wal_mode_and_commits_are_visible_to_readers(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    q = SQLiteQueue(path)
    await q.open()
    try:
        await q.enqueue(event(1), [A])
        with sqlite3.connect(path) as reader:  # e.g. an operator's sqlite3 shell
            assert reader.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            assert reader.execute("SELECT COUNT(*) FROM deliveries").fetchone() == (1,)
    finally:
        await q.close()


async def test_expired_lease_is_handed_out_again_and_the_late_holder_is_ignored(
        tmp_path: Path) -> None:
    clock = FakeClock()
    q = SQLiteQueue(tmp_path / "queue.db", clock=clock, visibility_timeout=30)
    await q.open()
    try:
        await q.enqueue(event(1), [A])
        (slow,) = await q.fetch(1, wait=1)
        clock.now += 29
        assert await q.fetch(1, wait=0) == []
        clock.now += 2
        (second,) = await q.fetch(1, wait=0)
        assert (second.id, second.attempt) == (slow.id, 2) and second.token != slow.token
        await q.bury(slow, None, "Gone")  # the hung holder wakes up: too late, no effect
        await q.complete(slow, ok(slow))  # its attempt is still logged
        assert await q.depth() == Depth(ready=0, delayed=0, dead=0, leased=1)
        await q.complete(second, ok(second))
        assert await q.depth() == Depth(ready=0, delayed=0, dead=0, leased=0)
        record = await q.event("evt_1")
        assert record is not None and len(record.attempts) == 2
    finally:
        await q.close()


async def test_waiting_fetch_wakes_when_a_retry_falls_due(tmp_path: Path) -> None:
    q = SQLiteQueue(tmp_path / "queue.db", poll_interval=30)
    await q.open()
    try:
        await q.enqueue(event(1), [A])
        (d,) = await q.fetch(1, wait=1)
        await q.retry(d, ok(d, "retry"), due=time.time() + 0.2)
        started = time.monotonic()
        (again,) = await q.fetch(1, wait=20)  # sleeps until the due time, not poll_interval
        assert again.attempt == 2 and time.monotonic() - started < 10
    finally:
        await q.close()


async def test_purge_drops_finished_events_only(tmp_path: Path) -> None:
    clock = FakeClock()
    q = SQLiteQueue(tmp_path / "queue.db", clock=clock)
    await q.open()
    try:
        await q.enqueue(event(1), [A])
        await q.enqueue(event(2), [A, B])
        await q.enqueue(event(3), [A])
        got = {d.id: d for d in await q.fetch(10, wait=1)}
        await q.complete(got["evt_1/shop/a"], ok(got["evt_1/shop/a"]))
        await q.complete(got["evt_2/shop/a"], ok(got["evt_2/shop/a"]))  # evt_2/b still leased
        await q.bury(got["evt_3/shop/a"], None, "EndpointDeleted")
        assert await q.purge(before=clock() - 1) == 0  # finished, but not long enough ago
        assert await q.purge(before=clock() + 1) == 1
        assert await q.event("evt_1") is None
        assert await q.event("evt_2") is not None  # a delivery is still pending
        assert await q.replay(all=True) == 1  # dead letters keep their event
        (replayed,) = await q.fetch(10, wait=0)
        assert replayed.event.body == b'{"n":3}'
    finally:
        await q.close()


async def test_group_commit_keeps_concurrent_enqueues_apart(tmp_path: Path) -> None:
    q = SQLiteQueue(tmp_path / "queue.db")
    await q.open()
    try:
        results = await asyncio.gather(
            *(q.enqueue(event(n % 50), [A]) for n in range(200)), return_exceptions=True)
        assert all(not isinstance(r, BaseException) for r in results)
        assert sum(1 for r in results if isinstance(r, tuple) and r[1]) == 50
        assert (await q.depth()).ready == 50
    finally:
        await q.close()


async def test_concurrent_completions_are_written_together_and_exactly(tmp_path: Path) -> None:
    """Completions made together share one write: each lease still counts on its own (a
    stale one removes nothing), events finish when their last delivery does, and a caller
    cancelled while waiting does not undo the others' completion."""
    clock = FakeClock()
    q = SQLiteQueue(tmp_path / "queue.db", clock=clock, visibility_timeout=30)
    await q.open()
    try:
        for n in range(1, 41):
            await q.enqueue(event(n), [A, B] if n <= 20 else [A])
        first = await q.fetch(100, wait=1)
        stale = next(d for d in first if d.id == "evt_40/shop/a")
        clock.now += 31
        again = await q.fetch(100, wait=0)  # every lease expired: all handed out again
        assert len(first) == len(again) == 60
        by_id = {d.id: d for d in again}
        # complete everything but evt_1/shop/b, plus the stale lease of evt_40/shop/a
        done = [d for d in again if d.id != "evt_1/shop/b"]
        calls = [asyncio.ensure_future(q.complete(d, ok(d))) for d in done]
        calls.append(asyncio.ensure_future(q.complete(stale, ok(stale))))
        await asyncio.sleep(0)  # one loop turn: every call has joined the group and waits
        calls[0].cancel()
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert isinstance(results[0], asyncio.CancelledError)
        assert all(r is None for r in results[1:])
        assert await q.depth() == Depth(ready=0, delayed=0, dead=0, leased=1)
        assert await q.purge(before=clock() + 1) == 39  # evt_1 waits for shop/b
        record = await q.event("evt_40")
        assert record is None
        assert await q.event("evt_1") is not None
        await q.complete(by_id["evt_1/shop/b"], ok(by_id["evt_1/shop/b"]))
        assert await q.purge(before=clock() + 1) == 1
    finally:
        await q.close()


async def test_closed_queue_and_unwritable_directory_are_unavailable(tmp_path: Path) -> None:
    q = SQLiteQueue(tmp_path / "queue.db")
    with pytest.raises(QueueUnavailable, match="closed; open it first"):
        await q.enqueue(event(1), [A])
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(QueueUnavailable, match="--data-dir"):
        await SQLiteQueue(blocker / "queue.db").open()


async def test_a_lease_carries_a_bounded_amount_of_event_bodies(tmp_path: Path) -> None:
    """Bodies travel inside one JSON text per lease: large events are leased a few at a
    time (at least one, even one larger than the budget), in queue order."""
    q = SQLiteQueue(tmp_path / "queue.db", lease_bytes=2500)
    await q.open()
    try:
        for n in range(1, 6):
            big = Event(id=f"evt_{n}", type="t", body=b"x" * 1000, accepted_at=1.0)
            await q.enqueue(big, [A])
        await q.enqueue(Event(id="evt_6", type="t", body=b"y" * 5000, accepted_at=1.0), [A])
        sizes = []
        while got := await q.fetch(100, wait=0):
            sizes.append([d.event.id for d in got])
            assert all(len(d.event.body) in (1000, 5000) for d in got)
        assert sizes == [["evt_1", "evt_2"], ["evt_3", "evt_4"], ["evt_5"], ["evt_6"]]
    finally:
        await q.close()
