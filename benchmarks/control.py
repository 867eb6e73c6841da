"""Every controller on every RESCO scenario, one table: ``python -m benchmarks.control``.

Each scenario runs under each controller with ``traffic-engine evaluate`` (the engine's
controllers in the closed loop over the live sockets, seeing only detectors; SUMO's own static,
actuated and delay-based programs rebuilt by netconvert), until every vehicle has arrived (at
most 3 h, or ``--end``). The table gives, per scenario and controller, mean time loss, waiting
and travel time, teleports, collisions (and how many at signals) and safety violations; then
per scenario the limit measured in the same run, the best SUMO controller, and the ratio of
``adaptive`` to it (the issue's target: at most 0.85). ``--fail-detectors 0.2`` adds a run of
``adaptive`` with that fraction of detectors failed and its ratio to ``adaptive`` with all
working (the target: at most 1.10). The engine's controllers (and that failure case) run with
the detectors ``evaluate`` places by default, box cameras over every signal link's path through
its junction among them; ``--no-box-cameras`` leaves those out. SUMO's programs read no
detector of ours and run the same either way.

A run's outcome is kept as JSON under ``--cache`` (keyed by scenario, controller, horizon,
failure case, SUMO seed and engine config, and for the engine's controllers by the source code,
as ``benchmarks.unseen``) and reused by later invocations, so a long table can be built up
piecewise and a code change runs the engine again; ``--fresh`` ignores what is cached.

One run is one draw of SUMO's driver randomness, and some networks swing widely with it
(ingolstadt21, whose junction pair locks up at random: adaptive 65.8 to 113.7 s over SUMO seeds
0-4, 28 Nov). ``--sumo-seed default,1-4`` runs every controller on each of those seeds (the same
for all; ``default`` is SUMO's own, as BASELINES.md) and the table gives per scenario and
controller the mean of the times over the seeds, the counts (trips, teleports, collisions,
safety violations) summed over them, and the time loss of each seed; the ratios are of those
means, the best SUMO controller the one of lowest mean. Each seed's run is cached on its own.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from benchmarks import SOURCES, names, parser, write_json
from controllers import CONTROLLERS
from engine.kernel_cache import sources_digest
from sim.baselines import SUMO_CONTROLLERS
from sim.evaluate import EvaluationError, evaluate

RESCO = Path(__file__).resolve().parents[1].parent / "shared" / "scenarios" / "resco"
SCENARIOS = ("cologne1", "cologne3", "cologne8", "ingolstadt1", "ingolstadt7", "ingolstadt21", "grid4x4",
             "arterial4x4")
SUMO = tuple(SUMO_CONTROLLERS)  # sumo-static, sumo-actuated, sumo-delay-based
TARGET_RATIO = 0.85
TARGET_DEGRADATION = 1.10
FAILED = "adaptive@failed"

COLUMNS = [
    ("scenario", "scenario", "{}"),
    ("controller", "label", "{}"),
    ("time loss (s)", "mean_time_loss_s", "{:.1f}"),
    ("waiting (s)", "mean_waiting_time_s", "{:.1f}"),
    ("travel time (s)", "mean_travel_time_s", "{:.1f}"),
    ("trips", "trips_completed", "{}"),
    ("teleports", "teleports", "{}"),
    ("collisions (at signals / of them, victim standing in the junction)", "collisions_cell", "{}"),
    ("safety violations", "safety_violations", "{}"),
]


def scenario_path(name: str, resco: Path) -> Path:
    """A RESCO scenario name, or a path to any ``.sumocfg``."""
    p = Path(name)
    if p.suffix == ".sumocfg":
        return p
    return resco / name / f"{name}.sumocfg"


def add_run_options(p: argparse.ArgumentParser) -> None:
    """The options of how each run goes and is cached, shared with ``benchmarks.collisions``."""
    p.add_argument("--resco", default=str(RESCO), help="folder of the RESCO scenarios (default %(default)s)")
    p.add_argument("--end", type=float, help="simulate at most this many seconds after each scenario's begin "
                   "(default: until every vehicle has arrived, at most 3 h)")
    p.add_argument("--config", help="engine config for the engine's controllers")
    p.add_argument("--cache", default="reports/control-runs",
                   help="keep and reuse each run's outcome here (default %(default)s; '' to disable)")
    p.add_argument("--fresh", action="store_true", help="run again even what is cached")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display")


def scenario_configs(p: argparse.ArgumentParser, args) -> list[Path]:
    """The ``.sumocfg`` of each of ``--scenarios``; exits through ``p.error`` on one missing, or on
    a missing ``--config``."""
    cfgs = [scenario_path(n, Path(args.resco)) for n in args.scenarios.split(",") if n]
    missing = [str(c) for c in cfgs if not c.exists()]
    if missing:
        p.error(f"scenario(s) not found: {', '.join(missing)}")
    if args.config and not Path(args.config).exists():
        p.error(f"config not found: {args.config}")
    return cfgs


def seed_list(text: str) -> list[int | None]:
    """``1-5`` or ``1,3,7`` (or both: ``1-3,9``); ``default`` is SUMO's own seed (None)."""
    out: list[int | None] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if part == "default":
            out.append(None)
            continue
        lo, _, hi = part.partition("-")
        try:
            a, b = int(lo), int(hi or lo)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a seed or a range of seeds: {part!r}") from None
        if b < a:
            raise argparse.ArgumentTypeError(f"empty range of seeds: {part!r}")
        out.extend(range(a, b + 1))
    if not out:
        raise argparse.ArgumentTypeError("no seed given")
    return list(dict.fromkeys(out))


def seed_names(seeds: list[int | None]) -> str:
    """``seeds`` as :func:`seed_list` reads them: ``default, 1, 2``."""
    return ", ".join("default" if x is None else str(x) for x in seeds)


def _key(cfg: Path, controller: str, end: float | None, fail: float | None, seed: int, config: str | None,
         box: bool = False, sumo_seed: int | None = None) -> str:
    h = hashlib.sha1()
    h.update(json.dumps([str(cfg.resolve()), controller, end, fail, seed] + (["box"] if box else [])
                        + ([] if sumo_seed is None else [f"sumo-seed {sumo_seed}"])).encode())
    if config and controller in CONTROLLERS:
        h.update(Path(config).read_bytes())
    if controller.split("@")[0] in CONTROLLERS:  # the engine's outcome follows its code
        h.update(sources_digest(packages=SOURCES).encode())
    return f"{cfg.stem}.{controller}.{h.hexdigest()[:12]}.json"


def run_one(cfg: Path, controller: str, args) -> dict:
    fail = args.fail_detectors if controller == FAILED else None
    name = "adaptive" if controller == FAILED else controller
    box = bool(args.box_cameras) and name in CONTROLLERS
    cache = Path(args.cache) / _key(cfg, controller, args.end, fail, args.seed, args.config, box,
                                    args.sumo_seed) if args.cache else None
    if cache is not None and cache.exists() and not args.fresh:
        return json.loads(cache.read_text())
    seed = "" if args.sumo_seed is None else f" (SUMO seed {args.sumo_seed})"
    print(f"-- {cfg.stem}: {controller}{seed}", file=sys.stderr, flush=True)
    r = evaluate(cfg, controller=name, end=None if args.end is None else _end(cfg, args.end),
                 config=args.config if name in CONTROLLERS else None, progress=not args.quiet,
                 fail_detectors=fail, seed=args.seed, box_cameras=box, sumo_seed=args.sumo_seed)
    if cache is not None:
        write_json(cache, r)
    return r


def _end(cfg: Path, seconds: float) -> float:
    """``--end`` counts from the scenario's begin."""
    from sim.scenario import load_scenario

    return load_scenario(cfg).begin + seconds


def _collisions_cell(r: dict) -> str:
    w = r.get("collisions_where", {})
    return f"{r['collisions']} ({w.get('at_signals', 0)} / {w.get('at_signals_victim_standing_in_junction', 0)})"


SUMMED = ("trips_total", "trips_completed", "teleports", "collisions", "safety_violations")
MEANS = ("mean_time_loss_s", "mean_waiting_time_s", "mean_travel_time_s")


def over_seeds(runs: list[dict]) -> dict:
    """One controller's runs on one scenario, one per SUMO seed -> one row: the times are the mean
    over the seeds, the counts their sum, and ``by_seed`` keeps each seed's figures."""
    if len(runs) == 1:
        return runs[0]
    row = {k: round(sum(r[k] for r in runs) / len(runs), 2) for k in MEANS}
    row |= {k: sum(r[k] for r in runs) for k in SUMMED}
    where: dict[str, int] = {}
    for r in runs:
        for k, v in r.get("collisions_where", {}).items():
            if isinstance(v, int):
                where[k] = where.get(k, 0) + v
    row["collisions_where"] = where
    row["sumo_seeds"] = [r.get("sumo_seed") for r in runs]
    row["by_seed"] = [{"sumo_seed": r.get("sumo_seed"), **{k: r[k] for k in MEANS[:1] + SUMMED[2:]}} for r in runs]
    for k in ("box_cameras", "failed_detectors"):
        if k in runs[0]:
            row[k] = runs[0][k]
    return row


def summarise(rows: list[dict]) -> list[dict]:
    """Per scenario: the best SUMO controller, adaptive's ratio to it, and the failure case's."""
    out = []
    for sc in dict.fromkeys(r["scenario"] for r in rows):
        here = {r["label"]: r for r in rows if r["scenario"] == sc}
        sumo = [here[c] for c in SUMO if c in here]
        best = min(sumo, key=lambda r: r["mean_time_loss_s"]) if sumo else None
        ad = here.get("adaptive")
        s = {"scenario": sc, "best_sumo": best["label"] if best else None,
             "best_sumo_time_loss_s": best["mean_time_loss_s"] if best else None,
             "best_sumo_teleports": best["teleports"] if best else None,
             "adaptive_time_loss_s": ad["mean_time_loss_s"] if ad else None,
             "adaptive_teleports": ad["teleports"] if ad else None}
        s["ratio"] = round(ad["mean_time_loss_s"] / best["mean_time_loss_s"], 3) if ad and best else None
        s["meets_target"] = None if s["ratio"] is None else bool(
            s["ratio"] <= TARGET_RATIO and ad["safety_violations"] == 0 and ad["teleports"] <= best["teleports"])
        f = here.get(FAILED)
        s["failed_ratio"] = round(f["mean_time_loss_s"] / ad["mean_time_loss_s"], 3) if f and ad else None
        if ad and best and "by_seed" in ad and "by_seed" in best:  # each seed's ratio, beside that of the means
            s["ratio_by_seed"] = [round(a["mean_time_loss_s"] / b["mean_time_loss_s"], 3)
                                  for a, b in zip(ad["by_seed"], best["by_seed"])]
        if f and ad and "by_seed" in f and "by_seed" in ad:
            s["failed_ratio_by_seed"] = [round(a["mean_time_loss_s"] / b["mean_time_loss_s"], 3)
                                         for a, b in zip(f["by_seed"], ad["by_seed"])]
        out.append(s)
    return out


def markdown(rows: list[dict], summary: list[dict], args) -> str:
    seeds = len(args.seeds) > 1
    cols = COLUMNS + ([("time loss per SUMO seed (s)", "seeds_cell", "{}")] if seeds else [])
    lines = ["| " + " | ".join(c[0] for c in cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    for r in rows:
        lines.append("| " + " | ".join("-" if r.get(k) is None else f.format(r[k]) for _, k, f in cols) + " |")
    fail = args.fail_detectors is not None
    lines += ["", "| scenario | best SUMO | its time loss (s) | adaptive (s) | ratio (target <= 0.85) | meets |"
              + (" per SUMO seed |" if seeds else "")
              + (" adaptive failed / working (target <= 1.10) |" if fail else "")
              + (" per SUMO seed |" if fail and seeds else ""),
              "| --- | --- | --- | --- | --- | --- |" + " --- |" * (seeds + fail + (fail and seeds))]
    fmt = lambda v, f="{:.1f}": "-" if v is None else f.format(v)  # noqa: E731
    each = lambda v: "-" if not v else " / ".join(f"{x:.3f}" for x in v)  # noqa: E731
    for s in summary:
        met = "-" if s["meets_target"] is None else ("yes" if s["meets_target"] else "no")
        line = (f"| {s['scenario']} | {s['best_sumo'] or '-'} | {fmt(s['best_sumo_time_loss_s'])} | "
                f"{fmt(s['adaptive_time_loss_s'])} | {fmt(s['ratio'], '{:.3f}')} | {met} |")
        if seeds:
            line += f" {each(s.get('ratio_by_seed'))} |"
        if fail:
            line += f" {fmt(s['failed_ratio'], '{:.3f}')} |"
            if seeds:
                line += f" {each(s.get('failed_ratio_by_seed'))} |"
        lines.append(line)
    if seeds:
        lines += ["", f"SUMO seeds {seed_names(args.seeds)}: times are means over the seeds, counts their sums; "
                  "ratios of the means."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = parser("control", __doc__)
    p.add_argument("--scenarios", default=",".join(SCENARIOS),
                   help="comma-separated RESCO names or .sumocfg paths (default: all eight)")
    p.add_argument("--controllers", default=",".join(sorted(CONTROLLERS) + list(SUMO)),
                   help="comma-separated engine and SUMO controllers (default %(default)s)")
    add_run_options(p)
    p.add_argument("--fail-detectors", type=float, metavar="FRACTION",
                   help="also run adaptive with this fraction of detectors failed (silent or stuck)")
    p.add_argument("--seed", type=int, default=0, help="which detectors fail (default %(default)s)")
    p.add_argument("--sumo-seed", type=seed_list, metavar="SEEDS", dest="seeds", default=[None],
                   help="SUMO's own random seed for every run (default: SUMO's, as BASELINES.md): the same "
                        "table under other driver randomness; several (e.g. default,1-4) run each on every "
                        "one and give the mean")
    p.add_argument("--box-cameras", action=argparse.BooleanOptionalAction, default=True,
                   help="the engine's controllers (and the failure case) get a box camera over every signal "
                   "link's path through its junction, as evaluate does by default (default: on; "
                   "--no-box-cameras: loops and approach cameras only)")
    p.add_argument("--markdown", default="reports/control.md", help="write the table here (default %(default)s)")
    p.add_argument("--json", help="also write the rows (and the per-scenario summary) to this file")
    args = p.parse_args(argv)
    ctls = names(p, args.controllers, sorted(CONTROLLERS) + list(SUMO), "controller")
    if args.fail_detectors is not None:
        if not 0.0 <= args.fail_detectors <= 1.0:
            p.error("--fail-detectors must be a fraction within 0..1")
        if "adaptive" not in ctls:
            p.error("--fail-detectors compares adaptive with itself: include adaptive in --controllers")
        ctls.append(FAILED)
    cfgs = scenario_configs(p, args)
    rows = []
    for cfg in cfgs:
        for ctl in ctls:
            runs = []
            for seed in args.seeds:
                try:
                    runs.append(run_one(cfg, ctl, argparse.Namespace(**{**vars(args), "sumo_seed": seed})))
                except EvaluationError as exc:
                    at = "" if seed is None else f" (SUMO seed {seed})"
                    print(f"benchmarks.control: {cfg.stem} {ctl}{at}: {exc}", file=sys.stderr)
                    return 1
            r = over_seeds(runs)
            label = f"adaptive, {args.fail_detectors:.0%} detectors failed" if ctl == FAILED else ctl
            row = {**r, "scenario": cfg.stem, "label": label, "controller_key": ctl,
                   "collisions_cell": _collisions_cell(r)}
            if len(runs) > 1:
                row["seeds_cell"] = " / ".join(f"{x['mean_time_loss_s']:.1f}" for x in r["by_seed"])
            rows.append(row)
    summary = summarise([{**r, "label": r["controller_key"]} for r in rows])
    text = markdown(rows, summary, args)
    print(text, end="")
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        horizon = "until every vehicle arrived (at most 3 h)" if args.end is None else f"first {args.end:g} s"
        boxes = ("; the engine's controllers with box cameras" if args.box_cameras
                 else "; the engine's controllers without box cameras")
        Path(args.markdown).write_text(f"# Controllers on the RESCO scenarios\n\nEach run: {horizon}{boxes}; "
                                       "`python -m benchmarks.control` wrote this.\n\n" + text)
    if args.json:
        write_json(args.json, {"rows": rows, "summary": summary})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
