"""The kopf handlers: thin. They only say when a gateway's loop should run.

Everything a reconcile does is in :mod:`hookgate.operator.reconcile`; the per-gateway
loops are in :mod:`hookgate.operator.loops`. Handlers here react to watch events (no
progress annotations, no finalizers) and tune kopf at start-up.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from hookgate.kubeclient import load_client
from hookgate.operator.kube import Kube
from hookgate.operator.loops import Loops
from hookgate.operator.reconcile import Reconciler

__all__ = ["OPTIONS"]

GROUP, VERSION = "hookgate.io", "v1alpha1"

#: Set by ``hookgate operator`` before kopf starts.
OPTIONS: dict[str, Any] = {"namespaced": False, "kubeconfig": None, "deliverer_image": None}

_loops: Loops | None = None
_generations: dict[str, int] = {}


async def _notify(obj: Any, type_: str, reason: str, message: str) -> None:
    kopf.event(obj, type=type_, reason=reason, message=message)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    global _loops
    # A watch the server ends after 4.5 min is re-opened at once; shorter than common
    # load-balancer idle timeouts, so a silently dropped connection is noticed.
    settings.watching.server_timeout = 270
    # The client gives up a little after the server should have answered, for the same case.
    settings.watching.client_timeout = 300
    settings.watching.connect_timeout = 30
    # Every other API call is bounded too: a hung call must not stall a reconcile forever.
    settings.networking.request_timeout = 60
    # Our annotations, not kopf's defaults, in case anything is ever stored on objects.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="hookgate.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="hookgate.io", key="last-handled-configuration")
    settings.persistence.finalizer = "hookgate.io/finalizer"
    # Events on objects for what users act on (scaling, invalid objects), not debug chatter.
    settings.posting.level = logging.INFO
    # In namespaced mode the operator may not list namespaces or CRDs cluster-wide:
    # scanning would fail on RBAC and serves nothing there.
    settings.scanning.disabled = bool(OPTIONS["namespaced"])
    reconciler = Reconciler(Kube(load_client(OPTIONS["kubeconfig"])), notify=_notify)
    if OPTIONS["deliverer_image"]:
        reconciler.default_image = OPTIONS["deliverer_image"]
    _loops = Loops(reconciler)


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    if _loops is not None:
        await _loops.stop_all()


@kopf.on.event(GROUP, VERSION, "webhookgateways")
async def gateway_event(type: str, name: str, namespace: str | None, spec: kopf.Spec,
                        **_: Any) -> None:
    assert _loops is not None and namespace is not None
    if type == "DELETED":
        await _loops.stop(namespace, name)
        return
    interval = (spec.get("autoscaling") or {}).get("pollingIntervalSeconds")
    _loops.ensure(namespace, name, float(interval) if interval else None)


def _changed(type_: str, body: kopf.Body) -> bool:
    """Whether a watch event is a change of spec (not a status write of our own)."""
    md = body.get("metadata", {})
    key = f"{body.get('kind')}/{md.get('namespace')}/{md.get('name')}"
    if type_ == "DELETED":
        _generations.pop(key, None)
        return True
    generation = int(md.get("generation") or 0)
    if _generations.get(key) == generation:
        return False
    _generations[key] = generation
    return True


@kopf.on.event(GROUP, VERSION, "webhookendpoints")
@kopf.on.event(GROUP, VERSION, "subscriptions")
@kopf.on.event(GROUP, VERSION, "webhooksources")
async def routing_event(type: str, body: kopf.Body, namespace: str | None,
                        **_: Any) -> None:
    assert _loops is not None and namespace is not None
    if _changed(type, body):
        _loops.poke_namespace(namespace)
