"""Collisions at signals, ours against SUMO's own programs, over SUMO seeds:
``python -m benchmarks.collisions``.

A collision in a few thousand trips is a rare event, and one run says little about its rate:
the same signal states under other driver randomness may have none, or two. This runs each
scenario under each controller once per SUMO seed (``evaluate --sumo-seed``, the same seeds for
every controller, through ``benchmarks.control``'s runs and cache) and prints, per scenario and
controller: runs, trips, collisions inside signalised junctions (SUMO's junction collision
check), the runs that had any, the rate per 10,000 trips, and the safety violations the bridge's
conflict monitor counted (the signals themselves showing something unsafe).

The limit measured in the same run is SUMO's own programs (``sumo-static``, ``sumo-actuated``,
``sumo-delay-based``, and the network's ``sumo-original``) on the same seeds: what SUMO's
driver model does at those junctions whatever the signals. Each engine controller's rate is
given as a ratio to theirs, pooled (all their collisions at signals over all their trips; ``-``
when that is zero), and the lowest of theirs is in the JSON (``sumo_own_lowest_per_10k``).

Example: ``python -m benchmarks.collisions --scenarios cologne3 --seeds 1-5``.
"""

from __future__ import annotations

import argparse
import sys

from benchmarks import control, names, parser, write_json
from benchmarks.control import seed_list, seed_names
from controllers import CONTROLLERS
from sim.evaluate import EvaluationError

SUMO_OWN = ("sumo-static", "sumo-actuated", "sumo-delay-based", "sumo-original")


def tally(runs: list[dict]) -> dict:
    """Runs of one controller on one scenario (one per seed) -> their collision figures."""
    trips = sum(r["trips_total"] for r in runs)
    at = [r.get("collisions_where", {}).get("at_signals", 0) for r in runs]
    return {"runs": len(runs), "trips": trips, "collisions_at_signals": sum(at),
            "runs_with_collision_at_signals": sum(1 for a in at if a),
            "collisions_elsewhere": sum(r["collisions"] for r in runs) - sum(at),
            "per_10k_trips": round(1e4 * sum(at) / trips, 2) if trips else None,
            "safety_violations": sum(r["safety_violations"] for r in runs),
            "trips_not_completed": sum(r["trips_total"] - r["trips_completed"] for r in runs),
            "mean_time_loss_s": round(sum(r["mean_time_loss_s"] for r in runs) / len(runs), 2)}


def main(argv: list[str] | None = None) -> int:
    p = parser("collisions", __doc__)
    p.add_argument("--scenarios", default="cologne3,ingolstadt21",
                   help="comma-separated RESCO names or .sumocfg paths (default %(default)s)")
    p.add_argument("--controllers", default=",".join(sorted(CONTROLLERS) + list(SUMO_OWN)),
                   help="comma-separated engine and SUMO controllers (default %(default)s)")
    p.add_argument("--seeds", type=seed_list, default=seed_list("1-5"),
                   help="SUMO seeds, e.g. 1-5 or 1,4,9 (default 1-5)")
    control.add_run_options(p)
    p.add_argument("--json", help="also write the rows to this file")
    args = p.parse_args(argv)
    ctls = names(p, args.controllers, sorted(CONTROLLERS) + list(SUMO_OWN), "controller")
    cfgs = control.scenario_configs(p, args)
    # what benchmarks.control.run_one reads off its arguments
    run_args = argparse.Namespace(fail_detectors=None, seed=0, box_cameras=True, end=args.end,
                                  config=args.config, cache=args.cache, fresh=args.fresh, quiet=args.quiet)
    rows, limits = [], []
    for cfg in cfgs:
        here, own_runs = [], []
        for ctl in ctls:
            runs = []
            for seed in args.seeds:
                run_args.sumo_seed = seed
                try:
                    runs.append(control.run_one(cfg, ctl, run_args))
                except EvaluationError as exc:
                    print(f"benchmarks.collisions: {cfg.stem} {ctl} seed {seed}: {exc}", file=sys.stderr)
                    return 1
            here.append({"scenario": cfg.stem, "controller": ctl, "seeds": list(args.seeds), **tally(runs)})
            if ctl in SUMO_OWN:
                own_runs += runs
        pooled = tally(own_runs)["per_10k_trips"] if own_runs else None
        lowest = min((r["per_10k_trips"] for r in here if r["controller"] in SUMO_OWN), default=None)
        for r in here:
            r["sumo_own_lowest_per_10k"] = lowest
            r["sumo_own_pooled_per_10k"] = pooled
            r["ratio_to_sumo_own"] = (round(r["per_10k_trips"] / pooled, 2)
                                      if pooled and r["controller"] not in SUMO_OWN else None)
        rows += here
        limits.append(f"{cfg.stem} {pooled}")
    head = ("scenario", "controller", "runs", "trips", "at signals", "runs with one", "per 10k trips",
            "vs SUMO's own", "elsewhere", "safety violations", "not arrived", "time loss (s)")
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    for r in rows:
        ratio = "-" if r["ratio_to_sumo_own"] is None else f"{r['ratio_to_sumo_own']:.2f}"
        print(f"| {r['scenario']} | {r['controller']} | {r['runs']} | {r['trips']} | {r['collisions_at_signals']} | "
              f"{r['runs_with_collision_at_signals']} | {r['per_10k_trips']:.2f} | {ratio} | "
              f"{r['collisions_elsewhere']} | {r['safety_violations']} | {r['trips_not_completed']} | "
              f"{r['mean_time_loss_s']:.1f} |")
    print(f"(SUMO seeds {seed_names(args.seeds)}; the limit: SUMO's own programs on the same seeds, "
          f"pooled per scenario: {', '.join(limits)} per 10k trips)")
    if args.json:
        write_json(args.json, {"seeds": list(args.seeds), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
