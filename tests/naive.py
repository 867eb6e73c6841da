"""Plain-Python references for the kernels: slow, obvious, and what the kernels must match."""

from __future__ import annotations

import math

from network.estimate import CAMERA_RANGE_M

RED, YELLOW, GREEN = 0, 1, 2


def signal_links(net, t):
    return range(int(net.tls_link_ptr[t]), int(net.tls_link_ptr[t + 1]))


def phase_links(net, p):
    return [int(x) for x in net.phase_link_idx[net.phase_link_ptr[p]:net.phase_link_ptr[p + 1]]]


def conflicts_of(net, link):
    return [int(x) for x in net.link_conflict_idx[net.link_conflict_ptr[link]:net.link_conflict_ptr[link + 1]]]


def yields_of(net, link):
    return [int(x) for x in net.link_yield_idx[net.link_yield_ptr[link]:net.link_yield_ptr[link + 1]]]


def enforce(net, target, state, since, active, active_since, now, min_green, yellow, red, long_clear):
    """One safety step, as the module docstring of controllers.safety says it in words."""
    yielders = {b: [a for a in range(net.n_links) if b in yields_of(net, a)] for b in range(net.n_links)}
    clear = [max(red, round(c * 1e9)) if long_clear[i] else red for i, c in enumerate(net.link_clearance_s)]
    passes = {(i, int(net.link_yield_idx[k])): max(red, round(float(net.link_yield_pass_s[k]) * 1e9))
              if net.link_yield_pass_s[k] > 0 else 0
              for i in range(net.n_links) for k in range(net.link_yield_ptr[i], net.link_yield_ptr[i + 1])}
    for t in range(len(target)):
        p = target[t]
        if not (net.tls_phase_ptr[t] <= p < net.tls_phase_ptr[t + 1]):
            p = -1
        want = set(phase_links(net, p)) if p >= 0 else set()
        for link in signal_links(net, t):
            if state[link] == GREEN and now - since[link] >= min_green and (
                link not in want or any(b in want and state[b] == RED for b in yields_of(net, link))
            ):
                giving_way = any(state[b] != RED or now - since[b] < red for b in yields_of(net, link))
                priority = [b for b in yields_of(net, link) if state[b] == GREEN and link not in yields_of(net, b)]
                if any(passes[link, b] and b not in want and (state[b] != RED or now - since[b] < passes[link, b])
                       and link not in yields_of(net, b) for b in yields_of(net, link)):
                    continue  # the streams it gives way to end first, their last vehicle gets out
                if giving_way and any(now - since[b] < min_green for b in priority):
                    continue
                if giving_way:
                    for b in priority:
                        long_clear[b] = any(state[x] != RED or now - since[x] < red for x in yields_of(net, b))
                        state[b], since[b] = YELLOW, now
                long_clear[link] = giving_way
                state[link], since[link] = YELLOW, now
            elif state[link] == YELLOW and now - since[link] >= yellow:
                state[link], since[link] = RED, now
        for link in signal_links(net, t):
            waits = any(b in want and state[b] == RED and link not in yields_of(net, b)
                        for b in yields_of(net, link))
            if state[link] == RED and link in want and now - since[link] >= red and not waits and all(
                state[c] == RED and now - since[c] >= clear[c] for c in conflicts_of(net, link)
            ) and all(
                (state[a] == GREEN and since[a] == now) or (state[a] == RED and now - since[a] >= clear[a])
                for a in yielders[link]
            ):
                state[link], since[link] = GREEN, now
        if p >= 0 and all(state[x] == GREEN for x in want):
            if active[t] != p:
                active[t], active_since[t] = p, now
        elif active[t] >= 0:
            active[t], active_since[t] = -1, now


_SHARES = {}


def _movement_counts(net):
    if id(net) not in _SHARES:
        signalised = [m for m in range(net.n_movements) if net.move_link[m] >= 0]
        n_from, n_into = {}, {}
        for m in signalised:
            n_from[net.move_in_lane[m]] = n_from.get(net.move_in_lane[m], 0) + 1
            n_into[net.move_out_lane[m]] = n_into.get(net.move_out_lane[m], 0) + 1
        _SHARES[id(net)] = (net, signalised, n_from, n_into)
    return _SHARES[id(net)][1:]


def phase_pressure(net, p, lane_w, exit_w=None):
    """(pressure, demand) of phase p; shared entry and exit lanes split among their movements;
    exit lanes weighed by ``exit_w`` when given."""
    exit_w = lane_w if exit_w is None else exit_w
    _, n_from, n_into = _movement_counts(net)
    pressure = demand = 0.0
    for link in phase_links(net, p):  # (summed in the kernel's order, so ties break alike)
        for m in net.link_move_idx[net.link_move_ptr[link]:net.link_move_ptr[link + 1]]:
            a, b = net.move_in_lane[m], net.move_out_lane[m]
            demand += lane_w[a] * (1.0 / n_from[a])
            pressure += lane_w[a] * (1.0 / n_from[a]) - exit_w[b] * (1.0 / n_into[b])
    return pressure, demand


def max_pressure(net, lane_w, target, active, active_since, now, hold, max_green, max_wait, served, shown=None):
    """One max-pressure decision; ``served`` (link -> last time it was green in the active phase)
    is updated; ``shown`` (per link, the safety stage's state; None: all shown): a link of the
    phase shown is served only while it is not red."""
    for t in range(net.n_tls):
        p0, p1 = int(net.tls_phase_ptr[t]), int(net.tls_phase_ptr[t + 1])
        pr = {p: phase_pressure(net, p, lane_w) for p in range(p0, p1)}
        cur = target[t]
        if not (p0 <= cur < p1):
            target[t] = max(range(p0, p1), key=lambda p: (pr[p][0], -p))
            continue
        if active[t] != cur:
            continue
        for link in phase_links(net, cur):
            if shown is None or shown[link] != RED:
                served[link] = now
        if now - active_since[t] < hold:
            continue
        waiting = [link for link in signal_links(net, t)
                   if now - served[link] >= max_wait
                   and any(lane_w[net.move_in_lane[m]] > 0
                           for m in net.link_move_idx[net.link_move_ptr[link]:net.link_move_ptr[link + 1]])]
        if waiting:
            starved = min(waiting, key=lambda link: (served[link], link))
            serving = [p for p in range(p0, p1) if starved in phase_links(net, p)]
            target[t] = max(serving, key=lambda p: (pr[p][0], -p))
            continue
        others = [p for p in range(p0, p1) if p != cur and pr[p][1] > 0]
        if not others:
            continue
        best = max(others, key=lambda p: (pr[p][0], -p))
        if now - active_since[t] >= max_green or pr[cur][1] <= 0 or pr[best][0] > pr[cur][0]:
            target[t] = best


def webster(net, t, lane_flow, sat, intergreen, min_green, cycle_min, cycle_max, max_y):
    """(cycle, [green per phase]) of signal t by Webster's method; ``intergreen`` per phase. The
    greens are of the phases a cycle runs, lane phases (``phase_in_cycle`` false) get 0."""
    every = range(int(net.tls_phase_ptr[t]), int(net.tls_phase_ptr[t + 1]))
    phases = [p for p in every if net.phase_in_cycle[p]]
    _, n_from, _ = _movement_counts(net)
    ys = []
    for p in phases:
        lanes = [int(net.move_in_lane[net.link_move_idx[j]])
                 for link in phase_links(net, p)
                 for j in range(net.link_move_ptr[link], net.link_move_ptr[link + 1])]
        ys.append(max([lane_flow[a] * (1.0 / n_from[a]) / sat for a in lanes], default=0.0))
    n = len(ys)
    lost = sum(intergreen[p] for p in phases)
    y_sum = sum(ys)
    cycle = (1.5 * lost + 5) / (1 - min(y_sum, max_y))
    cycle = min(max(cycle, cycle_min, lost + n * min_green), cycle_max)
    eff = max(cycle - lost, n * min_green)
    greens = [max(min_green, eff * (y / y_sum if y_sum > 0 else 1 / n)) for y in ys]
    cycle = sum(g + intergreen[p] for g, p in zip(greens, phases))
    by_phase = dict(zip(phases, greens))
    return cycle, [by_phase.get(p, 0.0) for p in every]


def loop_reading_verdict(r, known, now_ns, last_seq, last_ts, max_interval_s=3600.0, max_future_s=5.0,
                         max_age_s=300.0, cap_per_s=1.0):
    """The ingest rules for one loop reading, in plain Python: a reason, or None if accepted.

    ``known`` maps ids to indices; ``last_seq``/``last_ts`` are dicts by detector index, updated
    when the reading is accepted. ``now_ns`` None: the engine clock has not started."""
    speed = r.speed_mps
    if not (0.0 < r.interval_s <= max_interval_s) or not math.isfinite(r.interval_s):
        return "bad_interval"
    if now_ns is not None:
        if r.ts_event_ns > now_ns + max_future_s * 1e9:
            return "clock_skew"
        if r.ts_event_ns < now_ns - max_age_s * 1e9:
            return "late"
    i = known.get(r.detector)
    if i is None:
        return "unknown_detector"
    if r.seq >= 0 and r.seq <= last_seq.get(i, -1):
        return "replay"
    if i in last_ts and r.ts_event_ns < last_ts[i]:
        return "out_of_order"
    if r.seq < 0 and last_ts.get(i) == r.ts_event_ns:
        return "duplicate"
    if not math.isfinite(r.occupancy) or (speed is not None and not math.isfinite(speed)):
        return "non_finite"
    if r.count < 0 or (speed is not None and speed < 0):
        return "negative"
    if not 0.0 <= r.occupancy <= 1.0:
        return "occupancy_range"
    if r.count > cap_per_s * r.interval_s + 1:
        return "count_impossible"
    if r.seq >= 0:
        last_seq[i] = r.seq
    last_ts[i] = r.ts_event_ns
    return None


HEALTH_STATES = ("ok", "missing", "stuck_on", "constant", "chattering", "flow_zero_occ_nonzero", "no_activity")


class HealthRef:
    """Detector health in plain Python, one detector at a time, as ``detectors.health`` says it.

    ``loops`` is the number of loops; ``cameras`` lists each camera's lane capacities (whole
    vehicles); ``peers[d]`` the loop indices detector ``d`` is compared with; ``p`` a dict of
    ``HealthParams`` fields."""

    def __init__(self, loops, cameras, peers, p):
        self.n_loops = loops
        self.cameras = cameras
        self.peers = peers
        self.p = p
        n = loops + len(cameras)
        self.state = ["ok"] * n
        self.silent = [0.0] * n
        self.stuck = [0.0] * n
        self.const_s = [0.0] * n
        self.const_n = [0] * n
        self.rate = [0.0] * n
        self.occ_rate = [0.0] * n
        self.fz_run = [0.0] * n
        self.fz_occ = [0.0] * n
        self.q_run = [0.0] * n
        self.q_peer = [0.0] * n
        self.clear = [0.0] * n
        self.last = [None] * n  # last reading, to tell a repeat
        self.last_occ = [0.0] * n
        self.cam_last = [None] * len(cameras)  # per camera: (vehicles, queue) lists

    def tick(self, dt, loops, cams):
        """``loops[i]``: None or (count, occupied seconds, seconds); ``cams[c]``: None or
        (vehicles per lane, queue per lane). Returns the states after the tick."""
        p = self.p
        samples = []
        for i, r in enumerate(loops):
            if r is None:
                samples.append(None)
                continue
            count, occ_time, secs = r
            occ = occ_time / secs
            evid = occ * secs if count == 0 and occ < p["stuck_occupancy"] else 0.0
            repeat = self.last[i] == (count, occ)
            self.last[i] = (count, occ)
            samples.append(dict(secs=secs, count=count, occ=occ, evid=evid, rate=count / secs, repeat=repeat))
        for c, r in enumerate(cams):
            if r is None:
                samples.append(None)
                continue
            veh, queue = r
            caps = self.cameras[c]
            prev = self.cam_last[c]
            jump = sum(abs(v - u) for v, u in zip(veh, prev[0])) if prev else 0.0
            repeat = prev is not None and list(veh) == prev[0] and list(queue) == prev[1]
            self.cam_last[c] = (list(veh), list(queue))
            total = sum(veh)
            samples.append(dict(secs=dt, count=total, occ=total / sum(caps) if sum(caps) > 0 else 0.0,
                                evid=dt if total == 0 and sum(queue) > 0 else 0.0,
                                rate=jump / len(veh) / dt, repeat=repeat))
        before = list(self.state)
        for d, s in enumerate(samples):
            loop = d < self.n_loops
            if s is None:
                self.silent[d] += dt
            else:
                self.silent[d] = 0.0
                self.stuck[d] = self.stuck[d] + s["secs"] if s["occ"] >= p["stuck_occupancy"] else 0.0
                if s["repeat"] and s["count"] > 0:
                    self.const_s[d] += s["secs"]
                    self.const_n[d] += 1
                else:
                    self.const_s[d], self.const_n[d] = 0.0, 0
                    a = min(1.0, s["secs"] / p["chatter_tau_s"])
                    self.rate[d] += a * (s["rate"] - self.rate[d])
                    self.occ_rate[d] += a * (s["occ"] - self.occ_rate[d])
                if s["count"] == 0:
                    self.fz_run[d] += s["secs"]
                    self.fz_occ[d] += s["evid"]
                else:
                    self.fz_run[d], self.fz_occ[d] = 0.0, 0.0
                if s["count"] == 0 and s["occ"] == 0 and s["evid"] == 0:
                    seen = [samples[q]["count"] for q in self.peers[d] if samples[q] is not None and before[q] == "ok"]
                    self.q_run[d] += s["secs"]
                    if seen:
                        self.q_peer[d] += sum(seen) / len(seen)
                else:
                    self.q_run[d], self.q_peer[d] = 0.0, 0.0
                self.last_occ[d] = s["occ"]
            h = 0.5 if self.state[d] == "chattering" else 1.0
            varying = self.const_n[d] == 0
            if self.silent[d] >= p["missing_s"]:
                cond = "missing"
            elif self.stuck[d] >= p["stuck_on_s"]:
                cond = "stuck_on"
            elif self.const_n[d] >= p["constant_min_samples"] and \
                    self.const_s[d] >= (p["constant_s"] if loop else p["camera_constant_s"]):
                cond = "constant"
            elif varying and loop and (self.rate[d] >= h * p["chatter_vps"] or (
                    self.rate[d] >= h * p["flicker_min_vps"] and self.occ_rate[d] * h < p["flicker_occ_s"] * self.rate[d])):
                cond = "chattering"
            elif varying and not loop and self.rate[d] >= h * p["camera_chatter_vps"]:
                cond = "chattering"
            elif self.fz_run[d] >= p["fzon_s"] and self.fz_occ[d] >= p["fzon_occupied_s"] and \
                    self.last_occ[d] < p["stuck_occupancy"]:
                cond = "flow_zero_occ_nonzero"
            elif self.q_run[d] >= p["no_activity_s"] and self.q_peer[d] >= p["no_activity_peer_veh"]:
                cond = "no_activity"
            else:
                cond = "ok"
            if cond != "ok":
                self.clear[d] = 0.0
                self.state[d] = cond
            elif self.state[d] != "ok":
                self.clear[d] += dt
                if self.clear[d] >= p["clear_s"]:
                    self.clear[d] = 0.0
                    self.state[d] = "ok"
        return list(self.state)


def lanes_step(dt, obs, lane_len, free, state, est):
    """One per-lane estimation step, as network/estimate.py's docstring says it in words."""
    import math

    veh, queue, flow, spd, held = state  # held: a vehicle standing on the lane's stop-bar loop
    for i in range(len(veh)):
        if obs.stop_seen[i]:
            flow[i] += min(1, dt / est.FLOW_TAU_S) * (obs.stop_count[i] * 3600 / dt - flow[i])
        v = obs.speed_mps[i]
        if math.isnan(v) and obs.stop_seen[i] and obs.stop_count[i] > 0 and obs.stop_occupancy[i] > 0:
            v = min(obs.stop_count[i] * est.EFFECTIVE_VEHICLE_LENGTH_M / (obs.stop_occupancy[i] * dt), 2 * free[i])
        if not math.isnan(v):
            spd[i] += min(1, dt / est.SPEED_TAU_S) * (v - spd[i])
        cap = max(1.0, min(lane_len[i], est.CAMERA_RANGE_M) / est.JAM_SPACING_M)
        if not math.isnan(obs.camera_vehicles[i]):
            veh[i], queue[i] = obs.camera_vehicles[i], obs.camera_queue_veh[i]
            held[i] = 0.0
        elif obs.upstream_seen[i] and obs.stop_seen[i]:
            # in at the upstream loop, out at the stop-bar loop, which counts a vehicle as it arrives:
            # one that stands on it (held a whole tick, est.ANCHOR_OCCUPANCY) is still in the lane
            standing = 1.0 if obs.stop_occupancy[i] >= est.ANCHOR_OCCUPANCY else 0.0
            n = min(max(veh[i] - held[i] + obs.upstream_count[i] - obs.stop_count[i], 0.0), cap)
            held[i] = standing
            veh[i] = min(n + standing, cap)
            queue[i] = veh[i] if obs.stop_count[i] == 0 and veh[i] > 0 else 0.5 * veh[i]
        if math.isnan(v):
            target = free[i] * (1 - min(1.0, queue[i] / cap))
            spd[i] += min(1, dt / est.SPEED_TAU_S) * (max(target, 0.5) - spd[i])


def edge_conditions(net, e, q, Q, est):
    """(travel time, speed, density, delay, los) of edge e at flow q and queue Q."""
    import math

    lanes = list(net.edge_lane_idx[net.edge_lane_ptr[e]:net.edge_lane_ptr[e + 1]])
    L, vf = net.edge_length_m[e], net.edge_speed_mps[e]
    signal = any(net.move_link[m] >= 0 and net.move_in_lane[m] in lanes for m in range(net.n_movements))
    tt = max(L - Q * est.JAM_SPACING_M / len(lanes), 0) / max(vf * est.CRUISE_FACTOR, 0.5) \
        + Q * 3600 / max(q, est.MIN_DELAY_FLOW_VPH)
    tt = min(max(tt, L / max(vf * 1.2, 0.5)), L / 0.5)
    density = max(max(q, 0) * tt / 3600 / max(L, 1) * 1000, Q / max(L, 1) * 1000 if Q > 0 else 0)
    if not signal:
        return tt, L / tt, density, math.nan, -1
    delay = max(tt - L / max(vf, 0.5), 0)
    los = sum(delay > x for x in est.LOS_LIMITS_S)
    if Q >= 0.9 * max(math.floor(L * len(lanes) / est.JAM_SPACING_M), 1):
        los = 5
    return tt, L / tt, density, delay, los


def edges_step(net, dt, obs, lane_flow, lane_observed, green, st, est, go=None):
    """One per-edge step (flows, queues, conditions), written from the docstring of
    network/estimate.py with dicts and recomputed sums. ``st`` is a dict of lists carried over
    ticks: x, flow_s, queue_s, prior, acc_flow, acc_queue, acc_time, turn_s, lt_cnt; ``minute_done``
    in ``st`` asks for the minute values (``m_*``) before this tick is added. ``go``: per link,
    whether its vehicles may go (green, yellow, or a red that means stop then go); None: unknown."""
    import math

    E = range(net.n_edges)
    lanes_of = {e: [int(x) for x in net.edge_lane_idx[net.edge_lane_ptr[e]:net.edge_lane_ptr[e + 1]]] for e in E}
    dests = {}  # lane -> {edge its connections reach: prior weight of the likeliest direction}
    links = {}  # lane -> signal links of its connections
    pair_links = {}  # (lane, edge reached) -> signal links of those connections
    pair_yields = {}  # (lane, edge reached) -> turns (edge, edge) whose streams it gives way to
    moves = net.graph.graph["movements"]
    for m in range(net.n_movements):
        a, b = int(net.move_in_lane[m]), int(net.move_out_lane[m])
        if net.lane_edge[a] != net.lane_edge[b]:
            w = est.DIRECTION_WEIGHT.get(moves[m]["direction"], 1.0)
            d = dests.setdefault(a, {})
            d[int(net.lane_edge[b])] = max(d.get(int(net.lane_edge[b]), 0.0), w)
        if net.move_link[m] >= 0:
            links.setdefault(a, set()).add(int(net.move_link[m]))
            if net.lane_edge[a] != net.lane_edge[b]:
                pair_links.setdefault((a, int(net.lane_edge[b])), set()).add(int(net.move_link[m]))
        if net.lane_edge[a] != net.lane_edge[b]:
            for m2 in moves[m].get("yields_to", ()):  # at a junction without a signal
                a2, b2 = int(net.lane_edge[net.move_in_lane[m2]]), int(net.lane_edge[net.move_out_lane[m2]])
                if a2 != b2:
                    pair_yields.setdefault((a, int(net.lane_edge[b])), set()).add((a2, b2))
    observed, queue_now, spill = {}, {}, {}
    for e in E:
        counts = [obs.stop_count[x] if obs.stop_seen[x] else obs.upstream_count[x] if obs.upstream_seen[x] else None
                  for x in lanes_of[e]]
        observed[e] = bool(lanes_of[e]) and all(c is not None for c in counts)
        if observed[e]:
            st["x"][e] = sum(counts) * 3600 / dt
        cams = [obs.camera_queue_veh[x] for x in lanes_of[e]]
        # standing vehicles a camera sees upstream of a short lane queue on it only when its
        # stop-bar loop is held (a vehicle stands at the stop line)
        held = [obs.camera_queue_veh[x] for x in lanes_of[e]
                if not (net.lane_length_m[x] < est.CAMERA_RANGE_M and obs.stop_seen[x]
                        and obs.stop_occupancy[x] < est.ANCHOR_OCCUPANCY)]
        storage = math.floor(net.edge_length_m[e] * len(lanes_of[e]) / est.JAM_SPACING_M)
        queue_now[e] = min(sum(held), storage) if cams and not any(math.isnan(c) for c in cams) else None
        spill[e] = sum(held) - queue_now[e] if queue_now[e] is not None else 0.0
    # a shared lane's stop-bar count belongs to the one movement its signal alone lets go
    cnt = st.setdefault("lt_cnt", {})
    for key in cnt:
        cnt[key] *= math.exp(-dt / est.RATIO_TAU_S)
    for x, d in dests.items():
        flowing = [e for e, w in d.items() if w > 0]
        may = [e for e in flowing if go is not None and (
            not pair_links.get((x, e)) or any(go[k] for k in pair_links[(x, e)]))]
        if go is not None and len(flowing) >= 2 and len(may) == 1 and obs.stop_seen[x] and obs.stop_count[x] > 0:
            cnt[x, may[0]] = cnt.get((x, may[0]), 0.0) + obs.stop_count[x]
    prior_veh = est.LANE_SPLIT_PRIOR_VEH

    def lane_split(x, e, w):
        tot = sum(cnt.get((x, f), 0.0) for f, v in dests[x].items() if v > 0)
        prior = w / sum(dests[x].values())
        return (cnt.get((x, e), 0.0) + prior_veh * prior) / (tot + prior_veh) if tot > 0 else prior

    structural = {}  # (i, e) -> share of edge i's flow into edge e, from its lanes
    flows_on = {}  # (i, e) -> some lane takes the turn other than as a U-turn (weight 0)
    lane_share = {}  # lane -> share of its edge's flow: counted, or as its likeliest direction weighs
    for i in E:
        exits = [x for x in lanes_of[i] if any(w > 0 for w in dests.get(x, {}).values())]
        tot = sum(lane_flow[x] for x in exits)
        wmax = {x: max(dests[x].values()) for x in exits}
        for x in exits:
            lane_share[x] = lane_flow[x] / tot if observed[i] and tot > 0 else wmax[x] / sum(wmax.values())
        for x in lanes_of[i]:
            for e, w in dests.get(x, {}).items():
                flows_on[i, e] = flows_on.get((i, e), False) or w > 0
                share = lane_share.get(x, 0.0)
                structural[i, e] = structural.get((i, e), 0.0) + (share * lane_split(x, e, w) if w > 0 else 0.0)
    # camera movement counts
    slots_all, slots_seen, turn_now = {}, {}, {}
    for lane, edge, count in zip(obs.turn_lane, obs.turn_edge, obs.turn_count):
        key = (int(net.lane_edge[lane]), int(edge))
        if key not in structural:
            continue
        slots_all[key[0]] = slots_all.get(key[0], 0) + 1
        if not math.isnan(count):
            slots_seen[key[0]] = slots_seen.get(key[0], 0) + 1
            turn_now[key] = turn_now.get(key, 0.0) + count * 3600 / dt
    ratio = {}
    for i in E:
        outs = [(j, e) for (j, e) in structural if j == i and flows_on[j, e]]
        if slots_all.get(i, 0) and slots_seen.get(i, 0) == slots_all[i]:
            for key in outs:
                st["turn_s"][key] = st["turn_s"].get(key, 0.0) + min(1, dt / est.RATIO_TAU_S) * (
                    turn_now.get(key, 0.0) - st["turn_s"].get(key, 0.0))
        tot = sum(st["turn_s"].get(key, 0.0) for key in outs)
        for key in outs:
            ratio[key] = (st["turn_s"].get(key, 0.0) + est.RATIO_PRIOR_VPH * structural[key]) / (tot + est.RATIO_PRIOR_VPH)
    # turn flows: U-turns carry none (their structural share is 0 and they are no unknowns)
    turns = sorted(k for k in ratio if flows_on.get(k))
    into = {e: [i for (i, f) in turns if f == e] for e in E}
    outof = {i: [f for (j, f) in turns if j == i] for i in E}
    y = st["y"]
    x = st["x"]
    measured = {i for i in E if slots_all.get(i, 0) and slots_seen.get(i, 0) == slots_all[i]}

    def s_in(e):
        return sum(y.get((i, e), 0.0) for i in into[e])

    def s_out(i):
        return sum(y.get((i, f), 0.0) for f in outof[i])

    def objective_terms(e, sign):
        """(d residual / d y, residual, weight) of the balance and prior terms of edge e, which
        the turn enters (sign +1) or leaves (sign -1)."""
        p = st["prior"] * len(lanes_of[e])
        if observed[e]:
            return [(1.0, (s_in(e) if sign > 0 else s_out(e)) - x[e], est.COUNT_WEIGHT)]
        if into[e] and outof[e]:
            return [(sign * 1.0, s_in(e) - s_out(e), est.BALANCE_WEIGHT),
                    (0.5, 0.5 * (s_in(e) + s_out(e)) - p, est.PRIOR_WEIGHT)]
        return [(1.0, (s_in(e) if sign > 0 else s_out(e)) - p, est.PRIOR_WEIGHT)]

    for _ in range(est.SWEEPS):
        for (i, e) in turns:
            terms = objective_terms(i, -1) + objective_terms(e, +1)
            if i in measured:
                terms.append((1.0, y.get((i, e), 0.0) - turn_now.get((i, e), 0.0), est.CAMERA_WEIGHT))
            for f in outof[i]:
                terms.append(((1.0 if f == e else 0.0) - ratio[i, f], y.get((i, f), 0.0) - ratio[i, f] * s_out(i),
                              est.SPLIT_WEIGHT))
            diag = sum(w * c * c for c, _, w in terms)
            grad = sum(w * c * r for c, r, w in terms)
            y[i, e] = y.get((i, e), 0.0) - grad / diag
    for e in E:
        if not observed[e]:
            if into[e] and outof[e]:
                x[e] = 0.5 * (s_in(e) + s_out(e))
            elif into[e] or outof[e]:
                x[e] = s_in(e) if into[e] else s_out(e)
            else:
                x[e] = st["prior"] * len(lanes_of[e])
    a = min(1, dt / est.EDGE_TAU_S)
    out = {}
    if st["minute_done"]:
        T = st["acc_time"]
        for e in E:
            q = max(st["acc_flow"][e] / T, 0)
            out["m", e] = (q, st["acc_queue"][e] / T, *edge_conditions(net, e, q, st["acc_queue"][e] / T, est))
            st["acc_flow"][e] = st["acc_queue"][e] = 0.0
        st["acc_time"] = 0.0
    storage = {e: math.floor(net.edge_length_m[e] * len(lanes_of[e]) / est.JAM_SPACING_M) for e in E}
    for e in E:
        st["flow_s"][e] += a * (x[e] - st["flow_s"][e])
        q = max(st["flow_s"][e], 0)
        if queue_now[e] is None and any(links.get(ln) for ln in lanes_of[e]):
            cap = max(est.SPILL_STORAGES * storage[e], storage[e] + sum(storage[i] for i in set(into[e])))
            n = len(lanes_of[e])
            Q = 0.0
            for ln in lanes_of[e]:  # a point queue per lane: arrivals shared evenly, discharge on its own green
                g = float(not links.get(ln) or any(green[k] for k in links[ln]))
                flowing = [(f, w) for f, w in dests.get(ln, {}).items() if w > 0]
                if g and flowing:  # at the rate of its flow's share on movements that show green
                    g = sum(lane_split(ln, f, w) for f, w in flowing
                            if not pair_links.get((ln, f)) or any(green[k] for k in pair_links[(ln, f)]))
                arrive = q * lane_share.get(ln, 0.0) if any(x in lane_share for x in lanes_of[e]) else q / n
                lq = st["lpq"].get(ln, 0.0) + (arrive - est.SATURATION_VPH_PER_LANE * g) * dt / 3600
                st["lpq"][ln] = min(max(lq, 0.0), cap / n)
                Q += st["lpq"][ln]
            queue_now[e] = min(Q, storage[e])
            spill[e] = Q - queue_now[e]
    def give_way_queue(i):
        """Per lane: its flow against its movements' gap-acceptance capacity through the streams
        they give way to, by the HCM delay formula and Little's law."""
        q = max(st["flow_s"][i], 0)
        exits = any(x in lane_share for x in lanes_of[i])
        total = 0.0
        for x in lanes_of[i]:
            v = q * lane_share.get(x, 0.0) if exits else q / len(lanes_of[i])
            inv = 0.0
            for f, w in dests.get(x, {}).items():
                if w > 0 and pair_yields.get((x, f)):
                    vc = sum(max(st["flow_s"][a], 0) * ratio.get((a, b), 0.0) for a, b in pair_yields[x, f])
                    cap = (3600 / est.GIVE_WAY_FOLLOW_UP_S if vc < 1 else vc * math.exp(-vc * est.GIVE_WAY_CRITICAL_GAP_S / 3600)
                           / (1 - math.exp(-vc * est.GIVE_WAY_FOLLOW_UP_S / 3600)))
                    inv += lane_split(x, f, w) / cap
            if inv > 0 and v > 0:
                c, T = 1 / inv, est.GIVE_WAY_PERIOD_H
                wait = 900 * T * ((v / c - 1) + math.sqrt((v / c - 1) ** 2 + 3600 / c * (v / c) / (450 * T)))
                total += v * wait / 3600
        return total

    spilled = {}
    for i in E:
        if queue_now[i] is None:
            sp = 0.0
            for f in outof[i]:
                if spill[f] > 0:
                    share = y.get((i, f), 0.0) / s_in(f) if s_in(f) > 1e-9 else 1 / max(len(into[f]), 1)
                    sp += spill[f] * min(max(share, 0.0), 1.0)
            spilled[i] = min(sp + give_way_queue(i), storage[i])
    for e in E:
        q = max(st["flow_s"][e], 0)
        if e in spilled:
            queue_now[e] = spilled[e]
        st["queue_s"][e] += a * (queue_now[e] - st["queue_s"][e])
        out["t", e] = (q, st["queue_s"][e], *edge_conditions(net, e, q, st["queue_s"][e], est))
        st["acc_flow"][e] += x[e] * dt
        st["acc_queue"][e] += queue_now[e] * dt
        n = len(lanes_of[e])
        for ln in lanes_of[e]:
            if not lane_observed[ln]:
                zone = min(net.edge_length_m[e], est.CAMERA_RANGE_M)
                moving = q * max(zone - st["queue_s"][e] * est.JAM_SPACING_M / n, 0) / max(net.edge_speed_mps[e], 0.5) / 3600
                out["lane", ln] = (st["queue_s"][e] / n, (st["queue_s"][e] + moving) / n, q / n)
    st["acc_time"] += dt
    if st["minute_done"]:
        per_lane = sorted(out["m", e][0] / len(lanes_of[e]) for e in E if observed[e] and lanes_of[e])
        if per_lane:
            k = len(per_lane)
            typical = per_lane[k // 2] if k % 2 else 0.5 * (per_lane[k // 2 - 1] + per_lane[k // 2])
            first = not st.get("prior_set")
            st["prior"] = typical if first else st["prior"] + min(1, 60 / est.PRIOR_TAU_S) * (typical - st["prior"])
            st["prior_set"] = True
    return observed, out


def fastest_route(net, tt, origin, destination):
    """(travel time, edge ids) of the fastest route between edge or junction ids, Dijkstra by hand
    over edges linked by lane connections."""
    import heapq

    nxt = {}
    for m in range(net.n_movements):
        a, b = int(net.lane_edge[net.move_in_lane[m]]), int(net.lane_edge[net.move_out_lane[m]])
        if a != b:
            nxt.setdefault(a, set()).add(b)
    if origin in net.edge_index:
        starts = [net.edge_index[origin]]
    else:
        starts = [e for e in range(net.n_edges) if net.junction_ids[net.edge_from[e]] == origin]
    if destination in net.edge_index:
        goal = {net.edge_index[destination]}
    else:
        goal = {e for e in range(net.n_edges) if net.junction_ids[net.edge_to[e]] == destination}
    heap = [(float(tt[e]), e, (e,)) for e in starts]
    heapq.heapify(heap)
    done = set()
    while heap:
        d, e, path = heapq.heappop(heap)
        if e in done:
            continue
        done.add(e)
        if e in goal:
            return d, [net.edge_ids[x] for x in path]
        for f in nxt.get(e, ()):
            if f not in done:
                heapq.heappush(heap, (d + float(tt[f]), f, path + (f,)))
    return None


def _phase_lanes(net, p):
    return [int(net.move_in_lane[m]) for link in phase_links(net, p)
            for m in net.link_move_idx[net.link_move_ptr[link]:net.link_move_ptr[link + 1]]]


def actuated(net, obs, vehicles, healthy, target, active, active_since, now, min_green, max_green, gap, fail_after,
             last_report, last_extend):
    """One actuated decision: gap-out / max-out, next phase in ring order with a call, recall on
    failed lanes. ``last_report`` (per lane) and ``last_extend`` (per signal) are updated."""
    call, extend = [], []
    for i in range(net.n_lanes):
        if obs.stop_seen[i] or obs.upstream_seen[i] or obs.camera_vehicles[i] == obs.camera_vehicles[i]:
            last_report[i] = now
        if not healthy[i] or now - last_report[i] > fail_after:
            call.append(True)
            extend.append(True)
            continue
        passing = obs.stop_count[i] > 0 or obs.upstream_count[i] > 0
        occupied = obs.stop_occupancy[i] > 0  # (NaN compares false)
        call.append(passing or vehicles[i] >= 0.5 or occupied)
        extend.append(passing)
    for t in range(net.n_tls):
        p0, p1 = int(net.tls_phase_ptr[t]), int(net.tls_phase_ptr[t + 1])
        if p0 == p1:
            target[t] = -1
            continue
        cur = target[t]
        if not (p0 <= cur < p1):
            target[t], last_extend[t] = p0, now
            continue
        if active[t] != cur:
            last_extend[t] = now
            continue
        if any(extend[x] for x in _phase_lanes(net, cur)):
            last_extend[t] = now
        age = now - active_since[t]
        if age < min_green or (now - last_extend[t] < gap and age < max_green):
            continue
        n = p1 - p0
        for k in range(1, n):
            p = p0 + (cur - p0 + k) % n
            if net.phase_in_cycle[p] and any(call[x] for x in _phase_lanes(net, p)):
                target[t] = p
                break


def adaptive_weights(net, obs, vehicles, queue, flow, healthy, has, now, dt, mem, cfg):
    """Per lane (weight, extends, trusted, standing) as controllers.adaptive says it in words;
    ``has`` = (has_camera, has_stop_loop, has_upstream_loop); ``mem`` (dict of per-lane lists:
    seen_cam, seen_stop, seen_up, last_stop_count, cam_last, cam_changed, cam_blind, w_avg, and
    arrivals, which the decision resets) is updated."""
    entry = {int(net.move_in_lane[m]) for m in range(net.n_movements) if net.move_link[m] >= 0}
    a = min(1.0, dt / cfg.average_tau_s)
    fail, stuck = 1e9 * cfg.fail_after_s, 1e9 * cfg.stuck_after_s
    out = []
    for i in range(net.n_lanes):
        cam = obs.camera_vehicles[i] == obs.camera_vehicles[i]
        for key, seen in (("seen_cam", cam), ("seen_stop", obs.stop_seen[i]), ("seen_up", obs.upstream_seen[i])):
            if seen:
                mem[key][i] = now
        if obs.stop_count[i] > 0 or not obs.stop_occupancy[i] > 0:
            mem["last_stop_count"][i] = now
        cam_before = mem["cam_last"][i]
        if cam:
            if obs.camera_vehicles[i] != mem["cam_last"][i] or obs.camera_vehicles[i] == 0:
                mem["cam_changed"][i] = now
            mem["cam_last"][i] = obs.camera_vehicles[i]
            if obs.camera_vehicles[i] > 0:
                mem["cam_blind"][i] = 0.0
            else:
                mem["cam_blind"][i] += obs.stop_count[i] + obs.upstream_count[i]
        w = queue[i] + cfg.moving_weight * max(vehicles[i] - queue[i], 0.0)
        if i not in entry:
            out.append((w, False, True, queue[i] >= 0.5, w))
            continue
        stop_ok = (has[1][i] and now - mem["seen_stop"][i] <= fail and now - mem["last_stop_count"][i] < stuck
                   and healthy[i])
        up_ok = has[2][i] and now - mem["seen_up"][i] <= fail and healthy[i]
        if has[0][i] and now - mem["seen_cam"][i] <= fail:  # a camera reporting: judged by its readings
            ok = now - mem["cam_changed"][i] < stuck and mem["cam_blind"][i] < cfg.blind_veh
        else:  # no camera, or a silent one: the two loops
            ok = stop_ok and up_ok
        ok = ok and healthy[i]
        passing = (stop_ok and obs.stop_count[i] > 0) or (up_ok and obs.upstream_count[i] > 0)
        if up_ok:
            mem["arrivals"][i] += obs.upstream_count[i]
        elif not ok:  # no loop counts what arrives: the estimated flow brings it
            mem["arrivals"][i] += flow[i] * dt / 3600.0
        if ok:
            mem["w_avg"][i] += a * (w - mem["w_avg"][i])
            if not stop_ok and not up_ok:
                passing = queue[i] >= 0.5
            # no working upstream loop, a camera that sees only this lane: a vehicle coming into its view
            left = obs.stop_count[i] if stop_ok else 0.0
            if (cam and not up_ok and net.lane_length_m[i] >= CAMERA_RANGE_M
                    and obs.camera_vehicles[i] + left > cam_before + 0.5):
                passing = True
            out.append((w, passing and (cfg.free_flow_extends or queue[i] >= 0.5), True, queue[i] >= 0.5, w))
        else:
            w_recall = max(mem["w_avg"][i], cfg.recall_veh, mem["arrivals"][i])
            if stop_ok and obs.stop_occupancy[i] > 0:  # somebody on its working stop-bar loop
                w_recall = max(w_recall, cfg.presence_veh)
            out.append((w_recall, passing, False, True, mem["w_avg"][i]))
    return out


def adaptive(net, w, w_exit, extend, standing, queue, discharged, target, active, active_since, now, cfg, last_extend, served,
             fresh, platoon, mem, shown=None):
    """One adaptive decision on lane weights ``w``, extensions ``extend`` and standing queues;
    ``fresh`` (per signal: a green is starting) and ``platoon`` (per lane: what is left of the
    queue the green found) are updated. ``shown`` (per link, the safety stage's state; None:
    all shown): a link of the phase shown is served only while it is not red."""
    hold, max_green, gap = cfg.min_hold_s * 1e9, cfg.max_green_s * 1e9, cfg.gap_s * 1e9
    for t in range(net.n_tls):
        p0, p1 = int(net.tls_phase_ptr[t]), int(net.tls_phase_ptr[t + 1])
        if p0 == p1:
            target[t] = -1
            continue
        pr = {p: phase_pressure(net, p, w, w_exit) for p in range(p0, p1)}
        # a phase whose links another phase shows as well runs only for optional_phase_veh of demand
        sets = {p: set(phase_links(net, p)) for p in range(p0, p1)}
        runs = {p: cfg.optional_phase_veh <= 0 or pr[p][1] >= cfg.optional_phase_veh
                or (sets[p] and not any(sets[p] < sets[q] or (sets[p] == sets[q] and q < p)
                                        for q in range(p0, p1) if q != p))
                for p in range(p0, p1)}
        if cfg.optional_phase_veh > 0 and not any(sets[p] and not any(
                sets[p] < sets[q] or (sets[p] == sets[q] and q < p) for q in range(p0, p1) if q != p)
                for p in range(p0, p1)):
            runs[p0] = True
        cur = target[t]
        if not (p0 <= cur < p1):
            eligible = [p for p in range(p0, p1) if runs[p]] or [p0]
            target[t] = max(eligible, key=lambda p: (pr[p][0], -p))
            last_extend[t] = now
            continue
        if active[t] != cur:
            last_extend[t] = now
            fresh[t] = True
            continue
        for link in phase_links(net, cur):
            if shown is None or shown[link] != RED:
                served[link] = now
        lanes = set(_phase_lanes(net, cur))
        for x in lanes:
            mem["arrivals"][x] = 0.0
            platoon[x] = queue[x] if fresh[t] else platoon[x] - discharged[x]
        fresh[t] = False
        queued = any(standing[x] or platoon[x] >= 0.5 for x in lanes)
        if any(extend[x] for x in lanes):
            last_extend[t] = now
        age = now - active_since[t]
        if age < hold:
            continue
        waiting = [link for link in signal_links(net, t)
                   if now - served[link] >= cfg.max_wait_s * 1e9
                   and any(w[net.move_in_lane[m]] > 0
                           for m in net.link_move_idx[net.link_move_ptr[link]:net.link_move_ptr[link + 1]])]
        if waiting:
            starved = min(waiting, key=lambda link: (served[link], link))
            serving = [p for p in range(p0, p1) if starved in phase_links(net, p)]
            target[t] = max(serving, key=lambda p: (pr[p][0], -p))
            mem.setdefault("bridge_to", {})[t] = -1
            continue
        others = [p for p in range(p0, p1) if p != cur and pr[p][1] > 0 and runs[p]]
        bridged = mem.setdefault("bridge_to", {}).get(t, -1)  # this green bridges to that phase
        if bridged >= 0 and bridged != cur and pr[bridged][1] > 0:
            others = [bridged]
        if not others:
            continue
        best = max(others, key=lambda p: (pr[p][0], -p))
        if (now - last_extend[t] >= gap or age >= max_green or pr[cur][1] <= 0
                or (cfg.switch_ratio > 0 and pr[best][0] > cfg.switch_ratio * max(pr[cur][0], 1.0))
                or (cfg.early_switch_veh > 0 and not queued and pr[best][0] >= cfg.early_switch_veh)):
            via = None
            if cfg.bridge_veh >= 0 and bridged < 0:  # through a stage the green contains, if it has the demand
                via = next((q for q in range(p0, p1) if q != best and sets[q] and sets[q] < sets[cur]
                            and pr[q][1] >= cfg.bridge_veh), None)
            mem["bridge_to"][t] = -1 if via is None else best
            target[t] = best if via is None else via


def scats_plan(net, t, lane_demand, elapsed, y_s, cycle_prev, intergreen, cfg):
    """SCATS-style re-plan of signal t at cycle end: (new smoothed y per phase, wanted cycle).
    Phases whose links another phase of the signal also shows are not run (their y stays 0), nor
    are lane phases (``phase_in_cycle`` false)."""
    _, n_from, _ = _movement_counts(net)
    every = list(range(int(net.tls_phase_ptr[t]), int(net.tls_phase_ptr[t + 1])))
    sets = {p: set(phase_links(net, p)) if net.phase_in_cycle[p] else set() for p in every}
    phases = [p for p in every if sets[p] and not any(sets[p] < sets[q] or (sets[p] == sets[q] and q < p)
                                                      for q in every if q != p)] or every[:1]
    headway = 3600.0 / cfg.saturation_flow_vph
    ys = {}
    for p in phases:
        y = max([lane_demand[a] * (1.0 / n_from[a]) * headway / elapsed for a in _phase_lanes(net, p)], default=0.0)
        ys[p] = y_s[p] + cfg.smoothing * (y - y_s[p])
    for p in every:
        ys.setdefault(p, y_s[p])  # (0 throughout)
    lost = sum(intergreen[p] for p in phases)
    cycle = (1.5 * lost + 5) / (1 - min(sum(ys.values()), cfg.max_degree_of_saturation))
    if cycle_prev > 0:
        cycle = min(max(cycle, cycle_prev - cfg.cycle_step_s), cycle_prev + cfg.cycle_step_s)
    floor = lost + len(phases) * cfg.min_green_s
    return ys, min(max(cycle, cfg.cycle_min_s, floor), max(cfg.cycle_max_s, floor))
