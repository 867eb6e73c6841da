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


def test_health_benchmark_checks_every_detector_and_finds_its_faults(tmp_path):
    """Tiny run: the figures are written, and after 400 s each of the six faults was found."""
    out = tmp_path / "health.json"
    r = subprocess.run([sys.executable, "-m", "benchmarks.health", "--detectors", "7000", "--ticks", "400",
                        "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    row = json.loads(out.read_text())
    assert row["detectors"] == 7000 and sum(row["states"].values()) == 7000
    assert all(n > 0 for n in row["states"].values()), row["states"]
    assert 0 < row["read_inputs_us_p50"] and 0 < row["kernel_us_p50"] <= row["kernel_us_p99"]
    assert "ratio kernel / reading the inputs" in r.stdout
