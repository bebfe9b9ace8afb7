"""The Builtin autoscaler's policy, on a fake clock: up at once, down after the window."""

from __future__ import annotations

from collections.abc import Callable

from hookgate.deliverer.queues.base import Depth
from hookgate.operator.autoscale import (
    Policy,
    Recommendation,
    decide_replicas,
    outstanding,
    recommend,
)

POLICY = Policy(min_replicas=1, max_replicas=10, target_backlog=100, scale_down_window=300)


def test_recommendation_is_backlog_over_target_clamped() -> None:
    assert [recommend(b, POLICY) for b in (0, 1, 100, 101, 950, 5000)] == [1, 1, 1, 2, 10, 10]
    assert recommend(0, Policy(min_replicas=2)) == 2


def test_scales_up_at_once() -> None:
    decision = decide_replicas(backlog=750, current=1, policy=POLICY, now=0)
    assert decision.replicas == 8


def test_scales_down_only_after_the_stabilization_window() -> None:
    history = decide_replicas(800, 1, POLICY, now=0).history  # 8 replicas at t=0
    replicas = 8
    for t in (10, 100, 299):  # the backlog drained, but the peak is within the window
        d = decide_replicas(0, replicas, POLICY, now=t, history=history)
        history, replicas = d.history, d.replicas
        assert replicas == 8
    d = decide_replicas(0, replicas, POLICY, now=301, history=history)
    assert d.replicas == 1


def test_down_goes_to_the_highest_recent_recommendation() -> None:
    d1 = decide_replicas(900, 1, POLICY, now=0)
    d2 = decide_replicas(300, d1.replicas, POLICY, now=200, history=d1.history)
    assert d2.replicas == 9  # 9 still recommended within the window
    d3 = decide_replicas(0, d2.replicas, POLICY, now=400, history=d2.history)
    assert d3.replicas == 3  # the t=0 peak left the window; t=200 (3) is the highest left


def test_policy_from_spec_uses_defaults_for_missing_fields() -> None:
    p = Policy.from_spec({"maxReplicas": 4, "targetBacklogPerReplica": 50})
    assert (p.min_replicas, p.max_replicas, p.target_backlog, p.scale_down_window) == \
        (1, 4, 50, 300)


def test_the_backlog_counts_leased_deliveries_and_not_delayed_ones() -> None:
    assert outstanding(Depth(ready=45, delayed=300, dead=7, leased=2000)) == 2045


def drain(reading: Callable[[Depth], int]) -> list[int]:
    """Replicas over a drain as deliverers make it: all of it ready at first, then leased in
    batches, so `ready` swings between 0 and a few dozen while the work left falls steadily.
    Polled every 5 s, 20 s window (the node's first try, issue 15)."""
    policy = Policy(min_replicas=1, max_replicas=10, target_backlog=20, scale_down_window=20)
    left, replicas = 1000, 1
    history: tuple[Recommendation, ...] = ()
    seen = []
    for t in range(0, 240, 5):
        ready = left if t == 0 else min(left, 45 if (t // 5) % 6 == 5 else 0)
        depth = Depth(ready=ready, delayed=0, dead=0, leased=left - ready)
        d = decide_replicas(reading(depth), replicas, policy, now=t, history=history)
        replicas, history = d.replicas, d.history
        seen.append(replicas)
        left = max(0, left - 30)
    return seen


def test_a_draining_backlog_never_scales_down_then_up_again() -> None:
    seen = drain(outstanding)
    assert seen[0] == 10 and seen[-1] == 1
    assert seen == sorted(seen, reverse=True), seen
    # What the pool did when only ready deliveries counted: down, then up on a 45.
    flapped = drain(lambda depth: depth.ready)
    assert flapped != sorted(flapped, reverse=True), flapped
