"""The Builtin autoscaler's policy, on a fake clock: up at once, down after the window."""

from __future__ import annotations

from hookgate.operator.autoscale import Policy, decide_replicas, recommend

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
