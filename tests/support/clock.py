"""A fake clock: time moves only when the test says so, never slept through."""

from __future__ import annotations

import time

__all__ = ["FakeClock"]


class FakeClock:
    """A ``time.time``-like callable; ``now`` starts at ``start`` (default: the real time)."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
