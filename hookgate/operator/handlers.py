"""The kopf handlers: thin. They keep the cache current and say when a gateway's loop runs.

Everything a reconcile does is in :mod:`hookgate.operator.reconcile`; the per-gateway
loops are in :mod:`hookgate.operator.loops`; what the watches saw is in
:mod:`hookgate.operator.cache`. Handlers here react to watch events (no progress
annotations, no finalizers) and tune kopf at start-up.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from hookgate.kubeclient import load_client
from hookgate.operator.cache import Cache
from hookgate.operator.kube import Kube
from hookgate.operator.loops import DEFAULT_INTERVAL, Loops
from hookgate.operator.reconcile import Reconciler

__all__ = ["OPTIONS", "api_answers"]

GROUP, VERSION = "hookgate.io", "v1alpha1"

#: Set by ``hookgate operator`` before kopf starts.
OPTIONS: dict[str, Any] = {"namespaced": False, "namespaces": [], "kubeconfig": None,
                           "deliverer_image": None}

_loops: Loops | None = None
_cache = Cache()
_poked: dict[str, int] = {}  # namespace -> the cache revision its gateways were woken at


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
    reconciler = Reconciler(Kube(load_client(OPTIONS["kubeconfig"])), cache=_cache,
                            notify=_notify)
    if OPTIONS["deliverer_image"]:
        reconciler.default_image = OPTIONS["deliverer_image"]
    _loops = Loops(reconciler)


async def api_answers() -> None:
    """Raise unless the API server answers the operator (its readiness check): a list of
    WebhookGateways where it watches, with its own credentials."""
    if _loops is None:
        raise RuntimeError("the operator has not started")
    namespaces = OPTIONS["namespaces"]
    await _loops.reconciler.kube.can_list_gateways(namespaces[0] if namespaces else None)


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    if _loops is not None:
        await _loops.stop_all()


def _plain(body: kopf.Body) -> dict[str, Any]:
    return {k: v for k, v in body.items()}


# Every object a reconcile reads goes into the cache from the event handlers below. Not
# from kopf indexes: kopf holds every handler until each indexed object is indexed, and its
# readiness bookkeeping then costs time in the square of the objects (minutes at 10,000).
# A gateway's first reconcile fills its namespace's cache with one list instead
# (Reconciler._seed), so no first publish misses objects.
def _feed(type_: str | None, body: kopf.Body) -> None:
    if type_ == "DELETED":
        _cache.remove(_plain(body))
    else:
        _cache.put(_plain(body))


def _poke_if_changed(namespace: str) -> None:
    """Wake the namespace's gateways if an input of their configs moved since last time."""
    assert _loops is not None
    revision = _cache.revision(namespace)
    if _poked.get(namespace) != revision:
        _poked[namespace] = revision
        _loops.poke_namespace(namespace)


@kopf.on.event(GROUP, VERSION, "webhookgateways")
async def gateway_event(type: str, body: kopf.Body, name: str, namespace: str | None,
                        spec: kopf.Spec, **_: Any) -> None:
    assert _loops is not None and namespace is not None
    _feed(type, body)
    if type == "DELETED":
        await _loops.stop(namespace, name)
        return
    interval = (spec.get("autoscaling") or {}).get("pollingIntervalSeconds")
    # A status write of our own changes no input: the loop runs on as it was.
    if (namespace, name) not in _loops.tasks:
        _loops.ensure(namespace, name, float(interval) if interval else None)
    else:
        _loops.intervals[(namespace, name)] = float(interval) if interval else DEFAULT_INTERVAL
        _poke_if_changed(namespace)


@kopf.on.event(GROUP, VERSION, "webhookendpoints")
@kopf.on.event(GROUP, VERSION, "subscriptions")
@kopf.on.event(GROUP, VERSION, "webhooksources")
async def routing_event(type: str, body: kopf.Body, namespace: str | None,
                        **_: Any) -> None:
    assert namespace is not None
    _feed(type, body)
    _poke_if_changed(namespace)


@kopf.on.event("v1", "secrets")
async def secret_event(type: str, body: kopf.Body, namespace: str | None,
                       labels: kopf.Labels, **_: Any) -> None:
    assert _loops is not None and namespace is not None
    _feed(type, body)
    if "hookgate.io/gateway" in labels:  # a gateway's own keys Secret
        _loops.reconciler.child_event(type or "", _plain(body))
    _poke_if_changed(namespace)


# The children a gateway's publish applies: a child deleted or edited by hand is put back
# at once (its version is compared with the one the last apply returned).
_CHILD_LABELS: dict[str, Any] = {"app.kubernetes.io/managed-by": "hookgate",
                                 "hookgate.io/gateway": kopf.PRESENT}


@kopf.on.event("v1", "configmaps", labels=_CHILD_LABELS)
@kopf.on.event("v1", "services", labels=_CHILD_LABELS)
@kopf.on.event("v1", "serviceaccounts", labels=_CHILD_LABELS)
@kopf.on.event("apps", "v1", "deployments", labels=_CHILD_LABELS)
@kopf.on.event("policy", "v1", "poddisruptionbudgets", labels=_CHILD_LABELS)
@kopf.on.event("rbac.authorization.k8s.io", "v1", "roles", labels=_CHILD_LABELS)
@kopf.on.event("rbac.authorization.k8s.io", "v1", "rolebindings", labels=_CHILD_LABELS)
async def child_event(type: str, body: kopf.Body, **_: Any) -> None:
    assert _loops is not None
    _loops.reconciler.child_event(type or "", _plain(body))
