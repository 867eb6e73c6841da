"""How good the live estimates are, on every RESCO scenario: ``python -m benchmarks.accuracy``.

Each scenario runs once with ``traffic-engine evaluate --detector-coverage F --seed N`` (default
a random half of the edges instrumented, ``adaptive`` in the loop): the engine sees only the
detectors on those edges and publishes conditions on every edge; the ``estimation`` block of the
outcome compares them with SUMO's own edge data in 5-minute bins (``sim.estimation``). The table
gives, per scenario, each figure beside its target:

- unobserved edges: flow MAPE (at most 15 %) and share of edge-bins with GEH below 5 (at least
  0.85);
- observed edges: flow MAPE (at most 5 %);
- every edge: travel time MAPE (at most 10 %), queue mean absolute error (at most 2 vehicles);
  speed MAPE, which has no target, for reference;

and which targets the scenario misses. The limit to read them against is printed too: the same
flow MAPE and GEH share of a guess that knew each unobserved edge's true mean flow over the whole
run (but not its 5-minute bins), from the same run's truth. On networks whose demand ramps up
over the scored time it is no bound, only a yardstick; where the estimate is no better than it,
the bins' own ups and downs are beyond reach.

Any ``.sumocfg`` may be given instead of a RESCO name (for instance the scenarios
``python -m benchmarks.unseen`` generates). Runs are cached as in ``benchmarks.control`` (keyed
by scenario, coverage, seed, horizon, config and the engine's source code).
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import tempfile
from pathlib import Path

from benchmarks import SOURCES, names, parser, write_json
from benchmarks.control import SCENARIOS, _end, add_run_options, scenario_configs
from controllers import CONTROLLERS
from engine.kernel_cache import sources_digest
from network import compile_network
from network.layout import instrumented_edges, load_layout
from sim.estimation import BIN_S, MIN_FLOW_VPH, read_edgedata, true_flow_vph
from sim.evaluate import EvaluationError, evaluate
from sim.scenario import load_scenario

TARGETS = {  # figure: (limit, the better side)
    "flow_mape_unobserved": (15.0, "max"),
    "flow_geh_lt5_share_unobserved": (0.85, "min"),
    "flow_mape_observed": (5.0, "max"),
    "travel_time_mape": (10.0, "max"),
    "queue_mae_veh": (2.0, "max"),
}
COLUMNS = [
    ("unobserved flow MAPE % (<= 15)", "flow_mape_unobserved", "{:.1f}"),
    ("GEH < 5 share (>= 0.85)", "flow_geh_lt5_share_unobserved", "{:.2f}"),
    ("observed flow MAPE % (<= 5)", "flow_mape_observed", "{:.1f}"),
    ("travel time MAPE % (<= 10)", "travel_time_mape", "{:.1f}"),
    ("queue MAE veh (<= 2)", "queue_mae_veh", "{:.2f}"),
    ("speed MAPE %", "speed_mape", "{:.1f}"),
]


def misses(est: dict) -> list[str]:
    """The targets ``est`` (an ``estimation`` block) does not meet; a figure that could not be
    scored (no edge-bin to score) counts as missed."""
    out = []
    for k, (limit, side) in TARGETS.items():
        v = est.get(k)
        if v is None or (v > limit if side == "max" else v < limit):
            out.append(k)
    return out


def yardstick(truth: Path, instrumented_ids: set[str]) -> dict:
    """Flow MAPE and GEH share of unobserved edges for a guess of each edge's true mean flow over
    the run's whole 5-minute bins, scored on those bins as the engine's estimate is."""
    bins = [(b1 - b0, data) for b0, b1, data in read_edgedata(truth)] if truth.is_file() else []
    flows: dict[str, list[float]] = {}
    for span, data in bins:
        if abs(span - BIN_S) > 1e-6:
            continue  # a bin the run ended within
        for edge, a in data.items():
            if edge not in instrumented_ids:
                flows.setdefault(edge, []).append(true_flow_vph(a, span))
    ape, geh = [], []
    for series in flows.values():
        mean = sum(series) / len(series)
        for f in series:
            if f >= MIN_FLOW_VPH:
                ape.append(abs(mean - f) / f)
            if mean + f > 0:
                geh.append(math.sqrt(2 * (mean - f) ** 2 / (mean + f)) < 5)
    return {"flow_mape_unobserved": round(100 * sum(ape) / len(ape), 2) if ape else None,
            "flow_geh_lt5_share_unobserved": round(sum(geh) / len(geh), 4) if geh else None}


def _key(cfg: Path, args) -> str:
    h = hashlib.sha1()
    h.update(json.dumps([str(cfg.resolve()), args.controller, args.coverage, args.seed, args.end]).encode())
    if args.config:
        h.update(Path(args.config).read_bytes())
    h.update(sources_digest(packages=SOURCES).encode())
    return f"{cfg.stem}.accuracy.{h.hexdigest()[:12]}.json"


def run_one(cfg: Path, args) -> dict:
    """The outcome of one evaluation with its ``estimation`` block and the yardstick beside it."""
    cache = Path(args.cache) / _key(cfg, args) if args.cache else None
    if cache is not None and cache.exists() and not args.fresh:
        return json.loads(cache.read_text())
    print(f"-- {cfg.stem}: {args.controller}, {args.coverage:.0%} of edges instrumented", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="te-accuracy-") as tmp:
        r = evaluate(cfg, controller=args.controller, end=None if args.end is None else _end(cfg, args.end),
                     config=args.config, progress=not args.quiet, detector_coverage=args.coverage,
                     seed=args.seed, workdir=tmp)
        net = compile_network(load_scenario(cfg).net)
        observed = instrumented_edges(net, load_layout(Path(tmp) / "detectors.json"))
        r["yardstick"] = yardstick(Path(tmp) / "edgedata.xml",
                                   {net.edge_ids[k] for k in range(net.n_edges) if observed[k]})
    if cache is not None:
        write_json(cache, r)
    return r


def markdown(rows: list[dict]) -> str:
    head = ["scenario"] + [c[0] for c in COLUMNS] + ["yardstick: unobserved MAPE / GEH share", "misses"]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    fmt = lambda v, f: "-" if v is None else f.format(v)  # noqa: E731
    for r in rows:
        e, y = r["estimation"], r["yardstick"]
        cells = [r["scenario"]] + [fmt(e.get(k), f) for _, k, f in COLUMNS]
        cells.append(f"{fmt(y['flow_mape_unobserved'], '{:.1f}')} / {fmt(y['flow_geh_lt5_share_unobserved'], '{:.2f}')}")
        cells.append(", ".join(r["misses"]) or "none")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = parser("accuracy", __doc__)
    p.add_argument("--scenarios", default=",".join(SCENARIOS),
                   help="comma-separated RESCO names or .sumocfg paths (default: all eight)")
    p.add_argument("--coverage", type=float, default=0.5,
                   help="fraction of edges that get detectors (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="which edges get them (default %(default)s)")
    p.add_argument("--controller", default="adaptive", help="the engine's controller in the loop (default %(default)s)")
    add_run_options(p)
    p.set_defaults(cache="reports/accuracy-runs")
    p.add_argument("--markdown", default="reports/accuracy.md", help="write the table here (default %(default)s)")
    p.add_argument("--json", help="also write the rows to this file")
    args = p.parse_args(argv)
    names(p, args.controller, sorted(CONTROLLERS), "controller")
    if not 0.0 < args.coverage <= 1.0:
        p.error("--coverage must be a fraction within (0, 1]")
    cfgs = scenario_configs(p, args)
    rows = []
    for cfg in cfgs:
        try:
            r = run_one(cfg, args)
        except EvaluationError as exc:
            print(f"benchmarks.accuracy: {cfg.stem}: {exc}", file=sys.stderr)
            return 1
        if not r.get("estimation"):
            print(f"benchmarks.accuracy: {cfg.stem}: the outcome has no estimation block", file=sys.stderr)
            return 1
        rows.append({"scenario": cfg.stem, "coverage": args.coverage, "seed": args.seed,
                     "estimation": r["estimation"], "yardstick": r["yardstick"], "misses": misses(r["estimation"]),
                     "mean_time_loss_s": r.get("mean_time_loss_s"), "sim_end_s": r.get("sim_end_s")})
    text = markdown(rows)
    print(text, end="")
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        horizon = "until every vehicle arrived (at most 3 h)" if args.end is None else f"the first {args.end:g} s"
        Path(args.markdown).write_text(
            f"# Estimation accuracy on the RESCO scenarios\n\n{args.coverage:.0%} of the edges instrumented "
            f"(seed {args.seed}), `{args.controller}` in the loop, {horizon}; `python -m benchmarks.accuracy` "
            "wrote this.\n\n" + text)
    if args.json:
        write_json(args.json, {"rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
