"""Small helpers for Hookgate's end-to-end tests against a Kubernetes API."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str) -> None:
    """Skip locally, fail in CI."""
    if in_ci():
        pytest.fail(f"cannot run the e2e tests (CI=true): {reason}", pytrace=False)
    pytest.skip(f"cannot run the e2e tests: {reason}")


class WaitTimeout(AssertionError):
    """A polled condition did not hold in time (fails the test, not errors it)."""


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 30.0,
    interval: float = 0.25,
    what: str | None = None,
    ignoring: tuple[type[BaseException], ...] = (),
) -> T:
    """Poll `predicate` until it returns something truthy, and return that.

    Exceptions listed in `ignoring` (say, a 404 while an object is still being
    created) count as "not yet". On timeout the test fails with what was
    awaited and the last value or error seen, so a red run says why.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            result = predicate()
        except ignoring as exc:
            last = exc
        else:
            if result:
                return result
            last = result
        if time.monotonic() >= deadline:
            name = what or getattr(predicate, "__name__", repr(predicate))
            raise WaitTimeout(
                f"timed out after {timeout:g}s waiting for {name}; last seen: {last!r}"
            )
        time.sleep(interval)


def unique_name(prefix: str) -> str:
    """A DNS-label-safe name that no other test run uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass
class Kube:
    """A reachable Kubernetes API and the tools to talk to it."""

    kubeconfig: Path
    api_client: Any  # kubernetes.client.ApiClient
    bin_dir: Path | None  # our built binaries, when there are any
    started_here: bool = False
    kubectl_path: str | None = field(default=None, repr=False)

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster; raises on a non-zero exit if `check`."""
        if not self.kubectl_path:
            unavailable("kubectl not found (run hack/k8s/build or put kubectl on PATH)")
        proc = subprocess.run(
            [self.kubectl_path, f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
            )
        return proc
