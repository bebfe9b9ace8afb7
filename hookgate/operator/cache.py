"""What the operator knows of the cluster, kept current by watches instead of re-listed.

The kopf handlers feed every watch event of the kinds a reconcile reads (gateways,
endpoints, subscriptions, sources, and Secrets) into one :class:`Cache`; a reconcile then
reads memory, not the API server. Each namespace has a *revision* that moves only when an
input of its gateways' configs changes: a spec, labels or annotations, a deletion mark, or
the data of a Secret the config refers to. A status written by the operator itself, or a
Secret nothing refers to, leaves it where it was, so publishing can be decided by comparing
two numbers.

Secrets: the cache keeps the data only of Secrets some cached object refers to (any
``secretRef`` or ``secretKeyRef`` in a spec, and the generated Secret of an endpoint that
names none); of every other Secret it keeps the name alone, to know it exists. Until the
first reconcile (:meth:`Cache.warmed`) it keeps every Secret whole, since the watches list
kinds in no set order and an endpoint may come after its Secret. A Secret that becomes
referred to later is read once (:meth:`Cache.resolve_secrets`) and from then on followed by
the watch.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from hookgate.operator.build import generated_secret_name

__all__ = ["CACHED_KINDS", "Cache", "digest", "secret_refs"]

#: The kinds of :class:`Cache`, other than Secrets.
CACHED_KINDS = ("WebhookGateway", "WebhookEndpoint", "Subscription", "WebhookSource")
SECRET = "Secret"

#: Metadata dropped from cached bodies: large and never read.
_DROPPED_METADATA = ("managedFields",)


def digest(obj: Mapping[str, Any]) -> str:
    """A hash of what a compile reads of an object: everything but status and bookkeeping.

    Equal for two versions of an object that differ only in status or resourceVersion
    (a status write of the operator's own); different when its spec, labels,
    annotations, deletion mark or (for a Secret) data differ.
    """
    md = obj.get("metadata") or {}
    annotations = {k: v for k, v in (md.get("annotations") or {}).items()
                   if k != "kubectl.kubernetes.io/last-applied-configuration"}
    relevant = {"uid": md.get("uid"), "labels": md.get("labels") or {},
                "annotations": annotations, "deletionTimestamp": md.get("deletionTimestamp"),
                **{k: v for k, v in obj.items() if k not in ("metadata", "status")}}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()


def secret_refs(obj: Mapping[str, Any]) -> frozenset[str]:
    """Names of the Secrets (in the object's namespace) an object's spec refers to."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                if key in ("secretRef", "secretKeyRef") and isinstance(item, Mapping) \
                        and isinstance(item.get("name"), str):
                    found.add(item["name"])
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    spec = obj.get("spec") or {}
    walk(spec)
    if obj.get("kind") == "WebhookEndpoint" and not (isinstance(spec, Mapping)
                                                     and spec.get("secretRef")):
        found.add(generated_secret_name(obj["metadata"]["name"]))
    return frozenset(found)


def _slim(obj: Mapping[str, Any]) -> dict[str, Any]:
    md = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in _DROPPED_METADATA}
    return {**obj, "metadata": md}


@dataclass
class _Namespace:
    revision: int = 0
    objects: dict[str, dict[str, dict[str, Any]]] = field(
        default_factory=lambda: {k: {} for k in CACHED_KINDS})
    digests: dict[tuple[str, str], str] = field(default_factory=dict)
    secrets: dict[str, dict[str, Any]] = field(default_factory=dict)  # referred to: whole
    secret_names: set[str] = field(default_factory=set)  # every Secret that exists
    unclaimed: dict[str, dict[str, Any]] = field(default_factory=dict)  # until warmed
    refs: dict[str, set[tuple[str, str]]] = field(default_factory=dict)  # secret -> referrers
    refs_of: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict)


#: get(kind, namespace, name): the object, or None if it does not exist.
Getter = Callable[[str, str, str], Awaitable[dict[str, Any] | None]]


class Cache:
    def __init__(self) -> None:
        self._namespaces: dict[str, _Namespace] = {}
        self._warming = True

    def warmed(self) -> None:
        """The first listing is over: from now on keep only the Secrets objects refer to."""
        self._warming = False
        for ns in self._namespaces.values():
            ns.unclaimed.clear()

    def _ns(self, namespace: str) -> _Namespace:
        return self._namespaces.setdefault(namespace, _Namespace())

    # --- fed by the watches ------------------------------------------------------------

    def put(self, obj: Mapping[str, Any]) -> bool:
        """Store an object as a watch saw it; whether an input of a config changed."""
        kind, md = obj["kind"], obj["metadata"]
        ns, name = self._ns(md["namespace"]), md["name"]
        if kind == SECRET:
            ns.secret_names.add(name)
            if not ns.refs.get(name):
                if self._warming:
                    ns.unclaimed[name] = _slim(obj)
                return False  # nothing reads it (yet): no input changed
            return self._store_secret(ns, obj)
        body = _slim(obj)
        ns.objects[kind][name] = body
        self._set_refs(ns, (kind, name), secret_refs(body))
        return self._set_digest(ns, (kind, name), digest(body))

    def remove(self, obj: Mapping[str, Any]) -> bool:
        """Forget a deleted object; whether an input of a config changed."""
        kind, md = obj["kind"], obj["metadata"]
        ns, name = self._ns(md["namespace"]), md["name"]
        if kind == SECRET:
            ns.secret_names.discard(name)
            ns.unclaimed.pop(name, None)
            if ns.secrets.pop(name, None) is None:
                return False
        else:
            ns.objects[kind].pop(name, None)
            self._set_refs(ns, (kind, name), frozenset())
        if ns.digests.pop((kind, name), None) is None:
            return False
        ns.revision += 1
        return True

    # --- read by a reconcile -------------------------------------------------------------

    def revision(self, namespace: str) -> int:
        """A number that moves whenever an input of this namespace's configs changes."""
        return self._ns(namespace).revision

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self._ns(namespace).objects[kind].get(name)

    def objects(self, kind: str, namespace: str) -> list[dict[str, Any]]:
        return list(self._ns(namespace).objects[kind].values())

    def secrets(self, namespace: str) -> dict[str, dict[str, Any]]:
        """The Secrets of this namespace that cached objects refer to, by name."""
        return dict(self._ns(namespace).secrets)

    def missing_secrets(self, namespace: str) -> Iterator[str]:
        """Secrets referred to and known to exist whose data the cache does not hold yet."""
        ns = self._ns(namespace)
        for name, referrers in ns.refs.items():
            if referrers and name in ns.secret_names and name not in ns.secrets:
                yield name

    async def resolve_secrets(self, namespace: str, get: Getter) -> None:
        """Read the Secrets that became referred to after the watch last saw them."""
        for name in list(self.missing_secrets(namespace)):
            obj = await get(SECRET, namespace, name)
            ns = self._ns(namespace)
            if obj is None:
                ns.secret_names.discard(name)
            elif name not in ns.secrets:  # the watch may have been faster, and newer
                obj.setdefault("kind", SECRET)
                self._store_secret(ns, obj)

    def snapshot(self, kind: str, namespace: str) -> dict[str, dict[str, Any]]:
        """The cached objects of a kind, to :meth:`prune` with after a fresh list."""
        return dict(self._ns(namespace).objects[kind])

    def prune(self, kind: str, namespace: str, before: Mapping[str, Mapping[str, Any]],
              listed: set[str]) -> bool:
        """Drop what was cached ``before`` a list began and is not in it: deleted while a
        watch was re-listing (kopf reports no deletions then). An object the watch stored
        after the snapshot is left alone. Whether an input of a config changed."""
        ns = self._ns(namespace)
        changed = False
        for name, obj in before.items():
            if name not in listed and ns.objects[kind].get(name) is obj:
                changed = self.remove(obj) or changed
        return changed

    # --- bookkeeping -----------------------------------------------------------------------

    def _store_secret(self, ns: _Namespace, obj: Mapping[str, Any]) -> bool:
        name = obj["metadata"]["name"]
        ns.secrets[name] = _slim(obj)
        return self._set_digest(ns, (SECRET, name), digest(obj))

    def _set_digest(self, ns: _Namespace, key: tuple[str, str], value: str) -> bool:
        if ns.digests.get(key) == value:
            return False
        ns.digests[key] = value
        ns.revision += 1
        return True

    def _set_refs(self, ns: _Namespace, referrer: tuple[str, str],
                  names: frozenset[str]) -> None:
        old = ns.refs_of.get(referrer, frozenset())
        if old == names:
            return
        for name in old - names:
            holders = ns.refs.get(name, set())
            holders.discard(referrer)
            if not holders:
                ns.refs.pop(name, None)
                if ns.secrets.pop(name, None) is not None:  # nothing reads it any more
                    ns.digests.pop((SECRET, name), None)
        for name in names - old:
            ns.refs.setdefault(name, set()).add(referrer)
            if name in ns.unclaimed:
                self._store_secret(ns, ns.unclaimed.pop(name))
        if names:
            ns.refs_of[referrer] = names
        else:
            ns.refs_of.pop(referrer, None)
