"""``adaptive``, the engine's default: max-pressure on queue estimates, held by actuated gap-out.

Per lane the controller weighs the standing queue the estimator reports plus ``moving_weight``
of the other vehicles within camera range (``lane_weights``). A phase's pressure is, over its
movements, that weight on the entry lane minus the weight on the exit lane, a shared lane
split among its movements (``controllers.base.phase_pressure``).

Each signal holds its green for ``min_hold_s``, then, like an actuated controller, for as long
as vehicles keep crossing its stop-bar or upstream loops with gaps shorter than ``gap_s``
(with ``free_flow_extends = false``, only on lanes where a queue still stands), up to
``max_green_s``. When the green gaps out (or maxes out) the phase of highest pressure among
those with vehicles waiting goes next. The green also ends early, after ``min_hold_s``, once
the queue it found has crossed the stop line (and none stands) while another phase's pressure
has reached ``early_switch_veh``: free-flowing arrivals no longer hold a busy cross street
(0 turns this off); and, with ``switch_ratio > 0``, as soon as another phase's pressure is that
many times its own. No movement waits longer than ``max_wait_s`` (the longest-waiting link's
phase goes next, as in ``max-pressure``). A link waits until it is shown (``watch_signals``: the
engine gives the safety stage's link states): one that the safety stage holds red while its phase
counts as shown (a box camera sees a vehicle in its way) is not served by that phase. On
ingolstadt21, whose junction pair ``243641585`` / ``gneJ257`` locks up when ``gneJ257`` link 7 is
held so for minutes, SUMO seeds 0-5 (``evaluate ... --sumo-seed N``, 28 Nov) gave 88.4 / 73.6 /
81.7 / 88.1 / 81.4 / 84.4 s mean time loss (mean 82.9) with 31 teleports in all and no
collision, against 93.4 / 77.1 / 82.2 / 84.8 / 77.0 / 95.2 s (mean 84.9), 48 teleports and one
collision; the other RESCO scenarios (default seed) and the demo were unchanged.

Stages inside stages (``controllers.base.run_phases``, ``contained_phases``): a phase whose links
another phase of its signal shows as well (a protected-turn stage beside the stage that runs the
turn permissively) is chosen, with ``optional_phase_veh > 0``, only once its demand has reached
that many vehicles; every switch costs yellow, clearance and the hold of permissive turns, and
such a stage adds one. With ``bridge_veh >= 0`` a green that ends leaves through a stage it
contains whose demand has reached ``bridge_veh``, and that stage, when it ends, hands over to the
phase the green was leaving for (if it still has demand): the turns it keeps green go on, protected,
instead of ending while they give way (ingolstadt1: that end holds the turn for its priority
streams' pass time, then 3 s yellow, then its 5.9 s clearance; through the protected stage the
cross street waits yellow + 2 s). Both at 3 vehicles (the defaults), mean time loss before -> after
(``traffic-engine evaluate ... --controller adaptive``): ingolstadt21 105.3 -> 87.2, ingolstadt1
19.6 -> 17.5, ingolstadt7 38.0 -> 37.5, cologne8 31.7 -> 31.2, cologne3 33.3 -> 33.3, cologne1 54.7
-> 54.7 (grid4x4 and arterial4x4 have no such stages). Bridging whatever the demand
(``bridge_veh = 0``) gave cologne3 30.0 and ingolstadt7 35.7, but on cologne3 a permissive left
turner and the opposing through, both on green, collided inside the junction. Bridging while
every stage runs (``optional_phase_veh = 0``, ``bridge_veh = 0.5``) made ingolstadt1 worse (21.1);
skipping alone (``optional_phase_veh = 3``, no bridging) made cologne3 worse (35.8). Re-measured
with the lane phases and intruder holds (27 Nov), ``bridge_veh = 0`` against the default 3:
cologne3 27.7 / 29.2, ingolstadt7 35.7 / 38.5, ingolstadt21 89.8 / 95.1, ingolstadt1 17.0 / 17.5,
the demo 72.9 / 78.4, cologne8 31.6 / 31.1, grid4x4 and arterial4x4 unchanged; but cologne1 41.2 /
38.8 with a collision: a through vehicle stuck inside the junction behind a waiting turner
restarted when the bridge stage showed that turn its protected ``G`` (its stream red for 2 s), and
the turner drove into it. ``bridge_veh = 1`` collided the same way there. What a direct switch
costs instead is the turn's hold, its own yellow and clearance: from the through's yellow to the
next green, 11 s on cologne8 and 15 s on ingolstadt1, where SUMO's programs take 3 s.

For SPaT (``engine.spat``) the controller publishes its ``plan``: with the default
``commit_s = 0`` it commits only to a change it has already asked for, so the end of a green is
known from the tick it is decided. With ``commit_s > 0`` (planned mode) each green is planned
when it starts, for the vehicles its lanes hold then (``plan_lost_s`` + ``plan_headway_s`` per
vehicle of the busiest lane, counting ``plan_moving_weight`` of those not queued, +
``plan_tail_s``, within ``min_hold_s``..``max_green_s``); once that end is at most ``commit_s``
ahead and another phase has vehicles waiting, the end and the phase to follow are committed and
kept (``plan_early_end``: unless the green gaps out with no queue left). A green whose
approaches are empty elsewhere rests, its end unknown. Measured on cologne8 (mean time loss):
25.5 s with the default, 27.7 to 28.9 s in planned mode (commit_s 20, the other settings as
here), so it is off by default; in exchange SPaT knows 55 % instead of 29 % of the state ends
20 s ahead, and with a fifth of the vehicles guided they stopped 19 % less often than the others
instead of 9 % (``python -m benchmarks.guidance``).

Detector trouble (judged per lane and detector kind, knowing from ``set_detectors`` which
detectors the inventory places; lanes marked unhealthy in ``lane_healthy`` distrust them all):
a detector that sent nothing for ``fail_after_s`` is silent; a stop-bar loop that showed
presence without a single count for ``stuck_after_s`` is stuck on; a camera that repeated one
non-zero reading that long, or saw nobody while the loops counted ``blind_veh`` vehicles, is
stuck. A lane whose camera reports is judged by its camera; one whose camera fell silent (or
was dropped by detector health) by its two loops, as a lane without a camera: the estimator then
balances what they count in and out. A lane not to be trusted is on recall: its weight is what
arrived since its last green, at least what it averaged while trusted and ``recall_veh`` (a
floor, so that ``max_wait_s`` still serves it); as an exit lane it weighs only that average; a
green serving it never ends early; its working loops still extend greens. What arrived is what
its upstream loop counted or, without one, the estimator's flow for the lane (its stop-bar
loop's count, else its share of the road's balanced flow) over that time. A guess that is not
the lane's own starves the trusted lanes: on grid4x4 with 20 % of detectors failed (``evaluate
--fail-detectors 0.2``, box cameras), one vehicle per 10 s of red gave 68.7 s time loss against
40.7 s (measured earlier); a floor of 0.5 vehicles on the 14 lanes whose camera and a loop had both
failed, 33.1 s; the estimated flow with a floor of 0.01, 29.3 s (0.1: 30.3 s; the floor alone,
30.6 s), against 24.2 s with every detector working. A vehicle its working stop-bar loop has
under it is the lane's own word: while the loop is occupied the lane weighs at least
``presence_veh``. With the loop balance keeping that vehicle (``network.estimate``), the failure
case went, without -> with ``presence_veh = 1`` (28 Nov): grid4x4 28.69 -> 28.27 s (SUMO seed 1:
29.10 -> 28.34), ingolstadt7 33.59 -> 31.87 (seed 1: 30.05 both), ingolstadt21 over SUMO seeds
0-4 mean 95.5 -> 93.4 (37 teleports both); cologne1, cologne3, cologne8, ingolstadt1 and
arterial4x4 unchanged.

A lane whose upstream loop failed extends greens only on its stop-bar loop, which sees a
vehicle when it is already there: the green gaps out while the vehicles that loop used to
announce are still coming. Where the lane's camera watches nothing but the lane (the lane at
least ``CAMERA_RANGE_M`` long), a vehicle coming into its view (its count rising by more than
the stop-bar loop let go) extends the green instead (``view_in_lane``). On shorter lanes the
camera looks into the lanes behind, whose vehicles may be headed elsewhere or held there: on
ingolstadt21 the rule on every lane took the failure case from 92.0 to 125.9 s (SUMO seeds 0-4,
136 teleports against 30). Failure case, without -> with the rule (28 Nov; time loss s):
ingolstadt1 16.95 -> 14.28 (SUMO seeds 1, 2: 15.60 -> 14.98, 16.40 -> 14.19), ingolstadt21
seeds 0-4 111.2 / 81.0 / 78.5 / 105.1 / 91.2 -> 92.0 / 81.1 / 81.1 / 79.7 / 98.8 (mean 93.4 ->
86.5, teleports 37 -> 19), cologne3 26.91 -> 24.98, arterial4x4 185.85 -> 173.41, ingolstadt7
31.87 -> 31.36, cologne8 seeds 0-3 mean 21.33 -> 21.31, grid4x4 28.27 -> 28.37, cologne1
unchanged. With every detector working it never applies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from numba import njit

from controllers.actuated import _no_observations
from controllers.base import (ShownLinks, contained_phases, movement_shares, phase_pressure, run_phases, starved_link,
                              strongest_phase_with)
from network.compiled import CompiledNetwork
from network.estimate import CAMERA_RANGE_M, NetworkState


@dataclass(frozen=True)
class AdaptiveConfig:
    min_hold_s: float = 5.0
    max_green_s: float = 50.0
    gap_s: float = 3.0
    switch_ratio: float = 0.0  # 0: off
    early_switch_veh: float = 8.0  # 0: off
    moving_weight: float = 0.5
    free_flow_extends: bool = True
    max_wait_s: float = 120.0
    fail_after_s: float = 10.0
    stuck_after_s: float = 120.0
    blind_veh: float = 3.0  # vehicles counted by loops while the camera saw none: camera stuck
    recall_veh: float = 0.01
    presence_veh: float = 1.0  # a lane on recall whose working stop-bar loop is occupied weighs at least this
    average_tau_s: float = 600.0
    commit_s: float = 0.0  # > 0: planned mode, the green's end committed this far ahead (0: off)
    plan_lost_s: float = 2.0
    plan_headway_s: float = 2.0
    plan_tail_s: float = 1.0
    plan_early_end: bool = False  # a committed green still ends early when it gaps out with no queue left
    plan_moving_weight: float = 0.5  # of the vehicles on its lanes not queued, the share the green plans for
    optional_phase_veh: float = 3.0  # a phase whose links another phase shows too runs only for this demand (0: always)
    bridge_veh: float = 3.0  # leave a green through a phase it contains that has this demand (< 0: off)


@njit(cache=True)
def lane_weights(now_ns, dt, entry, healthy, has_cam, has_stop, has_up, stop_count, stop_occ, stop_seen, up_count,
                 up_seen, cam_veh, vehicles, queue, flow_vph, moving_weight, free_flow_extends, fail_after_ns,
                 stuck_after_ns, blind_veh, recall_veh, presence_veh, average_tau_s, seen_ns, last_stop_count_ns,
                 cam_last, cam_changed_ns, cam_blind, arrivals, w_avg, trusted, w, w_exit, extend, standing,
                 view_in_lane):
    """Per lane: weight ``w`` (queue plus part of the moving vehicles; on recall, what arrived since
    its last green, counted or from the estimated ``flow_vph``), whether a vehicle extends a green
    (``extend``), whether a queue may stand there (``standing``) and whether the lane's weight is
    trusted. ``seen_ns`` is per lane and detector kind (camera, stop-bar loop, upstream loop): when
    it last reported. ``view_in_lane``: the lane's camera watches only the lane itself."""
    a = min(1.0, dt / average_tau_s)
    for i in range(w.size):
        cam = not np.isnan(cam_veh[i])
        if cam:
            seen_ns[i, 0] = now_ns
        if stop_seen[i]:
            seen_ns[i, 1] = now_ns
        if up_seen[i]:
            seen_ns[i, 2] = now_ns
        cam_before = cam_last[i]
        occupied = stop_occ[i] > 0.0 and not np.isnan(stop_occ[i])
        if stop_count[i] > 0.0 or not occupied:
            last_stop_count_ns[i] = now_ns  # a count, or an empty loop: not stuck on
        if cam:
            if cam_veh[i] != cam_last[i] or cam_veh[i] == 0.0:
                cam_changed_ns[i] = now_ns
            cam_last[i] = cam_veh[i]
            # vehicles the loops counted while the camera saw nobody: a camera stuck at zero
            cam_blind[i] = 0.0 if cam_veh[i] > 0.0 else cam_blind[i] + stop_count[i] + up_count[i]
        if not entry[i]:  # (no detectors watch it: whatever the estimator says)
            trusted[i] = True
            w[i] = queue[i] + moving_weight * max(vehicles[i] - queue[i], 0.0)
            extend[i] = False
            standing[i] = queue[i] >= 0.5
            w_exit[i] = w[i]
            continue
        stop_ok = (has_stop[i] and now_ns - seen_ns[i, 1] <= fail_after_ns
                   and now_ns - last_stop_count_ns[i] < stuck_after_ns)
        up_ok = has_up[i] and now_ns - seen_ns[i, 2] <= fail_after_ns
        if has_cam[i] and now_ns - seen_ns[i, 0] <= fail_after_ns:  # the estimator takes the camera's word
            ok = now_ns - cam_changed_ns[i] < stuck_after_ns and cam_blind[i] < blind_veh
        else:  # no camera, or it fell silent (or detector health dropped it): the estimator balances the loops
            ok = stop_ok and up_ok
        ok = ok and healthy[i]
        stop_ok = stop_ok and healthy[i]
        up_ok = up_ok and healthy[i]
        trusted[i] = ok
        passing = (stop_ok and stop_count[i] > 0.0) or (up_ok and up_count[i] > 0.0)
        if up_ok:
            arrivals[i] += up_count[i]  # since the lane's last green (the decision resets it)
        elif not ok:  # no loop to count them: what the estimator's flow for the lane brings
            arrivals[i] += flow_vph[i] * dt / 3600.0
        if ok:
            w[i] = queue[i] + moving_weight * max(vehicles[i] - queue[i], 0.0)
            w_avg[i] += a * (w[i] - w_avg[i])
            if not stop_ok and not up_ok:
                passing = queue[i] >= 0.5  # no loop to count: a standing queue still being served
            if cam and view_in_lane[i] and not up_ok:
                # no upstream loop to announce arrivals: a vehicle coming into the camera's view
                # (its count rose by more than the stop-bar loop let go) extends the green
                if cam_veh[i] + (stop_count[i] if stop_ok else 0.0) > cam_before + 0.5:
                    passing = True
            extend[i] = passing and (free_flow_extends or queue[i] >= 0.5)
            standing[i] = queue[i] >= 0.5
            w_exit[i] = w[i]
        else:
            # on recall: what arrived since its last green (its upstream loop's count, else the
            # estimated flow), at least what it averaged while trusted and recall_veh (a generous
            # guess starves the trusted lanes)
            w[i] = max(w_avg[i], recall_veh, arrivals[i])
            if stop_ok and occupied:  # a vehicle on its working stop-bar loop: the lane's own word
                w[i] = max(w[i], presence_veh)
            extend[i] = passing
            standing[i] = True  # unknown: as if a queue stood there
            w_exit[i] = w_avg[i]  # (the recall guess must not hold back the streams that feed it)


@njit(cache=True)
def _pressures(p0, p1, phase_link_ptr, phase_link_idx, link_move_ptr, link_move_idx, move_in, move_out,
               move_in_share, move_out_share, w, w_exit, pressure, demand):
    """``controllers.base.phase_pressure`` of phases ``p0..p1``, exit lanes weighed by ``w_exit``."""
    for p in range(p0, p1):
        pressure[p], demand[p] = phase_pressure(p, phase_link_ptr, phase_link_idx, link_move_ptr, link_move_idx,
                                                move_in, move_out, move_in_share, move_out_share, w, w_exit)


@njit(cache=True)
def _adaptive(now_ns, w, w_exit, extend, standing, queue, discharged, tls_phase_ptr, phase_link_ptr, phase_link_idx,
              link_move_ptr, link_move_idx, move_in, move_out, move_in_share, move_out_share, tls_link_ptr,
              active_phase, active_since_ns, hold_ns, max_green_ns, gap_ns, switch_ratio, early_switch_veh,
              max_wait_ns, last_extend_ns, link_served_ns, pressure, demand, fresh, platoon, platoon_ns, arrivals,
              target, vehicles, commit_ns, lost_ns, headway_ns, tail_ns, moving_w, plan_fore_ns, plan_end_ns, plan_next,
              early_end, phase_on, optional_veh, sub_ptr, sub_idx, bridge_veh, bridge_to, link_shown):
    for t in range(tls_phase_ptr.size - 1):
        p0 = tls_phase_ptr[t]
        p1 = tls_phase_ptr[t + 1]
        if p1 == p0:
            target[t] = -1
            continue
        cur = target[t]
        if cur < p0 or cur >= p1:
            _pressures(p0, p1, phase_link_ptr, phase_link_idx, link_move_ptr, link_move_idx, move_in, move_out,
                       move_in_share, move_out_share, w, w_exit, pressure, demand)
            best = -1
            for p in range(p0, p1):
                if (phase_on[p] or demand[p] >= optional_veh) and (best < 0 or pressure[p] > pressure[best]):
                    best = p
            target[t] = best if best >= 0 else p0
            last_extend_ns[t] = now_ns
            continue
        if active_phase[t] != cur:
            last_extend_ns[t] = now_ns  # the gap timer starts with the green
            fresh[t] = True
            plan_end_ns[t] = -1
            plan_next[t] = -1
            continue
        was_fresh = fresh[t]
        extended = False
        queued = False
        for k in range(phase_link_ptr[cur], phase_link_ptr[cur + 1]):
            link = phase_link_idx[k]
            if link_shown[link]:  # (a link the safety stage holds red is not served by its phase)
                link_served_ns[link] = now_ns
            for j in range(link_move_ptr[link], link_move_ptr[link + 1]):
                lane = move_in[link_move_idx[j]]
                arrivals[lane] = 0.0
                if platoon_ns[lane] != now_ns:  # once per lane and tick: the queue the green found, less
                    platoon_ns[lane] = now_ns  # what has crossed the stop line since
                    platoon[lane] = queue[lane] if fresh[t] else platoon[lane] - discharged[lane]
                if extend[lane]:
                    extended = True
                if standing[lane] or platoon[lane] >= 0.5:
                    queued = True
        fresh[t] = False
        if extended:
            last_extend_ns[t] = now_ns
        age = now_ns - active_since_ns[t]
        if commit_ns > 0:
            _planned(now_ns, t, cur, p0, p1, was_fresh, w, w_exit, queue, vehicles, phase_link_ptr, phase_link_idx,
                     link_move_ptr, link_move_idx, move_in, move_out, move_in_share, move_out_share, tls_link_ptr,
                     active_since_ns, hold_ns, max_green_ns, max_wait_ns, link_served_ns, pressure, demand,
                     commit_ns, lost_ns, headway_ns, tail_ns, moving_w, plan_fore_ns, plan_end_ns, plan_next, target,
                     early_end, now_ns - last_extend_ns[t] >= gap_ns, queued)
            continue
        if age < hold_ns:
            continue
        # (pressures only where a decision is due: a signal in its hold or mid-change costs nothing)
        _pressures(p0, p1, phase_link_ptr, phase_link_idx, link_move_ptr, link_move_idx, move_in, move_out,
                   move_in_share, move_out_share, w, w_exit, pressure, demand)
        starved = starved_link(now_ns, tls_link_ptr[t], tls_link_ptr[t + 1], w, link_move_ptr, link_move_idx,
                               move_in, max_wait_ns, link_served_ns)
        if starved >= 0:
            target[t] = strongest_phase_with(starved, p0, p1, phase_link_ptr, phase_link_idx, pressure)
            bridge_to[t] = -1
            continue
        best = -1
        for p in range(p0, p1):
            if (p != cur and demand[p] > 0.0 and (phase_on[p] or demand[p] >= optional_veh)
                    and (best < 0 or pressure[p] > pressure[best])):
                best = p
        bridged = bridge_to[t]  # (this green is a bridge: the phase it leads to goes next)
        if bridged >= 0 and bridged != cur and demand[bridged] > 0.0:
            best = bridged
        if best < 0:
            continue
        gapped = now_ns - last_extend_ns[t] >= gap_ns
        if (gapped or age >= max_green_ns or demand[cur] <= 0.0
                or (switch_ratio > 0.0 and pressure[best] > switch_ratio * max(pressure[cur], 1.0))
                or (early_switch_veh > 0.0 and not queued and pressure[best] >= early_switch_veh)):
            nxt = -1
            if bridge_veh >= 0.0 and bridged < 0:
                # through a stage the green contains (its turns kept on, now protected) when that
                # stage has vehicles: cheaper than ending the turns while they give way
                for k in range(sub_ptr[cur], sub_ptr[cur + 1]):
                    q = sub_idx[k]
                    if q != best and demand[q] >= bridge_veh:
                        nxt = best
                        best = q
                        break
            bridge_to[t] = nxt
            target[t] = best


@njit(cache=True)
def _plan_segments(target, active, plan_end_ns, plan_next, phase, end, committed):
    for t in range(target.size):
        phase[t, 0] = target[t]
        end[t, 0] = -1
        committed[t, 0] = active[t] != target[t]
        phase[t, 1] = -2
        end[t, 1] = -1
        committed[t, 1] = False
        if plan_end_ns[t] >= 0 and plan_next[t] >= 0:
            end[t, 0] = plan_end_ns[t]
            committed[t, 0] = True
            phase[t, 1] = plan_next[t]
            committed[t, 1] = True


@njit(cache=True)
def _successor(now_ns, cur, p0, p1, tls_lo, tls_hi, w, phase_link_ptr, phase_link_idx, link_move_ptr,
               link_move_idx, move_in, max_wait_ns, link_served_ns, pressure, demand):
    """The phase to follow ``cur``: the longest-starved link's (beyond ``max_wait``), else the
    phase of highest pressure among those with vehicles waiting; -1 when none waits."""
    starved = starved_link(now_ns, tls_lo, tls_hi, w, link_move_ptr, link_move_idx, move_in, max_wait_ns,
                           link_served_ns)
    if starved >= 0:
        best = strongest_phase_with(starved, p0, p1, phase_link_ptr, phase_link_idx, pressure)
        if best >= 0 and best != cur:
            return best
    best = -1
    for p in range(p0, p1):
        if p != cur and demand[p] > 0.0 and (best < 0 or pressure[p] > pressure[best]):
            best = p
    return best


@njit(cache=True)
def _planned(now_ns, t, cur, p0, p1, was_fresh, w, w_exit, queue, vehicles, phase_link_ptr, phase_link_idx,
             link_move_ptr, link_move_idx, move_in, move_out, move_in_share, move_out_share, tls_link_ptr,
             active_since_ns, hold_ns, max_green_ns, max_wait_ns, link_served_ns, pressure, demand, commit_ns,
             lost_ns, headway_ns, tail_ns, moving_w, plan_fore_ns, plan_end_ns, plan_next, target, early_end, gapped,
             queued):
    """Planned mode (``commit_s > 0``): the green's end is forecast from the vehicles its lanes
    hold (discharging at ``plan_headway_s`` each, after ``plan_lost_s`` at the start, plus
    ``plan_tail_s``), within ``min_hold``..``max_green``; once the forecast is at most
    ``commit_s`` ahead and some other phase has vehicles waiting, the end and the phase to follow
    are committed and kept: the signal switches exactly then (``Adaptive.plan`` publishes it)."""
    if plan_end_ns[t] >= 0:
        if now_ns >= plan_end_ns[t] or (early_end and gapped and not queued):
            target[t] = plan_next[t]
            plan_end_ns[t] = -1
            plan_next[t] = -1
        return
    if was_fresh:  # the green is planned once, when it starts, for the vehicles its lanes hold then
        most = 0.0
        for k in range(phase_link_ptr[cur], phase_link_ptr[cur + 1]):
            link = phase_link_idx[k]
            for j in range(link_move_ptr[link], link_move_ptr[link + 1]):
                lane = move_in[link_move_idx[j]]
                v = queue[lane] + moving_w * max(vehicles[lane] - queue[lane], 0.0)
                if v > most:
                    most = v
        f = now_ns + lost_ns + np.int64(most * headway_ns) + tail_ns
        f = max(f, active_since_ns[t] + hold_ns)
        plan_fore_ns[t] = min(f, active_since_ns[t] + max_green_ns)
    f = max(plan_fore_ns[t], now_ns)  # (resting past it while nobody waited elsewhere: now)
    if f - now_ns > commit_ns:
        return
    _pressures(p0, p1, phase_link_ptr, phase_link_idx, link_move_ptr, link_move_idx, move_in, move_out,
               move_in_share, move_out_share, w, w_exit, pressure, demand)
    best = _successor(now_ns, cur, p0, p1, tls_link_ptr[t], tls_link_ptr[t + 1], w, phase_link_ptr, phase_link_idx,
                      link_move_ptr, link_move_idx, move_in, max_wait_ns, link_served_ns, pressure, demand)
    if best < 0:
        return  # nobody waits elsewhere: the green rests, its end unknown
    if f <= now_ns:
        target[t] = best
        return
    plan_end_ns[t] = f
    plan_next[t] = best


class Adaptive:
    name: ClassVar[str] = "adaptive"

    def __init__(self, net: CompiledNetwork, config: AdaptiveConfig | None = None):
        self.net = net
        self.config = config or AdaptiveConfig()
        self._in_share, self._out_share = movement_shares(net)
        # phases whose links no other phase of the signal shows as well (``run_phases``): the
        # others (a protected-turn stage, say) run only for ``optional_phase_veh`` of demand
        self.phase_on = run_phases(net) if self.config.optional_phase_veh > 0 else np.ones(net.n_phases, np.bool_)
        self._sub_ptr, self._sub_idx = contained_phases(net)  # (``bridge_veh``)
        self.bridge_to = np.full(net.n_tls, -1, dtype=np.int32)  # the phase a bridging green leads to
        n = net.n_lanes
        self.entry = np.zeros(n, dtype=np.bool_)  # lanes entering a signal: the ones detectors watch
        self.entry[net.move_in_lane[net.move_link >= 0]] = True
        self.lane_healthy = np.ones(n, dtype=np.bool_)
        # which detectors each lane has (``set_detectors``; until told: every kind on every entry lane)
        self.has_camera = self.entry.copy()
        self.has_stop_loop = self.entry.copy()
        self.has_upstream_loop = self.entry.copy()
        # a camera over the last CAMERA_RANGE_M of a shorter lane sees into the lanes behind it
        self.view_in_lane = self.entry & (net.lane_length_m >= CAMERA_RANGE_M)
        self.seen_ns = np.zeros((n, 3), dtype=np.int64)
        self.cam_blind = np.zeros(n)
        self.arrivals = np.zeros(n)
        self.last_stop_count_ns = np.zeros(n, dtype=np.int64)
        self.cam_last = np.zeros(n)
        self.cam_changed_ns = np.zeros(n, dtype=np.int64)
        self.w_avg = np.zeros(n)
        self.trusted = np.ones(n, dtype=np.bool_)
        self.w = np.zeros(n)
        self.w_exit = np.zeros(n)
        self.extend = np.zeros(n, dtype=np.bool_)
        self.standing = np.zeros(n, dtype=np.bool_)
        self.fresh = np.zeros(net.n_tls, dtype=np.bool_)
        self.platoon = np.zeros(n)
        self.platoon_ns = np.full(n, -1, dtype=np.int64)
        self.last_extend_ns = np.zeros(net.n_tls, dtype=np.int64)
        self.link_served_ns = np.zeros(net.n_links, dtype=np.int64)
        self._shown = ShownLinks(net.n_links)
        self.pressure = np.zeros(net.n_phases)
        self.demand = np.zeros(net.n_phases)
        self.plan_fore_ns = np.zeros(net.n_tls, dtype=np.int64)  # the green's planned end, from its start
        self.plan_end_ns = np.full(net.n_tls, -1, dtype=np.int64)  # committed end of the green (-1: none)
        self.plan_next = np.full(net.n_tls, -1, dtype=np.int32)  # committed phase to follow it
        self._plan_phase = np.full((net.n_tls, 2), -2, dtype=np.int32)
        self._plan_end = np.full((net.n_tls, 2), -1, dtype=np.int64)
        self._plan_committed = np.zeros((net.n_tls, 2), dtype=np.bool_)
        self._target = np.full(net.n_tls, -1, dtype=np.int32)
        self._active = np.full(net.n_tls, -1, dtype=np.int32)
        self._obs = None
        self._last_ns: int | None = None

    def watch_signals(self, link_state: np.ndarray) -> None:
        """The safety stage's link states: see ``controllers.base.ShownLinks``."""
        self._shown.watch(link_state)

    def set_detectors(self, has_camera: np.ndarray, has_stop_loop: np.ndarray, has_upstream_loop: np.ndarray) -> None:
        """Which lanes the detector inventory covers, per kind (bool[n_lanes] each)."""
        self.has_camera = np.asarray(has_camera, dtype=np.bool_)
        self.has_stop_loop = np.asarray(has_stop_loop, dtype=np.bool_)
        self.has_upstream_loop = np.asarray(has_upstream_loop, dtype=np.bool_)

    def observe(self, obs, lane_healthy: np.ndarray, now_ns: int) -> None:
        """The tick's raw per-lane observations and the detector-health mask (true: healthy)."""
        self._obs = obs
        self.lane_healthy = lane_healthy

    def decide(self, state: NetworkState, active_phase: np.ndarray, active_since_ns: np.ndarray,
               now_ns: int, target_phase: np.ndarray) -> None:
        net, c = self.net, self.config
        if self._last_ns is None:  # waiting, silence and stuck detectors are counted from the start
            for a in (self.seen_ns, self.last_stop_count_ns, self.cam_changed_ns, self.link_served_ns):
                a[:] = now_ns
        dt = 1.0 if self._last_ns is None else max((now_ns - self._last_ns) / 1e9, 1e-3)
        self._last_ns = now_ns
        obs = self._obs if self._obs is not None else _no_observations(net.n_lanes)
        lane_weights(np.int64(now_ns), dt, self.entry, self.lane_healthy, self.has_camera, self.has_stop_loop,
                     self.has_upstream_loop, obs.stop_count, obs.stop_occupancy, obs.stop_seen, obs.upstream_count,
                     obs.upstream_seen, obs.camera_vehicles, state.lane_vehicles, state.lane_queue_veh,
                     state.lane_flow_vph, c.moving_weight, c.free_flow_extends, np.int64(c.fail_after_s * 1e9),
                     np.int64(c.stuck_after_s * 1e9), c.blind_veh, c.recall_veh, c.presence_veh, c.average_tau_s,
                     self.seen_ns, self.last_stop_count_ns, self.cam_last, self.cam_changed_ns, self.cam_blind,
                     self.arrivals, self.w_avg, self.trusted, self.w, self.w_exit, self.extend, self.standing,
                     self.view_in_lane)
        _adaptive(np.int64(now_ns), self.w, self.w_exit, self.extend, self.standing, state.lane_queue_veh,
                  obs.stop_count, net.tls_phase_ptr, net.phase_link_ptr, net.phase_link_idx, net.link_move_ptr,
                  net.link_move_idx, net.move_in_lane, net.move_out_lane, self._in_share, self._out_share,
                  net.tls_link_ptr, active_phase, active_since_ns, np.int64(c.min_hold_s * 1e9),
                  np.int64(c.max_green_s * 1e9), np.int64(c.gap_s * 1e9), c.switch_ratio, c.early_switch_veh,
                  np.int64(c.max_wait_s * 1e9), self.last_extend_ns, self.link_served_ns, self.pressure,
                  self.demand, self.fresh, self.platoon, self.platoon_ns, self.arrivals, target_phase,
                  state.lane_vehicles, np.int64(c.commit_s * 1e9), np.int64(c.plan_lost_s * 1e9),
                  np.int64(c.plan_headway_s * 1e9), np.int64(c.plan_tail_s * 1e9), c.plan_moving_weight, self.plan_fore_ns, self.plan_end_ns, self.plan_next,
                  c.plan_early_end, self.phase_on, c.optional_phase_veh, self._sub_ptr, self._sub_idx,
                  c.bridge_veh, self.bridge_to, self._shown.now())
        self._target, self._active = target_phase, active_phase

    def plan(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What this controller will ask for (``engine.spat``): per signal up to two segments
        ``(phase, end_ns, committed)``. In planned mode a committed green runs to its end and the
        committed successor follows (its own end open); a change under way is committed; a
        green not planned yet is held open-ended, uncommitted (its end unknown)."""
        _plan_segments(self._target, self._active, self.plan_end_ns, self.plan_next, self._plan_phase,
                       self._plan_end, self._plan_committed)
        return self._plan_phase, self._plan_end, self._plan_committed
