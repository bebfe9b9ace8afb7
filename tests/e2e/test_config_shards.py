"""A deliverer's config reader on a real API server: versions in many shards, read whole.

The objects are the operator's own (``build_config_objects``), applied by the test so that
it decides when each shard and each manifest appears; the reader is the deliverer's
(:class:`hookgate.deliverer.config.cluster.ClusterConfig`, over aiohttp)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest

from hookgate.deliverer.config.apiserver import ApiServer, load_credentials
from hookgate.deliverer.config.cluster import ClusterConfig, ConfigUnavailable
from hookgate.model.bundle import GatewayConfig
from hookgate.model.compiler import Compiled
from hookgate.model.publication import Publication, publish
from hookgate.model.routing import EndpointConfig, RoutingConfig
from hookgate.operator.build import build_config_objects
from tests.support.waiting import wait_for

from .kubeutil import Kube

LIMIT = 1024  # bytes per shard: small, so that a small config takes many shards


def config_of(n: int, tag: str) -> GatewayConfig:
    # random paths and keys: they compress as little as real ones, so shards are many
    endpoints = {f"shop/e{i}": EndpointConfig(
        f"shop/e{i}", f"https://e{i}.example/{tag}/{os.urandom(16).hex()}", 5, (0, 5))
        for i in range(n)}
    keys = {k: (f"whsec_{os.urandom(24).hex()}",) for k in endpoints}
    return GatewayConfig(Compiled(RoutingConfig("shop/default", endpoints), keys))


@pytest.fixture
async def reader(kube: Kube, namespace: str) -> AsyncIterator[ClusterConfig]:
    # The admin kubeconfig of the test's control plane: a client certificate.
    api = ApiServer(load_credentials(str(kube.kubeconfig)))
    source = ClusterConfig(f"{namespace}/default", api, interval=0.2)
    yield source
    await source.close()


def objects(ns: str, publication: Publication) -> list[dict[str, Any]]:
    gateway = {"apiVersion": "hookgate.io/v1alpha1", "kind": "WebhookGateway",
               "metadata": {"name": "default", "namespace": ns, "uid": "none"}}
    out = build_config_objects(gateway, publication)
    for obj in out:  # no owner: the garbage collector would remove them, owner being absent
        del obj["metadata"]["ownerReferences"]
    return out


def put(kube: Kube, objs: list[dict[str, Any]]) -> None:
    kube.kubectl("apply", "--server-side", "-f", "-",
                 input="\n".join(json.dumps(o) for o in objs))


async def test_a_version_in_many_shards_is_read_whole_and_the_next_one_replaces_it(
        kube: Kube, namespace: str, reader: ClusterConfig) -> None:
    first_config = config_of(200, "v1")
    first = publish("default", first_config, LIMIT)
    assert len(first.routing.chunks) > 3 and len(first.keys.chunks) > 3
    await asyncio.to_thread(put, kube, objects(namespace, first))
    assert await reader.load() == first_config

    applied: list[GatewayConfig] = []
    rejected: list[Exception] = []
    watcher = asyncio.create_task(reader.watch(applied.append, rejected.append))
    try:
        # The next version's manifest appears before its shards (a reader is never allowed
        # to see that order from the operator; a torn read looks the same): the running
        # config stays and the reader says why.
        second_config = config_of(200, "v2")
        second = publish("default", second_config, LIMIT)
        *shards, manifest = objects(namespace, second)
        await asyncio.to_thread(put, kube, [manifest])
        await wait_for(lambda: rejected, timeout=30, what="the torn version to be refused")
        assert "changed 3 times while it was being read" in str(rejected[0])
        assert applied == []
        await asyncio.to_thread(put, kube, shards)
        await wait_for(lambda: applied, timeout=30, what="the second version to be applied")
        assert applied == [second_config]
        assert reader.version == second.manifest.version
    finally:
        watcher.cancel()


async def test_no_manifest_says_what_to_check(reader: ClusterConfig) -> None:
    with pytest.raises(ConfigUnavailable, match="check that the WebhookGateway exists"):
        await reader.load()
