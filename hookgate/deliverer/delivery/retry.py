"""What to do after an attempt: pure decisions from a status code and a retry schedule."""

from __future__ import annotations

import email.utils
import random
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

__all__ = ["MAX_RETRY_AFTER", "MIN_RETRY_AFTER", "Decision", "Verdict", "decide",
           "jittered", "parse_retry_after"]

MIN_RETRY_AFTER = 1.0
MAX_RETRY_AFTER = 3600.0
JITTER = 0.1  # ±10 %: spreads retries of a burst that failed together
THROTTLING = frozenset({429, 502, 503, 504})


class Verdict(Enum):
    SUCCESS = "success"
    RETRY = "retry"
    DEAD = "dead"
    GONE = "gone"  # 410: the receiver says the endpoint no longer exists


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    delay: float = 0.0  # seconds until the next attempt, for RETRY
    reason: str = ""  # dead-letter reason, for DEAD and GONE


SUCCEEDED = Decision(Verdict.SUCCESS)
GONE = Decision(Verdict.GONE, reason="Gone")


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds from a ``Retry-After`` header (seconds or HTTP date), clamped to [1 s, 1 h]."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - now
    return min(max(seconds, MIN_RETRY_AFTER), MAX_RETRY_AFTER)


def jittered(delay: float, rng: random.Random) -> float:
    return delay * (1 + rng.uniform(-JITTER, JITTER)) if delay > 0 else 0.0


def decide(status: int | None, attempt: int, schedule: Sequence[float], rng: random.Random,
           retry_after: float | None = None) -> Decision:
    """The verdict on attempt number ``attempt`` (1-based) that ended with ``status``.

    ``schedule[i]`` is the delay before attempt ``i + 1``; so ``len(schedule)`` attempts are
    made in all. ``status`` is None when no response arrived (timeout, refused, reset).
    """
    if status is not None and 200 <= status < 300:
        return SUCCEEDED
    if status == 410:
        return GONE
    if attempt >= len(schedule):
        return Decision(Verdict.DEAD, reason="Exhausted")
    delay = jittered(schedule[attempt], rng)
    if status in THROTTLING and retry_after is not None:
        delay = max(delay, retry_after)
    return Decision(Verdict.RETRY, delay=delay)
