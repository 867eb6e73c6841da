"""The benchmarks run as documented and write what they print."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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


def test_decide_benchmark_times_every_controller_at_every_size(tmp_path):
    """One row per size and controller; the decision time grows with the network."""
    out = tmp_path / "decide.json"
    r = subprocess.run([sys.executable, "-m", "benchmarks.decide", "--sizes", "16,400", "--decisions", "5",
                        "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = json.loads(out.read_text())
    assert {(row["controller"], row["junctions"]) for row in rows} == {(c, n) for c in CONTROLLERS for n in (16, 400)}
    for row in rows:
        assert row["decide_us_p50"] > 0 and row["budget"] == row["decide_us_p50"] / 5000.0
        assert row["controller"] in r.stdout
    bad = subprocess.run([sys.executable, "-m", "benchmarks.decide", "--controllers", "telepathy"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "telepathy" in bad.stderr


def test_synthetic_grid_is_a_consistent_network():
    """Every movement of the synthetic grid leaves a lane of its signal and enters a neighbour's."""
    import numpy as np

    from benchmarks.decide import synthetic_grid

    net = synthetic_grid(9)
    assert net.n_tls == 9 and net.n_links == 12 * 9 and net.n_phases == 4 * 9
    junction_of_lane = net.edge_to[net.lane_edge]
    for m in range(net.n_movements):
        t = net.link_tls[net.move_link[m]]
        assert junction_of_lane[net.move_in_lane[m]] == t
        assert net.edge_from[net.lane_edge[net.move_out_lane[m]]] == t
    for p in range(net.n_phases):  # no phase shows two conflicting links
        links = set(net.phase_link_idx[net.phase_link_ptr[p]:net.phase_link_ptr[p + 1]].tolist())
        for a in links:
            foes = net.link_conflict_idx[net.link_conflict_ptr[a]:net.link_conflict_ptr[a + 1]].tolist()
            assert not links & set(foes)
    assert np.unique(net.move_out_lane).size == net.n_movements - 4 * 9  # through and a turn share exit lane 0


@pytest.mark.sumo
def test_control_benchmark_writes_one_table(small_scenario, tmp_path):
    """Tiny run: two controllers and the failure case on the small city; table, markdown and JSON agree."""
    out, md = tmp_path / "control.json", tmp_path / "control.md"
    r = subprocess.run([sys.executable, "-m", "benchmarks.control", "--scenarios", str(small_scenario.sumocfg),
                        "--controllers", "adaptive,sumo-actuated", "--end", "300", "--fail-detectors", "0.2",
                        "--cache", str(tmp_path / "runs"), "--markdown", str(md), "--json", str(out), "-q"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    assert [row["controller_key"] for row in data["rows"]] == ["adaptive", "sumo-actuated", "adaptive@failed"]
    ad, sumo, failed = data["rows"]
    s = data["summary"][0]
    assert s["best_sumo"] == "sumo-actuated"
    assert s["ratio"] == round(ad["mean_time_loss_s"] / sumo["mean_time_loss_s"], 3)
    assert s["failed_ratio"] == round(failed["mean_time_loss_s"] / ad["mean_time_loss_s"], 3)
    assert failed["failed_detectors"]["fraction"] == 0.2
    assert md.read_text().count("| small |") == 4 and "| small |" in r.stdout
    # a second run reuses the cached outcomes: nothing is simulated again
    again = subprocess.run([sys.executable, "-m", "benchmarks.control", "--scenarios", str(small_scenario.sumocfg),
                            "--controllers", "adaptive,sumo-actuated", "--end", "300", "--fail-detectors", "0.2",
                            "--cache", str(tmp_path / "runs"), "--markdown", "", "-q"],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "-- small" not in again.stderr
    # another SUMO seed is another run, kept apart in the cache, and says which seed it had
    seeded = subprocess.run([sys.executable, "-m", "benchmarks.control", "--scenarios", str(small_scenario.sumocfg),
                             "--controllers", "sumo-actuated", "--end", "300", "--sumo-seed", "3",
                             "--cache", str(tmp_path / "runs"), "--markdown", "", "--json", str(out), "-q"],
                            capture_output=True, text=True, timeout=120)
    assert seeded.returncode == 0 and "-- small: sumo-actuated" in seeded.stderr, seeded.stderr
    assert [row["sumo_seed"] for row in json.loads(out.read_text())["rows"]] == [3]
    assert sumo["sumo_seed"] == 23423  # SUMO's default, as BASELINES.md
    # several seeds: one row per controller, the mean over the seeds (seed 3 and the default reused)
    three = subprocess.run([sys.executable, "-m", "benchmarks.control", "--scenarios", str(small_scenario.sumocfg),
                            "--controllers", "adaptive,sumo-actuated", "--end", "300", "--sumo-seed", "default,3-4",
                            "--fail-detectors", "0.2", "--cache", str(tmp_path / "runs"), "--markdown", str(md),
                            "--json", str(out), "-q"], capture_output=True, text=True, timeout=600)
    assert three.returncode == 0, three.stderr
    assert three.stderr.count("-- small:") == 5 and "-- small: sumo-actuated (SUMO seed 3)" not in three.stderr
    data = json.loads(out.read_text())
    ad3, sumo3, failed3 = data["rows"]
    assert sumo3["sumo_seeds"] == [23423, 3, 4] and sumo3["by_seed"][0]["mean_time_loss_s"] == sumo["mean_time_loss_s"]
    for row in (ad3, sumo3, failed3):
        losses = [x["mean_time_loss_s"] for x in row["by_seed"]]
        assert row["mean_time_loss_s"] == round(sum(losses) / 3, 2)
        assert row["teleports"] == sum(x["teleports"] for x in row["by_seed"])
    s = data["summary"][0]
    assert s["ratio"] == round(ad3["mean_time_loss_s"] / sumo3["mean_time_loss_s"], 3)
    assert s["ratio_by_seed"][0] == round(ad["mean_time_loss_s"] / sumo["mean_time_loss_s"], 3)
    assert len(s["failed_ratio_by_seed"]) == 3 and "SUMO seeds default, 3, 4" in md.read_text()
    bad = subprocess.run([sys.executable, "-m", "benchmarks.control", "--sumo-seed", "4-2"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "empty range of seeds" in bad.stderr


@pytest.mark.sumo
def test_control_benchmark_runs_the_engine_with_box_cameras(small_scenario, tmp_path):
    """By default the engine's row comes from a run with box cameras (as ``evaluate`` places
    them), kept apart in the cache from one with ``--no-box-cameras``; SUMO's run is the same
    either way (reused); the markdown says which."""
    md, out = tmp_path / "control.md", tmp_path / "control.json"
    args = [sys.executable, "-m", "benchmarks.control", "--scenarios", str(small_scenario.sumocfg),
            "--controllers", "adaptive,sumo-actuated", "--end", "120", "--cache", str(tmp_path / "runs"), "-q",
            "--json", str(out)]
    r = subprocess.run(args + ["--markdown", str(md)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    ad, sumo = json.loads(out.read_text())["rows"]
    assert ad["box_cameras"] > 0 and "box_cameras" not in sumo
    assert "with box cameras" in md.read_text()
    plain = subprocess.run(args + ["--no-box-cameras", "--markdown", str(md)], capture_output=True, text=True,
                           timeout=600)
    assert plain.returncode == 0, plain.stderr
    assert "-- small: adaptive" in plain.stderr and "-- small: sumo-actuated" not in plain.stderr
    assert json.loads(out.read_text())["rows"][0]["box_cameras"] == 0
    assert "without box cameras" in md.read_text()


def test_feed_benchmark_prints_and_writes_its_figures(tmp_path):
    """Tiny run: publish cost next to raw PUB/SUB, and the clone client loses nothing when joining late."""
    out = tmp_path / "feed.json"
    r = subprocess.run([sys.executable, "-m", "benchmarks.feed", "--grid", "3", "--ticks", "3", "--join-grid", "3",
                        "--joins", "1", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    pub = res["publish"]
    assert pub["feed"]["received"] == pub["raw"]["received"] == 3 * pub["messages_per_tick"]
    assert pub["ratio_msg_per_s"] == pub["feed"]["msg_per_s"] / pub["raw"]["msg_per_s"]
    late = res["late_joiners"]
    assert late["clone_lost"] == [0] and late["truth_gaps"] == 0
    assert f"ratio feed/raw: {pub['ratio_msg_per_s']:.2f}" in r.stdout


def test_unseen_benchmark_builds_fresh_scenarios_and_reports_broken_promises(tmp_path):
    """A grid no one has seen, cut short at 120 s: the table has its row, and the check names the
    vehicles still on the road (the run exits 1)."""
    out = tmp_path / "unseen.json"
    r = subprocess.run([sys.executable, "-m", "benchmarks.unseen", "--kinds", "grid", "--controllers", "fixed-time",
                        "--seed", "7", "--end", "120", "--dir", str(tmp_path), "--json", str(out), "-q"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 1, r.stderr
    data = json.loads(out.read_text())
    assert data["seed"] == 7
    [row] = data["rows"]
    assert (row["scenario"], row["controller_key"]) == ("grid0", "fixed-time")
    assert 0 < row["trips_completed"] < row["trips_total"]
    assert data["broken"] == [f"grid0 fixed-time: {row['trips_completed']}/{row['trips_total']} trips"]
    assert "grid0 fixed-time" in r.stdout and (tmp_path / "seed7" / "grid0" / "grid.net.xml").is_file()
    assert "-- grid0: fixed-time" in r.stderr
    # the same seed and code again: the outcome comes from the seed's cache, nothing runs
    again = subprocess.run([sys.executable, "-m", "benchmarks.unseen", "--kinds", "grid", "--controllers",
                            "fixed-time", "--seed", "7", "--end", "120", "--dir", str(tmp_path), "--json",
                            str(out), "-q"], capture_output=True, text=True, timeout=600)
    assert again.returncode == 1, again.stderr
    assert "-- grid0:" not in again.stderr
    assert json.loads(out.read_text())["rows"] == data["rows"]


def test_unseen_cache_key_follows_the_scenario_files(tmp_path):
    """Outcomes are kept per generated scenario content (and code): other routes, another key."""
    from benchmarks.unseen import runs_key

    d = tmp_path / "grid0"
    d.mkdir()
    cfg = d / "grid0.sumocfg"
    for name, text in (("grid0.sumocfg", "<configuration/>"), ("grid.net.xml", "<net/>"),
                       ("grid.rou.xml", "<routes/>")):
        (d / name).write_text(text)
    key = runs_key([cfg])
    assert runs_key([cfg]) == key and len(key) == 16
    (d / "outputs.xml").write_text("<other/>")  # not a scenario file
    (d / "grid.net.xml").write_text("<!-- generated on another day --><net/>")
    assert runs_key([cfg]) == key
    (d / "grid.rou.xml").write_text("<routes><vehicle/></routes>")
    assert runs_key([cfg]) != key


def test_unseen_grids_have_a_signal_at_every_junction(tmp_path):
    """Seed 4 draws a grid of one-lane roads without turn lanes, where netconvert's guess (by the
    sum of incoming lane speeds) put no signal anywhere: every junction of a generated grid or
    arterial is signalised, its dead ends are not."""
    import random

    import sumolib

    from benchmarks.unseen import MAKERS

    rng = random.Random(4)
    for kind in ("town", "grid", "arterial"):
        d = tmp_path / kind
        d.mkdir()
        MAKERS[kind](d, rng, rng.randrange(1, 1_000_000))
        if kind == "town":
            continue  # (keeps the draws of seed 4 in order)
        net = sumolib.net.readNet(str(d / f"{kind}.net.xml"))
        signalised = {n.getID() for n in net.getNodes() if n.getType() == "traffic_light"}
        crossings = {n.getID() for n in net.getNodes() if len(n.getIncoming()) >= 3}
        assert signalised and signalised == crossings, (kind, sorted(crossings - signalised))


def test_collisions_benchmark_seeds_and_tally():
    """Seeds read as ranges and lists; a tally counts collisions at signals apart from the rest
    and gives their rate per 10,000 trips."""
    from benchmarks.collisions import seed_list, tally

    assert seed_list("1-3,9,2") == [1, 2, 3, 9]
    for bad in ("3-1", "x", ","):
        with pytest.raises(Exception):
            seed_list(bad)
    runs = [{"trips_total": 3000, "trips_completed": 3000, "collisions": 2, "safety_violations": 0,
             "mean_time_loss_s": 20.0, "collisions_where": {"at_signals": 1}},
            {"trips_total": 2000, "trips_completed": 1999, "collisions": 0, "safety_violations": 1,
             "mean_time_loss_s": 30.0, "collisions_where": {"at_signals": 0}}]
    t = tally(runs)
    assert (t["runs"], t["trips"], t["collisions_at_signals"], t["runs_with_collision_at_signals"]) == (2, 5000, 1, 1)
    assert (t["collisions_elsewhere"], t["per_10k_trips"], t["safety_violations"],
            t["trips_not_completed"]) == (1, 2.0, 1, 1)
    assert t["mean_time_loss_s"] == 25.0


@pytest.mark.sumo
def test_collisions_benchmark_runs_each_controller_on_each_seed(small_scenario, tmp_path):
    """Tiny run: one engine and one SUMO controller on two SUMO seeds: a row each, every run
    under its own seed (cached apart), a second invocation simulates nothing."""
    out = tmp_path / "c.json"
    args = [sys.executable, "-m", "benchmarks.collisions", "--scenarios", str(small_scenario.sumocfg),
            "--controllers", "adaptive,sumo-static", "--seeds", "1-2", "--end", "120",
            "--cache", str(tmp_path / "runs"), "--json", str(out), "-q"]
    r = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("-- small: adaptive") == 2 and r.stderr.count("-- small: sumo-static") == 2
    rows = json.loads(out.read_text())["rows"]
    assert [(x["controller"], x["runs"], x["seeds"]) for x in rows] == [("adaptive", 2, [1, 2]),
                                                                         ("sumo-static", 2, [1, 2])]
    cached = sorted(json.loads(f.read_text())["sumo_seed"] for f in (tmp_path / "runs").glob("*.json"))
    assert cached == [1, 1, 2, 2]
    assert all(x["trips"] > 0 and x["safety_violations"] == 0 for x in rows)
    assert "| small | adaptive | 2 |" in r.stdout
    again = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "-- small" not in again.stderr


def test_control_cache_key_follows_the_engine_code(monkeypatch):
    """A cached outcome of the engine's controllers (and its failure case) is for the code that
    ran it; SUMO's programs run no code of ours, so theirs stays."""
    from benchmarks import control

    cfg = Path("scenario.sumocfg")
    keys = {c: control._key(cfg, c, None, None, 0, None) for c in ("adaptive", control.FAILED, "sumo-actuated")}
    monkeypatch.setattr(control, "sources_digest", lambda packages: "other sources")
    again = {c: control._key(cfg, c, None, None, 0, None) for c in keys}
    assert again["adaptive"] != keys["adaptive"] and again[control.FAILED] != keys[control.FAILED]
    assert again["sumo-actuated"] == keys["sumo-actuated"]


def test_accuracy_benchmark_scores_the_estimates_against_the_targets(small_scenario, tmp_path):
    """Tiny run on the small city at half coverage: the row carries evaluate's estimation block,
    the misses are exactly the targets it fails, the yardstick is scored, and the markdown agrees."""
    from benchmarks.accuracy import TARGETS, misses

    out, md = tmp_path / "acc.json", tmp_path / "acc.md"
    args = [sys.executable, "-m", "benchmarks.accuracy", "--scenarios", str(small_scenario.sumocfg), "--end", "900",
            "--cache", str(tmp_path / "runs"), "-q"]
    r = subprocess.run(args + ["--markdown", str(md), "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    (row,) = json.loads(out.read_text())["rows"]
    est = row["estimation"]
    assert row["coverage"] == 0.5 and est["edges_observed"] > 0 and est["edges_unobserved"] > 0
    assert row["misses"] == misses(est)
    for k, (limit, side) in TARGETS.items():
        v = est[k]
        assert (k in row["misses"]) == (v is None or (v > limit if side == "max" else v < limit))
    y = row["yardstick"]["flow_geh_lt5_share_unobserved"]
    assert y is not None and 0.0 <= y <= 1.0
    assert "| small |" in r.stdout and md.read_text().count("| small |") == 1
    # cached: a second run simulates nothing
    again = subprocess.run(args + ["--markdown", ""], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "-- small" not in again.stderr and "| small |" in again.stdout
    bad = subprocess.run([sys.executable, "-m", "benchmarks.accuracy", "--coverage", "0"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--coverage" in bad.stderr
