"""Where a deliverer finds the API server and its credentials (pure parts)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from hookgate.deliverer.config.apiserver import Credentials, from_kubeconfig, in_cluster


def kubeconfig(user: dict[str, Any], cluster: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Config", "current-context": "c",
            "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
            "clusters": [{"name": "k", "cluster": cluster or {
                "server": "https://127.0.0.1:6443/",
                "certificate-authority-data": base64.b64encode(b"PEM").decode()}}],
            "users": [{"name": "u", "user": user}]}


def test_a_token_kubeconfig_gives_server_ca_and_token() -> None:
    creds = from_kubeconfig(kubeconfig({"token": "t0k"}), Path("/k"))
    assert creds == Credentials(server="https://127.0.0.1:6443", ca_data="PEM", token="t0k")


def test_files_in_a_kubeconfig_are_relative_to_it() -> None:
    doc = kubeconfig({"client-certificate": "admin.crt", "client-key": "admin.key"},
                     {"server": "https://h:1", "certificate-authority": "ca.crt"})
    creds = from_kubeconfig(doc, Path("/etc/k"))
    assert (creds.ca_file, creds.cert_file, creds.key_file) == (
        "/etc/k/ca.crt", "/etc/k/admin.crt", "/etc/k/admin.key")


def test_credential_plugins_are_refused_with_what_to_use_instead() -> None:
    with pytest.raises(ValueError, match=r"'exec'.*kubectl create token"):
        from_kubeconfig(kubeconfig({"exec": {"command": "aws"}}), Path("/"))
    with pytest.raises(ValueError, match="no current-context"):
        from_kubeconfig({"contexts": []}, Path("/"))
    with pytest.raises(ValueError, match="no cluster named 'k'"):
        from_kubeconfig({**kubeconfig({}), "clusters": []}, Path("/"))


def test_in_a_pod_the_service_account_is_used(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("sa-token")
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    creds = in_cluster(env, tmp_path)
    assert creds == Credentials(server="https://10.96.0.1:443", ca_file=str(tmp_path / "ca.crt"),
                                token_file=str(tmp_path / "token"))
    assert in_cluster({}, tmp_path) is None
    assert in_cluster({**env, "KUBERNETES_SERVICE_HOST": "fd00::1"}, tmp_path).server == \
        "https://[fd00::1]:443"  # type: ignore[union-attr]
