"""How long one estimation step takes on large networks: ``python -m benchmarks.estimate``.

Networks are synthetic square grids of 100, 1,000 and 10,000 signalised junctions (about four
two-lane edges per junction; each lane turns right and straight or straight and left; a
signal with two phases at every junction), compiled like a SUMO network. Half the edges, drawn
at random, have a loop on every lane and a camera; each tick gives them random counts and
queues. The step timed is ``Estimator.update``: lanes, turning ratios, the flow solver over
every edge, queues, conditions and the minute values. Figures are per tick, in milliseconds,
with the issue's limit (20 ms at 10,000 junctions) as a ratio.
"""

from __future__ import annotations

import math
import os
import time

import networkx as nx
import numpy as np

from benchmarks import parser, write_json
from detectors.bank import LaneObservations
from network.compiled import compile_network
from network.estimate import Estimator

LIMIT_MS = 20.0
SIZES = (100, 1_000, 10_000)
EDGE_M = 200.0
SPEED = 13.89


def grid_graph(n_junctions: int) -> nx.DiGraph:
    """A ``k x k`` grid (k = round(sqrt(n))) in :func:`network.sumo_net.read_sumo_net`'s form."""
    k = max(2, round(math.sqrt(n_junctions)))
    g = nx.DiGraph(name=f"grid{k}x{k}")
    edges, lanes, movements, signals = {}, {}, [], {}
    node = lambda x, y: f"J{x}_{y}"  # noqa: E731
    for x in range(k):
        for y in range(k):
            g.add_node(node(x, y), x=x * EDGE_M, y=y * EDGE_M, type="traffic_light", tls=node(x, y))
    heading = {}
    for x in range(k):
        for y in range(k):
            for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                if 0 <= x + dx < k and 0 <= y + dy < k:
                    u, v = node(x, y), node(x + dx, y + dy)
                    eid = f"{u}-{v}"
                    ids = [f"{eid}_{i}" for i in range(2)]
                    for i, lane in enumerate(ids):
                        lanes[lane] = {"edge": eid, "index": i, "length_m": EDGE_M, "speed_mps": SPEED}
                    edges[eid] = {"id": eid, "from": u, "to": v, "length_m": EDGE_M, "speed_mps": SPEED, "lanes": ids}
                    heading[eid] = (dx, dy)
                    g.add_edge(u, v, **edges[eid])
    ins_of: dict[str, list[str]] = {j: [] for j in g.nodes}
    outs_of: dict[str, list[str]] = {j: [] for j in g.nodes}
    for e, d in edges.items():
        ins_of[d["to"]].append(e)
        outs_of[d["from"]].append(e)
    for j in g.nodes:
        ins, outs = ins_of[j], outs_of[j]
        links = []
        for e in ins:
            dx, dy = heading[e]
            for o in outs:
                ox, oy = heading[o]
                if (ox, oy) == (-dx, -dy):
                    continue  # no U-turns
                cross = dx * oy - dy * ox  # >0: left turn, <0: right turn, 0: straight
                for lane in ([0] if cross < 0 else [1] if cross > 0 else [0, 1]):
                    movements.append({"from_lane": edges[e]["lanes"][lane], "to_lane": edges[o]["lanes"][lane],
                                      "junction": j, "tls": j, "link_index": len(links), "direction": "s"})
                    links.append(heading[e][0] != 0)
        ns = [i for i, horizontal in enumerate(links) if not horizontal]
        ew = [i for i, horizontal in enumerate(links) if horizontal]
        signals[j] = {"n_links": len(links), "junctions": [j], "conflicts": [], "yields": [], "permissive": [],
                      "stop_on_red": [], "clearance_s": [0.0] * len(links), "phases": [p for p in (ns, ew) if p],
                      "programs": []}
    g.graph.update(edges=edges, lanes=lanes, movements=movements, signals=signals)
    return g


def bench(n_junctions: int, ticks: int, seed: int = 0) -> dict:
    net = compile_network(grid_graph(n_junctions))
    est = Estimator(net)
    rng = np.random.default_rng(seed)
    n = net.n_lanes
    has = np.zeros(n, dtype=bool)
    for e in rng.permutation(net.n_edges)[: net.n_edges // 2]:
        has[net.edge_lane_idx[net.edge_lane_ptr[e]:net.edge_lane_ptr[e + 1]]] = True
    link_state = np.zeros(net.n_links, dtype=np.int8)
    nan = np.full(n, np.nan)

    def obs() -> LaneObservations:
        count = rng.integers(0, 2, n).astype(float)
        cam = np.where(has, rng.integers(0, 10, n), nan)
        return LaneObservations(count, np.where(has, rng.random(n) * 0.5, nan), has.copy(), count, has.copy(),
                                nan.copy(), cam, np.where(has, np.floor(cam / 2), nan), 1.0)

    stream = [obs() for _ in range(min(ticks, 20))]
    est.update(stream[0], 10**9, link_state)  # compile (or load from cache) before timing
    step_ms = []
    for k in range(ticks):
        link_state[:] = np.where(rng.random(net.n_links) < 0.05, 2 - link_state, link_state)
        t0 = time.perf_counter_ns()
        est.update(stream[k % len(stream)], (k + 2) * 10**9, link_state)
        step_ms.append((time.perf_counter_ns() - t0) / 1e6)
    p50 = float(np.median(step_ms))
    return {
        "junctions": len(net.junction_ids), "edges": net.n_edges, "lanes": n, "turns": int(est.model.turn_from.size),
        "ticks": ticks, "step_ms_p50": p50, "step_ms_p99": float(np.percentile(step_ms, 99)),
        "step_ms_max": float(np.max(step_ms)), "limit_ms": LIMIT_MS, "p50_over_limit": p50 / LIMIT_MS,
    }


def main(argv: list[str] | None = None) -> int:
    p = parser("estimate", __doc__)
    p.add_argument("--sizes", default=",".join(map(str, SIZES)),
                   help="junction counts, comma-separated (default %(default)s)")
    p.add_argument("--ticks", type=int, default=200, help="ticks per network (default %(default)s)")
    p.add_argument("--json", help="also write the rows to this file")
    args = p.parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s]
    except ValueError:
        p.error(f"--sizes must be integers, got {args.sizes!r}")
    if not sizes or min(sizes) < 4 or args.ticks < 1:
        p.error("--sizes need at least 4 junctions each and --ticks at least 1")
    rows = []
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average {load:.2f} on {os.cpu_count()} CPUs (timings grow with other work on the machine)")
    print(f"{'junctions':>9} {'edges':>7} {'lanes':>7} {'step p50 ms':>11} {'step p99 ms':>11} {'max ms':>8} "
          f"{'p50 / 20 ms':>11}")
    for n in sizes:
        r = bench(n, args.ticks)
        r["load_avg_1min"] = load
        rows.append(r)
        print(f"{r['junctions']:9d} {r['edges']:7d} {r['lanes']:7d} {r['step_ms_p50']:11.3f} {r['step_ms_p99']:11.3f} "
              f"{r['step_ms_max']:8.3f} {r['p50_over_limit']:11.3f}", flush=True)
    if args.json:
        write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
