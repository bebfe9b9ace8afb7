"""Status of Hookgate objects, as pure functions: conditions that say what is wrong.

Conditions follow the Kubernetes convention (type, status, reason, message,
lastTransitionTime, observedGeneration); ``lastTransitionTime`` only moves when the status
does, so ``kubectl wait --for=condition=Ready`` and alerting see real transitions only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from hookgate.model.problems import Problem

__all__ = ["condition", "merge_conditions", "now_iso", "object_status"]


def now_iso(now: float | None = None) -> str:
    moment = datetime.now(UTC) if now is None else datetime.fromtimestamp(now, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(type_: str, ok: bool, reason: str, message: str, generation: int,
              now: str) -> dict[str, Any]:
    return {"type": type_, "status": "True" if ok else "False", "reason": reason,
            "message": message[:32768], "observedGeneration": generation,
            "lastTransitionTime": now}


def merge_conditions(previous: Sequence[Mapping[str, Any]] | None,
                     new: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``new`` conditions, keeping each one's lastTransitionTime if its status is unchanged,
    and keeping other writers' condition types untouched."""
    old = {c.get("type"): c for c in previous or ()}
    out = []
    for c in new:
        before = old.pop(c["type"], None)
        if before is not None and before.get("status") == c["status"]:
            c = {**c, "lastTransitionTime": before.get("lastTransitionTime",
                                                       c["lastTransitionTime"])}
        out.append(c)
    out.extend(dict(c) for c in old.values())
    return out


def object_status(obj: Mapping[str, Any], problems: Sequence[Problem], now: str,
                  ready_message: str = "configured", **extra: Any) -> dict[str, Any]:
    """The status of one endpoint, subscription or source after a compile."""
    generation = int(obj.get("metadata", {}).get("generation") or 0)
    if problems:
        first = problems[0]
        message = "; ".join(
            (f"{p.field}: " if p.field else "") + p.message + (f" ({p.hint})" if p.hint else "")
            for p in problems)
        ready = condition("Ready", False, first.reason, message, generation, now)
    else:
        ready = condition("Ready", True, "Configured", ready_message, generation, now)
    previous = (obj.get("status") or {}).get("conditions")
    return {"conditions": merge_conditions(previous, [ready]), "observedGeneration": generation,
            **extra}
