"""Start-up with many endpoints: how long ``hookgate run`` takes to be ready on a large config.

    python tests/bench/bench_startup.py [--endpoints 10000] [--runs 3]
    python tests/bench/bench_startup.py --tree before=/tmp/old --tree after=. --runs 3

The config directory is made with the tests' manifest helpers (``endpoint_yaml``,
``subscription_yaml``): N WebhookEndpoints sharing one signing Secret and N Subscriptions,
one per endpoint with its own event type, every other one with a CEL ``filter``. Then, per
run and per source tree, each in a fresh process:

* validate: ``hookgate validate DIR``, wall time of the command;
* load: ``FileConfig.load()`` as ``hookgate run`` calls it at start (read, schema check,
  parse, compile), CPU and wall time, cold (first in the process) and again (what a reload
  does, warm caches), with the warm load split into ``load_paths`` and ``compile_config``;
* ready: ``hookgate run`` from spawn until ``GET /readyz`` answers 200, and the CPU time
  the process used until then (steadier than wall time on a shared machine);
* reload: one more endpoint and subscription written to a new file in the directory while
  that gateway runs, until it logs the new config applied (includes up to 1 s of the
  directory poll), and the slowest ``/readyz`` answer meanwhile (the reload runs in a
  thread and shares the GIL with the event loop).

With several ``--tree LABEL=PATH`` (e.g. a ``git archive`` of an older commit), runs
alternate between the trees, in turn order reversed every round, so that a machine whose
speed drifts does not favour one: that is how docs/benchmarks.md compares before and after.
Prints the median and range of each figure per tree as a Markdown table; ``--out-json``
keeps every sample.

Not a test; never collected by pytest (files are named bench_*.py).
"""

from __future__ import annotations

import argparse
import calendar
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
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.manifests import SECRET, endpoint_yaml, subscription_yaml  # noqa: E402

FIGURES = ("validate_s", "load_cold_s", "load_cold_cpu_s", "load_warm_s", "load_paths_s",
           "compile_s", "ready_s", "ready_cpu_s", "reload_s", "reload_readyz_max_s")

# Run in a child whose sys.path starts with the tree under test: FileConfig.load as
# `hookgate run` calls it, twice, then the warm load's two halves.
LOAD = r"""
import json, sys, time
t0 = time.perf_counter()
from hookgate.deliverer.config.files import FileConfig
from hookgate.model.compiler import compile_config, select_gateway
from hookgate.model.manifests import load_paths
imported = time.perf_counter() - t0
files = FileConfig(sys.argv[1], sys.argv[2], announce=lambda text: None)
out = {"import_s": imported}
for name in ("cold", "warm"):
    w, c = time.perf_counter(), time.process_time()
    config = files.load()
    out[f"load_{name}_s"] = time.perf_counter() - w
    out[f"load_{name}_cpu_s"] = time.process_time() - c
    assert len(config.compiled.config.endpoints) == int(sys.argv[3]), "endpoints missing"
    del config
w = time.perf_counter()
resources, problems = load_paths([sys.argv[1]])
out["load_paths_s"] = time.perf_counter() - w
assert not problems, problems[:3]
w = time.perf_counter()
compiled = compile_config(resources, select_gateway(resources, None))
out["compile_s"] = time.perf_counter() - w
assert not compiled.problems, compiled.problems[:3]
print(json.dumps(out))
"""


def log(msg: str) -> None:
    print(f"[bench-startup {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def write_config(directory: Path, n: int) -> None:
    """``n`` endpoints (``ep<i>``, one shared Secret) and ``n`` subscriptions, half with a
    CEL filter, in one file, as a platform team's generated config would be."""
    directory.mkdir(parents=True, exist_ok=True)
    ref = "  secretRef: {name: signing}\n"
    parts = [f"apiVersion: v1\nkind: Secret\nmetadata: {{name: signing}}\n"
             f"stringData: {{secret: {SECRET}}}\n---\n"]
    for i in range(n):
        parts.append(endpoint_yaml(f"ep{i}", f"https://hooks{i}.example.com/in",
                                   secret=False, extra=ref))
        sub = subscription_yaml(f"sub{i}", f"ep{i}", f'["order.*", "tenant{i}.created"]')
        if i % 2:
            sub = sub.removesuffix("---\n") + f"  filter: 'data.amount > {i}'\n---\n"
        parts.append(sub)
    (directory / "endpoints.yaml").write_text("".join(parts))


def tree_env(tree: Path) -> dict[str, str]:
    """The environment of a child that must import ``hookgate`` from ``tree``."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": str(tree) + (os.pathsep + path if path else "")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all threads (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def readyz(url: str) -> int:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=5) as resp:
            return int(resp.status)
    except OSError:
        return 0


def measure_validate(tree: Path, config: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "hookgate", "validate", str(config)],
                          cwd=tree, env=tree_env(tree), capture_output=True, text=True,
                          timeout=600)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"hookgate validate failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return took


def measure_load(tree: Path, config: Path, work: Path, n: int) -> dict[str, float]:
    proc = subprocess.run([sys.executable, "-c", LOAD, str(config), str(work / "load-data"),
                           str(n)], cwd=tree, env=tree_env(tree), capture_output=True,
                          text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"load failed:\n{proc.stderr[-3000:]}")
    result: dict[str, float] = json.loads(proc.stdout.splitlines()[-1])
    return result


def applied_after(log_file: Path, since: float, endpoints: int) -> float | None:
    """The log time of the first "config applied" with ``endpoints`` endpoints."""
    for line in log_file.read_text().splitlines():
        with contextlib.suppress(ValueError):
            doc = json.loads(line)
            if doc.get("message", "").startswith(f"config applied: {endpoints} endpoints"):
                stamp = time.strptime(doc["time"][:19], "%Y-%m-%dT%H:%M:%S")  # UTC
                at = calendar.timegm(stamp) + int(doc["time"][20:23]) / 1000
                if at >= since - 0.01:
                    return at
    return None


def measure_run(tree: Path, config: Path, work: Path, n: int, tag: str) -> dict[str, float]:
    """``hookgate run`` to ready, then one reload."""
    data = work / f"data-{tag}"
    shutil.rmtree(data, ignore_errors=True)
    extra = config / "extra.yaml"
    extra.unlink(missing_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_file = work / f"gateway-{tag}.log"
    args = [sys.executable, "-m", "hookgate", "run", "--config", str(config), "--data-dir",
            str(data), "--listen", f"127.0.0.1:{port}", "--log-format", "json", "--grace", "2"]
    out: dict[str, float] = {}
    with log_file.open("wb") as sink:
        start = time.perf_counter()
        proc = subprocess.Popen(args, cwd=tree, env=tree_env(tree), stdout=sink,
                                stderr=subprocess.STDOUT)
    try:
        deadline = start + 300
        while readyz(url) != 200:
            if proc.poll() is not None or time.perf_counter() > deadline:
                raise RuntimeError("the gateway did not get ready:\n"
                                   + log_file.read_text()[-3000:])
            time.sleep(0.02)
        out["ready_s"] = time.perf_counter() - start
        out["ready_cpu_s"] = cpu_seconds(proc.pid)

        # the reload: a new file with one more endpoint and subscription
        slowest = [0.0]
        stop = threading.Event()

        def probe() -> None:
            while not stop.is_set():
                t = time.perf_counter()
                readyz(url)
                slowest[0] = max(slowest[0], time.perf_counter() - t)
                time.sleep(0.05)

        prober = threading.Thread(target=probe, daemon=True)
        prober.start()
        changed = time.time()
        extra.write_text(endpoint_yaml("ep-extra", "https://extra.example.com/in", secret=False,
                                       extra="  secretRef: {name: signing}\n")
                         + subscription_yaml("sub-extra", "ep-extra", '["extra.*"]'))
        deadline = time.perf_counter() + 300
        while (applied := applied_after(log_file, changed, n + 1)) is None:
            if proc.poll() is not None or time.perf_counter() > deadline:
                raise RuntimeError("the reload was not applied:\n" + log_file.read_text()[-3000:])
            time.sleep(0.05)
        stop.set()
        prober.join()
        out["reload_s"] = max(0.0, applied - changed)  # the log has milliseconds
        out["reload_readyz_max_s"] = slowest[0]
    finally:
        extra.unlink(missing_ok=True)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return out


def one_run(tree: Path, config: Path, work: Path, n: int, only: set[str], tag: str
            ) -> dict[str, float]:
    sample: dict[str, float] = {}
    if "validate" in only:
        sample["validate_s"] = measure_validate(tree, config)
    if "load" in only:
        sample.update(measure_load(tree, config, work, n))
    if "run" in only:
        sample.update(measure_run(tree, config, work, n, tag))
    return sample


def summary(samples: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for key in FIGURES:
        values = [s[key] for s in samples if key in s]
        if values:
            out[key] = {"median": statistics.median(values), "min": min(values),
                        "max": max(values), "n": len(values)}
    return out


def table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    labels = list(results)
    lines = ["| figure | " + " | ".join(f"{label} (median, range)" for label in labels) + " |",
             "|---|" + "---|" * len(labels)]
    for key in FIGURES:
        cells = []
        for label in labels:
            s = results[label].get(key)
            cells.append(f"{s['median']:.2f} s ({s['min']:.2f} to {s['max']:.2f})" if s else "")
        if any(cells):
            lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--endpoints", type=int, default=10_000,
                   help="endpoints, and as many subscriptions (default 10,000)")
    p.add_argument("--runs", type=int, default=3, help="runs per tree (default 3)")
    p.add_argument("--tree", action="append", default=[], metavar="LABEL=PATH",
                   help="a source tree to measure (repeat to compare; default: this one)")
    p.add_argument("--only", default="validate,load,run",
                   help="comma-separated: validate, load, run (default all)")
    p.add_argument("--out-json", type=Path, help="write every sample here")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    args = p.parse_args(argv)

    trees: list[tuple[str, Path]] = []
    for spec in args.tree or [f"current={ROOT}"]:
        label, _, path = spec.partition("=")
        if not path or not (Path(path) / "hookgate").is_dir():
            p.error(f"--tree {spec}: give LABEL=PATH of a directory holding hookgate/")
        trees.append((label, Path(path).resolve()))
    only = set(args.only.split(","))

    work = Path(tempfile.mkdtemp(prefix="hookgate-bench-startup-"))
    try:
        config = work / "config"
        write_config(config, args.endpoints)
        log(f"{args.endpoints} endpoints + {args.endpoints} subscriptions in {config}; "
            f"trees: {', '.join(f'{label}={path}' for label, path in trees)}")
        samples: dict[str, list[dict[str, float]]] = {label: [] for label, _ in trees}
        for run in range(args.runs):
            order = trees if run % 2 == 0 else trees[::-1]
            for label, tree in order:
                sample = one_run(tree, config, work, args.endpoints, only, f"{label}-{run}")
                samples[label].append(sample)
                log(f"run {run + 1} {label}: " + ", ".join(
                    f"{k} {v:.2f}" for k, v in sample.items() if k in FIGURES))
        results = {label: summary(s) for label, s in samples.items()}
        print()
        print(f"{args.endpoints:,} endpoints + {args.endpoints:,} subscriptions, "
              f"{args.runs} runs per tree, load average {os.getloadavg()[0]:.2f}")
        print(table(results))
        if args.out_json:
            args.out_json.parent.mkdir(parents=True, exist_ok=True)
            args.out_json.write_text(json.dumps(
                {"endpoints": args.endpoints, "trees": {label: str(path) for label, path in trees},
                 "samples": samples, "summary": results}, indent=2) + "\n")
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
