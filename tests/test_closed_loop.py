"""The closed loop, end to end: real SUMO, the real engine process, real sockets on loopback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sim.evaluate import EvaluationError, evaluate

pytestmark = pytest.mark.sumo


@pytest.mark.parametrize("controller", ["adaptive", "actuated", "scats", "max-pressure", "fixed-time"])
def test_engine_controls_a_small_city_safely(small_scenario, controller, tmp_path):
    """Every vehicle arrives, nothing collides, the monitor sees no violation, readings flowed."""
    out = tmp_path / "result.json"
    states = tmp_path / "tls.xml"
    kept = tmp_path / "run"  # (`evaluate --outputs DIR`)
    r = evaluate(small_scenario.sumocfg, controller=controller, json_path=out, tls_states=states, progress=False,
                 workdir=kept)
    assert json.loads(out.read_text()) == r
    # the run's files are kept: SUMO's outputs, the detector layout, the engine's config and log
    assert {"tripinfo.xml", "stats.xml", "collisions.xml", "detectors.json", "engine.json", "engine.log"} <= {
        f.name for f in kept.iterdir()}
    assert (kept / "tripinfo.xml").read_text().count("<tripinfo ") == r["trips_completed"]
    assert r["trips_total"] > 100
    assert r["trips_completed"] == r["trips_total"]
    assert r["collisions"] == 0 and r["teleports"] == 0 and r["collisions_where"]["at_signals"] == 0
    assert r["safety_violations"] == 0
    assert r["ingest_accepted"] > 1000 and not r["ingest_rejected"]
    assert r["tick_p50_ms"] > 0 and r["tick_p99_ms"] >= r["tick_p50_ms"]
    # SUMO's own record of what the signals showed: every signal, changing over time
    text = states.read_text()
    for tls in small_scenario.tls_ids:
        assert f'id="{tls}"' in text
    assert text.count("<tlsState") > 4 * len(small_scenario.tls_ids)


def test_box_cameras_watch_every_link_path_and_their_readings_reach_the_engine(small_scenario, tmp_path):
    """By default (an engine controller, the default detectors) SUMO loads a box camera zone on
    every signal link's internal lanes, the bridge sends their readings, the engine accepts them
    all, and the run stays safe; --no-box-cameras and --detector-coverage run without them."""
    kept = tmp_path / "run"
    r = evaluate(small_scenario.sumocfg, controller="adaptive", progress=False, workdir=kept)
    plain = evaluate(small_scenario.sumocfg, controller="adaptive", progress=False, box_cameras=False)
    sparse = evaluate(small_scenario.sumocfg, controller="adaptive", progress=False, detector_coverage=0.5, end=60)
    assert sparse["box_cameras"] == 0
    boxes = [d for d in json.loads((kept / "detectors.json").read_text()) if d["kind"] == "box"]
    assert r["box_cameras"] == len(boxes) > 0 and plain["box_cameras"] == 0
    assert all(d["lanes"] and all(x.startswith(":") for x in d["lanes"]) and d["link"] >= 0 for d in boxes)
    # one more reading per box camera per second, all accepted
    assert r["ingest_accepted"] >= plain["ingest_accepted"] + len(boxes) * (r["sim_end_s"] - 60)
    assert not r["ingest_rejected"]
    assert r["trips_completed"] == r["trips_total"]
    assert r["collisions_where"]["at_signals"] == 0 and r["safety_violations"] == 0
    with pytest.raises(EvaluationError, match="box-cameras"):
        evaluate(small_scenario.sumocfg, controller="adaptive", progress=False, box_cameras=True,
                 detector_coverage=0.5)


def test_evaluate_with_keys_runs_the_bridge_adapters_over_curvezmq(small_scenario, tmp_path):
    """With --keys the engine serves its adapter and operator sockets with CurveZMQ, and the SUMO
    bridge's adapters (the reference adapter) and the evaluation's status request get through with
    their key pairs; a key pair that is missing is a clear error before anything starts."""
    from engine.security import new_key

    keys = tmp_path / "keys"
    new_key(keys, "cabinet", "adapter")
    new_key(keys, "evaluate", "operator")
    kept = tmp_path / "run"
    r = evaluate(small_scenario.sumocfg, controller="adaptive", progress=False, end=60, workdir=kept, keys=keys,
                 adapter_key="cabinet")
    assert json.loads((kept / "engine.json").read_text())["security"]["keys_dir"] == str(keys.resolve())
    assert r["keys"] == {"dir": str(keys.resolve()), "adapter": "cabinet", "operator": "evaluate"}
    a = r["adapters"]
    assert a["commands_applied"] > 0 and a["commands_refused"] == 0 and a["fallbacks"] == 0
    assert r["ingest_accepted"] > 0 and r["safety_violations"] == 0
    with pytest.raises(EvaluationError, match="traffic-engine keys new nobody"):
        evaluate(small_scenario.sumocfg, controller="adaptive", progress=False, keys=keys, adapter_key="nobody")
    with pytest.raises(EvaluationError, match="go with --keys"):
        evaluate(small_scenario.sumocfg, controller="adaptive", progress=False, adapter_key="cabinet")
    with pytest.raises(EvaluationError, match="--keys needs an engine controller"):
        evaluate(small_scenario.sumocfg, controller="sumo-static", progress=False, keys=keys)


def test_adaptive_keeps_control_with_a_fifth_of_the_detectors_failed(small_scenario, tmp_path):
    """20 % of detectors silent or stuck: adaptive still brings every vehicle home safely, on the
    detectors it still trusts, and the engine got fewer readings."""
    ok = evaluate(small_scenario.sumocfg, controller="adaptive", progress=False)
    r = evaluate(small_scenario.sumocfg, controller="adaptive", progress=False, fail_detectors=0.2, seed=1)
    f = r["failed_detectors"]
    assert f["fraction"] == 0.2 and f["seed"] == 1
    assert f["loops_silent"] + f["loops_stuck"] + f["cameras_silent"] + f["cameras_stuck"] > 0
    assert r["trips_completed"] == r["trips_total"] == ok["trips_total"]
    assert r["collisions_where"]["at_signals"] == 0 and r["safety_violations"] == 0 and r["teleports"] == 0
    assert r["ingest_accepted"] / r["sim_end_s"] < ok["ingest_accepted"] / ok["sim_end_s"]  # per second
    assert r["mean_time_loss_s"] < 2 * ok["mean_time_loss_s"] + 10
    with pytest.raises(EvaluationError, match="engine controllers"):
        evaluate(small_scenario.sumocfg, controller="sumo-static", progress=False, fail_detectors=0.2)


def test_max_pressure_beats_sumo_static_on_cologne8(resco_dir):
    """Through the detectors only, max-pressure loses less time than SUMO's static program."""
    cfg = resco_dir / "cologne8" / "cologne8.sumocfg"
    mp = evaluate(cfg, controller="max-pressure", progress=False)
    static = evaluate(cfg, controller="sumo-static", progress=False)
    assert mp["trips_completed"] == mp["trips_total"] == static["trips_total"]
    # SUMO's junction model may still collide vehicles at the network's unsignalised junctions
    # (cologne8: one, at a priority junction); none may happen where the engine's signals are
    assert mp["collisions_where"]["at_signals"] == 0 and mp["safety_violations"] == 0
    assert mp["collisions"] == mp["collisions_where"]["at_signals"] + mp["collisions_where"]["elsewhere"]
    assert mp["mean_time_loss_s"] < static["mean_time_loss_s"]


def test_evaluate_cli_reports_bad_input_clearly(tmp_path):
    """A missing scenario, or a .net.xml without routes, is a one-line error and exit code 2."""
    run = lambda *a: subprocess.run([sys.executable, "-m", "engine", "evaluate", *a], capture_output=True,  # noqa: E731
                                    text=True, timeout=60)
    r = run(str(tmp_path / "nowhere.sumocfg"), "--controller", "max-pressure")
    assert r.returncode == 2 and "nowhere.sumocfg" in r.stderr
    net = tmp_path / "x.net.xml"
    net.write_text("<net/>")
    r = run(str(net), "--controller", "max-pressure")
    assert r.returncode == 2 and "routes" in r.stderr
    with pytest.raises(EvaluationError, match="unknown controller"):
        evaluate(net, routes=str(net), controller="telepathy", progress=False)
