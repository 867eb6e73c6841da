"""Actuated control: gap-out and max-out on detector calls, recall where detectors have failed.

Each tick a lane *calls* (asks for green) when a vehicle is seen on it: the stop-bar loop is
occupied or counted one, the upstream loop counted one, or the estimator has vehicles within
camera range. A lane *extends* the green it has when a vehicle crossed or stood on the stop-bar
loop, passed the upstream loop (it reaches the stop line within a gap), or a queue still stands
at it. A lane whose detectors have failed (``lane_healthy`` false, filled by detector health;
or no report at all for ``fail_after_s``) is on recall: it calls and extends all the time, as a
field controller's "max recall" on a failed detector does.

Each signal runs its phases in their ring order, skipping phases that have no call. Once the
active phase has had ``min_green_s`` it ends when no lane of it extended for ``gap_s``
(gap-out), or after ``max_green_s`` when another phase calls (max-out); then the next phase in
order with a call goes. With no call elsewhere the green rests where it is.

``observe`` takes the tick's raw per-lane observations (``detectors.bank.LaneObservations``),
``decide`` the estimates; both kernels run over every lane and signal at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import ClassVar

import numpy as np
from numba import njit

from network.compiled import CompiledNetwork
from network.estimate import NetworkState


@dataclass(frozen=True)
class ActuatedConfig:
    min_green_s: float = 5.0
    max_green_s: float = 45.0
    gap_s: float = 3.0
    fail_after_s: float = 10.0  # a lane with no detector report for this long is on recall


@njit(cache=True)
def lane_activity(now_ns, healthy, stop_count, stop_occ, stop_seen, up_count, up_seen, cam_veh, vehicles, queue,
                  fail_after_ns, last_report_ns, call, extend):
    """Per lane: ``call`` (a vehicle asks for green) and ``extend`` (a vehicle still uses the
    green); a failed lane does both. ``last_report_ns`` is updated with this tick's reports."""
    for i in range(call.size):
        if stop_seen[i] or up_seen[i] or not np.isnan(cam_veh[i]):
            last_report_ns[i] = now_ns
        if not healthy[i] or now_ns - last_report_ns[i] > fail_after_ns:
            call[i] = True
            extend[i] = True
            continue
        passing = stop_count[i] > 0.0 or up_count[i] > 0.0
        call[i] = passing or vehicles[i] >= 0.5 or (stop_occ[i] > 0.0 and not np.isnan(stop_occ[i]))
        extend[i] = passing


@njit(cache=True)
def phase_any(p, phase_link_ptr, phase_link_idx, link_move_ptr, link_move_idx, move_in, lane_flag):
    """Whether any lane feeding a movement of phase ``p`` has its flag set."""
    for k in range(phase_link_ptr[p], phase_link_ptr[p + 1]):
        link = phase_link_idx[k]
        for j in range(link_move_ptr[link], link_move_ptr[link + 1]):
            if lane_flag[move_in[link_move_idx[j]]]:
                return True
    return False


@njit(cache=True)
def _actuated(now_ns, call, extend, tls_phase_ptr, phase_link_ptr, phase_link_idx, link_move_ptr, link_move_idx,
              move_in, in_cycle, active_phase, active_since_ns, min_green_ns, max_green_ns, gap_ns, last_extend_ns,
              target):
    for t in range(tls_phase_ptr.size - 1):
        p0 = tls_phase_ptr[t]
        p1 = tls_phase_ptr[t + 1]
        if p1 == p0:
            target[t] = -1
            continue
        cur = target[t]
        if cur < p0 or cur >= p1:
            target[t] = p0
            last_extend_ns[t] = now_ns
            continue
        if active_phase[t] != cur:
            last_extend_ns[t] = now_ns  # the gap timer starts with the green
            continue
        if phase_any(cur, phase_link_ptr, phase_link_idx, link_move_ptr, link_move_idx, move_in, extend):
            last_extend_ns[t] = now_ns
        age = now_ns - active_since_ns[t]
        if age < min_green_ns:
            continue
        gapped = now_ns - last_extend_ns[t] >= gap_ns
        if not gapped and age < max_green_ns:
            continue
        n = p1 - p0
        for k in range(1, n):
            p = p0 + (cur - p0 + k) % n
            if in_cycle[p] and phase_any(p, phase_link_ptr, phase_link_idx, link_move_ptr, link_move_idx, move_in, call):
                target[t] = p
                break


class Actuated:
    name: ClassVar[str] = "actuated"

    def __init__(self, net: CompiledNetwork, config: ActuatedConfig | None = None):
        self.net = net
        self.config = config or ActuatedConfig()
        n = net.n_lanes
        self.lane_healthy = np.ones(n, dtype=np.bool_)
        self.last_report_ns = np.zeros(n, dtype=np.int64)
        self.call = np.zeros(n, dtype=np.bool_)
        self.extend = np.zeros(n, dtype=np.bool_)
        self.last_extend_ns = np.zeros(net.n_tls, dtype=np.int64)
        self._obs = None
        self._started = False

    def observe(self, obs, lane_healthy: np.ndarray, now_ns: int) -> None:
        """The tick's raw per-lane observations and the detector-health mask (true: healthy)."""
        self._obs = obs
        self.lane_healthy = lane_healthy

    def decide(self, state: NetworkState, active_phase: np.ndarray, active_since_ns: np.ndarray,
               now_ns: int, target_phase: np.ndarray) -> None:
        net, c, obs = self.net, self.config, self._obs
        if not self._started:
            self.last_report_ns[:] = now_ns  # failure is counted from the start
            self._started = True
        if obs is None:
            obs = _no_observations(net.n_lanes)
        lane_activity(np.int64(now_ns), self.lane_healthy, obs.stop_count, obs.stop_occupancy, obs.stop_seen,
                      obs.upstream_count, obs.upstream_seen, obs.camera_vehicles, state.lane_vehicles,
                      state.lane_queue_veh, np.int64(c.fail_after_s * 1e9), self.last_report_ns, self.call,
                      self.extend)
        _actuated(np.int64(now_ns), self.call, self.extend, net.tls_phase_ptr, net.phase_link_ptr,
                  net.phase_link_idx, net.link_move_ptr, net.link_move_idx, net.move_in_lane, net.phase_in_cycle,
                  active_phase, active_since_ns, np.int64(c.min_green_s * 1e9), np.int64(c.max_green_s * 1e9),
                  np.int64(c.gap_s * 1e9), self.last_extend_ns, target_phase)


def _no_observations(n: int) -> SimpleNamespace:
    """Observations of a tick in which nothing reported (for a controller driven without ``observe``)."""
    z = np.zeros(n)
    f = np.zeros(n, dtype=np.bool_)
    nan = np.full(n, np.nan)
    return SimpleNamespace(stop_count=z, stop_occupancy=nan, stop_seen=f, upstream_count=z, upstream_seen=f,
                           speed_mps=nan, camera_vehicles=nan, camera_queue_veh=nan, interval_s=1.0)
