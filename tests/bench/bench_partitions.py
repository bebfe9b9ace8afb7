"""Partitions (``spec.queue.partitions``): drain and latency with 1 and 4 partitions, on one
redis-server and on a Redis Cluster of 3 masters + 3 replicas, all on loopback.

    python tests/bench/bench_partitions.py [--rounds 3] [--events 15000] [--rate 500]
                                           [--seconds 10] [--out build/bench/partitions.json]

The scenarios are bench_run.py's (docs/benchmarks.md): the same nginx sink, 1 KiB deliveries,
one endpoint with ``maxInFlight: 256``, ``hookgate run --concurrency 256``, Redis with AOF and
``appendfsync everysec``, ``noeviction``. The queue URL is given with ``--queue``; the
partition count comes from a WebhookGateway manifest in ``--config``
(``tests.support.manifests.queue_gateway_yaml``). Per configuration and round:

* drain: N deliveries enqueued through the queue API (a ``PartitionedQueue`` when P > 1),
  then the gateway starts; deliveries/s over the 10th-90th percentile, the CPU of the
  gateway, of the Redis masters and replicas, of the sink and of everything else on the
  machine (``/proc/stat`` busy minus ours; and steal) over the same window; the Redis
  commands each master ran (``INFO commandstats``); each partition's share and finishing
  time (a starving partition finishes late); every prefilled event delivered exactly once
  and the queue empty afterwards;
* latency: a fresh gateway, events posted at ``--rate`` for ``--seconds``; sink log time
  minus the time the load generator started the ingest POST (bench_run.py's ``rate_run``).

The four configurations run in alternating order (ABBA: one node P1, P4, cluster P1, P4,
then backwards) for ``--rounds`` rounds, so drift of the machine hits every one alike; the
report gives medians and the range. Before each round the harness waits (at most
``--max-wait`` s) for the 1-minute load to fall below ``--quiet-load``, and says so when it
gives up (``round_started_quiet`` in the results); the CPU of other work during each drain is
printed under the table. Bounded in count and time; loopback only. Not a test: never
collected by pytest.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_run  # noqa: E402
import redis as redis_sync  # noqa: E402
from bench_load import EVENT_TYPE, payload  # noqa: E402
from bench_run import (  # noqa: E402
    GATEWAY,
    PROFILES,
    Bench,
    GatewayProc,
    Redis,
    Sink,
    gateway_uses_uvloop,
    interp,
    loadavg,
    log,
    machine,
    workspace,
    write_config,
)
from redis.crc import key_slot  # noqa: E402

from hookgate.deliverer.intake.event import IngestRequest, build_event  # noqa: E402
from hookgate.deliverer.queues.factory import open_queue  # noqa: E402
from hookgate.deliverer.queues.redis.keys import Keys  # noqa: E402
from hookgate.deliverer.queues.redis.partitions import _hash  # noqa: E402
from tests.support.manifests import queue_gateway_yaml  # noqa: E402
from tests.support.redis_server import RedisCluster, start_redis_cluster  # noqa: E402

CLK = os.sysconf("SC_CLK_TCK")


def machine_cpu() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine since boot, all cores."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq) / CLK, steal / CLK


class CapturingSink(Sink):
    """The bench sink, keeping what the last rotation returned (to count duplicates)."""

    last: list[tuple[float, str, str]] = []

    def rotate(self) -> list[tuple[float, str, str]]:
        self.last = super().rotate()
        return self.last


# -- the two topologies -------------------------------------------------------------------------

class Topology:
    key: str
    label: str
    url: str

    def nodes(self) -> list[tuple[int, int, str]]:
        """(port, pid, role) of every redis-server."""
        raise NotImplementedError

    def cpu(self) -> dict[str, float]:
        out = {"master": 0.0, "replica": 0.0}
        for _, pid, role in self.nodes():
            out[role] += bench_run.proc_cpu(pid)
        return out

    def master_cpu(self) -> dict[int, float]:
        return {port: bench_run.proc_cpu(pid) for port, pid, role in self.nodes()
                if role == "master"}

    def flush(self) -> None:
        raise NotImplementedError

    def reset_stats(self) -> None:
        for port, _, role in self.nodes():
            if role == "master":
                with redis_sync.Redis(port=port) as r:
                    r.config_resetstat()

    def command_stats(self) -> dict[int, dict[str, dict[str, float]]]:
        """Per master: command -> {calls, usec} since the last reset."""
        out: dict[int, dict[str, dict[str, float]]] = {}
        for port, _, role in self.nodes():
            if role != "master":
                continue
            with redis_sync.Redis(port=port) as r:
                info = r.info("commandstats")
            out[port] = {k.removeprefix("cmdstat_"): {"calls": v["calls"], "usec": v["usec"]}
                         for k, v in info.items()}
        return out

    def placement(self, partitions: int) -> list[int | None]:
        """The port of the master that holds each partition's keys."""
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


class OneNode(Topology):
    key, label = "one", "one redis-server"

    def __init__(self, workdir: Path) -> None:
        self.redis = Redis(workdir)  # bench_run's: AOF everysec, noeviction
        self.redis.start()
        self.url = self.redis.url

    def nodes(self) -> list[tuple[int, int, str]]:
        assert self.redis.proc is not None
        return [(self.redis.port, self.redis.proc.pid, "master")]

    def flush(self) -> None:
        self.redis.flush()

    def placement(self, partitions: int) -> list[int | None]:
        return [self.redis.port] * partitions

    def stop(self) -> None:
        self.redis.stop()


class Cluster(Topology):
    key, label = "cluster", "Redis Cluster, 3 masters + 3 replicas"

    def __init__(self, workdir: Path, binary: str) -> None:
        self.cluster: RedisCluster = start_redis_cluster(binary, workdir / "cluster")
        # the durability of bench_run's Redis (tests/support starts them with "always")
        for node in self.cluster.nodes:
            with redis_sync.Redis(port=node.port) as r:
                r.config_set("appendfsync", "everysec")
                r.config_set("maxmemory-policy", "noeviction")
        self.url = self.cluster.url
        self._roles()

    def _roles(self) -> None:
        self.roles: dict[int, str] = {}
        for node in self.cluster.nodes:
            with redis_sync.Redis(port=node.port) as r:
                role = str(r.info("replication")["role"])
                self.roles[node.port] = "master" if role == "master" else "replica"
        with redis_sync.Redis(port=self.cluster.nodes[0].port) as r:
            self.slots = [(int(lo), int(hi), int(master[1]))
                          for lo, hi, master, *_ in r.execute_command("CLUSTER SLOTS")]

    def nodes(self) -> list[tuple[int, int, str]]:
        out = []
        for node in self.cluster.nodes:
            assert node.process is not None
            out.append((node.port, node.process.pid, self.roles[node.port]))
        return out

    def flush(self) -> None:
        self.cluster.flush()
        time.sleep(0.2)  # the replicas apply it

    def placement(self, partitions: int) -> list[int | None]:
        out: list[int | None] = []
        for p in range(partitions):
            slot = key_slot(Keys(GATEWAY, p, partitions).stream.encode())
            out.append(next((port for lo, hi, port in self.slots if lo <= slot <= hi), None))
        return out

    def stop(self) -> None:
        self.cluster.stop()


# -- one configuration ------------------------------------------------------------------------

async def prefill(url: str, partitions: int, events: int, size: int) -> tuple[list[str], float]:
    queue = open_queue(url, gateway=GATEWAY, visibility_timeout=60, partitions=partitions)
    await queue.open()
    ids: list[str] = []
    start = time.monotonic()
    now = time.time()
    try:
        for first in range(0, events, 500):
            batch = [build_event(IngestRequest(type=EVENT_TYPE, data=payload(i, size)), now)
                     for i in range(first, min(events, first + 500))]
            await asyncio.gather(*(queue.enqueue(e, ["default/ep0"]) for e in batch))
            ids += [e.id for e in batch]
    finally:
        await queue.close()
    return ids, time.monotonic() - start


async def queue_depth(url: str, partitions: int) -> dict[str, int]:
    queue = open_queue(url, gateway=GATEWAY, visibility_timeout=60, partitions=partitions)
    await queue.open()
    try:
        d = await queue.depth()
    finally:
        await queue.close()
    return {"ready": d.ready, "delayed": d.delayed, "dead": d.dead, "leased": d.leased}


def log_problems(path: Path) -> list[str]:
    """WARNING/ERROR lines and tracebacks of a gateway log."""
    if not path.exists():
        return []
    return [line.strip() for line in path.read_text(errors="replace").splitlines()
            if "WARNING" in line or "ERROR" in line or "Traceback" in line][:20]


@dataclass
class Runner:
    bench: Bench
    sink: CapturingSink
    workdir: Path
    events: int
    rate: float
    seconds: float

    def config(self, topo: Topology, partitions: int, tag: str) -> Path:
        config = self.workdir / f"config-{tag}"
        write_config(config, [f"{self.sink.url}/ep0"], max_in_flight=256)
        (config / "gateway.yaml").write_text(queue_gateway_yaml(topo.url, partitions=partitions))
        return config

    def drain(self, topo: Topology, partitions: int, tag: str) -> dict[str, Any]:
        config = self.config(topo, partitions, f"drain-{tag}")
        topo.flush()
        ids, fill_s = asyncio.run(prefill(topo.url, partitions, self.events, 1024))
        home = {i: _hash(i, partitions) for i in ids} if partitions > 1 else {i: 0 for i in ids}
        self.sink.rotate()
        topo.reset_stats()
        gw = GatewayProc(self.workdir, config, topo.url, 256, f"drain-{tag}")
        series: list[tuple[float, ...]] = []

        def sample() -> None:
            rc = topo.cpu()
            busy, steal = machine_cpu()
            series.append((time.time(), gw.cpu() if gw.proc else 0.0, rc["master"],
                           rc["replica"], self.sink.cpu(), busy, steal,
                           *topo.master_cpu().values()))

        try:
            gw.spawn()
            sample()
            deadline = time.monotonic() + 30 + self.events / 200
            while self.sink.count() < self.events and time.monotonic() < deadline:
                if gw.proc is not None and gw.proc.poll() is not None:
                    break
                time.sleep(0.1)
                sample()
            time.sleep(0.3)
            sample()
            lines = self.sink.rotate()
        finally:
            gw.stop()
        stats = topo.command_stats()
        depth = asyncio.run(queue_depth(topo.url, partitions))
        times = sorted(t for t, _, _ in lines)
        delivered = [w for _, _, w in lines]
        out: dict[str, Any] = {
            "topology": topo.key, "partitions": partitions, "events": self.events,
            "prefill_s": round(fill_s, 2), "lines": len(lines), "unique": len(set(delivered)),
            "missing": len(set(ids) - set(delivered)),
            "duplicates": len(delivered) - len(set(delivered)),
            "foreign": len(set(delivered) - set(ids)), "depth_after": depth,
            "placement": topo.placement(partitions),
            "log_problems": log_problems(gw.log)}
        n = len(times)
        if n >= 10:
            lo, hi = int(n * 0.1), int(n * 0.9) - 1
            t_lo, t_hi = times[lo], times[hi]
            span = max(1e-6, t_hi - t_lo)
            out["rps"] = round((hi - lo) / span, 1)
            out["window_s"] = round(span, 3)

            def over(k: int) -> float:
                col = [(s[0], s[k]) for s in series]
                return interp(col, t_hi) - interp(col, t_lo)

            gw_cpu, m_cpu, r_cpu, sink_cpu, busy, steal = (over(k) for k in range(1, 7))
            per_master = [over(k) for k in range(7, len(series[0]))]
            out.update(
                gateway_cpu_util=round(gw_cpu / span, 3),
                gateway_cpu_s_per_1000=round(gw_cpu / (hi - lo) * 1000, 4),
                redis_master_cpu_util=round(m_cpu / span, 3),
                redis_replica_cpu_util=round(r_cpu / span, 3),
                redis_cpu_s_per_1000=round((m_cpu + r_cpu) / (hi - lo) * 1000, 4),
                redis_master_cpu_s_per_1000=round(m_cpu / (hi - lo) * 1000, 4),
                per_master_cpu_util=[round(c / span, 3) for c in per_master],
                sink_cpu_util=round(sink_cpu / span, 3),
                machine_busy_util=round(busy / span, 3),
                other_cpu_util=round((busy - gw_cpu - m_cpu - r_cpu - sink_cpu) / span, 3),
                steal_util=round(steal / span, 3))
        # each partition: share, and when its median and last delivery came (from the first)
        if times:
            t0 = times[0]
            parts: list[dict[str, Any]] = []
            for p in range(partitions):
                tp = sorted(t for t, _, w in lines if home.get(w) == p)
                parts.append({"partition": p, "delivered": len(tp),
                              "median_s": round(statistics.median(tp) - t0, 3) if tp else None,
                              "last_s": round(tp[-1] - t0, 3) if tp else None})
            out["per_partition"] = parts
        calls = {port: sum(c["calls"] for c in s.values()) for port, s in stats.items()}
        usec = {port: sum(c["usec"] for c in s.values()) for port, s in stats.items()}
        out["redis_commands"] = {
            str(port): {"calls": calls[port], "usec": usec[port],
                        "top": sorted(((k, v["calls"]) for k, v in s.items()),
                                      key=lambda kv: -kv[1])[:6]}
            for port, s in stats.items()}
        scripts = sum(c["calls"] for st in stats.values() for k, c in st.items()
                      if k in ("evalsha", "eval", "fcall", "evalsha_ro", "eval_ro"))
        if lines:
            # commands run inside scripts are counted too (INFO commandstats does)
            out["redis_calls_per_1000"] = round(sum(calls.values()) / len(lines) * 1000, 1)
            out["script_calls_per_1000"] = round(scripts / len(lines) * 1000, 1)
            out["redis_usec_per_delivery"] = round(sum(usec.values()) / len(lines), 2)
        log(f"drain {topo.key} P={partitions}: {out.get('rps', 0):.0f}/s, gateway CPU "
            f"{out.get('gateway_cpu_util', 0):.2f} ({out.get('gateway_cpu_s_per_1000', 0):.3f} "
            f"s/1000), redis masters {out.get('redis_master_cpu_util', 0):.2f} replicas "
            f"{out.get('redis_replica_cpu_util', 0):.2f}, other {out.get('other_cpu_util', 0):.2f}"
            f"; {out['unique']}/{self.events} unique, {out['duplicates']} dup, "
            f"{out['missing']} missing, depth {depth}")
        return out

    def latency(self, topo: Topology, partitions: int, tag: str) -> dict[str, Any]:
        config = self.config(topo, partitions, f"rate-{tag}")
        topo.flush()
        gw = GatewayProc(self.workdir, config, topo.url, 256, f"rate-{tag}")
        gw.spawn()
        try:
            gw.wait_ready(60)
            r0, b0, t0 = topo.cpu(), machine_cpu(), time.time()
            res = self.bench.rate_run(gw, self.rate, self.seconds)
            r1, b1, t1 = topo.cpu(), machine_cpu(), time.time()
            wids = [w for _, _, w in self.sink.last]
        finally:
            gw.stop()
        depth = asyncio.run(queue_depth(topo.url, partitions))
        wall = max(1e-6, t1 - t0)
        res.update(topology=topo.key, partitions=partitions,
                   duplicates=len(wids) - len(set(wids)), depth_after=depth,
                   redis_master_cpu_util=round((r1["master"] - r0["master"]) / wall, 3),
                   redis_replica_cpu_util=round((r1["replica"] - r0["replica"]) / wall, 3),
                   machine_busy_util=round((b1[0] - b0[0]) / wall, 3),
                   steal_util=round((b1[1] - b0[1]) / wall, 3),
                   log_problems=log_problems(gw.log))
        return res


# -- rounds and the report -----------------------------------------------------------------

def wait_quiet(limit: float, max_wait: float) -> tuple[list[float], bool]:
    """The load average once the 1-minute load is below ``limit`` (or ``max_wait`` passed),
    and whether it got there."""
    deadline = time.monotonic() + max_wait
    while os.getloadavg()[0] > limit and time.monotonic() < deadline:
        time.sleep(5)  # the load of other work on a shared machine: nothing to wait on
    load = loadavg()
    quiet = load[0] <= limit
    if not quiet:
        log(f"the 1-minute load is still {load[0]} > {limit} after {max_wait:g} s: the round "
            "runs anyway and shares the cores with other work (see other_cpu_util)")
    return load, quiet


def spread(values: Sequence[float]) -> dict[str, float]:
    v = [x for x in values if x is not None]
    if not v:
        return {}
    return {"median": round(statistics.median(v), 3), "min": round(min(v), 3),
            "max": round(max(v), 3), "n": len(v)}


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for topo in ("one", "cluster"):
        for p in sorted({r["partitions"] for r in runs}):
            tried = [r for r in runs if r["topology"] == topo and r["partitions"] == p]
            mine = [r for r in tried if "error" not in r]
            failed = len(tried) - len(mine)
            if not tried:
                continue
            if not mine:
                out.append({"topology": topo, "partitions": p, "rounds": 0, "failed": failed,
                            "problems": failed, "errors": sorted({r["error"] for r in tried})})
                continue
            d = [r["drain"] for r in mine]
            lat = [r["latency"] for r in mine]

            def col(rows: list[dict[str, Any]], key: str | Callable[[dict[str, Any]], Any]
                    ) -> dict[str, float]:
                get = key if callable(key) else (lambda row, k=key: row.get(k))
                return spread([get(row) for row in rows])

            out.append({
                "topology": topo, "partitions": p, "rounds": len(mine), "failed": failed,
                "errors": sorted({r["error"] for r in tried if "error" in r}),
                "rps": col(d, "rps"), "gateway_cpu_util": col(d, "gateway_cpu_util"),
                "gateway_cpu_s_per_1000": col(d, "gateway_cpu_s_per_1000"),
                "redis_master_cpu_util": col(d, "redis_master_cpu_util"),
                "redis_replica_cpu_util": col(d, "redis_replica_cpu_util"),
                "redis_cpu_s_per_1000": col(d, "redis_cpu_s_per_1000"),
                "redis_master_cpu_s_per_1000": col(d, "redis_master_cpu_s_per_1000"),
                "max_master_cpu_util": col(d, lambda r: max(r.get("per_master_cpu_util") or [0])),
                "redis_calls_per_1000": col(d, "redis_calls_per_1000"),
                "script_calls_per_1000": col(d, "script_calls_per_1000"),
                "other_cpu_util": col(d, "other_cpu_util"),
                "steal_util": col(d, "steal_util"),
                "p50_ms": col(lat, lambda r: r["latency"].get("p50_ms")),
                "p99_ms": col(lat, lambda r: r["latency"].get("p99_ms")),
                "ingest_p99_ms": col(lat, lambda r: r["ingest_latency"].get("p99_ms")),
                "rate_gateway_cpu_util": col(lat, "gateway_cpu_util"),
                "rate_redis_master_cpu_util": col(lat, "redis_master_cpu_util"),
                "sustained": sum(bool(r["sustained"]) for r in lat),
                "problems": failed + sum(r["duplicates"] + r["missing"] + len(r["log_problems"])
                                for r in d)
                + sum(r["duplicates"] + (r["expected"] - r["delivered"]) + len(r["log_problems"])
                      for r in lat)})
    return out


def fmt(s: dict[str, float], digits: int = 0) -> str:
    if not s:
        return "-"
    f = f"{{:,.{digits}f}}"
    return f"{f.format(s['median'])} ({f.format(s['min'])}-{f.format(s['max'])})"


def table(summary: list[dict[str, Any]], rate: float) -> str:
    label = {"one": "one redis-server", "cluster": "cluster, 3 masters + 3 replicas"}
    rows = ["| Redis | partitions | drain deliveries/s | gateway CPU use | gateway CPU s / 1,000 "
            "| Redis CPU use, masters + replicas | busiest master | "
            f"p50 ms at {rate:g}/s | p99 ms at {rate:g}/s |",
            "|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        if not s["rounds"]:
            rows.append(f"| {label[s['topology']]} | {s['partitions']} | failed: "
                        f"{'; '.join(s['errors'])[:200]} | | | | | | |")
            continue
        rows.append(
            f"| {label[s['topology']]} | {s['partitions']} | {fmt(s['rps'])} | "
            f"{fmt(s['gateway_cpu_util'], 2)} | {fmt(s['gateway_cpu_s_per_1000'], 3)} | "
            f"{fmt(s['redis_master_cpu_util'], 2)} + {fmt(s['redis_replica_cpu_util'], 2)} | "
            f"{fmt(s['max_master_cpu_util'], 2)} | {fmt(s['p50_ms'], 1)} | {fmt(s['p99_ms'], 1)} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--events", type=int, default=PROFILES["full"].drain_events)
    p.add_argument("--rate", type=float, default=500.0)
    p.add_argument("--seconds", type=float, default=PROFILES["full"].rate_seconds)
    p.add_argument("--partitions", type=int, nargs="+", default=[1, 4])
    p.add_argument("--only", choices=("one", "cluster"), action="append")
    p.add_argument("--quiet-load", type=float, default=1.5,
                   help="wait before each round until the 1-minute load is below this")
    p.add_argument("--max-wait", type=float, default=60.0)
    p.add_argument("--out", default=str(bench_run.ROOT / "build" / "bench" / "partitions.json"))
    p.add_argument("--keep", action="store_true")
    p.add_argument("--smoke", action="store_true", help="seconds: 1 round, tiny sizes")
    args = p.parse_args(argv)
    if args.smoke:
        args.rounds, args.events, args.rate, args.seconds = 1, 300, 50.0, 1.0
    binary = os.environ.get("HOOKGATE_REDIS_SERVER") or "/usr/bin/redis-server"
    profile = PROFILES["full"] if not args.smoke else PROFILES["smoke"]
    results: dict[str, Any] = {"machine": machine(), "load_average_before": loadavg(),
                               "events": args.events, "rate": args.rate,
                               "seconds": args.seconds, "rounds": args.rounds, "runs": []}
    started = time.monotonic()
    with workspace(args.keep) as workdir:
        sink = CapturingSink(workdir)
        sink.start()
        topologies: dict[str, Topology] = {}
        try:
            kinds = args.only or ["one", "cluster"]
            if "one" in kinds:
                topologies["one"] = OneNode(workdir)
            if "cluster" in kinds:
                cluster = topologies["cluster"] = Cluster(workdir, binary)
                log(f"cluster up: roles {cluster.roles}")
            bench = Bench(profile, workdir, sink, None, uvloop_gateway=gateway_uses_uvloop())
            results["sink"] = sink.kind
            results["event_loop"] = "uvloop" if bench.uvloop_gateway else "asyncio"
            runner = Runner(bench, sink, workdir, args.events, args.rate, args.seconds)
            configs = [(t, n) for t in kinds for n in args.partitions]
            for r in range(args.rounds):
                load, quiet = wait_quiet(args.quiet_load, args.max_wait)
                log(f"round {r + 1}/{args.rounds}, load average {load}")
                for t, n in (configs if r % 2 == 0 else configs[::-1]):
                    tag = f"{t}-p{n}-r{r}"
                    run: dict[str, Any] = {"round": r, "topology": t, "partitions": n,
                                           "round_started_quiet": quiet,
                                           "load_before": loadavg()}
                    try:  # a failure is a finding: recorded, and the other runs go on
                        run["drain"] = runner.drain(topologies[t], n, tag)
                        run["latency"] = runner.latency(topologies[t], n, tag)
                    except Exception as exc:
                        run["error"] = f"{type(exc).__name__}: {exc}"
                        log(f"{tag} FAILED: {run['error']}")
                    run["load_after"] = loadavg()
                    results["runs"].append(run)
        finally:
            for topo in topologies.values():
                topo.stop()
            sink.stop()
    results["load_average_after"] = loadavg()
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    results["summary"] = summarize(results["runs"])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(table(results["summary"], args.rate))
    for s in results["summary"]:
        if s["rounds"]:
            print(f"  {s['topology']} P={s['partitions']}: other work {fmt(s['other_cpu_util'], 2)}"
                  f" cores, steal {fmt(s['steal_util'], 3)} during the drains")
    unquiet = sorted({r["round"] + 1 for r in results["runs"] if not r["round_started_quiet"]})
    if unquiet:
        print(f"  rounds {unquiet} started above --quiet-load {args.quiet_load:g}")
    problems = sum(s["problems"] for s in results["summary"])
    log(f"wrote {args.out} after {results['elapsed_s']}s; problems seen: {problems}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
