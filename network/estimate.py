"""The estimation stage: traffic state on every lane and every edge, observed or not.

Per lane (``_estimate_lanes``): vehicles near the stop line (what pressure-based control
weighs), the standing queue, smoothed flow and speed. A camera gives vehicles and queue
directly; where only loops exist the lane's content is a storage balance (upstream count in,
stop-bar count out), plus the vehicle standing on the stop-bar loop: the loop counts a vehicle
as it reaches it, so the first of a queue at a red would otherwise be gone from the balance
while it waits there (on grid4x4 with every camera silent, adaptive's mean time loss was 41.9 s
without it, 28.2 s with it, against 24.2 s with the cameras; 28 Nov). Speed comes from the loop
where it measures it (double loop, camera), otherwise from occupancy and an effective vehicle
length (single loop): ``v = n L / (occ dt)``.

Per edge (``_estimate_edges``), every tick:

1. An edge is *observed* this tick when every lane of it has a counting loop that reported; its
   flow is the count over the tick (veh/h, not smoothed). Its queue is measured when every lane
   has a camera. A camera that sees past a short lane (shorter than its ``CAMERA_RANGE_M``)
   counts the standing vehicles upstream too; they are the lane's queue only while its stop-bar
   loop is held (occupied ``ANCHOR_OCCUPANCY`` of the tick: a vehicle stands at the stop line).
   Otherwise they wait for something else upstream, a give-way line for instance, and count
   neither on the edge nor as its spill.
2. Turning ratios ``R[t]`` (share of edge ``i``'s flow that turns into edge ``e``): from the lane
   structure, a lane's flow splits among the edges its connections reach (weighted by direction:
   straight ``STRAIGHT_WEIGHT``, turns 1, U-turns 0: ``DIRECTION_WEIGHT``) and the lanes
   of an edge share its flow as their measured stop-line flows do; where the edge is not
   observed, as the likeliest direction of each lane weighs (``lane_prior``: a through lane
   carries ``STRAIGHT_WEIGHT`` times a turn lane; evenly, grid4x4's turn lanes took a third of
   the flow each). A shared lane learns its own split from which movements the signals serve: a
   vehicle its stop-bar loop counts while its signal lets exactly one of its movements go
   (green, yellow, or a red that means "stop, then go"; a movement without a signal always may)
   took that movement. These counts, decayed over ``RATIO_TAU_S``, replace the direction weights
   as ``(c_j + P w_j / sum w) / (sum c + P)`` with ``P = LANE_SPLIT_PRIOR_VEH`` (the camera
   prior's weight, as vehicles); counts while several of its movements may go tell nothing.
   Where cameras count movements on the edge, their counts smoothed over ``RATIO_TAU_S`` take
   over (``R = (m_t + RATIO_PRIOR_VPH * structure) / (sum m + RATIO_PRIOR_VPH)``).
3. Flows of unobserved edges come from the *turn flows* ``y_t`` (veh/h through each turn
   ``i -> e``), solved in the weighted least-squares sense from: what leaves an observed edge
   through its turns is its count, and what enters it too (``COUNT_WEIGHT``); an unobserved
   edge passes on what it receives (``BALANCE_WEIGHT``); a movement a camera counts this tick
   (``CAMERA_WEIGHT``); each edge's exits split as its turning ratios say
   (``y_t = R_t sum_out y``, ``SPLIT_WEIGHT``: weak, since a split nothing counts is a guess);
   and a weak prior (``PRIOR_WEIGHT``) towards the network's typical flow per lane for what
   nothing determines (the median over the counted edges of their minute flows per lane,
   smoothed over ``PRIOR_TAU_S``: the mean would follow the arterials). So the demand at the network's boundary (edges without predecessors) is
   what the observed edges downstream receive, without dividing by a guessed turning share.
   U-turns carry no flow in these equations: where the only way on is turning back (a dead end
   at the network's edge) trips end and begin. An unobserved edge's flow is then the mean of
   what its turns bring and take (either alone where it has only one side). The solver is
   ``SWEEPS`` Gauss-Seidel sweeps over the turns per tick, warm-started from the previous
   tick: an information filter whose state carries over time, so a tick's noisy counts are
   smoothed over the following ticks. Everything is linear, so the mean of the per-tick
   estimates over a minute is the estimate of the minute's flow. A turn flow may go negative
   on purpose: clipping it at zero (projected Gauss-Seidel) rectifies the noise of one-second
   counts (0 or 3,600 veh/h per vehicle), and unobserved flow MAPE at 50 % coverage went from
   14.5-45.6 % to 45.8-296.7 % over the eight RESCO scenarios (30 minutes, 28 Nov); fitting
   counts smoothed over 60 s with the clip was mixed (cologne8 36.5 -> 35.0, grid4x4 25.1 ->
   22.4, cologne1 45.6 -> 57.3, cologne3 25.2 -> 31.6, ingolstadt7 14.5 -> 19.6).
4. Queues of unobserved edges: signalised approaches are point queues, one per lane (the
   estimated flow shared among the lanes as in step 2, each discharging while its own signal
   shows green, what the safety stage showed last tick: a green turn lane does not empty a red
   through lane). A lane discharges at saturation flow times the share of its flow (its split of step 2)
   whose movements show green: a vehicle for a red movement at its head holds the others. An
   edge holds ``floor(L n / JAM_SPACING_M)`` standing vehicles; what a measured or point queue
   has beyond that (a point queue up to ``spill_caps``: what the edge and its feeders hold, at
   least ``SPILL_STORAGES`` times the edge) spills back onto the unsignalised edges feeding it,
   shared as their turn flows into it. An edge without a camera whose movements give way at a
   junction without a signal (the network's right of way: ``yields_to``) also holds, per lane,
   the queue of its flow against its gap-acceptance capacity through the streams it gives way
   to (``_give_way_queue``: critical gap ``GIVE_WAY_CRITICAL_GAP_S``, follow-up
   ``GIVE_WAY_FOLLOW_UP_S``, the HCM's values for a minor street; the HCM delay formula over
   ``GIVE_WAY_PERIOD_H``). Other unobserved edges have none.
5. Conditions from flow ``q`` and queue ``Q``: travel time ``(L - Q s / n) / v_c + Q / q``
   (cruise over the free part, then by Little's law the mean wait of a vehicle in the queue),
   space-mean speed ``L / tt``, density ``q tt / L``; for signalised approaches the control delay
   ``tt - L / v_free`` and HCM level of service (A <= 10 s, B <= 20, C <= 35, D <= 55, E <= 80,
   F above or when the queue fills the edge). A measured queue longer than the edge (a camera
   that sees into the lanes before a short edge) counts on the edge only up to what it holds.

The feed values are smoothed over ``EDGE_TAU_S``; per minute, block means of flow and queue
over the last completed minute, and the conditions of those means (``NetworkState.minute_*``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from network.compiled import CompiledNetwork

JAM_SPACING_M = 7.5  # metres of lane per queued vehicle
FLOW_TAU_S = 300.0  # smoothing time constant of lane flows
SPEED_TAU_S = 30.0
CAMERA_RANGE_M = 100.0
ANCHOR_OCCUPANCY = 0.9  # stop-bar loop occupancy over a tick that means a vehicle stands on it
EFFECTIVE_VEHICLE_LENGTH_M = 5.5  # vehicle plus loop length, for speed from occupancy (g-factor)
EDGE_TAU_S = 60.0  # smoothing of the per-tick edge conditions
PRIOR_WEIGHT = 0.01
PRIOR_TAU_S = 300.0
COUNT_WEIGHT = 1.0  # what leaves (enters) an observed edge through its turns is its count
BALANCE_WEIGHT = 1.0  # an unobserved edge passes on what it receives
CAMERA_WEIGHT = 1.0  # a movement a camera counts
SPLIT_WEIGHT = 0.1  # the split of an edge's exits by its turning ratios: guessed where not counted
SWEEPS = 2  # Gauss-Seidel sweeps of the flow solver per tick
SATURATION_VPH_PER_LANE = 1800.0
SPILL_STORAGES = 3.0  # a point queue grows to at least this many times what its edge holds (``spill_caps``)
CRUISE_FACTOR = 0.9  # mean running speed over the free part of an edge, relative to the limit
MIN_DELAY_FLOW_VPH = 60.0  # flow below which Little's law no longer gives a usable wait
GIVE_WAY_CRITICAL_GAP_S = 6.5  # gap acceptance at junctions without a signal (``_give_way_capacity``)
GIVE_WAY_FOLLOW_UP_S = 3.5
GIVE_WAY_PERIOD_H = 0.25  # analysis period of the HCM delay formula
MINUTE_NS = 60 * 10**9
# prior weight of a connection by SUMO direction (s straight, r/l right/left, R/L partial, t U-turn)
STRAIGHT_WEIGHT = 2.0  # through traffic is the likelier way out of a shared lane
DIRECTION_WEIGHT = {"s": STRAIGHT_WEIGHT, "t": 0.0}  # a U-turn carries no flow in the conservation
RATIO_TAU_S = 300.0  # smoothing of camera movement counts into turning shares
RATIO_PRIOR_VPH = 30.0  # weight of the lane-structure shares against measured movement flows
LANE_SPLIT_PRIOR_VEH = RATIO_PRIOR_VPH * RATIO_TAU_S / 3600.0  # the same against a shared lane's attributed counts
LOS_LETTERS = "ABCDEF"
LOS_LIMITS_S = (10.0, 20.0, 35.0, 55.0, 80.0)  # HCM control delay thresholds of A..E


@dataclass
class NetworkState:
    """Per-lane and per-edge estimates; arrays are owned by the estimator and updated in place."""

    lane_vehicles: np.ndarray  # float64[n_lanes] vehicles within the last ~100 m
    lane_queue_veh: np.ndarray  # float64[n_lanes] standing vehicles
    lane_flow_vph: np.ndarray  # float64[n_lanes] smoothed stop-line flow
    lane_speed_mps: np.ndarray  # float64[n_lanes]
    lane_observed: np.ndarray  # bool[n_lanes] some detector reported this tick
    edge_flow_vph: np.ndarray  # float64[n_edges] smoothed over EDGE_TAU_S
    edge_speed_mps: np.ndarray  # space-mean speed
    edge_density_vpkm: np.ndarray  # vehicles per km of edge (all lanes)
    edge_queue_veh: np.ndarray
    edge_travel_time_s: np.ndarray
    edge_delay_s: np.ndarray  # control delay per vehicle (signalised approaches; NaN elsewhere)
    edge_los: np.ndarray  # int8 0..5 = A..F (signalised approaches; -1 elsewhere)
    edge_observed: np.ndarray  # bool[n_edges] flow counted by detectors this tick
    edge_flow_now_vph: np.ndarray  # the solver's flow for this tick alone (unsmoothed)
    minute_end_ns: int  # end of the last completed minute (0: none yet)
    minute_flow_vph: np.ndarray
    minute_speed_mps: np.ndarray
    minute_density_vpkm: np.ndarray
    minute_queue_veh: np.ndarray
    minute_travel_time_s: np.ndarray
    minute_delay_s: np.ndarray
    minute_los: np.ndarray


@njit(cache=True)
def _estimate_lanes(dt, stop_count, stop_seen, stop_occ, up_count, up_seen, speed, cam_veh, cam_queue,
                    lane_len, free_speed, vehicles, queue, flow, spd, observed, held):
    a_flow = min(1.0, dt / FLOW_TAU_S)
    a_speed = min(1.0, dt / SPEED_TAU_S)
    for i in range(vehicles.size):
        seen = False
        if stop_seen[i]:
            seen = True
            flow[i] += a_flow * (stop_count[i] * 3600.0 / dt - flow[i])
        v = speed[i]
        if np.isnan(v) and stop_seen[i] and stop_count[i] > 0 and stop_occ[i] > 0:
            # single loop: speed from occupancy with an effective vehicle length
            v = min(stop_count[i] * EFFECTIVE_VEHICLE_LENGTH_M / (stop_occ[i] * dt), 2.0 * free_speed[i])
        if not np.isnan(v):
            spd[i] += a_speed * (v - spd[i])
        cap = max(1.0, min(lane_len[i], CAMERA_RANGE_M) / JAM_SPACING_M)
        if not np.isnan(cam_veh[i]):
            seen = True
            vehicles[i] = cam_veh[i]
            queue[i] = cam_queue[i]
            held[i] = 0.0
        elif up_seen[i] and stop_seen[i]:
            seen = True
            # the stop-bar loop counts a vehicle when it reaches the loop; one standing on it (the
            # loop held the tick) is still there, and stays in the content (``held``) until it leaves
            h = 1.0 if stop_occ[i] >= ANCHOR_OCCUPANCY else 0.0
            n = min(max(vehicles[i] - held[i] + up_count[i] - stop_count[i], 0.0), cap)
            held[i] = h
            vehicles[i] = min(n + h, cap)
            queue[i] = vehicles[i] if stop_count[i] == 0 and vehicles[i] > 0 else 0.5 * vehicles[i]
        if np.isnan(v):
            # no speed measured: a standing queue slows the lane, an empty one runs free
            target = free_speed[i] * (1.0 - min(1.0, queue[i] / cap))
            spd[i] += a_speed * (max(target, 0.5) - spd[i])
        observed[i] = seen


@njit(cache=True, inline="always")
def _conditions(q, Q, length, nlanes, vfree, signal, storage):
    """(travel time, speed, density, delay, LOS) of an edge from flow ``q`` and queue ``Q``."""
    vc = max(vfree * CRUISE_FACTOR, 0.5)
    free_part = max(length - Q * JAM_SPACING_M / nlanes, 0.0)
    t = free_part / vc + Q * 3600.0 / max(q, MIN_DELAY_FLOW_VPH)
    t = min(max(t, length / max(vfree * 1.2, 0.5)), length / 0.5)
    density = max(q, 0.0) * t / 3600.0 / max(length, 1.0) * 1000.0
    if Q > 0 and density < Q / max(length, 1.0) * 1000.0:
        density = Q / max(length, 1.0) * 1000.0
    if not signal:
        return t, length / t, density, np.nan, -1
    d = max(t - length / max(vfree, 0.5), 0.0)
    k = 0
    while k < 5 and d > LOS_LIMITS_S[k]:
        k += 1
    if Q >= 0.9 * max(storage, 1.0):
        k = 5
    return t, length / t, density, d, k


@njit(cache=True, inline="always")
def _may_go(j, lt_link_ptr, lt_link_idx, link_mask):
    """Whether (lane, turn) pair ``j`` may go where ``link_mask`` holds: some signal link of its
    connections does, or it has none (a movement without a signal always may)."""
    if lt_link_ptr[j + 1] == lt_link_ptr[j]:
        return True
    for k in range(lt_link_ptr[j], lt_link_ptr[j + 1]):
        if link_mask[lt_link_idx[k]]:
            return True
    return False


@njit(cache=True, inline="always")
def _lane_part(e, ln, edge_lane_ptr, exit_lanes, lane_share):
    """The share of edge ``e``'s flow on its lane ``ln``: step 2's, evenly where no lane has exits."""
    return lane_share[ln] if exit_lanes[e] > 0 else 1.0 / max(edge_lane_ptr[e + 1] - edge_lane_ptr[e], 1)


@njit(cache=True, inline="always")
def _green_share(ln, lane_lt_ptr, lt_weight, lt_share, lt_link_ptr, lt_link_idx, link_green):
    """The share of lane ``ln``'s flow whose movement shows green (or has no signal): the rate
    at which a green lane discharges, since a vehicle for a red movement at its head holds the
    vehicles behind it. 1 for a lane without (flowing) turns."""
    frac = 0.0
    n = 0
    for j in range(lane_lt_ptr[ln], lane_lt_ptr[ln + 1]):
        if lt_weight[j] <= 0:
            continue
        n += 1
        if _may_go(j, lt_link_ptr, lt_link_idx, link_green):
            frac += lt_share[j]
    return frac if n > 0 else 1.0


@njit(cache=True, inline="always")
def _give_way_capacity(vc):
    """Gap acceptance: vehicles per hour that can enter through a stream of ``vc`` veh/h they give
    way to (Siegloch, as the HCM: ``vc e^(-vc tc) / (1 - e^(-vc tf))``)."""
    if vc < 1.0:
        return 3600.0 / GIVE_WAY_FOLLOW_UP_S
    return vc * np.exp(-vc * GIVE_WAY_CRITICAL_GAP_S / 3600.0) / (1.0 - np.exp(-vc * GIVE_WAY_FOLLOW_UP_S / 3600.0))


@njit(cache=True)
def _give_way_queue(e, flow_s, edge_lane_ptr, edge_lane_idx, exit_lanes, lane_share, lane_lt_ptr, lt_weight, lt_share,
                    lt_yield_ptr, lt_yield_idx, turn_from, R):
    """Vehicles waiting on edge ``e`` to give way at a junction without a signal: per lane, its flow
    against the capacity its movements have through the streams they give way to (each stream
    its source edge's smoothed flow times its turning ratio; a shared lane at the harmonic mean
    of its movements' capacities as its split weighs them), by the HCM delay formula over
    ``GIVE_WAY_PERIOD_H`` (the M/M/1 wait below capacity, growing past it) and Little's law."""
    q = max(flow_s[e], 0.0)
    total = 0.0
    for k in range(edge_lane_ptr[e], edge_lane_ptr[e + 1]):
        ln = edge_lane_idx[k]
        v = q * _lane_part(e, ln, edge_lane_ptr, exit_lanes, lane_share)
        inv = 0.0
        for j in range(lane_lt_ptr[ln], lane_lt_ptr[ln + 1]):
            if lt_weight[j] <= 0 or lt_yield_ptr[j + 1] == lt_yield_ptr[j]:
                continue
            vc = 0.0
            for m in range(lt_yield_ptr[j], lt_yield_ptr[j + 1]):
                t = lt_yield_idx[m]
                vc += max(flow_s[turn_from[t]], 0.0) * R[t]
            inv += lt_share[j] / _give_way_capacity(vc)
        if inv <= 0.0 or v <= 0.0:
            continue
        c = 1.0 / inv
        x = v / c
        T = GIVE_WAY_PERIOD_H
        wait = 900.0 * T * ((x - 1.0) + np.sqrt((x - 1.0) ** 2 + 3600.0 / c * x / (450.0 * T)))
        total += v * wait / 3600.0
    return total


@njit(cache=True)
def _estimate_edges(
    dt, minute_done,
    # this tick's lane data
    stop_count, stop_seen, stop_occ, up_count, up_seen, cam_queue, lane_flow, link_green, link_open,
    # static arrays
    edge_lane_ptr, edge_lane_idx, lane_len, e_len, e_nlanes, e_vfree, e_signal, e_storage, e_spill_cap,
    turn_from, turn_to, tin_ptr, tin_idx, tout_ptr, tout_idx, lt_lane, lt_turn, lt_weight, lane_ndest, lane_wsum, lane_prior,
    lane_link_ptr, lane_link_idx, lane_lt_ptr, lt_link_ptr, lt_link_idx, e_give_way, lt_yield_ptr, lt_yield_idx,
    # solver state
    lt_cnt, lt_share, lane_share, R, Rs, slot_turn, slot_count, turn_now, turn_s, slots_seen, slots_all, exit_flow, exit_lanes, x, y, s_in, s_out, ra, rb, co1, co2, co3, cod, ci1, ci2, ci3, cid, cam, prior,
    # outputs and smoothed state
    lane_vehicles, lane_queue, lane_observed,
    observed, flow_now, flow_s, flow_pub, queue_now, lane_pq, spill, queue_s, tt, speed, density, delay, los,
    acc_flow, acc_queue, acc_time, m_flow, m_queue, m_tt, m_speed, m_density, m_delay, m_los,
):
    n_edges = x.size
    a = min(1.0, dt / EDGE_TAU_S)
    # 1. measured flow and queue; lane shares for the turning ratios
    for e in range(n_edges):
        n_count = 0
        n_cam = 0
        c = 0.0
        qsum = 0.0
        lanes = edge_lane_ptr[e + 1] - edge_lane_ptr[e]
        for k in range(edge_lane_ptr[e], edge_lane_ptr[e + 1]):
            ln = edge_lane_idx[k]
            if stop_seen[ln]:
                c += stop_count[ln]
                n_count += 1
            elif up_seen[ln]:
                c += up_count[ln]
                n_count += 1
            if not np.isnan(cam_queue[ln]):
                n_cam += 1
                # a camera that sees past a short lane counts standing vehicles upstream too:
                # they queue on this lane only when the queue reaches the stop line, where a
                # standing vehicle holds the stop-bar loop (elsewhere they wait for something else)
                if not (lane_len[ln] < CAMERA_RANGE_M and stop_seen[ln] and stop_occ[ln] < ANCHOR_OCCUPANCY):
                    qsum += cam_queue[ln]
        observed[e] = lanes > 0 and n_count == lanes
        if observed[e]:
            x[e] = c * 3600.0 / dt
        # a camera that sees past a short edge: the queue fills from the stop line, the rest is upstream
        queue_now[e] = min(qsum, e_storage[e]) if (lanes > 0 and n_cam == lanes) else -1.0
        spill[e] = max(qsum - e_storage[e], 0.0) if queue_now[e] >= 0 else 0.0
    # 2. turning ratios: the lane structure with measured lane flows (Rs), then camera movement counts (R)
    for e in range(n_edges):
        tot = 0.0
        n_exit = 0
        for k in range(edge_lane_ptr[e], edge_lane_ptr[e + 1]):
            m = edge_lane_idx[k]
            if lane_ndest[m] > 0:
                tot += lane_flow[m]
                n_exit += 1
        exit_flow[e] = tot
        exit_lanes[e] = n_exit
    # which movement a shared lane's stop-bar count belongs to: the one its signal alone lets go;
    # then the lane's split of its edge's flow (share of the edge's flow on the lane: measured
    # where the edge is observed) into the turns its connections make
    decay = np.exp(-dt / RATIO_TAU_S)
    Rs[:] = 0.0
    for ln in range(lane_lt_ptr.size - 1):
        lo, hi = lane_lt_ptr[ln], lane_lt_ptr[ln + 1]
        if hi == lo:
            continue
        n_open = 0
        j_open = -1
        n_flow = 0
        for j in range(lo, hi):
            lt_cnt[j] *= decay
            if lt_weight[j] <= 0:
                continue
            n_flow += 1
            if _may_go(j, lt_link_ptr, lt_link_idx, link_open):
                n_open += 1
                j_open = j
        if n_flow >= 2 and n_open == 1 and stop_seen[ln] and stop_count[ln] > 0:
            lt_cnt[j_open] += stop_count[ln]
        e = turn_from[lt_turn[lo]]
        if lane_ndest[ln] <= 0:
            share = 0.0
        elif observed[e] and exit_flow[e] > 0:
            share = lane_flow[ln] / exit_flow[e]
        else:
            share = lane_prior[ln]
        lane_share[ln] = share
        tot = 0.0
        for j in range(lo, hi):
            if lt_weight[j] > 0:
                tot += lt_cnt[j]
        for j in range(lo, hi):
            lt_share[j] = 0.0
            if lt_weight[j] > 0:
                prior_share = lt_weight[j] / lane_wsum[ln]
                if tot > 0.0:
                    lt_share[j] = (lt_cnt[j] + LANE_SPLIT_PRIOR_VEH * prior_share) / (tot + LANE_SPLIT_PRIOR_VEH)
                else:
                    lt_share[j] = prior_share
                Rs[lt_turn[j]] += share * lt_share[j]
    # measured turning shares: edges whose cameras count movements on every lane that has exits
    a_turn = min(1.0, dt / RATIO_TAU_S)
    for e in range(n_edges):
        slots_seen[e] = 0
        slots_all[e] = 0
    for j in range(slot_turn.size):
        t = slot_turn[j]
        if t >= 0:
            slots_all[turn_from[t]] += 1
            if not np.isnan(slot_count[j]):
                slots_seen[turn_from[t]] += 1
    turn_now[:] = 0.0
    for j in range(slot_turn.size):
        t = slot_turn[j]
        if t >= 0 and not np.isnan(slot_count[j]):
            turn_now[t] += slot_count[j] * 3600.0 / dt
    for i in range(n_edges):
        if slots_all[i] > 0 and slots_seen[i] == slots_all[i]:
            for k in range(tout_ptr[i], tout_ptr[i + 1]):
                t = tout_idx[k]
                turn_s[t] += a_turn * (turn_now[t] - turn_s[t])
        tot = 0.0
        for k in range(tout_ptr[i], tout_ptr[i + 1]):
            tot += turn_s[tout_idx[k]]
        for k in range(tout_ptr[i], tout_ptr[i + 1]):
            t = tout_idx[k]
            R[t] = (turn_s[t] + RATIO_PRIOR_VPH * Rs[t]) / (tot + RATIO_PRIOR_VPH)
    # 3. turn flows y (veh/h) by weighted least squares: what leaves an observed edge is its
    # count, what enters it too; an unobserved edge passes on what it receives; cameras count
    # movements; each edge's exits split as its turning ratios R say (weak); a weak prior pulls
    # an unobserved edge towards the typical flow per lane. Gauss-Seidel over the turns, warm-
    # started from the previous tick. Then an unobserved edge's flow is what its turns carry.
    for e in range(n_edges):
        s_in[e] = 0.0
        s_out[e] = 0.0
    for t in range(turn_from.size):
        s_in[turn_to[t]] += y[t]
        s_out[turn_from[t]] += y[t]
    # the split terms of edge i's exits through sums kept up to date: ra = sum R y, rb = sum R^2
    for i in range(n_edges):
        ra[i] = 0.0
        rb[i] = 0.0
        for k in range(tout_ptr[i], tout_ptr[i + 1]):
            t = tout_idx[k]
            ra[i] += R[t] * y[t]
            rb[i] += R[t] * R[t]
    # each edge's balance and prior terms, linear in what enters (s_in) and leaves (s_out) it:
    # for a turn out of the edge the gradient gains co1 s_out + co2 s_in + co3, for a turn into
    # it ci1 s_in + ci2 s_out + ci3 (the curvatures are cod, cid)
    for v in range(n_edges):
        p = prior[0] * e_nlanes[v]
        if observed[v]:
            co1[v], co2[v], co3[v], cod[v] = COUNT_WEIGHT, 0.0, -COUNT_WEIGHT * x[v], COUNT_WEIGHT
            ci1[v], ci2[v], ci3[v], cid[v] = COUNT_WEIGHT, 0.0, -COUNT_WEIGHT * x[v], COUNT_WEIGHT
        elif tin_ptr[v + 1] > tin_ptr[v] and tout_ptr[v + 1] > tout_ptr[v]:
            # BALANCE (s_in - s_out)^2 + PRIOR ((s_in + s_out) / 2 - p)^2, halved
            hi = BALANCE_WEIGHT + 0.25 * PRIOR_WEIGHT
            lo = -BALANCE_WEIGHT + 0.25 * PRIOR_WEIGHT
            co1[v], co2[v], co3[v], cod[v] = hi, lo, -0.5 * PRIOR_WEIGHT * p, hi
            ci1[v], ci2[v], ci3[v], cid[v] = hi, lo, -0.5 * PRIOR_WEIGHT * p, hi
        else:
            # a source or a sink: only the prior on what passes
            co1[v], co2[v], co3[v], cod[v] = PRIOR_WEIGHT, 0.0, -PRIOR_WEIGHT * p, PRIOR_WEIGHT
            ci1[v], ci2[v], ci3[v], cid[v] = PRIOR_WEIGHT, 0.0, -PRIOR_WEIGHT * p, PRIOR_WEIGHT
        cam[v] = CAMERA_WEIGHT if (slots_all[v] > 0 and slots_seen[v] == slots_all[v]) else 0.0
    for _ in range(SWEEPS):
        for i in range(n_edges):
            for k in range(tout_ptr[i], tout_ptr[i + 1]):
                t = tout_idx[k]
                e = turn_to[t]
                diag = cam[i] + cod[i] + cid[e]
                g = (cam[i] * (y[t] - turn_now[t]) + co1[i] * s_out[i] + co2[i] * s_in[i] + co3[i]
                     + ci1[e] * s_in[e] + ci2[e] * s_out[e] + ci3[e])
                # the split of the source edge's exits: y_s = R_s * s_out[i] for each exit s, i.e.
                # sum_s (y_s - R_s S)(delta_st - R_s) = (y_t - R_t S) - (sum R y - S sum R^2)
                diag += SPLIT_WEIGHT * (1.0 - 2.0 * R[t] + rb[i])
                g += SPLIT_WEIGHT * ((y[t] - R[t] * s_out[i]) - (ra[i] - s_out[i] * rb[i]))
                d = -g / diag
                y[t] += d
                s_out[i] += d
                s_in[e] += d
                ra[i] += R[t] * d
    for e in range(n_edges):
        if observed[e]:
            continue
        has_in = tin_ptr[e + 1] > tin_ptr[e]
        has_out = tout_ptr[e + 1] > tout_ptr[e]
        if has_in and has_out:
            x[e] = 0.5 * (s_in[e] + s_out[e])
        elif has_in:
            x[e] = s_in[e]
        elif has_out:
            x[e] = s_out[e]
        else:
            x[e] = prior[0] * e_nlanes[e]
    # the minute that ended with the last tick: conditions of its mean flow and queue
    if minute_done:
        T = max(acc_time[0], 1e-9)
        for e in range(n_edges):
            q = max(acc_flow[e] / T, 0.0)
            m_flow[e] = q
            m_queue[e] = acc_queue[e] / T
            m_tt[e], m_speed[e], m_density[e], m_delay[e], m_los[e] = _conditions(
                q, m_queue[e], e_len[e], e_nlanes[e], e_vfree[e], e_signal[e], e_storage[e])
            acc_flow[e] = 0.0
            acc_queue[e] = 0.0
        acc_time[0] = 0.0
    # 4. queues: measured, a point queue on signalised approaches, and on the other edges what
    # spills back from the queues of the edges they feed (beyond what those hold), shared as
    # the turn flows into them; then smoothing and conditions. Lanes without a detector get
    # their edge's estimate.
    for e in range(n_edges):
        flow_now[e] = x[e]
        flow_s[e] += a * (x[e] - flow_s[e])
        if queue_now[e] < 0 and e_signal[e]:
            # a point queue per lane: the edge's arrivals shared as in step 2, each lane discharging
            # while its own signal shows green (a green right-turn lane does not empty a red through lane)
            nl = max(edge_lane_ptr[e + 1] - edge_lane_ptr[e], 1)
            Q = 0.0
            for k in range(edge_lane_ptr[e], edge_lane_ptr[e + 1]):
                ln = edge_lane_idx[k]
                arrive = max(flow_s[e], 0.0) * _lane_part(e, ln, edge_lane_ptr, exit_lanes, lane_share)
                g = 1.0 if lane_link_ptr[ln + 1] == lane_link_ptr[ln] else 0.0  # no signal on this lane
                for j in range(lane_link_ptr[ln], lane_link_ptr[ln + 1]):
                    if link_green[lane_link_idx[j]]:
                        g = 1.0
                if g > 0.0:
                    g = _green_share(ln, lane_lt_ptr, lt_weight, lt_share, lt_link_ptr, lt_link_idx, link_green)
                qn = lane_pq[ln] + (arrive - SATURATION_VPH_PER_LANE * g) * dt / 3600.0
                lane_pq[ln] = min(max(qn, 0.0), e_spill_cap[e] / nl)
                Q += lane_pq[ln]
            queue_now[e] = min(Q, e_storage[e])
            spill[e] = Q - queue_now[e]
    for i in range(n_edges):
        if queue_now[i] < 0:
            sp = 0.0
            for k in range(tout_ptr[i], tout_ptr[i + 1]):
                t = tout_idx[k]
                e = turn_to[t]
                if spill[e] > 0:
                    n_in = tin_ptr[e + 1] - tin_ptr[e]
                    share = y[t] / s_in[e] if s_in[e] > 1e-9 else 1.0 / max(n_in, 1)
                    sp += spill[e] * min(max(share, 0.0), 1.0)
            if e_give_way[i]:
                sp += _give_way_queue(i, flow_s, edge_lane_ptr, edge_lane_idx, exit_lanes, lane_share, lane_lt_ptr,
                                      lt_weight, lt_share, lt_yield_ptr, lt_yield_idx, turn_from, R)
            queue_now[i] = -1.0 - min(sp, e_storage[i])  # marked: filled below, after every edge's spill is read
    for e in range(n_edges):
        q = max(flow_s[e], 0.0)
        flow_pub[e] = q
        if queue_now[e] < 0:
            queue_now[e] = -1.0 - queue_now[e]
        queue_s[e] += a * (queue_now[e] - queue_s[e])
        tt[e], speed[e], density[e], delay[e], los[e] = _conditions(
            q, queue_s[e], e_len[e], e_nlanes[e], e_vfree[e], e_signal[e], e_storage[e])
        lanes = edge_lane_ptr[e + 1] - edge_lane_ptr[e]
        for k in range(edge_lane_ptr[e], edge_lane_ptr[e + 1]):
            ln = edge_lane_idx[k]
            if not lane_observed[ln] and lanes > 0:
                # what a camera over the last 100 m would see: the queue, and the moving vehicles
                zone = min(e_len[e], CAMERA_RANGE_M)
                moving = q * max(zone - queue_s[e] * JAM_SPACING_M / lanes, 0.0) / max(e_vfree[e], 0.5) / 3600.0
                lane_queue[ln] = queue_s[e] / lanes
                lane_vehicles[ln] = (queue_s[e] + moving) / lanes
                lane_flow[ln] = q / lanes
        acc_flow[e] += x[e] * dt
        acc_queue[e] += queue_now[e] * dt
    acc_time[0] += dt


@dataclass(frozen=True)
class EdgeModel:
    """Static arrays of the edge-level estimation, compiled once from the network."""

    e_nlanes: np.ndarray  # float64[n_edges]
    e_signal: np.ndarray  # bool[n_edges] some lane of the edge enters a signal
    e_storage: np.ndarray  # float64[n_edges] whole vehicles the edge holds standing (a queue beyond is upstream)
    e_spill_cap: np.ndarray  # float64[n_edges] the longest point queue: see ``spill_caps``
    turn_from: np.ndarray  # int32[n_turns] edge -> edge pairs some lane connection makes
    turn_to: np.ndarray
    tin_ptr: np.ndarray  # CSR over edges: turns into the edge that carry flow (not U-turns)
    tin_idx: np.ndarray
    tout_ptr: np.ndarray  # CSR over edges: turns out of the edge that carry flow
    tout_idx: np.ndarray
    lt_lane: np.ndarray  # int32[n_lane_turns] (lane, turn) pairs
    lt_turn: np.ndarray
    lt_weight: np.ndarray  # float64[n_lane_turns] prior weight of the pair (DIRECTION_WEIGHT)
    lane_ndest: np.ndarray  # float64[n_lanes] edges a lane's connections reach
    lane_wsum: np.ndarray  # float64[n_lanes] sum of the lane's pair weights
    lane_prior: np.ndarray  # float64[n_lanes] share of its edge's flow a lane carries where nothing counts it
    lane_link_ptr: np.ndarray  # CSR over lanes: signal links of the lane's connections
    lane_link_idx: np.ndarray
    lane_lt_ptr: np.ndarray  # CSR over lanes into the (lane, turn) pairs (sorted by lane)
    lt_link_ptr: np.ndarray  # CSR over (lane, turn) pairs: signal links of the pair's connections
    lt_link_idx: np.ndarray
    e_give_way: np.ndarray  # bool[n_edges] some movement of the edge gives way at a junction without a signal
    lt_yield_ptr: np.ndarray  # CSR over (lane, turn) pairs: the turns whose streams the pair's movements
    lt_yield_idx: np.ndarray  # give way to there (by the junction's right of way)


def spill_caps(storage: np.ndarray, turn_from: np.ndarray, turn_to: np.ndarray) -> np.ndarray:
    """How long a point queue may grow: ``SPILL_STORAGES`` times what its edge holds, or what its
    edge and the edges feeding it hold together, whichever is more (a signal behind an approach
    a few metres long still queues, on the roads before it)."""
    pairs = np.unique(np.stack([turn_from, turn_to], axis=1), axis=0) if turn_from.size else np.zeros((0, 2), np.int64)
    feeders = np.zeros(storage.size)
    np.add.at(feeders, pairs[:, 1], storage[pairs[:, 0]])
    return np.maximum(SPILL_STORAGES * storage, storage + feeders)


def edge_model(net: CompiledNetwork) -> EdgeModel:
    """Turn structure and per-edge constants of ``net``, as arrays."""
    from network.compiled import csr

    ne, nl = net.n_edges, net.n_lanes
    nlanes = np.diff(net.edge_lane_ptr).astype(np.float64)
    src_edge = net.lane_edge[net.move_in_lane].astype(np.int64)
    dst_edge = net.lane_edge[net.move_out_lane].astype(np.int64)
    keep = src_edge != dst_edge
    pairs = np.unique(src_edge[keep] * ne + dst_edge[keep])
    turn_from = (pairs // ne).astype(np.int32)
    turn_to = (pairs % ne).astype(np.int32)
    # each kept movement's (lane, turn) pair as one code: lane * (n_turns + 1) + turn
    move_code = np.full(net.n_movements, -1, dtype=np.int64)
    move_code[keep] = (net.move_in_lane[keep].astype(np.int64) * (len(pairs) + 1)
                       + np.searchsorted(pairs, src_edge[keep] * ne + dst_edge[keep]))
    lane_turn = np.unique(move_code[keep])
    lt_lane = (lane_turn // (len(pairs) + 1)).astype(np.int32)
    lt_turn = (lane_turn % (len(pairs) + 1)).astype(np.int32)
    # prior weight of each (lane, turn): the most likely of its connections' directions
    directions = [mv.get("direction", "s") for mv in net.graph.graph.get("movements", [])]
    best: dict[int, float] = {}
    if len(directions) == net.n_movements:
        for k in np.flatnonzero(keep).tolist():
            code = int(move_code[k])
            best[code] = max(best.get(code, 0.0), DIRECTION_WEIGHT.get(directions[k], 1.0))
    lt_weight = np.array([best.get(int(c), 1.0) for c in lane_turn.tolist()], dtype=np.float64)
    lane_wsum = np.bincount(lt_lane, weights=lt_weight, minlength=nl).astype(np.float64)
    lane_ndest = np.bincount(lt_lane[lt_weight > 0], minlength=nl).astype(np.float64)
    # an uncounted edge's flow shared among its lanes as their likeliest directions weigh
    lane_wmax = np.zeros(nl)
    np.maximum.at(lane_wmax, lt_lane, lt_weight)
    edge_wmax = np.bincount(net.lane_edge, weights=lane_wmax, minlength=ne)
    lane_prior = np.where(edge_wmax[net.lane_edge] > 0, lane_wmax / np.maximum(edge_wmax[net.lane_edge], 1e-12), 0.0)
    # the conservation equations use the turns some lane takes other than as a U-turn: where
    # the only way on is turning back (a dead end at the network's edge) the trips end and begin
    flowing = np.zeros(len(pairs), dtype=np.bool_)
    flowing[lt_turn[lt_weight > 0]] = True
    keep_t = np.flatnonzero(flowing)
    tin_ptr, tin_idx = _group_sub(turn_to, keep_t, ne)
    tout_ptr, tout_idx = _group_sub(turn_from, keep_t, ne)
    signalised = net.move_link >= 0
    links: list[list[int]] = [[] for _ in range(nl)]
    for m in np.flatnonzero(signalised).tolist():
        links[int(net.move_in_lane[m])].append(int(net.move_link[m]))
    ll_ptr, ll_idx = csr([sorted(set(x)) for x in links])
    pair_links: list[set[int]] = [set() for _ in range(len(lane_turn))]
    sig = np.flatnonzero(keep & signalised)
    for j, link in zip(np.searchsorted(lane_turn, move_code[sig]).tolist(), net.move_link[sig].tolist()):
        pair_links[j].add(int(link))
    plk_ptr, plk_idx = csr([sorted(x) for x in pair_links])
    # the streams each pair gives way to at a junction without a signal, as turns
    moves = net.graph.graph.get("movements", [])
    pair_yields: list[set[int]] = [set() for _ in range(len(lane_turn))]
    if len(moves) == net.n_movements:
        for k in np.flatnonzero(keep).tolist():
            first = [k2 for k2 in moves[k].get("yields_to", ()) if keep[k2]]
            if first:
                j = int(np.searchsorted(lane_turn, move_code[k]))
                pair_yields[j].update(np.searchsorted(pairs, src_edge[first] * ne + dst_edge[first]).tolist())
    ly_ptr, ly_idx = csr([sorted(x) for x in pair_yields])
    give_way = np.zeros(ne, dtype=np.bool_)
    give_way[net.lane_edge[lt_lane[(np.diff(ly_ptr) > 0) & (lt_weight > 0)]]] = True
    lane_lt_ptr = np.zeros(nl + 1, dtype=np.int64)
    lane_lt_ptr[1:] = np.cumsum(np.bincount(lt_lane, minlength=nl))
    e_signal = np.zeros(ne, dtype=np.bool_)
    e_signal[net.lane_edge[net.move_in_lane[signalised]]] = True
    storage = np.floor(net.edge_length_m * nlanes / JAM_SPACING_M)
    return EdgeModel(
        e_nlanes=nlanes, e_signal=e_signal,
        e_storage=storage, e_spill_cap=spill_caps(storage, turn_from[keep_t], turn_to[keep_t]),
        turn_from=turn_from, turn_to=turn_to, tin_ptr=tin_ptr, tin_idx=tin_idx, tout_ptr=tout_ptr,
        tout_idx=tout_idx, lt_lane=lt_lane, lt_turn=lt_turn, lt_weight=lt_weight, lane_ndest=lane_ndest,
        lane_wsum=lane_wsum, lane_prior=lane_prior,
        lane_link_ptr=ll_ptr, lane_link_idx=ll_idx, lane_lt_ptr=lane_lt_ptr, lt_link_ptr=plk_ptr, lt_link_idx=plk_idx,
        e_give_way=give_way, lt_yield_ptr=ly_ptr, lt_yield_idx=ly_idx,
    )


def _group_sub(keys: np.ndarray, subset: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR of the positions ``subset`` of ``keys`` grouped by key value (0..n-1), in position order."""
    k = keys[subset].astype(np.int64)
    order = np.argsort(k, kind="stable")
    ptr = np.zeros(n + 1, dtype=np.int64)
    ptr[1:] = np.cumsum(np.bincount(k, minlength=n))
    return ptr, subset[order].astype(np.int32)


class Estimator:
    """Owns a :class:`NetworkState` and updates it from each tick's observations."""

    def __init__(self, net: CompiledNetwork):
        self.net = net
        self.model = m = edge_model(net)
        nl, ne = net.n_lanes, net.n_edges
        self._held = np.zeros(nl)  # per lane: 1 while a vehicle stands on its stop-bar loop (the loop balance)
        free_tt = net.edge_length_m / np.maximum(net.edge_speed_mps * CRUISE_FACTOR, 0.5)
        self.state = NetworkState(
            lane_vehicles=np.zeros(nl),
            lane_queue_veh=np.zeros(nl),
            lane_flow_vph=np.zeros(nl),
            lane_speed_mps=net.lane_speed_mps.copy(),
            lane_observed=np.zeros(nl, dtype=np.bool_),
            edge_flow_vph=np.zeros(ne),
            edge_speed_mps=net.edge_speed_mps * CRUISE_FACTOR,
            edge_density_vpkm=np.zeros(ne),
            edge_queue_veh=np.zeros(ne),
            edge_travel_time_s=free_tt.copy(),
            edge_delay_s=np.where(m.e_signal, 0.0, np.nan),
            edge_los=np.where(m.e_signal, 0, -1).astype(np.int8),
            edge_observed=np.zeros(ne, dtype=np.bool_),
            edge_flow_now_vph=np.zeros(ne),
            minute_end_ns=0,
            minute_flow_vph=np.zeros(ne),
            minute_speed_mps=net.edge_speed_mps * CRUISE_FACTOR,
            minute_density_vpkm=np.zeros(ne),
            minute_queue_veh=np.zeros(ne),
            minute_travel_time_s=free_tt.copy(),
            minute_delay_s=np.where(m.e_signal, 0.0, np.nan),
            minute_los=np.where(m.e_signal, 0, -1).astype(np.int8),
        )
        self._lt_cnt = np.zeros(m.lt_lane.size)  # stop-bar counts a lone open movement explains, decayed
        self._lt_share = np.zeros(m.lt_lane.size)  # each lane's split among its turns, this tick
        self._lane_share = np.zeros(nl)  # each lane's share of its edge's flow, this tick
        self._R = np.zeros(m.turn_from.size)
        self._Rs = np.zeros(m.turn_from.size)
        self._y = np.zeros(m.turn_from.size)
        self._turn_now = np.zeros(m.turn_from.size)
        self._turn_s = np.zeros(m.turn_from.size)
        self._slots_seen = np.zeros(ne, dtype=np.int64)
        self._slots_all = np.zeros(ne, dtype=np.int64)
        self._exit_flow = np.zeros(ne)
        self._exit_lanes = np.zeros(ne, dtype=np.int64)
        self._turn_pairs = m.turn_from.astype(np.int64) * ne + m.turn_to
        self._slots: tuple[object, np.ndarray] = (None, np.zeros(0, dtype=np.int32))
        self._s_in = np.zeros(ne)
        self._s_out = np.zeros(ne)
        self._prior = np.zeros(1)
        self._queue_now = np.zeros(ne)
        self._lane_pq = np.zeros(net.n_lanes)  # point queues of unobserved signalised lanes
        self._spill = np.zeros(ne)
        self._prior_set = False
        self._ra = np.zeros(ne)
        self._coef = tuple(np.zeros(ne) for _ in range(9))  # per-edge terms of the flow solver
        self._rb = np.zeros(ne)
        self._flow_s = np.zeros(ne)
        self._acc_flow = np.zeros(ne)
        self._acc_queue = np.zeros(ne)
        self._acc_time = np.zeros(1)
        self._no_green = np.zeros(net.n_links, dtype=np.bool_)
        self._all_open = np.ones(net.n_links, dtype=np.bool_)
        self._green = np.zeros(net.n_links, dtype=np.bool_)  # this tick's link states, as masks
        self._go = np.zeros(net.n_links, dtype=np.bool_)
        self._minute: int | None = None
        self._elapsed_ns = 0

    def update(self, obs, now_ns: int | None = None, link_state: np.ndarray | None = None) -> NetworkState:
        """``obs`` holds one tick's per-lane arrays (``detectors.LaneObservations``) for the tick
        ending at ``now_ns``; ``link_state`` is what each signal link showed (the safety stage's
        RED/YELLOW/GREEN codes; green = 2), for the queues of unobserved approaches."""
        s, net, m = self.state, self.net, self.model
        dt = float(obs.interval_s)
        if now_ns is None:
            self._elapsed_ns += int(round(dt * 1e9))
            now_ns = self._elapsed_ns
        minute = (now_ns - 1) // MINUTE_NS  # the minute this tick's interval ends in
        minute_done = self._minute is not None and minute != self._minute
        if link_state is None:
            green, go = self._no_green, self._all_open
        else:
            green = np.equal(link_state, 2, out=self._green)
            # may go: green or yellow, or red that means "stop, then go" (right turn on red)
            go = np.logical_or(np.not_equal(link_state, 0, out=self._go), net.link_stop_on_red, out=self._go)
        _estimate_lanes(
            dt, obs.stop_count, obs.stop_seen, obs.stop_occupancy, obs.upstream_count, obs.upstream_seen,
            obs.speed_mps, obs.camera_vehicles, obs.camera_queue_veh, net.lane_length_m,
            net.lane_speed_mps, s.lane_vehicles, s.lane_queue_veh, s.lane_flow_vph, s.lane_speed_mps,
            s.lane_observed, self._held,
        )
        _estimate_edges(
            dt, minute_done,
            obs.stop_count, obs.stop_seen, obs.stop_occupancy, obs.upstream_count, obs.upstream_seen, obs.camera_queue_veh,
            s.lane_flow_vph, green, go,
            net.edge_lane_ptr, net.edge_lane_idx, net.lane_length_m, net.edge_length_m, m.e_nlanes, net.edge_speed_mps, m.e_signal,
            m.e_storage, m.e_spill_cap, m.turn_from, m.turn_to, m.tin_ptr, m.tin_idx, m.tout_ptr, m.tout_idx, m.lt_lane,
            m.lt_turn, m.lt_weight, m.lane_ndest, m.lane_wsum, m.lane_prior, m.lane_link_ptr, m.lane_link_idx,
            m.lane_lt_ptr, m.lt_link_ptr, m.lt_link_idx, m.e_give_way, m.lt_yield_ptr, m.lt_yield_idx, self._lt_cnt, self._lt_share, self._lane_share, self._R, self._Rs, self._slot_turn(obs), np.asarray(obs.turn_count, dtype=np.float64), self._turn_now,
            self._turn_s, self._slots_seen, self._slots_all, self._exit_flow, self._exit_lanes,
            s.edge_flow_now_vph, self._y, self._s_in, self._s_out, self._ra, self._rb, *self._coef, self._prior,
            s.lane_vehicles, s.lane_queue_veh, s.lane_observed,
            s.edge_observed, s.edge_flow_now_vph, self._flow_s, s.edge_flow_vph, self._queue_now, self._lane_pq, self._spill, s.edge_queue_veh,
            s.edge_travel_time_s, s.edge_speed_mps, s.edge_density_vpkm, s.edge_delay_s, s.edge_los,
            self._acc_flow, self._acc_queue, self._acc_time, s.minute_flow_vph, s.minute_queue_veh,
            s.minute_travel_time_s, s.minute_speed_mps, s.minute_density_vpkm, s.minute_delay_s, s.minute_los,
        )
        if minute_done:
            s.minute_end_ns = (self._minute + 1) * MINUTE_NS
            # the typical flow per lane, for edges nothing determines: the median over the
            # edges counted, of the minute's flows
            seen = s.edge_observed & (m.e_nlanes > 0)
            if seen.any():
                typical = float(np.median(s.minute_flow_vph[seen] / m.e_nlanes[seen]))
                self._prior[0] = typical if not self._prior_set else self._prior[0] + min(
                    1.0, MINUTE_NS / 1e9 / PRIOR_TAU_S) * (typical - self._prior[0])
                self._prior_set = True
        self._minute = minute
        return s

    def _slot_turn(self, obs) -> np.ndarray:
        """The turn (``model.turn_from -> turn_to``) of each camera movement-count slot, -1 for a
        slot that names no turn of the network; computed once per inventory."""
        lanes = getattr(obs, "turn_lane", None)
        if lanes is None or not len(lanes):
            return self._slots[1][:0]
        if self._slots[0] is lanes:
            return self._slots[1]
        net = self.net
        key = net.lane_edge[lanes].astype(np.int64) * net.n_edges + np.asarray(obs.turn_edge, dtype=np.int64)
        pos = np.searchsorted(self._turn_pairs, key)
        pos = np.minimum(pos, max(self._turn_pairs.size - 1, 0))
        ok = self._turn_pairs.size > 0
        turn = np.where(ok & (self._turn_pairs[pos] == key), pos, -1).astype(np.int32) if ok else np.full(
            len(lanes), -1, dtype=np.int32)
        self._slots = (lanes, turn)
        return turn

    @property
    def turn_ratios(self) -> np.ndarray:
        """Share of each turn's source edge flow that takes it (``model.turn_from -> turn_to``)."""
        return self._R


def los_letters(los: np.ndarray) -> list[str]:
    """Level-of-service codes as letters ("" where none applies)."""
    return [LOS_LETTERS[k] if k >= 0 else "" for k in los.tolist()]
