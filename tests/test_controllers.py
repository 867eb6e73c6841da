"""Controller kernels against the plain-Python references in tests/naive.py."""

from __future__ import annotations

import numpy as np
import pytest

import naive
from controllers import FixedTime, FixedTimeConfig, MaxPressure, MaxPressureConfig
from network import compile_network
from network.estimate import Estimator

NS = 10**9


@pytest.fixture(scope="module", params=["cologne8", "grid4x4", "ingolstadt7"])
def net(request, resco_dir):
    return compile_network(next((resco_dir / request.param).glob("*.net.xml")))


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
    for step in range(300):
        now = step * NS
        est.state.lane_vehicles[:] = rng.integers(0, 15, net.n_lanes) * (rng.random(net.n_lanes) < 0.7)
        # the phase shown follows the target with a random delay, as the safety stage would
        follow = rng.random(net.n_tls) < 0.3
        for t in np.flatnonzero(follow & (active != target)):
            active[t], active_since[t] = target[t], now
        ctl.decide(est.state, active, active_since, now, target)
        naive.max_pressure(net, est.state.lane_vehicles, ref_target, active.tolist(), active_since.tolist(),
                           now, 8 * NS, 60 * NS, 40 * NS, served)
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
    """Targets step through the phases in order; a flow change mid-cycle waits for the next cycle."""
    est = Estimator(net)
    ctl = FixedTime(net)
    target = np.full(net.n_tls, -1, dtype=np.int32)
    seen = [[] for _ in range(net.n_tls)]
    ctl.decide(est.state, target, np.zeros(net.n_tls, np.int64), 0, target)
    first_cycle = ctl.cycle_s.copy()
    est.state.lane_flow_vph[:] = 500.0
    for s in range(1, int(first_cycle.min())):
        ctl.decide(est.state, target, np.zeros(net.n_tls, np.int64), s * NS, target)
        for t in range(net.n_tls):
            if not seen[t] or seen[t][-1] != target[t]:
                seen[t].append(int(target[t]))
    np.testing.assert_array_equal(ctl.cycle_s, first_cycle)
    for t in range(net.n_tls):
        assert seen[t] == sorted(seen[t]), seen[t]


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
