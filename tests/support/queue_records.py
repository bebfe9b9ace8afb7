"""Events and attempt outcomes for the tests of one queue backend (SQLite, Redis)."""

from __future__ import annotations

from hookgate.deliverer.queues.base import Attempt, Delivery, Event

__all__ = ["event", "ok"]


def event(n: int, key: str | None = None) -> Event:
    return Event(id=f"evt_{n}", type="order.paid", body=b'{"n":%d}' % n, accepted_at=1.5 * n,
                 idempotency_key=key)


def ok(d: Delivery, result: str = "success") -> Attempt:
    return Attempt(endpoint=d.endpoint, attempt=d.attempt, at=1.0, duration=0.1, status=200,
                   error=None, outcome=result)
