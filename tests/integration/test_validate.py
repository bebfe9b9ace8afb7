"""`hookgate validate` as a GitOps CI step runs it: the shared table of bad objects, semantic
problems across files, JSON output and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.invalid_objects import INVALID_OBJECTS

ROOT = Path(__file__).resolve().parents[2]


def validate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hookgate", "validate", *args],
                          capture_output=True, text=True, timeout=60)


def test_the_examples_are_valid() -> None:
    out = validate(str(ROOT / "examples"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "all manifests are valid" in out.stdout


def test_every_invalid_object_is_reported_with_file_line_object_and_field(
        tmp_path: Path) -> None:
    # One file holding the whole table, as a repository of manifests would.
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump_all([manifest for _, manifest, _, _ in INVALID_OBJECTS]))
    out = validate(str(path), "--output", "json")
    assert out.returncode == 1
    problems = json.loads(out.stdout)["problems"]
    for case, manifest, field, fragment in INVALID_OBJECTS:
        name = manifest["metadata"]["name"]
        found = [p for p in problems if p.get("name") == name]
        assert any(p.get("field") == field and fragment in p["message"] for p in found), \
            f"{case}: expected {field}: ...{fragment}... among {found}"
        assert all(p["file"] == str(path) and p.get("line") for p in found), case


def test_semantic_problems_across_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "apiVersion: hookgate.io/v1alpha1\nkind: Subscription\nmetadata: {name: s}\n"
        "spec: {endpointRef: {name: ghost}, eventTypes: ['*']}\n")
    (tmp_path / "b.yaml").write_text(
        "apiVersion: hookgate.io/v1alpha1\nkind: WebhookEndpoint\nmetadata: {name: e}\n"
        "spec: {url: 'https://e.example/', secretRef: {name: nope}}\n")
    out = validate(str(tmp_path))
    assert out.returncode == 1
    assert "a.yaml:4: Subscription default/s: spec.endpointRef.name: endpoint 'ghost' " \
           "does not exist" in out.stdout
    assert "b.yaml:4: WebhookEndpoint default/e: spec.secretRef: Secret 'nope' does not exist" \
        in out.stdout
    assert "2 problem(s)" in out.stderr


@pytest.mark.parametrize("text", ["kind: [", "- just\n- a list\n"])
def test_unreadable_yaml_is_a_problem_not_a_crash(tmp_path: Path, text: str) -> None:
    (tmp_path / "x.yaml").write_text(text)
    out = validate(str(tmp_path))
    assert out.returncode == 1 and "x.yaml:" in out.stdout and "Traceback" not in out.stderr


def test_a_source_with_a_missing_secret_is_reported(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(
        "apiVersion: hookgate.io/v1alpha1\nkind: WebhookSource\nmetadata: {name: gh}\n"
        "spec: {verify: {scheme: github, secretRef: {name: nope}}}\n")
    out = validate(str(tmp_path))
    assert out.returncode == 1 and "WebhookSource default/gh" in out.stdout, out.stdout
