"""Detector health: the kernel against the plain-Python reference, each fault through the engine,
the operator op and ``ctl detectors`` over real sockets, and fault injection's parsing."""

from __future__ import annotations

from types import SimpleNamespace

import msgspec
import numpy as np
import pytest
import zmq
from hypothesis import given
from hypothesis import strategies as st

from detectors import Batch, CameraReading, Clock, LoopReading, encode
from detectors.health import STATES, DetectorHealth
from engine import cli
from engine.client import OperatorClient
from engine.config import EngineConfig, HealthParams, load_config
from engine.core import Engine
from network import compile_network
from sim.detector_faults import FaultError, FaultInjector, parse_fault
from tests import naive
from tests.serving import ANY, serving

T0 = 1_767_225_600 * 10**9
S = 10**9
DEMO_NET = "sim/scenarios/demo/demo.net.xml"

SMALL = dict(missing_s=3.0, stuck_on_s=4.0, stuck_occupancy=0.95, constant_s=3.0, constant_min_samples=2,
             camera_constant_s=5.0, chatter_vps=0.9, camera_chatter_vps=1.0, chatter_tau_s=3.0, flicker_min_vps=0.2,
             flicker_occ_s=0.1, fzon_s=4.0, fzon_occupied_s=0.5, no_activity_s=4.0, no_activity_peer_veh=1.0,
             clear_s=3.0)

loop_samples = st.one_of(
    st.none(),
    st.tuples(st.sampled_from([0.0, 0.0, 1.0, 2.0, 3.0]), st.sampled_from([0.0, 0.01, 0.3, 0.96, 1.0]),
              st.sampled_from([1.0, 1.0, 2.0])),
)


@st.composite
def health_streams(draw):
    """A few loops and cameras with random peers, and ticks of readings that often repeat."""
    n_loops = draw(st.integers(0, 4))
    cams = draw(st.lists(st.lists(st.sampled_from([1.0, 3.0, 25.0]), min_size=1, max_size=3), max_size=2))
    n = n_loops + len(cams)
    peers = [draw(st.lists(st.integers(0, n_loops - 1), max_size=3, unique=True)) if n_loops else [] for _ in range(n)]
    ticks = []
    for _ in range(draw(st.integers(1, 60))):
        dt = draw(st.sampled_from([0.5, 1.0, 1.0, 2.0]))
        loops = [draw(loop_samples) for _ in range(n_loops)]
        cam = []
        for caps in cams:
            if draw(st.integers(0, 5)) == 0:
                cam.append(None)
            else:
                veh = [float(draw(st.sampled_from([0, 0, 1, 2, int(c)]))) for c in caps]
                q = [float(draw(st.sampled_from([0, 0, 1]))) for _ in caps]
                cam.append((veh, q))
        ticks.append((dt, loops, cam))
    return n_loops, cams, peers, ticks


@given(health_streams())
def test_kernel_matches_reference(stream):
    """Every tick, every detector: the kernel's state is the plain-Python reference's."""
    n_loops, cams, peers, ticks = stream
    ptr = np.cumsum([0] + [len(c) for c in cams])
    peer_ptr = np.cumsum([0] + [len(p) for p in peers])
    h = DetectorHealth([f"d{k}" for k in range(n_loops + len(cams))], n_loops, ptr,
                       np.array([x for c in cams for x in c], dtype=np.float64), peer_ptr,
                       np.array([x for p in peers for x in p], dtype=np.int64), SimpleNamespace(**SMALL))
    ref = naive.HealthRef(n_loops, cams, peers, SMALL)
    prev = ["ok"] * (n_loops + len(cams))
    for dt, loops, cam in ticks:
        count = np.array([r[0] if r else 0.0 for r in loops])
        occ_time = np.array([r[1] * r[2] if r else 0.0 for r in loops])
        secs = np.array([r[2] if r else 0.0 for r in loops])
        veh = np.array([v for c, caps in zip(cam, cams) for v in (c[0] if c else [np.nan] * len(caps))])
        que = np.array([v for c, caps in zip(cam, cams) for v in (c[1] if c else [np.nan] * len(caps))])
        changes = h.update(dt, count, occ_time, secs, veh, que)
        want = ref.tick(dt, [(r[0], r[1] * r[2], r[2]) if r else None for r in loops], cam)
        assert [STATES[s] for s in h.state] == want
        assert [(c.index, c.old, c.new) for c in changes] == \
            [(d, prev[d], want[d]) for d in range(len(want)) if want[d] != prev[d]]
        prev = want


# -- each fault, through the engine ------------------------------------------------------------

@pytest.fixture(scope="module")
def demo_net():
    return compile_network(DEMO_NET)


def run_engine(engine, seconds, reading_of, start=1, camera_of=None):
    """Tick ``engine`` once a second; ``reading_of(k, det)`` gives each loop's reading (None: silent).
    Every camera sees one vehicle per lane every fourth second, unless ``camera_of(k, cam, n_lanes)``
    says otherwise."""
    bank = engine.bank
    lanes = np.diff(bank.camera_lane_ptr).tolist()
    cams = sorted(bank.camera_index, key=bank.camera_index.get)
    for k in range(start, start + seconds):
        now = T0 + k * S
        for det in bank.loop_ids:
            r = reading_of(k, det)
            if r is not None:
                bank.absorb(LoopReading(det, now, 1.0, *r), now)
        for cam, n in zip(cams, lanes):
            veh, queue = camera_of(k, cam, n) if camera_of else ([int(k % 4 == 0)] * n, [0.0] * n)
            bank.absorb(CameraReading(cam, now, 1.0, veh, queue), now)
        engine.tick(now)


@pytest.mark.parametrize("fault, state, reading", [
    ("silent", "missing", lambda k: None),
    ("stuck_on", "stuck_on", lambda k: (0, 1.0)),
    ("chattering", "chattering", lambda k: (2 * (k % 2), 0.02)),
    ("constant", "constant", lambda k: (1, 0.25)),
    ("zero_count", "flow_zero_occ_nonzero", lambda k: (0, 0.2)),
    ("dead", "no_activity", lambda k: (0, 0.0)),
])
def test_each_fault_is_found_alarmed_excluded_and_cleared(demo_net, fault, state, reading):
    """One loop lies while the rest see steady traffic: it enters the right state with one
    ``detector_fault`` alarm, its lane is no longer fed by it (readings still accepted), and
    after it tells the truth again for ``clear_s`` it is ok and the alarm clears."""
    engine = Engine(demo_net, EngineConfig(clock="sim"))
    bad = "L:-143_0:stop"
    lane = engine.bank.loop_lane[engine.bank.loop_index[bad]]
    healthy = lambda k: (1, 0.3) if k % 4 == 0 else (0, 0.0)  # noqa: E731  900 veh/h, 0.3 s on the loop
    run_engine(engine, 400, lambda k, det: reading(k) if det == bad else healthy(k))
    faulty = engine.faulty_detectors()
    assert [(d["id"], d["kind"], d["state"], d["lanes"]) for d in faulty] == [(bad, "loop", state, ["-143_0"])]
    assert T0 < faulty[0]["since_ns"] <= T0 + 400 * S
    counts = engine.detector_health()
    assert counts[state] == 1 and counts["ok"] == engine.bank.n_loops + engine.bank.n_cameras - 1
    changes = engine.alarms.take_changes()
    assert [(a.kind, a.subject, a.detail, a.active) for a in changes] == [("detector_fault", bad, state, True)]
    # excluded: a reading from it no longer makes its lane's stop bar seen
    accepted = engine.bank.accepted
    now = T0 + 401 * S
    engine.bank.absorb(LoopReading(bad, now, 1.0, 1, 0.3), now)
    assert engine.bank.accepted == accepted + 1
    obs = engine.bank.close_tick(1.0, loop_ok=engine.health.loop_ok, camera_ok=engine.health.camera_ok)
    assert not obs.stop_seen[lane]
    # healthy again: ok after clear_s, and the alarm clears
    run_engine(engine, 200, lambda k, det: healthy(k), start=402)
    assert engine.faulty_detectors() == []
    assert [(a.subject, a.active) for a in engine.alarms.take_changes()] == [(bad, False)]


def test_a_stuck_camera_leaves_no_full_lanes_behind(demo_net):
    """A camera reporting every lane full for five minutes: once it is found stuck, its lanes'
    estimates restart from the loops (which see light traffic), not from "full"."""
    engine = Engine(demo_net, EngineConfig(clock="sim"))
    bank = engine.bank
    bad = "C:-143"
    c = bank.camera_index[bad]
    lanes = bank.camera_lane_idx[bank.camera_lane_ptr[c]:bank.camera_lane_ptr[c + 1]]
    full = [int(x) for x in engine.health.cam_cap[bank.camera_lane_ptr[c]:bank.camera_lane_ptr[c + 1]]]
    healthy = lambda k: (1, 0.3) if k % 4 == 0 else (0, 0.0)  # noqa: E731
    stuck = lambda k, cam, n: (full, [float(x) for x in full]) if cam == bad else ([int(k % 4 == 0)] * n, [0.0] * n)  # noqa: E731
    run_engine(engine, 299, lambda k, det: healthy(k), camera_of=stuck)
    assert engine.faulty_detectors() == [] and (engine.estimator.state.lane_vehicles[lanes] == full).all()
    run_engine(engine, 1, lambda k, det: healthy(k), start=300, camera_of=stuck)
    assert [(d["id"], d["state"]) for d in engine.faulty_detectors()] == [(bad, "stuck_on")]
    assert (engine.estimator.state.lane_vehicles[lanes] <= 1).all()
    assert (engine.estimator.state.lane_queue_veh[lanes] <= 1).all()


def test_lane_without_its_faulty_loop_is_not_observed(demo_net):
    """Binning with a mask: a masked loop's counts and occupancy do not reach its lane."""
    engine = Engine(demo_net, EngineConfig(clock="sim"))
    bank = engine.bank
    stop = "L:-143_0:stop"
    i = bank.loop_index[stop]
    bank.absorb(LoopReading(stop, T0, 1.0, 1, 0.5, 10.0), T0)
    ok = np.ones(bank.n_loops, dtype=np.bool_)
    ok[i] = False
    obs = bank.close_tick(1.0, loop_ok=ok, camera_ok=np.ones(bank.n_cameras, dtype=np.bool_))
    lane = bank.loop_lane[i]
    assert obs.stop_count[lane] == 0 and not obs.stop_seen[lane] and np.isnan(obs.speed_mps[lane])
    cam = bank.camera_index["C:-143"]
    lanes = bank.camera_lane_idx[bank.camera_lane_ptr[cam]:bank.camera_lane_ptr[cam + 1]]
    bank.absorb(CameraReading("C:-143", T0 + S, 1.0, [1] * lanes.size, [0.0] * lanes.size), T0 + S)
    cam_ok = np.ones(bank.n_cameras, dtype=np.bool_)
    cam_ok[cam] = False
    obs = bank.close_tick(1.0, camera_ok=cam_ok)
    assert np.isnan(obs.camera_vehicles[lanes]).all()


def test_health_config_is_checked(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text('{"health": {"missing_s": -1}}')
    with pytest.raises(ValueError, match="missing_s"):
        load_config(cfg)
    cfg.write_text('{"health": {"stuck_occupancy": 1.5}}')
    with pytest.raises(ValueError, match="stuck_occupancy"):
        load_config(cfg)
    cfg.write_text('{"health": {"no_such_check": 1}}')
    with pytest.raises(ValueError, match="no_such_check"):
        load_config(cfg)


# -- over the sockets -----------------------------------------------------------------------------

def test_ctl_detectors_and_the_feed_show_a_stuck_loop(demo_net, capsys):
    """An engine on simulated time, over real sockets: a loop stuck on for the configured time
    raises ``detector_fault`` on the feed, ``detectors`` lists it and ``ctl detectors`` prints it."""
    cfg = EngineConfig(clock="sim", endpoints=ANY, health=HealthParams(stuck_on_s=30.0, missing_s=60.0))
    ctx = zmq.Context.instance()
    with serving(Engine(demo_net, cfg)) as server:
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"alarms")
        sub.connect(server.endpoints["feed"])
        push = ctx.socket(zmq.PUSH)
        push.connect(server.endpoints["ingest"])
        ops = OperatorClient(server.endpoints["operators"], timeout_s=10)
        try:
            ops.request("status")  # the engine is up; give the subscription time to arrive before any alarm
            stuck = "L:-143_0:stop"
            loops = sorted(server.engine.bank.loop_index)
            cams = server.engine.bank.camera_index
            for k in range(1, 46):
                now = T0 + k * S
                busy = k % 3 == 0
                readings = [LoopReading(d, now, 1.0, *((0, 1.0) if d == stuck else (int(busy), 0.3 * busy)))
                            for d in loops]
                readings += [CameraReading(c, now, 1.0, [0] * n, [0.0] * n) for c, n in
                             ((c, int(np.diff(server.engine.bank.camera_lane_ptr)[i])) for c, i in cams.items())]
                push.send(encode(Batch(readings, source="test", seq=k)))
                push.send(encode(Clock(now)))
                if k == 1:
                    ops.request("status")
            assert sub.poll(10_000), "no alarm on the feed"
            topic, body = sub.recv_multipart()
            alarm = msgspec.msgpack.decode(body)
            assert topic == b"alarms"
            assert (alarm["kind"], alarm["subject"], alarm["detail"], alarm["active"]) == \
                ("detector_fault", stuck, "stuck_on", True)
            assert alarm["ts_ns"] == T0 + 30 * S  # readings of 1 s each, fully occupied from second 1: 30 s at 30
            res = ops.request("detectors")
            assert res["by_health"]["stuck_on"] == 1 and res["by_health"]["ok"] == res["loops"] + res["cameras"] - 1
            assert [(d["id"], d["state"]) for d in res["faulty"]] == [(stuck, "stuck_on")]
            assert res["alarm_changes"] == 1
            assert cli.main(["ctl", "detectors", "--endpoint", server.endpoints["operators"]]) == 0
            out = capsys.readouterr().out
            assert "stuck_on 1" in out and stuck in out and "(lanes -143_0)" in out
            assert cli.main(["ctl", "detectors", "--json", "--endpoint", server.endpoints["operators"]]) == 0
            import json
            assert json.loads(capsys.readouterr().out)["faulty"][0]["id"] == stuck
            assert ops.request("status")["detectors"]["by_health"]["stuck_on"] == 1
        finally:
            ops.close()
            push.close(0)
            sub.close(0)


# -- fault injection -----------------------------------------------------------------------------

def test_fault_specs_parse_or_say_why():
    f = parse_fault("L:a=b_0:stop=stuck_on@120")
    assert (f.detector, f.kind, f.start_s) == ("L:a=b_0:stop", "stuck_on", 120.0)
    assert parse_fault("C:-3=silent").start_s == 0.0
    for bad, why in [("L:x", "ID=KIND"), ("L:x=melting", "unknown kind"), ("L:x=silent@soon", "not a number"),
                     ("L:x=silent@-5", ">= 0"), ("=silent", "ID=KIND")]:
        with pytest.raises(FaultError, match=why):
            parse_fault(bad)


def test_injector_rewrites_only_its_devices_from_their_start(demo_net):
    from network import default_layout

    specs = default_layout(demo_net)
    loops = [s.id for s in specs if s.kind == "loop"]
    lane_len = dict(zip(demo_net.lane_ids, demo_net.lane_length_m.tolist()))
    inj = FaultInjector([parse_fault(f"{loops[0]}=stuck_on@10"), parse_fault(f"{loops[1]}=silent"),
                         parse_fault(f"{loops[2]}=constant@0")], specs, lane_len)
    with pytest.raises(FaultError, match="unknown detector"):
        FaultInjector([parse_fault("L:nowhere=silent")], specs, lane_len)
    with pytest.raises(FaultError, match="two faults"):
        FaultInjector([parse_fault(f"{loops[0]}=silent"), parse_fault(f"{loops[0]}=stuck_on")], specs, lane_len)
    n = len(loops)
    count, occ, speed = np.ones(n, dtype=np.int32), np.full(n, 0.3), np.full(n, 9.0)
    send = inj.loops(5.0, count, occ, speed)
    assert send.tolist() == [True, False] + [True] * (n - 2)
    assert (count[0], occ[0]) == (1, 0.3)  # not yet stuck at 5 s
    count2, occ2, speed2 = np.zeros(n, dtype=np.int32), np.zeros(n), np.full(n, np.nan)
    inj.loops(12.0, count2, occ2, speed2)
    assert (count2[0], occ2[0]) == (0, 1.0)
    assert (count2[2], occ2[2], speed2[2]) == (1, 0.3, 9.0)  # frozen on its first reading with a vehicle
    assert count2[3:].sum() == 0 and occ2[3:].sum() == 0


def test_evaluate_refuses_bad_faults_clearly():
    """A fault that cannot be parsed, or one asked of SUMO's own controller, is a one-line error, exit 2."""
    import subprocess
    import sys

    run = lambda *a: subprocess.run([sys.executable, "-m", "engine", "evaluate", "sim/scenarios/demo/demo.sumocfg",  # noqa: E731
                                     *a], capture_output=True, text=True, timeout=120)
    r = run("--controller", "max-pressure", "--inject-fault", "L:x=melting")
    assert r.returncode == 2 and "unknown kind 'melting'" in r.stderr and "stuck_on" in r.stderr, r.stderr
    r = run("--controller", "sumo-static", "--inject-fault", "L:x=silent")
    assert r.returncode == 2 and "engine controller" in r.stderr, r.stderr
