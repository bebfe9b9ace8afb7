"""Fixtures for end-to-end tests against a real Kubernetes API server.

The session-scoped `kube` fixture uses the cluster that $KUBECONFIG points at
(kind, k3d, any cluster) when it is set. Otherwise it starts Hookgate's local
control plane (etcd, kube-apiserver, kube-controller-manager; see
hack/control-plane), building the binaries first if needed, and stops it at
the end of the session. A control plane that was already running (say, from
`make cluster-up`) is reused and left running.

When no cluster can be had, the tests are skipped with the reason, except in
CI (CI=true), where that is a failure: a green CI must mean the tests ran.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.ci import unavailable
from tests.support.ports import unused_ports
from tests.support.waiting import wait_for_blocking

from .kubeutil import Kube, unique_name

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CONTROL_PLANE = ROOT / "hack" / "control-plane"
# Cold builds of Kubernetes take tens of minutes; a cached start, seconds.
UP_TIMEOUT = float(os.environ.get("HOOKGATE_E2E_UP_TIMEOUT", "3600"))
TEST_TIMEOUT = 180


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Every test here needs a cluster; the marker lets `-m "not cluster"` skip them.
    bounded = config.pluginmanager.hasplugin("timeout")
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.cluster)
            if bounded and item.get_closest_marker("timeout") is None:
                # func_only: the session fixture may build Kubernetes first
                # (tens of minutes, bounded by UP_TIMEOUT), which must not
                # count against the first test's own time limit.
                item.add_marker(pytest.mark.timeout(TEST_TIMEOUT, func_only=True))


def built_bin_dir() -> Path | None:
    """The cached binaries from hack/k8s/build, without building anything."""
    proc = subprocess.run(
        ["bash", str(ROOT / "hack" / "k8s" / "build"), "--print"], capture_output=True, text=True
    )
    return Path(proc.stdout.strip()) if proc.returncode == 0 else None


def control_plane(
    command: str, timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CONTROL_PLANE), command],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def private_control_plane_env(state_dir: Path) -> dict[str, str]:
    """Settings for a control plane of this test session alone: its own state
    directory and ports, so that parallel sessions (or a `make cluster-up`
    that someone stops meanwhile) cannot disturb it."""
    api, etcd, peer, kcm = unused_ports(4)  # on the command lines
    return {
        "HOOKGATE_CP_DIR": str(state_dir),
        "HOOKGATE_APISERVER_PORT": str(api),
        "HOOKGATE_ETCD_PORT": str(etcd),
        "HOOKGATE_ETCD_PEER_PORT": str(peer),
        "HOOKGATE_KCM_PORT": str(kcm),
    }


def local_control_plane(
    state_dir: Path,
) -> tuple[Path, dict[str, str], dict[str, str] | None]:
    """Reuse the default local control plane if it runs, else start a private
    one. Returns its kubeconfig, the environment that names it for
    hack/control-plane (and hack/node) and, if this session started it, the
    environment to stop it with."""
    env: dict[str, str]
    if control_plane("status", 30).returncode == 0:
        env, started = {}, None
    else:
        env = started = private_control_plane_env(state_dir)
        try:
            up = control_plane("up", UP_TIMEOUT, env)
        except subprocess.TimeoutExpired:
            unavailable(f"hack/control-plane up did not finish in {UP_TIMEOUT:.0f}s")
        if up.returncode != 0:
            unavailable("hack/control-plane up failed:\n" + up.stderr[-4000:])
    out = control_plane("env", 30, env).stdout
    for line in out.splitlines():
        if line.startswith("export KUBECONFIG="):
            return Path(line.split("=", 1)[1]), env, started
    unavailable(f"hack/control-plane env printed no KUBECONFIG: {out!r}")
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kube]:
    try:
        from kubernetes import client, config
    except ImportError:
        unavailable("the `kubernetes` Python package is not installed (pip install kubernetes)")

    started: dict[str, str] | None = None
    cp_env: dict[str, str] | None = None
    user_kubeconfig = os.environ.get("KUBECONFIG")
    if user_kubeconfig:
        # Only the first file of a KUBECONFIG list is used.
        kubeconfig = Path(user_kubeconfig.split(os.pathsep)[0])
        if not kubeconfig.is_file():
            unavailable(f"KUBECONFIG={user_kubeconfig} is not a file")
    else:
        # pytest keeps the last few temp dirs, so logs of a failed start stay readable.
        kubeconfig, cp_env, started = local_control_plane(
            tmp_path_factory.mktemp("control-plane")
        )

    def stop() -> None:
        if started is not None:
            down = control_plane("down", 120, started)
            if down.returncode != 0:
                print(f"hack/control-plane down failed:\n{down.stderr}")

    bin_dir = built_bin_dir()
    kubectl = str(bin_dir / "kubectl") if bin_dir else shutil.which("kubectl")
    api_client = config.new_client_from_config(config_file=str(kubeconfig))
    try:
        # Cheap proof that the API answers and our credentials work.
        wait_for_blocking(
            lambda: client.VersionApi(api_client).get_code(),
            timeout=30,
            what=f"the API server of {kubeconfig}",
            ignoring=(Exception,),
        )
    except AssertionError as exc:
        api_client.close()
        stop()
        unavailable(str(exc))
    try:
        yield Kube(kubeconfig, api_client, bin_dir, started is not None, kubectl, cp_env)
    finally:
        api_client.close()
        stop()


@pytest.fixture
def namespace(kube: Kube) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards (not awaited)."""
    from kubernetes import client

    core = client.CoreV1Api(kube.api_client)
    name = unique_name("hg-e2e")
    core.create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(name=name, labels={"hookgate.io/e2e": "true"})
        )
    )
    try:
        yield name
    finally:
        core.delete_namespace(name)
