"""A gateway's whole configuration as it travels from the operator to deliverer pods.

It is three documents: the routing config (no secrets, readable by anyone debugging), the keys
(signing keys, endpoint credentials, inbound secrets, ingest API keys) and a few settings.
:mod:`hookgate.model.publication` says how they are stored in the API. The deliverer rebuilds
the same :class:`GatewayConfig` that ``hookgate run`` builds from files, so both modes run one
code path.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from hookgate.model.compiler import Compiled, EndpointAuth
from hookgate.model.routing import RoutingConfig

__all__ = ["GatewayConfig", "min_replica_acks", "queue_partitions"]


def min_replica_acks(gateway_spec: Mapping[str, Any]) -> int:
    """``spec.queue.redis.minReplicaAcks`` of a WebhookGateway (0 when not set)."""
    redis = ((gateway_spec.get("queue") or {}).get("redis")) or {}
    return int(redis.get("minReplicaAcks") or 0)


def queue_partitions(gateway_spec: Mapping[str, Any]) -> int:
    """``spec.queue.partitions`` of a WebhookGateway (1 when not set)."""
    return int((gateway_spec.get("queue") or {}).get("partitions") or 1)


@dataclass(frozen=True)
class GatewayConfig:
    """Everything a config source (files, or the cluster) hands a running gateway."""

    compiled: Compiled
    api_keys: tuple[str, ...] = ()
    max_body_bytes: int | None = None
    # spec.queue.redis.minReplicaAcks: replicas that must confirm an event before its 202
    min_replica_acks: int = 0
    # spec.queue.partitions: the Redis queue is spread over this many hash tags
    partitions: int = 1

    def settings(self) -> dict[str, Any]:
        """The non-secret settings, published in the manifest beside the routing."""
        return {"maxBodyBytes": self.max_body_bytes, "minReplicaAcks": self.min_replica_acks,
                "partitions": self.partitions}

    def routing_document(self) -> bytes:
        """The routing config (no secrets), as JSON."""
        return self.compiled.config.to_json().encode()

    def keys_document(self) -> bytes:
        """Signing keys, endpoint credentials, inbound secrets and API keys, as JSON."""
        compiled = self.compiled
        doc = {"signingKeys": {k: list(v) for k, v in sorted(compiled.signing_keys.items())},
               "endpointAuth": {k: {f: v for f, v in asdict(a).items() if v is not None}
                                for k, a in sorted(compiled.endpoint_auth.items())},
               "sourceSecrets": {k: dict(v) for k, v in sorted(compiled.source_secrets.items())},
               "apiKeys": list(self.api_keys)}
        return json.dumps(doc, sort_keys=True).encode()

    @classmethod
    def from_documents(cls, routing: bytes, settings: Mapping[str, Any], keys: bytes
                       ) -> GatewayConfig:
        """Rebuild from the documents above; ValueError if one is malformed."""
        try:
            config = RoutingConfig.from_json(routing)
            secrets = json.loads(keys)
            compiled = Compiled(
                config=config,
                signing_keys={k: tuple(v) for k, v in secrets.get("signingKeys", {}).items()},
                endpoint_auth={k: EndpointAuth(**v)
                               for k, v in secrets.get("endpointAuth", {}).items()},
                source_secrets={k: dict(v)
                                for k, v in secrets.get("sourceSecrets", {}).items()})
            return cls(compiled, tuple(secrets.get("apiKeys", ())),
                       settings.get("maxBodyBytes"), int(settings.get("minReplicaAcks") or 0),
                       int(settings.get("partitions") or 1))
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"the published gateway config is malformed ({exc!r})") from None
