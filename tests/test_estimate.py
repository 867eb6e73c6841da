"""The estimation stage against a plain-Python reference, on a real network."""

from __future__ import annotations

import math

import numpy as np
import pytest

from detectors.bank import LaneObservations
from network import compile_network
from network.estimate import CAMERA_RANGE_M, FLOW_TAU_S, JAM_SPACING_M, SPEED_TAU_S, Estimator


def reference_lanes(dt, obs, lane_len, free, state):
    """One estimation step per lane, as network/estimate.py's docstring says it."""
    veh, queue, flow, spd = state
    for i in range(len(veh)):
        if obs.stop_seen[i]:
            flow[i] += min(1, dt / FLOW_TAU_S) * (obs.stop_count[i] * 3600 / dt - flow[i])
        if not math.isnan(obs.speed_mps[i]):
            spd[i] += min(1, dt / SPEED_TAU_S) * (obs.speed_mps[i] - spd[i])
        cap = max(1.0, min(lane_len[i], CAMERA_RANGE_M) / JAM_SPACING_M)
        if not math.isnan(obs.camera_vehicles[i]):
            veh[i], queue[i] = obs.camera_vehicles[i], obs.camera_queue_veh[i]
        elif obs.upstream_seen[i] and obs.stop_seen[i]:
            veh[i] = min(max(veh[i] + obs.upstream_count[i] - obs.stop_count[i], 0.0), cap)
            queue[i] = veh[i] if obs.stop_count[i] == 0 and veh[i] > 0 else 0.5 * veh[i]
        if math.isnan(obs.speed_mps[i]):
            target = free[i] * (1 - min(1.0, queue[i] / cap))
            spd[i] += min(1, dt / SPEED_TAU_S) * (max(target, 0.5) - spd[i])


@pytest.fixture(scope="module")
def net(resco_dir):
    return compile_network(resco_dir / "cologne8" / "cologne8.net.xml")


def random_obs(rng, n):
    nan = np.full(n, np.nan)
    cam = rng.random(n) < 0.4
    spd = rng.random(n) < 0.3
    return LaneObservations(
        stop_count=rng.integers(0, 2, n).astype(float), stop_occupancy=rng.random(n),
        stop_seen=rng.random(n) < 0.8, upstream_count=rng.integers(0, 2, n).astype(float),
        upstream_seen=rng.random(n) < 0.6, speed_mps=np.where(spd, rng.uniform(0, 15, n), nan),
        camera_vehicles=np.where(cam, rng.integers(0, 12, n), nan),
        camera_queue_veh=np.where(cam, rng.integers(0, 6, n), nan), interval_s=1.0,
    )


def test_lane_estimates_match_reference_over_a_run(net):
    """Every prefix of a random observation stream gives the reference's per-lane state."""
    rng = np.random.default_rng(11)
    est = Estimator(net)
    n = net.n_lanes
    ref = [np.zeros(n), np.zeros(n), np.zeros(n), net.lane_speed_mps.copy()]
    for _ in range(120):
        obs = random_obs(rng, n)
        st = est.update(obs)
        reference_lanes(1.0, obs, net.lane_length_m, net.lane_speed_mps, ref)
        np.testing.assert_allclose(st.lane_vehicles, ref[0])
        np.testing.assert_allclose(st.lane_queue_veh, ref[1])
        np.testing.assert_allclose(st.lane_flow_vph, ref[2])
        np.testing.assert_allclose(st.lane_speed_mps, ref[3])


def test_edge_conditions_aggregate_their_lanes(net):
    rng = np.random.default_rng(5)
    est = Estimator(net)
    st = est.update(random_obs(rng, net.n_lanes))
    for e in range(net.n_edges):
        lanes = net.edge_lane_idx[net.edge_lane_ptr[e]:net.edge_lane_ptr[e + 1]]
        assert st.edge_flow_vph[e] == pytest.approx(st.lane_flow_vph[lanes].sum())
        assert st.edge_queue_veh[e] == pytest.approx(st.lane_queue_veh[lanes].sum())
        assert st.edge_speed_mps[e] == pytest.approx(st.lane_speed_mps[lanes].mean())
        assert st.edge_travel_time_s[e] == pytest.approx(net.edge_length_m[e] / max(st.edge_speed_mps[e], 0.5))
