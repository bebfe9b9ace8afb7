"""Fixtures for end-to-end tests on a real node: kubelet, containerd, runc and CNI
(hack/node), running the Hookgate image built from the Dockerfile (hack/image/build).

The `node` fixture joins a node to the session's local control plane (the `kube`
fixture) and builds and loads the image first, if its inputs changed. It is
package-scoped: the node runs for the tests in this directory only, so the other
e2e tests keep a control plane without a kubelet or scheduler. A node that already
runs for the same control plane (`make node-up`) is reused and left running.

There is one node per machine (its network namespace, cgroups and addresses are
fixed), so test sessions take turns: a second session waits for the first one's
node tests to end. Every test here carries the `node` marker.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.ci import unavailable

from ..kubeutil import Kube

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
NODE = ROOT / "hack" / "node"
IMAGE_BUILD = ROOT / "hack" / "image" / "build"
SESSION_LOCK = Path("/run/lock/hookgate-node.session.lock")
# A cold image build (debootstrap of the base, then the Dockerfile) takes minutes.
BUILD_TIMEOUT = 1800
UP_TIMEOUT = 600
WAIT_FOR_OTHER_SESSION = 1800


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.node)


@dataclass
class Node:
    """The node the tests run pods on."""

    name: str
    ip: str  # the node's InternalIP: where the API server reaches the kubelet
    host_ip: str  # the host's address on the node's link: pods reach host servers here
    image: str  # the Hookgate image, loaded into the node's containerd


def run(cmd: list[str], env: dict[str, str], timeout: float, what: str) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **env})
    except subprocess.TimeoutExpired:
        unavailable(f"{what} did not finish in {timeout:.0f}s")
    if proc.returncode != 0:
        unavailable(f"{what} failed:\n{proc.stderr[-4000:]}")
    return proc.stdout


def take_turn() -> int:
    """Hold the machine's node for this session, waiting for another session's turn."""
    SESSION_LOCK.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(SESSION_LOCK, os.O_CREAT | os.O_RDWR, 0o600)
    deadline = time.monotonic() + WAIT_FOR_OTHER_SESSION
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                unavailable("another test session used the node for "
                            f"{WAIT_FOR_OTHER_SESSION}s ({SESSION_LOCK})")
            time.sleep(1)


@pytest.fixture(scope="package")
def node(kube: Kube) -> Iterator[Node]:
    if kube.control_plane_env is None:
        unavailable("the node tests need Hookgate's local control plane (hack/control-plane), "
                    "not the cluster $KUBECONFIG names: unset KUBECONFIG")
    if os.geteuid() != 0:
        unavailable("the node tests need root (network namespace, cgroups, mounts)")
    env = kube.control_plane_env
    fd = take_turn()
    try:
        run(["bash", str(IMAGE_BUILD), "hookgate"], env, BUILD_TIMEOUT, "hack/image/build")
        image = run(["bash", str(IMAGE_BUILD), "--ref", "hookgate"], env, 30, "hack/image/build")
        reused = subprocess.run([str(NODE), "status"], capture_output=True,
                                env={**os.environ, **env}).returncode == 0
        if reused:
            # The node runs already: make sure it has the image just built.
            run(["bash", str(IMAGE_BUILD), "load"], env, 300, "hack/image/build load")
        else:
            run([str(NODE), "up"], env, UP_TIMEOUT, "hack/node up")
        try:
            yield Node("hookgate-node", "10.217.0.2", "10.217.0.1", image.strip())
        finally:
            if not reused:
                down = subprocess.run([str(NODE), "down"], capture_output=True, text=True,
                                      timeout=300, env={**os.environ, **env})
                assert down.returncode == 0, f"hack/node down failed:\n{down.stderr}"
    finally:
        os.close(fd)
