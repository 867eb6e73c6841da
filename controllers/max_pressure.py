"""Max-pressure control (Varaiya 2013) on what the detectors report.

The pressure of a phase is, over the movements it serves, the vehicles waiting to make them
minus the vehicles on their exit lanes (a shared lane's vehicles split evenly among its
movements, see ``controllers.base.phase_pressure``). Each signal keeps its phase for at least
``min_hold_s`` of full green, then switches to the phase of highest pressure when that is
higher than its own; it always switches after ``max_green_s`` if another phase has demand, and
never switches to a phase with no vehicles waiting. When vehicles wait at a link that has not
been green for ``max_wait_s``, the phase of highest pressure among those serving that link (the
longest-waiting one) goes next, whatever the other pressures: no movement starves (a link the
safety stage holds red while its phase counts as shown is not green: ``ShownLinks``). While a
change is in progress (yellow, red clearance) the target stays put.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from numba import njit

from controllers.base import ShownLinks, movement_shares, phase_pressure, starved_link, strongest_phase_with
from network.compiled import CompiledNetwork
from network.estimate import NetworkState


@dataclass(frozen=True)
class MaxPressureConfig:
    min_hold_s: float = 8.0
    max_green_s: float = 60.0
    max_wait_s: float = 120.0


@njit(cache=True)
def _max_pressure(now_ns, lane_w, tls_phase_ptr, phase_link_ptr, phase_link_idx, link_move_ptr,
                  link_move_idx, move_in, move_out, move_in_share, move_out_share, tls_link_ptr,
                  active_phase, active_since_ns, hold_ns, max_green_ns, max_wait_ns, link_served_ns,
                  pressure, demand, target, link_shown):
    for t in range(tls_phase_ptr.size - 1):
        p0 = tls_phase_ptr[t]
        p1 = tls_phase_ptr[t + 1]
        if p1 == p0:
            target[t] = -1
            continue
        for p in range(p0, p1):
            pressure[p], demand[p] = phase_pressure(p, phase_link_ptr, phase_link_idx, link_move_ptr,
                                                    link_move_idx, move_in, move_out, move_in_share,
                                                    move_out_share, lane_w, lane_w)
        cur = target[t]
        if cur < p0 or cur >= p1:
            best = p0
            for p in range(p0, p1):
                if pressure[p] > pressure[best]:
                    best = p
            target[t] = best
            continue
        if active_phase[t] != cur:
            continue  # the change to ``cur`` is still under way
        for k in range(phase_link_ptr[cur], phase_link_ptr[cur + 1]):
            if link_shown[phase_link_idx[k]]:  # (a link the safety stage holds red is not served)
                link_served_ns[phase_link_idx[k]] = now_ns
        age = now_ns - active_since_ns[t]
        if age < hold_ns:
            continue
        starved = starved_link(now_ns, tls_link_ptr[t], tls_link_ptr[t + 1], lane_w, link_move_ptr,
                               link_move_idx, move_in, max_wait_ns, link_served_ns)
        if starved >= 0:
            target[t] = strongest_phase_with(starved, p0, p1, phase_link_ptr, phase_link_idx, pressure)
            continue
        best = -1
        for p in range(p0, p1):
            if p != cur and demand[p] > 0.0 and (best < 0 or pressure[p] > pressure[best]):
                best = p
        if best < 0:
            continue
        if age >= max_green_ns or demand[cur] <= 0.0 or pressure[best] > pressure[cur]:
            target[t] = best


class MaxPressure:
    name: ClassVar[str] = "max-pressure"

    def __init__(self, net: CompiledNetwork, config: MaxPressureConfig | None = None):
        self.net = net
        self.config = config or MaxPressureConfig()
        self._in_share, self._out_share = movement_shares(net)
        self._link_served_ns = np.zeros(net.n_links, dtype=np.int64)
        self._started = False
        self._pressure = np.zeros(net.n_phases)
        self._demand = np.zeros(net.n_phases)
        self._shown = ShownLinks(net.n_links)

    def watch_signals(self, link_state: np.ndarray) -> None:
        """The safety stage's link states: see ``controllers.base.ShownLinks``."""
        self._shown.watch(link_state)

    def decide(self, state: NetworkState, active_phase: np.ndarray, active_since_ns: np.ndarray,
               now_ns: int, target_phase: np.ndarray) -> None:
        net, c = self.net, self.config
        if not self._started:
            self._link_served_ns[:] = now_ns  # waiting starts when the controller does
            self._started = True
        _max_pressure(
            np.int64(now_ns), state.lane_vehicles, net.tls_phase_ptr, net.phase_link_ptr, net.phase_link_idx,
            net.link_move_ptr, net.link_move_idx, net.move_in_lane, net.move_out_lane, self._in_share,
            self._out_share, net.tls_link_ptr, active_phase, active_since_ns,
            np.int64(c.min_hold_s * 1e9), np.int64(c.max_green_s * 1e9), np.int64(c.max_wait_s * 1e9),
            self._link_served_ns, self._pressure, self._demand, target_phase, self._shown.now(),
        )
