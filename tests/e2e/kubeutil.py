"""Small helpers for Hookgate's end-to-end tests against a Kubernetes API."""

from __future__ import annotations

import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.ci import unavailable


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
    # hack/control-plane's environment for this cluster (state dir, ports) when
    # it is Hookgate's local control plane; None for a cluster from $KUBECONFIG.
    control_plane_env: dict[str, str] | None = None

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
