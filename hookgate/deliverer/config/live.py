"""The configuration a running gateway uses now, swapped whole when a new one arrives.

A :class:`Snapshot` holds everything a request or a delivery reads from the config: routing,
signing keys, endpoint credentials, inbound secrets, ingest API keys, the body limit and the
SSRF guard's exceptions. :meth:`LiveConfig.apply` builds the next snapshot completely, then
replaces ``current`` and tells the listeners, in one synchronous step of the event loop:
no handler or delivery can run in between, so none ever sees half of one config and half of
the next. Readers take ``live.current`` once per request or delivery and use that snapshot
throughout, without a lock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from hookgate.model.bundle import GatewayConfig
from hookgate.model.compiler import EndpointAuth
from hookgate.model.routing import Router, RoutingConfig
from hookgate.signing import SigningKey, signing_key

__all__ = ["DEFAULT_MAX_BODY_BYTES", "LiveConfig", "Snapshot"]

#: The ingest body limit when the gateway's ``ingest.maxBodyBytes`` is not set.
DEFAULT_MAX_BODY_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One version of the whole config, never changed after it is built."""

    version: int
    config: RoutingConfig
    router: Router
    keys: Mapping[str, tuple[SigningKey, ...]]  # endpoint key -> keys of active secrets
    # source key -> what its inbound requests are verified with (Compiled.source_secrets)
    source_secrets: Mapping[str, Mapping[str, str]]
    # endpoint key -> credentials presented to it (Compiled.endpoint_auth)
    auth: Mapping[str, EndpointAuth]
    api_keys: tuple[str, ...]  # ingest and admin API keys; empty: no key required
    max_body_bytes: int  # largest ingest, inbound or broker message body accepted
    allow_cidrs: tuple[str, ...]  # SSRF guard exceptions (the gateway's and the process's)


def build_snapshot(config: GatewayConfig, version: int,
                   extra_allow_cidrs: tuple[str, ...] = ()) -> Snapshot:
    """The snapshot of ``config`` (pure, apart from keying the HMACs)."""
    compiled = config.compiled
    keys = {ep: tuple(signing_key(s) for s in secrets)
            for ep, secrets in compiled.signing_keys.items()}
    return Snapshot(
        version=version, config=compiled.config, router=Router(compiled.config), keys=keys,
        source_secrets=dict(compiled.source_secrets), auth=dict(compiled.endpoint_auth),
        api_keys=tuple(config.api_keys),
        max_body_bytes=config.max_body_bytes or DEFAULT_MAX_BODY_BYTES,
        allow_cidrs=(*compiled.config.allow_cidrs, *extra_allow_cidrs))


class LiveConfig:
    """The current :class:`Snapshot`, and who to tell when it changes.

    ``extra_allow_cidrs`` are SSRF guard exceptions of this process on top of the gateway's
    ``network.allowCIDRs`` (``hookgate run`` allows loopback, so a local receiver works).
    """

    def __init__(self, config: GatewayConfig, *, extra_allow_cidrs: tuple[str, ...] = ()
                 ) -> None:
        self._extra = tuple(extra_allow_cidrs)
        self._listeners: list[Callable[[Snapshot], None]] = []
        self.current = build_snapshot(config, 1, self._extra)

    def apply(self, config: GatewayConfig) -> Snapshot:
        """Switch to ``config`` in one step; returns the new snapshot. Listeners run in the
        same step, so what they derive from it (DNS policy, consumers) switches with it."""
        snapshot = build_snapshot(config, self.current.version + 1, self._extra)
        self.current = snapshot
        for listener in self._listeners:
            listener(snapshot)
        return snapshot

    def subscribe(self, listener: Callable[[Snapshot], None]) -> None:
        """Call ``listener(snapshot)`` on every change (not for the first snapshot)."""
        self._listeners.append(listener)
