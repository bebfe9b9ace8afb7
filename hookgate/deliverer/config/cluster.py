"""Routing config from the cluster: the ConfigMap and Secret the operator publishes.

``hookgate deliverer`` reads them with its own service account, which may read exactly
these two objects. It polls both every second, which is cheap for two small objects and
keeps the deliverer free of watch-reconnection logic; a change is applied within about a
second, live, like a file change to ``hookgate run``.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable
from typing import Any

import kubernetes
from kubernetes.client import ApiClient, CoreV1Api

from hookgate.model.bundle import GatewayConfig, config_map_name, secret_name

__all__ = ["ClusterConfig", "ConfigUnavailable"]

log = logging.getLogger("hookgate.config")


class ConfigUnavailable(Exception):
    """The published config cannot be read; the message says what to check."""



class ClusterConfig:
    def __init__(self, gateway: str, client: ApiClient, interval: float = 1.0) -> None:
        self.namespace, self.name = gateway.split("/", 1)
        self.api = CoreV1Api(client)
        self.interval = interval
        self._versions: tuple[str, str] = ("", "")

    def _read(self) -> tuple[tuple[str, str], dict[str, str], dict[str, str]]:
        try:
            cm: Any = self.api.read_namespaced_config_map(config_map_name(self.name),
                                                          self.namespace)
            secret: Any = self.api.read_namespaced_secret(secret_name(self.name),
                                                          self.namespace)
        except kubernetes.client.exceptions.ApiException as exc:
            raise ConfigUnavailable(
                f"cannot read the config of gateway {self.namespace}/{self.name} "
                f"({exc.status} {exc.reason}); check that the WebhookGateway exists and the "
                "operator runs, and that this pod uses the gateway's service account") from None
        except OSError as exc:
            raise ConfigUnavailable(f"cannot reach the Kubernetes API: {exc}") from None
        secret_data = {k: base64.b64decode(v).decode()
                       for k, v in (secret.data or {}).items()}
        versions = (cm.metadata.resource_version, secret.metadata.resource_version)
        return versions, dict(cm.data or {}), secret_data

    async def load(self) -> GatewayConfig:
        versions, cm, secret = await asyncio.to_thread(self._read)
        try:
            config = GatewayConfig.from_data(cm, secret)
        except ValueError as exc:
            raise ConfigUnavailable(f"the published config is malformed: {exc}") from None
        self._versions = versions
        return config

    async def watch(self, apply: Callable[[GatewayConfig], None],
                    reject: Callable[[Exception], None] | None = None) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                versions, cm, secret = await asyncio.to_thread(self._read)
                if versions == self._versions:
                    continue
                config = GatewayConfig.from_data(cm, secret)
            except (ConfigUnavailable, ValueError) as exc:
                log.error("config not refreshed: %s; the running config stays", exc)
                if reject:
                    reject(exc)
                continue
            self._versions = versions
            apply(config)
