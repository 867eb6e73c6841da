"""Controller kernels against the plain-Python references in tests/naive.py."""

from __future__ import annotations

import numpy as np
import pytest

import naive
from controllers import GREEN, RED, FixedTime, FixedTimeConfig, MaxPressure, MaxPressureConfig
from network import compile_network
from network.estimate import Estimator

NS = 10**9


@pytest.fixture(scope="module", params=["cologne8", "grid4x4", "ingolstadt7"])
def net(request, resco_dir):
    return compile_network(next((resco_dir / request.param).glob("*.net.xml")))


class ShownStates:
    """What the safety stage shows, handed to a controller by ``watch_signals``: a tenth of the
    links held red throughout (a box camera sees a vehicle in their way), the others red now and
    then; ``next`` draws the states of a tick in place."""

    def __init__(self, rng, ctl, n_links):
        self.rng = rng
        self.states = np.full(n_links, GREEN, dtype=np.int8)
        self.held = rng.random(n_links) < 0.1
        ctl.watch_signals(self.states)

    def next(self) -> list[int]:
        self.states[:] = np.where(self.held | (self.rng.random(self.states.size) < 0.2), RED, GREEN)
        return self.states.tolist()


def test_max_pressure_matches_reference(net):
    """Over a random run of queues and phase histories, kernel and reference pick the same phases."""
    rng = np.random.default_rng(7)
    est = Estimator(net)
    cfg = MaxPressureConfig(min_hold_s=8, max_green_s=60, max_wait_s=40)
    ctl = MaxPressure(net, cfg)
    target = np.full(net.n_tls, -1, dtype=np.int32)
    ref_target = target.tolist()
    active = np.full(net.n_tls, -1, dtype=np.int32)
    active_since = np.zeros(net.n_tls, dtype=np.int64)
    served = [0] * net.n_links
    shown = ShownStates(rng, ctl, net.n_links)
    for step in range(300):
        now = step * NS
        states = shown.next()
        est.state.lane_vehicles[:] = rng.integers(0, 15, net.n_lanes) * (rng.random(net.n_lanes) < 0.7)
        # the phase shown follows the target with a random delay, as the safety stage would
        follow = rng.random(net.n_tls) < 0.3
        for t in np.flatnonzero(follow & (active != target)):
            active[t], active_since[t] = target[t], now
        ctl.decide(est.state, active, active_since, now, target)
        naive.max_pressure(net, est.state.lane_vehicles, ref_target, active.tolist(), active_since.tolist(),
                           now, 8 * NS, 60 * NS, 40 * NS, served, states)
        assert target.tolist() == ref_target, f"step {step}"


def test_max_pressure_prefers_the_loaded_phase(net):
    """All vehicles wait on the lanes of one phase: every signal switches to a phase serving them."""
    est = Estimator(net)
    ctl = MaxPressure(net)
    for t in range(net.n_tls):
        p = int(net.tls_phase_ptr[t + 1]) - 1
        links = naive.phase_links(net, p)
        lanes = {int(net.move_in_lane[net.link_move_idx[j]]) for link in links
                 for j in range(net.link_move_ptr[link], net.link_move_ptr[link + 1])}
        est.state.lane_vehicles[list(lanes)] = 20.0
    target = np.full(net.n_tls, -1, dtype=np.int32)
    ctl.decide(est.state, np.full(net.n_tls, -1, np.int32), np.zeros(net.n_tls, np.int64), 0, target)
    for t in range(net.n_tls):
        p = int(target[t])
        w_in = naive.phase_pressure(net, p, est.state.lane_vehicles)[1]
        assert w_in > 0, f"signal {net.tls_ids[t]} chose phase {p} with nobody waiting"


def test_webster_matches_reference(net):
    """Cycle and splits equal the textbook formula for random measured flows."""
    rng = np.random.default_rng(3)
    est = Estimator(net)
    cfg = FixedTimeConfig()
    ctl = FixedTime(net, cfg)
    est.state.lane_flow_vph[:] = rng.uniform(0, 700, net.n_lanes)
    target = np.full(net.n_tls, -1, dtype=np.int32)
    ctl.decide(est.state, target, np.zeros(net.n_tls, np.int64), 0, target)
    for t in range(net.n_tls):
        cycle, greens = naive.webster(net, t, est.state.lane_flow_vph, cfg.saturation_flow_vph, ctl.intergreen_s,
                                      cfg.min_green_s, cfg.cycle_min_s, cfg.cycle_max_s,
                                      cfg.max_degree_of_saturation)
        p0, p1 = net.tls_phase_ptr[t], net.tls_phase_ptr[t + 1]
        assert ctl.cycle_s[t] == pytest.approx(cycle)
        np.testing.assert_allclose(ctl.green_s[p0:p1], greens)
        assert target[t] == p0  # a new cycle starts with the first phase


def test_fixed_time_runs_phases_in_order_and_replans_only_at_cycle_end(net):
    """Targets step through the phases a cycle runs (not the lane phases) in order, each shown for
    its whole planned green however long the change to it took; a flow change mid-cycle waits for
    the next cycle."""
    est = Estimator(net)
    ctl = FixedTime(net)
    target = np.full(net.n_tls, -1, dtype=np.int32)
    active = np.full(net.n_tls, -1, dtype=np.int32)
    since = np.zeros(net.n_tls, np.int64)
    change_s = np.arange(net.n_tls) % 3 * 4 + 3  # 3, 7 or 11 s from a target to its full green
    asked = np.zeros(net.n_tls, np.int64)
    seen = [[] for _ in range(net.n_tls)]
    shown_s = [[] for _ in range(net.n_tls)]
    ctl.decide(est.state, active, since, 0, target)
    first_cycle, first_green = ctl.cycle_s.copy(), ctl.green_s.copy()
    est.state.lane_flow_vph[:] = 500.0
    horizon = int(first_cycle.max() + change_s.max() * 12)
    for s in range(1, horizon):
        prev = target.copy()
        for t in range(net.n_tls):  # a display: the target is fully shown change_s after it was asked for
            if active[t] != target[t] and s >= asked[t] + change_s[t]:
                active[t], since[t] = target[t], s * NS
        ctl.decide(est.state, active, since, s * NS, target)
        for t in range(net.n_tls):
            if target[t] != prev[t]:
                if active[t] == prev[t]:
                    shown_s[t].append((int(prev[t]), s - since[t] // NS))
                asked[t] = s
                active[t] = -1
            if not seen[t] or seen[t][-1] != target[t]:
                seen[t].append(int(target[t]))
    for t in range(net.n_tls):
        p0, p1 = net.tls_phase_ptr[t], net.tls_phase_ptr[t + 1]
        runs = [p for p in range(p0, p1) if net.phase_in_cycle[p]]
        if len(runs) < 2:
            continue
        assert seen[t][:len(runs)] == runs, seen[t]
        # the first cycle ran the first plan, whatever the flows did meanwhile
        for p, dur in shown_s[t][:len(runs)]:
            assert dur == pytest.approx(first_green[p], abs=1.0), (t, p, dur, first_green[p])
        assert len(shown_s[t]) > len(runs)  # it went on into a second cycle
        assert set(seen[t]) == set(runs)


def test_max_pressure_serves_a_waiting_movement_within_max_wait(resco_dir):
    """One approach is always loaded, one car waits elsewhere: it gets green by max_wait_s."""
    net = compile_network(resco_dir / "cologne1" / "cologne1.net.xml")
    est = Estimator(net)
    cfg = MaxPressureConfig(min_hold_s=8, max_green_s=1e6, max_wait_s=60)
    ctl = MaxPressure(net, cfg)
    busy = naive.phase_links(net, 0)
    lonely = next(link for link in naive.signal_links(net, 0) if link not in busy
                  and net.link_move_ptr[link + 1] > net.link_move_ptr[link])
    busy_lanes = {int(net.move_in_lane[m]) for link in busy
                  for m in net.link_move_idx[net.link_move_ptr[link]:net.link_move_ptr[link + 1]]}
    lonely_lane = int(net.move_in_lane[net.link_move_idx[net.link_move_ptr[lonely]]])
    est.state.lane_vehicles[list(busy_lanes - {lonely_lane})] = 30.0
    est.state.lane_vehicles[lonely_lane] = 1.0
    target = np.full(1, -1, dtype=np.int32)
    active = np.full(1, -1, dtype=np.int32)
    since = np.zeros(1, dtype=np.int64)
    green_at = None
    for s in range(0, 200):
        ctl.decide(est.state, active, since, s * NS, target)
        if active[0] != target[0]:
            active[0], since[0] = target[0], s * NS  # an instant change, for the test
        if lonely in naive.phase_links(net, int(active[0])):
            green_at = s
            break
    assert green_at is not None and green_at <= 60 + 1


def _random_obs(net, rng, silent=None):
    """One tick of per-lane observations; lanes in ``silent`` report nothing."""
    from detectors.bank import LaneObservations

    n = net.n_lanes
    veh = rng.integers(0, 12, n).astype(float) * (rng.random(n) < 0.6)
    seen = np.ones(n, dtype=bool)
    if silent is not None:
        seen[silent] = False
    cam = np.where(seen, veh, np.nan)
    occ = np.where(seen, rng.random(n) * (rng.random(n) < 0.5), np.nan)
    return LaneObservations(
        stop_count=np.where(seen, (rng.random(n) < 0.3).astype(float), 0.0), stop_occupancy=occ, stop_seen=seen,
        upstream_count=np.where(seen, (rng.random(n) < 0.2).astype(float), 0.0), upstream_seen=seen.copy(),
        speed_mps=np.full(n, np.nan), camera_vehicles=cam, camera_queue_veh=np.floor(cam * 0.5), interval_s=1.0)


def _follow(rng, active, active_since, target, now, p=0.3):
    """The phase shown follows the target with a random delay, as the safety stage would make it."""
    for t in np.flatnonzero((rng.random(target.size) < p) & (active != target)):
        active[t], active_since[t] = target[t], now


def test_actuated_matches_reference(net):
    """Gap-out, max-out, skipping and recall on failed lanes: kernel and reference agree step by step."""
    from controllers import Actuated, ActuatedConfig

    rng = np.random.default_rng(11)
    cfg = ActuatedConfig(min_green_s=5, max_green_s=30, gap_s=3, fail_after_s=10)
    ctl = Actuated(net, cfg)
    est = Estimator(net)
    healthy = rng.random(net.n_lanes) > 0.05
    silent = rng.choice(net.n_lanes, size=max(1, net.n_lanes // 10), replace=False)
    target = np.full(net.n_tls, -1, dtype=np.int32)
    ref_target = target.tolist()
    active = np.full(net.n_tls, -1, dtype=np.int32)
    since = np.zeros(net.n_tls, dtype=np.int64)
    last_report = [0] * net.n_lanes
    last_extend = [0] * net.n_tls
    switches = 0
    for step in range(300):
        now = step * NS
        obs = _random_obs(net, rng, silent if step > 50 else None)
        # sparse traffic: most lanes quiet most of the time, so greens gap out
        quiet = rng.random(net.n_lanes) < 0.8
        obs.stop_count[quiet] = 0
        obs.upstream_count[quiet] = 0
        est.update(obs)
        _follow(rng, active, since, target, now)
        before = target.copy()
        ctl.observe(obs, healthy, now)
        ctl.decide(est.state, active, since, now, target)
        naive.actuated(net, obs, est.state.lane_vehicles, healthy, ref_target, active.tolist(), since.tolist(), now,
                       5 * NS, 30 * NS, 3 * NS, 10 * NS, last_report, last_extend)
        assert target.tolist() == ref_target, f"step {step}"
        switches += int((before != target).sum())
    assert switches > net.n_tls  # the run exercised phase changes, not just the first choice


@pytest.mark.parametrize("variant", [dict(switch_ratio=2.5, early_switch_veh=0.0, optional_phase_veh=0.0, bridge_veh=-1.0), dict(early_switch_veh=4.0, optional_phase_veh=3.0),
                                     dict(free_flow_extends=False, bridge_veh=0.5), dict(optional_phase_veh=3.0, bridge_veh=0.0)])
def test_adaptive_matches_reference(net, variant):
    """Lane weights (with silent, stuck and unhealthy detectors) and decisions equal the reference."""
    from controllers import Adaptive, AdaptiveConfig

    rng = np.random.default_rng(5)
    cfg = AdaptiveConfig(min_hold_s=5, max_green_s=40, gap_s=3, max_wait_s=60, fail_after_s=10,
                         stuck_after_s=30, recall_veh=2, presence_veh=3, average_tau_s=60, **variant)
    ctl = Adaptive(net, cfg)
    est = Estimator(net)
    healthy = rng.random(net.n_lanes) > 0.05
    silent = rng.choice(net.n_lanes, size=max(1, net.n_lanes // 10), replace=False)
    stuck = rng.choice(net.n_lanes, size=max(1, net.n_lanes // 10), replace=False)
    mem = {k: [0] * net.n_lanes for k in ("seen_cam", "seen_stop", "seen_up", "last_stop_count", "cam_changed")}
    mem |= {k: [0.0] * net.n_lanes for k in ("cam_last", "w_avg", "cam_blind", "arrivals")}
    # an inventory with gaps: some lanes lack a camera, some an upstream loop
    has = tuple(ctl.entry & (rng.random(net.n_lanes) > x) for x in (0.2, 0.0, 0.3))
    ctl.set_detectors(*has)
    blind = rng.choice(net.n_lanes, size=max(1, net.n_lanes // 10), replace=False)
    # cameras that fall silent while their lane's loops go on reporting
    cam_off = np.setdiff1d(rng.choice(net.n_lanes, size=max(1, net.n_lanes // 5), replace=False),
                           np.concatenate([silent, stuck, blind]))
    # and upstream loops that fall silent under working cameras, on lanes long enough that the
    # camera sees nothing but the lane (a vehicle coming into its view extends the green)
    long = np.flatnonzero(net.lane_length_m >= 100.0)
    up_off = np.setdiff1d(rng.choice(long, size=max(1, long.size // 3), replace=False),
                          np.concatenate([silent, stuck, blind, cam_off]))
    target = np.full(net.n_tls, -1, dtype=np.int32)
    ref_target = target.tolist()
    active = np.full(net.n_tls, -1, dtype=np.int32)
    since = np.zeros(net.n_tls, dtype=np.int64)
    last_extend = [0] * net.n_tls
    served = [0] * net.n_links
    fresh = [False] * net.n_tls
    platoon = [0.0] * net.n_lanes
    shown = ShownStates(rng, ctl, net.n_links)
    for step in range(200):
        states = shown.next()
        now = step * NS
        obs = _random_obs(net, rng, silent if step > 20 else None)
        if step > 20:  # stuck: the camera repeats itself, the stop loop shows presence and counts nothing
            obs.camera_vehicles[stuck] = 4.0
            obs.stop_occupancy[stuck] = 1.0
            obs.stop_count[stuck] = 0.0
            obs.camera_vehicles[blind] = 0.0  # a camera stuck at nobody while the loops count
            obs.camera_vehicles[cam_off] = np.nan
            obs.camera_queue_veh[cam_off] = np.nan
            obs.upstream_seen[up_off] = False  # upstream loops gone silent under working cameras
            obs.upstream_count[up_off] = 0.0
        quiet = rng.random(net.n_lanes) < 0.8
        obs.stop_count[quiet] = 0
        obs.upstream_count[quiet] = 0
        est.update(obs)
        _follow(rng, active, since, target, now)
        ctl.observe(obs, healthy, now)
        ctl.decide(est.state, active, since, now, target)
        ref = naive.adaptive_weights(net, obs, est.state.lane_vehicles, est.state.lane_queue_veh,
                                     est.state.lane_flow_vph, healthy, has, now, 1.0, mem, cfg)
        np.testing.assert_allclose(ctl.w, [r[0] for r in ref], err_msg=f"step {step}")
        assert ctl.extend.tolist() == [r[1] for r in ref]
        assert ctl.trusted.tolist() == [r[2] for r in ref]
        assert ctl.standing.tolist() == [r[3] for r in ref]
        np.testing.assert_allclose(ctl.w_exit, [r[4] for r in ref])
        naive.adaptive(net, ctl.w.tolist(), ctl.w_exit.tolist(), ctl.extend.tolist(), ctl.standing.tolist(), est.state.lane_queue_veh,
                       obs.stop_count, ref_target, active.tolist(), since.tolist(), now, cfg, last_extend, served,
                       fresh, platoon, mem, states)
        assert target.tolist() == ref_target, f"step {step}"
    cams = np.flatnonzero(has[0])
    quiet = np.setdiff1d(silent, np.union1d(stuck, blind))  # (stuck and blind ones still send)
    assert not ctl.trusted[np.intersect1d(quiet, np.flatnonzero(ctl.entry))].any()  # silence noticed
    assert not ctl.trusted[np.intersect1d(np.setdiff1d(stuck, blind), cams)].any()  # and stuck cameras
    assert not ctl.trusted[np.setdiff1d(np.intersect1d(blind, cams), silent)].any()  # and blind ones
    # a lane whose camera fell silent is judged by its two loops, as one without a camera
    both_loops = np.flatnonzero(ctl.entry & has[0] & has[1] & has[2] & healthy)
    fallback = np.intersect1d(cam_off, both_loops)
    assert fallback.size and ctl.trusted[fallback].all()


def test_scats_plan_matches_reference(net):
    """At each signal's cycle end: smoothed flow ratios and the wanted cycle equal the SCATS-style formula."""
    from types import SimpleNamespace

    from controllers import Scats, ScatsConfig

    rng = np.random.default_rng(9)
    cfg = ScatsConfig()
    ctl = Scats(net, cfg)
    est = Estimator(net)
    healthy = np.ones(net.n_lanes, dtype=bool)
    target = np.full(net.n_tls, -1, dtype=np.int32)
    counts = np.zeros(net.n_lanes)
    lane_tls = {}
    for m in range(net.n_movements):
        if net.move_link[m] >= 0:
            lane_tls[int(net.move_in_lane[m])] = int(net.link_tls[net.move_link[m]])
    checked = 0
    for step in range(400):
        now = step * NS
        obs = _random_obs(net, rng)
        est.update(obs)
        counts += obs.stop_count
        prev = SimpleNamespace(y=ctl.y_s.copy(), wanted=ctl.wanted_s.copy(), start=ctl.cycle_start_ns.copy(),
                               cycle=ctl.cycle_s.copy())
        ctl.observe(obs, healthy, now)
        ctl.decide(est.state, target, np.zeros(net.n_tls, np.int64), now, target)
        for t in range(net.n_tls):
            if ctl.cycle_start_ns[t] != now or prev.cycle[t] <= 0:
                continue
            elapsed = (now - prev.start[t]) / 1e9
            lanes = [lane for lane, tt in lane_tls.items() if tt == t]
            demand = np.zeros(net.n_lanes)
            demand[lanes] = counts[lanes] + est.state.lane_queue_veh[lanes]
            ys, cycle = naive.scats_plan(net, t, demand, elapsed, prev.y, prev.wanted[t], ctl.intergreen_s, cfg)
            p0, p1 = net.tls_phase_ptr[t], net.tls_phase_ptr[t + 1]
            np.testing.assert_allclose(ctl.y_s[p0:p1], [ys[p] for p in range(p0, p1)])
            assert ctl.wanted_s[t] == pytest.approx(cycle)
            counts[lanes] = 0.0
            checked += 1
        for t in range(net.n_tls):  # the first cycle starts at step 0: its counts start there too
            if step == 0:
                counts[[lane for lane, tt in lane_tls.items() if tt == t]] = 0.0
    assert checked >= net.n_tls


def test_scats_coordinates_an_arterial_on_a_common_cycle(resco_dir):
    """On arterial4x4, the signals of each tree settle on one cycle and start it at their offsets."""
    from controllers import Scats
    from controllers.scats import coordination

    net = compile_network(resco_dir / "arterial4x4" / "arterial4x4.net.xml")
    root, offset, coord = coordination(net)
    assert len(set(root.tolist())) < net.n_tls  # some signals are coordinated
    for t in range(net.n_tls):
        assert root[root[t]] == root[t] and (offset[t] > 0) == (root[t] != t)
        assert net.tls_phase_ptr[t] <= coord[t] < net.tls_phase_ptr[t + 1]
    ctl = Scats(net)
    est = Estimator(net)
    est.state.lane_flow_vph[:] = 400.0
    est.state.lane_queue_veh[:] = 2.0
    target = np.full(net.n_tls, -1, dtype=np.int32)
    healthy = np.ones(net.n_lanes, dtype=bool)
    rng = np.random.default_rng(1)
    starts = {t: [] for t in range(net.n_tls)}
    for s in range(1, 1500):
        obs = _random_obs(net, rng)
        est.update(obs)
        ctl.observe(obs, healthy, s * NS)
        ctl.decide(est.state, target, np.zeros(net.n_tls, np.int64), s * NS, target)
        for t in range(net.n_tls):
            if ctl.cycle_start_ns[t] == s * NS:
                starts[t].append((s, ctl.cycle_s[t]))
    for t in range(net.n_tls):
        common = ctl.group_s[root[t]]  # the longest cycle its tree wants
        s_t, c_t = starts[t][-2]  # a whole cycle, long after the transition
        assert c_t == pytest.approx(common, abs=1.0)
        err = (s_t - offset[t]) % common
        assert min(err, common - err) <= 1.0  # started within a tick of its offset


def test_scats_runs_only_phases_no_larger_phase_contains(net):
    """Protected-turn stages whose links a larger phase also shows are left out; every link
    some phase serves is still served by a phase the cycle runs; lane phases are not run."""
    from controllers.scats import run_phases

    on = run_phases(net, cycle_only=True)
    assert not (on & ~net.phase_in_cycle).any()
    for t in range(net.n_tls):
        phases = [p for p in range(int(net.tls_phase_ptr[t]), int(net.tls_phase_ptr[t + 1])) if net.phase_in_cycle[p]]
        if not phases:
            continue
        assert any(on[p] for p in phases)
        served = {x for p in phases for x in naive.phase_links(net, p)}
        assert served == {x for p in phases if on[p] for x in naive.phase_links(net, p)}
        for p in phases:
            contained = any(q != p and set(naive.phase_links(net, p)) < set(naive.phase_links(net, q))
                            for q in phases)
            if on[p]:
                assert not contained
            else:
                assert contained or any(q < p and naive.phase_links(net, q) == naive.phase_links(net, p)
                                        for q in phases) or not naive.phase_links(net, p)
