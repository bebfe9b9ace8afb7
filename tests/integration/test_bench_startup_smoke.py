"""The start-up benchmark still works (``make bench-startup``): a small config, one run, in
a few seconds. Nothing here asserts a timing, only that each figure is measured."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_startup.py"


@pytest.mark.slow
def test_bench_startup_measures_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "startup.json"
    proc = subprocess.run([sys.executable, str(BENCH), "--endpoints", "20", "--runs", "1",
                           "--out-json", str(out)], capture_output=True, text=True, timeout=100)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["endpoints"] == 20
    (sample,) = result["samples"]["current"]
    for figure in ("validate_s", "load_cold_s", "load_warm_s", "load_paths_s", "compile_s",
                   "ready_s", "ready_cpu_s", "reload_s", "reload_readyz_max_s"):
        assert sample[figure] >= 0, figure
    assert "| ready_s |" in proc.stdout
