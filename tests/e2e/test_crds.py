"""The CRDs on a real kube-apiserver: installed, accepting the examples, rejecting the table
of bad objects with the same messages as the offline checker, and readable with kubectl."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hookgate.model import schema
from tests.support.invalid_objects import INVALID_OBJECTS
from tests.support.waiting import wait_for_blocking

from .kubeutil import Kube, unique_name

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
CRD_NAMES = sorted(crd["metadata"]["name"] for crd in schema.crds().values())


@pytest.fixture(scope="module")
def crds(kube: Kube) -> Kube:
    """The CRDs applied and Established. Left installed: later tests (the operator's) use them."""
    kube.kubectl("apply", "-f", str(schema.crd_dir()))
    for name in CRD_NAMES:
        kube.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s",
                     timeout=90)
    return kube


@pytest.fixture(scope="module")
def ns(crds: Kube) -> Iterator[str]:
    """One namespace for this module, holding the examples."""
    name = unique_name("hg-crds")
    crds.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        crds.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def examples(crds: Kube, ns: str) -> str:
    crds.kubectl("apply", "-n", ns, "-f", str(ROOT / "examples"))
    return ns


def example_documents() -> list[dict[str, Any]]:
    return [d for p in sorted((ROOT / "examples").glob("*.yaml"))
            for d in yaml.safe_load_all(p.read_text()) if d]


def test_every_crd_is_established_with_its_names_accepted(crds: Kube) -> None:
    for name in CRD_NAMES:
        out = crds.kubectl("get", f"crd/{name}", "-o", "json").stdout
        status = {c["type"]: c["status"] for c in json.loads(out)["status"]["conditions"]}
        assert status.get("Established") == "True", (name, status)
        assert status.get("NamesAccepted") == "True", (name, status)


def test_examples_are_created_and_defaulted_like_offline(crds: Kube, examples: str) -> None:
    for doc in example_documents():
        if doc["kind"] == "Secret":
            continue
        kind, name = doc["kind"].lower(), doc["metadata"]["name"]
        served = json.loads(crds.kubectl("get", f"{kind}.hookgate.io/{name}", "-n", examples,
                                         "-o", "json").stdout)
        offline, problems = schema.check(doc)
        assert problems == []
        assert served["spec"] == offline["spec"], f"{kind}/{name}: defaults differ"


def test_get_hookgate_lists_every_kind(crds: Kube, examples: str) -> None:
    out = crds.kubectl("get", "hookgate", "-n", examples, "-o", "name").stdout
    for resource in ("webhookgateway", "webhookendpoint", "subscription", "webhooksource"):
        assert f"{resource}.hookgate.io/" in out, out


@pytest.mark.parametrize(("short", "columns", "value"), [
    ("whgw", ["READY", "MODE", "REPLICAS", "BACKLOG", "AGE"], "Builtin"),
    ("whep", ["READY", "URL", "AGE"], "http://127.0.0.1:9000/webhooks"),
    ("whsub", ["READY", "ENDPOINT", "EVENT TYPES", "AGE"], "local-receiver"),
    ("whsrc", ["READY", "PATH", "SCHEME", "AGE"], "github"),
])
def test_printer_columns(crds: Kube, examples: str, short: str, columns: list[str],
                         value: str) -> None:
    out = crds.kubectl("get", short, "-n", examples).stdout
    header = out.splitlines()[0]
    for column in columns:
        assert column in header, header
    assert value in out
    wide = crds.kubectl("get", short, "-n", examples, "-o", "wide").stdout
    assert "MESSAGE" in wide.splitlines()[0]


def test_kubectl_explain_shows_field_descriptions(crds: Kube) -> None:
    # The OpenAPI document of a new CRD is published a moment after it is Established.
    def explained() -> str:
        proc = crds.kubectl("explain", "webhookendpoint.spec.url", check=False)
        return proc.stdout if proc.returncode == 0 else ""

    out = wait_for_blocking(explained, timeout=30, what="kubectl explain webhookendpoint.spec.url")
    assert "The http:// or https:// URL events are POSTed to" in " ".join(out.split())


def test_gateway_scales_through_the_scale_subresource(crds: Kube, ns: str) -> None:
    gateway = {"apiVersion": "hookgate.io/v1alpha1", "kind": "WebhookGateway",
               "metadata": {"name": "scaled"}, "spec": {"autoscaling": {"mode": "Disabled"}}}
    crds.kubectl("create", "-n", ns, "-f", "-", input=json.dumps(gateway))
    crds.kubectl("scale", "webhookgateway/scaled", "-n", ns, "--replicas=3")
    out = crds.kubectl("get", "webhookgateway/scaled", "-n", ns,
                       "-o", "jsonpath={.spec.replicas}").stdout
    assert out == "3"


@pytest.mark.parametrize(("manifest", "field", "fragment"),
                         [case[1:] for case in INVALID_OBJECTS],
                         ids=[case[0] for case in INVALID_OBJECTS])
def test_invalid_object_is_rejected_with_the_offline_message(
        crds: Kube, ns: str, manifest: dict[str, Any], field: str, fragment: str) -> None:
    proc = crds.kubectl("create", "-n", ns, "-f", "-", input=json.dumps(manifest), check=False)
    assert proc.returncode != 0, f"the API server accepted it:\n{proc.stdout}"
    error = " ".join(proc.stderr.split())
    assert fragment in error, error
    if field.startswith(("spec", "metadata")):
        assert field in error, error
