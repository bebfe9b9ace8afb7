"""Manifests as YAML text: for a gateway the tests run (``endpoint_yaml``, ...) and for tests
of the compiler (``compile_text``, namespace ``shop``)."""

from __future__ import annotations

import json
from pathlib import Path

from hookgate.model.compiler import Compiled, compile_config
from hookgate.model.manifests import load_paths

__all__ = ["SECRET", "compile_text", "endpoint_yaml", "queue_gateway_yaml", "secret", "source",
           "subscription_yaml"]

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def endpoint_yaml(name: str, url: str, *, schedule: str = "[0s, 100ms, 100ms]",
                  timeout: str = "5s", extra: str = "", secret: bool = True) -> str:
    ref = f"  secretRef: {{name: {name}-signing}}\n" if secret else ""
    doc = (f"apiVersion: hookgate.io/v1alpha1\nkind: WebhookEndpoint\nmetadata: {{name: {name}}}\n"
           f"spec:\n  url: {url}\n{ref}  timeout: {timeout}\n  retry: {{schedule: {schedule}}}\n"
           f"{extra}---\n")
    if secret:
        doc += (f"apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}-signing}}\n"
                f"stringData: {{secret: {SECRET}}}\n---\n")
    return doc


def queue_gateway_yaml(url: str, *, partitions: int = 1, min_replica_acks: int = 0) -> str:
    """The gateway ``default`` with its Redis queue settings (``hookgate run --queue`` gives
    the URL; the manifest gives partitions and replica acknowledgements)."""
    return ("apiVersion: hookgate.io/v1alpha1\nkind: WebhookGateway\nmetadata: {name: default}\n"
            f"spec:\n  queue:\n    partitions: {partitions}\n"
            f"    redis: {{url: {json.dumps(url)}, minReplicaAcks: {min_replica_acks}}}\n---\n")


def subscription_yaml(name: str, endpoint: str, types: str) -> str:
    return (f"apiVersion: hookgate.io/v1alpha1\nkind: Subscription\nmetadata: {{name: {name}}}\n"
            f"spec:\n  endpointRef: {{name: {endpoint}}}\n  eventTypes: {types}\n---\n")


def compile_text(tmp_path: Path, text: str, gateway: str = "shop/default") -> Compiled:
    """Write ``text`` to a file in ``tmp_path``, load it (it must be valid) and compile it."""
    (tmp_path / "m.yaml").write_text(text)
    resources, problems = load_paths([tmp_path])
    assert problems == []
    return compile_config(resources, gateway)


def source(name: str, spec: str) -> str:
    return (f"apiVersion: hookgate.io/v1alpha1\nkind: WebhookSource\n"
            f"metadata: {{name: {name}, namespace: shop}}\nspec:\n{spec}---\n")


def secret(name: str, data: str) -> str:
    return (f"apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: shop}}\n"
            f"stringData: {data}\n---\n")
