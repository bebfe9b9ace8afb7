"""Hookgate benchmarks: throughput, latency, memory and scale-out against the physical ceiling.

    python tests/bench/bench_run.py --profile full|quick|smoke [--out-json F] [--out-md F]

Processes: a sink on loopback (nginx answering 204 when installed, else a Python sink), the
gateway under test (``python -m hookgate run``, one or two processes), a load generator or
ceiling client (``bench_load.py``) and, for the Redis figures, a redis-server of its own. All
in temporary directories, all stopped at the end. Every loop is bounded in count and time.

What is measured (see docs/benchmarks.md for how to read it):

* ceiling: ``bench_load.py ceiling`` posting delivery bodies straight to the sink;
* drain: a queue pre-filled with N deliveries, then one (or two) gateway processes start and
  deliver them; the rate over the 10th-90th percentile of deliveries is the sustained
  maximum, with the gateway's CPU (``/proc/<pid>/stat``) over the same window;
* latency: events posted at fixed rates to a running gateway; latency = the sink's log time
  of a delivery - the time the load generator started the ingest POST (so it includes
  ingest: an upper bound of accepted -> 2xx);
* memory with 10,000 endpoints and subscriptions, compile time of 1,000 + 1,000, and the
  healthy endpoints' latency with 1 of 10 endpoints hanging.

Not a test; never collected by pytest (files are named bench_*.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import itertools
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from bench_load import EVENT_TYPE, cpu_seconds, payload  # noqa: E402

from hookgate.deliverer.intake.event import IngestRequest, build_event  # noqa: E402
from hookgate.deliverer.queues.factory import open_queue  # noqa: E402

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#: HOOKGATE_EVENT_LOOP of the gateways: auto (uvloop when installed) or asyncio
EVENT_LOOP = "auto"


def gateway_uses_uvloop() -> bool:
    if EVENT_LOOP == "asyncio":
        return False
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True
GATEWAY = "default/default"


@dataclass(frozen=True)
class Profile:
    name: str
    drain_events: int  # deliveries pre-filled for a drain at fan-out 1
    payloads: tuple[int, ...]  # delivery body sizes drained on each queue
    fanout_events: int  # events pre-filled for the fan-out 10 drain (x10); 0: none
    rates: tuple[float, ...]  # fixed event rates for latency (the 80 % point is added)
    rate_seconds: float
    warmup: float  # seconds at the start of a rate run left out of the percentiles
    fanout_rate: float  # events/s of the fan-out 10 latency run
    hang_rate: float  # events/s of the 1-of-10-hanging runs
    hang_seconds: float
    rss_endpoints: int
    compile_n: int
    queues: tuple[str, ...] = ("sqlite", "redis")
    two_deliverers: bool = True
    concurrency: int = 256


PROFILES = {
    "full": Profile("full", drain_events=15_000, payloads=(1024, 16384), fanout_events=2_000,
                    rates=(100, 500, 1000), rate_seconds=10, warmup=1.0, fanout_rate=100,
                    hang_rate=50, hang_seconds=10, rss_endpoints=10_000, compile_n=1000),
    "quick": Profile("quick", drain_events=3_000, payloads=(1024,), fanout_events=300,
                     rates=(100, 500), rate_seconds=2, warmup=0.5, fanout_rate=100,
                     hang_rate=50, hang_seconds=2, rss_endpoints=2_000, compile_n=1000),
    # for the test suite: one of each kind of measurement that makes the JSON, in seconds
    "smoke": Profile("smoke", drain_events=200, payloads=(1024,), fanout_events=0,
                     rates=(50,), rate_seconds=1, warmup=0.2, fanout_rate=0, hang_rate=0,
                     hang_seconds=0, rss_endpoints=0, compile_n=50, queues=("sqlite",),
                     two_deliverers=False),
}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def proc_cpu(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except (FileNotFoundError, ProcessLookupError):
        return 0.0


def proc_status(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out


def percentiles(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    s = sorted(values)

    def pick(q: float) -> float:
        return s[min(len(s) - 1, max(0, round(q * len(s)) - 1))]

    return {"p50_ms": pick(0.50) * 1000, "p95_ms": pick(0.95) * 1000,
            "p99_ms": pick(0.99) * 1000, "max_ms": s[-1] * 1000, "n": len(s)}


# -- machine ---------------------------------------------------------------------------------

def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    mem = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as fh:
        mem = int(fh.readline().split()[1]) * 1024
    return {"cores": os.cpu_count(), "cpu_model": model, "memory_bytes": mem,
            "kernel": platform.release(), "python": platform.python_version(),
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")}


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# -- sink ------------------------------------------------------------------------------------

NGINX_CONF = """\
{user}worker_processes 1;
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  log_format bench '$msec $uri $http_webhook_id';
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  client_max_body_size 4m;
  client_body_buffer_size 64k;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    access_log {dir}/access.log bench buffer=64k flush=200ms;
    location / {{ return 204; }}
  }}
}}
"""


class Sink:
    """The receiving end: answers 204 and logs ``time path webhook-id`` per request."""

    def __init__(self, workdir: Path, prefer: str = "auto") -> None:
        self.dir = workdir / "sink"
        self.dir.mkdir(parents=True)
        self.port = free_port()
        self.log = self.dir / "access.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.nginx = shutil.which("nginx") or (
            "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
        if prefer == "python":
            self.nginx = None
        self.kind = ""
        self._offset = 0
        self._count = 0
        self._rotations = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        if self.nginx:
            conf = self.dir / "nginx.conf"
            # as root, the worker would switch to nobody and could not write the private temp dir
            user = "user root root;\n" if os.geteuid() == 0 else ""
            conf.write_text(NGINX_CONF.format(dir=self.dir, port=self.port, user=user))
            version = subprocess.run([self.nginx, "-v"], capture_output=True, text=True)
            self.kind = (version.stderr.strip().partition(":")[2].strip() or "nginx") + \
                " (1 worker, return 204)"
            self.proc = subprocess.Popen([self.nginx, "-p", str(self.dir), "-c", str(conf),
                                          "-e", str(self.dir / "error.log")],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        else:
            self.kind = "Python aiohttp sink (nginx not installed; slower)"
            self.proc = subprocess.Popen([sys.executable, str(HERE / "bench_sink.py"),
                                          "--port", str(self.port), "--log", str(self.log)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, 10)

    def cpu(self) -> float:
        """CPU seconds of the sink and its workers."""
        assert self.proc is not None
        pids = [self.proc.pid]
        with contextlib.suppress(OSError), \
                open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as fh:
            pids += [int(p) for p in fh.read().split()]
        return sum(proc_cpu(p) for p in pids)

    def count(self) -> int:
        """Requests logged since the last rotation (the log is flushed every 200 ms)."""
        with contextlib.suppress(FileNotFoundError), open(self.log, "rb") as fh:
            fh.seek(self._offset)
            chunk = fh.read()
            end = chunk.rfind(b"\n") + 1
            self._count += chunk.count(b"\n", 0, end)
            self._offset += end
        return self._count

    def rotate(self) -> list[tuple[float, str, str]]:
        """Everything logged since the last rotation, as (unix time, path, webhook-id)."""
        assert self.proc is not None
        self._rotations += 1
        old = self.dir / f"run-{self._rotations}.log"
        if self.log.exists():
            os.rename(self.log, old)
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 5
        while not self.log.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)  # the worker writes what it buffered before it reopens
        self._offset = self._count = 0
        out = []
        if old.exists():
            with open(old) as fh:
                for line in fh:
                    parts = line.split()
                    if len(parts) == 3:
                        out.append((float(parts[0]), parts[1], parts[2]))
            old.unlink()
        return out

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT if self.nginx else signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Hanger:
    """An endpoint that never answers: a listening socket nobody accepts on."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4096)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def close(self) -> None:
        self.sock.close()


# -- redis -----------------------------------------------------------------------------------

class Redis:
    def __init__(self, workdir: Path) -> None:
        self.dir = workdir / "redis"
        self.dir.mkdir(parents=True)
        self.port = free_port()
        self.binary = os.environ.get("HOOKGATE_REDIS_SERVER") or shutil.which("redis-server") \
            or "/usr/bin/redis-server"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def available(self) -> bool:
        return Path(self.binary).exists()

    def start(self) -> None:
        # AOF with fsync every second: the durability the docs require of a production Redis
        # (appendfsync always is what the tests use; see docs/benchmarks.md).
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(self.dir),
             "--protected-mode", "no", "--maxmemory-policy", "noeviction"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, 10)

    def flush(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), 5) as s:
            s.sendall(b"FLUSHALL\r\n")
            s.recv(64)

    def cpu(self) -> float:
        return proc_cpu(self.proc.pid) if self.proc else 0.0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


# -- gateway ---------------------------------------------------------------------------------

def write_config(directory: Path, urls: Sequence[str], *, max_in_flight: int | None,
                 timeout: str = "5s", schedule: str = "[0s, 1s, 5s]",
                 distinct_types: bool = False) -> None:
    """One endpoint per URL (``ep0``, ``ep1``, ...) and one subscription each, one Secret.

    Every subscription takes ``bench.*``, or with ``distinct_types`` only ``bench.t<i>``."""
    directory.mkdir(parents=True, exist_ok=True)
    extra = f"  maxInFlight: {max_in_flight}\n" if max_in_flight else ""
    parts = [f"apiVersion: v1\nkind: Secret\nmetadata: {{name: signing}}\n"
             f"stringData: {{secret: {SECRET}}}\n---\n"]
    for i, url in enumerate(urls):
        parts.append(
            f"apiVersion: hookgate.io/v1alpha1\nkind: WebhookEndpoint\nmetadata: {{name: ep{i}}}\n"
            f"spec:\n  url: {url}\n  secretRef: {{name: signing}}\n  timeout: {timeout}\n"
            f"  retry: {{schedule: {schedule}}}\n{extra}---\n"
            f"apiVersion: hookgate.io/v1alpha1\nkind: Subscription\nmetadata: {{name: sub{i}}}\n"
            f"spec:\n  endpointRef: {{name: ep{i}}}\n  eventTypes: "
            f"[\"{f'bench.t{i}' if distinct_types else 'bench.*'}\"]\n---\n")
    (directory / "bench.yaml").write_text("".join(parts))


class GatewayProc:
    def __init__(self, workdir: Path, config: Path, queue_url: str, concurrency: int,
                 name: str = "gw") -> None:
        self.port = free_port()
        self.data = workdir / f"data-{name}"
        self.log = workdir / f"{name}.log"
        self.args = [sys.executable, "-m", "hookgate", "run", "--config", str(config),
                     "--data-dir", str(self.data), "--queue", queue_url,
                     "--listen", f"127.0.0.1:{self.port}", "--concurrency", str(concurrency),
                     "--grace", "5", "--log-format", "text"]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def spawn(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT,
                                         cwd=ROOT, env={**os.environ,
                                                        "HOOKGATE_EVENT_LOOP": EVENT_LOOP})

    def wait_ready(self, timeout: float) -> float:
        start = time.monotonic()
        deadline = start + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited ({self.proc.returncode}):\n"
                                   + self.log.read_text()[-3000:])
            with contextlib.suppress(OSError), \
                    urllib.request.urlopen(self.url + "/readyz", timeout=1) as resp:
                if resp.status == 200:
                    return time.monotonic() - start
            time.sleep(0.05)
        raise RuntimeError(f"gateway not ready after {timeout}s:\n" + self.log.read_text()[-3000:])

    def cpu(self) -> float:
        return proc_cpu(self.pid)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def prefill(queue_url: str, events: int, endpoints: Sequence[str], size: int) -> float:
    """Enqueue ``events`` events to ``endpoints`` through the queue API; returns seconds."""
    queue = open_queue(queue_url, gateway=GATEWAY, visibility_timeout=60)
    await queue.open()
    start = time.monotonic()
    now = time.time()
    try:
        for first in range(0, events, 500):
            batch = [build_event(IngestRequest(type=EVENT_TYPE, data=payload(i, size)), now)
                     for i in range(first, min(events, first + 500))]
            await asyncio.gather(*(queue.enqueue(e, endpoints) for e in batch))
    finally:
        await queue.close()
    return time.monotonic() - start


# -- scenarios -------------------------------------------------------------------------------

@dataclass
class Bench:
    profile: Profile
    workdir: Path
    sink: Sink
    redis: Redis | None
    results: dict[str, Any] = field(default_factory=dict)
    uvloop_gateway: bool = False

    def queue_url(self, queue: str, tag: str) -> str:
        if queue == "sqlite":
            return f"sqlite:{self.workdir / f'{tag}.db'}"
        assert self.redis is not None
        self.redis.flush()
        return self.redis.url

    def loadgen(self, args: list[str], timeout: float) -> dict[str, Any]:
        out = self.workdir / "load.json"
        cmd = [sys.executable, str(HERE / "bench_load.py"), *args, "--out", str(out)]
        subprocess.run(cmd, check=True, timeout=timeout, cwd=ROOT)
        data: dict[str, Any] = json.loads(out.read_text())
        out.unlink()
        return data

    def window(self, times: list[float], samples: list[tuple[float, float]]
               ) -> dict[str, Any]:
        """Rate and CPU over the 10th-90th percentile of ``times`` (sorted)."""
        n = len(times)
        if n < 10:
            return {"rps": 0.0, "delivered": n}
        lo, hi = int(n * 0.1), int(n * 0.9) - 1
        span = max(1e-6, times[hi] - times[lo])
        rps = (hi - lo) / span
        out: dict[str, Any] = {"rps": round(rps, 1), "delivered": n,
                               "window_s": round(span, 3),
                               "total_s": round(times[-1] - times[0], 3)}
        if samples:
            cpu = interp(samples, times[hi]) - interp(samples, times[lo])
            out["cpu_s_per_1000"] = round(cpu / (hi - lo) * 1000, 4)
            out["cpu_util"] = round(cpu / span, 3)
        return out

    def sample_until(self, cpu: Callable[[], float], done: Callable[[], bool], timeout: float
                     ) -> list[tuple[float, float]]:
        samples = [(time.time(), cpu())]
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline:
            time.sleep(0.1)
            samples.append((time.time(), cpu()))
        time.sleep(0.3)
        samples.append((time.time(), cpu()))
        return samples

    # ceiling ---------------------------------------------------------------------------

    def ceiling(self, size: int, count: int) -> dict[str, Any]:
        self.sink.rotate()
        sink0 = self.sink.cpu()
        args = ["ceiling", "--url", self.sink.url, "--count", str(count), "--concurrency",
                str(self.profile.concurrency), "--size", str(size)]
        if self.uvloop_gateway:
            args.append("--uvloop")
        res = self.loadgen(args, timeout=300)
        sink_cpu = self.sink.cpu() - sink0
        lines = self.sink.rotate()
        times = sorted(t for t, _, _ in lines)
        out = self.window(times, [])
        # the client's CPU spread over its whole run (it has no samples of its own)
        wall = res["finished"] - res["started"]
        out.update(client_cpu_util=round(res["cpu_seconds"] / wall, 3),
                   client_cpu_s_per_1000=round(res["cpu_seconds"] / max(1, res["ok"]) * 1000, 4),
                   sink_cpu_util=round(sink_cpu / wall, 3), ok=res["ok"], errors=res["errors"],
                   size=size, concurrency=self.profile.concurrency)
        log(f"ceiling {size} B: {out['rps']:.0f}/s (client CPU {out['client_cpu_util']:.2f}, "
            f"sink CPU {out['sink_cpu_util']:.2f})")
        return out

    # drain -----------------------------------------------------------------------------

    def drain(self, queue: str, *, size: int = 1024, fanout: int = 1, events: int,
              processes: int = 1, max_in_flight: int | None = None) -> dict[str, Any]:
        tag = f"drain-{queue}-{size}-{fanout}-{processes}"
        config = self.workdir / f"config-{tag}"
        write_config(config, [f"{self.sink.url}/ep{i}" for i in range(fanout)],
                     max_in_flight=max_in_flight or self.profile.concurrency)
        url = self.queue_url(queue, tag)
        endpoints = [f"default/ep{i}" for i in range(fanout)]
        fill_s = asyncio.run(prefill(url, events, endpoints, size))
        expected = events * fanout
        self.sink.rotate()
        gws = [GatewayProc(self.workdir, config, url, self.profile.concurrency, f"{tag}-{n}")
               for n in range(processes)]
        redis_cpu0 = self.redis.cpu() if self.redis and queue == "redis" else 0.0
        sink0 = self.sink.cpu()
        try:
            for g in gws:
                g.spawn()
            samples = self.sample_until(lambda: sum(g.cpu() for g in gws),
                                        lambda: self.sink.count() >= expected,
                                        timeout=30 + expected / 200)
            lines = self.sink.rotate()
        finally:
            for g in gws:
                g.stop()
        times = sorted(t for t, _, _ in lines)
        out = self.window(times, samples)
        wall = samples[-1][0] - samples[0][0]
        out.update(queue=queue, size=size, fanout=fanout, processes=processes, events=events,
                   expected=expected, unique=len({(p, i) for _, p, i in lines}),
                   prefill_s=round(fill_s, 2),
                   sink_cpu_util=round((self.sink.cpu() - sink0) / wall, 3),
                   max_in_flight=max_in_flight or self.profile.concurrency)
        if self.redis and queue == "redis":
            out["redis_cpu_util"] = round((self.redis.cpu() - redis_cpu0) / wall, 3)
        log(f"drain {queue} {size} B fan-out {fanout} x{processes}: {out['rps']:.0f}/s, "
            f"{out.get('cpu_s_per_1000', 0):.3f} CPU s/1000, {out['unique']}/{expected}")
        return out

    # latency ---------------------------------------------------------------------------

    def rate_run(self, gw: GatewayProc, rate: float, seconds: float, *, fanout: int = 1,
                 size: int = 1024, paths: set[str] | None = None) -> dict[str, Any]:
        self.sink.rotate()
        cpu0, t0 = gw.cpu(), time.time()
        args = ["rate", "--url", gw.url, "--rate", str(rate), "--duration", str(seconds),
                "--size", str(size)]
        with contextlib.suppress(ImportError):
            import uvloop  # noqa: F401 - the load generator is a tool, not the system under test

            args.append("--uvloop")
        res = self.loadgen(args, timeout=seconds * 3 + 90)
        records = res.pop("records")
        # (a hanging endpoint's deliveries never reach the sink)
        expected = len(records) * (fanout if paths is None else len(paths))
        deadline = time.monotonic() + 10 + seconds
        while self.sink.count() < expected and time.monotonic() < deadline:
            time.sleep(0.1)
        cpu1, t1 = gw.cpu(), time.time()
        lines_all = self.sink.rotate()
        sent = {r[0]: r[1] for r in records}
        first = min((r[1] for r in records), default=0.0)
        keep = {i for i, s in sent.items() if s >= first + self.profile.warmup}
        latencies = []
        delivered = set()
        for t, path, wid in lines_all:
            if paths is not None and path not in paths:
                continue
            delivered.add((path, wid))
            if wid in keep:
                latencies.append(t - sent[wid])
        ingest = [r[2] - r[1] for r in records if r[0] in keep]
        out = {"rate": rate, "seconds": seconds, "fanout": fanout, "size": size,
               **{k: v for k, v in res.items() if k in ("accepted", "skipped", "errors",
                                                          "max_behind_s")},
               "achieved_rate": round(res["accepted"] / max(1e-6, res["send_seconds"]), 1),
               "expected": expected, "delivered": len(delivered),
               "latency": percentiles(latencies), "ingest_latency": percentiles(ingest),
               "gateway_cpu_util": round((cpu1 - cpu0) / max(1e-6, t1 - t0), 3),
               "loadgen_cpu_util": round(res["cpu_seconds"] / max(1e-6, res["send_seconds"]),
                                         3)}
        out["sustained"] = bool(
            out["delivered"] >= expected and not res["skipped"] and not res["errors"]
            and out["achieved_rate"] >= 0.95 * rate and out["latency"].get("p99_ms", 1e9) < 1000)
        lat = out["latency"]
        log(f"rate {rate:.0f}/s fan-out {fanout}: p50 {lat.get('p50_ms', 0):.1f} ms p95 "
            f"{lat.get('p95_ms', 0):.1f} p99 {lat.get('p99_ms', 0):.1f}, delivered "
            f"{out['delivered']}/{expected}, gateway CPU {out['gateway_cpu_util']:.2f}"
            f"{'' if out['sustained'] else ' NOT SUSTAINED'}")
        return out

    def latency(self, queue: str, rates: Sequence[float]) -> dict[str, Any]:
        tag = f"rate-{queue}"
        config = self.workdir / f"config-{tag}"
        write_config(config, [f"{self.sink.url}/ep0"], max_in_flight=self.profile.concurrency)
        gw = GatewayProc(self.workdir, config, self.queue_url(queue, tag),
                         self.profile.concurrency, tag)
        gw.spawn()
        out: dict[str, Any] = {}
        try:
            gw.wait_ready(30)
            out["idle_rss_bytes"] = proc_status(gw.pid)["VmRSS"]
            for rate in rates:
                out[f"{rate:g}"] = self.rate_run(gw, rate, self.profile.rate_seconds)
            out["after_rss_bytes"] = proc_status(gw.pid)["VmRSS"]
        finally:
            gw.stop()
        return out

    def fanout_latency(self, queue: str) -> dict[str, Any]:
        tag = f"fanout-{queue}"
        config = self.workdir / f"config-{tag}"
        write_config(config, [f"{self.sink.url}/ep{i}" for i in range(10)],
                     max_in_flight=self.profile.concurrency)
        gw = GatewayProc(self.workdir, config, self.queue_url(queue, tag),
                         self.profile.concurrency, tag)
        gw.spawn()
        try:
            gw.wait_ready(30)
            return self.rate_run(gw, self.profile.fanout_rate, self.profile.rate_seconds,
                                 fanout=10)
        finally:
            gw.stop()

    def hang(self, queue: str, hanging: bool) -> dict[str, Any]:
        tag = f"hang-{queue}-{int(hanging)}"
        config = self.workdir / f"config-{tag}"
        hanger = Hanger()
        urls = [f"{self.sink.url}/ep{i}" for i in range(10)]
        if hanging:
            urls[9] = hanger.url + "/ep9"
        # default policies (maxInFlight 64, circuit breaker on), a 2 s timeout
        write_config(config, urls, max_in_flight=None, timeout="2s",
                     schedule="[0s, 1s, 1s, 1s]")
        gw = GatewayProc(self.workdir, config, self.queue_url(queue, tag),
                         self.profile.concurrency, tag)
        gw.spawn()
        try:
            gw.wait_ready(30)
            res = self.rate_run(gw, self.profile.hang_rate, self.profile.hang_seconds, fanout=10,
                                paths={f"/ep{i}" for i in range(9)})
        finally:
            gw.stop()
            hanger.close()
        res["hanging"] = hanging
        return res

    # memory and compile -------------------------------------------------------------------

    def rss(self, endpoints: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for n in (1, endpoints):
            config = self.workdir / f"config-rss-{n}"
            write_config(config, [f"{self.sink.url}/ep{i}" for i in range(n)],
                         max_in_flight=None, distinct_types=True)
            gw = GatewayProc(self.workdir, config, f"sqlite:{self.workdir / f'rss-{n}.db'}",
                             self.profile.concurrency, f"rss-{n}")
            gw.spawn()
            try:
                startup = gw.wait_ready(300)
                # a few events, so routing and delivery have run once
                for k in range(20):
                    req = urllib.request.Request(
                        gw.url + "/v1/events", method="POST",
                        data=json.dumps({"type": f"bench.t{k * 7919 % n}", "data": {}}).encode(),
                        headers={"content-type": "application/json"})
                    with urllib.request.urlopen(req, timeout=10):
                        pass
                time.sleep(1.0)
                status = proc_status(gw.pid)
            finally:
                gw.stop()
            out[str(n)] = {"endpoints": n, "subscriptions": n, "rss_bytes": status["VmRSS"],
                           "peak_rss_bytes": status["VmHWM"], "startup_s": round(startup, 2)}
            log(f"RSS with {n} endpoints: {status['VmRSS'] / 2**20:.1f} MiB "
                f"(peak {status['VmHWM'] / 2**20:.1f}), ready after {startup:.1f}s")
        self.sink.rotate()
        return out


def interp(samples: list[tuple[float, float]], t: float) -> float:
    """CPU seconds at time ``t``, linear between the samples around it."""
    if t <= samples[0][0]:
        return samples[0][1]
    for (ta, ca), (tb, cb) in itertools.pairwise(samples):
        if ta <= t <= tb:
            return ca + (cb - ca) * ((t - ta) / (tb - ta) if tb > ta else 0)
    return samples[-1][1]


CLUSTER_RSS = """
import json, sys
import hookgate.deliverer.config.cluster, hookgate.deliverer.queues.redis.queue, hookgate.logs
from hookgate.deliverer.gateway import Gateway, GatewaySettings
from hookgate.deliverer.queues.factory import open_queue
from hookgate.model.publication import Manifest, read
data = json.load(open(sys.argv[1]))
config = read(Manifest.from_json(data["manifest"]), [bytes.fromhex(c) for c in data["routing"]],
              [bytes.fromhex(c) for c in data["keys"]])
del data
gateway = Gateway.create(open_queue("redis://127.0.0.1:1/0", gateway="default/default"),
                         config, GatewaySettings())
for line in open("/proc/self/status"):
    if line.startswith(("VmRSS", "VmHWM")):
        print(line.split()[1])
"""


def rss_cluster(workdir: Path, n: int) -> dict[str, Any]:
    """RSS of a cluster deliverer's process with ``n`` endpoints + subscriptions, config read
    from the shards the operator publishes (no YAML): the modules of
    ``hookgate deliverer`` imported and a Gateway built, not serving."""
    from hookgate.model.bundle import GatewayConfig
    from hookgate.model.publication import publish

    compiled = compile_config_of(n)
    publication = publish("default", GatewayConfig(compiled, (), None))
    path = workdir / f"bundle-{n}.json"
    path.write_text(json.dumps({"manifest": publication.manifest.to_json(),
                                "routing": [c.hex() for c in publication.routing.chunks],
                                "keys": [c.hex() for c in publication.keys.chunks]}))
    out = subprocess.run([sys.executable, "-c", CLUSTER_RSS, str(path)], capture_output=True,
                         text=True, check=True, timeout=120, cwd=ROOT).stdout.split()
    rss, peak = (int(x) * 1024 for x in out[:2])
    log(f"RSS of a cluster deliverer with {n} endpoints (from the ConfigMap): "
        f"{rss / 2**20:.1f} MiB (peak {peak / 2**20:.1f})")
    return {"endpoints": n, "subscriptions": n, "rss_bytes": rss, "peak_rss_bytes": peak}


def compile_config_of(n: int) -> Any:
    from hookgate.model.compiler import compile_config

    return compile_config(generated_resources(n), GATEWAY)


def generated_resources(n: int) -> list[Any]:
    """``n`` endpoints and ``n`` subscriptions (half with a CEL filter), parsed."""
    from hookgate.model.resources import parse_resource

    docs: list[dict[str, Any]] = [{"apiVersion": "v1", "kind": "Secret",
                                   "metadata": {"name": "signing"},
                                   "stringData": {"secret": SECRET}}]
    for i in range(n):
        docs.append({"apiVersion": "hookgate.io/v1alpha1", "kind": "WebhookEndpoint",
                     "metadata": {"name": f"ep{i}"},
                     "spec": {"url": f"https://hooks{i}.example.com/in",
                              "secretRef": {"name": "signing"}, "timeout": "10s",
                              "retry": {"schedule": ["0s", "5s", "5m"]},
                              "headers": {"X-Tenant": f"t{i}"}}})
        spec: dict[str, Any] = {"endpointRef": {"name": f"ep{i}"},
                                "eventTypes": ["order.*", f"tenant{i}.created"]}
        if i % 2:
            spec["filter"] = f"data.amount > {i}"
        docs.append({"apiVersion": "hookgate.io/v1alpha1", "kind": "Subscription",
                     "metadata": {"name": f"sub{i}"}, "spec": spec})
    return [parse_resource(d) for d in docs]


def compile_bench(n: int) -> dict[str, Any]:
    """compile_config on ``n`` endpoints + ``n`` subscriptions, parsed beforehand; and the
    Router built from the result."""
    from hookgate.model.compiler import compile_config
    from hookgate.model.routing import Router

    resources = generated_resources(n)
    times, router_times = [], []
    for _ in range(3):
        start = time.perf_counter()
        compiled = compile_config(resources, GATEWAY)
        times.append(time.perf_counter() - start)
        start = time.perf_counter()
        Router(compiled.config)
        router_times.append(time.perf_counter() - start)
    assert not compiled.problems, compiled.problems[:3]
    out = {"endpoints": n, "subscriptions": n, "compile_s": round(statistics.median(times), 4),
           "compile_max_s": round(max(times), 4),
           "router_s": round(statistics.median(router_times), 4)}
    log(f"compile {n}+{n}: {out['compile_s']:.3f}s (router {out['router_s']:.3f}s)")
    return out


# -- main ------------------------------------------------------------------------------------

@contextlib.contextmanager
def workspace(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="hookgate-bench-"))
    try:
        yield path
    finally:
        if keep:
            log(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def run(profile: Profile, sink_kind: str, keep: bool,
        only: set[str] | None = None) -> dict[str, Any]:
    results: dict[str, Any] = {"profile": profile.name, "machine": machine(),
                               "load_average_before": loadavg(),
                               "concurrency": profile.concurrency}
    started = time.monotonic()

    def want(name: str) -> bool:
        return only is None or name in only

    with workspace(keep) as workdir:
        sink = Sink(workdir, sink_kind)
        redis = Redis(workdir)
        queues = [q for q in profile.queues if q != "redis" or redis.available]
        sink.start()
        if "redis" in queues:
            redis.start()
        bench = Bench(profile, workdir, sink, redis if "redis" in queues else None,
                      uvloop_gateway=gateway_uses_uvloop())
        results["sink"] = sink.kind
        # the ceiling client runs on the gateway's event loop, so it is the same stack
        results["event_loop"] = "uvloop" if bench.uvloop_gateway else "asyncio"
        results["queues"] = queues
        try:
            if want("compile"):
                results["compile"] = compile_bench(profile.compile_n)
            if want("throughput"):
                # The ceiling moves between runs on a shared VM more than anything else:
                # 1 KiB is measured before, between and after the drains, and the median
                # is the reference (all three are kept).
                ceilings: dict[int, list[dict[str, Any]]] = {
                    s: [bench.ceiling(s, profile.drain_events)] for s in profile.payloads}
                drains = []
                for n, queue in enumerate(queues):
                    if n:
                        ceilings[1024].append(bench.ceiling(1024, profile.drain_events))
                    for size in profile.payloads:
                        drains.append(bench.drain(queue, size=size,
                                                  events=profile.drain_events))
                    if profile.fanout_events:
                        drains.append(bench.drain(queue, fanout=10,
                                                  events=profile.fanout_events))
                if profile.two_deliverers and "redis" in queues:
                    drains.append(bench.drain("redis", events=profile.drain_events, processes=2))
                results["drain"] = drains
                if profile.name != "smoke":
                    ceilings[1024].append(bench.ceiling(1024, profile.drain_events))
                results["ceiling"] = {}
                for size, runs in ceilings.items():
                    median = sorted(runs, key=lambda c: c["rps"])[len(runs) // 2]
                    results["ceiling"][str(size)] = {**median, "runs_rps": [c["rps"] for c in runs]}
                base = {d["queue"]: d for d in drains
                        if d["size"] == 1024 and d["fanout"] == 1 and d["processes"] == 1}
                ceiling = results["ceiling"]["1024"]["rps"]
                results["ceiling_rps"] = ceiling
                results["deliverer_rps"] = {q: d["rps"] for q, d in base.items()}
                results["ratio"] = {q: round(d["rps"] / ceiling, 3) if ceiling else None
                                    for q, d in base.items()}
                results["cpu_seconds_per_1000"] = {q: d.get("cpu_s_per_1000")
                                                   for q, d in base.items()}
            if want("latency"):
                latency = {}
                for queue in queues:
                    rates = list(profile.rates)
                    top = results.get("deliverer_rps", {}).get(queue)
                    if top and profile.name != "smoke":
                        rates.append(round(top * 0.8, -1))
                    latency[queue] = bench.latency(queue, rates)
                results["latency"] = latency
                if profile.fanout_rate:
                    results["fanout_latency"] = {q: bench.fanout_latency(q) for q in queues[:1]}
            if want("hang") and profile.hang_seconds:
                q = queues[0]
                results["hang"] = {"queue": q, "none": bench.hang(q, False),
                                   "one_of_ten": bench.hang(q, True)}
            if want("rss") and profile.rss_endpoints:
                results["rss"] = bench.rss(profile.rss_endpoints)
                results["rss_cluster"] = {str(n): rss_cluster(workdir, n)
                                          for n in (1, profile.rss_endpoints)}
        finally:
            sink.stop()
            redis.stop()
    results["load_average_after"] = loadavg()
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Hookgate benchmarks (docs/benchmarks.md)")
    p.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    p.add_argument("--smoke", action="store_const", const="smoke", dest="profile",
                   help="a few seconds, for the test suite: --profile smoke")
    p.add_argument("--out-json", default=str(ROOT / "docs" / "benchmarks.json"))
    p.add_argument("--out-md", default=str(ROOT / "docs" / "benchmarks.md"),
                   help="the results section of this file is rewritten; '' for none")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--sink", choices=("auto", "nginx", "python"), default="auto")
    p.add_argument("--only", action="append",
                   choices=("compile", "throughput", "latency", "hang", "rss"),
                   help="run only these parts (repeatable)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument("--events", type=int, help="override the profile's drain size")
    p.add_argument("--event-loop", choices=("auto", "asyncio"), default="auto",
                   help="the gateways' HOOKGATE_EVENT_LOOP (auto: uvloop when installed)")
    args = p.parse_args(argv)
    global EVENT_LOOP
    EVENT_LOOP = args.event_loop
    profile = PROFILES[args.profile]
    if args.events:
        profile = dataclasses.replace(profile, drain_events=args.events)
    log(f"profile {profile.name}; load average {loadavg()}")
    results = run(profile, args.sink, args.keep, set(args.only) if args.only else None)
    Path(args.out_json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out_json).write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    log(f"wrote {args.out_json} after {results['elapsed_s']}s")
    if args.out_md:
        from bench_report import write_report

        json_name = os.path.relpath(args.out_json, Path(args.out_md).resolve().parent)
        write_report(results, Path(args.out_md), plots=not args.no_plots, json_name=json_name)
        log(f"wrote {args.out_md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
