"""How long one decision of each controller takes: ``python -m benchmarks.decide [--json FILE]``.

One decision is one ``Controller.decide`` call (with ``observe`` first, for the controllers that
read raw detector calls) over every signal of a synthetic network: a torus grid of 100, 1,000
and 10,000 four-way junctions, two lanes per approach (right and through on one, left on the
other), four phases each (through and right, then protected left, for each axis). Lane states
are random and change every decision; the phase shown follows the controller's target a few
seconds later, as the safety stage would make it. Figures are medians over the decisions, in
microseconds; ``budget`` is the decision time as a share of the 5 ms target for 10,000
junctions on one core.
"""

from __future__ import annotations

import math
import time

import networkx as nx
import numpy as np

from benchmarks import names, parser, write_json
from controllers import CONTROLLERS
from detectors.bank import LaneObservations
from engine.config import EngineConfig
from engine.core import make_controller
from network.compiled import CompiledNetwork, csr
from network.estimate import Estimator

BUDGET_US = 5000.0  # the target for 10,000 junctions
SIZES = (100, 1_000, 10_000)
NS = 10**9


def synthetic_grid(n_junctions: int, block_m: float = 200.0, speed_mps: float = 13.9) -> CompiledNetwork:
    """A ``rows x cols`` torus of signalised four-way junctions (rows x cols >= ``n_junctions``).

    Edge ``4 j + d`` enters junction ``j`` from direction ``d`` (0 north, 1 east, 2 south,
    3 west); its lane 0 turns right and goes through, lane 1 turns left. Signal ``j`` has links
    ``3 d + k`` (k: 0 right, 1 through, 2 left) and phases N-S through, N-S left, E-W through,
    E-W left; the two axes conflict.
    """
    rows = max(1, int(math.sqrt(n_junctions)))
    cols = max(1, math.ceil(n_junctions / rows))
    nj = rows * cols

    def neighbour(j: int, d: int) -> int:
        r, c = divmod(j, cols)
        dr, dc = ((-1, 0), (0, 1), (1, 0), (0, -1))[d]
        return ((r + dr) % rows) * cols + (c + dc) % cols

    n_edges = 4 * nj
    n_lanes = 2 * n_edges
    edge_to = np.repeat(np.arange(nj, dtype=np.int32), 4)
    edge_from = np.array([neighbour(j, d) for j in range(nj) for d in range(4)], dtype=np.int32)
    move_in, move_out, move_link = [], [], []
    for j in range(nj):
        for d in range(4):
            lane0 = 2 * (4 * j + d)
            for k, out_dir in enumerate(((d + 3) % 4, (d + 2) % 4, (d + 1) % 4)):
                out_edge = 4 * neighbour(j, out_dir) + (out_dir + 2) % 4
                move_in.append(lane0 + (1 if k == 2 else 0))
                move_out.append(2 * out_edge + (1 if k == 2 else 0))
                move_link.append(12 * j + 3 * d + k)
    n_links = 12 * nj
    local_phases = [[3 * d + k for d in (0, 2) for k in (0, 1)], [3 * d + 2 for d in (0, 2)],
                    [3 * d + k for d in (1, 3) for k in (0, 1)], [3 * d + 2 for d in (1, 3)]]
    ns = [3 * d + k for d in (0, 2) for k in range(3)]
    ew = [3 * d + k for d in (1, 3) for k in range(3)]
    local_conflicts = {a: (ew if a in ns else ns) for a in range(12)}
    phases = [[12 * j + x for x in ph] for j in range(nj) for ph in local_phases]
    conflicts = [[12 * (a // 12) + b for b in local_conflicts[a % 12]] for a in range(n_links)]
    lc_ptr, lc_idx = csr(conflicts)
    none_ptr, none_idx = csr([[] for _ in range(n_links)])
    lm_ptr, lm_idx = csr([[m] for m in range(n_links)])  # movement m is link m
    pl_ptr, pl_idx = csr(phases)
    junction_ids = tuple(f"J{j}" for j in range(nj))
    edge_ids = tuple(f"E{e}" for e in range(n_edges))
    lane_ids = tuple(f"E{e}_{k}" for e in range(n_edges) for k in range(2))
    return CompiledNetwork(
        graph=nx.DiGraph(), junction_ids=junction_ids, edge_ids=edge_ids, lane_ids=lane_ids, tls_ids=junction_ids,
        edge_from=edge_from, edge_to=edge_to, edge_length_m=np.full(n_edges, block_m),
        edge_speed_mps=np.full(n_edges, speed_mps),
        edge_lane_ptr=np.arange(0, n_lanes + 1, 2, dtype=np.int64), edge_lane_idx=np.arange(n_lanes, dtype=np.int32),
        lane_edge=np.repeat(np.arange(n_edges, dtype=np.int32), 2), lane_length_m=np.full(n_lanes, block_m),
        lane_speed_mps=np.full(n_lanes, speed_mps),
        move_in_lane=np.array(move_in, dtype=np.int32), move_out_lane=np.array(move_out, dtype=np.int32),
        move_link=np.array(move_link, dtype=np.int32),
        tls_link_ptr=np.arange(0, n_links + 1, 12, dtype=np.int64),
        link_tls=np.repeat(np.arange(nj, dtype=np.int32), 12),
        link_conflict_ptr=lc_ptr, link_conflict_idx=lc_idx, link_yield_ptr=none_ptr, link_yield_idx=none_idx,
        link_permissive=np.zeros(n_links, dtype=np.bool_), link_stop_on_red=np.zeros(n_links, dtype=np.bool_),
        link_clearance_s=np.zeros(n_links), link_yield_pass_s=np.zeros(none_idx.size), link_move_ptr=lm_ptr, link_move_idx=lm_idx,
        link_intruder_ptr=none_ptr, link_intruder_idx=none_idx, link_cross_ptr=none_ptr, link_cross_idx=none_idx,
        tls_phase_ptr=np.arange(0, 4 * nj + 1, 4, dtype=np.int64),
        phase_tls=np.repeat(np.arange(nj, dtype=np.int32), 4), phase_link_ptr=pl_ptr, phase_link_idx=pl_idx,
        phase_in_cycle=np.ones(4 * nj, dtype=np.bool_),
        lane_index={x: i for i, x in enumerate(lane_ids)}, edge_index={x: i for i, x in enumerate(edge_ids)},
        tls_index={x: i for i, x in enumerate(junction_ids)}, junction_index={x: i for i, x in enumerate(junction_ids)},
    )


def random_observations(n_lanes: int, rng: np.random.Generator) -> LaneObservations:
    """One tick of loop and camera readings on every lane (the fields of ``LaneObservations``)."""
    veh = rng.integers(0, 14, n_lanes).astype(np.float64)
    return LaneObservations(
        stop_count=rng.integers(0, 2, n_lanes).astype(np.float64), stop_occupancy=rng.random(n_lanes) * 0.6,
        stop_seen=np.ones(n_lanes, dtype=np.bool_), upstream_count=rng.integers(0, 2, n_lanes).astype(np.float64),
        upstream_seen=np.ones(n_lanes, dtype=np.bool_), speed_mps=rng.uniform(0, 14, n_lanes),
        camera_vehicles=veh, camera_queue_veh=np.floor(veh * rng.random(n_lanes)), interval_s=1.0)


def bench(net: CompiledNetwork, controller: str, decisions: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    ctl = make_controller(controller, net, EngineConfig(controller=controller))
    est = Estimator(net)
    healthy = np.ones(net.n_lanes, dtype=np.bool_)
    target = np.full(net.n_tls, -1, dtype=np.int32)
    active = np.full(net.n_tls, -1, dtype=np.int32)
    since = np.zeros(net.n_tls, dtype=np.int64)
    frames = [random_observations(net.n_lanes, rng) for _ in range(8)]
    observe = getattr(ctl, "observe", None)
    times = []
    for k in range(decisions + 3):  # the first three load the kernels and are not counted
        now = (k + 1) * NS
        obs = frames[k % len(frames)]
        est.update(obs)
        # the phase shown follows the target after a random change time, as safety would make it
        moving = (active != target) & (rng.random(net.n_tls) < 0.25)
        active[moving], since[moving] = target[moving], now
        t0 = time.perf_counter_ns()
        if observe is not None:
            observe(obs, healthy, now)
        ctl.decide(est.state, active, since, now, target)
        if k >= 3:
            times.append((time.perf_counter_ns() - t0) / 1e3)
    us = float(np.median(times))
    return {"controller": controller, "junctions": net.n_tls, "lanes": net.n_lanes, "decisions": decisions,
            "decide_us_p50": us, "decide_us_p99": float(np.percentile(times, 99)),
            "ns_per_junction": us * 1e3 / net.n_tls, "budget": us / BUDGET_US}


def main(argv: list[str] | None = None) -> int:
    p = parser("decide", __doc__)
    p.add_argument("--sizes", default=",".join(map(str, SIZES)),
                   help="comma-separated junction counts (default %(default)s)")
    p.add_argument("--controllers", default=",".join(sorted(CONTROLLERS)),
                   help="comma-separated controllers (default: all, %(default)s)")
    p.add_argument("--decisions", type=int, default=200, help="timed decisions per size and controller "
                   "(default %(default)s)")
    p.add_argument("--json", help="also write the rows to this file")
    args = p.parse_args(argv)
    try:
        sizes = [int(x) for x in args.sizes.split(",") if x]
    except ValueError:
        p.error(f"--sizes must be integers, not {args.sizes!r}")
    if not sizes or min(sizes) < 1:
        p.error("--sizes must be positive")
    ctls = names(p, args.controllers, sorted(CONTROLLERS), "controller")
    if args.decisions < 1:
        p.error("--decisions must be at least 1")
    rows = []
    print(f"{'controller':13} {'junctions':>9} {'decide p50 us':>13} {'p99 us':>9} {'ns/junction':>11} "
          f"{'of 5 ms':>8}")
    for n in sizes:
        net = synthetic_grid(n)
        for ctl in ctls:
            r = bench(net, ctl, args.decisions)
            rows.append(r)
            print(f"{ctl:13} {r['junctions']:9d} {r['decide_us_p50']:13.1f} {r['decide_us_p99']:9.1f} "
                  f"{r['ns_per_junction']:11.1f} {r['budget']:8.1%}", flush=True)
    if args.json:
        write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
