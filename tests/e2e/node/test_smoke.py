"""First pods on the real node: the Hookgate image runs, pods reach the API server with
their service account, and a gateway pod delivers, signed, to a receiver on the host."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator

import pytest
import yaml
from standardwebhooks.webhooks import Webhook

from tests.support.waiting import wait_for_blocking

from ..kubeutil import Kube
from .conftest import Node
from .hostside import HostReceiver

SECRET = "whsec_aG9va2dhdGUgbm9kZSBzbW9rZSB0ZXN0IQ=="
# What the `restricted` Pod Security Standard asks of every container.
RESTRICTED = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def test_node_is_ready_with_containerd(kube: Kube, node: Node) -> None:
    out = json.loads(kube.kubectl("get", "node", node.name, "-o", "json").stdout)
    ready = {c["type"]: c["status"] for c in out["status"]["conditions"]}["Ready"]
    assert ready == "True"
    assert {"type": "InternalIP", "address": node.ip} in out["status"]["addresses"]
    assert out["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://2.")


def test_pod_authenticates_to_the_api_with_its_service_account(
    kube: Kube, node: Node, namespace: str
) -> None:
    # In-cluster config: KUBERNETES_SERVICE_HOST (10.96.0.1), the projected token and CA.
    script = (
        "from kubernetes import client, config; config.load_incluster_config(); "
        "review = client.V1SelfSubjectReview(); "
        "r = client.AuthenticationV1Api().create_self_subject_review(review); "
        "print('user', r.status.user_info.username)"
    )
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "whoami", "namespace": namespace},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "whoami", "image": node.image,
                            "command": ["python", "-c", script], "securityContext": RESTRICTED}],
        },
    }
    kube.kubectl("apply", "-f", "-", input=json.dumps(pod))
    wait_for_blocking(
        lambda: phase(kube, namespace, "whoami") in ("Succeeded", "Failed"),
        timeout=120, interval=0.5, what="the whoami pod to finish",
    )
    # kubectl logs goes API server -> kubelet, on the node's InternalIP.
    logs = kube.kubectl("logs", "-n", namespace, "whoami").stdout
    assert phase(kube, namespace, "whoami") == "Succeeded", logs
    assert f"user system:serviceaccount:{namespace}:default" in logs


def phase(kube: Kube, namespace: str, pod: str) -> str:
    out = kube.kubectl("get", "pod", "-n", namespace, pod, "-o", "jsonpath={.status.phase}")
    return out.stdout


@pytest.fixture
def receiver(node: Node) -> Iterator[HostReceiver]:
    with HostReceiver(node.host_ip) as rec:
        yield rec


def gateway_manifests(receiver_url: str, host_ip: str) -> str:
    docs = [
        {"apiVersion": "hookgate.io/v1alpha1", "kind": "WebhookGateway",
         "metadata": {"name": "default"},
         # The receiver is on a private address: the SSRF guard must be told.
         "spec": {"network": {"allowCIDRs": [f"{host_ip}/32"]}}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "signing"},
         "stringData": {"secret": SECRET}},
        {"apiVersion": "hookgate.io/v1alpha1", "kind": "WebhookEndpoint",
         "metadata": {"name": "host"},
         "spec": {"url": receiver_url, "secretRef": {"name": "signing", "key": "secret"}}},
        {"apiVersion": "hookgate.io/v1alpha1", "kind": "Subscription",
         "metadata": {"name": "all"},
         "spec": {"endpointRef": {"name": "host"}, "eventTypes": ["*"]}},
    ]
    return yaml.safe_dump_all(docs)


def test_gateway_pod_becomes_ready_and_delivers_to_the_host(
    kube: Kube, node: Node, namespace: str, receiver: HostReceiver
) -> None:
    url = f"http://{node.host_ip}:{receiver.port}/hook"
    config_map = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "gateway-config", "namespace": namespace},
        "data": {"gateway.yaml": gateway_manifests(url, node.host_ip)},
    }
    labels = {"app": "hookgate-smoke"}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "hookgate", "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [{
                        "name": "hookgate", "image": node.image,
                        "args": ["run", "--config", "/config", "--listen", "0.0.0.0:8080",
                                 "--data-dir", "/data"],
                        "ports": [{"containerPort": 8080}],
                        "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8080},
                                           "periodSeconds": 1},
                        "securityContext": RESTRICTED,
                        "volumeMounts": [{"name": "config", "mountPath": "/config"},
                                         {"name": "data", "mountPath": "/data"}],
                    }],
                    "volumes": [{"name": "config", "configMap": {"name": "gateway-config"}},
                                {"name": "data", "emptyDir": {}}],
                },
            },
        },
    }
    kube.kubectl("apply", "-f", "-", input=json.dumps(config_map))
    created = time.monotonic()
    kube.kubectl("apply", "-f", "-", input=json.dumps(deployment))
    kube.kubectl("rollout", "status", "-n", namespace, "deployment/hookgate", "--timeout=120s",
                 timeout=130)
    print(f"gateway pod Ready {time.monotonic() - created:.1f}s after the Deployment was applied")
    pod_ip = kube.kubectl("get", "pods", "-n", namespace, "-l", "app=hookgate-smoke",
                          "-o", "jsonpath={.items[0].status.podIP}").stdout
    assert pod_ip.startswith("10.217.1.")

    # The host reaches the pod by its IP, through the node's link.
    event = {"type": "order.created", "data": {"id": 42}}
    req = urllib.request.Request(f"http://{pod_ip}:8080/v1/events", data=json.dumps(event).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 202, resp.read()

    got = wait_for_blocking(receiver.deliveries, timeout=30, interval=0.2,
                            what="the delivery at the host's receiver")
    Webhook(SECRET).verify(got[0].body, got[0].headers)  # raises if it does not verify
    assert got[0].event["data"] == {"id": 42}
