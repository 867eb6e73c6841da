"""SPaT timing and speed advice (engine.spat): the look-ahead kernel against a plain-Python
reference, its bounds as properties, the advice bands, the feed bodies over a real socket, and
a short real-SUMO evaluation with speed guidance."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import msgspec
import numpy as np
import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

import naive
from controllers.safety import GREEN, RED, YELLOW, Safety, SafetyConfig
from engine.spat import ADVICE, EARLIEST, FREE, NO_PHASE, STOP, _advice, _look_ahead, band
from strategies import command_streams, signal_table

CFG = SafetyConfig(min_green_s=5.0, yellow_s=3.0, red_clearance_s=1.0)
NS = 10**9
TICK = NS


def drive(table, steps):
    """A safety stage after a command stream (1 s ticks rounded up from the stream's)."""
    safety = Safety(table, CFG, start_ns=0)
    now = 0
    for dt, wanted in steps:
        now += max(1, int(math.ceil(dt))) * NS
        safety.enforce(np.array(wanted, dtype=np.int32), now)
    return safety, now


@st.composite
def plans(draw, table, now):
    """Per signal up to three segments ``(phase, end_ns, committed)``, ends increasing (the last
    may be open, -1)."""
    phase = np.full((table.n_tls, 3), NO_PHASE, dtype=np.int32)
    end = np.full((table.n_tls, 3), -1, dtype=np.int64)
    committed = np.zeros((table.n_tls, 3), dtype=np.bool_)
    for t in range(table.n_tls):
        k = draw(st.integers(1, 3))
        t_end = now
        for j in range(k):
            phase[t, j] = draw(st.integers(-1, table.n_phases - 1))
            committed[t, j] = draw(st.booleans())
            if j < k - 1 or draw(st.booleans()):
                t_end += draw(st.integers(1, 25)) * NS
                end[t, j] = t_end
    return phase, end, committed


def look_ahead(table, safety, now, plan, n_steps=40, box=None):
    n, m = table.n_links, table.n_tls
    box0 = np.full(n, np.nan) if box is None else box
    out = dict(min_end=np.zeros(n, np.int64), max_end=np.zeros(n, np.int64), likely=np.zeros(n, np.int64),
               confidence=np.zeros(n), win_start=np.zeros((n, 2), np.int64), win_end=np.zeros((n, 2), np.int64))
    link_tls = np.repeat(np.arange(m, dtype=np.int32), np.diff(table.tls_link_ptr))
    _look_ahead(np.int64(now), np.int64(TICK), n_steps, *plan, table.tls_link_ptr, table.tls_phase_ptr,
                table.phase_link_ptr, table.phase_link_idx, table.link_conflict_ptr, table.link_conflict_idx,
                table.link_yield_ptr, table.link_yield_idx, safety._yielder_ptr, safety._yielder_idx, link_tls,
                np.int64(5 * NS), np.int64(3 * NS), np.int64(1 * NS), safety._clear_ns, safety._exit_ns, safety.link_state,
                safety.link_since_ns, safety._long_clear, safety.active_phase, safety.active_since_ns,
                np.zeros(n, np.int8), np.zeros(n, np.int64), np.zeros(n, np.bool_), np.zeros(n, np.bool_),
                np.zeros(m, np.int32), np.zeros(m, np.int64), np.zeros(m, np.int32), np.zeros(m, np.bool_),
                np.zeros(m, np.bool_), out["min_end"], out["max_end"], out["likely"], out["confidence"],
                out["win_start"], out["win_end"], box0, np.zeros(n), table.link_intruder_ptr, table.link_intruder_idx,
                np.zeros(n + 1, np.int64), np.zeros(n, np.bool_))
    return out


def plan_segment(phase, end, t, ts):
    """Which of signal ``t``'s plan segments holds at ``ts`` (None: beyond the plan)."""
    return next((k for k in range(3) if phase[t, k] != NO_PHASE and (end[t, k] < 0 or ts < end[t, k])
                 and all(phase[t, j] != NO_PHASE for j in range(k))), None)


def reference(table, safety, now, plan, n_steps=40):
    """The look-ahead in plain Python over tests/naive.py's safety step."""
    phase, end, committed = plan
    state = safety.link_state.tolist()
    since = safety.link_since_ns.tolist()
    long_clear = safety._long_clear.tolist()
    active = safety.active_phase.tolist()
    active_since = safety.active_since_ns.tolist()
    state0 = list(state)
    n = table.n_links
    link_tls = [t for t in range(table.n_tls) for _ in naive.signal_links(table, t)]
    likely, max_end, conf = [-1] * n, [-1] * n, [0.0] * n
    wins = [[[now, -1]] if s == GREEN else [] for s in state]
    for link in range(n):
        if state[link] == YELLOW:  # ends at the first tick at or after its yellow time, plan or not
            likely[link] = max_end[link] = now + max(1, -(-(since[link] + 3 * NS - now) // TICK)) * TICK
            conf[link] = 1.0
    known, comm = [True] * table.n_tls, [True] * table.n_tls
    target = [int(phase[t, 0]) if phase[t, 0] != NO_PHASE else -1 for t in range(table.n_tls)]
    for step in range(1, n_steps + 1):
        ts = now + step * TICK
        for t in range(table.n_tls):
            seg = plan_segment(phase, end, t, ts)
            if seg is None:
                known[t] = False
            else:
                target[t] = int(phase[t, seg])
                comm[t] = comm[t] and bool(committed[t, seg])
        naive.enforce(table, target, state, since, active, active_since, ts, 5 * NS, 3 * NS, 1 * NS, long_clear)
        for link in range(n):
            t = link_tls[link]
            if not known[t]:
                continue
            if likely[link] < 0 and state[link] != state0[link]:
                likely[link] = ts
                if comm[t]:
                    conf[link], max_end[link] = 0.9, ts
                else:
                    conf[link] = 0.5
            if since[link] == ts:
                if state[link] == GREEN and len(wins[link]) < 2:
                    wins[link].append([ts, -1])
                elif state[link] != GREEN:
                    for w in wins[link]:
                        if w[1] < 0:
                            w[1] = ts
                            break
    return likely, max_end, conf, wins


def min_end_reference(table, safety, now, box=None):
    """The safety stage's earliest change of every link, from the rules in words (a long
    clearance only where no box camera watches the path: one that does may waive it)."""
    watched = np.zeros(table.n_links, bool) if box is None else ~np.isnan(box)
    out = []
    clear = safety._clear_ns.tolist()
    for link in range(table.n_links):
        s, since = int(safety.link_state[link]), int(safety.link_since_ns[link])
        if s == YELLOW:
            out.append(since + 3 * NS)
        elif s == GREEN:
            out.append(max(now, since + 5 * NS))
        else:
            t = since + NS
            for c in naive.conflicts_of(table, link):
                need = clear[c] if safety._long_clear[c] and not watched[c] else NS
                sc, sn = int(safety.link_state[c]), int(safety.link_since_ns[c])
                t = max(t, sn + need if sc == RED else sn + 3 * NS + need if sc == YELLOW
                        else max(now, sn + 5 * NS) + 3 * NS + NS)
            out.append(max(now, t))
    return out


@st.composite
def situations(draw):
    table, steps = draw(command_streams())
    safety, now = drive(table, steps)
    return table, safety, now, draw(plans(table, now))


@settings(max_examples=50, deadline=None)
@given(situations())
def test_look_ahead_matches_plain_python_reference(sit):
    """Likely change, max end, confidence and green windows agree with the reference, every link."""
    table, safety, now, plan = sit
    out = look_ahead(table, safety, now, plan)
    likely, max_end, conf, wins = reference(table, safety, now, plan)
    assert out["likely"].tolist() == likely
    assert out["max_end"].tolist() == max_end
    assert out["confidence"].tolist() == pytest.approx(conf)
    assert out["min_end"].tolist() == min_end_reference(table, safety, now)
    for link in range(table.n_links):
        got = [[int(a), int(b)] for a, b in zip(out["win_start"][link], out["win_end"][link]) if a >= 0]
        assert got == wins[link]


@settings(max_examples=200, deadline=None)
@given(situations(), st.integers(0, 2**32 - 1))
def test_look_ahead_with_box_readings_is_the_safety_stage_run_forward(sit, seed):
    """With box cameras, the look-ahead predicts exactly what the real safety stage does along
    the plan when the boxes read what the look-ahead assumes: a path red now reads as now (a
    path that is red stays as it is: empty, or holding what it holds), a path that opens or
    ends ahead is unknown (NaN), and one that closed ahead is empty once it has been red for the
    red clearance. (On cologne8 the look-ahead without readings foresaw greens up to 10 s late
    that a box had let start after the short clearance: likely-time error p90 6 s.)"""
    table, safety, now, plan = sit
    rng = np.random.default_rng(seed)
    box0 = np.where(rng.random(table.n_links) < 0.7, np.where(rng.random(table.n_links) < 0.7, 0.0, 1.0), np.nan)
    # what the boxes see from now on (the stage got here without readings; the look-ahead starts from these)
    out = look_ahead(table, safety, now, plan, box=box0)
    phase, end, _ = plan
    state0 = safety.link_state.copy()
    link_tls = [t for t in range(table.n_tls) for _ in naive.signal_links(table, t)]
    box = box0.copy()
    first = np.full(table.n_links, -1, dtype=np.int64)
    target = np.where(phase[:, 0] != NO_PHASE, phase[:, 0], -1).astype(np.int32)
    for step in range(1, 41):
        ts = now + step * TICK
        known = np.ones(table.n_tls, dtype=bool)
        for t in range(table.n_tls):
            seg = plan_segment(phase, end, t, ts)
            if seg is None:
                known[t] = False  # (beyond the plan: the last target stays)
            else:
                target[t] = phase[t, seg]
        safety.enforce(target, ts, box.copy())
        for link in range(table.n_links):
            s, since = safety.link_state[link], safety.link_since_ns[link]
            if since == ts and s != RED:
                box[link] = np.nan
            elif s == RED and since > now and ts - since >= NS and not np.isnan(box0[link]):
                box[link] = 0.0
            if known[link_tls[link]] and first[link] < 0 and s != state0[link]:
                first[link] = ts
    for link in range(table.n_links):
        if state0[link] != YELLOW:  # (a yellow's end is published whatever the plan)
            assert out["likely"][link] == first[link], link


def test_a_long_clearance_a_box_will_waive_is_not_foreseen():
    """A turn that ended while giving way owes its conflicts a long clearance (5 s here) unless
    a box camera sees its path empty. With the box reading empty, the look-ahead foresees the
    conflicting green after the plain red clearance, when the safety stage starts it, and
    minEndTime is no later; without a reading it foresees the long clearance."""
    # link 0 gives way to 1 and conflicts with 2; phases {0, 1}, {1}, {1, 2}
    table = signal_table([(3, {(0, 2)}, [[0, 1], [1], [1, 2]], [(0, 1)], [5.0, 0.0, 0.0])])
    safety = Safety(table, CFG, start_ns=0)
    now = 0
    for phase in [0] * 10 + [1]:
        now += NS
        safety.enforce(np.array([phase], np.int32), now)
    assert safety.link_state[0] == YELLOW and safety._long_clear[0]  # (ended while 1 was green)
    while safety.link_state[0] != RED:
        now += NS
        safety.enforce(np.array([2], np.int32), now)
    red_at = now
    plan = (np.array([[2, NO_PHASE, NO_PHASE]], np.int32), np.full((1, 3), -1, np.int64), np.zeros((1, 3), bool))
    empty = np.array([0.0, np.nan, np.nan])
    seen = look_ahead(table, safety, now, plan, box=empty)
    unseen = look_ahead(table, safety, now, plan)
    started = None
    while started is None:
        now += NS
        safety.enforce(np.array([2], np.int32), now, empty)
        if safety.link_state[2] == GREEN:
            started = now
    assert started == red_at + NS
    assert seen["likely"][2] == started and seen["min_end"][2] <= started
    assert unseen["likely"][2] == red_at + 5 * NS


@settings(max_examples=50, deadline=None)
@given(situations())
def test_min_end_le_likely_le_max_end_and_yellow_exact(sit):
    """minEndTime <= likelyTime <= maxEndTime wherever they are known, with box cameras (which only
    waive clearances: minEndTime no later) and without; a yellow's end is exact."""
    table, safety, now, plan = sit
    out = look_ahead(table, safety, now, plan)
    boxed = look_ahead(table, safety, now, plan, box=np.where(np.arange(table.n_links) % 2 == 0, 0.0, np.nan))
    for link in range(table.n_links):
        assert boxed["min_end"][link] <= out["min_end"][link]  # (a box can only waive clearances)
        for o in (boxed, out):
            lo, mid, hi = o["min_end"][link], o["likely"][link], o["max_end"][link]
            assert lo >= now
            if mid >= 0:
                assert lo <= mid
            if hi >= 0:
                assert mid >= 0 and mid <= hi
            if safety.link_state[link] == YELLOW:
                assert lo == mid == hi == safety.link_since_ns[link] + 3 * NS


@settings(max_examples=50, deadline=None)
@given(command_streams(), st.data())
def test_no_change_before_min_end_whatever_the_controller_asks(stream, data):
    """From any reachable state, whatever targets follow and whatever box cameras see on the
    paths they watch, no link changes before its minEndTime."""
    table, steps = stream
    safety, now = drive(table, steps)
    watched = np.array(data.draw(st.lists(st.booleans(), min_size=table.n_links, max_size=table.n_links)))

    def readings():  # what the boxes see this tick: anything on a watched path, NaN elsewhere
        seen = data.draw(st.lists(st.integers(0, 2), min_size=table.n_links, max_size=table.n_links))
        return np.where(watched, np.array(seen, dtype=np.float64), np.nan)

    box0 = readings()
    bound = min_end_reference(table, safety, now, box0)
    out = look_ahead(table, safety, now, (np.full((table.n_tls, 3), NO_PHASE, np.int32),
                                          np.full((table.n_tls, 3), -1, np.int64), np.zeros((table.n_tls, 3), bool)),
                     box=box0)
    assert out["min_end"].tolist() == bound
    state0 = safety.link_state.copy()
    changed = np.full(table.n_links, -1, dtype=np.int64)
    for _ in range(data.draw(st.integers(1, 40))):
        now += NS
        wanted = data.draw(st.lists(st.integers(-1, table.n_phases - 1), min_size=table.n_tls, max_size=table.n_tls))
        safety.enforce(np.array(wanted, dtype=np.int32), now, readings())
        first = (changed < 0) & (safety.link_state != state0)
        changed[first] = now
    for link in np.flatnonzero(changed >= 0):
        assert changed[link] >= bound[link]


@settings(max_examples=300, deadline=None)
@given(d=st.floats(1.0, 400.0), limit=st.floats(5.0, 30.0), a=st.floats(-20.0, 90.0), length=st.floats(0.5, 60.0),
       open_end=st.booleans(), queue=st.floats(0.0, 15.0))
def test_advice_band_within_limits_and_reaches_the_window(d, limit, a, length, open_end, queue):
    """The kernel's band equals ``band``; it never exceeds the limit nor goes below the minimum,
    and driving at either end of it reaches the stop line inside the window (with its margins)."""
    now = 1_000 * NS
    start = now + int(a * NS)
    end = -1 if open_end else start + int(length * NS)
    win_start = np.array([[start, -1]], dtype=np.int64)
    win_end = np.array([[end, -1]], dtype=np.int64)
    kind, lo, hi, arrive = np.zeros(1, np.int8), np.zeros(1), np.zeros(1), np.zeros(1, np.int64)
    _advice(np.int64(now), np.array([0], np.int32), np.array([0], np.int32), np.array([d]), np.array([limit]),
            np.array([queue / 2.0]), win_start, win_end, 2.0, 1.0, 5.0, np.array([GREEN], np.int8),
            np.array([now], np.int64), kind, lo, hi, arrive)
    a_s = (start - now) / NS
    got = band(d, limit, a_s, None if open_end else (end - now) / NS, queue_s=queue, margin_s=1.0, min_mps=5.0)
    if got is None:
        assert kind[0] == STOP
        return
    assert kind[0] in (ADVICE, FREE)
    assert (lo[0], hi[0]) == pytest.approx(got)
    assert 5.0 <= lo[0] <= hi[0] <= limit + 1e-9
    earliest = queue if a_s <= 0 else a_s + queue + 1.0
    latest = math.inf if open_end else (end - now) / NS - 1.0
    for v in (lo[0], hi[0]):
        assert earliest - 1e-6 <= d / v <= latest + 1e-6


@settings(max_examples=200, deadline=None)
@given(d=st.floats(1.0, 400.0), limit=st.floats(5.0, 30.0), wait=st.floats(0.0, 120.0), queue=st.floats(0.0, 15.0))
def test_a_red_without_a_known_green_gets_a_band_towards_its_earliest_green(d, limit, wait, queue):
    """No green window foreseen: the band never arrives before the earliest possible green (plus
    queue and margin), stays within the minimum and the limit, or is "expect to stop"."""
    now = 1_000 * NS
    earliest = now + int(wait * NS)
    none = np.full((1, 2), -1, dtype=np.int64)
    kind, lo, hi, arrive = np.zeros(1, np.int8), np.zeros(1), np.zeros(1), np.zeros(1, np.int64)
    _advice(np.int64(now), np.array([0], np.int32), np.array([0], np.int32), np.array([d]), np.array([limit]),
            np.array([queue / 2.0]), none, none, 2.0, 1.0, 5.0, np.array([RED], np.int8),
            np.array([earliest], np.int64), kind, lo, hi, arrive)
    a = (earliest - now) / NS + queue + 1.0  # (the wait the kernel sees: whole nanoseconds)
    if min(limit, d / a) < 5.0:
        assert kind[0] == STOP
        return
    assert kind[0] == EARLIEST
    assert 5.0 == lo[0] <= hi[0] <= limit + 1e-9
    assert d / hi[0] >= a - 1e-6


def test_feed_carries_spat_and_advice_bodies(small_scenario):
    """Over a real feed socket, every signal gets ``spat.<id>`` and ``advice.<id>`` each tick,
    their per-link and per-entry arrays as long as the signal's links and entries."""
    from engine.config import EngineConfig
    from engine.core import Engine
    from network.compiled import compile_network
    from serving import ANY, serving

    net = compile_network(small_scenario.net)
    engine = Engine(net, EngineConfig(clock="wall", tick_s=0.1, endpoints=ANY))
    ctx = zmq.Context.instance()
    with serving(engine) as server:
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"spat.")
        sub.setsockopt(zmq.SUBSCRIBE, b"advice.")
        sub.connect(server.endpoints["feed"])
        seen: dict[bytes, dict] = {}
        try:
            while len(seen) < 2 * net.n_tls:
                assert sub.poll(10_000), "no spat/advice message within 10 s"
                topic, body = sub.recv_multipart()
                seen[topic] = msgspec.msgpack.decode(body)
        finally:
            sub.close(0)
    for t, tls in enumerate(net.tls_ids):
        spat, adv = seen[b"spat." + tls.encode()], seen[b"advice." + tls.encode()]
        n = net.tls_n_links(t)
        assert len(spat["state"]) == n
        for key in ("minEndTime", "maxEndTime", "likelyTime", "confidence", "greenStart", "greenEnd"):
            assert len(spat[key]) == n
        assert all(m >= spat["ts_ns"] for m in spat["minEndTime"])
        assert spat["horizon_ns"] > spat["ts_ns"]
        k = len(adv["lanes"])
        assert k > 0
        for key in ("links", "distance_m", "speed_limit_mps", "queue_s", "kind", "min_mps", "max_mps", "windows"):
            assert len(adv[key]) == k
        assert set(adv["kind"]) <= {"stop", "advice", "free", "earliest"}
        for lo, hi, lim, kind in zip(adv["min_mps"], adv["max_mps"], adv["speed_limit_mps"], adv["kind"]):
            assert kind == "stop" or 5.0 <= lo <= hi <= lim + 0.01


def test_evaluate_with_guidance_reports_consistent_figures(small_scenario, tmp_path):
    """A short real-SUMO run with half the vehicles guided: the JSON has the guidance keys, the
    guided and unguided vehicles add up to those that departed, the SPaT error is finite, guided
    vehicles crept in queues, and guidance caused no collision, teleport or safety violation."""
    out = tmp_path / "g.json"
    r = subprocess.run([sys.executable, "-m", "engine", "evaluate", str(small_scenario.sumocfg), "--controller",
                        "adaptive", "--guidance-share", "0.5", "--seed", "3", "--end", "300", "-q", "--json", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    for key in ("stops_per_vehicle_guided", "stops_per_vehicle_unguided", "spat_likely_error_p90_s",
                "spat_likely_error_p50_s", "spat_likely_coverage", "vehicles_guided", "vehicles_unguided"):
        assert key in res
    assert res["vehicles_guided"] > 0 and res["vehicles_unguided"] > 0
    assert res["vehicles_guided"] + res["vehicles_unguided"] >= res["trips_completed"]
    assert res["spat_changes"] > 0 and res["spat_pairs"] > 0
    assert math.isfinite(res["spat_likely_error_p90_s"])
    assert res["spat_likely_error_p50_s"] <= res["spat_likely_error_p90_s"]
    assert 0.0 < res["spat_likely_coverage"] <= 1.0
    assert res["guidance_advised_vehicle_steps"] > 0
    assert res["guidance_creep_vehicle_steps"] > 0  # guided vehicles met queues and crept in them
    assert res["time_loss_guided_s"] >= 0.0 and res["time_loss_unguided_s"] >= 0.0
    for who in ("guided", "unguided"):  # repeated stops (on an edge stopped at before) are among the stops
        assert 0.0 <= res[f"repeat_stops_per_vehicle_{who}"] <= res[f"stops_per_vehicle_{who}"]
    assert res["guided_stop_reduction_same_edges"] is None or res["guided_stop_reduction_same_edges"] <= 1.0
    assert res["spat_feed_missed_ticks"] == 0
    assert res["collisions"] == 0 and res["teleports"] == 0 and res["safety_violations"] == 0


def test_guidance_share_is_checked(small_scenario):
    """A share outside 0..1, or guidance with SUMO's own controller, is a clear error."""
    from sim.evaluate import EvaluationError, evaluate

    with pytest.raises(EvaluationError, match="guidance-share"):
        evaluate(small_scenario.sumocfg, controller="sumo-actuated", guidance_share=0.5)
    with pytest.raises(EvaluationError, match="0..1"):
        evaluate(small_scenario.sumocfg, controller="adaptive", guidance_share=1.5)


@pytest.mark.parametrize("commit_s", [0.0, 20.0])
def test_every_committed_change_happens_when_published(small_scenario, commit_s):
    """``adaptive`` (default, and planned with ``commit_s``) through the safety stage on random
    traffic: every change published as committed (maxEndTime given) happens exactly then, and
    no link changes before its minEndTime."""
    from types import SimpleNamespace

    from controllers import Adaptive, AdaptiveConfig
    from engine.config import SpatParams
    from engine.spat import SpatStage
    from network.compiled import compile_network

    net = compile_network(small_scenario.net)
    rng = np.random.default_rng(5)
    ctl = Adaptive(net, AdaptiveConfig(commit_s=commit_s))
    safety = Safety(net, SafetyConfig(), start_ns=0)
    spat = SpatStage(net, safety, SpatParams(horizon_s=40.0), 1.0)
    target = np.full(net.n_tls, -1, dtype=np.int32)
    promised: dict[int, int] = {}  # link -> the time its current state was promised to end
    checked = 0
    last = safety.link_state.copy()
    vehicles = np.zeros(net.n_lanes)
    for k in range(1, 400):
        now = k * NS
        vehicles = np.clip(vehicles + rng.poisson(0.15, net.n_lanes) - rng.poisson(0.15, net.n_lanes), 0, 30)
        state = SimpleNamespace(lane_vehicles=vehicles.astype(float), lane_queue_veh=0.6 * vehicles,
                                lane_flow_vph=np.full(net.n_lanes, 0.15 * 3600.0))
        ctl.decide(state, safety.active_phase, safety.active_since_ns, now, target)
        safety.enforce(target, now)
        changed = np.flatnonzero(safety.link_state != last)
        if k > 1:
            assert (earliest[changed] <= now).all(), "a link changed before its published minEndTime"
        for link in changed.tolist():
            if link in promised:
                assert promised.pop(link) == now, f"link {link} changed at {now}, promised otherwise"
                checked += 1
        last = safety.link_state.copy()
        for link, t_end in list(promised.items()):
            assert t_end > now, f"link {link} was promised to change at {t_end} and did not"
        spat.load_plan(ctl, target)
        spat.update(now, state.lane_queue_veh)
        assert (spat.min_end >= now).all()
        earliest = spat.min_end.copy()
        for link in np.flatnonzero(spat.max_end >= 0).tolist():
            assert spat.min_end[link] <= spat.likely[link] == spat.max_end[link]
            promised.setdefault(link, int(spat.max_end[link]))
    assert checked > 20


def test_foes_ahead_tells_junctions_with_crossing_streams_from_dead_ends(small_scenario):
    """Guidance leaves a vehicle to SUMO before a junction with crossing or merging streams:
    on the small city every lane into one of the four signalised junctions has such foes ahead,
    no lane into a rim dead end has."""
    import libsumo
    import sumolib

    from sim.guidance import foes_ahead

    graph = sumolib.net.readNet(str(small_scenario.net))
    libsumo.start(["sumo", "-n", str(small_scenario.net), "--no-step-log", "true"])
    try:
        seen = {True: 0, False: 0}
        for edge in graph.getEdges():
            signalised = edge.getToNode().getType() == "traffic_light"
            for lane in edge.getLanes():
                got = foes_ahead(libsumo, lane.getID())
                assert got == signalised, (lane.getID(), edge.getToNode().getType())
                seen[got] += 1
        assert seen[True] > 0 and seen[False] > 0
    finally:
        libsumo.close()
