"""The routing config a running deliverer uses now, swapped whole when a new one arrives.

Readers take ``live.current`` once per delivery and use that snapshot throughout, so a
config change never tears a delivery in half and never needs a lock.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from hookgate.deliverer.signing import SigningKey, signing_key
from hookgate.model.compiler import EndpointAuth
from hookgate.model.routing import Router, RoutingConfig

__all__ = ["LiveConfig", "Snapshot"]


@dataclass(frozen=True)
class Snapshot:
    config: RoutingConfig
    router: Router
    keys: Mapping[str, tuple[SigningKey, ...]]  # endpoint key -> keys of active secrets
    version: int
    # source key -> what its inbound requests are verified with (Compiled.source_secrets)
    source_secrets: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # endpoint key -> credentials presented to it (Compiled.endpoint_auth)
    auth: Mapping[str, EndpointAuth] = field(default_factory=dict)


class LiveConfig:
    def __init__(self, config: RoutingConfig, signing_keys: Mapping[str, tuple[str, ...]],
                 source_secrets: Mapping[str, Mapping[str, str]] | None = None, *,
                 endpoint_auth: Mapping[str, EndpointAuth] | None = None) -> None:
        self._listeners: list[Callable[[Snapshot], None]] = []
        self.current = self._snapshot(config, signing_keys, 1, source_secrets, endpoint_auth)

    @staticmethod
    def _snapshot(config: RoutingConfig, signing_keys: Mapping[str, tuple[str, ...]],
                  version: int, source_secrets: Mapping[str, Mapping[str, str]] | None = None,
                  endpoint_auth: Mapping[str, EndpointAuth] | None = None) -> Snapshot:
        keys = {ep: tuple(signing_key(s) for s in secrets)
                for ep, secrets in signing_keys.items()}
        return Snapshot(config, Router(config), keys, version, dict(source_secrets or {}),
                        dict(endpoint_auth or {}))

    def update(self, config: RoutingConfig, signing_keys: Mapping[str, tuple[str, ...]],
               source_secrets: Mapping[str, Mapping[str, str]] | None = None, *,
               endpoint_auth: Mapping[str, EndpointAuth] | None = None) -> None:
        self.current = self._snapshot(config, signing_keys, self.current.version + 1,
                                      source_secrets, endpoint_auth)
        for listener in self._listeners:
            listener(self.current)

    def set_endpoint_auth(self, endpoint_auth: Mapping[str, EndpointAuth]) -> None:
        """Give the current snapshot these endpoint credentials (right after an update, in
        the same step of the event loop, so no delivery sees the config without them)."""
        if dict(endpoint_auth) != dict(self.current.auth):
            self.current = dataclasses.replace(self.current, auth=dict(endpoint_auth))

    def subscribe(self, listener: Callable[[Snapshot], None]) -> None:
        self._listeners.append(listener)
