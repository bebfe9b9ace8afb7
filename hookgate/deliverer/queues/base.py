"""The queue interface: durable storage of events and of their pending deliveries.

Two backends implement it: :mod:`hookgate.deliverer.queues.sqlite` (embedded, the default of
``hookgate run``) and :mod:`hookgate.deliverer.queues.redis` (Redis Streams, for clusters);
:func:`hookgate.deliverer.queues.factory.open_queue` opens one by URL. This module imports
neither. One shared test suite (``tests/integration/deliverer/queues/test_contract.py``) runs
against both.

Life of a delivery::

    enqueue ──► ready ──fetch──► leased ──complete──► done (attempt logged)
                  ▲                │ ├──retry────► delayed ──(due)──► ready
                  │                │ ├──bury─────► dead ──replay──► ready
                  └────release─────┘ └──postpone─► delayed (no attempt counted)

Ordered deliveries (an endpoint with ``ordering``) carry an ordering key: of the unfinished
deliveries with the same (endpoint, key) only the oldest one is ever handed out; the next
becomes available when it completes or is buried. Retries and postponements keep the key
held. A replayed dead letter of an ordered delivery keeps its key and rejoins its sequence at
the end: after the deliveries of that key still waiting, one at a time like them; dead
letters replayed together go back in the order they died, which is their order in the
sequence.

Runtime pauses (410 Gone, auto-disable) are kept in the queue's store, so every process
sharing the queue sees them; ``resume_endpoint`` lifts one. So is each failing endpoint's
health (consecutive failed attempts, since when, when its circuit opened, who holds its trial):
every deliverer counts toward one circuit breaker and one auto-disable clock, and a restart
keeps them.

A leased delivery whose consumer dies is handed out again once its lease (the visibility
timeout, longer than any endpoint timeout) expires: that is the at-least-once guarantee.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

__all__ = [
    "MESSAGE_PREFIX",
    "Attempt",
    "DeadLetter",
    "Delivery",
    "Depth",
    "EndpointHealth",
    "Event",
    "EventRecord",
    "PausedEndpoint",
    "Queue",
    "QueueUnavailable",
    "delivery_id",
    "event_body",
    "event_timestamp",
    "new_event_id",
    "settle",
]


class QueueUnavailable(Exception):
    """The queue cannot be reached (Redis down, SQLite file locked or unwritable).

    Its message says what failed and what to do; the ingest API answers 503 with it and
    the dispatcher waits and tries again, so nothing is lost while the queue is away.
    """


@dataclass(frozen=True)
class Event:
    """An accepted event. ``body`` is the exact delivery body, serialised once at ingest."""

    id: str
    type: str
    body: bytes
    accepted_at: float  # unix seconds, when the event was durably enqueued
    source: str | None = None
    idempotency_key: str | None = None
    # request headers an inbound source keeps (spec.keepHeaders), sent on every delivery
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Delivery:
    """One event on its way to one endpoint, as leased to a consumer by :meth:`Queue.fetch`."""

    id: str  # unique per (event, endpoint) and stable across attempts and replays
    event: Event
    endpoint: str  # endpoint key "namespace/name"
    attempt: int  # 1-based number of the attempt about to be made
    token: str  # the backend's handle on this lease (stream entry id, row id, ...)
    ordering_key: str | None = None  # deliveries with one key go out one at a time, in order


@dataclass(frozen=True)
class Attempt:
    """The outcome of one HTTP attempt, kept in the attempt log."""

    endpoint: str
    attempt: int
    at: float  # unix seconds when the attempt started
    duration: float  # seconds
    status: int | None  # HTTP status, None when no response arrived
    error: str | None  # what went wrong, None on success
    outcome: str  # "success" | "retry" | "dead"


@dataclass(frozen=True)
class DeadLetter:
    delivery_id: str
    event_id: str
    event_type: str
    endpoint: str
    attempts: int
    reason: str  # "Exhausted", "EndpointDeleted", "Gone", ...
    error: str | None
    dead_at: float
    # a broker message kept by bury_message: its headers (endpoint is then the source key)
    headers: Mapping[str, str] | None = None


@dataclass(frozen=True)
class EventRecord:
    event: Event
    endpoints: tuple[str, ...]
    attempts: tuple[Attempt, ...]


@dataclass(frozen=True)
class PausedEndpoint:
    """An endpoint paused at runtime (not by its manifest's ``paused``)."""

    endpoint: str
    reason: str  # "Gone", "AutoDisabled", ...
    message: str
    at: float


@dataclass(frozen=True)
class EndpointHealth:
    """The shared record of an endpoint whose last attempt failed; none once one succeeds.

    Kept by the queue so that every deliverer of a gateway counts failures toward one circuit
    breaker and one auto-disable clock, and a restarted deliverer finds them as they were.
    """

    endpoint: str
    failures: int  # consecutive failed attempts, by every deliverer together
    failing_since: float  # unix seconds: the first failure of this unbroken run
    opened_at: float | None = None  # when its circuit breaker last opened; None: closed


@dataclass(frozen=True)
class Depth:
    ready: int  # waiting for a consumer now
    delayed: int  # waiting for a retry time (or a postponement)
    dead: int  # dead letters
    leased: int  # handed to a consumer, not finished


class Queue(Protocol):
    """What every queue backend does. All methods may raise :class:`QueueUnavailable`."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def enqueue(self, event: Event, endpoints: Sequence[str], *,
                      idempotency_ttl: float = 86400.0,
                      ordering_keys: Mapping[str, str] | None = None) -> tuple[str, bool]:
        """Store ``event`` and one ready delivery per endpoint, atomically and durably.

        ``ordering_keys`` maps endpoints to the event's ordering key for that endpoint.

        If ``event.idempotency_key`` was enqueued within ``idempotency_ttl`` seconds, store
        nothing and return ``(original_id, False)``; otherwise ``(event.id, True)``.
        """
        ...

    async def fetch(self, limit: int, wait: float) -> list[Delivery]:
        """Lease up to ``limit`` ready deliveries, oldest first (within each partition, for a
        Redis queue in several partitions).

        Due delayed deliveries become ready and expired leases are reclaimed first. A
        reclaimed delivery (its consumer died or hung, so no outcome was recorded) comes back
        with its attempt number one higher: a delivery that kills every deliverer that takes
        it runs out of attempts instead of being reclaimed forever. When none is ready, wait
        up to ``wait`` seconds for one before returning an empty list.
        """
        ...

    async def complete(self, delivery: Delivery, attempt: Attempt) -> None:
        """The delivery succeeded: log the attempt and forget the delivery."""
        ...

    def complete_soon(self, delivery: Delivery, attempt: Attempt) -> asyncio.Future[None]:
        """Start :meth:`complete` and return at once; the future resolves once it is
        recorded (or fails with :class:`QueueUnavailable`). Completions started together
        are written together."""
        ...

    async def retry(self, delivery: Delivery, attempt: Attempt, due: float) -> None:
        """The attempt failed: log it and make attempt ``delivery.attempt + 1`` ready at ``due``."""
        ...

    async def bury(self, delivery: Delivery, attempt: Attempt | None, reason: str) -> None:
        """Give up: log the attempt (if one was made) and keep the delivery as a dead letter."""
        ...

    async def postpone(self, delivery: Delivery, due: float) -> None:
        """Hand the delivery back until ``due`` without counting an attempt (rate limit, ...)."""
        ...

    async def release(self, deliveries: Sequence[Delivery]) -> None:
        """Hand leased deliveries back as ready now, attempts unchanged (graceful shutdown)."""
        ...

    async def bury_message(self, source: str, reason: str, raw: bytes,
                           headers: Mapping[str, str], error: str | None = None) -> str:
        """Keep a broker message that cannot become an event as a dead letter of ``source``.

        The raw bytes are stored as the body of an event ``msg_...`` (``event()`` shows it)
        and the headers with the dead letter; ``dead_letters(source)`` lists it with
        ``endpoint`` = the source key. It is not replayable: fix the producer and publish
        again. Returns the dead letter's id.
        """
        ...

    async def depth(self) -> Depth: ...

    async def probe_write(self) -> None:
        """Make one small durable write (a row or key of its own, overwritten each time);
        raises :class:`QueueUnavailable` when the queue cannot take writes now (a full disk,
        Redis out of memory or read-only). Readiness asks it while events are refused."""
        ...

    async def event(self, event_id: str) -> EventRecord | None:
        """The event with its endpoints and attempt log, while retained."""
        ...

    async def dead_letters(self, endpoint: str | None = None, limit: int = 100
                           ) -> list[DeadLetter]: ...

    async def replay(self, ids: Sequence[str] = (), endpoint: str | None = None,
                     all: bool = False) -> int:
        """Make dead letters ready again (attempt 1): by delivery id, by endpoint, or all.

        In the order they died; an ordered one rejoins its sequence at the end.

        Returns how many were requeued.
        """
        ...

    async def purge(self, before: float) -> int:
        """Drop finished events and attempt logs older than ``before``; returns events dropped."""
        ...

    async def pause_endpoint(self, pause: PausedEndpoint) -> bool:
        """Pause an endpoint for every process; False if it was paused already."""
        ...

    async def resume_endpoint(self, endpoint: str) -> bool:
        """Lift a runtime pause; False if the endpoint was not paused."""
        ...

    async def paused_endpoints(self) -> dict[str, PausedEndpoint]: ...

    async def record_failure(self, endpoint: str, at: float, *, open_after: int | None = None,
                             reopen: bool = False) -> EndpointHealth:
        """Count one failed attempt (made at ``at``); returns the record after it.

        In the same atomic step the circuit opens (``opened_at`` = now, by the queue's clock):
        when it is closed and the count reaches ``open_after``; or when ``reopen`` (a trial
        failed) and it is open, which starts a new cooldown and frees the trial claim.
        """
        ...

    async def record_success(self, endpoint: str) -> None:
        """An attempt succeeded: forget the endpoint's record and its trial claim."""
        ...

    async def claim_trial(self, endpoint: str, until: float) -> bool:
        """Claim the one trial attempt of a half-open circuit until ``until`` (unix s): True
        for one caller among all deliverers; False while another's claim holds, or when no
        failure is on record (a success closed the circuit meanwhile)."""
        ...

    async def endpoint_health(self) -> dict[str, EndpointHealth]:
        """The record of every endpoint whose last attempt failed."""
        ...


def settle(waiters: Iterable[asyncio.Future[None]], error: BaseException | None) -> None:
    """Tell the callers of a write made for several of them how it went. A caller that was
    cancelled meanwhile is skipped: the write happened (or failed) all the same."""
    for done in waiters:
        if not done.done():
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)


#: Prefix of the event ids of broker messages kept as dead letters (never replayed).
MESSAGE_PREFIX = "msg_"


def delivery_id(event_id: str, endpoint: str) -> str:
    """The id of the delivery of ``event_id`` to ``endpoint``: ``"<event id>/<namespace>/<name>"``.

    Both backends derive it the same way, so the id an operator reads in ``hookgate dlq list``
    is the one the dispatcher logged, whatever queue the gateway runs on. It is an opaque key
    for lookups: never split it, event ids may contain ``/``.
    """
    return f"{event_id}/{endpoint}"


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_event_id(now: float | None = None) -> str:
    """``evt_`` + a ULID: sortable by time, unique without coordination."""
    ms = int((time.time() if now is None else now) * 1000)
    value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "evt_" + "".join(reversed(chars))


def event_timestamp(now: float) -> str:
    """The ``timestamp`` of a delivery body: UTC, milliseconds, ``Z``."""
    return datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")


def event_body(event_type: str, data: Any, now: float) -> bytes:
    """The delivery body ``{"type", "timestamp", "data"}``, serialised once: every attempt
    sends (and signs) exactly these bytes."""
    return json.dumps({"type": event_type, "timestamp": event_timestamp(now), "data": data},
                      separators=(",", ":"), ensure_ascii=False).encode()
