"""The estimation stage: per-lane and per-edge traffic state from one tick's observations.

Per lane: vehicles near the stop line (what pressure-based control weighs), the standing queue,
smoothed flow and speed. A camera gives vehicles and queue directly; where only loops exist the
lane's content is a storage balance (upstream count in, stop-bar count out). Per edge: flow,
space-mean speed, density, queue and travel time. Lanes with no detector keep their last
estimate (network-wide estimation for unobserved links is a later stage's job).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from network.compiled import CompiledNetwork

JAM_SPACING_M = 7.5  # metres of lane per queued vehicle
FLOW_TAU_S = 300.0  # smoothing time constant of flows
SPEED_TAU_S = 30.0
CAMERA_RANGE_M = 100.0


@dataclass
class NetworkState:
    """Per-lane and per-edge estimates; arrays are owned by the estimator and updated in place."""

    lane_vehicles: np.ndarray  # float64[n_lanes] vehicles within the last ~100 m
    lane_queue_veh: np.ndarray  # float64[n_lanes] standing vehicles
    lane_flow_vph: np.ndarray  # float64[n_lanes] smoothed stop-line flow
    lane_speed_mps: np.ndarray  # float64[n_lanes]
    lane_observed: np.ndarray  # bool[n_lanes] some detector reported this tick
    edge_flow_vph: np.ndarray  # float64[n_edges]
    edge_speed_mps: np.ndarray
    edge_density_vpkm: np.ndarray
    edge_queue_veh: np.ndarray
    edge_travel_time_s: np.ndarray


@njit(cache=True)
def _estimate_lanes(dt, stop_count, stop_seen, up_count, up_seen, speed, cam_veh, cam_queue,
                    lane_len, free_speed, vehicles, queue, flow, spd, observed):
    a_flow = min(1.0, dt / FLOW_TAU_S)
    a_speed = min(1.0, dt / SPEED_TAU_S)
    for i in range(vehicles.size):
        seen = False
        if stop_seen[i]:
            seen = True
            flow[i] += a_flow * (stop_count[i] * 3600.0 / dt - flow[i])
        if not np.isnan(speed[i]):
            spd[i] += a_speed * (speed[i] - spd[i])
        cap = max(1.0, min(lane_len[i], CAMERA_RANGE_M) / JAM_SPACING_M)
        if not np.isnan(cam_veh[i]):
            seen = True
            vehicles[i] = cam_veh[i]
            queue[i] = cam_queue[i]
        elif up_seen[i] and stop_seen[i]:
            seen = True
            v = vehicles[i] + up_count[i] - stop_count[i]
            vehicles[i] = min(max(v, 0.0), cap)
            queue[i] = vehicles[i] if stop_count[i] == 0 and vehicles[i] > 0 else 0.5 * vehicles[i]
        if np.isnan(speed[i]):
            # no speed measured: a standing queue slows the lane, an empty one runs free
            target = free_speed[i] * (1.0 - min(1.0, queue[i] / cap))
            spd[i] += a_speed * (max(target, 0.5) - spd[i])
        observed[i] = seen


@njit(cache=True)
def _aggregate_edges(edge_lane_ptr, edge_lane_idx, edge_len, flow, spd, vehicles, queue,
                     e_flow, e_speed, e_density, e_queue, e_tt):
    for e in range(e_flow.size):
        f = 0.0
        s = 0.0
        v = 0.0
        q = 0.0
        n = 0
        for k in range(edge_lane_ptr[e], edge_lane_ptr[e + 1]):
            lane = edge_lane_idx[k]
            f += flow[lane]
            s += spd[lane]
            v += vehicles[lane]
            q += queue[lane]
            n += 1
        e_flow[e] = f
        e_speed[e] = s / n if n > 0 else 0.0
        e_density[e] = v / max(min(edge_len[e], CAMERA_RANGE_M), 1.0) * 1000.0 / max(n, 1)
        e_queue[e] = q
        e_tt[e] = edge_len[e] / max(e_speed[e], 0.5)


class Estimator:
    """Owns a :class:`NetworkState` and updates it from each tick's observations."""

    def __init__(self, net: CompiledNetwork):
        self.net = net
        nl, ne = net.n_lanes, net.n_edges
        self.state = NetworkState(
            lane_vehicles=np.zeros(nl),
            lane_queue_veh=np.zeros(nl),
            lane_flow_vph=np.zeros(nl),
            lane_speed_mps=net.lane_speed_mps.copy(),
            lane_observed=np.zeros(nl, dtype=np.bool_),
            edge_flow_vph=np.zeros(ne),
            edge_speed_mps=net.edge_speed_mps.copy(),
            edge_density_vpkm=np.zeros(ne),
            edge_queue_veh=np.zeros(ne),
            edge_travel_time_s=net.edge_length_m / np.maximum(net.edge_speed_mps, 0.5),
        )

    def update(self, obs) -> NetworkState:
        """``obs`` holds one tick's per-lane arrays (``detectors.LaneObservations``)."""
        s, net = self.state, self.net
        _estimate_lanes(
            float(obs.interval_s), obs.stop_count, obs.stop_seen, obs.upstream_count, obs.upstream_seen,
            obs.speed_mps, obs.camera_vehicles, obs.camera_queue_veh, net.lane_length_m,
            net.lane_speed_mps, s.lane_vehicles, s.lane_queue_veh, s.lane_flow_vph, s.lane_speed_mps,
            s.lane_observed,
        )
        _aggregate_edges(
            net.edge_lane_ptr, net.edge_lane_idx, net.edge_length_m, s.lane_flow_vph, s.lane_speed_mps,
            s.lane_vehicles, s.lane_queue_veh, s.edge_flow_vph, s.edge_speed_mps, s.edge_density_vpkm,
            s.edge_queue_veh, s.edge_travel_time_s,
        )
        return s
