"""A gateway's whole configuration as it travels from the operator to deliverer pods.

The routing config goes into a ConfigMap (no secrets, readable by anyone debugging); the
signing keys and ingest API keys into a Secret. The deliverer rebuilds the same
:class:`GatewayConfig` that ``hookgate run`` builds from files, so both modes run one code path.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from hookgate.model.compiler import Compiled, EndpointAuth
from hookgate.model.routing import RoutingConfig

__all__ = ["CONFIG_KEY", "SECRETS_KEY", "GatewayConfig", "config_map_name", "min_replica_acks",
           "queue_partitions", "secret_name"]

CONFIG_KEY = "routing.json"  # ConfigMap data key
SECRETS_KEY = "secrets.json"  # Secret data key (stringData; the API stores it base64)


def config_map_name(gateway: str) -> str:
    """The ConfigMap the operator publishes a gateway's routing config in."""
    return f"hookgate-{gateway}-config"


def secret_name(gateway: str) -> str:
    """The Secret the operator publishes a gateway's signing and API keys in."""
    return f"hookgate-{gateway}-keys"


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

    def config_data(self) -> dict[str, str]:
        """The ConfigMap's data: routing and non-secret settings."""
        settings = {"maxBodyBytes": self.max_body_bytes, "minReplicaAcks": self.min_replica_acks,
                    "partitions": self.partitions}
        return {CONFIG_KEY: self.compiled.config.to_json(),
                "settings.json": json.dumps(settings, sort_keys=True)}

    def secret_data(self) -> dict[str, str]:
        """The Secret's data, in plain text (for ``stringData``)."""
        compiled = self.compiled
        doc = {"signingKeys": {k: list(v) for k, v in sorted(compiled.signing_keys.items())},
               "endpointAuth": {k: {f: v for f, v in asdict(a).items() if v is not None}
                                for k, a in sorted(compiled.endpoint_auth.items())},
               "sourceSecrets": {k: dict(v) for k, v in sorted(compiled.source_secrets.items())},
               "apiKeys": list(self.api_keys)}
        return {SECRETS_KEY: json.dumps(doc, sort_keys=True)}

    @classmethod
    def from_data(cls, config_data: Mapping[str, str], secret_data: Mapping[str, str]
                  ) -> GatewayConfig:
        """Rebuild from a ConfigMap's and a Secret's (decoded) data; ValueError if malformed."""
        try:
            config = RoutingConfig.from_json(config_data[CONFIG_KEY])
            settings = json.loads(config_data.get("settings.json", "{}"))
            secrets = json.loads(secret_data[SECRETS_KEY])
        except KeyError as exc:
            raise ValueError(f"published gateway config lacks {exc.args[0]!r}") from None
        compiled = Compiled(
            config=config,
            signing_keys={k: tuple(v) for k, v in secrets.get("signingKeys", {}).items()},
            endpoint_auth={k: EndpointAuth(**v)
                           for k, v in secrets.get("endpointAuth", {}).items()},
            source_secrets={k: dict(v) for k, v in secrets.get("sourceSecrets", {}).items()})
        return cls(compiled, tuple(secrets.get("apiKeys", ())), settings.get("maxBodyBytes"),
                   int(settings.get("minReplicaAcks") or 0), int(settings.get("partitions") or 1))
