"""Fixed-time control with Webster splits from measured flows.

Each signal runs its phases in order, one cycle after another. At the start of every cycle the
plan is recomputed from the smoothed stop-line flows (so a plan never changes mid-cycle):
``y_p`` is the highest flow ratio (demand / saturation flow) among the movements phase ``p``
serves (a shared lane's demand split evenly among its movements; a lane's demand is its
stop-line flow plus its standing queue cleared over one longest cycle, so an approach whose
queue grows because its green is short, and which therefore discharges little, still asks for more),
``Y = sum(y_p)``, lost time ``L`` is one intergreen per phase (yellow and red clearance, longer
after a phase whose turns need more clearance), the cycle is Webster's optimum
``C = (1.5 L + 5) / (1 - Y)`` clamped to ``[cycle_min_s, cycle_max_s]``, and the effective green
``C - L`` is split in proportion to ``y_p`` (at least ``min_green_s`` each). With no flows yet,
the split is equal.

A phase's green counts from the moment all its links show green (the safety stage's
``active_phase``), not from a cycle clock: a change that takes longer than the planned intergreen
(a permissive turn's long clearance, a turn held while it passes) lengthens that cycle instead of
eating the next phase's green. On ingolstadt7 a cycle clock had left junction 32564122's left turn
(link 8) no green at all: its slot ended while the conflicting turn was still clearing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from numba import njit

from controllers.base import movement_shares
from controllers.safety import SafetyConfig
from network.compiled import CompiledNetwork
from network.estimate import NetworkState


_SAFE = SafetyConfig()  # (the safety stage's defaults: the timings these plans count with)


@dataclass(frozen=True)
class FixedTimeConfig:
    saturation_flow_vph: float = 1800.0  # per lane
    intergreen_s: float = _SAFE.yellow_s + _SAFE.red_clearance_s  # lost once per phase
    red_clearance_s: float = _SAFE.red_clearance_s  # part of the intergreen; links needing more lengthen theirs
    min_green_s: float = _SAFE.min_green_s
    cycle_min_s: float = 40.0
    cycle_max_s: float = 120.0
    max_degree_of_saturation: float = 0.9
    give_up_s: float = 60.0  # a phase not fully shown this long after its green was due is skipped


@njit(cache=True)
def webster_plan(t, lane_flow, tls_phase_ptr, phase_link_ptr, phase_link_idx, link_move_ptr, link_move_idx,
                 move_in, move_in_share, sat_flow, intergreen, min_green, cycle_min, cycle_max, max_y, in_cycle,
                 green_s):
    """Writes the green of each phase of signal ``t`` that ``in_cycle`` marks into ``green_s`` (0 for
    the others); returns the cycle."""
    p0 = tls_phase_ptr[t]
    p1 = tls_phase_ptr[t + 1]
    n = 0
    y_sum = 0.0
    for p in range(p0, p1):
        green_s[p] = 0.0
        if not in_cycle[p]:
            continue
        n += 1
        y = 0.0
        for k in range(phase_link_ptr[p], phase_link_ptr[p + 1]):
            link = phase_link_idx[k]
            for j in range(link_move_ptr[link], link_move_ptr[link + 1]):
                m = link_move_idx[j]
                y = max(y, lane_flow[move_in[m]] * move_in_share[m] / sat_flow)
        green_s[p] = y
        y_sum += y
    lost = 0.0
    for p in range(p0, p1):
        if in_cycle[p]:
            lost += intergreen[p]
    y_total = min(y_sum, max_y)
    cycle = (1.5 * lost + 5.0) / (1.0 - y_total)
    cycle = min(max(cycle, cycle_min, lost + n * min_green), cycle_max)
    effective = max(cycle - lost, n * min_green)
    total = 0.0
    for p in range(p0, p1):
        if in_cycle[p]:
            share = green_s[p] / y_sum if y_sum > 0.0 else 1.0 / n
            green_s[p] = max(min_green, effective * share)
            total += green_s[p] + intergreen[p]
    return total


@njit(cache=True)
def _fixed_time(now_ns, lane_flow, tls_phase_ptr, phase_link_ptr, phase_link_idx, link_move_ptr, link_move_idx,
                move_in, move_in_share, sat_flow, intergreen, min_green, cycle_min, cycle_max, max_y, in_cycle,
                green_s, active_phase, active_since_ns, give_up_ns, cycle_s, cur, cur_since_ns, target):
    for t in range(tls_phase_ptr.size - 1):
        p0 = tls_phase_ptr[t]
        p1 = tls_phase_ptr[t + 1]
        if p1 == p0:
            target[t] = -1
            continue
        new_cycle = cycle_s[t] <= 0.0
        if not new_cycle:
            p = cur[t]
            green_ns = np.int64(green_s[p] * 1e9)
            # a phase's green counts from when all its links show green, however long the change took
            start = max(active_since_ns[t], cur_since_ns[t])
            done = active_phase[t] == p and now_ns >= start + green_ns
            if done or now_ns >= cur_since_ns[t] + green_ns + give_up_ns:
                p += 1
                while p < p1 and not in_cycle[p]:
                    p += 1
                new_cycle = p == p1
                cur[t] = p
                cur_since_ns[t] = now_ns
        if new_cycle:  # the first cycle, or the next one: a plan from the flows measured now
            cycle_s[t] = webster_plan(t, lane_flow, tls_phase_ptr, phase_link_ptr, phase_link_idx,
                                      link_move_ptr, link_move_idx, move_in, move_in_share, sat_flow, intergreen,
                                      min_green, cycle_min, cycle_max, max_y, in_cycle, green_s)
            cur[t] = p0
            cur_since_ns[t] = now_ns
        target[t] = cur[t]


class FixedTime:
    name: ClassVar[str] = "fixed-time"

    def __init__(self, net: CompiledNetwork, config: FixedTimeConfig | None = None):
        self.net = net
        self.config = config or FixedTimeConfig()
        self._in_share, _ = movement_shares(net)
        # a phase's intergreen grows by what its links' clearance exceeds the default red clearance
        extra = np.zeros(net.n_phases)
        for p in range(net.n_phases):
            links = net.phase_link_idx[net.phase_link_ptr[p]:net.phase_link_ptr[p + 1]]
            if links.size:
                extra[p] = max(0.0, float(net.link_clearance_s[links].max()) - self.config.red_clearance_s)
        self.intergreen_s = self.config.intergreen_s + extra
        self.green_s = np.zeros(net.n_phases)
        self.demand_vph = np.zeros(net.n_lanes)
        self.cycle_s = np.zeros(net.n_tls)
        self.current = np.zeros(net.n_tls, dtype=np.int32)  # the phase each signal runs now
        self.current_since_ns = np.zeros(net.n_tls, dtype=np.int64)  # since it was asked for

    def decide(self, state: NetworkState, active_phase: np.ndarray, active_since_ns: np.ndarray,
               now_ns: int, target_phase: np.ndarray) -> None:
        net, c = self.net, self.config
        # a lane's demand: what it discharges plus its standing queue, to be cleared within a longest cycle
        np.multiply(state.lane_queue_veh, 3600.0 / c.cycle_max_s, out=self.demand_vph)
        self.demand_vph += state.lane_flow_vph
        _fixed_time(
            np.int64(now_ns), self.demand_vph, net.tls_phase_ptr, net.phase_link_ptr, net.phase_link_idx,
            net.link_move_ptr, net.link_move_idx, net.move_in_lane, self._in_share, c.saturation_flow_vph,
            self.intergreen_s, c.min_green_s, c.cycle_min_s, c.cycle_max_s, c.max_degree_of_saturation,
            net.phase_in_cycle, self.green_s, active_phase, active_since_ns, np.int64(c.give_up_s * 1e9),
            self.cycle_s, self.current, self.current_since_ns, target_phase,
        )
