"""Manifests as YAML text for tests of the compiler, and compiling them from a folder."""

from __future__ import annotations

from pathlib import Path

from hookgate.model.compiler import Compiled, compile_config
from hookgate.model.manifests import load_paths

__all__ = ["compile_text", "secret", "source"]


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
