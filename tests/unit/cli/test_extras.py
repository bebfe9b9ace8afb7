"""A command whose optional extra is missing says which extra to install, and exits 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hookgate.extras import MissingExtra, require_extra


def run_without(modules: list[str], *argv: str) -> subprocess.CompletedProcess[str]:
    """``hookgate ARGV`` in a fresh interpreter where ``modules`` cannot be imported."""
    code = ("import sys\n"
            f"for m in {modules!r}: sys.modules[m] = None  # import raises ImportError\n"
            "from hookgate.cli import main\n"
            f"sys.exit(main({list(argv)!r}))\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.mark.parametrize(("missing", "argv"), [
    (["kopf"], ["operator"]),
    (["kubernetes"], ["operator"]),
])
def test_a_missing_extra_names_the_pip_command(missing: list[str], argv: list[str]) -> None:
    done = run_without(missing, *argv)
    assert done.returncode == 2, done.stderr
    assert "pip install 'hookgate[operator]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_deliverer_needs_no_kubernetes_client(tmp_path: Path) -> None:
    # It reads the API over aiohttp: without the operator extra it gets as far as its
    # credentials (none here), and says what to pass.
    done = run_without(["kubernetes", "kopf"], "deliverer", "--gateway", "shop/default",
                       "--queue", "redis://x", "--kubeconfig", str(tmp_path / "none"))
    assert done.returncode == 2, done.stderr
    assert "cannot read the kubeconfig" in done.stderr and "pip install" not in done.stderr
    assert "Traceback" not in done.stderr


def test_require_extra_passes_when_the_modules_import() -> None:
    require_extra("operator", "json", what="the standard library")
    with pytest.raises(MissingExtra, match=r"pip install 'hookgate\[nope\]'"):
        require_extra("nope", "hookgate_no_such_module", what="a module that does not exist")
