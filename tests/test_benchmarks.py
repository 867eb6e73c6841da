"""The benchmarks run as documented and write what they print."""

from __future__ import annotations

import json
import subprocess
import sys

from controllers import CONTROLLERS


def test_tick_benchmark_writes_a_row_per_network_and_controller(resco_dir, tmp_path):
    out = tmp_path / "tick.json"
    r = subprocess.run([sys.executable, "-m", "benchmarks.tick", "--ticks", "5", "--json", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = json.loads(out.read_text())
    nets = {p.parent.name for p in resco_dir.glob("*/*.net.xml")}
    assert {(row["network"], row["controller"]) for row in rows} == {(n, c) for n in nets for c in CONTROLLERS}
    for row in rows:
        assert 0 < row["decide_us_p50"] <= row["tick_us_p50"] * 10
        assert row["network"] in r.stdout


def test_estimate_benchmark_times_each_size(tmp_path):
    """Each requested grid is built with about that many junctions and its step is timed."""
    out = tmp_path / "estimate.json"
    r = subprocess.run([sys.executable, "-m", "benchmarks.estimate", "--sizes", "16,100", "--ticks", "5",
                        "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = json.loads(out.read_text())
    assert [row["junctions"] for row in rows] == [16, 100]
    for row in rows:
        assert row["edges"] == 4 * row["junctions"] - 4 * int(row["junctions"] ** 0.5)
        assert 0 < row["step_ms_p50"] <= row["step_ms_max"]
        assert row["p50_over_limit"] == row["step_ms_p50"] / 20.0
        assert f"{row['junctions']:9d}" in r.stdout
    bad = subprocess.run([sys.executable, "-m", "benchmarks.estimate", "--sizes", "x"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--sizes" in bad.stderr
