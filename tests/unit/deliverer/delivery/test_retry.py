from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from hookgate.deliverer.delivery.retry import Verdict, decide, jittered, parse_retry_after

SCHEDULE = (0.0, 5.0, 300.0)


@pytest.mark.parametrize("status", [200, 201, 204, 299])
def test_2xx_is_success(status: int) -> None:
    assert decide(status, 1, SCHEDULE, random.Random(1)).verdict is Verdict.SUCCESS


@pytest.mark.parametrize("status", [None, 300, 400, 404, 500, 503])
def test_failures_retry_on_the_schedule_with_jitter(status: int | None) -> None:
    d = decide(status, 1, SCHEDULE, random.Random(1))
    assert d.verdict is Verdict.RETRY
    assert 4.5 <= d.delay <= 5.5
    d = decide(status, 2, SCHEDULE, random.Random(1))
    assert 270 <= d.delay <= 330


def test_last_attempt_exhausts_into_dead_letters() -> None:
    d = decide(500, 3, SCHEDULE, random.Random(1))
    assert (d.verdict, d.reason) == (Verdict.DEAD, "Exhausted")


def test_410_gives_up_at_once() -> None:
    assert decide(410, 1, SCHEDULE, random.Random(1)).verdict is Verdict.GONE


def test_retry_after_is_honoured_for_throttling_but_not_for_other_errors() -> None:
    assert decide(429, 1, SCHEDULE, random.Random(1), retry_after=120).delay == 120
    assert decide(503, 1, SCHEDULE, random.Random(1), retry_after=120).delay == 120
    assert decide(500, 1, SCHEDULE, random.Random(1), retry_after=120).delay < 6


def test_retry_after_parses_seconds_and_dates_and_is_clamped() -> None:
    now = 1_800_000_000.0
    assert parse_retry_after("30", now) == 30
    assert parse_retry_after("0", now) == 1
    assert parse_retry_after("99999", now) == 3600
    date = format_datetime(datetime.fromtimestamp(now + 90, UTC), usegmt=True)
    assert parse_retry_after(date, now) == pytest.approx(90, abs=1)
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_zero_delay_has_no_jitter() -> None:
    assert jittered(0, random.Random(1)) == 0
