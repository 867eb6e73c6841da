"""Detector faults injected into a real SUMO run: the engine finds each one and says so on the feed."""

from __future__ import annotations

import pytest

from sim.demo import DEMO_CFG
from sim.detector_faults import EXPECTED_STATE
from sim.evaluate import evaluate

pytestmark = [pytest.mark.sumo, pytest.mark.slow]

# busy approaches of the bundled demo town, one device each, none the peer of another
FAULTS = {
    "L:-143_0:stop": "no_activity", "L:194_0:stop": "constant", "L:268_0:up": "chattering",
    "L:-145_2:stop": "stuck_on", "L:39_2:stop": "zero_count_with_occupancy", "L:157_0:up": "silent",
    "C:-3": "no_activity", "C:-7": "silent", "C:-279": "stuck_on", "C:-9": "chattering",
    "C:-31": "zero_count_with_occupancy", "C:33": "constant",
}
START_S = 20


def test_each_injected_fault_gets_its_state_and_one_alarm(tmp_path):
    """Twelve devices lie from second 20 of a demo run (every kind, on loops and on cameras), with
    the default health thresholds: at the end each is in the state its fault should produce; the
    feed carried exactly one ``detector_fault`` raise for each, with that state, and none for
    any of the other 216 detectors, which stay ok."""
    r = evaluate(DEMO_CFG, controller="max-pressure", end=720, progress=False, json_path=tmp_path / "r.json",
                 inject_faults=[f"{d}={k}@{START_S}" for d, k in FAULTS.items()])
    expected = {d: EXPECTED_STATE[k] for d, k in FAULTS.items()}
    assert r["detector_faults"] == expected
    assert r["detector_health"]["ok"] == 228 - len(FAULTS)
    alarms = [(a["detector"], a["state"], a["active"]) for a in r["detector_alarms"]]
    assert sorted(alarms) == sorted((d, s, True) for d, s in expected.items())
    assert r["detector_alarm_changes"] == len(FAULTS)  # the engine's count: the feed lost none
    assert all(a["t_s"] > START_S for a in r["detector_alarms"])
    assert r["safety_violations"] == 0 and r["ingest_rejected"] == {}
