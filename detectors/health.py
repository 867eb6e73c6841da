"""Detector health: is each loop and camera telling the truth?

The checks are the field's (PeMS diagnostics, NTCIP 1202 detector alarms), run every tick by one
numba kernel over struct-of-arrays rolling statistics of every detector at once. A detector is in
one of these states (``STATES``), the first whose condition holds, in this order:

- ``missing``: no reading for ``missing_s``.
- ``stuck_on``: occupancy at or above ``stuck_occupancy`` without a break for ``stuck_on_s`` (NTCIP
  "max presence"). A camera's occupancy is the vehicles in view over what its zone can hold.
- ``constant``: the same reading, with a non-zero count, repeated for ``constant_s`` (cameras:
  ``camera_constant_s``) and at least ``constant_min_samples`` times: a frozen device.
- ``chattering``: erratic counts. A loop counting more than ``chatter_vps`` (no lane carries that),
  or counting at least ``flicker_min_vps`` with each vehicle covering it less than
  ``flicker_occ_s`` (contact bounce); a camera whose vehicles in view jump by more than
  ``camera_chatter_vps`` per lane per second. Rates are exponential averages over
  ``chatter_tau_s``; once chattering, half the rate keeps the state. Erratic means varying: a
  reading that repeats the last non-zero one is ``constant``'s to judge and stays out of the rates.
- ``flow_zero_occ_nonzero``: no count for ``fzon_s`` while the loop was partly occupied for
  ``fzon_occupied_s`` in total (a camera: a queue reported with no vehicle in view), and not
  fully occupied now. Only readings below ``stuck_occupancy`` count: a vehicle standing on a
  stop-bar loop through a long wait was counted when it arrived, and a loop that stays fully
  occupied is ``stuck_on``'s to judge.
- ``no_activity``: zero count and zero occupancy for ``no_activity_s`` while the detector's peers
  (the other loops on its lane, else on its road; a camera's: the loops on its lanes) counted
  ``no_activity_peer_veh`` vehicles on average: traffic was there and it saw none.
- ``ok`` otherwise.

Durations are seconds of detector time (the intervals its readings cover, or the ticks it was
silent), so the checks hold for any reporting period. Hysteresis: a condition must hold for its
duration before the state is entered, and a faulty detector goes back to ``ok`` only after
``clear_s`` with no fault condition at all; a different fault replaces the current one at once.

:class:`DetectorHealth` owns the state; ``update`` runs the kernel on what the bank accumulated
this tick (before binning) and returns the detectors whose state changed. ``loop_ok`` and
``camera_ok`` are the masks binning uses to leave faulty detectors out of estimation and control.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

STATES = ("ok", "missing", "stuck_on", "constant", "chattering", "flow_zero_occ_nonzero", "no_activity")
OK, MISSING, STUCK_ON, CONSTANT, CHATTERING, FZON, NO_ACTIVITY = range(len(STATES))

# parameter vector (float64), built once from engine.config.HealthParams
P_MISSING, P_STUCK_S, P_STUCK_OCC, P_CONST_S, P_CONST_N, P_CAM_CONST_S, P_CHATTER, P_CAM_CHATTER, P_TAU, \
    P_FLICKER_VPS, P_FLICKER_OCC, P_FZON_S, P_FZON_OCC, P_QUIET_S, P_QUIET_PEER, P_CLEAR_S = range(16)
N_PARAMS = 16
PARAM_FIELDS = ("missing_s", "stuck_on_s", "stuck_occupancy", "constant_s", "constant_min_samples",
                "camera_constant_s", "chatter_vps", "camera_chatter_vps", "chatter_tau_s", "flicker_min_vps",
                "flicker_occ_s", "fzon_s", "fzon_occupied_s", "no_activity_s", "no_activity_peer_veh", "clear_s")

# per-detector rolling statistics: columns of ``DetectorHealth.stats`` (float64[n, N_STATS])
S_SILENT, S_STUCK, S_CONST_S, S_CONST_N, S_RATE, S_OCC_RATE, S_FZ_RUN, S_FZ_OCC, S_Q_RUN, S_Q_PEER, S_CLEAR, \
    S_LAST_COUNT, S_LAST_OCC, S_HAVE_LAST = range(14)
N_STATS = 14
STAT_NAMES = ("silent_s", "stuck_s", "constant_s", "constant_n", "rate_vps", "occupancy_rate", "fzon_run_s",
              "fzon_occupied_s", "quiet_s", "quiet_peer_veh", "clear_s", "last_count", "last_occupancy",
              "have_last")

CHATTER_CLEAR_RATIO = 0.5  # a chattering detector stays so while its rate is above half the threshold


def param_vector(params) -> np.ndarray:
    """The kernel's parameter vector from a ``HealthParams`` (or anything with those fields)."""
    return np.array([float(getattr(params, f)) for f in PARAM_FIELDS], dtype=np.float64)


@njit(cache=True)
def health_tick(dt, p, loop_count, loop_occ_time, loop_time, cam_ptr, cam_veh, cam_queue, cam_cap, peer_ptr,
                peer_idx, prev_state, state, stats, slot_last, scratch, changed):
    """Advance every detector's statistics by one tick of ``dt`` seconds and set its state.

    Detectors are the loops (``0 .. n_loops-1``) then the cameras. ``loop_*`` are the bank's
    per-loop sums of the tick (``loop_time`` 0: no reading); ``cam_veh``/``cam_queue`` per
    camera lane slot (NaN: no reading), ``cam_cap`` what each slot's zone holds. Peers in CSR
    (``peer_ptr``/``peer_idx``, loop indices); a peer counts while it reported and was ok at the
    end of the last tick (``prev_state``, a copy of ``state``). ``slot_last`` (float64[n_slots, 2]) keeps each
    slot's last vehicles and queue; ``scratch`` float64[n, 6] holds the tick's samples.
    ``changed`` (bool[n]) is set where the state changed. Returns the number of changes.
    """
    n_loops = loop_count.size
    n_cams = cam_ptr.size - 1
    n = n_loops + n_cams
    # 1. this tick's sample of every detector: seen, seconds, count, occupancy, evidence, rate
    for i in range(n_loops):
        t = loop_time[i]
        scratch[i, 0] = 1.0 if t > 0.0 else 0.0
        if t > 0.0:
            c = loop_count[i]
            occ = loop_occ_time[i] / t
            scratch[i, 1] = t
            scratch[i, 2] = c
            scratch[i, 3] = occ
            # occupancy with no count, from a vehicle not standing on the loop (that one was counted)
            scratch[i, 4] = occ * t if c == 0.0 and occ < p[P_STUCK_OCC] else 0.0
            scratch[i, 5] = c / t
            same = stats[i, S_HAVE_LAST] > 0.0 and c == stats[i, S_LAST_COUNT] and occ == stats[i, S_LAST_OCC]
            # "have last" = 2: this reading repeats the last one (read, and set back to 1, in step 2)
            stats[i, S_HAVE_LAST] = 2.0 if same else 1.0
    for k in range(n_cams):
        d = n_loops + k
        lo, hi = cam_ptr[k], cam_ptr[k + 1]
        seen = hi > lo and not np.isnan(cam_veh[lo])
        scratch[d, 0] = 1.0 if seen else 0.0
        if seen:
            veh = 0.0
            cap = 0.0
            queue = 0.0
            jump = 0.0
            same = stats[d, S_HAVE_LAST] > 0.0
            for s in range(lo, hi):
                v = cam_veh[s]
                q = cam_queue[s]
                veh += v
                cap += cam_cap[s]
                queue += q
                if stats[d, S_HAVE_LAST] > 0.0:
                    jump += abs(v - slot_last[s, 0])
                if v != slot_last[s, 0] or q != slot_last[s, 1]:
                    same = False
                slot_last[s, 0] = v
                slot_last[s, 1] = q
            occ = veh / cap if cap > 0.0 else 0.0
            scratch[d, 1] = dt
            scratch[d, 2] = veh
            scratch[d, 3] = occ
            scratch[d, 4] = dt if veh == 0.0 and queue > 0.0 else 0.0
            scratch[d, 5] = jump / (hi - lo) / dt
            stats[d, S_HAVE_LAST] = 2.0 if same else 1.0
    # 2. statistics and state
    n_changed = 0
    for d in range(n):
        loop = d < n_loops
        if scratch[d, 0] > 0.0:
            secs = scratch[d, 1]
            c = scratch[d, 2]
            occ = scratch[d, 3]
            evid = scratch[d, 4]
            same = stats[d, S_HAVE_LAST] == 2.0
            stats[d, S_HAVE_LAST] = 1.0
            stats[d, S_SILENT] = 0.0
            if occ >= p[P_STUCK_OCC]:
                stats[d, S_STUCK] += secs
            else:
                stats[d, S_STUCK] = 0.0
            if same and c > 0.0:  # a repeat: constant's evidence, left out of the chatter rates
                stats[d, S_CONST_S] += secs
                stats[d, S_CONST_N] += 1.0
            else:
                stats[d, S_CONST_S] = 0.0
                stats[d, S_CONST_N] = 0.0
                a = min(1.0, secs / p[P_TAU])
                stats[d, S_RATE] += a * (scratch[d, 5] - stats[d, S_RATE])
                stats[d, S_OCC_RATE] += a * (occ - stats[d, S_OCC_RATE])
            if c == 0.0:
                stats[d, S_FZ_RUN] += secs
                stats[d, S_FZ_OCC] += evid
            else:
                stats[d, S_FZ_RUN] = 0.0
                stats[d, S_FZ_OCC] = 0.0
            if c == 0.0 and occ == 0.0 and evid == 0.0:
                peer_sum = 0.0
                peer_n = 0
                for j in range(peer_ptr[d], peer_ptr[d + 1]):
                    q = peer_idx[j]
                    if scratch[q, 0] > 0.0 and prev_state[q] == OK:
                        peer_sum += scratch[q, 2]
                        peer_n += 1
                stats[d, S_Q_RUN] += secs
                if peer_n > 0:
                    stats[d, S_Q_PEER] += peer_sum / peer_n
            else:
                stats[d, S_Q_RUN] = 0.0
                stats[d, S_Q_PEER] = 0.0
            stats[d, S_LAST_COUNT] = c
            stats[d, S_LAST_OCC] = occ
        else:
            stats[d, S_SILENT] += dt
        # the condition, first that holds
        cur = state[d]
        h = CHATTER_CLEAR_RATIO if cur == CHATTERING else 1.0
        cond = OK
        if stats[d, S_SILENT] >= p[P_MISSING]:
            cond = MISSING
        elif stats[d, S_STUCK] >= p[P_STUCK_S]:
            cond = STUCK_ON
        elif stats[d, S_CONST_N] >= p[P_CONST_N] and stats[d, S_CONST_S] >= (p[P_CONST_S] if loop else p[P_CAM_CONST_S]):
            cond = CONSTANT
        elif stats[d, S_CONST_N] == 0.0 and loop and (
                stats[d, S_RATE] >= h * p[P_CHATTER]
                or (stats[d, S_RATE] >= h * p[P_FLICKER_VPS] and stats[d, S_OCC_RATE] * h < p[P_FLICKER_OCC] * stats[d, S_RATE])):
            cond = CHATTERING
        elif stats[d, S_CONST_N] == 0.0 and not loop and stats[d, S_RATE] >= h * p[P_CAM_CHATTER]:
            cond = CHATTERING
        elif stats[d, S_FZ_RUN] >= p[P_FZON_S] and stats[d, S_FZ_OCC] >= p[P_FZON_OCC] and stats[d, S_LAST_OCC] < p[P_STUCK_OCC]:
            cond = FZON
        elif stats[d, S_Q_RUN] >= p[P_QUIET_S] and stats[d, S_Q_PEER] >= p[P_QUIET_PEER]:
            cond = NO_ACTIVITY
        changed[d] = False
        if cond != OK:
            stats[d, S_CLEAR] = 0.0
            if cond != cur:
                state[d] = cond
                changed[d] = True
        elif cur != OK:
            stats[d, S_CLEAR] += dt
            if stats[d, S_CLEAR] >= p[P_CLEAR_S]:
                stats[d, S_CLEAR] = 0.0
                state[d] = OK
                changed[d] = True
        if changed[d]:
            n_changed += 1
    return n_changed


@dataclass(frozen=True)
class HealthChange:
    """One detector's change of state."""

    index: int  # detector index: loops first, then cameras
    id: str
    old: str
    new: str


class DetectorHealth:
    """Health state of every detector of a bank, advanced once per tick."""

    def __init__(self, ids: list[str], n_loops: int, cam_ptr: np.ndarray, cam_cap: np.ndarray,
                 peer_ptr: np.ndarray, peer_idx: np.ndarray, params):
        self.ids = list(ids)
        self.n_loops = int(n_loops)
        n = len(self.ids)
        if n != self.n_loops + cam_ptr.size - 1:
            raise ValueError("ids must list the loops, then the cameras")
        self.index = {d: k for k, d in enumerate(self.ids)}
        self.enabled = bool(getattr(params, "enabled", True))
        self.params = param_vector(params)
        self.cam_ptr = np.ascontiguousarray(cam_ptr, dtype=np.int64)
        self.cam_cap = np.ascontiguousarray(cam_cap, dtype=np.float64)
        self.peer_ptr = np.ascontiguousarray(peer_ptr, dtype=np.int64)
        self.peer_idx = np.ascontiguousarray(peer_idx, dtype=np.int64)
        self.state = np.zeros(n, dtype=np.int8)
        self.stats = np.zeros((n, N_STATS))
        self.since_ns = np.zeros(n, dtype=np.int64)
        self._slot_last = np.full((int(self.cam_ptr[-1]), 2), np.nan)
        self._scratch = np.zeros((n, 6))
        self._changed = np.zeros(n, dtype=np.bool_)
        self.changes_total = 0
        self.faults_total = 0  # changes into a fault state

    @classmethod
    def for_bank(cls, bank, params) -> DetectorHealth:
        """Health of ``bank``'s loops and cameras; peers from the bank's lanes and the network's roads."""
        net = bank.net
        ids = list(bank.loop_ids) + sorted(bank.camera_index, key=bank.camera_index.get)
        cap = np.floor(bank._cam_capacity)  # the most whole vehicles a zone can hold
        loop_lane = bank.loop_lane.astype(np.int64)
        loop_edge = net.lane_edge[loop_lane].astype(np.int64) if loop_lane.size else loop_lane
        by_lane: dict[int, list[int]] = {}
        by_edge: dict[int, list[int]] = {}
        for i, (lane, edge) in enumerate(zip(loop_lane.tolist(), loop_edge.tolist())):
            by_lane.setdefault(lane, []).append(i)
            by_edge.setdefault(edge, []).append(i)
        peers: list[list[int]] = []
        for i, (lane, edge) in enumerate(zip(loop_lane.tolist(), loop_edge.tolist())):
            same_lane = [j for j in by_lane[lane] if j != i]
            peers.append(same_lane or [j for j in by_edge[edge] if j != i])
        for c in range(bank.n_cameras):
            lanes = bank.camera_lane_idx[bank.camera_lane_ptr[c]:bank.camera_lane_ptr[c + 1]].tolist()
            peers.append(sorted(j for lane in lanes for j in by_lane.get(lane, [])))
        peer_ptr = np.zeros(len(peers) + 1, dtype=np.int64)
        peer_ptr[1:] = np.cumsum([len(x) for x in peers])
        peer_idx = np.array([j for x in peers for j in x], dtype=np.int64)
        return cls(ids, bank.n_loops, bank.camera_lane_ptr, cap, peer_ptr, peer_idx, params)

    @property
    def n(self) -> int:
        return len(self.ids)

    @property
    def loop_ok(self) -> np.ndarray:
        return self.state[:self.n_loops] == OK

    @property
    def camera_ok(self) -> np.ndarray:
        return self.state[self.n_loops:] == OK

    def update(self, dt: float, loop_count: np.ndarray, loop_occ_time: np.ndarray, loop_time: np.ndarray,
               cam_veh: np.ndarray, cam_queue: np.ndarray, now_ns: int = 0) -> list[HealthChange]:
        """One tick of ``dt`` s with the readings absorbed since the last; the changes of state."""
        if not self.enabled or self.n == 0:
            return []
        old = self.state.copy()
        n = health_tick(float(dt), self.params, loop_count, loop_occ_time, loop_time, self.cam_ptr, cam_veh,
                        cam_queue, self.cam_cap, self.peer_ptr, self.peer_idx, old, self.state, self.stats,
                        self._slot_last, self._scratch, self._changed)
        if n == 0:
            return []
        out = []
        for d in np.flatnonzero(self._changed).tolist():  # changes only: rare
            out.append(HealthChange(d, self.ids[d], STATES[old[d]], STATES[self.state[d]]))
            self.since_ns[d] = now_ns
            self.faults_total += int(self.state[d] != OK)
        self.changes_total += int(n)
        return out

    def update_from_bank(self, bank, dt: float, now_ns: int = 0) -> list[HealthChange]:
        """``update`` on what ``bank`` accumulated this tick (call before its ``close_tick``)."""
        L = bank.loops
        return self.update(dt, L.count, L.occ_time, L.time, bank._cam_vehicles, bank._cam_queue, now_ns)

    def counts(self) -> dict[str, int]:
        """Detectors by state (every state listed, zeros too)."""
        c = np.bincount(self.state, minlength=len(STATES)) if self.n else np.zeros(len(STATES), dtype=np.int64)
        return {name: int(c[k]) for k, name in enumerate(STATES)}

    def faulty(self) -> list[tuple[int, str, str, int]]:
        """``(index, id, state, since_ns)`` of every detector not ok."""
        return [(d, self.ids[d], STATES[self.state[d]], int(self.since_ns[d]))
                for d in np.flatnonzero(self.state != OK).tolist()]

    def warm_up(self) -> None:
        """Compile the kernel on a scratch detector set (one loop, one one-lane camera)."""
        from types import SimpleNamespace

        params = SimpleNamespace(**{f: 1.0 for f in PARAM_FIELDS})
        h = DetectorHealth(["l", "c"], 1, np.array([0, 1]), np.ones(1), np.array([0, 0, 1]), np.zeros(1, dtype=np.int64),
                           params)
        h.update(1.0, np.zeros(1), np.zeros(1), np.ones(1), np.zeros(1), np.zeros(1))
