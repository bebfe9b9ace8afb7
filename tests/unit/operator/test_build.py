"""The operator's pure builders: what a WebhookGateway turns into."""

from __future__ import annotations

import base64
import gzip
from typing import Any

import pytest

from hookgate.model.bundle import GatewayConfig, min_replica_acks
from hookgate.model.compiler import Compiled
from hookgate.model.publication import Manifest, publish, read
from hookgate.model.routing import EndpointConfig, RoutingConfig
from hookgate.operator.build import build_children, build_endpoint_secret

GATEWAY: dict[str, Any] = {
    "apiVersion": "hookgate.io/v1alpha1", "kind": "WebhookGateway",
    "metadata": {"name": "default", "namespace": "shop", "uid": "u-1", "generation": 3},
    "spec": {"queue": {"redis": {"urlFrom": {"secretKeyRef": {"name": "redis", "key": "url"}}}},
             "deliverer": {"image": "example/hookgate:test", "concurrency": 64},
             "autoscaling": {"mode": "Builtin"}},
}
CONFIG = GatewayConfig(Compiled(
    RoutingConfig("shop/default", {"shop/a": EndpointConfig("shop/a", "https://a.example/", 5,
                                                            (0, 5))}),
    {"shop/a": ("whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0",)}), ("api-key",))
PUBLICATION = publish("default", CONFIG)


def by_kind(children: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["kind"]: c for c in children}


def test_every_child_is_owned_by_the_gateway_and_labelled() -> None:
    children = build_children(GATEWAY, PUBLICATION, replicas=3)
    assert sorted(c["kind"] for c in children) == [
        "ConfigMap", "ConfigMap", "Deployment", "PodDisruptionBudget", "Role", "RoleBinding",
        "Secret", "Service", "ServiceAccount"]
    for child in children:
        (owner,) = child["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["uid"], owner["controller"]) == ("WebhookGateway", "u-1",
                                                                       True)
        assert child["metadata"]["namespace"] == "shop"
        assert child["metadata"]["labels"]["hookgate.io/gateway"] == "default"


def published(children: list[dict[str, Any]]) -> tuple[dict[str, Any], list[bytes],
                                                       list[bytes]]:
    """The manifest ConfigMap and the chunks of the routing and keys shards, in order."""
    by_name = {c["metadata"]["name"]: c for c in children}
    manifest_cm = by_name["hookgate-default-config"]
    manifest = Manifest.from_json(manifest_cm["data"]["manifest.json"])
    routing = [base64.b64decode(by_name[n]["binaryData"]["routing.json.gz"])
               for n in manifest.routing_shards]
    keys = [base64.b64decode(by_name[n]["data"]["keys.json.gz"]) for n in manifest.keys_shards]
    return manifest_cm, routing, keys


def test_routing_shards_hold_no_secrets_and_keys_shards_are_secrets() -> None:
    children = build_children(GATEWAY, PUBLICATION, replicas=1)
    manifest_cm, routing, keys = published(children)
    shards = [c for c in children if "hookgate.io/config-shard" in c["metadata"]["labels"]]
    assert {(c["kind"], c["metadata"]["labels"]["hookgate.io/config-shard"]) for c in shards} \
        == {("ConfigMap", "routing"), ("Secret", "keys")}
    assert all(c["immutable"] is True for c in shards)
    manifest = Manifest.from_json(manifest_cm["data"]["manifest.json"])
    document = gzip.decompress(b"".join(routing))
    assert b"whsec_" not in document and b"api-key" not in document
    assert b"https://a.example/" in document
    assert b"whsec_" in gzip.decompress(b"".join(keys))
    assert read(manifest, routing, keys) == CONFIG


def test_shards_come_before_the_manifest_and_access_to_them_before_both() -> None:
    order = [(c["kind"], c["metadata"]["name"])
             for c in build_children(GATEWAY, PUBLICATION, replicas=1)]
    position = {name: i for i, (_, name) in enumerate(order)}
    manifest = PUBLICATION.manifest
    for shard in (*manifest.routing_shards, *manifest.keys_shards):
        assert position[shard] < position["hookgate-default-config"]
        assert position["hookgate-default-deliverer"] < position["hookgate-default-config"]


def test_deliverer_deployment_runs_the_gateway_with_its_queue_and_account() -> None:
    deployment = by_kind(build_children(GATEWAY, PUBLICATION, replicas=3))["Deployment"]
    assert deployment["spec"]["replicas"] == 3
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "example/hookgate:test"
    assert container["args"][:3] == ["deliverer", "--gateway", "shop/default"]
    assert "64" in container["args"]
    queue = next(e for e in container["env"] if e["name"] == "HOOKGATE_QUEUE")
    assert queue["valueFrom"]["secretKeyRef"] == {"name": "redis", "key": "url"}
    assert pod["serviceAccountName"] == "hookgate-default-deliverer"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert deployment["spec"]["selector"]["matchLabels"].items() <= \
        deployment["spec"]["template"]["metadata"]["labels"].items()


def test_role_reads_only_the_manifest_and_the_shards_of_two_versions() -> None:
    role = by_kind(build_children(GATEWAY, PUBLICATION, replicas=1))["Role"]
    manifest = PUBLICATION.manifest
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["configmaps"],
         "resourceNames": ["hookgate-default-config", *manifest.routing_shards],
         "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["secrets"],
         "resourceNames": list(manifest.keys_shards), "verbs": ["get"]}]
    changed = GatewayConfig(CONFIG.compiled, ("another-key",))
    newer = publish("default", changed)
    assert newer.manifest.routing_shards == manifest.routing_shards  # routing unchanged
    assert newer.manifest.keys_shards != manifest.keys_shards
    role = by_kind(build_children(GATEWAY, newer, 1, previous=manifest))["Role"]
    assert role["rules"][1]["resourceNames"] == [*newer.manifest.keys_shards,
                                                 *manifest.keys_shards]


def test_keda_mode_adds_a_scaled_object_with_the_same_policy() -> None:
    gateway = {**GATEWAY, "spec": {**GATEWAY["spec"], "autoscaling": {
        "mode": "KEDA", "minReplicas": 2, "maxReplicas": 7, "targetBacklogPerReplica": 250,
        "scaleDownStabilizationSeconds": 120}}}
    so = by_kind(build_children(gateway, PUBLICATION, replicas=2,
                                queue_url="redis://r:6379/0"))["ScaledObject"]
    assert (so["spec"]["minReplicaCount"], so["spec"]["maxReplicaCount"]) == (2, 7)
    (trigger,) = so["spec"]["triggers"]
    assert trigger["type"] == "redis-streams"
    assert trigger["metadata"]["lagCount"] == "250"
    assert trigger["metadata"]["stream"] == "hookgate:{shop/default}:deliveries"
    behavior = so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 120


def keda(url: str, queue: dict[str, Any] | None = None, from_secret: bool = True
         ) -> dict[str, dict[str, Any]]:
    """KEDA mode's children for a queue URL, kept in a Secret (as the operator read it) or
    given in the spec."""
    redis: dict[str, Any] = ({"urlFrom": {"secretKeyRef": {"name": "redis", "key": "url"}}}
                             if from_secret else {"url": url})
    gateway = {**GATEWAY, "spec": {"queue": {"redis": {**redis, **(queue or {})}},
                                   "autoscaling": {"mode": "KEDA"}}}
    return by_kind(build_children(gateway, PUBLICATION, replicas=1,
                                  queue_url=url if from_secret else None))


@pytest.mark.parametrize("from_secret", [True, False])
def test_keda_mode_uses_the_scaler_of_each_url_form(from_secret: bool) -> None:
    def trigger(url: str) -> dict[str, Any]:
        (only,) = keda(url, from_secret=from_secret)["ScaledObject"]["spec"]["triggers"]
        return only

    single = trigger("redis://r.example:6380/2")
    assert single["type"] == "redis-streams"
    assert single["metadata"]["address"] == "r.example:6380"
    assert single["metadata"]["databaseIndex"] == "2"
    assert "enableTLS" not in single["metadata"] and "authenticationRef" not in single
    sentinel = trigger("rediss+sentinel://s1:26379,s2:26379/mymaster/0")
    assert sentinel["type"] == "redis-sentinel-streams"
    assert sentinel["metadata"]["addresses"] == "s1:26379,s2:26379"
    assert sentinel["metadata"]["sentinelMaster"] == "mymaster"
    assert sentinel["metadata"]["enableTLS"] == "true"
    assert "databaseIndex" not in sentinel["metadata"]
    cluster = trigger("redis+cluster://n1:7000,n2:7001")
    assert cluster["type"] == "redis-cluster-streams"
    assert cluster["metadata"]["addresses"] == "n1:7000,n2:7001"
    assert "sentinelMaster" not in cluster["metadata"]


def test_keda_credentials_go_through_a_trigger_authentication_never_the_scaled_object(
        ) -> None:
    url = ("rediss+sentinel://app:p%40ss@s1:26379,s2:26379/mymaster"
           "?sentinel_password=sentinel-pw")
    children = keda(url, {"caFrom": {"secretKeyRef": {"name": "redis-tls", "key": "ca.pem"}}})
    so, auth, secret = (children["ScaledObject"], children["TriggerAuthentication"],
                        children["Secret"])
    assert "p@ss" not in str(so) and "sentinel-pw" not in str(so)
    assert {t["authenticationRef"]["name"] for t in so["spec"]["triggers"]} == {
        "hookgate-default-redis-auth"}
    assert auth["metadata"]["name"] == "hookgate-default-redis-auth"
    assert {(r["parameter"], r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]} == {
        ("username", "hookgate-default-redis-auth", "username"),
        ("password", "hookgate-default-redis-auth", "password"),
        ("sentinelPassword", "hookgate-default-redis-auth", "sentinelPassword"),
        ("ca", "redis-tls", "ca.pem")}
    assert secret["metadata"]["name"] == "hookgate-default-redis-auth"
    assert secret["stringData"] == {"username": "app", "password": "p@ss",
                                    "sentinelPassword": "sentinel-pw"}
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    # applied after the gateway's other children, the ScaledObject last
    assert [c["kind"] for c in build_children(
        {**GATEWAY, "spec": {"queue": {"redis": {"url": url}},
                             "autoscaling": {"mode": "KEDA"}}}, PUBLICATION, 1)][-3:] == [
        "Secret", "TriggerAuthentication", "ScaledObject"]


def test_keda_mode_without_credentials_or_a_usable_url_adds_no_auth() -> None:
    plain = keda("rediss+cluster://n1:7000?ssl_ca_certs=/etc/ca.pem")
    assert "TriggerAuthentication" not in plain
    assert not plain["Secret"]["metadata"]["name"].endswith("-redis-auth")  # a config shard
    assert "authenticationRef" not in plain["ScaledObject"]["spec"]["triggers"][0]
    # a Secret not read yet, or a URL that does not parse: no ScaledObject to guess at
    assert "ScaledObject" not in by_kind(build_children(
        {**GATEWAY, "spec": {**GATEWAY["spec"], "autoscaling": {"mode": "KEDA"}}}, PUBLICATION, 1))
    assert "ScaledObject" not in keda("redis+sentinel://s1:26379")
    insecure = keda("rediss://r:6379?ssl_cert_reqs=none")["ScaledObject"]
    assert insecure["spec"]["triggers"][0]["metadata"]["unsafeSsl"] == "true"


def test_a_redis_ca_from_a_secret_is_mounted_read_only_with_its_path_in_env() -> None:
    gateway = {**GATEWAY, "spec": {"queue": {"redis": {
        "url": "rediss+sentinel://s1:26379/m", "caFrom": {"secretKeyRef": {
            "name": "redis-tls", "key": "ca.pem"}}}}}}
    deployment = by_kind(build_children(gateway, PUBLICATION, replicas=1))["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["volumes"] == [{"name": "redis-ca", "secret": {
        "secretName": "redis-tls", "items": [{"key": "ca.pem", "path": "ca.crt"}]}}]
    assert container["volumeMounts"] == [{"name": "redis-ca", "mountPath": "/etc/hookgate/redis-ca",
                                          "readOnly": True}]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["HOOKGATE_REDIS_CA"] == "/etc/hookgate/redis-ca/ca.crt"
    plain = by_kind(build_children(GATEWAY, PUBLICATION, replicas=1))["Deployment"]
    assert "volumes" not in plain["spec"]["template"]["spec"]


def test_min_replica_acks_is_published_with_the_config() -> None:
    config = GatewayConfig(CONFIG.compiled, (), None, min_replica_acks(
        {"queue": {"redis": {"url": "redis://r:6379/0", "minReplicaAcks": 2}}}))
    again = GatewayConfig.from_documents(config.routing_document(), config.settings(),
                                         config.keys_document())
    assert again.min_replica_acks == 2 and min_replica_acks({}) == 0


def test_generated_endpoint_secret_is_owned_by_the_endpoint() -> None:
    endpoint = {"apiVersion": "hookgate.io/v1alpha1", "kind": "WebhookEndpoint",
                "metadata": {"name": "acme", "namespace": "shop", "uid": "e-1"}}
    secret = build_endpoint_secret(endpoint, "whsec_x")
    assert secret["metadata"]["name"] == "acme-hookgate-signing"
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "e-1"
    assert secret["stringData"] == {"secret": "whsec_x"}


def test_published_secret_carries_endpoint_auth_and_source_secrets() -> None:
    from hookgate.model.compiler import EndpointAuth

    compiled = Compiled(CONFIG.compiled.config, CONFIG.compiled.signing_keys,
                        endpoint_auth={"shop/a": EndpointAuth(authorization="Bearer t",
                                                              ca_bundle="PEM")},
                        source_secrets={"shop/github": {"secret": "s3cret"}})
    config = GatewayConfig(compiled, ("k",), 1024)
    assert b"s3cret" not in config.routing_document()
    assert GatewayConfig.from_documents(config.routing_document(), config.settings(),
                                        config.keys_document()) == config


def test_default_deliverer_image_applies_only_when_the_gateway_names_none() -> None:
    mirror = "registry.internal/hookgate:0.1.0"
    named = by_kind(build_children(GATEWAY, PUBLICATION, 1, mirror))["Deployment"]
    assert named["spec"]["template"]["spec"]["containers"][0]["image"] == "example/hookgate:test"
    bare = {**GATEWAY, "spec": {**GATEWAY["spec"], "deliverer": {}}}
    deployment = by_kind(build_children(bare, PUBLICATION, 1, mirror))["Deployment"]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == mirror


def test_keda_mode_has_a_trigger_for_every_partition() -> None:
    gateway = {**GATEWAY, "spec": {"queue": {"redis": {"url": "redis://r:6379/0"},
                                             "partitions": 3},
                                   "autoscaling": {"mode": "KEDA"}}}
    so = by_kind(build_children(gateway, PUBLICATION, replicas=1))["ScaledObject"]
    streams = [t["metadata"]["stream"] for t in so["spec"]["triggers"]]
    assert len(set(streams)) == 3 and streams[0] == "hookgate:{shop/default}:deliveries"
    assert all(s.startswith("hookgate:{shop/default#") for s in streams[1:])
    # KEDA scales on the largest trigger: each targets a third of the default 500 per replica
    assert {t["metadata"]["lagCount"] for t in so["spec"]["triggers"]} == {"166"}


def test_deliverer_pods_pass_the_restricted_pod_security_standard() -> None:
    pod = by_kind(build_children(GATEWAY, PUBLICATION, replicas=1))["Deployment"]["spec"][
        "template"]["spec"]
    (container,) = pod["containers"]
    context = {**pod["securityContext"], **container["securityContext"]}
    assert context["runAsNonRoot"] is True
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}


def test_liveness_waits_for_the_first_answer_of_a_slow_start() -> None:
    (container,) = by_kind(build_children(GATEWAY, PUBLICATION, replicas=1))["Deployment"]["spec"][
        "template"]["spec"]["containers"]
    startup = container["startupProbe"]
    assert startup["httpGet"] == container["livenessProbe"]["httpGet"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
