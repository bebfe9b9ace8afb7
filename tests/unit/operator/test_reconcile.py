"""A reconcile from the cache, against a recording stand-in for the API server: what it
asks for when nothing changed, and that status writes neither flood the API server nor
hold a config change back. (The real API server is in tests/e2e/test_operator.py; this
one can hold requests open, to show what runs while others wait.)"""

from __future__ import annotations

import asyncio
import base64
import copy
from collections.abc import Mapping
from typing import Any

from hookgate.operator.cache import Cache
from hookgate.operator.reconcile import STATUS_WRITES_IN_FLIGHT, Reconciler
from tests.support.clock import FakeClock
from tests.support.waiting import wait_for

NS = "team"
SECRET = base64.b64encode(b"whsec_aG9va2dhdGUgZXhhbXBsZSBzZWNyZXQh").decode()


class RecordingApi:
    """Answers like the API server; status patches of endpoints and subscriptions wait
    while ``hold`` is clear."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        self.in_flight = self.most_in_flight = 0
        self.hold = asyncio.Event()
        self.hold.set()
        self.version = 0
        self.statuses: dict[tuple[str, str], Mapping[str, Any]] = {}
        self.listed: dict[str, list[str]] = {}  # what a list returns, by kind: names
        self.keda = False  # whether KEDA's API is served

    async def apply(self, obj: Mapping[str, Any], *, force: bool = True) -> Any:
        self.requests.append(("apply", f"{obj['kind']}/{obj['metadata']['name']}"))
        self.version += 1
        return {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(self.version)}}

    async def patch_status(self, kind: str, namespace: str, name: str,
                           status: Mapping[str, Any]) -> None:
        self.requests.append(("status", f"{kind}/{name}"))
        self.statuses[(kind, name)] = status
        if kind == "WebhookGateway":
            return
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.hold.wait()
        finally:
            self.in_flight -= 1

    async def find(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.requests.append(("get", f"{kind}/{name}"))
        return None

    async def list(self, kind: str, namespace: str, *, label_selector: str | None = None
                   ) -> list[dict[str, Any]]:
        self.requests.append(("list", kind if label_selector is None else "shards"))
        if label_selector is not None:
            return []  # no shards of older versions to delete
        return [{"kind": kind, "metadata": meta(name)} for name in self.listed.get(kind, [])]

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        self.requests.append(("delete", f"{kind}/{name}"))

    async def has_api(self, group_version: str, plural: str) -> bool:
        return self.keda


def meta(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": NS, "uid": f"uid-{name}", "resourceVersion": "1",
            "generation": 1, **extra}


def populated(endpoints: int) -> Cache:
    cache = Cache()
    cache.put({"apiVersion": "hookgate.io/v1alpha1", "kind": "WebhookGateway",
               "metadata": meta("default"), "spec": {"autoscaling": {"mode": "Disabled"}}})
    cache.put({"apiVersion": "v1", "kind": "Secret", "metadata": meta("signing"),
               "data": {"secret": SECRET}})
    for i in range(endpoints):
        cache.put({"apiVersion": "hookgate.io/v1alpha1", "kind": "WebhookEndpoint",
                   "metadata": meta(f"ep-{i}"),
                   "spec": {"url": f"https://ep-{i}.example/", "secretRef": {"name": "signing"}}})
        cache.put({"apiVersion": "hookgate.io/v1alpha1", "kind": "Subscription",
                   "metadata": meta(f"sub-{i}"),
                   "spec": {"endpointRef": {"name": f"ep-{i}"}, "eventTypes": ["a.*"]}})
    return cache


def reconciler(api: RecordingApi, cache: Cache, clock: FakeClock | None = None) -> Reconciler:
    return Reconciler(api, cache=cache,  # type: ignore[arg-type]
                      clock=clock or FakeClock(1000))


async def statuses_written(r: Reconciler) -> None:
    task = r.state(NS, "default").statuses
    assert task is not None
    await asyncio.wait_for(task, 10)


def watch_brings_back_statuses(api: RecordingApi, cache: Cache) -> None:
    """What the watch would do after our status writes: objects carry their new status."""
    for (kind, name), status in api.statuses.items():
        obj = cache.get(kind, NS, name)
        assert obj is not None
        cache.put({**obj, "status": status})


async def test_nothing_changed_means_no_requests() -> None:
    api, cache = RecordingApi(), populated(20)
    r = reconciler(api, cache)
    await r.reconcile(NS, "default")
    await statuses_written(r)
    applied = [target for verb, target in api.requests if verb == "apply"]
    assert "ConfigMap/hookgate-default-config" in applied
    assert sum(verb == "status" for verb, _ in api.requests) == 41  # 20 + 20 + the gateway
    watch_brings_back_statuses(api, cache)
    api.requests.clear()
    for _ in range(5):  # backlog polls
        await r.reconcile(NS, "default")
    assert api.requests == []
    # A status-only event (someone else's condition) is no reason to publish either.
    ep = cache.get("WebhookEndpoint", NS, "ep-3")
    assert ep is not None
    cache.put({**ep, "status": {**ep["status"], "conditions": [
        *ep["status"]["conditions"], {"type": "Audited", "status": "True"}]}})
    await r.reconcile(NS, "default")
    assert [verb for verb, _ in api.requests] == []


async def test_status_writes_are_bounded_and_a_config_change_overtakes_them() -> None:
    api, cache = RecordingApi(), populated(200)
    r = reconciler(api, cache)
    api.hold.clear()  # the API server is slow to answer status patches
    await r.reconcile(NS, "default")
    first = r.state(NS, "default").statuses
    await wait_for(lambda: api.in_flight == STATUS_WRITES_IN_FLIGHT, timeout=10,
                   what="the status writes to fill their slots")
    # A subscription changes while ~385 status writes still wait: the new config is applied
    # at once, not after them.
    sub = copy.deepcopy(cache.get("Subscription", NS, "sub-0"))
    assert sub is not None
    sub["spec"]["eventTypes"] = ["b.*"]
    cache.put(sub)
    before = len(api.requests)
    await asyncio.wait_for(r.reconcile(NS, "default"), 10)
    assert ("apply", "ConfigMap/hookgate-default-config") in api.requests[before:]
    assert first is not None
    await asyncio.gather(first, return_exceptions=True)
    assert first.cancelled()  # statuses of the old config are not written after the new
    api.hold.set()
    await statuses_written(r)
    assert api.most_in_flight == STATUS_WRITES_IN_FLIGHT


async def test_the_resync_lists_once_and_drops_what_was_deleted_unseen() -> None:
    api, cache, clock = RecordingApi(), populated(3), FakeClock(1000)
    r = reconciler(api, cache, clock)
    await r.reconcile(NS, "default")
    await statuses_written(r)
    watch_brings_back_statuses(api, cache)
    # ep-2 was deleted while a watch re-listed: no event said so.
    api.listed = {"WebhookEndpoint": ["ep-0", "ep-1"],
                  "Subscription": ["sub-0", "sub-1", "sub-2"]}
    api.requests.clear()
    clock.advance(599)
    await r.reconcile(NS, "default")
    assert api.requests == []
    clock.advance(1)
    await r.reconcile(NS, "default")
    assert [target for verb, target in api.requests if verb == "list"] == [
        "WebhookEndpoint", "Subscription", "WebhookSource",
        "shards", "shards"]  # and the new version's stale shards, by label
    assert cache.get("WebhookEndpoint", NS, "ep-2") is None
    assert ("apply", "ConfigMap/hookgate-default-config") in api.requests


async def test_children_a_gateway_no_longer_has_are_deleted() -> None:
    """Leaving KEDA mode deletes the ScaledObject (its HPA would go on scaling the
    deliverers) and the credentials' Secret and TriggerAuthentication; a first publish after
    a start also deletes any an earlier operator left; later publishes delete nothing."""
    api, cache = RecordingApi(), populated(1)
    api.keda = True
    gateway = cache.get("WebhookGateway", NS, "default")
    assert gateway is not None
    keda = {**gateway, "spec": {"queue": {"redis": {"url": "redis://hg:pw@127.0.0.1:1/0"}},
                                "autoscaling": {"mode": "KEDA"}}}
    cache.put(keda)
    r = reconciler(api, cache)
    await r.reconcile(NS, "default")
    optional = {"ScaledObject/hookgate-default", "Secret/hookgate-default-redis-auth",
                "TriggerAuthentication/hookgate-default-redis-auth"}
    assert optional <= {target for verb, target in api.requests if verb == "apply"}
    assert not [target for verb, target in api.requests if verb == "delete"
                and target in optional]
    api.requests.clear()
    cache.put({**keda, "metadata": {**keda["metadata"], "resourceVersion": "2", "generation": 2},
               "spec": {"autoscaling": {"mode": "Disabled"}}})
    await r.reconcile(NS, "default")
    assert {target for verb, target in api.requests if verb == "delete"} >= optional
    api.requests.clear()
    cache.put({**keda, "metadata": {**keda["metadata"], "resourceVersion": "3", "generation": 3},
               "spec": {"autoscaling": {"mode": "Disabled", "maxReplicas": 3}}})
    await r.reconcile(NS, "default")
    assert ("apply", "Deployment/hookgate-default") in api.requests
    assert not [target for verb, target in api.requests if verb == "delete"
                and target in optional]

    fresh = RecordingApi()
    await reconciler(fresh, cache).reconcile(NS, "default")  # another operator's start
    assert {target for verb, target in fresh.requests if verb == "delete"} >= optional


async def test_an_event_is_posted_for_a_problem_or_a_recovery_not_for_a_first_ready() -> None:
    posted: list[tuple[str, str]] = []

    async def notify(obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        posted.append((type_, reason))

    reconciler = Reconciler(RecordingApi(), cache=Cache(), notify=notify)  # type: ignore[arg-type]
    endpoint = {"kind": "WebhookEndpoint", "metadata": {"namespace": NS, "name": "e"}}

    def ready(status: str, reason: str) -> dict[str, Any]:
        return {"conditions": [{"type": "Ready", "status": status, "reason": reason,
                                "message": reason}]}

    await reconciler._write_status(endpoint, ready("True", "Configured"))
    assert posted == []  # 20,000 objects Ready at a cold start post no 20,000 Events
    failing = {**endpoint, "status": ready("True", "Configured")}
    await reconciler._write_status(failing, ready("False", "SecretMissing"))
    recovering = {**endpoint, "status": ready("False", "SecretMissing")}
    await reconciler._write_status(recovering, ready("True", "Configured"))
    await reconciler._write_status(endpoint, ready("False", "InvalidFilter"))
    assert posted == [("Warning", "SecretMissing"), ("Normal", "Configured"),
                      ("Warning", "InvalidFilter")]
