"""Pure ``build_*`` functions: a WebhookGateway (and its compiled config) in, the desired
child objects out. No I/O here; the reconcile loop (:mod:`hookgate.operator.reconcile`)
applies what these return with server-side apply.

Every child carries an owner reference to its gateway, so deleting the gateway deletes them
(Kubernetes garbage collection), and the labels of :func:`labels`, so they can be found.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hookgate import __version__
from hookgate.deliverer.queues.redis.address import Kind, RedisAddress
from hookgate.deliverer.queues.redis.address import parse as parse_address
from hookgate.deliverer.queues.redis.keys import CONSUMER_GROUP, Keys
from hookgate.model.publication import (
    KEYS_FILE,
    MANIFEST_KEY,
    ROUTING_FILE,
    Manifest,
    Publication,
    manifest_name,
)
from hookgate.model.resources import API_VERSION

__all__ = [
    "DEFAULT_IMAGE",
    "SHARD_LABEL",
    "Names",
    "build_children",
    "build_config_objects",
    "build_deployment",
    "build_endpoint_secret",
    "build_keda_objects",
    "build_pdb",
    "build_redis_auth_secret",
    "build_role",
    "build_role_binding",
    "build_scaled_object",
    "build_service",
    "build_service_account",
    "build_trigger_authentication",
    "labels",
    "owner_reference",
]

DEFAULT_IMAGE = f"ghcr.io/hookgate/hookgate:{__version__}"
HTTP_PORT = 8080
#: The label on every config shard (value: ``routing`` or ``keys``); the reconcile finds
#: stale shards by it.
SHARD_LABEL = "hookgate.io/config-shard"
Obj = dict[str, Any]


@dataclass(frozen=True)
class Names:
    """Names of a gateway's children, derived in one place."""

    gateway: str

    @property
    def config(self) -> str:
        """The manifest ConfigMap (shards: :func:`hookgate.model.publication.shard_name`)."""
        return manifest_name(self.gateway)

    @property
    def deployment(self) -> str:
        return f"hookgate-{self.gateway}"

    @property
    def service(self) -> str:
        return f"hookgate-{self.gateway}"

    @property
    def account(self) -> str:
        return f"hookgate-{self.gateway}-deliverer"

    @property
    def pdb(self) -> str:
        return f"hookgate-{self.gateway}"

    @property
    def scaled_object(self) -> str:
        return f"hookgate-{self.gateway}"

    @property
    def redis_auth(self) -> str:
        """The Secret and the KEDA TriggerAuthentication with the queue's credentials."""
        return f"hookgate-{self.gateway}-redis-auth"

    @property
    def optional(self) -> tuple[tuple[str, str], ...]:
        """(kind, name) of the children a gateway has only with some settings (KEDA mode, a
        queue URL with credentials): what the reconcile deletes when it no longer builds them."""
        return (("ScaledObject", self.scaled_object),
                ("TriggerAuthentication", self.redis_auth), ("Secret", self.redis_auth))


def labels(gateway: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "hookgate", "app.kubernetes.io/component": "deliverer",
            "app.kubernetes.io/instance": gateway, "app.kubernetes.io/managed-by": "hookgate",
            "hookgate.io/gateway": gateway}


def selector(gateway: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "hookgate", "hookgate.io/gateway": gateway}


def owner_reference(owner: Mapping[str, Any]) -> Obj:
    return {"apiVersion": owner.get("apiVersion", API_VERSION), "kind": owner["kind"],
            "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
            "controller": True, "blockOwnerDeletion": True}


def _meta(gateway: Mapping[str, Any], name: str) -> Obj:
    gw = gateway["metadata"]["name"]
    return {"name": name, "namespace": gateway["metadata"]["namespace"], "labels": labels(gw),
            "ownerReferences": [owner_reference(gateway)]}


def _shard_meta(gateway: Mapping[str, Any], name: str, part: str) -> Obj:
    meta = _meta(gateway, name)
    meta["labels"] = {**meta["labels"], SHARD_LABEL: part}
    return meta


def build_config_objects(gateway: Mapping[str, Any], publication: Publication) -> list[Obj]:
    """The objects of one config version: its shards (immutable, keys in Secrets), then the
    manifest that names them. Applied in this order, a deliverer that reads the new manifest
    finds every shard it names."""
    gw = gateway["metadata"]["name"]
    manifest = publication.manifest
    keys = [{"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "immutable": True,
             "metadata": _shard_meta(gateway, name, "keys"),
             "data": {KEYS_FILE: base64.b64encode(chunk).decode()}}
            for name, chunk in zip(manifest.keys_shards, publication.keys.chunks, strict=True)]
    routing = [{"apiVersion": "v1", "kind": "ConfigMap", "immutable": True,
                "metadata": _shard_meta(gateway, name, "routing"),
                "binaryData": {ROUTING_FILE: base64.b64encode(chunk).decode()}}
               for name, chunk in zip(manifest.routing_shards, publication.routing.chunks,
                                      strict=True)]
    return [*keys, *routing,
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(gateway, Names(gw).config),
             "data": {MANIFEST_KEY: manifest.to_json()}}]


def build_endpoint_secret(endpoint: Mapping[str, Any], secret: str) -> Obj:
    """The generated signing Secret of an endpoint that names none; owned by the endpoint."""
    name = generated_secret_name(endpoint["metadata"]["name"])
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": endpoint["metadata"]["namespace"],
                         "labels": {"app.kubernetes.io/managed-by": "hookgate",
                                    "hookgate.io/endpoint": endpoint["metadata"]["name"]},
                         "ownerReferences": [owner_reference(endpoint)]},
            "stringData": {"secret": secret}}


def generated_secret_name(endpoint: str) -> str:
    return f"{endpoint}-hookgate-signing"


def _queue_env(spec: Mapping[str, Any]) -> list[Obj]:
    """HOOKGATE_QUEUE for the deliverer: the URL, or a reference to its Secret."""
    redis = (spec.get("queue") or {}).get("redis") or {}
    if "url" in redis:
        return [{"name": "HOOKGATE_QUEUE", "value": redis["url"]}]
    ref = (redis.get("urlFrom") or {}).get("secretKeyRef") or {}
    if not ref:
        return []
    return [{"name": "HOOKGATE_QUEUE", "valueFrom": {"secretKeyRef": {
        "name": ref["name"], "key": ref.get("key", "url")}}}]


#: Where a deliverer finds the CA of a TLS Redis given by ``spec.queue.redis.caFrom``.
REDIS_CA_DIR = "/etc/hookgate/redis-ca"


def _redis_ca(spec: Mapping[str, Any]) -> Mapping[str, Any]:
    redis = (spec.get("queue") or {}).get("redis") or {}
    return ((redis.get("caFrom") or {}).get("secretKeyRef")) or {}


def _redis_ca_env(spec: Mapping[str, Any]) -> list[Obj]:
    if not _redis_ca(spec):
        return []
    return [{"name": "HOOKGATE_REDIS_CA", "value": f"{REDIS_CA_DIR}/ca.crt"}]


def _redis_ca_volumes(spec: Mapping[str, Any]) -> list[Obj]:
    """The CA Secret's key as ca.crt, read-only; nothing else of that Secret."""
    ref = _redis_ca(spec)
    if not ref:
        return []
    return [{"name": "redis-ca", "secret": {
        "secretName": ref["name"], "items": [{"key": ref.get("key", "ca.crt"),
                                              "path": "ca.crt"}]}}]


def _address(url: str) -> RedisAddress | None:
    """The parsed queue URL; None when it does not parse (the deliverer then says why)."""
    try:
        return parse_address(url)
    except ValueError:
        return None


def build_deployment(gateway: Mapping[str, Any], replicas: int,
                     default_image: str = DEFAULT_IMAGE) -> Obj:
    """The deliverer pool. ``replicas`` is what the autoscaler (or spec.replicas) decided;
    ``default_image`` is used when the gateway names no ``spec.deliverer.image``."""
    gw = gateway["metadata"]["name"]
    namespace = gateway["metadata"]["namespace"]
    spec = gateway.get("spec") or {}
    deliverer = spec.get("deliverer") or {}
    names = Names(gw)
    container: Obj = {
        "name": "deliverer",
        "image": deliverer.get("image") or default_image,
        "args": ["deliverer", "--gateway", f"{namespace}/{gw}",
                 "--concurrency", str(deliverer.get("concurrency", 256)),
                 "--listen", f"0.0.0.0:{HTTP_PORT}"],
        "env": [*_queue_env(spec), *_redis_ca_env(spec),
                {"name": "HOOKGATE_LOG_FORMAT", "value": "json"}],
        "ports": [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"},
                           "periodSeconds": 5, "failureThreshold": 2},
        # Liveness starts once the deliverer first answers: a start slowed by a busy node
        # (Python imports, config and queue on 2 shared cores took over 30 s) is not killed
        # as a hung process and restarted into a loop.
        "startupProbe": {"httpGet": {"path": "/healthz", "port": "http"},
                         "periodSeconds": 2, "failureThreshold": 90},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"},
                          "periodSeconds": 10, "failureThreshold": 3},
        "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False,
                            "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
    }
    if deliverer.get("resources"):
        container["resources"] = deliverer["resources"]
    volumes = _redis_ca_volumes(spec)
    if volumes:
        container["volumeMounts"] = [{"name": "redis-ca", "mountPath": REDIS_CA_DIR,
                                      "readOnly": True}]
    pod: Obj = {
        "serviceAccountName": names.account,
        # Longer than the deliverer's own grace, so in-flight work is finished or
        # handed back before the kubelet kills the pod.
        "terminationGracePeriodSeconds": 45,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
    }
    if volumes:
        pod["volumes"] = volumes
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": _meta(gateway, names.deployment),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector(gw)},
            # Surge first: a rollout never lowers delivery capacity.
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {"metadata": {"labels": labels(gw)}, "spec": pod},
        },
    }


def build_service(gateway: Mapping[str, Any]) -> Obj:
    gw = gateway["metadata"]["name"]
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(gateway, Names(gw).service),
            "spec": {"selector": selector(gw),
                     "ports": [{"name": "http", "port": 80, "targetPort": "http",
                                "protocol": "TCP"}]}}


def build_pdb(gateway: Mapping[str, Any]) -> Obj:
    gw = gateway["metadata"]["name"]
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": _meta(gateway, Names(gw).pdb),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(gw)}}}


def build_service_account(gateway: Mapping[str, Any]) -> Obj:
    gw = gateway["metadata"]["name"]
    return {"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": _meta(gateway, Names(gw).account)}


def build_role(gateway: Mapping[str, Any], manifest: Manifest,
               previous: Manifest | None = None) -> Obj:
    """Deliverers may read exactly their gateway's manifest and the shards of its current and
    previous config version (one that read the previous manifest a moment ago still finishes
    its read), nothing else."""
    names = Names(gateway["metadata"]["name"])
    versions = [manifest] if previous is None else [manifest, previous]
    config_maps = [names.config, *dict.fromkeys(s for m in versions for s in m.routing_shards)]
    secrets = list(dict.fromkeys(s for m in versions for s in m.keys_shards))
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": _meta(gateway, names.account),
            "rules": [
                {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": config_maps,
                 "verbs": ["get"]},
                {"apiGroups": [""], "resources": ["secrets"], "resourceNames": secrets,
                 "verbs": ["get"]},
            ]}


def build_role_binding(gateway: Mapping[str, Any]) -> Obj:
    names = Names(gateway["metadata"]["name"])
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": _meta(gateway, names.account),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                        "name": names.account},
            "subjects": [{"kind": "ServiceAccount", "name": names.account,
                          "namespace": gateway["metadata"]["namespace"]}]}


def _keda_credentials(address: RedisAddress) -> dict[str, str]:
    """The URL's credentials by KEDA's parameter names (those it has)."""
    found = {"username": address.username, "password": address.password,
             "sentinelUsername": address.options.get("sentinel_username"),
             "sentinelPassword": address.options.get("sentinel_password")}
    return {k: v for k, v in found.items() if v}


def _keda_address(gateway: Mapping[str, Any], queue_url: str | None) -> RedisAddress | None:
    """The queue's address as KEDA must reach it; None when KEDA cannot be given one (no
    URL yet, a URL that does not parse, a Unix socket)."""
    redis = ((gateway.get("spec") or {}).get("queue") or {}).get("redis") or {}
    url = queue_url if queue_url is not None else redis.get("url")
    address = _address(url) if url else None
    return address if address is not None and address.hosts else None


def build_redis_auth_secret(gateway: Mapping[str, Any], queue_url: str | None = None
                            ) -> Obj | None:
    """KEDA mode: the queue URL's user and passwords as keys of their own, for KEDA's
    TriggerAuthentication (KEDA takes them one by one, not inside a URL); None without any."""
    address = _keda_address(gateway, queue_url)
    credentials = _keda_credentials(address) if address else {}
    if not credentials:
        return None
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": _meta(gateway, Names(gateway["metadata"]["name"]).redis_auth),
            "stringData": credentials}


def build_trigger_authentication(gateway: Mapping[str, Any], queue_url: str | None = None
                                 ) -> Obj | None:
    """KEDA mode: where KEDA finds the queue's credentials and CA: Secret references only
    (:func:`build_redis_auth_secret`, ``spec.queue.redis.caFrom``), so no password is ever in
    the ScaledObject; None when there is nothing to give."""
    address = _keda_address(gateway, queue_url)
    if address is None:
        return None
    gw = gateway["metadata"]["name"]
    refs = [{"parameter": key, "name": Names(gw).redis_auth, "key": key}
            for key in _keda_credentials(address)]
    ca = _redis_ca(gateway.get("spec") or {})
    if address.tls and ca:
        refs.append({"parameter": "ca", "name": ca["name"], "key": ca.get("key", "ca.crt")})
    if not refs:
        return None
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "TriggerAuthentication",
            "metadata": _meta(gateway, Names(gw).redis_auth),
            "spec": {"secretTargetRef": refs}}


def build_scaled_object(gateway: Mapping[str, Any], queue_url: str | None = None
                        ) -> Obj | None:
    """KEDA mode: the Builtin policy as a ScaledObject, with KEDA's scaler for the form of
    the queue URL (redis-streams, redis-sentinel-streams, redis-cluster-streams).

    ``queue_url`` is the URL as the operator read it (from ``spec.queue.redis.urlFrom``'s
    Secret); without it, ``spec.queue.redis.url``. Hosts, the master's name, the database and
    TLS go in the trigger; credentials and the CA through the TriggerAuthentication. None
    when there is no URL KEDA could use."""
    address = _keda_address(gateway, queue_url)
    if address is None:
        return None
    gw = gateway["metadata"]["name"]
    namespace = gateway["metadata"]["namespace"]
    spec = gateway.get("spec") or {}
    scaling = spec.get("autoscaling") or {}
    partitions = int((spec.get("queue") or {}).get("partitions") or 1)
    lag = int(scaling.get("targetBacklogPerReplica", 500))
    hosts = ",".join(f"{h}:{p}" for h, p in address.hosts)
    metadata: Obj = {"consumerGroup": CONSUMER_GROUP, "activationLagCount": "0"}
    if address.kind is Kind.SINGLE:
        trigger, metadata["address"] = "redis-streams", hosts
    else:
        trigger, metadata["addresses"] = f"redis-{address.kind.value}-streams", hosts
    if address.master is not None:
        metadata["sentinelMaster"] = address.master
    if address.db:
        metadata["databaseIndex"] = str(address.db)
    if address.tls:
        metadata["enableTLS"] = "true"
        if address.options.get("ssl_cert_reqs", "").lower() == "none":
            metadata["unsafeSsl"] = "true"
    auth = ({"authenticationRef": {"name": Names(gw).redis_auth}}
            if build_trigger_authentication(gateway, queue_url) else {})
    return {
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": _meta(gateway, Names(gw).scaled_object),
        "spec": {
            "scaleTargetRef": {"name": Names(gw).deployment},
            "minReplicaCount": scaling.get("minReplicas", 1),
            "maxReplicaCount": scaling.get("maxReplicas", 10),
            "pollingInterval": scaling.get("pollingIntervalSeconds", 5),
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": {
                "scaleDown": {"stabilizationWindowSeconds":
                              scaling.get("scaleDownStabilizationSeconds", 300)},
                "scaleUp": {"stabilizationWindowSeconds": 0}}}},
            # One trigger per partition (every deliverer consumes every partition). KEDA
            # scales on the largest of them, so each targets 1/P of the backlog per replica:
            # with deliveries spread evenly, as on the whole backlog.
            "triggers": [{"type": trigger, **auth, "metadata": {
                **metadata, "stream": Keys(f"{namespace}/{gw}", p, partitions).stream,
                "lagCount": str(max(1, lag // partitions))}}
                for p in range(partitions)],
        },
    }


def build_keda_objects(gateway: Mapping[str, Any], queue_url: str | None = None) -> list[Obj]:
    """KEDA mode's children, in the order they should be applied: the credentials' Secret
    and the TriggerAuthentication before the ScaledObject that names them."""
    built = [build_redis_auth_secret(gateway, queue_url),
             build_trigger_authentication(gateway, queue_url),
             build_scaled_object(gateway, queue_url)]
    return [obj for obj in built if obj is not None]


def build_children(gateway: Mapping[str, Any], publication: Publication, replicas: int,
                   default_image: str = DEFAULT_IMAGE, previous: Manifest | None = None,
                   queue_url: str | None = None) -> list[Obj]:
    """Every child of a gateway, in the order they must be applied: the deliverers' access
    to the new shards before the manifest that names them. ``previous`` is the manifest
    published before this one, whose shards stay readable. ``queue_url``: the queue URL read
    from ``spec.queue.redis.urlFrom``'s Secret (KEDA mode needs its form)."""
    mode = ((gateway.get("spec") or {}).get("autoscaling") or {}).get("mode", "Builtin")
    *shards, manifest = build_config_objects(gateway, publication)
    children = [build_service_account(gateway), *shards,
                build_role(gateway, publication.manifest, previous),
                build_role_binding(gateway), manifest,
                build_deployment(gateway, replicas, default_image), build_service(gateway),
                build_pdb(gateway)]
    if mode == "KEDA":
        children += build_keda_objects(gateway, queue_url)
    return children
