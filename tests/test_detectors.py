"""Detector messages, validation with reasons, and binning per lane."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from detectors import Batch, CameraReading, Clock, DetectorBank, LoopReading, decode, encode
from network import compile_network, default_layout

NOW = 1_767_225_600 * 10**9


@pytest.fixture(scope="module")
def net(resco_dir):
    return compile_network(resco_dir / "cologne8" / "cologne8.net.xml")


@pytest.fixture
def bank(net):
    return DetectorBank(net, default_layout(net))


def loops(bank, role):
    return [d for d, i in bank.loop_index.items() if bank.loop_role[i] == (0 if role == "stop" else 1)]


def test_messages_round_trip():
    msgs = [
        LoopReading("L:a:stop", NOW, 1.0, 3, 0.25, 12.5, seq=4),
        CameraReading("C:a", NOW, 1.0, [1, 2], [0.0, 2.0]),
        Batch([LoopReading("x", NOW, 30.0, 0, 0.0)], source="gw1", seq=9),
        Clock(NOW),
    ]
    for m in msgs:
        assert decode(encode(m)) == m


def test_binning_sums_counts_per_lane(net, bank):
    """Counts land on their lane; occupancy is interval-weighted; speed is count-weighted."""
    stop = loops(bank, "stop")[:20]
    rng = np.random.default_rng(1)
    expected = np.zeros(net.n_lanes)
    for det in stop:
        c = int(rng.integers(0, 2))
        bank.absorb(LoopReading(det, NOW, 1.0, c, 0.5, 10.0 if c else None), NOW)
        expected[bank.loop_lane[bank.loop_index[det]]] += c
    bank.absorb(Batch([LoopReading(stop[0], NOW, 1.0, 1, 1.0, 20.0)]), NOW)
    expected[bank.loop_lane[bank.loop_index[stop[0]]]] += 1
    obs = bank.close_tick(1.0)
    np.testing.assert_array_equal(obs.stop_count, expected)
    lane0 = bank.loop_lane[bank.loop_index[stop[0]]]
    assert obs.stop_occupancy[lane0] == pytest.approx(0.75)
    assert obs.stop_seen.sum() == len(stop)
    # a second tick with nothing reported starts from zero
    obs2 = bank.close_tick(1.0)
    assert obs2.stop_count.sum() == 0 and not obs2.stop_seen.any() and np.isnan(obs2.speed_mps).all()


def test_camera_readings_fill_their_lanes(net, bank):
    cam_id, c = next(iter(bank.camera_index.items()))
    lo, hi = bank.camera_lane_ptr[c], bank.camera_lane_ptr[c + 1]
    n = hi - lo
    bank.absorb(CameraReading(cam_id, NOW, 1.0, list(range(1, n + 1)), [0.5] * n), NOW)
    obs = bank.close_tick(1.0)
    lanes = bank.camera_lane_idx[lo:hi]
    np.testing.assert_array_equal(obs.camera_vehicles[lanes], np.arange(1, n + 1))
    assert np.isnan(np.delete(obs.camera_vehicles, lanes)).all()


BAD = [
    (LoopReading("nope", NOW, 1.0, 1, 0.1), "unknown_detector"),
    (LoopReading("L", NOW, 1.0, -1, 0.1), "negative"),
    (LoopReading("L", NOW, 1.0, 1, math.nan), "non_finite"),
    (LoopReading("L", NOW, 1.0, 1, 1.5), "occupancy_range"),
    (LoopReading("L", NOW, 1.0, 50, 0.5), "count_impossible"),
    (LoopReading("L", NOW, 0.0, 1, 0.5), "bad_interval"),
    (LoopReading("L", NOW + 60 * 10**9, 1.0, 1, 0.5), "clock_skew"),
    (LoopReading("L", NOW - 3600 * 10**9, 1.0, 1, 0.5), "late"),
    (LoopReading("L", NOW, 1.0, 1, 0.5, math.inf), "non_finite"),
]


@pytest.mark.parametrize("reading,reason", BAD, ids=[r for _, r in BAD])
def test_bad_readings_are_rejected_with_their_reason(bank, reading, reason):
    det = loops(bank, "stop")[0]
    if reading.detector == "L":
        reading = LoopReading(det, *[getattr(reading, f) for f in reading.__struct_fields__[1:]])
    bank.absorb(reading, NOW)
    assert bank.rejected == {reason: 1}
    assert bank.accepted == 0
    assert bank.close_tick(1.0).stop_count.sum() == 0


def test_replayed_sequence_numbers_are_rejected(bank):
    det = loops(bank, "stop")[0]
    bank.absorb(LoopReading(det, NOW, 1.0, 1, 0.1, seq=5), NOW)
    bank.absorb(LoopReading(det, NOW, 1.0, 1, 0.1, seq=5), NOW)
    bank.absorb(LoopReading(det, NOW, 1.0, 1, 0.1, seq=6), NOW)
    assert bank.accepted == 2 and bank.rejected == {"replay": 1}


@given(st.binary(max_size=200))
def test_random_bytes_never_raise(net, frame):
    """Any frame is either absorbed or counted as rejected; nothing raises."""
    bank = DetectorBank(net, default_layout(net))
    bank.absorb_frame(frame, NOW)
    assert bank.accepted + sum(bank.rejected.values()) <= 1


def test_oversized_frames_are_rejected(net):
    bank = DetectorBank(net, default_layout(net))
    bank.absorb_frame(b"\x00" * (bank.limits.max_message_bytes + 1), NOW)
    assert bank.rejected == {"oversized": 1}


def test_camera_movement_counts_land_on_their_turn_slots(net, bank):
    """A camera's turn counts (in its inventory's `turns` order) are summed per slot over the
    tick; slots of cameras that sent none stay NaN; a wrong-length or negative list is rejected."""
    spec = next(s for s in default_layout(net) if s.kind == "camera" and len(s.turns) >= 2)
    n = len(spec.lanes)
    c = bank.camera_index[spec.id]
    lo, hi = int(bank.camera_turn_ptr[c]), int(bank.camera_turn_ptr[c + 1])
    assert hi - lo == len(spec.turns)
    for j, (k, edge) in enumerate(spec.turns):
        assert bank.turn_lane[lo + j] == net.lane_index[spec.lanes[k]]
        assert bank.turn_edge[lo + j] == net.edge_index[edge]
    counts = [j % 2 for j in range(len(spec.turns))]
    bank.absorb(CameraReading(spec.id, NOW, 1.0, [1] * n, [0.0] * n, turn_counts=counts), NOW)
    bank.absorb(CameraReading(spec.id, NOW, 1.0, [1] * n, [0.0] * n, turn_counts=[1] * len(spec.turns)), NOW)
    bank.absorb(CameraReading(spec.id, NOW, 1.0, [1] * n, [0.0] * n, turn_counts=[1]), NOW)
    bank.absorb(CameraReading(spec.id, NOW, 1.0, [1] * n, [0.0] * n,
                              turn_counts=[-1] * len(spec.turns)), NOW)
    assert bank.rejected["lanes_mismatch"] == 1 and bank.rejected["negative"] == 1
    obs = bank.close_tick(1.0)
    np.testing.assert_array_equal(obs.turn_count[lo:hi], [x + 1 for x in counts])
    assert np.isnan(np.delete(obs.turn_count, range(lo, hi))).all()
    assert np.isnan(bank.close_tick(1.0).turn_count).all()
