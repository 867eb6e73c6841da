"""The ``traffic-engine`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path

DESCRIPTION = """\
traffic-engine: real-time traffic signal control and analytics.

  serve      run the engine live on a SUMO network (sockets: ingest 7701, adapters 7702,
             feed 7703, operators 7704)
  evaluate   run SUMO as the city, with the engine (or SUMO's own controller) in the loop,
             and report delay, throughput and safety
  demo       the bundled town, every controller, one table
  ctl        ask a running engine (status)
"""


def _serve(args: argparse.Namespace) -> int:
    from engine.config import load_config
    from engine.core import Engine
    from engine.server import Server, print_ready
    from network import compile_network
    from network.sumo_net import NetworkError

    try:
        cfg = load_config(args.config, controller=args.controller, clock=args.clock)
        net = compile_network(args.net, permissive_turns=cfg.network.permissive_turns)
        engine = Engine(net, cfg)
    except (ValueError, NetworkError) as exc:
        print(f"traffic-engine serve: {exc}", file=sys.stderr)
        return 2
    engine.warm_up()
    try:
        server = Server(engine)
    except OSError as exc:
        print(f"traffic-engine serve: {exc}", file=sys.stderr)
        return 2
    logging.getLogger("traffic_engine").info(
        "serving %s: %d signals, %d lanes, %d loops, %d cameras, controller %s, clock %s",
        Path(args.net).name, net.n_tls, net.n_lanes, engine.bank.n_loops, engine.bank.n_cameras,
        cfg.controller, cfg.clock)

    def stop(signum, frame):
        server.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print_ready(server)
    try:
        server.serve_forever()
    finally:
        status = server.status()
        server.close()
        logging.getLogger("traffic_engine").info("stopped: %s", json.dumps(status))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from sim.evaluate import EvaluationError, evaluate

    try:
        result = evaluate(
            args.scenario, controller=args.controller, routes=args.routes, begin=args.begin, end=args.end,
            json_path=args.json, tls_states=args.tls_states, config=args.config, progress=not args.quiet,
            fail_detectors=args.fail_detectors, seed=args.seed,
        )
    except EvaluationError as exc:
        print(f"traffic-engine evaluate: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from sim.demo import run_demo

    return run_demo(report=args.report, controllers=args.controllers, progress=not args.quiet)


def _ctl(args: argparse.Namespace) -> int:
    from engine.client import OperatorClient, OperatorError

    try:
        with OperatorClient(args.endpoint, timeout_s=args.timeout) as client:
            result = client.request(args.op)
    except OperatorError as exc:
        print(f"traffic-engine ctl: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_status(result)
    return 0


def _print_status(st: dict) -> None:
    tick = st["tick"]
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    print(f"controller   {st['controller']} (clock {st['clock']})")
    print(f"ticks        {tick['count']}  p50 {fmt(tick['p50_ms'])} ms  p99 {fmt(tick['p99_ms'])} ms  "
          f"max {fmt(tick['max_ms'])} ms  (period {tick['period_s']} s)")
    rej = st["ingest"]["rejected"]
    print(f"ingest       accepted {st['ingest']['accepted']}  rejected {sum(rej.values())}"
          + "".join(f"\n               {k}: {v}" for k, v in sorted(rej.items())))
    print(f"detectors    loops {st['detectors']['loops']}  cameras {st['detectors']['cameras']}")
    print(f"junctions    {st['junctions']['signals']} signals, {st['junctions']['with_adapter']} with an adapter")


def build_parser() -> argparse.ArgumentParser:
    from controllers import CONTROLLERS

    engine_ctls = sorted(CONTROLLERS)
    sumo_ctls = ["sumo-static", "sumo-actuated", "sumo-delay-based", "sumo-original"]
    p = argparse.ArgumentParser(prog="traffic-engine", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("serve", help="run the engine live", description=(
        "Run the engine on a SUMO network until stopped (Ctrl-C or SIGTERM). Prints one JSON line "
        "with the bound endpoints when ready."))
    s.add_argument("net", help="SUMO .net.xml of the region")
    s.add_argument("--config", help="engine config (.json or .toml); unknown keys are an error")
    s.add_argument("--controller", choices=engine_ctls, help="override the config's controller")
    s.add_argument("--clock", choices=["wall", "sim"],
                   help="wall: tick on the system clock (default); sim: tick on Clock watermarks from a simulator")
    s.set_defaults(func=_serve)

    e = sub.add_parser("evaluate", help="test a controller on a SUMO scenario", description=(
        "Run SUMO as the city with the engine in the loop over its live sockets (detectors -> "
        "ingest, adapters <- commands), or SUMO's own controller for comparison. Runs until every "
        "vehicle has arrived, at most --end. Prints (and with --json writes) the outcome."))
    e.add_argument("scenario", help=".sumocfg, or .net.xml with --routes")
    e.add_argument("--routes", help="route file(s), comma-separated (needed with a .net.xml)")
    e.add_argument("--begin", type=float, help="simulation begin in s (default: the scenario's)")
    e.add_argument("--end", type=float, help="last simulated second (default: begin + 3 h)")
    e.add_argument("--controller", required=True, choices=engine_ctls + sumo_ctls,
                   help="an engine controller, or SUMO's own (signal programs rebuilt by netconvert)")
    e.add_argument("--config", help="engine config for engine controllers")
    e.add_argument("--json", help="write the outcome as one JSON object to this file")
    e.add_argument("--tls-states", help="write SUMO's SaveTLSStates output for every signal here")
    e.add_argument("--fail-detectors", type=float, metavar="FRACTION",
                   help="fail this fraction (0..1) of the detectors, chosen at random: each one silent or "
                        "stuck for the whole run (engine controllers only)")
    e.add_argument("--seed", type=int, default=0, help="which detectors fail (default %(default)s)")
    e.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    e.set_defaults(func=_evaluate)

    d = sub.add_parser("demo", help="the bundled town, every controller, one table")
    d.add_argument("--report", default="reports/demo.md", help="where to save the table (default %(default)s)")
    d.add_argument("--controllers", default="adaptive,max-pressure,fixed-time,sumo-static,sumo-actuated",
                   help="comma-separated controllers to compare (default %(default)s)")
    d.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    d.set_defaults(func=_demo)

    c = sub.add_parser("ctl", help="ask a running engine", description="Ask a running engine over its operator socket.")
    c.add_argument("op", choices=["status"], help="what to ask")
    c.add_argument("--endpoint", default="tcp://127.0.0.1:7704", help="operator socket (default %(default)s)")
    c.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for a reply (default %(default)s)")
    c.add_argument("--json", action="store_true", help="print the raw reply as JSON")
    c.set_defaults(func=_ctl)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose + (args.command == "serve"), 2)]
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
