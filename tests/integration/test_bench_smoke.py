"""The benchmark harness still works: ``make bench-quick``'s entry point in its smoke profile
(a few seconds) writes a well-formed results JSON and report, to a temporary path.

Benchmarks are not tests: nothing here asserts a timing, only that each figure is there.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_run.py"


@pytest.mark.slow
def test_bench_smoke_writes_well_formed_results(tmp_path: Path) -> None:
    out_json, out_md = tmp_path / "benchmarks.json", tmp_path / "benchmarks.md"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--smoke", "--out-json", str(out_json),
         "--out-md", str(out_md), "--no-plots"],
        capture_output=True, text=True, timeout=100)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    r = json.loads(out_json.read_text())
    assert r["profile"] == "smoke"
    assert {"cores", "cpu_model", "date"} <= set(r["machine"])
    assert r["ceiling_rps"] > 0
    assert r["deliverer_rps"]["sqlite"] > 0
    assert r["ratio"]["sqlite"] == pytest.approx(r["deliverer_rps"]["sqlite"] / r["ceiling_rps"],
                                                 abs=0.001)
    # present, but possibly 0: the smoke drain's 10-90 % window can be shorter than one
    # tick of the process CPU clock (10 ms) on a fast moment of the machine
    assert r["cpu_seconds_per_1000"]["sqlite"] >= 0
    (drain,) = r["drain"]
    assert drain["unique"] == drain["expected"] == 200  # every delivery arrived, once
    run = r["latency"]["sqlite"]["50"]
    assert run["delivered"] == run["expected"] > 0
    assert {"p50_ms", "p95_ms", "p99_ms", "max_ms"} <= set(run["latency"])
    assert r["compile"]["compile_s"] > 0

    report = out_md.read_text()
    assert "| target | wanted | measured | met |" in report
    assert "bench:results:end" in report
