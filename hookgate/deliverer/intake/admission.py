"""Admission: the one way an event enters the gateway, whichever door it came through.

HTTP ingest (:mod:`~hookgate.deliverer.intake.ingest`), inbound webhooks
(:mod:`~hookgate.deliverer.intake.inbound`) and broker sources
(:mod:`~hookgate.deliverer.intake.sources.worker`) each turn what they received into an
:class:`~hookgate.deliverer.queues.base.Event` their own way, then hand it to
:meth:`Admission.admit`, which routes it (type globs, CEL filters, ordering keys), enqueues it
with one delivery per matching endpoint in one durable write, counts it, and says what to
answer. A queue that cannot take the write raises
:class:`~hookgate.deliverer.queues.base.QueueUnavailable`: the caller refuses the event
(HTTP 503) or keeps the broker message unacknowledged, so nothing accepted is ever lost.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from hookgate.deliverer.config.live import LiveConfig, Snapshot
from hookgate.deliverer.metrics import Metrics
from hookgate.deliverer.queues.base import Event, Queue, QueueUnavailable
from hookgate.model.expressions import activation
from hookgate.model.routing import Route

__all__ = ["Admission", "Admitted", "route_event"]

log = logging.getLogger("hookgate.intake")

#: How long an idempotency key (or a client-given event id) suppresses a second event.
DEFAULT_IDEMPOTENCY_TTL = 24 * 3600.0

_reported: set[tuple[int, str]] = set()  # (id of a Router, subscription) already logged


def route_event(snapshot: Snapshot, metrics: Metrics, event: Event, data: Any) -> Route:
    """Where ``event`` goes: type globs, then CEL filters, with ordering keys.

    A filter that cannot be evaluated on the event counts as no match; it is counted in
    ``hookgate_filter_errors_total`` and logged once per subscription and config.
    """
    router = snapshot.router
    route = router.route(event.type, event.source, activation(
        type=event.type, data=data, source=event.source, id=event.id, time=event.accepted_at))
    for subject, message in route.errors:
        metrics.filter_errors.labels(metrics.gateway, subject).inc()
        if (id(router), subject) not in _reported:
            if len(_reported) > 10_000:
                _reported.clear()
            _reported.add((id(router), subject))
            log.warning("%s could not be evaluated on event %s (%s): %s; counted as no match "
                        "(logged once per config)", subject, event.id, event.type, message)
    return route


@dataclass(frozen=True, slots=True)
class Admitted:
    """What became of an admitted event."""

    id: str  # the event's id; for a duplicate, the id of the event it repeats
    created: bool  # False: the idempotency key was seen within its TTL, nothing was stored
    deliveries: int  # deliveries queued (0 for a duplicate)

    def answer(self) -> dict[str, Any]:
        """The body of the ``202`` the HTTP doors send."""
        if self.created:
            return {"id": self.id, "deliveries": self.deliveries}
        return {"id": self.id, "duplicate": True}


class Admission:
    """Routes and durably enqueues events for one gateway."""

    def __init__(self, queue: Queue, live: LiveConfig, metrics: Metrics, *,
                 idempotency_ttl: float = DEFAULT_IDEMPOTENCY_TTL) -> None:
        self.queue = queue
        self.live = live
        self.metrics = metrics
        self.idempotency_ttl = idempotency_ttl
        #: Why the last write was refused, until a write succeeds again (for readiness).
        self.refused: QueueUnavailable | None = None

    async def writable(self) -> None:
        """Raise :class:`QueueUnavailable` while the queue refuses writes: after a refused
        admission, until a probe write (or an admission) succeeds."""
        if self.refused is not None:
            await self.queue.probe_write()
            self.refused = None

    async def admit(self, event: Event, data: Any, snapshot: Snapshot | None = None
                    ) -> Admitted:
        """Route ``event`` (``data`` is its parsed payload, for filters) on ``snapshot``
        (default: the current one) and enqueue it; raises ``QueueUnavailable``."""
        route = route_event(snapshot or self.live.current, self.metrics, event, data)
        try:
            event_id, created = await self.queue.enqueue(
                event, route.endpoints, idempotency_ttl=self.idempotency_ttl,
                ordering_keys=route.ordering_keys)
        except QueueUnavailable as exc:
            self.refused = exc
            raise
        self.refused = None
        if created:
            self.metrics.events_ingested.labels(self.metrics.gateway,
                                                event.source or "api").inc()
        return Admitted(event_id, created, len(route.endpoints) if created else 0)
