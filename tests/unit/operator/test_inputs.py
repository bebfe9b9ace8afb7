"""When a gateway is published: on changed inputs, a changed child, or the resync, on a
fake clock."""

from __future__ import annotations

from hookgate.operator.inputs import Inputs, publish_reason
from tests.support.clock import FakeClock

INPUTS = Inputs(revision=7, replicas=2, image="hookgate:1")


def reason(last: Inputs | None, now: Inputs, clock: FakeClock, published_at: float,
           children_changed: bool = False) -> str | None:
    return publish_reason(last, now, published_at=published_at, now=clock(),
                          children_changed=children_changed, resync=600)


def test_nothing_published_yet_or_a_failed_apply_publishes() -> None:
    clock = FakeClock(1000)
    assert reason(None, INPUTS, clock, 0) == "inputs"


def test_unchanged_inputs_publish_nothing_until_the_resync() -> None:
    clock = FakeClock(1000)
    published_at = clock()
    for _ in range(119):  # backlog polls every 5 s for almost ten minutes
        clock.advance(5)
        assert reason(INPUTS, INPUTS, clock, published_at) is None
    clock.advance(5)
    assert reason(INPUTS, INPUTS, clock, published_at) == "resync"


def test_any_input_change_publishes() -> None:
    clock = FakeClock(1000)
    for changed in (Inputs(8, 2, "hookgate:1"), Inputs(7, 3, "hookgate:1"),
                    Inputs(7, 2, "hookgate:2")):
        assert reason(INPUTS, changed, clock, clock()) == "inputs"


def test_a_child_changed_by_someone_else_publishes() -> None:
    clock = FakeClock(1000)
    assert reason(INPUTS, INPUTS, clock, clock(), children_changed=True) == "children"
