"""Detector failures of the simulated city (sim/faults.py)."""

from __future__ import annotations

import numpy as np
import pytest

from sim.faults import DetectorFaults


def test_draw_fails_the_fraction_asked_silent_or_stuck_and_repeats_with_the_seed():
    """20 % of 500 detectors fail, each one way only; the same seed picks the same ones."""
    f = DetectorFaults.draw(400, 100, 0.2, seed=3)
    n_failed = f.loop_silent.sum() + f.loop_stuck.sum() + f.camera_silent.sum() + f.camera_stuck.sum()
    assert n_failed == 100
    assert not (f.loop_silent & f.loop_stuck).any() and not (f.camera_silent & f.camera_stuck).any()
    assert 0 < f.loop_silent.sum() and 0 < f.loop_stuck.sum()  # both kinds occur
    g = DetectorFaults.draw(400, 100, 0.2, seed=3)
    assert (f.loop_silent == g.loop_silent).all() and (f.camera_stuck == g.camera_stuck).all()
    h = DetectorFaults.draw(400, 100, 0.2, seed=4)
    assert (f.loop_silent != h.loop_silent).any()
    assert f.summary()["loops_silent"] == int(f.loop_silent.sum())
    with pytest.raises(ValueError):
        DetectorFaults.draw(10, 2, 1.5, seed=0)


def test_stuck_loops_show_presence_and_silent_ones_send_nothing():
    f = DetectorFaults.draw(50, 0, 0.5, seed=1)
    count = np.full(50, 2, dtype=np.int32)
    occ = np.full(50, 0.3)
    speed = np.full(50, 9.0)
    c, o, s, send = f.loops(count, occ, speed)
    assert (c[f.loop_stuck] == 0).all() and (o[f.loop_stuck] == 1.0).all() and np.isnan(s[f.loop_stuck]).all()
    ok = ~(f.loop_stuck | f.loop_silent)
    assert (c[ok] == 2).all() and (o[ok] == 0.3).all() and (s[ok] == 9.0).all()
    assert (send == ~f.loop_silent).all()


def test_a_stuck_camera_repeats_its_first_reading_with_vehicles():
    f = DetectorFaults(0.0, 0, np.zeros(0, bool), np.zeros(0, bool), np.array([True, False]),
                       np.array([False, True]))
    assert f.camera(0, np.array([1.0]), np.array([0.0])) is None
    empty = f.camera(1, np.array([0.0, 0.0]), np.array([0.0, 0.0]))
    assert empty[0].tolist() == [0.0, 0.0]  # nothing latched before it saw a vehicle
    first = f.camera(1, np.array([3.0, 1.0]), np.array([2.0, 0.0]))
    later = f.camera(1, np.array([0.0, 7.0]), np.array([0.0, 5.0]))
    assert first[0].tolist() == later[0].tolist() == [3.0, 1.0] and later[1].tolist() == [2.0, 0.0]
