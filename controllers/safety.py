"""The safety stage: whatever a controller asks, the signals shown stay safe.

Controllers name a target phase per signal. This stage moves each signal link towards it one
tick at a time, link by link, under four interlocks:

- a green lasts at least ``min_green_s``;
- green ends only through yellow, which lasts ``yellow_s``;
- a link turns green only when it and every conflicting link have been red for
  ``red_clearance_s`` (so a yellow never turns straight back to green);
- so no two conflicting links are ever green (or green and yellow) together.

Links green in both the old and the new phase simply stay green. A target the signal cannot
reach yet (a conflicting green still in its minimum) is approached as far as is safe and
reached on a later tick. The kernel works on the links of every signal in one pass; the state
it keeps is per link: ``link_state`` (RED, YELLOW, GREEN) and ``link_since_ns``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from network.compiled import CompiledNetwork

RED, YELLOW, GREEN = np.int8(0), np.int8(1), np.int8(2)


@dataclass(frozen=True)
class SafetyConfig:
    min_green_s: float = 5.0
    yellow_s: float = 3.0
    red_clearance_s: float = 2.0

    def __post_init__(self) -> None:
        if not (self.min_green_s >= 0 and self.yellow_s > 0 and self.red_clearance_s >= 0):
            raise ValueError(f"bad safety timings: {self}")


@njit(cache=True)
def _enforce(now_ns, target_phase, tls_link_ptr, tls_phase_ptr, phase_link_ptr, phase_link_idx,
             link_conflict_ptr, link_conflict_idx, min_green_ns, yellow_ns, red_ns,
             link_state, link_since_ns, want, active_phase, active_since_ns):
    changes = 0
    for t in range(tls_link_ptr.size - 1):
        lo = tls_link_ptr[t]
        hi = tls_link_ptr[t + 1]
        for link in range(lo, hi):
            want[link] = False
        p = target_phase[t]
        if p < tls_phase_ptr[t] or p >= tls_phase_ptr[t + 1]:
            p = -1  # not one of this signal's phases: hold what is safe, start nothing
        if p >= 0:
            for k in range(phase_link_ptr[p], phase_link_ptr[p + 1]):
                want[phase_link_idx[k]] = True
        for link in range(lo, hi):
            age = now_ns - link_since_ns[link]
            s = link_state[link]
            if s == GREEN and not want[link] and age >= min_green_ns:
                link_state[link] = YELLOW
                link_since_ns[link] = now_ns
                changes += 1
            elif s == YELLOW and age >= yellow_ns:
                link_state[link] = RED
                link_since_ns[link] = now_ns
                changes += 1
        for link in range(lo, hi):
            if link_state[link] != RED or not want[link] or now_ns - link_since_ns[link] < red_ns:
                continue  # (a link's own red also lasts the clearance time: no yellow -> green)
            clear = True
            for k in range(link_conflict_ptr[link], link_conflict_ptr[link + 1]):
                c = link_conflict_idx[k]
                if link_state[c] != RED or now_ns - link_since_ns[c] < red_ns:
                    clear = False
                    break
            if clear:
                link_state[link] = GREEN
                link_since_ns[link] = now_ns
                changes += 1
        reached = p >= 0
        if p >= 0:
            for k in range(phase_link_ptr[p], phase_link_ptr[p + 1]):
                if link_state[phase_link_idx[k]] != GREEN:
                    reached = False
                    break
        if reached:
            if active_phase[t] != p:
                active_phase[t] = p
                active_since_ns[t] = now_ns
        elif active_phase[t] >= 0:
            active_phase[t] = -1
            active_since_ns[t] = now_ns
    return changes


class Safety:
    """Per-link signal state and the interlocks that move it. One instance per engine."""

    def __init__(self, net: CompiledNetwork, config: SafetyConfig | None = None, start_ns: int = 0):
        self.net = net
        self.config = config or SafetyConfig()
        n_links, n_tls = net.n_links, net.n_tls
        # all red since long enough that the first green need not wait for clearance
        self.link_state = np.full(n_links, RED, dtype=np.int8)
        self.link_since_ns = np.full(n_links, start_ns - 3_600 * 10**9, dtype=np.int64)
        self.active_phase = np.full(n_tls, -1, dtype=np.int32)
        self.active_since_ns = np.full(n_tls, start_ns, dtype=np.int64)
        self._want = np.zeros(n_links, dtype=np.bool_)
        self._chars = np.zeros(n_links, dtype=np.uint8)

    def enforce(self, target_phase: np.ndarray, now_ns: int) -> int:
        """Move every signal towards ``target_phase`` (int32[n_tls], -1 = none); returns changes."""
        c, net = self.config, self.net
        return _enforce(
            np.int64(now_ns), target_phase, net.tls_link_ptr, net.tls_phase_ptr, net.phase_link_ptr,
            net.phase_link_idx, net.link_conflict_ptr, net.link_conflict_idx,
            np.int64(round(c.min_green_s * 1e9)), np.int64(round(c.yellow_s * 1e9)),
            np.int64(round(c.red_clearance_s * 1e9)), self.link_state, self.link_since_ns, self._want,
            self.active_phase, self.active_since_ns,
        )

    def state_chars(self) -> bytes:
        """SUMO state characters of every link: y, r, s (stop), G, or g for a green that gives
        way to a foe showing green or yellow (a yellow foe still lets vehicles through)."""
        net = self.net
        _link_chars(self.link_state, net.link_yield_ptr, net.link_yield_idx, net.link_permissive,
                    net.link_stop_on_red, self._chars)
        return self._chars.tobytes()

    def state_strings(self) -> list[str]:
        """Per signal, its SUMO state string."""
        chars = self.state_chars().decode()
        ptr = self.net.tls_link_ptr
        return [chars[ptr[t] : ptr[t + 1]] for t in range(self.net.n_tls)]


@njit(cache=True)
def _link_chars(link_state, yield_ptr, yield_idx, permissive, stop_on_red, out):
    for link in range(link_state.size):
        s = link_state[link]
        if s == GREEN:
            c = 71  # G
            if permissive[link]:
                c = 103  # g
            else:
                for k in range(yield_ptr[link], yield_ptr[link + 1]):
                    if link_state[yield_idx[k]] != RED:  # a yellow foe may still send vehicles
                        c = 103
                        break
        elif s == YELLOW:
            c = 121  # y
        elif stop_on_red[link]:
            c = 115  # s
        else:
            c = 114  # r
        out[link] = c
