"""Signal phase and timing (SPaT) and speed advice, the bodies of ``spat.*`` and ``advice.*``.

Every tick, after the safety stage, one numba kernel looks ahead over all signal links at once:

1. It copies the safety stage's state (``link_state``, ``link_since_ns``, the long-clearance
   flags, the active phase) and runs the safety stage's own kernel forward, one tick at a time,
   up to ``spat.horizon_s``, with the targets the controller says it will ask for (its *plan*:
   per signal up to ``K`` segments ``(phase, end_ns, committed)``; a controller without a plan
   is taken to keep its current target). The first tick at which a link's state differs from now
   is its likely change (``likelyTime``). Because the look-ahead runs the very interlocks that
   will run for real, a plan the controller keeps is predicted to the tick: yellow ends, red
   clearance, conflicts, permissive turns and their long clearances included. Box cameras
   (``Safety._box``, the readings of this tick) enter the run too: a path that is red now
   reads as now for the whole look-ahead (nothing drives into a red path: an empty one stays
   empty, and a vehicle standing in one holds the links it stands in, ``link_intruder_idx``,
   until it leaves, which the run cannot know); a path that opens or ends ahead reads unknown
   (the fixed clearances); one that closes ahead reads empty once it has been red for the red
   clearance (its last vehicles out by then, the usual case), so the run does not foresee a
   long clearance or pass-time hold that a box will waive. Crossing zones are not read ahead.
   Without readings the look-ahead foresaw cologne8's greens after the long clearances that
   boxes waived: ``traffic-engine evaluate .../cologne8.sumocfg --guidance-share 0.2 --seed 0``
   gave a likely-time error p90 of 6 s (about half the predicted ends of a red 2 to 10 s late);
   with them, 0 s (mean 0.17 s), and guided vehicles stopped 36.9 % less often than the others
   (33.3 %).
2. ``minEndTime`` is the safety stage's lower bound, worked out independently of any plan: a
   green no earlier than its minimum green, a yellow exactly at its end, a red no earlier than
   its own red clearance and the earliest time every conflicting link can have gone through
   (the rest of its minimum green,) yellow and red clearance. ``maxEndTime`` is known only
   where the controller committed to the plan that brings the change (then it equals
   ``likelyTime``) and for yellow; otherwise it is unknown.
3. ``confidence`` (0..1) is the engine's estimate of the chance that the change happens within
   a tick of ``likelyTime``: 1 for yellow, ``CONF_COMMITTED`` for a change the controller's
   committed plan brings, ``CONF_FORECAST`` for one its uncommitted forecast brings, 0 when no
   change is foreseen within the horizon (``likelyTime`` unknown).
4. The look-ahead also records each link's first two green windows (start, end; an end beyond
   the horizon is unknown). The advice kernel turns them, per approach lane and link, into a
   speed band that reaches the stop line inside a window: after the window opens (plus the
   time the lane's estimated queue needs to discharge, plus ``margin_s``) and ``margin_s``
   before it closes, never above the lane's speed limit; a band whose top would be below
   ``advice_min_mps`` is no advice but "expect to stop".

Times are absolute integer nanoseconds since the epoch, like every timestamp of the protocol
(the engine's clock: simulated time under ``clock = "sim"``); -1 inside the arrays, nil on the
wire, is unknown. ``docs/protocol.md`` has the wire bodies and the band formula.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from controllers.safety import GREEN, RED, YELLOW, _enforce

K_PLAN = 3  # plan segments per signal a controller may give
NO_PHASE = -2  # a plan slot that is unused
CONF_COMMITTED = 0.9
CONF_FORECAST = 0.5
STOP, ADVICE, FREE, EARLIEST = 0, 1, 2, 3
"""Advice kinds: expect to stop; keep in the band (a green window); green now and reachable at
the limit; a red whose next green is not known yet, band towards its earliest possible start."""


@njit(cache=True)
def _min_end(now_ns, link, link_state, link_since_ns, long_clear, clear_ns, conflict_ptr, conflict_idx,
             min_green_ns, yellow_ns, red_ns, box):
    """The earliest time the safety stage can change ``link``'s state (a lower bound). A
    conflicting link's long clearance counts only where no box camera watches its path
    (``box`` NaN): one that does may see the path empty and waive it."""
    s = link_state[link]
    since = link_since_ns[link]
    if s == YELLOW:
        return since + yellow_ns
    if s == GREEN:
        return max(now_ns, since + min_green_ns)
    t = since + red_ns
    for k in range(conflict_ptr[link], conflict_ptr[link + 1]):
        c = conflict_idx[k]
        sc = link_state[c]
        need = clear_ns[c] if long_clear[c] and np.isnan(box[c]) else red_ns
        if sc == RED:
            e = link_since_ns[c] + need
        elif sc == YELLOW:
            e = link_since_ns[c] + yellow_ns + need
        else:  # green: its minimum green, then yellow, then at least the plain red clearance
            e = max(now_ns, link_since_ns[c] + min_green_ns) + yellow_ns + red_ns
        if e > t:
            t = e
    return max(now_ns, t)


@njit(cache=True)
def _look_ahead(now_ns, tick_ns, n_steps, plan_phase, plan_end_ns, plan_committed, tls_link_ptr, tls_phase_ptr,
                phase_link_ptr, phase_link_idx, conflict_ptr, conflict_idx, yield_ptr, yield_idx, yielder_ptr,
                yielder_idx, link_tls, min_green_ns, yellow_ns, red_ns, clear_ns, exit_ns, link_state0, link_since0,
                long_clear0, active_phase0, active_since0, st, since, long_clear, want, active, active_since,
                target, known, committed, min_end, max_end, likely, confidence, win_start, win_end, box0, box,
                intruder_ptr, intruder_idx, no_cross, held):
    """Run the safety stage forward along the controllers' plans; fill the SPaT arrays and the
    first two green windows of every link (see the module docstring). Returns the links whose
    change the plans bring within the horizon (yellows not counted)."""
    n_links = link_state0.size
    n_tls = tls_link_ptr.size - 1
    for link in range(n_links):
        st[link] = link_state0[link]
        since[link] = link_since0[link]
        long_clear[link] = long_clear0[link]
        likely[link] = -1
        max_end[link] = -1
        confidence[link] = 0.0
        min_end[link] = _min_end(now_ns, link, link_state0, link_since0, long_clear0, clear_ns, conflict_ptr,
                                 conflict_idx, min_green_ns, yellow_ns, red_ns, box0)
        for w in range(2):
            win_start[link, w] = -1
            win_end[link, w] = -1
        if st[link] == GREEN:
            win_start[link, 0] = now_ns
        elif st[link] == YELLOW:  # a yellow ends on time whatever the plan: at the first tick after it
            k = max(np.int64(1), (link_since0[link] + yellow_ns - now_ns + tick_ns - 1) // tick_ns)
            likely[link] = now_ns + k * tick_ns
            max_end[link] = likely[link]
            confidence[link] = 1.0
    for t in range(n_tls):
        target[t] = plan_phase[t, 0] if plan_phase[t, 0] != NO_PHASE else -1
        active[t] = active_phase0[t]
        active_since[t] = active_since0[t]
        known[t] = True
        committed[t] = True
    found = 0
    for link in range(n_links):
        box[link] = box0[link]  # (box readings ahead: see the module docstring)
    nobox = box[:0]  # (crossing zones ahead: unknown, no readings; no_cross is all zeros)
    for step in range(1, n_steps + 1):
        ts = now_ns + step * tick_ns
        for t in range(n_tls):
            p = NO_PHASE
            for k in range(plan_phase.shape[1]):
                q = plan_phase[t, k]
                if q == NO_PHASE:
                    break
                if plan_end_ns[t, k] < 0 or ts < plan_end_ns[t, k]:
                    p = q
                    if not plan_committed[t, k]:
                        committed[t] = False
                    break
            if p == NO_PHASE:
                known[t] = False  # beyond the plan: keep asking for the last target, record nothing
            else:
                target[t] = p
        _enforce(ts, target, tls_link_ptr, tls_phase_ptr, phase_link_ptr, phase_link_idx, conflict_ptr,
                 conflict_idx, yield_ptr, yield_idx, yielder_ptr, yielder_idx, min_green_ns, yellow_ns, red_ns,
                 clear_ns, exit_ns, st, since, long_clear, want, active, active_since, box, intruder_ptr,
                 intruder_idx, no_cross, no_cross[:0], nobox, held)
        for link in range(n_links):
            if since[link] == ts and st[link] != RED:
                box[link] = np.nan  # what a box will see on a path that opens (or ends) ahead is unknown
            elif st[link] == RED and since[link] > now_ns and ts - since[link] >= red_ns and not np.isnan(box0[link]):
                box[link] = 0.0  # a watched path that closed ahead is taken as empty after the red clearance
            t = link_tls[link]
            if not known[t]:
                continue
            s = st[link]
            if likely[link] < 0 and s != link_state0[link]:
                likely[link] = ts
                found += 1
                if committed[t]:
                    confidence[link] = CONF_COMMITTED
                    max_end[link] = ts
                else:
                    confidence[link] = CONF_FORECAST
            # green windows: open on a change to green, close on a change away from it
            if s == GREEN and since[link] == ts:
                for w in range(2):
                    if win_start[link, w] < 0:
                        win_start[link, w] = ts
                        break
            elif s != GREEN and since[link] == ts:
                for w in range(2):
                    if win_start[link, w] >= 0 and win_end[link, w] < 0:
                        win_end[link, w] = ts
                        break
    return found


@njit(cache=True)
def _advice(now_ns, entry_lane, entry_link, lane_length_m, lane_speed_mps, lane_queue_veh, win_start, win_end,
            headway_s, margin_s, min_mps, link_state, min_end, out_kind, out_min, out_max, out_arrive_ns):
    """Per approach entry (lane, link): the speed band to reach the stop line, ``lane_length_m``
    away, inside one of the link's next two green windows; for a red link whose next green is
    not foreseen, the band that does not arrive before its earliest possible start."""
    for e in range(entry_lane.size):
        lane = entry_lane[e]
        link = entry_link[e]
        d = lane_length_m[lane]
        vmax = lane_speed_mps[lane]
        out_kind[e] = STOP
        out_min[e] = 0.0
        out_max[e] = 0.0
        out_arrive_ns[e] = -1
        for w in range(2):
            a_ns = win_start[link, w]
            if a_ns < 0:
                break
            b_ns = win_end[link, w]
            # the window for a vehicle arriving now: after the queue ahead has left, with margins
            a = (a_ns - now_ns) / 1e9 + lane_queue_veh[lane] * headway_s + margin_s
            if a_ns <= now_ns:
                a = lane_queue_veh[lane] * headway_s
            b = np.inf if b_ns < 0 else (b_ns - now_ns) / 1e9 - margin_s
            if b <= 0.0 or b <= a:
                continue
            hi = vmax if a <= 0.0 else min(vmax, d / a)
            lo = 0.0 if b == np.inf else d / b
            lo = max(lo, min_mps)
            if hi < min_mps or lo > hi:
                continue
            out_kind[e] = FREE if hi >= vmax and a_ns <= now_ns else ADVICE
            out_min[e] = lo
            out_max[e] = hi
            out_arrive_ns[e] = now_ns + np.int64(d / hi * 1e9)
            break
        if out_kind[e] == STOP and link_state[link] == RED and win_start[link, 0] < 0:
            a = (min_end[link] - now_ns) / 1e9 + lane_queue_veh[lane] * headway_s + margin_s
            hi = vmax if a <= 0.0 else min(vmax, d / a)
            if hi >= min_mps:
                out_kind[e] = EARLIEST
                out_min[e] = min_mps
                out_max[e] = hi
                out_arrive_ns[e] = now_ns + np.int64(d / hi * 1e9)


def band(distance_m: float, speed_limit_mps: float, window_start_s: float, window_end_s: float | None,
         queue_s: float = 0.0, margin_s: float = 1.0, min_mps: float = 5.0) -> tuple[float, float] | None:
    """The band of one window for a vehicle ``distance_m`` from the stop line, times from now
    (``window_end_s`` None: open); None: expect to stop. The formula of ``docs/protocol.md``, in
    plain Python for clients (``sim.guidance``) and tests."""
    a = queue_s if window_start_s <= 0 else window_start_s + queue_s + margin_s
    b = float("inf") if window_end_s is None else window_end_s - margin_s
    if b <= 0 or b <= a:
        return None
    hi = speed_limit_mps if a <= 0 else min(speed_limit_mps, distance_m / a)
    lo = max(0.0 if b == float("inf") else distance_m / b, min_mps)
    if hi < min_mps or lo > hi:
        return None
    return lo, hi


class SpatStage:
    """Per engine: the look-ahead's buffers, the approach entries, and the bodies per signal."""

    def __init__(self, net, safety, config, tick_s: float):
        from engine.config import SpatParams

        self.net = net
        self.safety = safety
        self.config: SpatParams = config
        self.tick_ns = int(round(tick_s * 1e9))
        self.n_steps = max(1, int(np.ceil(config.horizon_s / tick_s)))
        n_links, n_tls = net.n_links, net.n_tls
        self.st = np.zeros(n_links, dtype=np.int8)
        self.since = np.zeros(n_links, dtype=np.int64)
        self.long_clear = np.zeros(n_links, dtype=np.bool_)
        self.want = np.zeros(n_links, dtype=np.bool_)
        self.active = np.zeros(n_tls, dtype=np.int32)
        self.active_since = np.zeros(n_tls, dtype=np.int64)
        self.target = np.zeros(n_tls, dtype=np.int32)
        self.known = np.zeros(n_tls, dtype=np.bool_)
        self.committed = np.zeros(n_tls, dtype=np.bool_)
        self.min_end = np.zeros(n_links, dtype=np.int64)
        self.max_end = np.zeros(n_links, dtype=np.int64)
        self.likely = np.zeros(n_links, dtype=np.int64)
        self.confidence = np.zeros(n_links, dtype=np.float64)
        self.win_start = np.zeros((n_links, 2), dtype=np.int64)
        self.win_end = np.zeros((n_links, 2), dtype=np.int64)
        self.box = np.full(n_links, np.nan)
        self._no_cross = np.zeros(n_links + 1, dtype=np.int64)  # the look-ahead's: no crossing zones
        self._held = np.zeros(n_links, dtype=np.bool_)  # the look-ahead's scratch for the safety kernel
        self.plan_phase = np.full((n_tls, K_PLAN), NO_PHASE, dtype=np.int32)
        self.plan_end_ns = np.full((n_tls, K_PLAN), -1, dtype=np.int64)
        self.plan_committed = np.zeros((n_tls, K_PLAN), dtype=np.bool_)
        # approach entries: each (entry lane, link) pair of a signalised movement, grouped by signal
        pairs = sorted({(int(net.link_tls[lk]), int(lk), int(net.move_in_lane[m]))
                        for m, lk in enumerate(net.move_link) if lk >= 0})
        self.entry_tls = np.array([p[0] for p in pairs], dtype=np.int32)
        self.entry_link = np.array([p[1] for p in pairs], dtype=np.int32)
        self.entry_lane = np.array([p[2] for p in pairs], dtype=np.int32)
        self.entry_ptr = np.searchsorted(self.entry_tls, np.arange(n_tls + 1)).astype(np.int64)
        n_e = len(pairs)
        self.kind = np.zeros(n_e, dtype=np.int8)
        self.band_min = np.zeros(n_e)
        self.band_max = np.zeros(n_e)
        self.arrive_ns = np.zeros(n_e, dtype=np.int64)
        self._entry_lane_ids = [net.lane_ids[x] for x in self.entry_lane]
        self._entry_local_link = (self.entry_link - net.tls_link_ptr[self.entry_tls]).tolist()
        self._entry_distance = np.round(net.lane_length_m[self.entry_lane], 1).tolist()
        self._entry_limit = np.round(net.lane_speed_mps[self.entry_lane], 2).tolist()
        self.queue_s = np.zeros(n_e)

    def load_plan(self, controller, target_phase: np.ndarray) -> None:
        """The controller's plan (``plan_phase``/``plan_end_ns``/``plan_committed`` arrays, n_tls x
        K), or, for a controller without one, its current target held open-ended, uncommitted."""
        plan = getattr(controller, "plan", None)
        if plan is not None:
            phase, end, committed = plan()
            k = min(K_PLAN, phase.shape[1])
            self.plan_phase[:] = NO_PHASE
            self.plan_phase[:, :k] = phase[:, :k]
            self.plan_end_ns[:, :k] = end[:, :k]
            self.plan_committed[:, :k] = committed[:, :k]
        else:
            self.plan_phase[:] = NO_PHASE
            self.plan_phase[:, 0] = target_phase
            self.plan_end_ns[:, 0] = -1
            self.plan_committed[:, 0] = False

    def update(self, now_ns: int, queue_veh: np.ndarray) -> None:
        """Run the look-ahead and the advice kernel for the tick at ``now_ns``."""
        net, sf, c = self.net, self.safety, self.safety.config
        _look_ahead(np.int64(now_ns), np.int64(self.tick_ns), self.n_steps, self.plan_phase, self.plan_end_ns,
                    self.plan_committed, net.tls_link_ptr, net.tls_phase_ptr, net.phase_link_ptr, net.phase_link_idx,
                    net.link_conflict_ptr, net.link_conflict_idx, net.link_yield_ptr, net.link_yield_idx,
                    sf._yielder_ptr, sf._yielder_idx, net.link_tls, np.int64(round(c.min_green_s * 1e9)),
                    np.int64(round(c.yellow_s * 1e9)), np.int64(round(c.red_clearance_s * 1e9)), sf._clear_ns,
                    sf._exit_ns, sf.link_state, sf.link_since_ns, sf._long_clear, sf.active_phase, sf.active_since_ns, self.st,
                    self.since, self.long_clear, self.want, self.active, self.active_since, self.target, self.known,
                    self.committed, self.min_end, self.max_end, self.likely, self.confidence, self.win_start,
                    self.win_end, sf._box, self.box, net.link_intruder_ptr, net.link_intruder_idx, self._no_cross,
                    self._held)
        cfg = self.config
        self.queue_s = queue_veh[self.entry_lane] * cfg.discharge_headway_s
        _advice(np.int64(now_ns), self.entry_lane, self.entry_link, net.lane_length_m, net.lane_speed_mps,
                queue_veh, self.win_start, self.win_end, cfg.discharge_headway_s, cfg.margin_s, cfg.advice_min_mps,
                sf.link_state, self.min_end, self.kind, self.band_min, self.band_max,
                self.arrive_ns)

    def messages(self, chars: str, now_ns: int, local_phase) -> list[tuple[bytes, dict]]:
        """``(topic, body)`` of every ``spat.<junction>`` and ``advice.<junction>`` (without ``seq``)."""
        net = self.net
        ptr = net.tls_link_ptr
        nil = lambda a: [None if x < 0 else x for x in a.tolist()]  # noqa: E731
        min_end, max_end, likely = self.min_end.tolist(), nil(self.max_end), nil(self.likely)
        self._min_end_list = min_end
        conf = np.round(self.confidence, 2).tolist()
        horizon_ns = now_ns + self.n_steps * self.tick_ns
        ws, we = nil(self.win_start[:, 0]), nil(self.win_end[:, 0])
        kinds = ("stop", "advice", "free", "earliest")
        kind = [kinds[k] for k in self.kind.tolist()]
        lo, hi = np.round(self.band_min, 2).tolist(), np.round(self.band_max, 2).tolist()
        arrive = nil(self.arrive_ns)
        queue_s = np.round(self.queue_s, 1).tolist()
        win = [[a, b] for a, b in zip(self.win_start.tolist(), self.win_end.tolist())]
        out = []
        eptr = self.entry_ptr
        for t, tls in enumerate(net.tls_ids):
            a, b = int(ptr[t]), int(ptr[t + 1])
            out.append((b"spat." + tls.encode(), {
                "ts_ns": now_ns, "junction": tls, "state": chars[a:b], "phase": local_phase(t),
                "horizon_ns": horizon_ns, "minEndTime": min_end[a:b], "maxEndTime": max_end[a:b],
                "likelyTime": likely[a:b], "confidence": conf[a:b],
                "greenStart": ws[a:b], "greenEnd": we[a:b]}))
            e0, e1 = int(eptr[t]), int(eptr[t + 1])
            out.append((b"advice." + tls.encode(), {
                "ts_ns": now_ns, "junction": tls, "horizon_ns": horizon_ns,
                "lanes": self._entry_lane_ids[e0:e1], "links": self._entry_local_link[e0:e1],
                "distance_m": self._entry_distance[e0:e1], "speed_limit_mps": self._entry_limit[e0:e1],
                "queue_s": queue_s[e0:e1], "margin_s": self.config.margin_s,
                "earliest_ns": [self._min_end_list[lk] for lk in self.entry_link[e0:e1].tolist()],
                "kind": kind[e0:e1], "min_mps": lo[e0:e1], "max_mps": hi[e0:e1], "arrive_ns": arrive[e0:e1],
                "windows": [[[None if x < 0 else x for x in pair] for pair in zip(*win[lk]) if pair[0] >= 0]
                            for lk in self.entry_link[e0:e1].tolist()]}))
        return out
