"""Smoke tests: the cluster behind `kube` behaves like a real control plane.

These are the behaviours Hookgate's operator relies on: custom resources,
controllers reconciling owned objects, garbage collection through
ownerReferences, and RBAC for service-account tokens. No kubelet is needed:
pods are created as objects but never run.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.support.waiting import wait_for_blocking

from .kubeutil import Kube, unique_name


def status_of(call) -> int:
    """HTTP status of an API call: 200 on success, else the error's status."""
    try:
        call()
    except ApiException as exc:
        return exc.status
    return 200


def test_version_is_stamped(kube: Kube) -> None:
    info = client.VersionApi(kube.api_client).get_code()
    # An unstamped build reports v0.0.0, which breaks client version checks.
    assert info.git_version != "v0.0.0" and info.major == "1", info
    out = json.loads(kube.kubectl("version", "-o", "json").stdout)
    assert out["serverVersion"]["gitVersion"] == info.git_version


@pytest.fixture
def crd(kube: Kube) -> Iterator[dict[str, str]]:
    """A throwaway namespaced CRD, applied with kubectl, in a unique group."""
    group = f"{unique_name('t')}.smoke.hookgate.io"
    name = f"widgets.{group}"
    manifest = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": name},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "required": ["size"],
                                    "properties": {"size": {"type": "integer", "minimum": 1}},
                                }
                            },
                        }
                    },
                }
            ],
        },
    }
    kube.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    ext = client.ApiextensionsV1Api(kube.api_client)

    def established() -> bool:
        conditions = ext.read_custom_resource_definition(name).status.conditions or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    wait_for_blocking(established, timeout=30, what=f"CRD {name} to be Established")
    try:
        yield {"group": group, "name": name}
    finally:
        ext.delete_custom_resource_definition(name)


def test_custom_resource_round_trip(kube: Kube, crd: dict[str, str], namespace: str) -> None:
    api = client.CustomObjectsApi(kube.api_client)
    args = (crd["group"], "v1", namespace, "widgets")
    body = {
        "apiVersion": f"{crd['group']}/v1",
        "kind": "Widget",
        "metadata": {"name": "w1"},
        "spec": {"size": 3},
    }
    # A freshly established CRD can take a moment to be served on every path.
    wait_for_blocking(
        lambda: api.create_namespaced_custom_object(*args, body),
        timeout=30,
        what="creating a Widget",
        ignoring=(ApiException,),
    )
    got = api.get_namespaced_custom_object(*args, "w1")
    assert got["spec"] == {"size": 3}
    assert got["metadata"]["uid"]

    # The structural schema is enforced by the API server itself.
    bad = copy.deepcopy(body)
    bad["metadata"]["name"], bad["spec"]["size"] = "w2", 0
    assert status_of(lambda: api.create_namespaced_custom_object(*args, bad)) == 422


def test_deployment_gets_replicaset_and_pods(kube: Kube, namespace: str) -> None:
    apps, core = client.AppsV1Api(kube.api_client), client.CoreV1Api(kube.api_client)
    labels = {"app": "smoke"}
    deployment = apps.create_namespaced_deployment(
        namespace,
        client.V1Deployment(
            metadata=client.V1ObjectMeta(name="smoke"),
            spec=client.V1DeploymentSpec(
                replicas=2,
                selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=labels),
                    spec=client.V1PodSpec(
                        containers=[
                            client.V1Container(
                                name="app", image="registry.invalid/hookgate/smoke:none"
                            )
                        ]
                    ),
                ),
            ),
        ),
    )

    def owned_replicaset() -> client.V1ReplicaSet | None:
        for rs in apps.list_namespaced_replica_set(namespace).items:
            if any(o.uid == deployment.metadata.uid for o in rs.metadata.owner_references or []):
                return rs
        return None

    rs = wait_for_blocking(
        owned_replicaset, timeout=60, what="the deployment controller to create a ReplicaSet"
    )

    def owned_pods() -> list[client.V1Pod]:
        pods = [
            p
            for p in core.list_namespaced_pod(namespace).items
            if any(o.uid == rs.metadata.uid for o in p.metadata.owner_references or [])
        ]
        return pods if len(pods) == 2 else []

    pods = wait_for_blocking(owned_pods, timeout=60,
                             what="the replicaset controller to create 2 pods")
    # No kubelet: the pods exist but are never scheduled or run.
    assert all(p.status.phase == "Pending" for p in pods)


def test_garbage_collector_deletes_dependents(kube: Kube, namespace: str) -> None:
    core = client.CoreV1Api(kube.api_client)
    owner = core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"))
    )
    core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(
            metadata=client.V1ObjectMeta(
                name="child",
                owner_references=[
                    client.V1OwnerReference(
                        api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid
                    )
                ],
            )
        ),
    )

    core.delete_namespaced_config_map("owner", namespace, propagation_policy="Background")

    wait_for_blocking(
        lambda: status_of(lambda: core.read_namespaced_config_map("child", namespace)) == 404,
        timeout=60,
        what="the garbage collector to delete the dependent ConfigMap",
    )


def test_service_account_token_is_limited_by_its_role(kube: Kube, namespace: str) -> None:
    core = client.CoreV1Api(kube.api_client)
    rbac = client.RbacAuthorizationV1Api(kube.api_client)
    core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="visible"), data={"k": "v"})
    )
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(metadata=client.V1ObjectMeta(name="hidden"), string_data={"k": "v"}),
    )
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="reader"))
    )
    rbac.create_namespaced_role(
        namespace,
        client.V1Role(
            metadata=client.V1ObjectMeta(name="configmap-reader"),
            rules=[
                client.V1PolicyRule(
                    api_groups=[""], resources=["configmaps"], verbs=["get", "list"]
                )
            ],
        ),
    )
    rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="reader"),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="Role", name="configmap-reader"
            ),
            subjects=[
                client.RbacV1Subject(kind="ServiceAccount", name="reader", namespace=namespace)
            ],
        ),
    )

    token = core.create_namespaced_service_account_token(
        "reader",
        namespace,
        client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600)
        ),
    ).status.token

    # Same server and CA as the admin client, but no credential except the token.
    admin = kube.api_client.configuration
    cfg = client.Configuration()
    cfg.host, cfg.ssl_ca_cert, cfg.verify_ssl = admin.host, admin.ssl_ca_cert, admin.verify_ssl
    cfg.tls_server_name = admin.tls_server_name
    cfg.api_key = {"BearerToken": f"Bearer {token}"}
    with client.ApiClient(cfg) as sa_client:
        sa_core = client.CoreV1Api(sa_client)
        identity = (
            client.AuthenticationV1Api(sa_client)
            .create_self_subject_review(client.V1SelfSubjectReview())
            .status.user_info
        )
        assert identity.username == f"system:serviceaccount:{namespace}:reader"

        # The authorizer learns about new RBAC objects through a watch.
        wait_for_blocking(
            lambda: sa_core.read_namespaced_config_map("visible", namespace).data,
            timeout=30,
            what="the Role to allow reading the ConfigMap",
            ignoring=(ApiException,),
        )
        assert status_of(lambda: sa_core.read_namespaced_secret("hidden", namespace)) == 403
        assert status_of(lambda: sa_core.list_namespaced_config_map("default")) == 403
        assert status_of(lambda: sa_core.delete_namespaced_config_map("visible", namespace)) == 403
