"""Replicas from queue backlog: the Builtin autoscaler's policy, as pure functions.

The backlog is the work the pool has (:func:`outstanding`): deliveries ready now and those
leased to a deliverer but not finished. Ready alone swings while a backlog drains, as
deliverers lease batches of it (on a real node readings swung between 0 and 45 while a
backlog drained), and a window of low readings scaled the pool down just before the next
reading scaled it up again.

desired = ceil(backlog / targetBacklogPerReplica), clamped to [min, max]. Up at once: a
traffic peak needs capacity now. Down only to the highest recommendation seen within the
stabilization window (as the HorizontalPodAutoscaler does), so a lull between bursts does
not drain the pool just before the next burst.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from hookgate.deliverer.queues.base import Depth

__all__ = ["Decision", "Policy", "Recommendation", "decide_replicas", "outstanding", "recommend"]


def outstanding(depth: Depth) -> int:
    """Deliveries waiting (ready now, retries due) or in flight (leased, not finished):
    what the pool still has to do, whichever deliverer holds it. Delayed retries wait for
    their time, not for capacity, and are not counted."""
    return depth.ready + depth.leased


@dataclass(frozen=True)
class Policy:
    min_replicas: int = 1
    max_replicas: int = 10
    target_backlog: int = 500
    scale_down_window: float = 300.0

    @classmethod
    def from_spec(cls, autoscaling: dict[str, object]) -> Policy:
        def num(key: str, default: float) -> float:
            value = autoscaling.get(key, default)
            return float(value) if isinstance(value, int | float) else default

        return cls(min_replicas=int(num("minReplicas", 1)),
                   max_replicas=int(num("maxReplicas", 10)),
                   target_backlog=max(1, int(num("targetBacklogPerReplica", 500))),
                   scale_down_window=num("scaleDownStabilizationSeconds", 300))


@dataclass(frozen=True)
class Recommendation:
    at: float
    replicas: int


@dataclass(frozen=True)
class Decision:
    replicas: int
    recommended: int
    history: tuple[Recommendation, ...] = field(default=())


def recommend(backlog: int, policy: Policy) -> int:
    """Replicas for this backlog alone, clamped to the policy's bounds."""
    wanted = math.ceil(max(0, backlog) / policy.target_backlog)
    return min(policy.max_replicas, max(policy.min_replicas, wanted))


def decide_replicas(backlog: int, current: int, policy: Policy, now: float,
                    history: Sequence[Recommendation] = ()) -> Decision:
    """The replicas to run now, and the recommendation history to keep for next time."""
    recommended = recommend(backlog, policy)
    kept = tuple(r for r in history if now - r.at < policy.scale_down_window)
    kept = (*kept, Recommendation(now, recommended))
    if recommended >= current:
        replicas = recommended
    else:
        replicas = min(current, max(r.replicas for r in kept))
    replicas = min(policy.max_replicas, max(policy.min_replicas, replicas))
    return Decision(replicas=replicas, recommended=recommended, history=kept)
