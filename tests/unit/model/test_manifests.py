"""From YAML files to a compiled config, and every way that can go wrong, with its message."""

from __future__ import annotations

from pathlib import Path

import pytest

from hookgate.model.compiler import compile_config, endpoints_needing_secrets, select_gateway
from hookgate.model.durations import format_duration, parse_duration
from hookgate.model.manifests import load_paths

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

ENDPOINT = """\
apiVersion: hookgate.io/v1alpha1
kind: WebhookEndpoint
metadata: {name: acme}
spec:
  url: http://127.0.0.1:9000/in
  secretRef: {name: acme-signing}
  headers: {X-Tenant: acme}
  timeout: 10s
  retry: {schedule: [0s, 5s, 1m30s]}
---
apiVersion: v1
kind: Secret
metadata: {name: acme-signing}
stringData: {secret: SECRET_VALUE}
---
apiVersion: hookgate.io/v1alpha1
kind: Subscription
metadata: {name: orders}
spec:
  endpointRef: {name: acme}
  eventTypes: ["order.*"]
""".replace("SECRET_VALUE", SECRET)


def write(tmp_path: Path, name: str, text: str) -> Path:
    (tmp_path / name).write_text(text)
    return tmp_path


def test_a_valid_directory_compiles_into_routes_and_keys(tmp_path: Path) -> None:
    resources, problems = load_paths([write(tmp_path, "a.yaml", ENDPOINT)])
    assert problems == []
    compiled = compile_config(resources, select_gateway(resources, None))
    assert compiled.problems == ()
    ep = compiled.config.endpoints["default/acme"]
    assert (ep.timeout, ep.retry_schedule, dict(ep.headers)) == (10, (0, 5, 90),
                                                                 {"X-Tenant": "acme"})
    assert compiled.signing_keys["default/acme"] == (SECRET,)
    assert compiled.config.subscriptions[0].endpoint == "default/acme"


def test_a_mounted_configmap_is_read_once(tmp_path: Path) -> None:
    # What the kubelet makes of a ConfigMap volume: the files live in a hidden,
    # timestamped directory, and the visible names are links through ..data.
    data = tmp_path / "..2026_01_01_00_00_00.000000001"
    data.mkdir()
    (data / "config.yaml").write_text(ENDPOINT)
    (tmp_path / "..data").symlink_to(data.name)
    (tmp_path / "config.yaml").symlink_to("..data/config.yaml")
    resources, problems = load_paths([tmp_path])
    assert problems == []  # no "defined twice"
    compiled = compile_config(resources, select_gateway(resources, None))
    assert compiled.problems == ()
    assert list(compiled.config.endpoints) == ["default/acme"]


def test_missing_endpoint_names_file_object_field_and_fix(tmp_path: Path) -> None:
    text = ENDPOINT.replace("endpointRef: {name: acme}", "endpointRef: {name: acne}")
    resources, _ = load_paths([write(tmp_path, "a.yaml", text)])
    (problem,) = compile_config(resources, "default/default").problems
    assert problem.reason == "EndpointNotFound"
    assert problem.file == str(tmp_path / "a.yaml")
    assert problem.line == 20
    assert str(problem).endswith(
        "Subscription default/orders: spec.endpointRef.name: endpoint 'acne' does not exist "
        "in namespace 'default' (create the WebhookEndpoint or fix the name)")


def test_missing_secret_and_non_whsec_secret_are_reported(tmp_path: Path) -> None:
    resources, _ = load_paths([write(tmp_path, "a.yaml", ENDPOINT.replace(
        "secretRef: {name: acme-signing}", "secretRef: {name: nope}"))])
    (problem,) = compile_config(resources, "default/default").problems
    assert (problem.reason, problem.field) == ("SecretMissing", "spec.secretRef")
    resources, _ = load_paths([write(tmp_path, "a.yaml", ENDPOINT.replace(SECRET, "hunter2"))])
    (problem,) = compile_config(resources, "default/default").problems
    assert problem.reason == "SecretInvalid"


def test_endpoint_without_secret_ref_asks_for_a_generated_one(tmp_path: Path) -> None:
    text = ENDPOINT.replace("  secretRef: {name: acme-signing}\n", "")
    resources, _ = load_paths([write(tmp_path, "a.yaml", text)])
    assert endpoints_needing_secrets(resources, "default/default") == ["default/acme"]
    compiled = compile_config(resources, "default/default", {"default/acme": SECRET})
    assert compiled.signing_keys["default/acme"] == (SECRET,)


def test_yaml_syntax_errors_carry_the_line(tmp_path: Path) -> None:
    _, problems = load_paths([write(tmp_path, "bad.yaml", "kind: X\nspec: [unclosed\n")])
    (problem,) = problems
    assert problem.reason == "InvalidYAML" and problem.line is not None


def test_an_anchor_inside_its_own_value_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    text = "apiVersion: v1\nkind: Secret\nmetadata: {name: x}\nstringData: &r {b: *r}\n"
    _, problems = load_paths([write(tmp_path, "self.yaml", text)])
    (problem,) = problems
    assert problem.reason == "InvalidYAML" and "refers to itself" in problem.message


def test_duplicates_and_bad_durations_are_reported(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", ENDPOINT)
    _, problems = load_paths([write(tmp_path, "b.yaml", ENDPOINT)])
    assert {p.reason for p in problems} == {"Duplicate"}
    bad = ENDPOINT.replace("timeout: 10s", "timeout: ten")
    _, problems = load_paths([write(tmp_path / "..", "c.yaml", bad) / "c.yaml"])
    assert any(p.field == "spec.timeout" for p in problems)


def test_other_kinds_are_ignored(tmp_path: Path) -> None:
    text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n"
    assert load_paths([write(tmp_path, "d.yaml", text)]) == ([], [])


def test_durations_round_trip() -> None:
    for _ in range(2):  # parsed texts are remembered: the second round reads them back
        for text, seconds in [("500ms", 0.5), ("15s", 15), ("5m", 300), ("1h30m", 5400),
                              ("0s", 0)]:
            assert parse_duration(text) == seconds
            assert parse_duration(format_duration(seconds)) == seconds
        for bad in ("5 m", "", "5", 5):
            with pytest.raises(ValueError, match="is not a duration"):
                parse_duration(bad)  # type: ignore[arg-type]


def test_field_lines_map_every_path_and_share_one_index_per_shape(tmp_path: Path) -> None:
    from hookgate.model.manifests import read_documents

    text = ENDPOINT + "---\n" + ENDPOINT.replace("name: acme}", "name: acme2}", 1)
    docs, problems = read_documents(write(tmp_path, "a.yaml", text) / "a.yaml")
    assert problems == []
    first, second = docs[0].location.lines, docs[3].location.lines
    assert dict(first) == {
        "apiVersion": 1, "kind": 2, "metadata": 3, "metadata.name": 3, "spec": 4,
        "spec.url": 5, "spec.secretRef": 6, "spec.secretRef.name": 6, "spec.headers": 7,
        "spec.headers.X-Tenant": 7, "spec.timeout": 8, "spec.retry": 9,
        "spec.retry.schedule": 9, "spec.retry.schedule[0]": 9, "spec.retry.schedule[1]": 9,
        "spec.retry.schedule[2]": 9}
    assert second["spec.url"] == 27 and "spec.nope" not in second
    assert docs[3].location.line_of("spec.retry.schedule[2]") == 31
    assert first._index is second._index  # type: ignore[attr-defined]


def test_endpoints_with_equal_settings_share_one_object_of_each(tmp_path: Path) -> None:
    second = ENDPOINT.split("---\n")[0].replace("name: acme}", "name: acme2}", 1)
    resources, _ = load_paths([write(tmp_path, "a.yaml", ENDPOINT + "---\n" + second)])
    compiled = compile_config(resources, "default/default")
    one, two = (compiled.config.endpoints[k] for k in ("default/acme", "default/acme2"))
    assert one.retry_schedule == (0, 5, 90) and one.retry_schedule is two.retry_schedule
    assert one.circuit_breaker is two.circuit_breaker
    keys = compiled.signing_keys
    assert keys["default/acme"] == (SECRET,) and keys["default/acme"] is keys["default/acme2"]
    assert compiled.config.subscriptions[0].endpoint is one.key


def test_documents_read_as_pyyaml_reads_them_with_the_lines_of_their_fields(
        tmp_path: Path) -> None:
    # Plain manifests are built in one walk over the nodes; anchors, merge keys and other
    # tags are left to PyYAML's constructor. Both must give what yaml.safe_load gives.
    import yaml

    from hookgate.model.manifests import read_documents

    plain = ("a: {b: [1, 2.5, yes, ~, '3', 0x1f]}\n"
             "1: int key\n"
             "c:\n  - d: e\n")
    anchored = ("x: &x {b: 1}\n"
                "y: *x\n"
                "z: {<<: *x, c: 2}\n")
    tagged = "t: 2001-12-14\nbin: !!binary aGk=\ns: !!str 5\n"
    text = "---\n".join([plain, anchored, tagged])
    docs, problems = read_documents(write(tmp_path, "a.yaml", text) / "a.yaml")
    assert problems == []
    assert [d.doc for d in docs] == list(yaml.safe_load_all(text))
    assert dict(docs[0].location.lines) == {
        "a": 1, "a.b": 1, "a.b[0]": 1, "a.b[1]": 1, "a.b[2]": 1, "a.b[3]": 1, "a.b[4]": 1,
        "a.b[5]": 1, "1": 2, "c": 3, "c[0]": 4, "c[0].d": 4}
    assert docs[1].doc["x"] is docs[1].doc["y"]  # an alias stays one object
    assert docs[1].location.line_of("z.c") == 8
    assert docs[2].location.line_of("s") == 12
