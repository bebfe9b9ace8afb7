"""The Helm chart and the plain manifests on a real API server.

The chart is installed with helm; then the operator runs as a local process (there is no
kubelet, so the chart's operator pod never starts) with a kubeconfig for the chart's own
ServiceAccount, not the admin: a gateway that becomes Ready proves the rendered RBAC is enough.

The CRDs are cluster-wide and other e2e tests apply them from crds/ too. An install with
crds.install=true hands existing CRDs to its release first, the way a user moving from
`kubectl apply` to Helm does (docs/install.md): label and annotate them for the release.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.ci import unavailable
from tests.support.ports import unused_port
from tests.support.process import terminate
from tests.support.waiting import wait_for_blocking

from .kubeutil import Kube, unique_name

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "hookgate"
CRDS = ["subscriptions.hookgate.io", "webhookendpoints.hookgate.io",
        "webhookgateways.hookgate.io", "webhooksources.hookgate.io"]
CHILDREN = [("configmap", "hookgate-default-config"),
            ("deployment", "hookgate-default"), ("service", "hookgate-default"),
            ("poddisruptionbudget", "hookgate-default"),
            ("serviceaccount", "hookgate-default-deliverer"),
            ("role", "hookgate-default-deliverer"), ("rolebinding", "hookgate-default-deliverer")]


class Helm:
    def __init__(self, kube: Kube, binary: str) -> None:
        self.kube, self.binary = kube, binary

    def __call__(self, *args: str, check: bool = True, timeout: float = 90
                 ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([self.binary, f"--kubeconfig={self.kube.kubeconfig}", *args],
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} exited {proc.returncode}:\n"
                                 f"{proc.stdout}{proc.stderr}")
        return proc


@pytest.fixture(scope="module")
def helm(kube: Kube) -> Helm:
    binary = str(kube.bin_dir / "helm") if kube.bin_dir else shutil.which("helm")
    if not binary or not Path(binary).exists():
        unavailable("helm not found (run hack/k8s/build or put helm on PATH)")
    return Helm(kube, str(binary))


@pytest.fixture
def release(helm: Helm, namespace: str) -> Iterator[str]:
    """A release name for this test; uninstalled afterwards if the test left it."""
    name = unique_name("hg")
    yield name
    helm("uninstall", name, "-n", namespace, "--wait=false", check=False)


def get(kube: Kube, kind: str, name: str, ns: str | None = None) -> dict[str, Any] | None:
    args = ["get", kind, name, "-o", "json"] + (["-n", ns] if ns else [])
    out = kube.kubectl(*args, check=False)
    return json.loads(out.stdout) if out.returncode == 0 else None


def hand_crds_to(kube: Kube, release: str, namespace: str) -> None:
    """Let `release` adopt CRDs that exist already (Helm refuses objects it does not own)."""
    for crd in CRDS:
        if get(kube, "crd", crd):
            kube.kubectl("label", "crd", crd, "--overwrite", "app.kubernetes.io/managed-by=Helm")
            kube.kubectl("annotate", "crd", crd, "--overwrite",
                         f"meta.helm.sh/release-name={release}",
                         f"meta.helm.sh/release-namespace={namespace}")


def service_account_kubeconfig(kube: Kube, namespace: str, account: str, path: Path) -> Path:
    """A kubeconfig that authenticates as the ServiceAccount (a TokenRequest token)."""
    token = kube.kubectl("create", "token", account, "-n", namespace,
                         "--duration=30m").stdout.strip()
    admin = yaml.safe_load(kube.kubeconfig.read_text())
    context = next(c["context"] for c in admin["contexts"]
                   if c["name"] == admin["current-context"])
    cluster = next(c for c in admin["clusters"] if c["name"] == context["cluster"])
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "clusters": [cluster],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": account, "context": {"cluster": cluster["name"],
                                                   "user": account}}],
        "current-context": account}))
    path.chmod(0o600)
    return path


def examples(redis_url: str) -> str:
    docs = []
    for name in ("gateway.yaml", "endpoints.yaml", "subscriptions.yaml", "secrets.yaml"):
        for doc in yaml.safe_load_all((ROOT / "examples" / name).read_text()):
            if doc and doc["kind"] == "Secret" and doc["metadata"]["name"] == "redis":
                doc["stringData"]["url"] = redis_url
            if doc:
                docs.append(doc)
    return yaml.safe_dump_all(docs)


def ready(obj: dict[str, Any] | None) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in ((obj or {}).get("status") or {}).get("conditions", []))


def test_namespaced_install_runs_the_examples_with_the_charts_own_rbac(
        kube: Kube, helm: Helm, namespace: str, release: str, redis_url: str,
        tmp_path: Path) -> None:
    hand_crds_to(kube, release, namespace)
    out = helm("install", release, str(CHART), "-n", namespace,
               "--set", f"watchNamespaces={{{namespace}}}", "--timeout", "60s").stdout
    assert "Next step" in out and "WebhookGateway" in out  # NOTES.txt
    for crd in CRDS:
        kube.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{crd}")
    fullname = f"{release}-hookgate"
    deployment = get(kube, "deployment", fullname, namespace)
    assert deployment is not None
    assert deployment["spec"]["template"]["spec"]["containers"][0]["args"][-1] == \
        f"--namespace={namespace}"
    assert get(kube, "role", fullname, namespace) and get(kube, "rolebinding", fullname,
                                                          namespace)
    assert get(kube, "clusterrole", fullname) is None

    # The operator, as the chart's ServiceAccount and nothing more.
    config = service_account_kubeconfig(kube, namespace, fullname, tmp_path / "sa.kubeconfig")
    log = tmp_path / "operator.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hookgate", "operator", "--namespace", namespace,
             "--liveness", f"127.0.0.1:{unused_port()}",
             "--readiness", f"127.0.0.1:{unused_port()}", "--log-format", "text"],
            stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT,
            env={**os.environ, "KUBECONFIG": str(config)})
    try:
        kube.kubectl("apply", "-n", namespace, "-f", "-", input=examples(redis_url))
        wait_for_blocking(lambda: get(kube, "configmap", "hookgate-default-config", namespace),
                          timeout=60, what="the gateway's ConfigMap hookgate-default-config")
        for kind, name in CHILDREN:
            wait_for_blocking(lambda k=kind, n=name: get(kube, k, n, namespace),  # type: ignore[misc]
                              timeout=30, what=f"{kind} {name}")
        wait_for_blocking(lambda: ready(get(kube, "webhookgateway", "default", namespace)),
                          timeout=60, what="the gateway to be Ready")
        for endpoint in ("local-receiver", "audit"):
            wait_for_blocking(
                lambda e=endpoint: ready(get(kube, "webhookendpoint", e, namespace)),  # type: ignore[misc]
                timeout=30, what=f"endpoint {endpoint} to be Ready")
        assert get(kube, "secret", "audit-hookgate-signing", namespace)  # generated
        events = kube.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
        assert "hookgate" in events.lower()
    finally:
        terminate(proc, 20)
    text = log.read_text(errors="replace")
    assert "forbidden" not in text.lower(), text[-5000:]

    # Uninstalling removes the operator and keeps the CRDs and every Hookgate resource.
    out = helm("uninstall", release, "-n", namespace, "--wait", "--timeout", "60s").stdout
    assert "kept due to the resource policy" in out
    for crd in CRDS:
        assert get(kube, "crd", crd) is not None, f"{crd} was deleted"
    assert get(kube, "webhookgateway", "default", namespace) is not None
    wait_for_blocking(lambda: get(kube, "deployment", fullname, namespace) is None, timeout=30,
                      what="the operator Deployment to be deleted")
    assert get(kube, "role", fullname, namespace) is None


def test_cluster_wide_install_grants_the_operator_what_it_needs_everywhere(
        kube: Kube, helm: Helm, namespace: str, release: str) -> None:
    from tests.unit.test_chart import CLUSTER_RIGHTS

    helm("install", release, str(CHART), "-n", namespace, "--set", "crds.install=false",
         "--timeout", "60s")
    fullname = f"{release}-hookgate"
    assert get(kube, "clusterrole", fullname) and get(kube, "clusterrolebinding", fullname)
    from kubernetes import client

    auth = client.AuthorizationV1Api(kube.api_client)
    elsewhere = "kube-public"  # a namespace the release knows nothing about

    def can(verb: str, resource: str, group: str, ns: str | None = elsewhere) -> bool:
        """Asks the API server's RBAC authorizer (a SubjectAccessReview) about the SA."""
        resource, _, sub = resource.partition("/")
        review = auth.create_subject_access_review(client.V1SubjectAccessReview(
            spec=client.V1SubjectAccessReviewSpec(
                user=f"system:serviceaccount:{namespace}:{fullname}",
                groups=["system:serviceaccounts", f"system:serviceaccounts:{namespace}",
                        "system:authenticated"],
                resource_attributes=client.V1ResourceAttributes(
                    group=group, resource=resource, subresource=sub or None, verb=verb,
                    namespace=ns))))
        return bool(review.status.allowed)

    missing = [t for t in sorted(CLUSTER_RIGHTS)
               if not can(t[2], t[1], t[0],
                          None if t[1] in ("customresourcedefinitions", "namespaces")
                          else elsewhere)]
    assert not missing, f"the operator may not: {missing}"
    for verb, resource, group in [("get", "pods", ""), ("create", "clusterroles",
                                                         "rbac.authorization.k8s.io"),
                                  ("delete", "namespaces", ""), ("create", "pods", ""),
                                  ("escalate", "roles", "rbac.authorization.k8s.io"),
                                  ("delete", "customresourcedefinitions",
                                   "apiextensions.k8s.io")]:
        assert not can(verb, resource, group), f"the operator should not {verb} {resource}"
    helm("uninstall", release, "-n", namespace, "--wait", "--timeout", "60s")
    assert get(kube, "clusterrole", fullname) is None


def test_values_outside_the_schema_are_refused_before_anything_is_installed(
        kube: Kube, helm: Helm, namespace: str, release: str) -> None:
    proc = helm("install", release, str(CHART), "-n", namespace, "--set", "replicaCount=2",
                check=False)
    assert proc.returncode != 0
    assert "values don't meet the specifications of the schema" in proc.stderr
    assert "additional properties 'replicaCount' not allowed" in proc.stderr
    assert release not in helm("list", "-n", namespace, "-q").stdout


def test_plain_manifests_apply_with_kubectl(kube: Kube) -> None:
    manifest = str(ROOT / "deploy" / "hookgate.yaml")
    if get(kube, "namespace", "hookgate-system"):
        pytest.skip("namespace hookgate-system exists: not touching a real installation")
    try:
        kube.kubectl("apply", "--server-side", "-f", manifest)
        deployment = get(kube, "deployment", "hookgate", "hookgate-system")
        assert deployment is not None and deployment["spec"]["replicas"] == 1
        assert get(kube, "clusterrolebinding", "hookgate") is not None
        # Applying again changes nothing and fails on nothing.
        kube.kubectl("apply", "--server-side", "-f", manifest)
    finally:
        kube.kubectl("delete", "--ignore-not-found", "--wait=true", "--timeout=90s", "-f",
                     manifest, timeout=120)
