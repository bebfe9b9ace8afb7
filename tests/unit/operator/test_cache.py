"""The operator's cache: which watch events move a namespace's revision (and so trigger a
publish), and which Secrets it keeps."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from hookgate.operator.cache import Cache, digest, secret_refs

NS = "team"


def obj(kind: str, name: str, spec: dict[str, Any] | None = None, **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "hookgate.io/v1alpha1", "kind": kind,
            "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}",
                         "resourceVersion": "1", "generation": 1, **meta},
            "spec": spec or {}}


def secret(name: str, value: str = "c2VjcmV0", **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}",
                         "resourceVersion": "1", **meta},
            "data": {"secret": value}}


def bumped(o: dict[str, Any], **changes: Any) -> dict[str, Any]:
    new = copy.deepcopy(o)
    new["metadata"]["resourceVersion"] = str(int(new["metadata"]["resourceVersion"]) + 1)
    new.update(changes)
    return new


ENDPOINT = obj("WebhookEndpoint", "orders", {"url": "https://x.example/",
                                              "secretRef": {"name": "orders-signing"}})


def test_digest_ignores_status_and_resource_version_but_not_spec() -> None:
    status_only = bumped(ENDPOINT, status={"conditions": [{"type": "Ready"}]})
    assert digest(status_only) == digest(ENDPOINT)
    respec = bumped(ENDPOINT, spec={"url": "https://y.example/"})
    assert digest(respec) != digest(ENDPOINT)
    relabelled = bumped(ENDPOINT)
    relabelled["metadata"]["labels"] = {"team": "a"}
    assert digest(relabelled) != digest(ENDPOINT)
    deleting = bumped(ENDPOINT)
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert digest(deleting) != digest(ENDPOINT)
    recreated = copy.deepcopy(ENDPOINT)
    recreated["metadata"]["uid"] = "another"
    assert digest(recreated) != digest(ENDPOINT)


def test_secret_refs_are_found_anywhere_in_a_spec() -> None:
    assert secret_refs(ENDPOINT) == {"orders-signing"}
    # An endpoint that names no Secret refers to the one the operator generates for it.
    assert secret_refs(obj("WebhookEndpoint", "audit", {"url": "https://a.example/"})) == {
        "audit-hookgate-signing"}
    gateway = obj("WebhookGateway", "default", {
        "queue": {"redis": {"urlFrom": {"secretKeyRef": {"name": "redis", "key": "url"}}}},
        "ingest": {"apiKeysFrom": {"secretRef": {"name": "api-keys"}}}})
    assert secret_refs(gateway) == {"redis", "api-keys"}
    source = obj("WebhookSource", "kafka", {"kafka": {"sasl": [{"secretRef": {"name": "s"}}]}})
    assert secret_refs(source) == {"s"}


def test_only_input_changes_move_the_revision() -> None:
    cache = Cache()
    assert cache.put(ENDPOINT)
    start = cache.revision(NS)
    # A status write (the operator's own) is no input.
    assert not cache.put(bumped(ENDPOINT, status={"observedGeneration": 1}))
    assert cache.revision(NS) == start
    # Nor is the same object seen again (a watch re-opened).
    assert not cache.put(copy.deepcopy(ENDPOINT))
    assert cache.put(bumped(ENDPOINT, spec={"url": "https://y.example/"}))
    assert cache.revision(NS) == start + 1
    assert cache.remove(ENDPOINT)
    assert cache.get("WebhookEndpoint", NS, "orders") is None
    assert not cache.remove(ENDPOINT)  # already gone
    assert cache.revision(NS) == start + 2
    assert cache.revision("elsewhere") == 0


def test_managed_fields_are_not_kept() -> None:
    cache = Cache()
    cache.put({**ENDPOINT, "metadata": {**ENDPOINT["metadata"], "managedFields": [{"x": 1}]}})
    stored = cache.get("WebhookEndpoint", NS, "orders")
    assert stored is not None and "managedFields" not in stored["metadata"]


def test_secrets_nothing_refers_to_are_no_input_and_not_kept_once_warm() -> None:
    cache = Cache()
    cache.warmed()
    cache.put(ENDPOINT)
    start = cache.revision(NS)
    assert not cache.put(secret("unrelated"))
    assert not cache.put(bumped(secret("unrelated"), data={"x": "eQ=="}))
    assert cache.revision(NS) == start and cache.secrets(NS) == {}
    assert cache.put(secret("orders-signing"))
    assert set(cache.secrets(NS)) == {"orders-signing"}
    assert cache.put(bumped(secret("orders-signing"), data={"secret": "bmV3"}))
    assert cache.remove(secret("orders-signing"))
    assert cache.secrets(NS) == {}
    assert cache.revision(NS) == start + 3


def test_a_secret_listed_before_its_endpoint_is_kept_while_warming() -> None:
    cache = Cache()
    cache.put(secret("orders-signing"))  # the Secrets' watch listed first
    cache.put(secret("helm-release"))
    cache.put(ENDPOINT)
    assert set(cache.secrets(NS)) == {"orders-signing"}
    cache.warmed()  # what nothing refers to is dropped
    later = obj("WebhookEndpoint", "later", {"secretRef": {"name": "helm-release"}})
    cache.put(later)
    assert list(cache.missing_secrets(NS)) == ["helm-release"]


def test_a_secret_referred_to_later_is_read_once() -> None:
    cache = Cache()
    cache.warmed()
    cache.put(secret("orders-signing"))  # exists, but nothing refers to it yet
    cache.put(obj("WebhookEndpoint", "ghost", {"secretRef": {"name": "never-created"}}))
    cache.put(ENDPOINT)
    reads: list[str] = []

    async def get(kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        reads.append(name)
        return secret(name)

    before = cache.revision(NS)
    asyncio.run(cache.resolve_secrets(NS, get))
    assert reads == ["orders-signing"]  # the Secret no watch saw is not asked for
    assert set(cache.secrets(NS)) == {"orders-signing"}
    assert cache.revision(NS) == before + 1
    asyncio.run(cache.resolve_secrets(NS, get))
    assert reads == ["orders-signing"]  # the watch follows it from now on


def test_a_secret_no_longer_referred_to_is_dropped() -> None:
    cache = Cache()
    cache.warmed()
    cache.put(ENDPOINT)
    cache.put(secret("orders-signing"))
    cache.put(bumped(ENDPOINT, spec={"secretRef": {"name": "other"}}))
    assert cache.secrets(NS) == {}
    assert list(cache.missing_secrets(NS)) == []  # "other" does not exist


def test_prune_drops_what_a_fresh_list_no_longer_has_but_not_what_came_since() -> None:
    cache = Cache()
    cache.put(ENDPOINT)
    cache.put(obj("WebhookEndpoint", "ghost"))
    before = cache.snapshot("WebhookEndpoint", NS)
    revision = cache.revision(NS)
    cache.put(obj("WebhookEndpoint", "new"))  # the watch, while the list was under way
    assert cache.prune("WebhookEndpoint", NS, before, {"orders"})
    assert {o["metadata"]["name"] for o in cache.objects("WebhookEndpoint", NS)} == {
        "orders", "new"}
    assert cache.revision(NS) == revision + 2
    assert not cache.prune("WebhookEndpoint", NS, cache.snapshot("WebhookEndpoint", NS),
                           {"orders", "new"})
