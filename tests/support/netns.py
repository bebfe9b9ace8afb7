"""Part of a test run in a network namespace of its own, where the test owns DNS.

:func:`run_in_netns` runs ``module:function`` in a child process started with
``unshare --net --mount --pid --fork --kill-child``: a new network namespace (only ``lo``,
brought up here, plus the loopback addresses asked for), a private mount namespace in which
test files are bind-mounted over ``/etc/resolv.conf`` (``nameserver 127.0.0.1``),
``/etc/hosts`` (localhost only) and ``/etc/nsswitch.conf`` (``hosts: files dns``), and a new
PID namespace. So the system resolver — glibc's ``getaddrinfo``, which the product uses —
asks a DNS server the test runs on ``127.0.0.1:53`` inside the namespace
(:class:`tests.support.dns.TestDNS`), exactly as it would ask a real one.

Nothing reaches the host: the mounts are private to the namespace (``--propagation
private``), the child checks that it is in namespaces other than its parent's before it
changes anything, and everything dies with the child: it is PID 1 of its PID namespace, so
the kernel kills whatever it started when it exits, and ``--kill-child`` kills it when
``unshare`` is killed (which :func:`run_in_netns` does on its timeout). The network and
mount namespaces go away with their last process.

The function gets a working directory and returns something JSON can write; the test
asserts on that in its own process. Needs root, ``unshare`` (util-linux), ``ip``
(iproute2) and ``mount``; without them the test is skipped (a failure in CI).
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.support.ci import unavailable

__all__ = ["NAMESERVER", "netns_unavailable", "run_in_netns"]

NAMESERVER = "127.0.0.1"  # where resolv.conf inside the namespace sends queries (port 53)
_REPO = Path(__file__).resolve().parents[2]
_UNSHARE = ["unshare", "--net", "--mount", "--propagation", "private", "--pid", "--fork",
            "--kill-child", "--mount-proc"]
_SPEC, _RESULT = "netns-spec.json", "netns-result.json"


@functools.cache
def netns_unavailable() -> str | None:
    """Why a namespace cannot be made here, or None when it can."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "a network namespace of the test's own needs root (unshare --net --mount)"
    missing = [tool for tool in ("unshare", "ip", "mount") if shutil.which(tool) is None]
    if missing:
        return (f"{', '.join(missing)} not found: apt-get install util-linux iproute2 mount "
                "(a network namespace of the test's own)")
    trial = subprocess.run([*_UNSHARE, "ip", "link", "set", "lo", "up"], capture_output=True,
                           text=True, timeout=30)
    if trial.returncode != 0:
        return f"unshare --net --mount --pid failed here: {trial.stderr.strip()}"
    return None


def _namespace(kind: str) -> str:
    return os.readlink(f"/proc/self/ns/{kind}")


def run_in_netns(target: str, work: Path, *, addresses: Sequence[str] = (),
                 timeout: float = 60.0) -> Any:
    """Run ``target`` (``"package.module:function"``, a function or coroutine function of a
    :class:`Path`) in a new network namespace where ``addresses`` (IPv4) are on ``lo`` and
    DNS goes to ``127.0.0.1:53``; return what it returned. Skips (fails in CI) when a
    namespace cannot be made here; fails with the child's output if the child fails."""
    reason = netns_unavailable()
    if reason is not None:
        unavailable(reason)
    work.mkdir(parents=True, exist_ok=True)
    (work / _RESULT).unlink(missing_ok=True)
    (work / _SPEC).write_text(json.dumps({
        "target": target, "addresses": list(addresses),
        "parent": {kind: _namespace(kind) for kind in ("net", "mnt")}}))
    command = [*_UNSHARE, sys.executable, "-m", "tests.support.netns", str(work)]
    try:  # on timeout, subprocess.run kills unshare, and --kill-child everything below it
        done = subprocess.run(command, cwd=_REPO, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{target} in its namespace did not finish within {timeout:g}s:\n"
                             f"{_text(exc.stdout)}{_text(exc.stderr)}") from None
    if done.returncode != 0:
        raise AssertionError(f"{target} in its namespace exited with {done.returncode}:\n"
                             f"{done.stdout[-4000:]}{done.stderr[-6000:]}")
    return json.loads((work / _RESULT).read_text())


def _text(output: bytes | str | None) -> str:
    if isinstance(output, bytes):
        return output.decode(errors="replace")[-4000:]
    return (output or "")[-4000:]


# -- inside the namespace -------------------------------------------------------------------


def _nsswitch() -> str:
    """The machine's nsswitch.conf with ``hosts: files dns``: no mDNS, no systemd-resolved
    (which would ask the host's resolver over a socket), the other databases unchanged."""
    try:
        lines = Path("/etc/nsswitch.conf").read_text().splitlines()
    except FileNotFoundError:
        lines = []
    kept = [line for line in lines if not line.strip().startswith("hosts:")]
    return "\n".join([*kept, "hosts: files dns", ""])


def _enter(work: Path, spec: dict[str, Any]) -> None:
    for kind, parent in spec["parent"].items():
        if _namespace(kind) == parent:
            raise SystemExit(f"still in the parent's {kind} namespace: nothing is changed")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    for address in spec["addresses"]:
        subprocess.run(["ip", "addr", "add", f"{address}/32", "dev", "lo"], check=True)
    etc = work / "etc"
    etc.mkdir(exist_ok=True)
    files = {"resolv.conf": f"nameserver {NAMESERVER}\noptions timeout:2 attempts:2\n",
             "hosts": "127.0.0.1 localhost\n::1 localhost\n",
             "nsswitch.conf": _nsswitch()}
    for name, text in files.items():
        (etc / name).write_text(text)
        target = Path("/etc") / name
        # The file system is the host's: a missing file is not created (glibc's defaults
        # without these files are nameserver 127.0.0.1 and hosts: dns files anyway).
        if target.exists():
            subprocess.run(["mount", "--bind", str(etc / name), str(target)], check=True)


def _main(work: Path) -> None:
    spec = json.loads((work / _SPEC).read_text())
    _enter(work, spec)
    module, _, name = spec["target"].partition(":")
    function = getattr(importlib.import_module(module), name)
    result = asyncio.run(function(work)) if inspect.iscoroutinefunction(function) \
        else function(work)
    (work / _RESULT).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    _main(Path(sys.argv[1]))
