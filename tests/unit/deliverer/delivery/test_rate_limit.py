"""GCRA rate limiting: the pure decision and the in-process limiter, on a fake clock."""

from __future__ import annotations

import pytest

from hookgate.deliverer.delivery.rate_limit import LocalRateLimiter, gcra
from hookgate.model.routing import RateLimitConfig
from tests.support.clock import FakeClock


def test_burst_goes_at_once_then_one_per_interval() -> None:
    clock = FakeClock(50.0)
    limiter = LocalRateLimiter(clock)
    limit = RateLimitConfig(per_second=10, burst=3)
    assert [limiter.take("a", limit) for _ in range(3)] == [0, 0, 0]
    wait = limiter.take("a", limit)
    assert wait == pytest.approx(0.1)
    clock.now += 0.1
    assert limiter.take("a", limit) == 0
    assert limiter.take("a", limit) == pytest.approx(0.1)


def test_refusal_takes_nothing() -> None:
    clock = FakeClock(50.0)
    limiter = LocalRateLimiter(clock)
    limit = RateLimitConfig(per_second=1, burst=1)
    assert limiter.take("a", limit) == 0
    for _ in range(5):
        assert limiter.take("a", limit) == pytest.approx(1.0)  # asking again costs nothing
    clock.now += 1
    assert limiter.take("a", limit) == 0


def test_endpoints_are_limited_separately() -> None:
    limiter = LocalRateLimiter(FakeClock(50.0))
    limit = RateLimitConfig(per_second=1, burst=1)
    assert limiter.take("a", limit) == 0
    assert limiter.take("b", limit) == 0
    assert limiter.take("a", limit) > 0


@pytest.mark.parametrize(("rate", "burst"), [(20, 1), (20, 5), (0.5, 2), (1000, 50)])
def test_long_run_rate_is_exact(rate: float, burst: int) -> None:
    """Asking often for 100 s of fake time lets through rate * 100 + burst, no more."""
    limit = RateLimitConfig(per_second=rate, burst=burst)
    tat: float | None = None
    now, sent, step = 0.0, 0, min(0.01, 0.25 / rate)
    while now <= 100.0:
        wait, new = gcra(tat, now, limit)
        if wait == 0:
            tat, sent = new, sent + 1
        else:
            now += min(wait, step)
            continue
    expected = rate * 100 + burst
    assert abs(sent - expected) <= 1
