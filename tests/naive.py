"""Plain-Python references for the kernels: slow, obvious, and what the kernels must match."""

from __future__ import annotations

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


def max_pressure(net, lane_w, target, active, active_since, now, hold, max_green, max_wait, served):
    """One max-pressure decision; ``served`` (link -> last time it was green in the active phase)
    is updated."""
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
    """(cycle, [green per phase]) of signal t by Webster's method; ``intergreen`` per phase."""
    phases = range(int(net.tls_phase_ptr[t]), int(net.tls_phase_ptr[t + 1]))
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
    return sum(g + intergreen[p] for g, p in zip(greens, phases)), greens


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
            if any(call[x] for x in _phase_lanes(net, p)):
                target[t] = p
                break


def adaptive_weights(net, obs, vehicles, queue, healthy, has, now, dt, mem, cfg):
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
        if has[0][i]:
            ok = (now - mem["seen_cam"][i] <= fail and now - mem["cam_changed"][i] < stuck
                  and mem["cam_blind"][i] < cfg.blind_veh)
        else:
            ok = stop_ok and up_ok
        ok = ok and healthy[i]
        passing = (stop_ok and obs.stop_count[i] > 0) or (up_ok and obs.upstream_count[i] > 0)
        if up_ok:
            mem["arrivals"][i] += obs.upstream_count[i]
        if ok:
            mem["w_avg"][i] += a * (w - mem["w_avg"][i])
            if not stop_ok and not up_ok:
                passing = queue[i] >= 0.5
            out.append((w, passing and (cfg.free_flow_extends or queue[i] >= 0.5), True, queue[i] >= 0.5, w))
        else:
            out.append((max(mem["w_avg"][i], cfg.recall_veh, mem["arrivals"][i]), passing, False, True,
                        mem["w_avg"][i]))
    return out


def adaptive(net, w, w_exit, extend, standing, queue, discharged, target, active, active_since, now, cfg, last_extend, served,
             fresh, platoon, mem):
    """One adaptive decision on lane weights ``w``, extensions ``extend`` and standing queues;
    ``fresh`` (per signal: a green is starting) and ``platoon`` (per lane: what is left of the
    queue the green found) are updated."""
    hold, max_green, gap = cfg.min_hold_s * 1e9, cfg.max_green_s * 1e9, cfg.gap_s * 1e9
    for t in range(net.n_tls):
        p0, p1 = int(net.tls_phase_ptr[t]), int(net.tls_phase_ptr[t + 1])
        if p0 == p1:
            target[t] = -1
            continue
        pr = {p: phase_pressure(net, p, w, w_exit) for p in range(p0, p1)}
        cur = target[t]
        if not (p0 <= cur < p1):
            target[t] = max(range(p0, p1), key=lambda p: (pr[p][0], -p))
            last_extend[t] = now
            continue
        if active[t] != cur:
            last_extend[t] = now
            fresh[t] = True
            continue
        for link in phase_links(net, cur):
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
            continue
        others = [p for p in range(p0, p1) if p != cur and pr[p][1] > 0]
        if not others:
            continue
        best = max(others, key=lambda p: (pr[p][0], -p))
        if (now - last_extend[t] >= gap or age >= max_green or pr[cur][1] <= 0
                or (cfg.switch_ratio > 0 and pr[best][0] > cfg.switch_ratio * max(pr[cur][0], 1.0))
                or (cfg.early_switch_veh > 0 and not queued and pr[best][0] >= cfg.early_switch_veh)):
            target[t] = best


def scats_plan(net, t, lane_demand, elapsed, y_s, cycle_prev, intergreen, cfg):
    """SCATS-style re-plan of signal t at cycle end: (new smoothed y per phase, wanted cycle).
    Phases whose links another phase of the signal also shows are not run (their y stays 0)."""
    _, n_from, _ = _movement_counts(net)
    every = list(range(int(net.tls_phase_ptr[t]), int(net.tls_phase_ptr[t + 1])))
    sets = {p: set(phase_links(net, p)) for p in every}
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
