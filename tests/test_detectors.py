"""Detector messages, validation with reasons, and binning per lane."""

from __future__ import annotations

import math

import msgspec
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from detectors import Batch, CameraReading, Clock, DetectorBank, LoopReading, decode, encode
from detectors.messages import Roster, loop_bulk
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
    bank.absorb(Batch([LoopReading(stop[0], NOW + 1_000_000_000, 1.0, 1, 1.0, 20.0)]), NOW)  # a later interval
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


def test_box_cameras_report_per_link_and_go_untrusted_when_blind(net):
    """A box camera's reading lands on its link (a link with two paths sums them, and is unknown
    when one is missing); a malformed one is rejected; a box that stays empty while the stop-bar
    loop of its entry lane counts BOX_BLIND_VEH vehicles into the junction is not trusted."""
    from detectors.bank import BOX_BLIND_VEH
    from network.layout import box_layout

    boxes = box_layout(net)
    bank = DetectorBank(net, default_layout(net) + boxes)
    by_link: dict[int, list[str]] = {}
    for b in boxes:
        by_link.setdefault(b.link, []).append(b.id)
    one = next(link for link, ids in by_link.items() if len(ids) == 1)
    zones = {b.id: len(b.crossings) for b in boxes}
    for link, ids in by_link.items():
        for i in ids:
            bank.absorb(CameraReading(i, NOW, 1.0, [2 if link == one else 0] + [0] * zones[i], [0.0] * (1 + zones[i])), NOW)
    obs = bank.close_tick(1.0)
    assert obs.link_box_veh[one] == 2
    assert (obs.link_box_veh[list(by_link)] >= 0).all()
    unwatched = np.setdiff1d(np.arange(net.n_links), list(by_link))
    assert np.isnan(obs.link_box_veh[unwatched]).all()
    assert np.isnan(bank.close_tick(1.0).link_box_veh).all()  # nothing reported this tick: unknown
    before = bank.rejected_count("lanes_mismatch")
    later = NOW + 10**9 // 2  # (a new time: the same one again would be refused as a duplicate first)
    n = 1 + zones[by_link[one][0]]
    bank.absorb(CameraReading(by_link[one][0], later, 1.0, [1] * (n + 1), [0.0] * (n + 1)), later)
    assert bank.rejected_count("lanes_mismatch") == before + 1
    # a box camera's readings are checked for order like any camera's: the same one again is a duplicate
    before = bank.rejected_count("duplicate")
    bank.absorb(CameraReading(by_link[one][0], NOW, 1.0, [0] * n, [0.0] * n), NOW)
    assert bank.rejected_count("duplicate") == before + 1
    assert DetectorBank(net, default_layout(net)).close_tick(1.0).link_box_veh is None
    # blind: the entry lane's stop-bar loop counts vehicles, every box of its links stays empty
    m = next(k for k in range(net.n_movements) if net.move_link[k] == one)
    lane = net.lane_ids[int(net.move_in_lane[m])]
    loop = f"L:{lane}:stop"
    links_of_lane = {int(net.move_link[k]) for k in range(net.n_movements) if net.lane_ids[int(net.move_in_lane[k])] == lane}
    trusted = []
    for sec in range(int(BOX_BLIND_VEH) + 1):
        ts = NOW + (sec + 1) * 10**9
        bank.absorb(LoopReading(loop, ts, 1.0, 1, 0.2), ts)
        for link in links_of_lane & set(by_link):
            for i in by_link[link]:
                bank.absorb(CameraReading(i, ts, 1.0, [0] * (1 + zones[i]), [0.0] * (1 + zones[i])), ts)
        trusted.append(not np.isnan(bank.close_tick(1.0).link_box_veh[one]))
    assert trusted[0] and not trusted[-1]


def test_crossing_zones_report_their_halting_vehicles_in_the_way_of_the_link_they_cross(net):
    """A box camera's crossing zones land on the entry of ``link_cross_idx`` of the link whose way
    they watch, as the halting vehicles there (a car passing through is not one held up); the
    rest is unknown, and so is every zone of a box whose path is not trusted."""
    from network.layout import box_layout
    boxes = [b for b in box_layout(net) if b.crossings]
    assert boxes, "cologne8 has crossing paths"
    bank = DetectorBank(net, default_layout(net) + boxes)
    spec = boxes[0]
    n = 1 + len(spec.crossings)
    halting = [0.0] + [0.0] * (n - 2) + [1.0]
    bank.absorb(CameraReading(spec.id, NOW, 1.0, [3] * n, halting), NOW)
    cross = bank.close_tick(1.0).cross_box_veh

    def entry(foe):  # where the way of link ``foe`` lists the box's link
        row = range(int(net.link_cross_ptr[foe]), int(net.link_cross_ptr[foe + 1]))
        return next(k for k in row if net.link_cross_idx[k] == spec.link)

    k = entry(spec.crossings[-1][-1])
    others = [entry(z[-1]) for z in spec.crossings[:-1]]
    assert cross[k] == 1.0 and (cross[others] == 0.0).all()
    assert np.isnan(np.delete(cross, [k] + others)).all()
    assert np.isnan(bank.close_tick(1.0).cross_box_veh).all()  # nothing reported this tick: unknown
    with pytest.raises(ValueError, match="crossing zone"):
        DetectorBank(net, [msgspec.structs.replace(spec, crossings=((0, 0.0, 0, 1.0, spec.link),))])


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


# -- the fast path against the rules in plain Python --------------------------------------------

_S = 10**9


def _loop_readings(ids):
    """Loop readings that hit every check: known and unknown ids, odd times, values and numbers."""
    maybe_bad_float = st.one_of(st.floats(0.0, 1.0), st.sampled_from([math.nan, math.inf, -0.5, 1.5, -math.inf]))
    return st.builds(
        LoopReading,
        detector=st.one_of(st.sampled_from(ids), st.just("no-such-loop")),
        ts_event_ns=st.one_of(st.integers(-8, 8).map(lambda k: NOW + k * _S),
                              st.sampled_from([NOW + 600 * _S, NOW - 600 * _S, 0, 2**63 - 1])),
        interval_s=st.one_of(st.sampled_from([1.0, 1.0, 5.0, 30.0]), st.sampled_from([0.0, -1.0, math.nan, 1e9])),
        count=st.one_of(st.integers(0, 3), st.integers(-3, 2**40)),
        occupancy=maybe_bad_float,
        speed_mps=st.one_of(st.none(), st.floats(0.0, 40.0), st.sampled_from([math.nan, -1.0, math.inf])),
        seq=st.one_of(st.just(-1), st.integers(0, 6), st.just(2**62)),
    )


def _reference(bank, readings, now_ns):
    """Verdicts and per-loop sums of the readings by tests/naive.py's rules."""
    from tests.naive import loop_reading_verdict

    seq, last, counts = {}, {}, np.zeros(bank.n_loops)
    reasons = {}
    for r in readings:
        why = loop_reading_verdict(r, bank.loop_index, now_ns, seq, last)
        if why is None:
            counts[bank.loop_index[r.detector]] += r.count
        else:
            reasons[why] = reasons.get(why, 0) + 1
    return reasons, counts


@given(data=st.data())
def test_fast_path_applies_the_same_rules_as_the_reference(net, data):
    bank = DetectorBank(net, default_layout(net))
    ids = sorted(bank.loop_index)[:6]
    readings = data.draw(st.lists(_loop_readings(ids), max_size=40))
    now = data.draw(st.sampled_from([NOW, None]))
    bank.absorb_frames([encode(r) for r in readings], now)
    reasons, counts = _reference(bank, readings, now)
    assert dict(bank.rejected) == reasons
    assert bank.accepted == len(readings) - sum(reasons.values())
    np.testing.assert_array_equal(bank.loops.count, counts)


@given(data=st.data())
def test_batches_and_bulk_take_the_same_readings_as_single_frames(net, data):
    """The same readings as single frames, in one batch, and as roster + bulk columns."""
    ids = sorted(DetectorBank(net, default_layout(net)).loop_index)[:8]
    good = st.builds(LoopReading, detector=st.sampled_from(ids), ts_event_ns=st.just(NOW),
                     interval_s=st.just(1.0), count=st.integers(-1, 3), occupancy=st.floats(0.0, 1.2),
                     speed_mps=st.one_of(st.none(), st.floats(0.0, 30.0)))
    picked = data.draw(st.lists(good, max_size=8, unique_by=lambda r: r.detector))
    single, batch, bulk = (DetectorBank(net, default_layout(net)) for _ in range(3))
    single.absorb_frames([encode(r) for r in picked], NOW)
    batch.absorb_frames([encode(Batch(picked, source="gw", seq=1))], NOW)
    f32 = lambda x: float(np.float32(x))  # noqa: E731  the bulk columns are float32
    picked32 = [LoopReading(r.detector, r.ts_event_ns, r.interval_s, r.count, f32(r.occupancy),
                            None if r.speed_mps is None else f32(r.speed_mps)) for r in picked]
    bulk.absorb_frames([
        encode(Roster("gw", 1, [r.detector for r in picked])),
        encode(loop_bulk("gw", 1, 1, NOW, 1.0, [r.count for r in picked], [r.occupancy for r in picked],
                         [np.nan if r.speed_mps is None else r.speed_mps for r in picked])),
    ], NOW)
    reference = DetectorBank(net, default_layout(net))
    reference.absorb_frames([encode(r) for r in picked32], NOW)
    assert batch.rejected == single.rejected and batch.accepted == single.accepted
    np.testing.assert_array_equal(batch.loops.count, single.loops.count)
    assert bulk.rejected == reference.rejected and bulk.accepted == reference.accepted
    for field in ("count", "occ_time", "time", "speed_sum", "speed_n"):
        np.testing.assert_allclose(getattr(bulk.loops, field), getattr(reference.loops, field))


def test_bulk_replays_unknown_rosters_and_short_columns_are_rejected(net):
    bank = DetectorBank(net, default_layout(net))
    ids = sorted(bank.loop_index)[:3] + ["no-such-loop"]
    ok = loop_bulk("gw", 7, 1, NOW, 1.0, [1, 0, 1, 1], [0.1, 0.0, 0.2, 0.1])
    bank.absorb_frames([
        encode(ok),  # before its roster
        encode(Roster("gw", 7, ids)),
        encode(ok),
        encode(ok),  # the same sequence number again
        encode(loop_bulk("gw", 7, 2, NOW + _S, 1.0, [1, 1], [0.1, 0.1])),  # two columns for four loops
    ], NOW)
    assert bank.accepted == 3
    assert bank.rejected == {"unknown_roster": 4, "unknown_detector": 1, "replay": 4, "lanes_mismatch": 4}


@given(st.lists(st.one_of(st.binary(max_size=60), st.sampled_from([b"\x98", b"\x98\xa4loop", b""])), max_size=20))
def test_random_frames_between_good_ones_lose_nothing(net, junk):
    """Hostile frames mixed into a stream: every good reading is still counted, nothing raises."""
    bank = DetectorBank(net, default_layout(net))
    ids = sorted(bank.loop_index)[:len(junk) + 1]
    good = [encode(LoopReading(d, NOW, 1.0, 1, 0.2)) for d in ids]
    frames = [f for pair in zip(good, junk) for f in pair] + good[len(junk):]
    bank.absorb_frames(frames, NOW)
    assert bank.loops.count[[bank.loop_index[d] for d in ids]].tolist() == [1.0] * len(ids)
    assert bank.accepted + sum(bank.rejected.values()) <= len(frames)
    assert bank.accepted >= len(ids)


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
    bank.absorb(CameraReading(spec.id, NOW + 10**6, 1.0, [1] * n, [0.0] * n, turn_counts=[1] * len(spec.turns)), NOW)
    bank.absorb(CameraReading(spec.id, NOW + 2 * 10**6, 1.0, [1] * n, [0.0] * n, turn_counts=[1]), NOW)
    bank.absorb(CameraReading(spec.id, NOW + 3 * 10**6, 1.0, [1] * n, [0.0] * n,
                              turn_counts=[-1] * len(spec.turns)), NOW)
    assert bank.rejected["lanes_mismatch"] == 1 and bank.rejected["negative"] == 1
    obs = bank.close_tick(1.0)
    np.testing.assert_array_equal(obs.turn_count[lo:hi], [x + 1 for x in counts])
    assert np.isnan(np.delete(obs.turn_count, range(lo, hi))).all()
    assert np.isnan(bank.close_tick(1.0).turn_count).all()


def test_camera_vehicle_classes(net, bank):
    cam_id, c = next(iter(bank.camera_index.items()))
    n = int(bank.camera_lane_ptr[c + 1] - bank.camera_lane_ptr[c])
    bank.absorb(CameraReading(cam_id, NOW, 1.0, [2] * n, [1.0] * n, 1, classes={"car": [1] * n, "bus": [1] * n}), NOW)
    assert bank.accepted == 1 and not bank.rejected
    bad = [
        (CameraReading(cam_id, NOW + 1, 1.0, [2] * n, [1.0] * n, 2, classes={"car": [1] * (n + 1)}), "lanes_mismatch"),
        (CameraReading(cam_id, NOW + 2, 1.0, [2] * n, [1.0] * n, 3, classes={"car": [3] * n}), "count_impossible"),
        (CameraReading(cam_id, NOW + 3, 1.0, [2] * n, [1.0] * n, 4, classes={"car": [-1] * n}), "negative"),
    ]
    for reading, reason in bad:
        before = bank.rejected[reason]
        bank.absorb(reading, NOW)
        assert bank.rejected[reason] == before + 1, reason
