"""Speed guidance on the RESCO scenarios: ``python -m benchmarks.guidance``.

Runs ``traffic-engine evaluate --guidance-share F --seed S`` with the ``adaptive`` controller on
``cologne8`` and ``arterial4x4`` (or ``--scenarios``), optionally with an engine config
(``--config``, e.g. ``{"adaptive": {"commit_s": 20}}`` for the planned mode), and prints per
scenario the issue's targets measured in the run: guided vehicles' stops against unguided ones'
(target: at least 20 % fewer; beside it the same comparison edge by edge, against the unguided
vehicles' stops per entry into the edges the guided ones drove, and the repeated stops: on an
edge where the vehicle had stopped already) and the p90 error of the published SPaT likely time over changes
predicted up to 20 s ahead (target: at most 2 s), with coverage, time loss, teleports and
collisions beside them.
"""

from __future__ import annotations

import sys
from pathlib import Path

from benchmarks import parser, write_json
from sim.evaluate import EvaluationError, evaluate

RESCO = Path(__file__).resolve().parents[1].parent / "shared" / "scenarios" / "resco"
TARGET_STOP_REDUCTION = 0.20
TARGET_ERROR_P90_S = 2.0
KEYS = ("mean_time_loss_s", "teleports", "collisions", "collisions_guided", "safety_violations", "vehicles_guided", "vehicles_unguided",
        "stops_per_vehicle_guided", "stops_per_vehicle_unguided", "guided_stop_reduction",
        "guided_stop_reduction_same_edges", "repeat_stops_per_vehicle_guided", "repeat_stops_per_vehicle_unguided",
        "signal_stops_per_vehicle_guided", "signal_stops_per_vehicle_unguided", "spat_likely_coverage",
        "spat_likely_error_p50_s", "spat_likely_error_p90_s", "spat_pairs", "wall_s")


def main(argv: list[str] | None = None) -> int:
    p = parser("guidance", __doc__)
    p.add_argument("--scenarios", default="cologne8,arterial4x4",
                   help="RESCO names or .sumocfg paths, comma-separated (default %(default)s)")
    p.add_argument("--resco", default=str(RESCO), help="folder of the RESCO scenarios (default %(default)s)")
    p.add_argument("--share", type=float, default=0.2, help="fraction of vehicles guided (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="which vehicles are guided (default %(default)s)")
    p.add_argument("--controller", default="adaptive", help="engine controller (default %(default)s)")
    p.add_argument("--config", help="engine config file for the runs")
    p.add_argument("--end", type=float, help="simulate at most this many seconds after each scenario's begin")
    p.add_argument("--json", help="also write the figures to this file")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    args = p.parse_args(argv)
    if not 0.0 <= args.share <= 1.0:
        p.error("--share must be within 0..1")
    rows = []
    for name in [s for s in args.scenarios.split(",") if s]:
        cfg = Path(name) if name.endswith(".sumocfg") else Path(args.resco) / name / f"{name}.sumocfg"
        end = None
        if args.end is not None:
            from sim.scenario import load_scenario

            end = load_scenario(cfg).begin + args.end
        print(f"-- {cfg.stem}", file=sys.stderr, flush=True)
        try:
            r = evaluate(cfg, controller=args.controller, config=args.config, guidance_share=args.share,
                         seed=args.seed, end=end, progress=not args.quiet)
        except EvaluationError as exc:
            print(f"benchmarks.guidance: {exc}", file=sys.stderr)
            return 2
        row = {"scenario": cfg.stem, **{k: r.get(k) for k in KEYS}}
        red, err = row["guided_stop_reduction"], row["spat_likely_error_p90_s"]
        row["meets_stop_target"] = red is not None and red >= TARGET_STOP_REDUCTION
        row["meets_error_target"] = err is not None and err <= TARGET_ERROR_P90_S
        rows.append(row)
    print("| scenario | time loss (s) | stops/veh guided | unguided | reduction (>= 20 %) | same edges "
          "| at signals g/u | repeats g/u | likely err p50 / p90 (s, p90 <= 2) | coverage | teleports | collisions |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    f = lambda v, fmt="{:.3f}": "-" if v is None else fmt.format(v)  # noqa: E731
    for r in rows:
        print(f"| {r['scenario']} | {f(r['mean_time_loss_s'], '{:.1f}')} | {f(r['stops_per_vehicle_guided'])} "
              f"| {f(r['stops_per_vehicle_unguided'])} | {f(r['guided_stop_reduction'], '{:.1%}')} "
              f"| {f(r['guided_stop_reduction_same_edges'], '{:.1%}')} "
              f"| {f(r['signal_stops_per_vehicle_guided'])} / {f(r['signal_stops_per_vehicle_unguided'])} "
              f"| {f(r['repeat_stops_per_vehicle_guided'])} / {f(r['repeat_stops_per_vehicle_unguided'])} "
              f"| {f(r['spat_likely_error_p50_s'], '{:.2f}')} / {f(r['spat_likely_error_p90_s'], '{:.2f}')} "
              f"| {f(r['spat_likely_coverage'], '{:.1%}')} | {r['teleports']} | {r['collisions']} |")
    if args.json:
        write_json(args.json, {"share": args.share, "seed": args.seed, "config": args.config, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
