"""The CRDs and the offline checks made from them: what is rejected, with which message,
what is defaulted, and that the CRDs themselves are complete enough for kubectl explain."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from hookgate.model import schema
from hookgate.model.durations import DURATION_PATTERN
from hookgate.model.manifests import load_paths
from hookgate.model.resources import KINDS
from tests.support.invalid_objects import INVALID_OBJECTS

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "examples"
API = "hookgate.io/v1alpha1"


def obj(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API, "kind": kind, "metadata": {"name": name}, "spec": spec}


# --- rejected objects --------------------------------------------------------------------


@pytest.mark.parametrize(("manifest", "field", "fragment"),
                         [case[1:] for case in INVALID_OBJECTS],
                         ids=[case[0] for case in INVALID_OBJECTS])
def test_invalid_object_is_reported_at_its_field(manifest: dict[str, Any], field: str,
                                                 fragment: str) -> None:
    _, problems = schema.check(manifest)
    found = [p for p in problems if p.field == field and fragment in p.message]
    assert found, f"no problem at {field} containing {fragment!r}; got {problems}"
    problem = found[0]
    assert problem.kind == manifest["kind"]
    assert problem.name == manifest["metadata"]["name"]
    assert problem.reason in ("SchemaViolation", "RuleViolation")
    assert problem.hint, "every problem says what to do"


def test_table_ids_and_names_are_unique() -> None:
    ids = [case[0] for case in INVALID_OBJECTS]
    names = [(case[1]["kind"], case[1]["metadata"]["name"]) for case in INVALID_OBJECTS]
    assert len(set(ids)) == len(ids)
    assert len(set(names)) == len(names)


def test_unknown_field_suggests_the_closest_one() -> None:
    _, (problem,) = schema.check(obj("WebhookEndpoint", "a", {"url": "https://x.example",
                                                               "maxInflight": 3}))
    assert problem.message == 'unknown field "spec.maxInflight"; did you mean "spec.maxInFlight"?'
    assert "maxInFlight" in problem.hint


def test_cross_field_rules_are_rule_violations_with_an_explain_hint() -> None:
    doc = obj("WebhookGateway", "g", {"autoscaling": {"minReplicas": 3, "maxReplicas": 2}})
    _, (problem,) = schema.check(doc)
    assert problem.reason == "RuleViolation"
    assert problem.hint == "see kubectl explain webhookgateway.spec.autoscaling"


def test_a_bad_duration_hints_at_the_format() -> None:
    _, (problem,) = schema.check(obj("WebhookEndpoint", "a", {"url": "https://x.example",
                                                               "timeout": "10 seconds"}))
    assert (problem.field, problem.hint) == ("spec.timeout",
                                             "write a duration like 500ms, 15s, 5m or 1h30m")


def test_rules_are_not_run_over_fields_that_broke_the_schema() -> None:
    # duration("soon") would only repeat the pattern error, less clearly.
    doc = obj("WebhookEndpoint", "a", {"url": "https://x.example",
                                       "retry": {"schedule": ["5m", "soon"]}})
    _, problems = schema.check(doc)
    assert [p.field for p in problems] == ["spec.retry.schedule[1]"]


def test_required_field_hint_quotes_its_description() -> None:
    _, (problem,) = schema.check(obj("Subscription", "s", {"eventTypes": ["a.b"]}))
    assert problem.field == "spec.endpointRef"
    assert problem.hint.startswith("add endpointRef: The WebhookEndpoint")


def test_unknown_kind_in_our_group() -> None:
    doc = {"apiVersion": API, "kind": "WebhookEndpiont", "metadata": {"name": "a"}}
    _, (problem,) = schema.check(doc)
    assert problem.field == "kind"
    assert 'did you mean "WebhookEndpoint"' in problem.message


def test_every_problem_is_reported_not_just_the_first() -> None:
    doc = obj("WebhookEndpoint", "Bad", {"url": "ftp://x", "maxInFlight": 0, "paused": "no"})
    _, problems = schema.check(doc)
    assert {p.field for p in problems} == {"metadata.name", "spec.url", "spec.maxInFlight",
                                           "spec.paused"}


# --- Secrets ------------------------------------------------------------------------------


def test_secrets_are_checked_for_base64_data_and_key_names_only() -> None:
    good = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "type": "Opaque",
            "data": {"secret": "d2hzZWNfYWJj"}, "stringData": {"other.key": "plain text"},
            "anything": "else is the API server's business"}
    assert schema.check(good)[1] == []
    bad = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
           "data": {"bad key": "d2hzZWNfYWJj"}}
    (problem,) = schema.check(bad)[1]
    assert (problem.field, problem.kind) == ("data.bad key", "Secret")
    assert "valid config key" in problem.message


# --- defaults -----------------------------------------------------------------------------


def test_gateway_defaults_fill_in_every_documented_default() -> None:
    checked, problems = schema.check(obj("WebhookGateway", "default", {}))
    assert problems == []
    spec = checked["spec"]
    assert spec["autoscaling"] == {"mode": "Builtin", "minReplicas": 1, "maxReplicas": 10,
                                   "targetBacklogPerReplica": 500,
                                   "scaleDownStabilizationSeconds": 300,
                                   "pollingIntervalSeconds": 5}
    assert spec["ingest"] == {"maxBodyBytes": 262144}
    assert spec["defaults"]["timeout"] == "15s"
    assert spec["defaults"]["retry"]["schedule"][:3] == ["0s", "5s", "5m"]
    assert spec["deliverer"] == {"concurrency": 256}


def test_endpoint_defaults_and_the_input_is_left_alone() -> None:
    doc = obj("WebhookEndpoint", "acme", {"url": "https://x.example",
                                          "secretRef": {"name": "acme-signing"},
                                          "rateLimit": {"perSecond": 2.5}})
    before = copy.deepcopy(doc)
    checked, problems = schema.check(doc)
    assert problems == []
    assert doc == before
    spec = checked["spec"]
    assert spec["gatewayRef"] == {"name": "default"}
    assert spec["secretRef"] == {"name": "acme-signing", "key": "secret"}
    assert spec["rateLimit"] == {"perSecond": 2.5, "burst": 1}
    assert (spec["maxInFlight"], spec["paused"]) == (64, False)
    assert "circuitBreaker" not in spec, "defaults inside optional objects stay inside"


def test_null_fields_are_pruned_and_then_defaulted() -> None:
    checked, problems = schema.check(obj("WebhookEndpoint", "a", {"url": "https://x.example",
                                                                  "headers": None,
                                                                  "maxInFlight": None}))
    assert problems == []
    assert "headers" not in checked["spec"]
    assert checked["spec"]["maxInFlight"] == 64


def test_valid_sources_of_both_shapes() -> None:
    http = obj("WebhookSource", "github", {
        "verify": {"scheme": "github", "secretRef": {"name": "gh"}},
        "eventType": {"header": "X-GitHub-Event", "prefix": "github."}})
    checked, problems = schema.check(http)
    assert problems == []
    assert checked["spec"]["verify"]["secretRef"]["key"] == "secret"
    broker = obj("WebhookSource", "orders", {
        "broker": {"kafka": {"bootstrapServers": ["kafka:9092"], "topics": ["orders"]}},
        "eventType": {"header": "event-type"}})
    checked, problems = schema.check(broker)
    assert problems == []
    assert checked["spec"]["broker"]["kafka"]["group"] == "hookgate"


def test_int_or_string_quantities() -> None:
    doc = obj("WebhookGateway", "g", {"deliverer": {"resources": {
        "requests": {"cpu": "100m", "memory": 268435456}, "limits": {"memory": "1Gi"}}}})
    assert schema.check(doc)[1] == []
    doc["spec"]["deliverer"]["resources"]["limits"]["cpu"] = True
    (problem,) = schema.check(doc)[1]
    assert problem.field == "spec.deliverer.resources.limits.cpu"


# --- the CRDs themselves ------------------------------------------------------------------


def crd_files() -> list[Path]:
    return sorted(schema.crd_dir().glob("*.yaml"))


def walk(node: Mapping[str, Any], path: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every schema node with its path, entering properties, additionalProperties, items."""
    yield path, node
    for key, sub in node.get("properties", {}).items():
        yield from walk(sub, f"{path}.{key}")
    if isinstance(node.get("additionalProperties"), Mapping):
        yield from walk(node["additionalProperties"], f"{path}.*")
    if "items" in node:
        yield from walk(node["items"], f"{path}[]")


def openapi(kind: str) -> Mapping[str, Any]:
    (version,) = schema.crds()[kind]["spec"]["versions"]
    result: Mapping[str, Any] = version["schema"]["openAPIV3Schema"]
    return result


def test_crd_dir_is_the_repositorys_and_holds_one_file_per_kind() -> None:
    assert schema.crd_dir() == ROOT / "crds"
    kinds = [yaml.safe_load(p.read_text())["spec"]["names"]["kind"] for p in crd_files()]
    assert sorted(kinds) == sorted(KINDS)


@pytest.mark.parametrize("kind", KINDS)
def test_crd_is_structural_and_described(kind: str) -> None:
    for path, node in walk(openapi(kind), kind):
        if path == f"{kind}.metadata":
            # The API server forbids anything but `type: object` here; it documents metadata.
            assert node == {"type": "object"}, path
            continue
        assert node.get("description"), f"{path} has no description (kubectl explain)"
        opaque = node.get("x-kubernetes-preserve-unknown-fields")
        if node.get("x-kubernetes-int-or-string"):
            assert node.get("anyOf") == [{"type": "integer"}, {"type": "string"}], path
            continue
        assert node.get("type") in ("object", "array", "string", "integer", "number",
                                    "boolean"), f"{path} has no type"
        if node["type"] == "object":
            assert "properties" in node or "additionalProperties" in node or opaque, path


@pytest.mark.parametrize("kind", KINDS)
def test_crd_conventions(kind: str) -> None:
    crd = schema.crds()[kind]
    names = crd["spec"]["names"]
    assert crd["spec"]["group"] == "hookgate.io" and crd["spec"]["scope"] == "Namespaced"
    assert names["categories"] == ["hookgate"]
    assert names["shortNames"][0].startswith("wh")
    (version,) = crd["spec"]["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert "status" in version["subresources"]
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert columns["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Message"]["priority"] == 1
    assert columns["Age"]["jsonPath"] == ".metadata.creationTimestamp"
    conditions = openapi(kind)["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert set(conditions["items"]["properties"]) == {
        "type", "status", "reason", "message", "lastTransitionTime", "observedGeneration"}


def test_gateway_has_the_scale_subresource_on_spec_replicas() -> None:
    (version,) = schema.crds()["WebhookGateway"]["spec"]["versions"]
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector"}
    spec = openapi("WebhookGateway")["properties"]["spec"]["properties"]
    assert spec["replicas"]["type"] == "integer"


@pytest.mark.parametrize("kind", KINDS)
def test_rules_have_messages_and_iterate_only_over_bounded_values(kind: str) -> None:
    for path, node in walk(openapi(kind), kind):
        for rule in node.get("x-kubernetes-validations", []):
            assert rule.get("message"), f"{path}: rule {rule['rule']!r} has no message"
            if node["type"] == "array":
                assert "maxItems" in node, f"{path}: rule over an unbounded list"
                assert "maxLength" in node["items"], f"{path}[]: unbounded strings"
            if node["type"] == "string":
                assert "maxLength" in node, f"{path}: rule over an unbounded string"


def test_duration_fields_use_the_one_duration_pattern() -> None:
    patterns = {node.get("pattern") for kind in KINDS for _, node in walk(openapi(kind), kind)
                if "ms|s|m|h" in str(node.get("pattern"))}
    assert patterns == {DURATION_PATTERN}


def test_every_cel_rule_is_evaluated_offline() -> None:
    assert schema.unevaluable_rules() == []


@pytest.mark.parametrize("kind", KINDS)
def test_patterns_compile(kind: str) -> None:
    for _, node in walk(openapi(kind), kind):
        if "pattern" in node:
            re.compile(node["pattern"])


# --- examples ----------------------------------------------------------------------------


def example_documents() -> list[tuple[str, dict[str, Any]]]:
    return [(f"{p.name}:{d['kind']}/{d['metadata']['name']}", d)
            for p in sorted(EXAMPLES.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text())
            if d]


@pytest.mark.parametrize(("ident", "doc"), example_documents(),
                         ids=[i for i, _ in example_documents()])
def test_every_example_passes_the_schema(ident: str, doc: dict[str, Any]) -> None:
    assert "namespace" not in doc["metadata"], "examples go to the current namespace"
    assert schema.check(doc)[1] == []


def test_examples_load_as_one_coherent_set() -> None:
    resources, problems = load_paths([EXAMPLES])
    assert problems == []
    names = {(r.meta.kind, r.meta.name) for r in resources}
    assert {("WebhookGateway", "default"), ("WebhookEndpoint", "local-receiver"),
            ("WebhookEndpoint", "audit"), ("Subscription", "orders"),
            ("Subscription", "big-invoices"), ("Subscription", "everything-audit"),
            ("WebhookSource", "github"), ("Secret", "local-receiver-signing")} <= names


@pytest.mark.parametrize(("cidr", "ok"), [
    ("10.0.0.0/8", True), ("192.168.1.7/24", True), ("fd00::/8", True),
    ("10.0.0.0", False), ("::ffff:10.0.0.0/104", False), ("fe80::1%eth0/64", False),
])
def test_allow_cidrs_accepts_what_the_api_server_does(cidr: str, ok: bool) -> None:
    doc = obj("WebhookGateway", "g", {"network": {"allowCIDRs": [cidr]}})
    assert (schema.check(doc)[1] == []) is ok


def test_the_checked_copy_is_deep_keeps_aliases_and_shares_keys() -> None:
    headers = {"X-" + "Tenant": "acme"}  # keys built at run time, as a YAML parser does
    doc = obj("WebhookEndpoint", "a", {"url": "https://x.example", "headers": headers,
                                       "retry": {"schedule": ["0s", "5s"]}})
    doc["metadata"]["labels"] = doc["metadata"]["annotations"] = {"team": "b"}
    before = copy.deepcopy(doc)
    checked, problems = schema.check(doc)
    assert problems == [] and doc == before  # the input is never changed
    assert checked["spec"]["headers"] == headers and checked["spec"]["headers"] is not headers
    assert checked["metadata"]["labels"] is checked["metadata"]["annotations"]
    other, _ = schema.check(json.loads(json.dumps(doc)))  # the same keys, other objects
    assert next(iter(other["spec"]["headers"])) is next(iter(checked["spec"]["headers"]))


# --- validators built once per kind: what is shared must not carry over ----------------


def test_documents_of_one_kind_each_get_their_own_problems() -> None:
    # The same validator tree checks all three, in turn and then again.
    bad_url = obj("WebhookEndpoint", "a", {"url": "ftp://a.example"})
    bad_timeout = obj("WebhookEndpoint", "b", {"url": "https://b.example", "timeout": "0s"})
    good = obj("WebhookEndpoint", "c", {"url": "https://c.example", "timeout": "5s"})
    for _ in range(2):
        assert [(p.name, p.field) for p in schema.check(bad_url)[1]] == [("a", "spec.url")]
        (problem,) = schema.check(bad_timeout)[1]
        assert (problem.name, problem.field, problem.reason) == ("b", "spec.timeout",
                                                                "RuleViolation")
        assert schema.check(good)[1] == []


def test_a_rule_is_evaluated_for_each_value_not_once_per_rule() -> None:
    # Results of rules over strings and lists are remembered per value, never per rule.
    def fields(spec: dict[str, Any]) -> list[str | None]:
        return [p.field for p in schema.check(obj("WebhookEndpoint", "a", {
            "url": "https://a.example", **spec}))[1]]

    for _ in range(2):
        assert fields({"timeout": "0s"}) == ["spec.timeout"]
        assert fields({"timeout": "1s"}) == []
        assert fields({"retry": {"schedule": ["0s", "5m", "1m"]}}) == ["spec.retry.schedule"]
        assert fields({"retry": {"schedule": ["0s", "1m", "5m"]}}) == []


def test_a_rule_over_some_fields_still_sees_them() -> None:
    # CEL is handed only the fields such a rule reads (auth and url here)
    tls = {"auth": {"tls": {"secretRef": {"name": "client"}}}}
    spec = {"url": "http://a.example", "timeout": "5s", **tls}
    (problem,) = schema.check(obj("WebhookEndpoint", "a", spec))[1]
    assert (problem.field, problem.reason) == ("spec.url", "RuleViolation")
    assert schema.check(obj("WebhookEndpoint", "b", {**spec, "url": "https://a.example"}))[1] \
        == []
    assert schema.check(obj("WebhookEndpoint", "c", {"url": "http://a.example"}))[1] == []


@pytest.mark.parametrize(("rule", "fields"), [
    ("!has(self.auth) || !has(self.auth.tls) || self.url.startsWith('https://')",
     {"auth", "url"}),
    ("has(self.url) != has(self.urlFrom)", {"url", "urlFrom"}),
    ("size(self) > 0", None),
    ("self.all(c, isCIDR(c))", None),
    ("self.map(d, duration(d)).isSorted()", None),
    ("self.x == 1 || self == {}", None),
    ("self['x'] == 1", None),
])
def test_which_fields_of_self_a_rule_reads(rule: str, fields: set[str] | None) -> None:
    found = schema._fields_of_self(rule)
    assert (set(found) if found is not None else None) == fields


def test_defaults_are_fresh_for_every_document() -> None:
    first, _ = schema.check(obj("WebhookGateway", "a", {}))
    first["spec"]["defaults"]["retry"]["schedule"].append("99h")
    second, _ = schema.check(obj("WebhookGateway", "b", {}))
    assert "99h" not in second["spec"]["defaults"]["retry"]["schedule"]
