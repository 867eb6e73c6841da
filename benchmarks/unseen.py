"""Networks and demand the repository has never seen: ``python -m benchmarks.unseen``.

Generates fresh scenarios from a seed drawn at start (printed; ``--seed`` repeats a run), then
runs every controller on each with ``traffic-engine evaluate`` through ``benchmarks.control``
(the same table, the same ratio of ``adaptive`` to the best SUMO controller):

- ``town``: an irregular town from ``netgenerate --rand`` (the demo's generator with other
  seeds): 30-60 junctions, some with five approaches, 8-16 of them signalised, main roads of two
  lanes and side roads of one, an extra lane on signalised approaches;
- ``grid``: a 3x3 to 5x5 grid of signals, 1-3 lanes, 150-300 m blocks, left-turn lanes or not;
- ``arterial``: one signalised main road of 5-8 junctions (2-3 lanes, a left-turn lane) crossed
  by one-lane side streets.

Demand is peaked: random trips (fringe to fringe mostly) over 30 min, their rate rising to a peak
in the middle and falling again. Every run goes on until every vehicle has arrived (at most 3 h).

Each run's outcome is kept under the seed's folder (``runs/``, keyed by the generated scenarios'
files and the engine's source code), so a run that was interrupted, or is repeated with the same
seed and code, goes on from what is done; ``--fresh`` runs everything again.

After the table it checks what the closed loop promises on any network: with the engine's
controllers every vehicle arrives, no collision happens at a signal and the conflict monitor
sees no safety violation. Exit status 1 when that fails.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import sys
import time
from pathlib import Path

from benchmarks import SOURCES, control, names, parser, write_json
from controllers import CONTROLLERS
from engine.kernel_cache import sources_digest
from sim.scenarios.make_demo import build_net, build_routes, write_sumocfg
from sim.tools import run_tool

KINDS = ("town", "grid", "arterial")
DEMAND_S = 1800
PEAK = (2.0, 1.4, 1.0, 0.8, 1.0, 1.4, 2.0)  # period multipliers over the demand window: a peak


def _routes(net: Path, out: Path, seed: int, base_period: float) -> None:
    build_routes(net, out, seed=seed, period=[round(base_period * m, 3) for m in PEAK], end=DEMAND_S)


def make_town(d: Path, rng: random.Random, seed: int) -> Path:
    net = d / "town.net.xml"
    junctions = rng.randint(30, 60)
    build_net(net, seed=seed, main_fraction=rng.uniform(0.5, 0.7), n_signals=rng.randint(8, 16),
              junctions=junctions, five_way=1.0)
    # (not scaled by the junction count: a town of 60 junctions has no more roads into it than
    # one of 35, and seed 2 with the period scaled so jammed under every controller, SUMO's static
    # programs leaving 162 vehicles to teleport)
    _routes(net, d / "town.rou.xml", seed, base_period=rng.uniform(0.85, 1.15))
    return _cfg(d, "town")


# a signal at every junction of a grid (not its dead ends): netconvert guesses one only where the
# incoming lanes' speeds add up to its threshold (250 km/h by default), which four one-lane 50 km/h
# roads do not reach (seed 4 drew such a grid, and it had no signal at all)
SIGNAL_EVERY_JUNCTION = ("--tls.guess", "true", "--tls.guess.threshold", "0")


def make_grid(d: Path, rng: random.Random, seed: int) -> Path:
    net = d / "grid.net.xml"
    n, lanes, length = rng.randint(3, 5), rng.randint(1, 3), rng.randint(150, 300)
    opts = ["--grid", "--grid.x-number", str(n), "--grid.y-number", str(rng.randint(3, 5)),
            "--grid.length", str(length), "--grid.attach-length", str(length),
            "--default.lanenumber", str(lanes), "--default.speed", "13.89", *SIGNAL_EVERY_JUNCTION,
            "--no-turnarounds.except-deadend", "true", "--seed", str(seed), "-o", str(net)]
    if rng.random() < 0.5:
        opts[-2:-2] = ["--turn-lanes", "1", "--turn-lanes.length", "40"]
    run_tool("netgenerate", opts)
    _routes(net, d / "grid.rou.xml", seed, base_period=rng.uniform(1.6, 2.4) / lanes)
    return _cfg(d, "grid")


def make_arterial(d: Path, rng: random.Random, seed: int) -> Path:
    net = d / "arterial.net.xml"
    n = rng.randint(5, 8)
    run_tool("netgenerate", [
        "--grid", "--grid.x-number", str(n), "--grid.y-number", "1",
        "--grid.x-length", str(rng.randint(180, 350)), "--grid.attach-length", str(rng.randint(150, 250)),
        "--default.lanenumber", str(rng.randint(2, 3)), "--default.speed", "13.89",
        "--turn-lanes", "1", "--turn-lanes.length", "50", *SIGNAL_EVERY_JUNCTION,
        "--no-turnarounds.except-deadend", "true", "--seed", str(seed), "-o", str(net)])
    _routes(net, d / "arterial.rou.xml", seed, base_period=rng.uniform(1.0, 1.5) * 6 / n)
    return _cfg(d, "arterial")


MAKERS = {"town": make_town, "grid": make_grid, "arterial": make_arterial}


def runs_key(cfgs: list[Path]) -> str:
    """Names the cache of outcomes for these generated scenarios under this code: a digest of the
    sources and of each scenario's network and routes (without their comments, where SUMO's tools
    write the time they ran)."""
    h = hashlib.sha256(sources_digest(packages=SOURCES).encode())
    for cfg in cfgs:
        h.update(cfg.name.encode())
        for f in sorted([*cfg.parent.glob("*.net.xml"), *cfg.parent.glob("*.rou.xml")]):
            h.update(f.name.encode() + b"\0" + re.sub(rb"<!--.*?-->", b"", f.read_bytes(), flags=re.S))
    return h.hexdigest()[:16]


def _cfg(d: Path, name: str) -> Path:
    cfg = d / f"{name}.sumocfg"
    write_sumocfg(cfg, d / f"{name}.net.xml", d / f"{name}.rou.xml", end=DEMAND_S + 3 * 3600)
    return cfg


def promises(rows: list[dict]) -> list[str]:
    """What the engine's controllers broke: a vehicle that did not arrive, a collision at a signal,
    a safety violation (one line each)."""
    broken = []
    for r in rows:
        if r["controller_key"] not in CONTROLLERS:
            continue
        at_signals = r.get("collisions_where", {}).get("at_signals", 0)
        if r["trips_completed"] < r["trips_total"]:
            broken.append(f"{r['scenario']} {r['label']}: {r['trips_completed']}/{r['trips_total']} trips")
        if at_signals:
            standing = r.get("collisions_where", {}).get("at_signals_victim_standing_in_junction", 0)
            broken.append(f"{r['scenario']} {r['label']}: {at_signals} collision(s) at signals "
                          f"({standing} into a vehicle standing in the junction)")
        if r["safety_violations"]:
            broken.append(f"{r['scenario']} {r['label']}: {r['safety_violations']} safety violation(s)")
    return broken


def main(argv: list[str] | None = None) -> int:
    p = parser("unseen", __doc__)
    p.add_argument("--seed", type=int, help="draws the scenarios (default: from the clock, printed)")
    p.add_argument("--kinds", default=",".join(KINDS), help="comma-separated, of %(default)s")
    p.add_argument("--count", type=int, default=1, help="scenarios of each kind (default %(default)s)")
    p.add_argument("--controllers", default=",".join(sorted(CONTROLLERS) + list(control.SUMO)),
                   help="comma-separated engine and SUMO controllers (default %(default)s)")
    p.add_argument("--dir", default="reports/unseen", help="where the scenarios and the table go "
                   "(default %(default)s; a folder per seed)")
    p.add_argument("--end", type=float, help="simulate at most this many seconds (default: until every "
                   "vehicle has arrived, at most 3 h; a shorter run leaves vehicles on the road)")
    p.add_argument("--box-cameras", action=argparse.BooleanOptionalAction, default=True,
                   help="the engine's controllers get box cameras, as evaluate does by default (default: on; "
                   "--no-box-cameras: loops and approach cameras only)")
    p.add_argument("--fresh", action="store_true", help="run everything again, even what a run with this "
                   "seed and code already did")
    p.add_argument("--json", help="write the rows, the summary and what broke to this file")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    args = p.parse_args(argv)
    kinds = names(p, args.kinds, KINDS, "kind")
    names(p, args.controllers, sorted(CONTROLLERS) + list(control.SUMO), "controller")
    if args.count < 1:
        p.error("--count must be at least 1")
    seed = args.seed if args.seed is not None else int(time.time()) % 100_000
    print(f"benchmarks.unseen: seed {seed}", file=sys.stderr, flush=True)
    rng = random.Random(seed)
    root = Path(args.dir) / f"seed{seed}"
    cfgs = []
    for kind in kinds:
        for i in range(args.count):
            d = root / f"{kind}{i}"
            d.mkdir(parents=True, exist_ok=True)
            cfg = MAKERS[kind](d, rng, rng.randrange(1, 1_000_000))
            if "<tlLogic " not in (d / f"{kind}.net.xml").read_text():  # a generator that failed its kind
                print(f"benchmarks.unseen: {kind}{i} (seed {seed}) came out without a signal", file=sys.stderr)
                return 2
            cfgs.append(cfg.rename(d / f"{kind}{i}.sumocfg"))
    rows_json = root / "rows.json"
    code = control.main(["--scenarios", ",".join(str(c) for c in cfgs), "--controllers", args.controllers,
                         "--cache", str(root / "runs" / runs_key(cfgs)), "--markdown", str(root / "unseen.md"),
                         "--json", str(rows_json)]
                        + (["--end", f"{args.end:g}"] if args.end is not None else [])
                        + (["--box-cameras"] if args.box_cameras else ["--no-box-cameras"])
                        + (["--fresh"] if args.fresh else [])
                        + (["-q"] if args.quiet else []))
    if code:
        return code
    out = json.loads(rows_json.read_text())
    broken = promises(out["rows"])
    print("engine controllers: " + ("every vehicle arrived, no collision at a signal, no safety violation"
                                    if not broken else "; ".join(broken)))
    if args.json:
        write_json(args.json, {**out, "seed": seed, "broken": broken})
    return 1 if broken else 0


if __name__ == "__main__":
    raise SystemExit(main())
