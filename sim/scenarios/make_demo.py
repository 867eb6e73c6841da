"""Build the bundled demo town in ``sim/scenarios/demo/``.

The demo town is a small, irregular road network generated from fixed seeds,
so re-running this script reproduces the committed files (apart from the
"generated on" date in SUMO's header comments, and given the same SUMO
version).  It produces:

``demo.net.xml``
    35 junctions placed at random by ``netgenerate --rand`` (roads 120-250 m
    long, no sharp angles, at most four approaches): 13 dead ends on the
    outskirts where traffic enters and leaves, 9 bends, 7 three-way and 6
    four-way intersections; speed limit 13.89 m/s (50 km/h) everywhere.
    Roads are then classed by how much fringe-to-fringe through traffic their
    shortest paths carry (edge betweenness): the busiest 60 % are two-lane
    main roads with right of way, the rest one-lane side roads.  The 10
    busiest intersections (four-way ones weighted double) get traffic lights
    with SUMO's default static programs (``netconvert --tls.set``); their
    approaches get one extra lane, which netconvert makes a left-turn lane
    with a protected left phase where it can.  The other intersections are
    right-of-way (priority) junctions.

``demo.rou.xml``
    1200 passenger cars departing over the first 15 minutes (one every
    0.75 s), mostly from and to the outskirts (``randomTrips.py
    --fringe-factor``), with routes computed by duarouter (fastest path in
    the empty network).

``demo.sumocfg``
    Ties the two together; simulated time 0..1200 s, enough for every
    vehicle to arrive under SUMO's static programs (last arrival ~1140 s)
    and under actuated ones.

Run it with the project's virtualenv (SUMO comes from the ``eclipse-sumo``
wheel)::

    .venv/bin/python sim/scenarios/make_demo.py            # (re)build
    .venv/bin/python sim/scenarios/make_demo.py --check    # build + verify

``--check`` runs the scenario in SUMO twice, once with the static programs
as generated and once after ``netconvert --tls.rebuild --tls.default-type
actuated``, and fails unless every vehicle arrives with no teleports and no
collisions.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # executed as a script: make ``sim`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sim.tools import run_python_tool, run_tool  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_OUTDIR = HERE / "demo"
NAME = "demo"

# --- network -----------------------------------------------------------------
NET_SEED = 6
RAND_OPTIONS = [
    "--rand",
    "--rand.iterations", "35",          # -> 35 junctions
    "--rand.min-distance", "120",
    "--rand.max-distance", "250",
    "--rand.min-angle", "60",           # no sliver junctions
    # relative probabilities for a junction to get 1..6 neighbours
    "--rand.neighbor-dist1", "1",
    "--rand.neighbor-dist2", "3",
    "--rand.neighbor-dist3", "10",
    "--rand.neighbor-dist4", "6",
    "--rand.neighbor-dist5", "0",       # at most four approaches
    "--rand.neighbor-dist6", "0",
    "--default.speed", "13.89",
    "--default.lanenumber", "1",
]
MAIN_ROAD_FRACTION = 0.6  # share of roads (by through-traffic load) with 2 lanes
N_SIGNALS = 10            # busiest 3/4-approach junctions get a traffic light
FOUR_WAY_WEIGHT = 2.0     # ranking bonus for four-approach junctions

# --- demand ------------------------------------------------------------------
TRIP_SEED = 3
DEMAND_END = 900          # s; vehicles depart in [0, DEMAND_END)
PERIOD = 0.75             # s between departures (network-wide) -> 1200 cars
SIM_END = 1200            # s
TRIP_OPTIONS = [
    "--fringe-factor", "3",             # favour trips from/to the outskirts
    "--min-distance", "300",
    "--remove-loops",
    "--trip-attributes", 'departLane="best" departSpeed="max"',
]


@dataclass
class DemoFiles:
    net: Path
    routes: Path
    sumocfg: Path


def _road_loads(nodes: dict[str, tuple[float, float]], edges: list[ET.Element]):
    """Undirected road graph weighted by fringe-to-fringe shortest-path load."""
    import networkx as nx

    g = nx.Graph()
    for e in edges:
        a, b = e.get("from"), e.get("to")
        (xa, ya), (xb, yb) = nodes[a], nodes[b]
        g.add_edge(a, b, length=((xa - xb) ** 2 + (ya - yb) ** 2) ** 0.5)
    fringe = sorted(n for n in g if g.degree(n) == 1)
    load = nx.edge_betweenness_centrality_subset(
        g, sources=fringe, targets=fringe, normalized=False, weight="length"
    )
    return g, {frozenset(k): v for k, v in load.items()}


def _rand_options(junctions: int, five_way: float) -> list[str]:
    opts = list(RAND_OPTIONS)
    opts[opts.index("--rand.iterations") + 1] = str(junctions)
    opts[opts.index("--rand.neighbor-dist5") + 1] = f"{five_way:g}"
    return opts


def build_net(
    out: Path,
    seed: int = NET_SEED,
    main_fraction: float = MAIN_ROAD_FRACTION,
    n_signals: int = N_SIGNALS,
    junctions: int = 35,
    five_way: float = 0.0,
) -> None:
    """Random town: netgenerate layout, then road classes and signals by load.

    ``junctions`` is netgenerate's ``--rand.iterations``; ``five_way`` the relative chance (next
    to 6 for four approaches) that a junction gets a fifth approach (0: the demo's, at most four).

    1. ``netgenerate --rand`` lays out junctions and single-lane roads.
    2. Roads are ranked by how many fringe-to-fringe shortest paths use them
       (edge betweenness); the top ``main_fraction`` become two-lane main
       roads (both directions, higher priority), the rest stay one-lane.
    3. The ``n_signals`` busiest junctions with three or four approaches are
       signalized (``netconvert --tls.set``) with SUMO's default static
       programs; all other junctions are right-of-way (priority) junctions.
    """
    # Tools run inside a scratch directory with relative file names, so the
    # provenance comments SUMO writes into the outputs stay reproducible.
    with tempfile.TemporaryDirectory(prefix="make_demo_") as tmp:
        tmpdir = Path(tmp)
        run_tool(
            "netgenerate",
            [*_rand_options(junctions, five_way), "--seed", str(seed),
             "--plain-output-prefix", "raw", "--output-file", "raw.net.xml"],
            cwd=tmpdir,
        )
        nod_tree = ET.parse(tmpdir / "raw.nod.xml")
        edg_tree = ET.parse(tmpdir / "raw.edg.xml")
        nodes = {
            n.get("id"): (float(n.get("x")), float(n.get("y")))
            for n in nod_tree.getroot().iter("node")
        }
        edges = list(edg_tree.getroot().iter("edge"))
        g, load = _road_loads(nodes, edges)

        ranked = sorted(load, key=lambda r: (-load[r], sorted(r)))
        main = set(ranked[: round(main_fraction * len(ranked))])

        def junction_load(n: str) -> float:
            # four-way junctions are much harder to run without signals
            weight = FOUR_WAY_WEIGHT if g.degree(n) >= 4 else 1.0
            return weight * sum(load[frozenset((n, m))] for m in g[n])

        candidates = [n for n in g if 3 <= g.degree(n) <= (5 if five_way > 0 else 4)]
        signals = set(sorted(candidates, key=lambda n: (-junction_load(n), n))[:n_signals])

        for e in edges:
            is_main = frozenset((e.get("from"), e.get("to"))) in main
            lanes = 2 if is_main else 1
            if e.get("to") in signals:
                lanes += 1  # extra (left-turn) lane on signalized approaches
            e.set("numLanes", str(lanes))
            e.set("priority", "3" if is_main else "1")
        edg_tree.write(tmpdir / "town.edg.xml", encoding="UTF-8", xml_declaration=True)
        run_tool(
            "netconvert",
            ["--node-files", "raw.nod.xml", "--edge-files", "town.edg.xml",
             "--tls.set", ",".join(sorted(signals)),
             "--no-turnarounds.except-deadend",
             "--output-file", out.name],
            cwd=tmpdir,
        )
        shutil.copyfile(tmpdir / out.name, out)


def build_routes(
    net: Path,
    out: Path,
    seed: int = TRIP_SEED,
    period: float | list[float] = PERIOD,
    end: float = DEMAND_END,
) -> None:
    """Random trips departing every ``period`` s in [0, ``end``), routed by duarouter.

    Several periods split [0, ``end``) into equal intervals, one period each (a peak: short
    periods in the middle)."""
    periods = period if isinstance(period, (list, tuple)) else [period]
    with tempfile.TemporaryDirectory(prefix="make_demo_") as tmp:
        tmpdir = Path(tmp)
        shutil.copyfile(net, tmpdir / net.name)
        run_python_tool(
            "randomTrips.py",
            [
                "--net-file", net.name,
                "--output-trip-file", "trips.xml",
                "--route-file", out.name,
                "--seed", str(seed),
                "--begin", "0",
                "--end", str(end),
                "--period", *(f"{p:g}" for p in periods),
                *TRIP_OPTIONS,
            ],
            cwd=tmpdir,
        )
        # keep only the route file (not the trips / router side outputs)
        shutil.copyfile(tmpdir / out.name, out)


def write_sumocfg(path: Path, net: Path, routes: Path, end: float = SIM_END) -> None:
    path.write_text(
        f"""<?xml version="1.0" encoding="UTF-8"?>
<!-- generated by sim/scenarios/make_demo.py -->
<configuration xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:noNamespaceSchemaLocation="http://sumo.dlr.de/xsd/sumoConfiguration.xsd">
    <input>
        <net-file value="{net.name}"/>
        <route-files value="{routes.name}"/>
    </input>
    <time>
        <begin value="0"/>
        <end value="{end:g}"/>
    </time>
</configuration>
"""
    )


def build(outdir: Path = DEFAULT_OUTDIR) -> DemoFiles:
    outdir.mkdir(parents=True, exist_ok=True)
    files = DemoFiles(
        net=outdir / f"{NAME}.net.xml",
        routes=outdir / f"{NAME}.rou.xml",
        sumocfg=outdir / f"{NAME}.sumocfg",
    )
    build_net(files.net)
    build_routes(files.net, files.routes)
    write_sumocfg(files.sumocfg, files.net, files.routes)
    return files


# --- verification ------------------------------------------------------------

_STAT_RE = {
    "running": r"Running: (\d+)",
    "waiting": r"Waiting: (\d+)",
    "teleports": r"Teleports: (\d+)",
    "collisions": r"Collisions: (\d+)",
    "route_length": r"Statistics.*?RouteLength: ([\d.]+)",
    "duration": r"Statistics.*?Duration: ([\d.]+)",
    "waiting_time": r"Statistics.*?WaitingTime: ([\d.]+)",
    "time_loss": r"Statistics.*?TimeLoss: ([\d.]+)",
}


def simulate(sumocfg: Path, net: Path | None = None) -> dict[str, float]:
    """Run ``sumocfg`` headless (optionally with another net) and return stats."""
    args = [
        "-c", sumocfg,
        "--time-to-teleport", "300",
        "--collision.check-junctions",
        "--duration-log.statistics",
        "--no-step-log",
    ]
    if net is not None:
        args += ["--net-file", net]
    t0 = time.perf_counter()
    proc = run_tool("sumo", args)
    wall = time.perf_counter() - t0
    text = proc.stdout + proc.stderr
    stats: dict[str, float] = {"wall": wall}
    for key, pattern in _STAT_RE.items():
        m = re.search(pattern, text, re.S)
        stats[key] = float(m.group(1)) if m else 0.0
    m = re.search(r"Vehicles:\s*\n\s*Inserted: (\d+)(?: \(Loaded: (\d+)\))?", text)
    if m:
        stats["inserted"] = float(m.group(1))
        stats["loaded"] = float(m.group(2) or m.group(1))
    stats["ok"] = (
        stats.get("inserted") == stats.get("loaded")
        and stats["running"] == 0
        and stats["waiting"] == 0
        and stats["teleports"] == 0
        and stats["collisions"] == 0
    )
    return stats


def check(files: DemoFiles) -> bool:
    import sumolib

    net = sumolib.net.readNet(str(files.net))
    nodes = net.getNodes()
    degree = Counter(len(n.getIncoming()) for n in nodes)
    tls_nodes = [n for n in nodes if n.getType() == "traffic_light"]
    tls_degree = Counter(len(n.getIncoming()) for n in tls_nodes)
    lanes = Counter(e.getLaneNumber() for e in net.getEdges())
    print(
        f"net: {len(nodes)} junctions ({degree[1]} dead ends, {degree[2]} bends, "
        f"{degree[3]} three-way, {degree[4]} four-way), {len(net.getEdges())} edges "
        f"(lanes: {dict(sorted(lanes.items()))}), {len(tls_nodes)} traffic lights "
        f"({tls_degree[3]} three-way, {tls_degree[4]} four-way)"
    )
    ok = True
    with tempfile.TemporaryDirectory(prefix="make_demo_") as tmp:
        actuated = Path(tmp) / "actuated.net.xml"
        run_tool(
            "netconvert",
            ["-s", files.net, "--tls.rebuild", "--tls.default-type", "actuated",
             "-o", actuated],
        )
        for label, net_override in (("static", None), ("actuated", actuated)):
            s = simulate(files.sumocfg, net_override)
            ok &= bool(s["ok"])
            print(
                f"{label:9s} inserted {s.get('inserted', 0):.0f}/{s.get('loaded', 0):.0f} "
                f"running {s['running']:.0f} teleports {s['teleports']:.0f} "
                f"collisions {s['collisions']:.0f} mean TimeLoss {s['time_loss']:.1f} s "
                f"mean Duration {s['duration']:.1f} s wall {s['wall']:.1f} s "
                f"-> {'OK' if s['ok'] else 'FAIL'}"
            )
    return ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--outdir", type=Path, default=DEFAULT_OUTDIR,
                    help=f"where to write the files (default: {DEFAULT_OUTDIR})")
    ap.add_argument("--check", action="store_true",
                    help="run the scenario in SUMO (static and actuated) and verify it")
    args = ap.parse_args(argv)
    files = build(args.outdir)
    size = sum(p.stat().st_size for p in (files.net, files.routes, files.sumocfg))
    print(f"wrote {files.net}, {files.routes}, {files.sumocfg} ({size / 1024:.0f} KiB)")
    if args.check and not check(files):
        print("demo scenario check FAILED", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
