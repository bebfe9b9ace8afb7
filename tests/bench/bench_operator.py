"""The operator on the real control plane with many endpoints: start-up, change latency,
idle requests and memory.

    python tests/bench/bench_operator.py [--sizes 1000,10000] [--with-30k] [--changes 20]
                                         [--idle 30] [--out-json F] [--plot F.png]

Starts a private control plane (``hack/control-plane up`` with its own state directory and
ports, stopped and removed at the end, also on failure or Ctrl-C), whose kube-apiserver
writes an audit log of the benchmark's operator and deliverers only (an audit policy at
level Metadata for their users, stage ``RequestReceived`` only: one audit event per request
as it arrives, a watch counted when it is opened). A ``redis-server`` on loopback is the
queue. The operator authenticates as its own ServiceAccount (``hookgate-bench/
hookgate-operator``, bound to ``cluster-admin``: the benchmark counts requests, it does not
test RBAC) with a token kubeconfig; each deliverer as the gateway's deliverer ServiceAccount,
as in a pod.

Per size N, in a fresh namespace, before the operator starts: one signing Secret, the
gateway ``default`` (Redis queue, loopback allowed), N WebhookEndpoints sharing the Secret
by ``secretRef`` and N Subscriptions (one per endpoint, its own event type, every other one
with a CEL ``filter``), created with parallel requests (the ``kubernetes`` client, a few
threads). Then:

* ready: from ``hookgate operator`` spawned until the gateway shows ``Ready=True`` with
  ``status.endpoints == N`` (polled every 0.25 s as the admin, who is not audited), and the
  operator's requests until then;
* deliverer: ``hookgate deliverer`` from spawn until ``GET /readyz`` answers 200, its CPU
  seconds and RSS then; the first config load is not logged apart, so a second deliverer
  is spawned under ``python -X importtime`` and its imports are told apart from the rest
  (config read and compile, connecting to Redis);
* changes: 20 times, ``kubectl apply`` of one Subscription with one more event type
  (``bench.change<k>``); from the start of ``kubectl apply`` (and from its exit, the change
  stored) until the running deliverer routes an event of that type
  (``POST /v1/events`` answers ``202`` with ``deliveries: 1``, tried every 20 ms);
* idle: after the changes and a few seconds of quiet, audit events of the operator per
  second over ``--idle`` seconds (all verbs, watches included), by verb and resource; the
  deliverer's as well; the operator's CPU seconds meanwhile;
* memory: the operator's VmRSS once Ready and after idle, and its VmHWM (peak).

Prints a Markdown table and the targets of issue #16; ``--out-json`` keeps every figure;
``--plot`` draws cost against N (matplotlib). Every wait is bounded; a gateway that is not
Ready in time is reported with its condition, and the deliverer and change figures of that
size are skipped (its requests and memory are still measured). ``--tree DIR`` runs the
operator and deliverer of another source tree; ``--compare LABEL=JSON`` (repeated) only
tabulates and plots earlier runs side by side.

Not a test; never collected by pytest (files are named bench_*.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.ports import unused_port  # noqa: E402
from tests.support.process import terminate  # noqa: E402

CONTROL_PLANE = ROOT / "hack" / "control-plane"
GROUP, VERSION = "hookgate.io", "v1alpha1"
OPERATOR_NS = "hookgate-bench"
OPERATOR_SA = "hookgate-operator"
OPERATOR_USER = f"system:serviceaccount:{OPERATOR_NS}:{OPERATOR_SA}"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
# The source tree whose operator and deliverer are measured (--tree); its crds/ are applied.
TREE = ROOT


def tree_env(**extra: str) -> dict[str, str]:
    """The environment of a child that must import ``hookgate`` from ``TREE``."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": str(TREE) + (os.pathsep + path if path else ""),
            **extra}
# Targets of issue #16, at 30,000 endpoints + 30,000 subscriptions.
TARGETS = {"ready_s": 60.0, "change_p99_s": 2.0, "idle_rps": 1.0, "rss_mb": 500.0}


def log(msg: str) -> None:
    print(f"[bench-operator {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in bytes."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (p99 of 20 samples is the largest)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


# --- the control plane, Redis, identities -------------------------------------------------


class Cluster:
    """A private control plane with an audit log of the benchmark's own users."""

    def __init__(self, work: Path, namespaces: list[str]) -> None:
        self.work = work
        self.audit_log = work / "audit.log"
        policy = work / "audit-policy.yaml"
        users = [OPERATOR_USER] + [
            f"system:serviceaccount:{ns}:hookgate-default-deliverer" for ns in namespaces]
        policy.write_text(yaml.safe_dump({
            "apiVersion": "audit.k8s.io/v1", "kind": "Policy",
            "omitStages": ["ResponseStarted", "ResponseComplete", "Panic"],
            "rules": [{"level": "Metadata", "users": users}, {"level": "None"}]}))
        api, etcd, peer, kcm = (unused_port() for _ in range(4))
        self.env = {
            "HOOKGATE_CP_DIR": str(work / "control-plane"),
            "HOOKGATE_APISERVER_PORT": str(api), "HOOKGATE_ETCD_PORT": str(etcd),
            "HOOKGATE_ETCD_PEER_PORT": str(peer), "HOOKGATE_KCM_PORT": str(kcm),
            "HOOKGATE_APISERVER_EXTRA_ARGS": (
                f"--audit-policy-file={policy} --audit-log-path={self.audit_log} "
                "--audit-log-maxsize=0 --audit-log-mode=blocking"),
        }
        self.kubeconfig = work / "control-plane" / "kubeconfig"
        self.kubectl_bin = "kubectl"
        self.started = False

    def run(self, command: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(CONTROL_PLANE), command], capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, **self.env})

    def up(self) -> None:
        self.started = True
        proc = self.run("up", 900)
        if proc.returncode != 0:
            raise RuntimeError("hack/control-plane up failed:\n" + proc.stderr[-4000:])
        for line in proc.stdout.splitlines():
            if line.startswith("export PATH="):
                self.kubectl_bin = str(Path(line.split("=", 1)[1].split(":")[0]) / "kubectl")

    def down(self) -> None:
        if self.started:
            proc = self.run("down", 180)
            if proc.returncode != 0:
                log("hack/control-plane down failed:\n" + proc.stderr[-2000:])

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 120
                ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([self.kubectl_bin, f"--kubeconfig={self.kubeconfig}", *args],
                              input=input, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {proc.stdout}{proc.stderr}")
        return proc

    def token_kubeconfig(self, namespace: str, account: str, path: Path) -> Path:
        token = self.kubectl("create", "token", "-n", namespace, account,
                             "--duration=3h").stdout.strip()
        admin = yaml.safe_load(self.kubeconfig.read_text())
        cluster = admin["clusters"][0]
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "clusters": [cluster],
            "users": [{"name": account, "user": {"token": token}}],
            "contexts": [{"name": account, "context": {
                "cluster": cluster["name"], "user": account, "namespace": namespace}}],
            "current-context": account}))
        return path

    def audit_events(self, since: float, until: float) -> list[dict[str, Any]]:
        """Audit events (one per request) received in [since, until), epoch seconds."""
        out = []
        with self.audit_log.open() as f:
            for line in f:
                with contextlib.suppress(ValueError, KeyError):
                    doc = json.loads(line)
                    at = datetime.fromisoformat(doc["requestReceivedTimestamp"]).timestamp()
                    if since <= at < until:
                        out.append(doc)
        return out


class Redis:
    def __init__(self, work: Path) -> None:
        self.port = unused_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(work)],
            stdout=(work / "redis.log").open("wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start: "
                                   + (work / "redis.log").read_text()[-2000:])
            time.sleep(0.1)

    def stop(self) -> None:
        terminate(self.proc)


# --- objects --------------------------------------------------------------------------------


def endpoint(i: int) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "WebhookEndpoint",
            "metadata": {"name": f"ep{i}"},
            "spec": {"url": f"http://127.0.0.1:9/in{i}", "secretRef": {"name": "signing"}}}


def subscription(i: int, extra_types: tuple[str, ...] = ()) -> dict[str, Any]:
    spec: dict[str, Any] = {"endpointRef": {"name": f"ep{i}"},
                            "eventTypes": ["order.*", f"tenant{i}.created", *extra_types]}
    if i % 2:
        spec["filter"] = f"data.amount > {i}"
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Subscription",
            "metadata": {"name": f"sub{i}"}, "spec": spec}


def populate(api_client: Any, namespace: str, n: int, redis_url: str, threads: int
             ) -> dict[str, float]:
    """The namespace, its Secret, gateway, N endpoints and N subscriptions."""
    from kubernetes import client

    core = client.CoreV1Api(api_client)
    custom = client.CustomObjectsApi(api_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    core.create_namespaced_secret(namespace, client.V1Secret(
        metadata=client.V1ObjectMeta(name="signing"), string_data={"secret": SECRET}))
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "webhookgateways", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "WebhookGateway",
        "metadata": {"name": "default"},
        "spec": {"queue": {"redis": {"url": redis_url}},
                 "network": {"allowCIDRs": ["127.0.0.0/8"]}}})

    def create(item: tuple[str, dict[str, Any]]) -> None:
        plural, body = item
        for attempt in range(5):
            try:
                custom.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body)
                return
            except client.exceptions.ApiException as exc:
                if exc.status == 409:
                    return
                if exc.status not in (429, 500, 503, 504) or attempt == 4:
                    raise
                time.sleep(0.5 * (attempt + 1))

    items = [("webhookendpoints", endpoint(i)) for i in range(n)]
    items += [("subscriptions", subscription(i)) for i in range(n)]
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(create, items, chunksize=64):
            pass
    took = time.perf_counter() - start
    return {"create_s": took, "create_per_s": len(items) / took}


def ready_condition(obj: dict[str, Any]) -> dict[str, Any]:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return dict(c)
    return {}


# --- one size --------------------------------------------------------------------------------


def http_json(method: str, url: str, body: dict[str, Any] | None = None, timeout: float = 5
              ) -> tuple[int, dict[str, Any]]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status), json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, {}
    except (OSError, ValueError):
        return 0, {}


def log_time(line: str) -> float | None:
    with contextlib.suppress(ValueError, KeyError, TypeError):
        return datetime.fromisoformat(json.loads(line)["time"]).timestamp()
    return None


def measure_size(cluster: Cluster, redis: Redis, api_client: Any, n: int, args: argparse.Namespace,
                 operator_kubeconfig: Path) -> dict[str, Any]:
    from kubernetes import client

    namespace = f"bench-n{n}"
    work = cluster.work / namespace
    work.mkdir()
    result: dict[str, Any] = {"endpoints": n, "subscriptions": n,
                              "load_before": os.getloadavg()}
    log(f"N={n:,}: creating {n:,} endpoints + {n:,} subscriptions in {namespace}")
    result.update(populate(api_client, namespace, n, redis.url, args.threads))
    log(f"N={n:,}: created {2 * n:,} objects in {result['create_s']:.1f} s "
        f"({result['create_per_s']:.0f}/s)")
    custom = client.CustomObjectsApi(api_client)

    def gateway() -> dict[str, Any]:
        obj: Any = custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "webhookgateways", "default")
        return dict(obj)

    op_log = work / "operator.log"
    started_wall = time.time()
    started = time.perf_counter()
    operator = subprocess.Popen(
        [sys.executable, "-m", "hookgate", "operator", "--namespace", namespace,
         "--kubeconfig", str(operator_kubeconfig), "--liveness", f"127.0.0.1:{unused_port()}",
         "--log-format", "json"],
        # KUBECONFIG as well: kopf's own login reads the client's default location, fixed
        # when `kubernetes` is imported, before --kubeconfig is put in the environment.
        cwd=TREE, env=tree_env(KUBECONFIG=str(operator_kubeconfig)),
        stdout=op_log.open("wb"), stderr=subprocess.STDOUT)
    deliverer: subprocess.Popen[bytes] | None = None
    try:
        deadline = started + args.ready_timeout
        last: dict[str, Any] = {"condition": {}, "endpoints": None}
        failing_since: float | None = None  # the same Ready=False for that long: given up
        while True:
            if operator.poll() is not None:
                raise RuntimeError("the operator exited:\n" + op_log.read_text()[-3000:])
            with contextlib.suppress(client.exceptions.ApiException):
                gw = gateway()
                now: dict[str, Any] = {"condition": ready_condition(gw),
                                       "endpoints": (gw.get("status") or {}).get("endpoints")}
                if now["condition"].get("status") == "True" and now["endpoints"] == n:
                    last = now
                    break
                failing = now["condition"].get("status") == "False"
                if not failing or now["condition"] != last["condition"]:
                    failing_since = time.perf_counter() if failing else None
                last = now
            if time.perf_counter() > deadline or (
                    failing_since is not None
                    and time.perf_counter() - failing_since > args.give_up_after):
                break
            time.sleep(0.25)
        ready_at = time.time()
        result["ready_wait_s"] = time.perf_counter() - started
        result["ready"] = last["condition"].get("status") == "True" and last["endpoints"] == n
        result["ready_condition"] = last
        result["operator_status_at_ready"] = proc_status(operator.pid)
        result["operator_cpu_at_ready_s"] = cpu_seconds(operator.pid)
        if not result["ready"]:
            log(f"N={n:,}: NOT Ready after {args.ready_timeout:.0f} s: {last}")
        else:
            result["ready_s"] = time.perf_counter() - started
            log(f"N={n:,}: Ready after {result['ready_s']:.1f} s, operator RSS "
                f"{result['operator_status_at_ready']['VmRSS'] / 2**20:.0f} MiB")
        time.sleep(1)  # audit lines of the last requests
        startup = cluster.audit_events(started_wall, ready_at)
        result["startup_requests"] = sum(e["user"]["username"] == OPERATOR_USER
                                         for e in startup)

        if result["ready"]:
            deliverer, url = start_deliverer(cluster, redis, namespace, n, work, result)
            result["changes"] = measure_changes(cluster, namespace, n, url, args)
        # Idle: nothing changes (the deliverer keeps running, as in a cluster).
        time.sleep(args.settle)
        cpu0 = cpu_seconds(operator.pid)
        since = time.time()
        time.sleep(args.idle)
        until = time.time()
        cpu1 = cpu_seconds(operator.pid)
        time.sleep(1)
        events = cluster.audit_events(since, until)
        mine = [e for e in events if e["user"]["username"] == OPERATOR_USER]
        theirs = [e for e in events if e["user"]["username"] != OPERATOR_USER]
        span = until - since
        result["idle"] = {
            "seconds": span, "operator_requests": len(mine),
            "operator_rps": len(mine) / span,
            "operator_by_verb": dict(Counter(f"{e['verb']} {e['objectRef'].get('resource', '')}"
                                             for e in mine).most_common()),
            "operator_cpu_s": cpu1 - cpu0,
            "deliverer_rps": len(theirs) / span,
        }
        result["operator_status_idle"] = proc_status(operator.pid)
        log(f"N={n:,}: idle {result['idle']['operator_rps']:.2f} requests/s "
            f"({result['idle']['operator_by_verb']}), deliverer "
            f"{result['idle']['deliverer_rps']:.2f}/s, operator VmHWM "
            f"{result['operator_status_idle']['VmHWM'] / 2**20:.0f} MiB")
    finally:
        if deliverer is not None:
            terminate(deliverer)
        terminate(operator)
    result["load_after"] = os.getloadavg()
    return result


def spawn_deliverer(cluster: Cluster, redis: Redis, namespace: str, work: Path, tag: str,
                    python_flags: tuple[str, ...] = ()
                    ) -> tuple[subprocess.Popen[bytes], str, float, float]:
    """A deliverer of the gateway, as its ServiceAccount; waits for ``/readyz`` 200.
    Returns the process, its URL, its spawn time (epoch) and seconds to ready."""
    kubeconfig = work / "deliverer.kubeconfig"
    if not kubeconfig.exists():
        cluster.token_kubeconfig(namespace, "hookgate-default-deliverer", kubeconfig)
    port = unused_port()
    url = f"http://127.0.0.1:{port}"
    dlog = work / f"deliverer-{tag}.log"
    spawned_wall = time.time()
    spawned = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, *python_flags, "-m", "hookgate", "deliverer", "--gateway",
         f"{namespace}/default", "--queue", redis.url, "--listen", f"127.0.0.1:{port}",
         "--kubeconfig", str(kubeconfig), "--log-format", "json", "--grace", "2"],
        cwd=TREE, env=tree_env(), stdout=dlog.open("wb"),
        stderr=(work / f"deliverer-{tag}.err").open("wb"))
    deadline = spawned + 300
    while http_json("GET", url + "/readyz", timeout=2)[0] != 200:
        if proc.poll() is not None or time.perf_counter() > deadline:
            terminate(proc)
            raise RuntimeError("the deliverer did not get ready:\n" + dlog.read_text()[-3000:]
                               + (work / f"deliverer-{tag}.err").read_text()[-3000:])
        time.sleep(0.02)
    return proc, url, spawned_wall, time.perf_counter() - spawned


def import_seconds(stderr: Path) -> float:
    """Total of the top-level imports in a ``python -X importtime`` report."""
    total = 0
    for line in stderr.read_text().splitlines():
        if line.startswith("import time:") and "|" in line:
            _, cumulative, name = line.split("|", 2)
            if name.startswith(" ") and not name.startswith("  ") and cumulative.strip().isdigit():
                total += int(cumulative)
    return total / 1e6


def start_deliverer(cluster: Cluster, redis: Redis, namespace: str, n: int, work: Path,
                    result: dict[str, Any]) -> tuple[subprocess.Popen[bytes], str]:
    """The deliverer that serves the changes; then one more, under ``-X importtime``, to
    tell its imports apart from reading and compiling the config."""
    proc, url, spawned_wall, ready_s = spawn_deliverer(cluster, redis, namespace, work, "main")
    status = proc_status(proc.pid)
    # The log goes to stderr.
    lines = (work / "deliverer-main.err").read_text().splitlines()
    stamps = [t for t in map(log_time, lines) if t is not None]
    d: dict[str, Any] = {"ready_s": ready_s, "rss": status["VmRSS"], "hwm": status["VmHWM"],
                         "cpu_s": cpu_seconds(proc.pid)}
    if stamps:
        d["first_log_s"] = stamps[0] - spawned_wall
    timed, _, _, timed_ready = spawn_deliverer(cluster, redis, namespace, work, "importtime",
                                               ("-X", "importtime"))
    terminate(timed)
    d["importtime_ready_s"] = timed_ready
    d["imports_s"] = import_seconds(work / "deliverer-importtime.err")
    result["deliverer"] = d
    log(f"deliverer ready in {ready_s:.2f} s (first log line "
        f"{d.get('first_log_s', float('nan')):.2f} s; imports {d['imports_s']:.2f} s of "
        f"{timed_ready:.2f} s under -X importtime), RSS {status['VmRSS'] / 2**20:.0f} MiB")
    return proc, url


def measure_changes(cluster: Cluster, namespace: str, n: int, url: str,
                    args: argparse.Namespace) -> dict[str, Any]:
    samples: list[dict[str, float]] = []
    failures = 0
    for k in range(args.changes):
        i = (k * max(1, n // args.changes) + k) % n
        event_type = f"bench.change{k}"
        doc = yaml.safe_dump(subscription(i, (event_type,)))
        start = time.perf_counter()
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=doc)
        stored = time.perf_counter()
        deadline = stored + args.change_timeout
        served = None
        while time.perf_counter() < deadline:
            code, body = http_json("POST", url + "/v1/events",
                                   {"type": event_type, "data": {"amount": n + 1}})
            if code == 202 and int(body.get("deliveries", 0)) >= 1:
                served = time.perf_counter()
                break
            time.sleep(0.02)
        if served is None:
            failures += 1
            log(f"change {k}: not served within {args.change_timeout:.0f} s")
            continue
        samples.append({"from_apply_s": served - start, "from_stored_s": served - stored,
                        "kubectl_s": stored - start})
    out: dict[str, Any] = {"samples": samples, "failures": failures}
    for key in ("from_apply_s", "from_stored_s", "kubectl_s"):
        values = [s[key] for s in samples]
        if values:
            out[key] = {"p50": statistics.median(values), "p99": pct(values, 99),
                        "min": min(values), "max": max(values)}
    if samples:
        log(f"changes: p50 {out['from_apply_s']['p50']:.2f} s, p99 "
            f"{out['from_apply_s']['p99']:.2f} s from kubectl apply ({failures} not served)")
    return out


# --- report ------------------------------------------------------------------------------


def mib(b: float | None) -> str:
    return "-" if b is None else f"{b / 2**20:.0f} MiB"


def table(results: list[dict[str, Any]]) -> str:
    """One column per size; a result with a ``label`` has it in its column's head."""
    cols = [(f"{r['label']}, " if r.get("label") else "") + f"N = {r['endpoints']:,}"
            for r in results]
    rows: list[tuple[str, list[str]]] = []

    def row(name: str, f: Any) -> None:
        cells = []
        for r in results:
            try:
                cells.append(f(r))
            except (KeyError, TypeError, ValueError):
                cells.append("-")
        rows.append((name, cells))

    row("create 2N objects", lambda r: f"{r['create_s']:.0f} s "
        f"({r['create_per_s']:.0f}/s)")
    row("operator start → gateway Ready, endpoints = N",
        lambda r: f"{r['ready_s']:.1f} s" if r["ready"] else
        f"not Ready in {r['ready_wait_s']:.0f} s: "
        + (r["ready_condition"]["condition"].get("reason") or "no gateway status yet"))
    row("operator requests until then", lambda r: f"{r['startup_requests']:,}")
    row("operator CPU until then", lambda r: f"{r['operator_cpu_at_ready_s']:.1f} s")
    row("change → deliverer routes it, p50 (p99)",
        lambda r: f"{r['changes']['from_apply_s']['p50']:.2f} s "
                  f"({r['changes']['from_apply_s']['p99']:.2f} s)")
    row("the same from the change stored, p50 (p99)",
        lambda r: f"{r['changes']['from_stored_s']['p50']:.2f} s "
                  f"({r['changes']['from_stored_s']['p99']:.2f} s)")
    row("changes not served in time", lambda r: f"{r['changes']['failures']}")
    row("operator requests/s while idle (or still busy: not Ready)",
        lambda r: f"{r['idle']['operator_rps']:.2f}")
    row("operator CPU while idle",
        lambda r: f"{r['idle']['operator_cpu_s'] / r['idle']['seconds'] * 100:.0f} %")
    row("deliverer requests/s while idle", lambda r: f"{r['idle']['deliverer_rps']:.2f}")
    row("operator VmRSS once Ready", lambda r: mib(r["operator_status_at_ready"]["VmRSS"]))
    row("operator VmRSS after idle (VmHWM)",
        lambda r: f"{mib(r['operator_status_idle']['VmRSS'])} "
                  f"({mib(r['operator_status_idle']['VmHWM'])})")
    row("deliverer spawn → /readyz 200", lambda r: f"{r['deliverer']['ready_s']:.2f} s")
    row("of which imports (-X importtime, another spawn)",
        lambda r: f"{r['deliverer']['imports_s']:.2f} s of "
                  f"{r['deliverer']['importtime_ready_s']:.2f} s")
    row("deliverer CPU seconds until ready", lambda r: f"{r['deliverer']['cpu_s']:.2f} s")
    row("deliverer VmRSS once ready", lambda r: mib(r["deliverer"]["rss"]))
    lines = ["| figure | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    lines += [f"| {name} | " + " | ".join(cells) + " |" for name, cells in rows]
    return "\n".join(lines)


def targets(results: list[dict[str, Any]]) -> str:
    r = max(results, key=lambda x: x["endpoints"])
    n = r["endpoints"]
    got: list[tuple[str, str, str, bool | None]] = []
    ready = r.get("ready_s")
    got.append(("first Ready", "≤ 60 s", f"{ready:.1f} s" if ready else "not Ready",
                ready is not None and ready <= TARGETS["ready_s"]))
    p99 = ((r.get("changes") or {}).get("from_stored_s") or {}).get("p99")
    got.append(("change (stored) → deliverer routes it, p99", "≤ 2 s",
                f"{p99:.2f} s" if p99 is not None else "-",
                None if p99 is None else p99 <= TARGETS["change_p99_s"]))
    rps = (r.get("idle") or {}).get("operator_rps")
    got.append(("operator requests/s while idle (one gateway)", "≤ 1",
                f"{rps:.2f}" if rps is not None else "-",
                None if rps is None else rps <= TARGETS["idle_rps"]))
    hwm = (r.get("operator_status_idle") or {}).get("VmHWM")
    got.append(("operator RSS (peak VmHWM)", "≤ 500 MB",
                f"{hwm / 1e6:.0f} MB" if hwm else "-",
                None if hwm is None else hwm / 1e6 <= TARGETS["rss_mb"]))
    lines = [f"Targets (issue #16, at 30,000), measured at N = {n:,}:", "",
             "| target | wanted | measured | met |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {'-' if ok is None else 'yes' if ok else '**no**'} |"
              for a, b, c, ok in got]
    return "\n".join(lines)


def figures(r: dict[str, Any]) -> dict[str, float | None]:
    """The figures that grow with N, for the plot and the prediction."""
    hwm = (r.get("operator_status_idle") or {}).get("VmHWM")
    return {
        "ready_s": r.get("ready_s"),
        "change_p99_s": ((r.get("changes") or {}).get("from_stored_s") or {}).get("p99"),
        "idle_rps": (r.get("idle") or {}).get("operator_rps"),
        "rss_mb": hwm / 1e6 if hwm else None,
        "deliverer_ready_s": (r.get("deliverer") or {}).get("ready_s"),
    }


def predict(results: list[dict[str, Any]], at: int = 100_000) -> dict[str, dict[str, float]]:
    """Each figure at ``at`` endpoints, on the power law through the two largest sizes that
    have it (slope 1 is linear, 0 flat)."""
    import math

    out: dict[str, dict[str, float]] = {}
    for key in figures(results[0]):
        pts = sorted((r["endpoints"], v) for r in results
                     if (v := figures(r)[key]) is not None and v > 0)
        if len(pts) < 2:
            continue
        (n1, y1), (n2, y2) = pts[-2], pts[-1]
        slope = math.log(y2 / y1) / math.log(n2 / n1)
        out[key] = {"slope": slope, "from_n": n2, "predicted": y2 * (at / n2) ** slope}
    return out


def plot(series: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """Cost against N, one line per labelled run (e.g. before and after a change)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("ready_s", "operator start → Ready (s)", TARGETS["ready_s"]),
              ("change_p99_s", "change stored → deliverer, p99 (s)", TARGETS["change_p99_s"]),
              ("idle_rps", "operator requests/s, idle", TARGETS["idle_rps"]),
              ("rss_mb", "operator peak RSS (MB)", TARGETS["rss_mb"])]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    for ax, (key, title, target) in zip(axes, panels, strict=True):
        for label, results in series.items():
            pts = [(r["endpoints"], v) for r in results
                   if r.get("ready") and (v := figures(r)[key]) is not None]
            line = ax.plot(*zip(*pts, strict=True), marker="o", label=label) if pts else None
            # A size whose gateway was never Ready: how long it was waited for, and what
            # the operator cost meanwhile, marked x.
            color = line[0].get_color() if line else None
            for r in results:
                if r.get("ready"):
                    continue
                v = r.get("ready_wait_s") if key == "ready_s" else figures(r)[key]
                if v is not None:
                    ax.plot([r["endpoints"]], [v], marker="x", markersize=9, color=color,
                            linestyle="none")
                    ax.annotate("not Ready", (r["endpoints"], v), fontsize=7,
                                textcoords="offset points", xytext=(-20, 6))
        ax.margins(y=0.15)
        ax.set_ylim(bottom=0)
        ns = [r["endpoints"] for results in series.values() for r in results]
        ax.set_xlim(min(ns) / 1.5, max(ns) * 1.5)
        ax.axhline(target, color="red", linestyle="--", linewidth=1, label="target at 30,000")
        ax.set_xscale("log")
        ax.set_xlabel("endpoints (+ as many subscriptions)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save(path: Path | None, uptime_before: str, began: float, results: list[dict[str, Any]],
         final: bool) -> None:
    """Write what is measured so far (after each size, so a run stopped by its time limit
    keeps the sizes it finished)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "-C", str(TREE), "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    path.write_text(json.dumps(
        {"uptime_before": uptime_before, "uptime_after": uptime, "complete": final,
         "elapsed_s": time.perf_counter() - began, "tree": str(TREE), "commit": commit,
         "results": results, "prediction_100k": predict(results) if results else {}},
        indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="1000,10000",
                   help="comma-separated N (default 1000,10000)")
    p.add_argument("--with-30k", action="store_true", help="also N = 30,000 (several minutes)")
    p.add_argument("--changes", type=int, default=20, help="Subscription changes per size")
    p.add_argument("--idle", type=float, default=30, help="seconds of idle counting")
    p.add_argument("--settle", type=float, default=5,
                   help="seconds of quiet before the idle count")
    p.add_argument("--ready-timeout", type=float, default=240,
                   help="seconds the gateway gets to be Ready per size")
    p.add_argument("--give-up-after", type=float, default=60,
                   help="seconds of one unchanged Ready=False before a size is given up")
    p.add_argument("--change-timeout", type=float, default=30,
                   help="seconds one change gets to reach the deliverer")
    p.add_argument("--threads", type=int, default=16, help="threads creating objects")
    p.add_argument("--tree", type=Path, default=ROOT,
                   help="source tree whose operator and deliverer to run (e.g. a `git "
                        "worktree` of another branch; default: this one)")
    p.add_argument("--out-json", type=Path, help="write every figure here")
    p.add_argument("--plot", type=Path, help="draw cost against N to this PNG")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    p.add_argument("--compare", action="append", default=[], metavar="LABEL=JSON",
                   help="no run: tabulate (and --plot) earlier --out-json files side by side, "
                        "e.g. before=a.json --compare after=b.json; or a file of runs by "
                        "label: --compare docs/bench-operator.json")
    args = p.parse_args(argv)
    if args.compare:
        series = {}
        for spec in args.compare:
            label, _, path = spec.partition("=")
            doc = json.loads(Path(path or label).read_text())
            if "results" in doc:
                series[label] = doc["results"]
            else:  # several runs by label, as in docs/bench-operator.json
                series.update({k: v["results"] for k, v in doc.items()})
        print(table([{**r, "label": label} for label, runs in series.items() for r in runs]))
        if args.plot:
            plot(series, args.plot)
        return 0
    global TREE
    TREE = args.tree.resolve()
    if not (TREE / "hookgate").is_dir() or not (TREE / "crds").is_dir():
        p.error(f"--tree {args.tree}: not a source tree (no hookgate/ and crds/)")
    sizes = [int(x) for x in args.sizes.split(",") if x]
    if args.with_30k and 30_000 not in sizes:
        sizes.append(30_000)

    from kubernetes import client, config

    def terminated(signum: int, frame: Any) -> None:
        raise SystemExit(f"stopped by signal {signum}")  # runs the clean-up below

    signal.signal(signal.SIGTERM, terminated)
    work = Path(tempfile.mkdtemp(prefix="hookgate-bench-operator-"))
    cluster = Cluster(work, [f"bench-n{n}" for n in sizes])
    redis: Redis | None = None
    results: list[dict[str, Any]] = []
    began = time.perf_counter()
    uptime_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    try:
        log(f"starting a private control plane in {work} (load: {uptime_before})")
        cluster.up()
        cluster.kubectl("apply", "--server-side", "-f", str(TREE / "crds"))
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f",
                        str(TREE / "crds"))
        cluster.kubectl("create", "namespace", OPERATOR_NS)
        cluster.kubectl("create", "serviceaccount", "-n", OPERATOR_NS, OPERATOR_SA)
        cluster.kubectl("create", "clusterrolebinding", "hookgate-bench-operator",
                        "--clusterrole=cluster-admin",
                        f"--serviceaccount={OPERATOR_NS}:{OPERATOR_SA}")
        operator_kubeconfig = cluster.token_kubeconfig(OPERATOR_NS, OPERATOR_SA,
                                                       work / "operator.kubeconfig")
        redis = Redis(work)
        cfg = client.Configuration()
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(cluster.kubeconfig), client_configuration=cfg)
        cfg.connection_pool_maxsize = args.threads * 2
        api_client = client.ApiClient(cfg)
        for n in sizes:
            results.append(measure_size(cluster, redis, api_client, n, args,
                                        operator_kubeconfig))
            save(args.out_json, uptime_before, began, results, final=False)
        api_client.close()  # type: ignore[no-untyped-call]
    finally:
        if redis is not None:
            redis.stop()
        cluster.down()
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    elapsed = time.perf_counter() - began
    uptime_after = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print()
    print(f"Operator on a private control plane; {elapsed:.0f} s in all. "
          f"Before: {uptime_before}. After: {uptime_after}.")
    print()
    print(table(results))
    print()
    print(targets(results))
    prediction = predict(results)
    if prediction:
        print()
        print("At 100,000 on the curve through the two largest sizes: " + "; ".join(
            f"{k} {v['predicted']:.1f} (slope {v['slope']:.2f})" for k, v in prediction.items()))
    save(args.out_json, uptime_before, began, results, final=True)
    if args.plot:
        plot({"measured": results}, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
