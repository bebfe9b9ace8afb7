"""When a gateway's config is compiled and published: a pure decision on its inputs.

A reconcile runs on every watch event that changes an input and on every backlog poll;
only when :func:`publish_reason` names a reason does it compile and apply the children.
Otherwise the poll reads the queue, scales, and writes nothing that has not changed.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RESYNC_SECONDS", "Inputs", "publish_reason"]

#: Children are applied again this often even when nothing changed, to repair what no
#: watch reports (a ScaledObject deleted by hand, an object deleted while a watch re-listed:
#: the resync lists the namespace's endpoints, subscriptions and sources once).
RESYNC_SECONDS = 600.0


@dataclass(frozen=True)
class Inputs:
    """Everything a gateway's children are built from, in a form cheap to compare."""

    revision: int  #: the namespace's cache revision (objects and referred-to Secrets)
    replicas: int  #: the replica count decided by autoscaling or the spec
    image: str  #: the deliverer image for gateways that name none


def publish_reason(last: Inputs | None, inputs: Inputs, *, published_at: float, now: float,
                   children_changed: bool, resync: float = RESYNC_SECONDS) -> str | None:
    """Why the children must be built and applied now, or None when what runs is current.

    ``inputs``: an input changed (or nothing was published yet, or the last apply failed);
    ``children``: a child was deleted or changed by someone else; ``resync``: the periodic
    re-apply is due.
    """
    if last != inputs:
        return "inputs"
    if children_changed:
        return "children"
    if now - published_at >= resync:
        return "resync"
    return None
