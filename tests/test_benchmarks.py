"""The benchmarks run as documented and write what they print."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

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


def test_record_benchmark_prints_and_writes_its_figures(tmp_path):
    out = tmp_path / "record.json"
    r = subprocess.run([sys.executable, "-m", "benchmarks.record", "--messages", "2000", "--ticks", "5",
                        "--repeat", "1", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    for label in ("single", "batch100"):
        row = res[label]
        for key in ("socket", "inproc"):
            assert row[f"{key}_msgs_per_s"] > 0 and row[f"{key}_recorded_msgs_per_s"] > 0
            assert row[f"{key}_ratio"] == row[f"{key}_recorded_msgs_per_s"] / row[f"{key}_msgs_per_s"]
        assert row["writer_ratio"] == row["writer_mb_per_s"] / row["raw_write_mb_per_s"]
        assert f"{row['writer_records_per_s']:12,.0f}" in r.stdout
    assert res["replay"]["mismatches"] == 0 and res["replay"]["commands_compared"] == 5 * 10


def test_ingest_benchmark_prints_and_writes_its_figures(tmp_path):
    out = tmp_path / "ingest.json"
    r = subprocess.run([sys.executable, "-m", "benchmarks.ingest", "--grid", "3", "--detectors", "500",
                        "--messages", "5000", "--bulk-size", "100", "--bulk-messages", "20", "--seconds", "3",
                        "--burst-seconds", "0.5", "--repeat", "1", "--json", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert res["detectors"] == 500
    assert res["ratio_single"] == res["ingest_msgs_per_s"] / res["raw_msgs_per_s"]
    assert res["batched_readings_per_s"] == pytest.approx(res["ratio_batched"] * res["raw_bulk_readings_per_s"])
    assert res["lost"] == 0 and res["rejected"] == {}
    assert res["sustained_readings_sent"] > 0 and res["accepted"] >= res["sustained_readings_sent"]
    assert f"ratio {res['ratio_single']:.2f}" in r.stdout


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
