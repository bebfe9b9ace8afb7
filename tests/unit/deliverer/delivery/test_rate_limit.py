"""GCRA rate limiting with booked slots: the pure booking and the in-process limiter, on a
fake clock."""

from __future__ import annotations

import pytest

from hookgate.deliverer.delivery.rate_limit import LocalRateLimiter, gcra
from hookgate.model.routing import RateLimitConfig
from tests.support.clock import FakeClock


def test_burst_goes_at_once_then_each_delivery_books_the_next_slot() -> None:
    clock = FakeClock(50.0)
    limiter = LocalRateLimiter(clock)
    limit = RateLimitConfig(per_second=10, burst=3)
    assert [limiter.take("a", limit, f"d{i}") for i in range(3)] == [0, 0, 0]
    assert limiter.take("a", limit, "d3") == pytest.approx(0.1)
    assert limiter.take("a", limit, "d4") == pytest.approx(0.2)
    clock.now += 0.1
    assert limiter.take("a", limit, "d3") == 0  # its slot has come
    assert limiter.take("a", limit, "d4") == pytest.approx(0.1)


def test_asking_again_for_a_delivery_books_nothing_more() -> None:
    clock = FakeClock(50.0)
    limiter = LocalRateLimiter(clock)
    limit = RateLimitConfig(per_second=1, burst=1)
    assert limiter.take("a", limit, "first") == 0
    for _ in range(5):
        assert limiter.take("a", limit, "second") == pytest.approx(1.0)
    assert limiter.take("a", limit, "third") == pytest.approx(2.0)
    clock.now += 1
    assert limiter.take("a", limit, "second") == 0


def test_a_delivery_that_comes_back_late_keeps_its_slot_and_does_not_delay_the_next() -> None:
    clock = FakeClock(50.0)
    limiter = LocalRateLimiter(clock)
    limit = RateLimitConfig(per_second=20, burst=1)
    assert limiter.take("a", limit, "d0") == 0
    waits = [limiter.take("a", limit, f"d{i}") for i in range(1, 4)]
    assert waits == pytest.approx([0.05, 0.10, 0.15])
    clock.now += 0.12  # d1 comes back 70 ms late, d2 20 ms late: both go, in order
    assert limiter.take("a", limit, "d1") == 0
    assert limiter.take("a", limit, "d2") == 0
    assert limiter.take("a", limit, "d3") == pytest.approx(0.03)  # still its own slot


def test_endpoints_are_limited_separately() -> None:
    limiter = LocalRateLimiter(FakeClock(50.0))
    limit = RateLimitConfig(per_second=1, burst=1)
    assert limiter.take("a", limit, "x") == 0
    assert limiter.take("b", limit, "y") == 0
    assert limiter.take("a", limit, "z") > 0


@pytest.mark.parametrize(("rate", "burst"), [(20, 1), (20, 5), (0.5, 2), (1000, 50)])
def test_long_run_rate_is_exact(rate: float, burst: int) -> None:
    """A backlog booked at time 0 gets rate * 100 + burst slots within 100 s, no more."""
    limit = RateLimitConfig(per_second=rate, burst=burst)
    tat: float | None = None
    slots = []
    for _ in range(int(rate * 100 + burst) + 10):
        slot, tat = gcra(tat, 0.0, limit)
        slots.append(slot)
    assert slots == sorted(slots)
    assert abs(sum(1 for s in slots if s <= 100.0) - (rate * 100 + burst)) <= 1
