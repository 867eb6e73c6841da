"""The one protocol every signal controller follows, and the helpers they share.

A controller reads the estimates (``network.estimate.NetworkState``) and what the safety stage
showed last tick (``active_phase``: the phase each signal fully shows, -1 while changing;
``active_since_ns``: since when), and writes its wish into ``target_phase`` (int32[n_tls],
global phase indices). It never touches signal states itself: the safety stage does that.
"""

from __future__ import annotations

from typing import ClassVar, Protocol

import numpy as np
from numba import njit

from controllers.safety import RED
from network.compiled import CompiledNetwork, csr
from network.estimate import NetworkState


class Controller(Protocol):
    name: ClassVar[str]

    def decide(self, state: NetworkState, active_phase: np.ndarray, active_since_ns: np.ndarray,
               now_ns: int, target_phase: np.ndarray) -> None:
        """Write each signal's wanted phase into ``target_phase``."""


@njit(cache=True)
def phase_pressure(p, phase_link_ptr, phase_link_idx, link_move_ptr, link_move_idx, move_in, move_out,
                   move_in_share, move_out_share, lane_w, exit_w):
    """(pressure, demand) of phase ``p``: over the movements it serves, the vehicles waiting to
    make them minus the vehicles already on their exit lanes.

    A lane shared by several movements splits its vehicles among them (``move_in_share``), and
    an exit lane fed by several movements splits its load the same way (``move_out_share``), so
    a phase that serves only the left turn of a shared lane does not look as loaded as one that
    serves the whole lane. Exit lanes are weighed by ``exit_w`` (``lane_w`` itself, or what a
    controller believes is on them).
    """
    pressure = 0.0
    demand = 0.0
    for k in range(phase_link_ptr[p], phase_link_ptr[p + 1]):
        link = phase_link_idx[k]
        for j in range(link_move_ptr[link], link_move_ptr[link + 1]):
            m = link_move_idx[j]
            w_in = lane_w[move_in[m]] * move_in_share[m]
            pressure += w_in - exit_w[move_out[m]] * move_out_share[m]
            demand += w_in
    return pressure, demand


def movement_shares(net: CompiledNetwork) -> tuple[np.ndarray, np.ndarray]:
    """Per movement, 1 / (signalised movements leaving its entry lane) and 1 / (entering its exit lane)."""
    signalised = net.move_link >= 0
    n_from = np.bincount(net.move_in_lane[signalised], minlength=net.n_lanes)
    n_into = np.bincount(net.move_out_lane[signalised], minlength=net.n_lanes)
    return (1.0 / np.maximum(n_from[net.move_in_lane], 1), 1.0 / np.maximum(n_into[net.move_out_lane], 1))


class ShownLinks:
    """What the safety stage shows, for controllers that count a link of the phase shown as
    served only while it is not red (``watch_signals``): one the stage holds red while its phase
    counts as shown (a box camera sees a vehicle in its way) keeps waiting, so ``max_wait_s``
    brings its phase back. Until the engine hands over the stage's link states every link
    counts as shown."""

    def __init__(self, n_links: int):
        self._link_state: np.ndarray | None = None
        self._shown = np.ones(n_links, dtype=np.bool_)

    def watch(self, link_state: np.ndarray) -> None:
        """The safety stage's per-link states (``controllers.safety`` RED, YELLOW, GREEN), which it
        updates in place."""
        self._link_state = link_state

    def now(self) -> np.ndarray:
        """Per link, whether it is shown (green or yellow) now."""
        if self._link_state is not None:
            np.not_equal(self._link_state, RED, out=self._shown)
        return self._shown


@njit(cache=True, inline="always")
def starved_link(now_ns, lo, hi, lane_w, link_move_ptr, link_move_idx, move_in, max_wait_ns, link_served_ns):
    """Among links ``lo..hi`` (one signal), the one with vehicles waiting (a lane weight > 0)
    that has gone longest without green, if beyond ``max_wait_ns``; -1 when none."""
    starved = -1
    for link in range(lo, hi):
        if now_ns - link_served_ns[link] < max_wait_ns:
            continue
        if starved >= 0 and link_served_ns[link] >= link_served_ns[starved]:
            continue
        for j in range(link_move_ptr[link], link_move_ptr[link + 1]):
            if lane_w[move_in[link_move_idx[j]]] > 0.0:
                starved = link
                break
    return starved


@njit(cache=True, inline="always")
def strongest_phase_with(link, p0, p1, phase_link_ptr, phase_link_idx, pressure):
    """The phase among ``p0..p1`` that serves ``link`` with the highest pressure; -1 none."""
    best = -1
    for p in range(p0, p1):
        for k in range(phase_link_ptr[p], phase_link_ptr[p + 1]):
            if phase_link_idx[k] == link:
                if best < 0 or pressure[p] > pressure[best]:
                    best = p
                break
    return best


def _phase_link_sets(net: CompiledNetwork, t: int) -> tuple[int, list[frozenset]]:
    """The first phase of signal ``t`` and the set of links each of its phases shows green."""
    p0, p1 = int(net.tls_phase_ptr[t]), int(net.tls_phase_ptr[t + 1])
    return p0, [frozenset(net.phase_link_idx[net.phase_link_ptr[p]:net.phase_link_ptr[p + 1]].tolist())
                for p in range(p0, p1)]


def run_phases(net: CompiledNetwork, cycle_only: bool = False) -> np.ndarray:
    """bool[n_phases]: the phases a cycle runs. A phase whose links are all green in another
    phase of its signal as well (a protected-turn stage, say) adds nothing a cycle needs: its
    movements are served in the larger one, and running it costs an intergreen and a minimum green.
    With ``cycle_only`` lane phases (``phase_in_cycle`` false) are neither run nor count as larger."""
    on = np.ones(net.n_phases, dtype=np.bool_)
    for t in range(net.n_tls):
        p0, sets = _phase_link_sets(net, t)
        if cycle_only:
            sets = [a if net.phase_in_cycle[p0 + i] else frozenset() for i, a in enumerate(sets)]
        for i, a in enumerate(sets):
            on[p0 + i] = bool(a) and not any(a < b or (a == b and j < i) for j, b in enumerate(sets) if j != i)
        if sets and not on[p0:p0 + len(sets)].any():
            on[p0] = True
    return on


def contained_phases(net: CompiledNetwork) -> tuple[np.ndarray, np.ndarray]:
    """CSR over phases: for each phase, the other phases of its signal whose links are all green
    in it as well (a protected-turn stage inside the stage that also runs the turn permissively)."""
    rows: list[list[int]] = [[] for _ in range(net.n_phases)]
    for t in range(net.n_tls):
        p0, sets = _phase_link_sets(net, t)
        for i, a in enumerate(sets):
            rows[p0 + i] = [p0 + j for j, b in enumerate(sets) if j != i and b and b < a]
    return csr(rows)
