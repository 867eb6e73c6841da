"""``scats``: cycle-based adaptive control in the SCATS/SCOOT family, with green waves.

Every signal runs its phases in order, one cycle after another, starting each cycle with its
*coordinated* phase. At the end of each cycle it re-plans from what the detectors measured
during it (so a plan never changes mid-cycle):

- demand of a lane over the cycle = vehicles counted at its stop-bar loop plus the queue still
  standing at cycle end (where the lane's detectors have failed: its smoothed flow instead);
- ``y_p`` = the highest demand x saturation headway / cycle length among the lanes phase ``p``
  serves (a shared lane's demand split among its movements), smoothed over cycles: this is the
  degree of saturation the phase would have if its green were exactly what it needs;
- the cycle the signal wants is Webster's ``(1.5 L + 5) / (1 - Y)`` for ``Y = sum(y_p)`` and
  lost time ``L`` (one intergreen per phase), moved by at most ``cycle_step_s`` per cycle and
  kept within ``[cycle_min_s, cycle_max_s]``;
- splits share the effective green in proportion to ``y_p`` (so every phase ends up with the
  same degree of saturation), at least ``min_green_s`` each.

Coordination: when the network is compiled, signals whose junctions are joined by a road form
trees (a maximum-weight branching over the roads between signalised junctions, a road weighing
its lanes x its speed limit: the arterials). All signals of a tree run the longest cycle any of
them wants, and each cycle of signal ``t`` starts at ``offset_s[t]`` (mod the cycle) after a
common reference: the sum of the free-flow travel times from the tree's root, so a platoon
released by the coordinated phase upstream arrives at the start of the coordinated phase
downstream (a green wave along each arterial). A signal found off its offset shortens or
lengthens its next cycle by at most ``max_correction`` of it to get back.

A phase with no vehicle waiting (and not the coordinated one) is skipped: its time goes to the
phase before it. A phase whose links are all green in a larger phase of the same signal too (a
protected-turn stage) is not run at all (``run_phases``).

A phase asked for keeps the signal until it has shown its whole green for ``min_green_s`` at
least, even when the cycle clock has moved on (its change took longer than its intergreen: a
permissive turn's long clearance, a held turn); the cycle then runs late, and the offset
correction brings the next ones back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from numba import njit

from controllers.actuated import _no_observations
from controllers.base import movement_shares, run_phases
from controllers.safety import SafetyConfig
from network.compiled import CompiledNetwork
from network.estimate import NetworkState


_SAFE = SafetyConfig()  # (the safety stage's defaults: the timings these plans count with)


@dataclass(frozen=True)
class ScatsConfig:
    saturation_flow_vph: float = 1800.0  # per lane
    intergreen_s: float = _SAFE.yellow_s + _SAFE.red_clearance_s  # lost once per phase
    red_clearance_s: float = _SAFE.red_clearance_s
    min_green_s: float = _SAFE.min_green_s
    cycle_min_s: float = 40.0
    cycle_max_s: float = 120.0
    cycle_step_s: float = 10.0
    max_degree_of_saturation: float = 0.9
    smoothing: float = 0.5  # weight of the newest cycle in the smoothed y_p
    max_correction: float = 0.2
    fail_after_s: float = 10.0
    give_up_s: float = 60.0  # a phase asked for and not fully shown this long is given up


@njit(cache=True)
def measured_y(t, elapsed_s, lane_demand, tls_phase_ptr, phase_link_ptr, phase_link_idx, link_move_ptr,
               link_move_idx, move_in, move_in_share, headway_s, phase_on, y_out):
    """Writes each phase's flow ratio over the cycle just ended into ``y_out`` (0 for a phase not run)."""
    for p in range(tls_phase_ptr[t], tls_phase_ptr[t + 1]):
        y = 0.0
        if not phase_on[p]:
            y_out[p] = 0.0
            continue
        for k in range(phase_link_ptr[p], phase_link_ptr[p + 1]):
            link = phase_link_idx[k]
            for j in range(link_move_ptr[link], link_move_ptr[link + 1]):
                m = link_move_idx[j]
                y = max(y, lane_demand[move_in[m]] * move_in_share[m] * headway_s / elapsed_s)
        y_out[p] = y


@njit(cache=True)
def plan_cycle(t, cycle_prev, y_s, intergreen, min_green, cycle_min, cycle_max, cycle_step, max_y, tls_phase_ptr,
               phase_on):
    """The cycle signal ``t`` wants, from its smoothed flow ratios ``y_s``."""
    lost = 0.0
    y_sum = 0.0
    n = 0
    for p in range(tls_phase_ptr[t], tls_phase_ptr[t + 1]):
        if phase_on[p]:
            lost += intergreen[p]
            y_sum += y_s[p]
            n += 1
    cycle = (1.5 * lost + 5.0) / (1.0 - min(y_sum, max_y))
    if cycle_prev > 0.0:
        cycle = min(max(cycle, cycle_prev - cycle_step), cycle_prev + cycle_step)
    return min(max(cycle, cycle_min, lost + n * min_green), max(cycle_max, lost + n * min_green))


@njit(cache=True)
def split_greens(t, length_s, y_s, intergreen, min_green, tls_phase_ptr, phase_on, green_s):
    """Shares ``length_s`` minus the lost time among the phases of ``t`` in proportion to ``y_s``;
    returns the cycle. A phase not run gets no time at all."""
    p0 = tls_phase_ptr[t]
    p1 = tls_phase_ptr[t + 1]
    n = 0
    lost = 0.0
    y_sum = 0.0
    for p in range(p0, p1):
        if phase_on[p]:
            lost += intergreen[p]
            y_sum += y_s[p]
            n += 1
    effective = max(length_s - lost, n * min_green)
    total = 0.0
    for p in range(p0, p1):
        if not phase_on[p]:
            green_s[p] = 0.0
            continue
        share = y_s[p] / y_sum if y_sum > 0.0 else 1.0 / n
        green_s[p] = max(min_green, effective * share)
        total += green_s[p] + intergreen[p]
    return total


@njit(cache=True)
def _scats(now_ns, stop_count, vehicles, queue, flow, lane_ok, tls_phase_ptr, phase_link_ptr, phase_link_idx,
           link_move_ptr, link_move_idx, move_in, move_in_share, intergreen, headway_s, min_green, cycle_min,
           cycle_max, cycle_step, max_y, smoothing, max_correction, tls_root, offset_s, coord_phase, phase_on, lane_count,
           lane_demand, y_now, y_s, green_s, cycle_start_ns, cycle_s, wanted_s, group_s, active_phase,
           active_since_ns, min_green_ns, give_up_ns, asked_ns, target):
    for i in range(lane_count.size):
        lane_count[i] += stop_count[i] if lane_ok[i] else 0.0
    n_tls = tls_phase_ptr.size - 1
    for t in range(n_tls):
        group_s[t] = 0.0
    for t in range(n_tls):
        r = tls_root[t]
        group_s[r] = max(group_s[r], wanted_s[t])
    for t in range(n_tls):
        p0 = tls_phase_ptr[t]
        p1 = tls_phase_ptr[t + 1]
        if p1 == p0:
            target[t] = -1
            continue
        n = p1 - p0
        if cycle_s[t] <= 0.0 or now_ns >= cycle_start_ns[t] + np.int64(cycle_s[t] * 1e9):
            elapsed = (now_ns - cycle_start_ns[t]) / 1e9 if cycle_s[t] > 0.0 else 0.0
            # demand over the cycle just ended, lane by lane, and the lanes' counters reset
            for p in range(p0, p1):
                for k in range(phase_link_ptr[p], phase_link_ptr[p + 1]):
                    link = phase_link_idx[k]
                    for j in range(link_move_ptr[link], link_move_ptr[link + 1]):
                        lane = move_in[link_move_idx[j]]
                        if lane_ok[lane]:
                            lane_demand[lane] = lane_count[lane] + queue[lane]
                        else:
                            lane_demand[lane] = flow[lane] * elapsed / 3600.0
            for p in range(p0, p1):
                for k in range(phase_link_ptr[p], phase_link_ptr[p + 1]):
                    link = phase_link_idx[k]
                    for j in range(link_move_ptr[link], link_move_ptr[link + 1]):
                        lane_count[move_in[link_move_idx[j]]] = 0.0
            if elapsed > 0.0:
                measured_y(t, elapsed, lane_demand, tls_phase_ptr, phase_link_ptr, phase_link_idx, link_move_ptr,
                           link_move_idx, move_in, move_in_share, headway_s, phase_on, y_now)
                for p in range(p0, p1):
                    y_s[p] += smoothing * (y_now[p] - y_s[p])
            wanted_s[t] = plan_cycle(t, wanted_s[t], y_s, intergreen, min_green, cycle_min, cycle_max, cycle_step,
                                     max_y, tls_phase_ptr, phase_on)
            common = max(group_s[tls_root[t]], wanted_s[t])
            # back towards the offset: the cycle should start at offset_s (mod common) after epoch 0
            c_ns = np.int64(common * 1e9)
            err_ns = (now_ns - np.int64(offset_s[t] * 1e9)) % c_ns
            if err_ns > c_ns // 2:
                err_ns -= c_ns
            err = max(min(err_ns / 1e9, max_correction * common), -max_correction * common)
            cycle_s[t] = split_greens(t, common - err, y_s, intergreen, min_green, tls_phase_ptr, phase_on, green_s)
            cycle_start_ns[t] = now_ns
        pos = (now_ns - cycle_start_ns[t]) / 1e9
        acc = 0.0
        window = coord_phase[t]
        for k in range(n):
            p = p0 + (coord_phase[t] - p0 + k) % n
            if not phase_on[p]:
                continue
            acc += green_s[p] + intergreen[p]
            window = p
            if pos < acc:
                break
        cur = target[t]
        if p0 <= cur < p1 and window != cur and now_ns < asked_ns[t] + give_up_ns and not (
                active_phase[t] == cur and now_ns >= max(active_since_ns[t], asked_ns[t]) + min_green_ns):
            continue  # the phase asked for has not had its green yet (its change took longer than planned)
        # the window's phase goes when it is the coordinated one, or nothing runs yet, or it has a call
        go = window == coord_phase[t] or cur < p0 or cur >= p1
        if not go:
            for k in range(phase_link_ptr[window], phase_link_ptr[window + 1]):
                link = phase_link_idx[k]
                for j in range(link_move_ptr[link], link_move_ptr[link + 1]):
                    lane = move_in[link_move_idx[j]]
                    if vehicles[lane] >= 0.5 or not lane_ok[lane]:
                        go = True
        if go:
            if window != cur:
                asked_ns[t] = now_ns
            target[t] = window


def coordination(net: CompiledNetwork, phase_on: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(root, offset_s, coord_phase)`` per signal, from the roads between signalised junctions.

    A maximum-weight branching (each signal at most one upstream neighbour, no loops) over the
    roads that join two signals' junctions, a road weighing lanes x speed limit; the offset of a
    signal is the free-flow travel time from its tree's root along the branching; its
    coordinated phase is the one serving the most movements that arrive from its upstream
    neighbour (for a root: that leave towards its first downstream one).
    """
    n = net.n_tls
    tls_of_junction = np.full(len(net.junction_ids), -1, dtype=np.int64)
    signals = net.graph.graph.get("signals") or {t: {"junctions": [t]} for t in net.tls_ids}
    for tls, sig in signals.items():
        for j in sig["junctions"]:
            if j in net.junction_index:
                tls_of_junction[net.junction_index[j]] = net.tls_index[tls]
    candidates = []
    for e in range(net.n_edges):
        u, v = tls_of_junction[net.edge_from[e]], tls_of_junction[net.edge_to[e]]
        if u >= 0 and v >= 0 and u != v:
            lanes = int(net.edge_lane_ptr[e + 1] - net.edge_lane_ptr[e])
            candidates.append((lanes * float(net.edge_speed_mps[e]), e, int(u), int(v)))
    candidates.sort(key=lambda c: (-c[0], c[1]))
    parent = np.full(n, -1, dtype=np.int64)
    parent_edge = np.full(n, -1, dtype=np.int64)
    first_child_edge = np.full(n, -1, dtype=np.int64)
    comp = list(range(n))

    def find(x: int) -> int:
        while comp[x] != x:
            comp[x] = comp[comp[x]]
            x = comp[x]
        return x

    for _, e, u, v in candidates:
        if parent[v] >= 0 or find(u) == find(v):
            continue
        parent[v], parent_edge[v] = u, e
        comp[find(v)] = find(u)
        if first_child_edge[u] < 0:
            first_child_edge[u] = e
    root = np.arange(n, dtype=np.int64)
    offset = np.zeros(n)
    for t in range(n):  # walk up to the root; trees are shallow
        x, travel = t, 0.0
        while parent[x] >= 0:
            e = parent_edge[x]
            travel += float(net.edge_length_m[e]) / max(float(net.edge_speed_mps[e]), 1.0)
            x = int(parent[x])
        root[t], offset[t] = x, travel
    coord = net.tls_phase_ptr[:-1].astype(np.int64)
    for t in range(n):
        p0, p1 = int(net.tls_phase_ptr[t]), int(net.tls_phase_ptr[t + 1])
        if p1 == p0:
            continue
        coord[t] = p0 if phase_on is None else p0 + int(np.argmax(phase_on[p0:p1]))  # (the first one run)
        e = parent_edge[t]
        lanes = set(net.edge_lane_idx[net.edge_lane_ptr[e]:net.edge_lane_ptr[e + 1]].tolist()) if e >= 0 else set()
        e_out = first_child_edge[t] if e < 0 else -1
        out_lanes = (set(net.edge_lane_idx[net.edge_lane_ptr[e_out]:net.edge_lane_ptr[e_out + 1]].tolist())
                     if e_out >= 0 else set())
        best = -1
        for p in range(p0, p1):
            if phase_on is not None and not phase_on[p]:
                continue
            score = 0
            for link in net.phase_link_idx[net.phase_link_ptr[p]:net.phase_link_ptr[p + 1]]:
                for m in net.link_move_idx[net.link_move_ptr[link]:net.link_move_ptr[link + 1]]:
                    score += int(net.move_in_lane[m]) in lanes or int(net.move_out_lane[m]) in out_lanes
            if score > best:
                best, coord[t] = score, p
    return root, offset, coord


class Scats:
    name: ClassVar[str] = "scats"

    def __init__(self, net: CompiledNetwork, config: ScatsConfig | None = None):
        self.net = net
        self.config = c = config or ScatsConfig()
        self._in_share, _ = movement_shares(net)
        extra = np.zeros(net.n_phases)
        for p in range(net.n_phases):
            links = net.phase_link_idx[net.phase_link_ptr[p]:net.phase_link_ptr[p + 1]]
            if links.size:
                extra[p] = max(0.0, float(net.link_clearance_s[links].max()) - c.red_clearance_s)
        self.intergreen_s = c.intergreen_s + extra
        self.phase_on = run_phases(net, cycle_only=True)
        self.root, self.offset_s, self.coord_phase = coordination(net, self.phase_on)
        n = net.n_lanes
        self.lane_healthy = np.ones(n, dtype=np.bool_)
        self.last_report_ns = np.zeros(n, dtype=np.int64)
        self.lane_ok = np.ones(n, dtype=np.bool_)
        self.lane_count = np.zeros(n)
        self.lane_demand = np.zeros(n)
        self.y_now = np.zeros(net.n_phases)
        self.y_s = np.zeros(net.n_phases)
        self.green_s = np.zeros(net.n_phases)
        self.cycle_start_ns = np.zeros(net.n_tls, dtype=np.int64)
        self.cycle_s = np.zeros(net.n_tls)
        self.wanted_s = np.zeros(net.n_tls)
        self.group_s = np.zeros(net.n_tls)
        self.asked_ns = np.zeros(net.n_tls, dtype=np.int64)  # when each signal's target last changed
        self._obs = None
        self._started = False

    def observe(self, obs, lane_healthy: np.ndarray, now_ns: int) -> None:
        """The tick's raw per-lane observations and the detector-health mask (true: healthy)."""
        self._obs = obs
        self.lane_healthy = lane_healthy

    def decide(self, state: NetworkState, active_phase: np.ndarray, active_since_ns: np.ndarray,
               now_ns: int, target_phase: np.ndarray) -> None:
        net, c = self.net, self.config
        if not self._started:
            self.last_report_ns[:] = now_ns
            self._started = True
        obs = self._obs if self._obs is not None else _no_observations(net.n_lanes)
        _lane_ok(np.int64(now_ns), self.lane_healthy, obs.stop_seen, obs.upstream_seen, obs.camera_vehicles,
                 np.int64(c.fail_after_s * 1e9), self.last_report_ns, self.lane_ok)
        _scats(np.int64(now_ns), obs.stop_count, state.lane_vehicles, state.lane_queue_veh, state.lane_flow_vph,
               self.lane_ok, net.tls_phase_ptr, net.phase_link_ptr, net.phase_link_idx, net.link_move_ptr,
               net.link_move_idx, net.move_in_lane, self._in_share, self.intergreen_s,
               3600.0 / c.saturation_flow_vph, c.min_green_s, c.cycle_min_s, c.cycle_max_s, c.cycle_step_s,
               c.max_degree_of_saturation, c.smoothing, c.max_correction, self.root, self.offset_s,
               self.coord_phase, self.phase_on, self.lane_count, self.lane_demand, self.y_now, self.y_s, self.green_s,
               self.cycle_start_ns, self.cycle_s, self.wanted_s, self.group_s, active_phase, active_since_ns,
               np.int64(c.min_green_s * 1e9), np.int64(c.give_up_s * 1e9), self.asked_ns, target_phase)


@njit(cache=True)
def _lane_ok(now_ns, healthy, stop_seen, up_seen, cam_veh, fail_after_ns, last_report_ns, ok):
    for i in range(ok.size):
        if stop_seen[i] or up_seen[i] or not np.isnan(cam_veh[i]):
            last_report_ns[i] = now_ns
        ok[i] = healthy[i] and now_ns - last_report_ns[i] <= fail_after_ns
