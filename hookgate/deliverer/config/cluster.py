"""Routing config from the cluster: the versions the operator publishes.

The operator publishes each version as a small manifest ConfigMap that names immutable shards
(:mod:`hookgate.model.publication`). ``hookgate deliverer`` polls the manifest every second with
its own service account, which may read exactly the manifest and the shards of the current and
the previous version. When the manifest names a new version, it reads the shards it does not
hold yet (a shard never changes, so shards of an unchanged part are not read again), checks
them against the manifest's digests and only then hands the whole new config over: a
deliverer never runs half of one version and half of another. A change is applied within
about a second, live, like a file change to ``hookgate run``.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable, Sequence
from typing import Any

from hookgate.deliverer.config.apiserver import ApiError, ApiServer
from hookgate.model.bundle import GatewayConfig
from hookgate.model.publication import (
    KEYS_FILE,
    MANIFEST_KEY,
    ROUTING_FILE,
    Manifest,
    manifest_name,
    read,
)

__all__ = ["ClusterConfig", "ConfigUnavailable"]

log = logging.getLogger("hookgate.config")

#: A shard that vanished between reading the manifest and reading it means a newer version
#: replaced it: the manifest is read again, at most this many times in a row.
TORN_READS = 3


class ConfigUnavailable(Exception):
    """The published config cannot be read; the message says what to check."""


class _Torn(Exception):
    """A shard named by the manifest is gone: a newer version was published meanwhile."""


class ClusterConfig:
    def __init__(self, gateway: str, api: ApiServer, interval: float = 1.0) -> None:
        self.namespace, self.name = gateway.split("/", 1)
        self.api = api
        self.interval = interval
        self.version = ""  # of the config handed over last
        self._chunks: dict[str, bytes] = {}  # shard name -> its chunk (shards never change)

    def _path(self, plural: str, name: str) -> str:
        return f"/api/v1/namespaces/{self.namespace}/{plural}/{name}"

    async def _get(self, plural: str, name: str) -> dict[str, Any]:
        try:
            return await self.api.get(self._path(plural, name))
        except ApiError as exc:
            raise ConfigUnavailable(
                f"cannot read {plural[:-1]} {self.namespace}/{name} of gateway "
                f"{self.namespace}/{self.name} ({exc}); check that the WebhookGateway exists "
                "and the operator runs, and that this pod uses the gateway's service "
                "account") from None
        except OSError as exc:
            raise ConfigUnavailable(str(exc)) from None

    async def _manifest(self) -> Manifest:
        cm = await self._get("configmaps", manifest_name(self.name))
        text = (cm.get("data") or {}).get(MANIFEST_KEY)
        if text is None:
            raise ConfigUnavailable(
                f"ConfigMap {self.namespace}/{manifest_name(self.name)} has no {MANIFEST_KEY}: "
                "it was published by an operator of another Hookgate version; run the "
                "operator and the deliverers of one version")
        try:
            return Manifest.from_json(text)
        except ValueError as exc:
            raise ConfigUnavailable(str(exc)) from None

    async def _shard(self, plural: str, name: str, key: str) -> bytes:
        if name in self._chunks:
            return self._chunks[name]
        try:
            obj = await self.api.get(self._path(plural, name))
        except ApiError as exc:
            if exc.status in (403, 404):  # deleted, or no longer ours to read: superseded
                raise _Torn(name) from None
            raise ConfigUnavailable(f"cannot read config shard {name}: {exc}") from None
        except OSError as exc:
            raise ConfigUnavailable(str(exc)) from None
        field = "binaryData" if plural == "configmaps" else "data"
        encoded = (obj.get(field) or {}).get(key)
        if encoded is None:
            raise ConfigUnavailable(f"config shard {name} has no {key}: it was not written "
                                    "by the Hookgate operator")
        chunk = base64.b64decode(encoded)
        self._chunks[name] = chunk
        return chunk

    async def _shards(self, plural: str, names: Sequence[str], key: str) -> list[bytes]:
        return list(await asyncio.gather(*(self._shard(plural, n, key) for n in names)))

    async def _read(self, known: str) -> tuple[Manifest, GatewayConfig] | None:
        """The published version, or None when it is ``known``."""
        for attempt in range(TORN_READS):
            if attempt:  # the operator grants access to new shards just before it names
                await asyncio.sleep(0.2 * attempt)  # them; that may take a moment to hold
            manifest = await self._manifest()
            if manifest.version == known:
                return None
            try:
                routing = await self._shards("configmaps", manifest.routing_shards,
                                             ROUTING_FILE)
                keys = await self._shards("secrets", manifest.keys_shards, KEYS_FILE)
            except _Torn:
                continue
            try:
                # decompressing and parsing a large config takes a while: off the loop
                config = await asyncio.to_thread(read, manifest, routing, keys)
            except ValueError as exc:
                for name in (*manifest.routing_shards, *manifest.keys_shards):
                    self._chunks.pop(name, None)
                raise ConfigUnavailable(f"the published config is malformed: {exc}") from None
            wanted = {*manifest.routing_shards, *manifest.keys_shards}
            self._chunks = {k: v for k, v in self._chunks.items() if k in wanted}
            return manifest, config
        raise ConfigUnavailable(
            f"the config of gateway {self.namespace}/{self.name} changed {TORN_READS} times "
            "while it was being read; retrying")

    async def load(self) -> GatewayConfig:
        found = await self._read("")
        assert found is not None
        manifest, config = found
        self.version = manifest.version
        return config

    async def watch(self, apply: Callable[[GatewayConfig], None],
                    reject: Callable[[Exception], None] | None = None) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                found = await self._read(self.version)
            except ConfigUnavailable as exc:
                log.error("config not refreshed: %s; the running config stays", exc)
                if reject:
                    reject(exc)
                continue
            if found is not None:
                manifest, config = found
                self.version = manifest.version
                apply(config)
                log.info("config version %s applied", manifest.version)

    async def close(self) -> None:
        await self.api.close()
