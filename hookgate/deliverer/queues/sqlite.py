"""The embedded queue: one SQLite file, used by one hookgate process at a time.

This is the queue of ``hookgate run``: nothing to install, survives restarts, and durable on
commit (WAL with ``synchronous=FULL``), so the ingest API may answer 202 as soon as
:meth:`SQLiteQueue.enqueue` returns.

How it stays out of the event loop's way: every statement runs on one dedicated thread (a
single-worker executor owning the only connection). Calls are queued and the thread runs
whatever has piled up in ONE transaction, each call in its own savepoint: under load many
enqueues and completions share one commit and one fsync (group commit), and a failing call
rolls back alone. Completions go further: all those made while the thread is busy become ONE
call of three statements (insert the attempts, delete the deliveries, count down the
events), because the thread's Python work holds the GIL the event loop needs.

How it knows it is alone: an exclusive ``flock`` on ``PATH.lock``. A second process gets
:class:`QueueUnavailable` at open; and because holding the lock proves any previous owner is
dead, leases a killed process left behind are handed out again at once instead of waiting
for their visibility timeout.

How ``fetch`` waits: queue changes made by this process (enqueue, release, replay, retry,
postpone) wake waiting fetchers immediately; otherwise they sleep until the next delayed
delivery or expiring lease is due, never longer than ``poll_interval``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import functools
import json
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from hookgate.deliverer.queues.base import (
    MESSAGE_PREFIX,
    Attempt,
    DeadLetter,
    Delivery,
    Depth,
    EndpointHealth,
    Event,
    EventRecord,
    PausedEndpoint,
    QueueUnavailable,
    delivery_id,
    new_event_id,
    settle,
)

__all__ = ["SCHEMA", "SQLiteQueue", "lock_path"]

log = logging.getLogger(__name__)

T = TypeVar("T")
_Op = Callable[[sqlite3.Connection], Any]

#: Calls run in one transaction at most; bounds how long one commit keeps callers waiting.
_MAX_BATCH = 256
#: Rows removed per transaction by :meth:`SQLiteQueue.purge`, so purging never stalls delivery.
_PURGE_CHUNK = 1000
#: Event bodies one lease carries at most (always at least one delivery): bodies travel as
#: hex inside JSON, so a batch of large events must not become hundreds of megabytes.
LEASE_BYTES = 8 * 1024 * 1024
_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
#: Bytes :meth:`SQLiteQueue.probe_write` writes: a typical event with its deliveries.
_PROBE_BYTES = 64 * 1024

# ``avail_at`` is the one ordering column: when a ready row became ready, when a delayed row
# is due, when a leased row's lease expires. Fetch takes the oldest rows with avail_at <= now,
# which covers "ready", "delayed and due" and "lease expired" with one index range.
SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    body BLOB NOT NULL,
    accepted_at REAL NOT NULL,
    source TEXT,
    idempotency_key TEXT,
    endpoints TEXT NOT NULL,          -- JSON list, in enqueue order
    pending INTEGER NOT NULL,         -- deliveries not finished yet (dead letters count)
    finished_at REAL                  -- when pending dropped to 0; purge looks at this
);
CREATE INDEX IF NOT EXISTS events_finished ON events(finished_at) WHERE pending = 0;

CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    event_id TEXT NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS idempotency_expiry ON idempotency(expires_at);

CREATE TABLE IF NOT EXISTS deliveries (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    event_id TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('ready', 'leased', 'delayed')),
    attempt INTEGER NOT NULL,
    avail_at REAL NOT NULL,
    token TEXT                        -- lease handle while leased
);
CREATE INDEX IF NOT EXISTS deliveries_fetch ON deliveries(avail_at);
CREATE INDEX IF NOT EXISTS deliveries_state ON deliveries(state, avail_at);

CREATE TABLE IF NOT EXISTS dead_letters (
    id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    reason TEXT NOT NULL,
    error TEXT,
    dead_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_time ON dead_letters(dead_at);
CREATE INDEX IF NOT EXISTS dead_letters_endpoint ON dead_letters(endpoint, dead_at);

CREATE TABLE IF NOT EXISTS attempts (
    seq INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    at REAL NOT NULL,
    duration REAL NOT NULL,
    status INTEGER,
    error TEXT,
    outcome TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS attempts_event ON attempts(event_id, seq);

CREATE TABLE IF NOT EXISTS write_probe (
    id INTEGER PRIMARY KEY,           -- one row, rewritten by probe_write
    at REAL NOT NULL,
    pad BLOB                          -- as large as an ordinary event
);

CREATE TABLE IF NOT EXISTS paused_endpoints (
    endpoint TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    message TEXT NOT NULL,
    at REAL NOT NULL
);

CREATE TABLE IF NOT EXISTS endpoint_health (  -- endpoints whose last attempt failed
    endpoint TEXT PRIMARY KEY,
    failures INTEGER NOT NULL,        -- consecutive failed attempts
    failing_since REAL NOT NULL,
    opened_at REAL,                   -- the circuit breaker opened then; NULL: closed
    trial_until REAL                  -- a half-open circuit's trial is claimed until then
);
"""

# Added after the first release: applied to queue files that lack them.
_MIGRATIONS = (
    ("deliveries", "okey", "ALTER TABLE deliveries ADD COLUMN okey TEXT"),
    # JSON object: the headers of a broker message kept by bury_message
    ("dead_letters", "headers", "ALTER TABLE dead_letters ADD COLUMN headers TEXT"),
    # JSON list of [name, value]: the request headers an inbound source keeps
    ("events", "headers", "ALTER TABLE events ADD COLUMN headers TEXT"),
    # the ordering key of a dead ordered delivery: a replay puts it back in its sequence
    ("dead_letters", "okey", "ALTER TABLE dead_letters ADD COLUMN okey TEXT"),
)
_ORDER_INDEX = ("CREATE INDEX IF NOT EXISTS deliveries_order ON deliveries(endpoint, okey, seq) "
                "WHERE okey IS NOT NULL")
# A delivery is available when it is due and, if ordered, no older delivery with the same
# (endpoint, ordering key) is unfinished: only the head of each sequence is ever handed out.
_AVAILABLE = ("avail_at <= :now AND (d.okey IS NULL OR NOT EXISTS ("
              "SELECT 1 FROM deliveries p WHERE p.endpoint = d.endpoint AND p.okey = d.okey "
              "AND p.seq < d.seq))")

_EVENT_COLUMNS = "id, type, body, accepted_at, source, idempotency_key, headers"


def lock_path(path: Path) -> Path:
    """The lock file guarding the queue file ``path`` (``PATH.lock`` next to it)."""
    return path.with_name(path.name + ".lock")


def _event_from_row(row: Sequence[Any]) -> Event:
    return Event(id=row[0], type=row[1], body=bytes(row[2]), accepted_at=row[3], source=row[4],
                 idempotency_key=row[5], headers=_headers(row[6]))


def _headers(raw: str | None) -> tuple[tuple[str, str], ...]:
    return tuple((str(k), str(v)) for k, v in json.loads(raw)) if raw else ()


def _within(candidates: list[list[int]], budget: int) -> list[int]:
    """The seqs of ``[seq, body size]`` candidates, in order, while their bodies fit in
    ``budget`` bytes; the first one always (a body larger than the budget still goes out)."""
    picked: list[int] = []
    total = 0
    for seq, size in candidates:
        total += size or 0
        if picked and total > budget:
            break
        picked.append(seq)
    return picked


def _leased(text: str) -> list[Delivery]:
    """The deliveries of a lease: rows of JSON from :meth:`SQLiteQueue._lease`, one per
    delivery (seq, id, endpoint, attempt, token, ordering key, then its event's columns,
    the body as hex), in queue order."""
    events: dict[str, Event] = {}
    deliveries = []
    for _, did, endpoint, attempt, token, okey, eid, *fields in sorted(json.loads(text)):
        event = events.get(eid)
        if event is None:
            etype, body, accepted_at, source, key, headers = fields
            event = events[eid] = Event(
                id=eid, type=etype, body=bytes.fromhex(body), accepted_at=accepted_at,
                source=source, idempotency_key=key, headers=_headers(headers))
        deliveries.append(Delivery(id=did, event=event, endpoint=endpoint, attempt=attempt,
                                   token=token, ordering_key=okey))
    return deliveries


def _attempt_row(event_id: str, attempt: Attempt) -> tuple[Any, ...]:
    return (event_id, attempt.endpoint, attempt.attempt, attempt.at, attempt.duration,
            attempt.status, attempt.error, attempt.outcome)


def _is_outage(error: BaseException) -> bool:
    """Whether a SQLite error means the file is unusable (disk, locks) rather than a bug."""
    bug = (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError)
    return isinstance(error, sqlite3.Error) and not isinstance(error, bug)


class SQLiteQueue:
    """The :class:`~hookgate.deliverer.queues.base.Queue` on one SQLite file.

    ``visibility_timeout`` is how long a fetched delivery stays leased before this process
    hands it out again (a send hung past every endpoint timeout). ``clock`` gives unix time
    and is injectable so tests can travel in time; waiting itself uses real time.
    """

    def __init__(self, path: str | os.PathLike[str], *, visibility_timeout: float = 60.0,
                 clock: Callable[[], float] = time.time, synchronous: str = "FULL",
                 poll_interval: float = 1.0, lease_bytes: int = LEASE_BYTES) -> None:
        if synchronous.upper() not in _SYNCHRONOUS:
            raise ValueError(f"synchronous={synchronous!r}; use one of {', '.join(_SYNCHRONOUS)}")
        self.path = Path(path)
        self.visibility_timeout = visibility_timeout
        self.poll_interval = poll_interval
        self.lease_bytes = lease_bytes
        self._clock = clock
        self._synchronous = synchronous.upper()
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        # queued calls: the operation, its future, and whether its commit must be fsynced
        self._pending: collections.deque[tuple[_Op, asyncio.Future[Any], str]] = (
            collections.deque())
        self._draining = False  # a drain of _pending is submitted to the queue thread
        # completions not yet taken by the queue thread, and the future they all wait on;
        # the lock orders "append to the group" (loop) and "take the group" (thread)
        self._completions: _Completions | None = None
        self._completions_lock = threading.Lock()
        self._changed = asyncio.Event()
        self._closed = True

    def __repr__(self) -> str:
        return f"SQLiteQueue({str(self.path)!r})"

    # -- life cycle -----------------------------------------------------------------------

    async def open(self) -> None:
        """Lock the file, create the schema, and hand back leases of a dead previous owner."""
        if not self._closed:
            return
        self._lock_fd = self._acquire_lock()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="hookgate-sqlite")
        try:
            released = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._open_db)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            os.close(self._lock_fd)
            self._lock_fd = None
            raise
        self._closed = False
        if released:
            log.info("handed back %d deliveries leased by a previous process of %s",
                     released, self.path)

    async def close(self) -> None:
        """Finish queued calls, close the file and drop the lock. Leases stay until next open."""
        if self._closed:
            return
        self._closed = True
        self._wake()  # waiting fetchers return empty-handed
        executor = self._executor
        assert executor is not None
        await asyncio.get_running_loop().run_in_executor(executor, self._close_db)
        executor.shutdown(wait=False)
        self._executor = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _acquire_lock(self) -> int:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path(self.path), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise QueueUnavailable(
                f"cannot create the queue lock {lock_path(self.path)} ({e.strerror}); "
                "check that --data-dir exists and is writable") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise QueueUnavailable(
                f"queue file {self.path} is used by another hookgate process (pid {owner}?); "
                "stop it or use another --data-dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd

    def _open_db(self) -> int:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.Error as e:
            raise self._unavailable("open", e) from e
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.executescript(SCHEMA)
            for table, column, statement in _MIGRATIONS:
                columns = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
                if column not in columns:
                    conn.execute(statement)
            conn.execute(_ORDER_INDEX)
            # leases of a process that died: each counts as an attempt (see Queue.fetch)
            released = conn.execute(
                "UPDATE deliveries SET state = 'ready', avail_at = ?, token = NULL, "
                "attempt = attempt + 1 WHERE state = 'leased'", (self._clock(),)).rowcount
        except sqlite3.Error as e:
            conn.close()
            raise self._unavailable("open", e) from e
        self._conn = conn
        return released

    def _close_db(self) -> None:
        self._drain()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _unavailable(self, what: str, error: BaseException) -> QueueUnavailable:
        if isinstance(error, sqlite3.DatabaseError) and any(
                words in str(error) for words in ("not a database", "malformed")):
            hint = ("the file is not a Hookgate queue or is damaged: move it aside (its events "
                    "are then no longer delivered) or choose another --data-dir")
        else:
            hint = "check free disk space and that --data-dir is writable"
        return QueueUnavailable(f"SQLite queue {self.path}: {what} failed ({error}); {hint}")

    # -- the queue thread -----------------------------------------------------------------

    def _submit(self, op: Callable[[sqlite3.Connection], T], *,
                durable: bool = True, reads_only: bool = False) -> asyncio.Future[T]:
        """Queue ``op`` for the queue thread's next group transaction; its future.

        Calls that only read (``reads_only``) run first, in a read transaction of their own:
        a write that fails beside them (a full disk) cannot fail them. Calls that need no
        fsync (``durable=False``: leases, which a crash undoes anyway because a restart hands
        every lease back) run next, in a transaction of their own committed without one, so
        a fetch does not wait for the disk."""
        if self._closed or self._executor is None:
            raise QueueUnavailable(f"SQLite queue {self.path} is closed; open it first")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((op, future, "read" if reads_only else
                              "durable" if durable else "light"))
        if not self._draining:  # one submission per burst of calls, not one per call
            self._draining = True
            self._executor.submit(self._drain_all)
        return future

    async def _run(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``op`` on the queue thread inside the next group transaction."""
        return await self._submit(op)

    async def _read(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``op``, which only reads, on the queue thread (see :meth:`_submit`)."""
        return await self._submit(op, reads_only=True)

    def _drain_all(self) -> None:
        """Run queued calls in group transactions until none is left (on the queue thread).

        ``_draining`` is cleared before the last look at ``_pending``, so a call queued
        meanwhile is either seen here or submits a drain of its own."""
        while True:
            while self._pending:
                self._drain()
            self._draining = False
            if not self._pending:
                return
            self._draining = True

    def _drain(self) -> None:
        """Run every queued call: those that only read in one read transaction, those that
        need no fsync in one transaction committed without it, then the others in one
        transaction (on the queue thread)."""
        batch: list[tuple[_Op, asyncio.Future[Any], str]] = []
        while self._pending and len(batch) < _MAX_BATCH:
            batch.append(self._pending.popleft())
        reads = [(op, future) for op, future, kind in batch if kind == "read"]
        if reads:
            self._transaction(reads, begin="BEGIN DEFERRED")
        light = [(op, future) for op, future, kind in batch if kind == "light"]
        if light:
            self._transaction(light, synchronous="NORMAL")
        self._transaction([(op, future) for op, future, kind in batch if kind == "durable"])

    def _transaction(self, calls: list[tuple[_Op, asyncio.Future[Any]]], *,
                     synchronous: str | None = None, begin: str = "BEGIN IMMEDIATE") -> None:
        """Run ``calls`` in one transaction, each in its own savepoint, and settle their
        futures; ``synchronous`` overrides the connection's setting for this commit
        (WAL with NORMAL: no fsync at commit, still safe from corruption)."""
        if not calls:
            return
        conn = self._conn
        outcomes: list[tuple[bool, Any]] = []
        try:
            if conn is None:
                raise sqlite3.OperationalError("the queue is closed")
            if synchronous is not None:
                conn.execute(f"PRAGMA synchronous={synchronous}")
            conn.execute(begin)
            for op, _ in calls:
                conn.execute("SAVEPOINT op")
                try:
                    result = op(conn)
                except Exception as e:
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    outcomes.append((False, e))
                else:
                    conn.execute("RELEASE op")
                    outcomes.append((True, result))
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            if conn is not None and conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    log.exception("rollback of %s failed", self.path)
            outcomes = [(False, e)] * len(calls)
        finally:
            if synchronous is not None and conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute(f"PRAGMA synchronous={self._synchronous}")
        # One wake-up of each event loop per transaction, not one per call.
        settled: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for (_, future), (ok, value) in zip(calls, outcomes, strict=True):
            if not ok and _is_outage(value):
                value = self._unavailable("a statement", value)
            settled.setdefault(future.get_loop(), []).append((future, ok, value))
        for loop, results in settled.items():
            loop.call_soon_threadsafe(_settle_all, results)

    def _wake(self) -> None:
        """Tell waiting fetchers the queue changed (called on the event loop, after commit)."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    # -- the Queue interface --------------------------------------------------------------

    async def enqueue(self, event: Event, endpoints: Sequence[str], *,
                      idempotency_ttl: float = 86400.0,
                      ordering_keys: Mapping[str, str] | None = None) -> tuple[str, bool]:
        """Store the event and its deliveries in one commit.

        An event id already stored counts as a duplicate too: nothing is stored and
        ``(event.id, False)`` is returned, so a client resending its own id is safe.
        """
        targets = list(dict.fromkeys(endpoints))
        okeys = ordering_keys or {}

        def op(conn: sqlite3.Connection) -> tuple[str, bool]:
            now = self._clock()
            key = event.idempotency_key
            if key is not None:
                row = conn.execute("SELECT event_id FROM idempotency WHERE key = ? "
                                   "AND expires_at > ?", (key, now)).fetchone()
                if row is not None:
                    return str(row[0]), False
            if conn.execute("SELECT 1 FROM events WHERE id = ?", (event.id,)).fetchone():
                return event.id, False
            if key is not None:
                conn.execute("INSERT OR REPLACE INTO idempotency (key, event_id, expires_at) "
                             "VALUES (?, ?, ?)", (key, event.id, now + idempotency_ttl))
            conn.execute(
                "INSERT INTO events (id, type, body, accepted_at, source, idempotency_key, "
                "endpoints, pending, finished_at, headers) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (event.id, event.type, event.body, event.accepted_at, event.source, key,
                 json.dumps(targets), len(targets), None if targets else now,
                 json.dumps(event.headers) if event.headers else None))
            conn.executemany(
                "INSERT INTO deliveries (id, event_id, endpoint, state, attempt, avail_at, okey) "
                "VALUES (?, ?, ?, 'ready', 1, ?, ?)",
                [(delivery_id(event.id, ep), event.id, ep, now, okeys.get(ep))
                 for ep in targets])
            return event.id, True

        result = await self._run(op)
        if result[1] and targets:
            self._wake()
        return result

    async def fetch(self, limit: int, wait: float) -> list[Delivery]:
        """Lease up to ``limit`` of the oldest available deliveries, in queue order."""
        if limit <= 0:
            return []
        deadline = time.monotonic() + max(0.0, wait)
        while True:
            changed = self._changed
            leased, next_at = await self._submit(lambda conn: self._lease(conn, limit),
                                                 durable=False)
            if leased is not None:
                return _leased(leased)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._closed:
                return []
            pause = min(remaining, self.poll_interval)
            if next_at is not None:
                pause = min(pause, max(0.001, next_at - self._clock()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), pause)
            if self._closed:  # closed while waiting: an empty hand, not an error
                return []

    def _lease(self, conn: sqlite3.Connection, limit: int) -> tuple[str | None, float | None]:
        """Lease up to ``limit`` available deliveries (on the queue thread): the leased rows
        as one JSON text (see :func:`_leased`), or None and when to look again.

        Every statement here yields ONE row, whatever the batch size, and the rows are
        parsed on the event loop: the sqlite3 module hands the GIL back and forth around each
        row it steps through, and under load each handover waits for the busy event loop."""
        now = self._clock()
        (candidates,) = conn.execute(
            "SELECT json_group_array(json_array(seq, size)) FROM (SELECT d.seq, "
            "(SELECT length(body) FROM events e WHERE e.id = d.event_id) AS size "
            f"FROM deliveries d WHERE {_AVAILABLE} ORDER BY avail_at, seq LIMIT :limit)",
            {"now": now, "limit": limit}).fetchone()
        picked = json.dumps(_within(json.loads(candidates), self.lease_bytes))
        if picked == "[]":
            # Ordered deliveries behind an unfinished head are not due: the head's
            # completion wakes the fetchers.
            next_at = conn.execute(
                "SELECT MIN(avail_at) FROM deliveries d WHERE d.okey IS NULL OR NOT EXISTS ("
                "SELECT 1 FROM deliveries p WHERE p.endpoint = d.endpoint AND p.okey = d.okey "
                "AND p.seq < d.seq)").fetchone()[0]
            return None, next_at
        conn.execute(
            # a row still 'leased' here is an expired lease: taking it over counts an attempt
            "UPDATE deliveries SET attempt = attempt + (state = 'leased'), state = 'leased', "
            "avail_at = :until, token = :token || seq "
            "WHERE seq IN (SELECT value FROM json_each(:picked))",
            {"until": now + self.visibility_timeout, "token": secrets.token_hex(6) + ".",
             "picked": picked})
        # Bodies travel as hex: a JSON text cannot hold arbitrary bytes.
        (text,) = conn.execute(
            "SELECT json_group_array(json_array(d.seq, d.id, d.endpoint, d.attempt, d.token, "
            "d.okey, e.id, e.type, hex(e.body), e.accepted_at, e.source, e.idempotency_key, "
            "e.headers)) FROM deliveries d JOIN events e ON e.id = d.event_id "
            "WHERE d.seq IN (SELECT value FROM json_each(?))", (picked,)).fetchone()
        return str(text), None

    async def complete(self, delivery: Delivery, attempt: Attempt) -> None:
        """Log the attempt and drop the delivery (a no-op if its lease passed to another)."""
        await self.complete_soon(delivery, attempt)

    def complete_soon(self, delivery: Delivery, attempt: Attempt) -> asyncio.Future[None]:
        """Join the completions not yet taken by the queue thread: they are written
        together, as one call, and each caller learns the outcome of that call."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # serialised here, on the event loop: the queue thread only runs statements
        row = json.dumps([delivery.id, delivery.token, *_attempt_row(delivery.event.id, attempt)])
        with self._completions_lock:
            group = self._completions
            if group is None:
                group = self._completions = _Completions()
                written = self._submit(functools.partial(self._complete_all, group=group))
                written.add_done_callback(group.settle)
                written.add_done_callback(lambda w: self._wake() if group.ordered else None)
            group.rows.append(row)
            group.waiters.append(done)
            group.ordered = group.ordered or delivery.ordering_key is not None
        return done

    def _complete_all(self, conn: sqlite3.Connection, group: _Completions) -> None:
        """Write a group of completions (on the queue thread); later ones start a new group."""
        with self._completions_lock:
            if self._completions is group:
                self._completions = None
        # One JSON parameter and three single-row statements for the whole group (see
        # _lease for why rows are expensive on this thread).
        items = "[" + ",".join(group.rows) + "]"
        columns = ", ".join(f"json_extract(value, '$[{n}]')" for n in range(2, 10))
        conn.execute(
            "INSERT INTO attempts (event_id, endpoint, attempt, at, duration, status, error, "
            f"outcome) SELECT {columns} FROM json_each(?) ORDER BY key", (items,))
        # A lease's token is "<random>.<seq>", so it can only ever belong to its own row:
        # "id IN ids AND token IN tokens" matches exactly the (id, token) pairs, and unlike a
        # row-value IN it is looked up through the id index.
        held = ("FROM deliveries "
                "WHERE id IN (SELECT json_extract(value, '$[0]') FROM json_each(:items)) "
                "AND token IN (SELECT json_extract(value, '$[1]') FROM json_each(:items)) "
                "AND state = 'leased'")
        conn.execute(
            "UPDATE events SET pending = pending - c.n, "
            "finished_at = CASE WHEN pending <= c.n THEN :now ELSE finished_at END "
            f"FROM (SELECT event_id, COUNT(*) AS n {held} GROUP BY event_id) AS c "
            "WHERE events.id = c.event_id", {"items": items, "now": self._clock()})
        conn.execute(f"DELETE {held}", {"items": items})

    async def retry(self, delivery: Delivery, attempt: Attempt, due: float) -> None:
        def op(conn: sqlite3.Connection) -> None:
            _log_attempt(conn, delivery, attempt)
            conn.execute(
                "UPDATE deliveries SET state = 'delayed', attempt = ?, avail_at = ?, "
                "token = NULL WHERE id = ? AND token = ? AND state = 'leased'",
                (delivery.attempt + 1, due, delivery.id, delivery.token))

        await self._run(op)
        self._wake()

    async def bury(self, delivery: Delivery, attempt: Attempt | None, reason: str) -> None:
        """Move the delivery to the dead letters, where it stays until replayed.

        The event stays stored while it has dead letters, so replay always has its body.
        """

        def op(conn: sqlite3.Connection) -> None:
            if attempt is not None:
                _log_attempt(conn, delivery, attempt)
            if not _take(conn, delivery):
                return
            made = delivery.attempt if attempt is not None else delivery.attempt - 1
            conn.execute(
                "INSERT OR REPLACE INTO dead_letters (id, event_id, endpoint, attempts, reason, "
                "error, dead_at, okey) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (delivery.id, delivery.event.id, delivery.endpoint, made, reason,
                 attempt.error if attempt is not None else None, self._clock(),
                 delivery.ordering_key))

        await self._run(op)
        if delivery.ordering_key is not None:
            self._wake()

    async def postpone(self, delivery: Delivery, due: float) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE deliveries SET state = 'delayed', avail_at = ?, token = NULL "
                "WHERE id = ? AND token = ? AND state = 'leased'",
                (due, delivery.id, delivery.token))

        await self._run(op)
        self._wake()

    async def release(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return

        def op(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE deliveries SET state = 'ready', avail_at = ?, token = NULL "
                "WHERE id = ? AND token = ? AND state = 'leased'",
                [(self._clock(), d.id, d.token) for d in deliveries])

        await self._run(op)
        self._wake()

    async def bury_message(self, source: str, reason: str, raw: bytes,
                           headers: Mapping[str, str], error: str | None = None) -> str:
        now = self._clock()
        event_id = MESSAGE_PREFIX + new_event_id(now).removeprefix("evt_")
        letter = delivery_id(event_id, source)

        def op(conn: sqlite3.Connection) -> None:
            # pending 1: the event stays while its dead letter does, like any dead delivery
            conn.execute(
                "INSERT INTO events (id, type, body, accepted_at, source, idempotency_key, "
                "endpoints, pending, finished_at) VALUES (?, '', ?, ?, ?, NULL, '[]', 1, NULL)",
                (event_id, raw, now, source))
            conn.execute(
                "INSERT INTO dead_letters (id, event_id, endpoint, attempts, reason, error, "
                "dead_at, headers) VALUES (?, ?, ?, 0, ?, ?, ?, ?)",
                (letter, event_id, source, reason, error, now, json.dumps(dict(headers))))

        await self._run(op)
        return letter

    async def depth(self) -> Depth:
        def op(conn: sqlite3.Connection) -> Depth:
            now = self._clock()
            ready, delayed, leased, dead = conn.execute(
                "SELECT (SELECT COUNT(*) FROM deliveries WHERE state = 'ready') + "
                "       (SELECT COUNT(*) FROM deliveries WHERE state = 'delayed' "
                "        AND avail_at <= :now), "
                "       (SELECT COUNT(*) FROM deliveries WHERE state = 'delayed' "
                "        AND avail_at > :now), "
                "       (SELECT COUNT(*) FROM deliveries WHERE state = 'leased'), "
                "       (SELECT COUNT(*) FROM dead_letters)", {"now": now}).fetchone()
            return Depth(ready=ready, delayed=delayed, dead=dead, leased=leased)

        return await self._read(op)

    async def event(self, event_id: str) -> EventRecord | None:
        def op(conn: sqlite3.Connection) -> EventRecord | None:
            row = conn.execute(f"SELECT {_EVENT_COLUMNS}, endpoints FROM events WHERE id = ?",
                               (event_id,)).fetchone()
            if row is None:
                return None
            attempts = tuple(
                Attempt(endpoint=a[0], attempt=a[1], at=a[2], duration=a[3], status=a[4],
                        error=a[5], outcome=a[6])
                for a in conn.execute(
                    "SELECT endpoint, attempt, at, duration, status, error, outcome "
                    "FROM attempts WHERE event_id = ? ORDER BY seq", (event_id,)))
            return EventRecord(event=_event_from_row(row), endpoints=tuple(json.loads(row[7])),
                               attempts=attempts)

        return await self._read(op)

    async def dead_letters(self, endpoint: str | None = None, limit: int = 100
                           ) -> list[DeadLetter]:
        """Dead letters, oldest first."""

        def op(conn: sqlite3.Connection) -> list[DeadLetter]:
            where, args = ("WHERE d.endpoint = ?", [endpoint]) if endpoint is not None else ("", [])
            rows = conn.execute(
                "SELECT d.id, d.event_id, COALESCE(e.type, ''), d.endpoint, d.attempts, "
                "d.reason, d.error, d.dead_at, d.headers FROM dead_letters d "
                f"LEFT JOIN events e ON e.id = d.event_id {where} "
                "ORDER BY d.dead_at, d.id LIMIT ?", [*args, limit]).fetchall()
            return [DeadLetter(delivery_id=r[0], event_id=r[1], event_type=r[2], endpoint=r[3],
                               attempts=r[4], reason=r[5], error=r[6], dead_at=r[7],
                               headers=json.loads(r[8]) if r[8] is not None else None)
                    for r in rows]

        return await self._read(op)

    async def replay(self, ids: Sequence[str] = (), endpoint: str | None = None,
                     all: bool = False) -> int:
        """Requeue dead letters matching any of the selectors, in the order they died; an
        ordered one rejoins its sequence at the end (after the deliveries waiting in it)."""
        conditions: list[str] = []
        args: list[Any] = []
        if all:
            conditions.append("1")
        if ids:
            conditions.append(f"id IN ({', '.join('?' * len(ids))})")
            args.extend(ids)
        if endpoint is not None:
            conditions.append("endpoint = ?")
            args.append(endpoint)
        if not conditions:
            return 0
        # broker messages kept as dead letters never became events: nothing to replay
        where = f"({' OR '.join(conditions)}) AND substr(event_id, 1, 4) != '{MESSAGE_PREFIX}'"

        def op(conn: sqlite3.Connection) -> int:
            conn.execute(
                "INSERT INTO deliveries (id, event_id, endpoint, state, attempt, avail_at, okey) "
                f"SELECT id, event_id, endpoint, 'ready', 1, ?, okey FROM dead_letters "
                f"WHERE {where} ORDER BY dead_at, id", [self._clock(), *args])
            return conn.execute(f"DELETE FROM dead_letters WHERE {where}", args).rowcount

        count = await self._run(op)
        if count:
            self._wake()
        return count

    async def probe_write(self) -> None:
        def op(conn: sqlite3.Connection) -> None:
            # as much as an ordinary event writes: a disk with room for the probe but not
            # for an event would otherwise look writable
            conn.execute("INSERT OR REPLACE INTO write_probe (id, at, pad) "
                         "VALUES (1, ?, zeroblob(?))", (self._clock(), _PROBE_BYTES))

        await self._run(op)

    async def pause_endpoint(self, pause: PausedEndpoint) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            return conn.execute(
                "INSERT OR IGNORE INTO paused_endpoints (endpoint, reason, message, at) "
                "VALUES (?, ?, ?, ?)",
                (pause.endpoint, pause.reason, pause.message, pause.at)).rowcount > 0

        return await self._run(op)

    async def resume_endpoint(self, endpoint: str) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            return conn.execute("DELETE FROM paused_endpoints WHERE endpoint = ?",
                                (endpoint,)).rowcount > 0

        resumed = await self._run(op)
        if resumed:
            self._wake()
        return resumed

    async def paused_endpoints(self) -> dict[str, PausedEndpoint]:
        def op(conn: sqlite3.Connection) -> dict[str, PausedEndpoint]:
            return {r[0]: PausedEndpoint(endpoint=r[0], reason=r[1], message=r[2], at=r[3])
                    for r in conn.execute(
                        "SELECT endpoint, reason, message, at FROM paused_endpoints")}

        return await self._read(op)

    async def record_failure(self, endpoint: str, at: float, *, open_after: int | None = None,
                             reopen: bool = False) -> EndpointHealth:
        def op(conn: sqlite3.Connection) -> EndpointHealth:
            conn.execute(
                "INSERT INTO endpoint_health (endpoint, failures, failing_since) VALUES (?, 1, ?) "
                "ON CONFLICT (endpoint) DO UPDATE SET failures = failures + 1, "
                "failing_since = MIN(failing_since, excluded.failing_since)", (endpoint, at))
            row = conn.execute(
                "UPDATE endpoint_health SET "
                "opened_at = CASE WHEN opened_at IS NULL AND failures >= :open_after "
                "  OR opened_at IS NOT NULL AND :reopen THEN :now ELSE opened_at END, "
                "trial_until = CASE WHEN opened_at IS NOT NULL AND :reopen THEN NULL "
                "  ELSE trial_until END "
                "WHERE endpoint = :endpoint RETURNING failures, failing_since, opened_at",
                {"endpoint": endpoint, "now": self._clock(), "reopen": reopen,
                 "open_after": open_after if open_after is not None else 2**62}).fetchone()
            return EndpointHealth(endpoint, row[0], row[1], row[2])

        return await self._run(op)

    async def record_success(self, endpoint: str) -> None:
        await self._run(lambda conn: conn.execute(
            "DELETE FROM endpoint_health WHERE endpoint = ?", (endpoint,)))

    async def claim_trial(self, endpoint: str, until: float) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            return conn.execute(
                "UPDATE endpoint_health SET trial_until = ? WHERE endpoint = ? AND "
                "(trial_until IS NULL OR trial_until <= ?)",
                (until, endpoint, self._clock())).rowcount > 0

        return await self._run(op)

    async def endpoint_health(self) -> dict[str, EndpointHealth]:
        def op(conn: sqlite3.Connection) -> dict[str, EndpointHealth]:
            return {r[0]: EndpointHealth(r[0], r[1], r[2], r[3]) for r in conn.execute(
                "SELECT endpoint, failures, failing_since, opened_at FROM endpoint_health")}

        return await self._read(op)

    async def purge(self, before: float) -> int:
        """Drop events whose deliveries all finished before ``before``, with their attempts.

        Works in chunks so deliveries keep flowing while a large backlog of history goes.
        Expired idempotency keys go too.
        """

        def op(conn: sqlite3.Connection) -> int:
            ids = [r[0] for r in conn.execute(
                "SELECT id FROM events WHERE pending = 0 AND finished_at < ? LIMIT ?",
                (before, _PURGE_CHUNK))]
            if not ids:
                conn.execute("DELETE FROM idempotency WHERE expires_at <= ?", (self._clock(),))
                return 0
            marks = ", ".join("?" * len(ids))
            conn.execute(f"DELETE FROM attempts WHERE event_id IN ({marks})", ids)
            return conn.execute(f"DELETE FROM events WHERE id IN ({marks})", ids).rowcount

        total = 0
        while True:
            dropped = await self._run(op)
            total += dropped
            if dropped == 0:
                return total


class _Completions:
    """Completions made while the queue thread was busy: written by one call."""

    __slots__ = ("ordered", "rows", "waiters")

    def __init__(self) -> None:
        self.rows: list[str] = []  # JSON [delivery id, token, *attempt row] of each
        self.waiters: list[asyncio.Future[None]] = []
        self.ordered = False  # one of them is ordered: its successor may go once written

    def settle(self, written: asyncio.Future[None]) -> None:
        """Tell each caller how writing the group went."""
        settle(self.waiters, written.exception())


def _settle_all(results: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in results:
        _settle(future, ok, value)


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():  # the caller was cancelled; the work is committed all the same
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


def _log_attempt(conn: sqlite3.Connection, delivery: Delivery, attempt: Attempt) -> None:
    conn.execute(
        "INSERT INTO attempts (event_id, endpoint, attempt, at, duration, status, error, outcome)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", _attempt_row(delivery.event.id, attempt))


def _take(conn: sqlite3.Connection, delivery: Delivery) -> bool:
    """Remove the delivery if this lease still holds it; False when the lease was lost."""
    return conn.execute(
        "DELETE FROM deliveries WHERE id = ? AND token = ? AND state = 'leased'",
        (delivery.id, delivery.token)).rowcount > 0
