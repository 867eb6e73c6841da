"""The ``traffic-engine`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path

import msgspec

DESCRIPTION = """\
traffic-engine: real-time traffic signal control and analytics.

  serve      run the engine live on a SUMO network (sockets: ingest 7701, adapters 7702,
             feed 7703, operators 7704, feed snapshots 7705)
  evaluate   run SUMO as the city, with the engine (or SUMO's own controller) in the loop,
             and report delay, throughput and safety
  demo       the bundled town, every controller, one table
  ctl        ask a running engine (status, alarms, detectors; route FROM TO: fastest route
             on live travel times; junction ID; override ID --hold/--plan/--flash; release ID;
             audit)
  keys       CurveZMQ keys for the adapter and operator sockets (new, list, revoke)
  replay     run the engine over a recording (serve --record) and check it sends the same commands
  feed       print the public feed: a snapshot of every topic, then the live updates
  gateway    serve the feed over HTTP: GeoJSON of the network with its conditions, SPaT, a live
             event stream (server-sent events)
"""


def _serve(args: argparse.Namespace) -> int:
    from engine.config import load_config
    from engine.core import Engine
    from engine.server import Server, print_ready
    from network import compile_network
    from network.sumo_net import NetworkError

    try:
        cfg = load_config(args.config, controller=args.controller, clock=args.clock)
        if args.keys:
            cfg = msgspec.structs.replace(cfg, security=msgspec.structs.replace(cfg.security, keys_dir=args.keys))
        if args.record:
            cfg = msgspec.structs.replace(cfg, recording=msgspec.structs.replace(
                cfg.recording, enabled=True, dir=args.record))
        net = compile_network(args.net, permissive_turns=cfg.network.permissive_turns)
        engine = Engine(net, cfg)
    except (ValueError, NetworkError) as exc:
        print(f"traffic-engine serve: {exc}", file=sys.stderr)
        return 2
    engine.warm_up()
    try:
        server = Server(engine)
    except (OSError, ValueError) as exc:
        print(f"traffic-engine serve: {exc}", file=sys.stderr)
        return 2
    if cfg.recording.enabled:
        from engine.recorder import LogError, open_recorder

        try:
            server.recorder = open_recorder(cfg.recording.dir, config=cfg, net_path=args.net,
                                            segment_bytes=cfg.recording.segment_bytes)
        except (LogError, OSError) as exc:
            server.close()
            print(f"traffic-engine serve: cannot record: {exc}", file=sys.stderr)
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
            inject_faults=args.inject_fault or (),
            detector_coverage=args.detector_coverage, seed=args.seed,
            fail_detectors=args.fail_detectors, guidance_share=args.guidance_share,
            kill_engine=args.kill_engine, workdir=args.outputs, box_cameras=args.box_cameras,
            sumo_seed=args.sumo_seed, keys=args.keys, adapter_key=args.adapter_key, operator_key=args.operator_key,
        )
    except EvaluationError as exc:
        print(f"traffic-engine evaluate: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from sim.demo import run_demo

    return run_demo(report=args.report, controllers=args.controllers, progress=not args.quiet)


def _ctl_override_args(args: argparse.Namespace) -> dict | str:
    """The request args of ``ctl override`` (or an error message)."""
    modes = [m for m, v in (("hold", args.hold), ("plan", args.plan), ("flash", args.flash or None))
             if v is not None]
    if len(modes) != 1:
        return "override needs exactly one of --hold PHASE, --plan NAME, --flash"
    req = {"junction": args.args[0], "mode": modes[0]}
    if args.hold is not None:
        req["phase"] = args.hold
    if args.plan is not None:
        req["plan"] = args.plan
    if args.for_s is not None:
        req["for_s"] = args.for_s
    if args.reason:
        req["reason"] = args.reason
    return req


def _ctl(args: argparse.Namespace) -> int:
    from engine.client import OperatorClient, OperatorError

    one_id = ("junction", "override", "release")
    if args.op != "override" and (args.hold is not None or args.plan is not None or args.flash or args.for_s):
        print("traffic-engine ctl: --hold, --plan, --flash and --for go with `override`", file=sys.stderr)
        return 2
    if args.op == "route":
        if len(args.args) != 2:
            print("traffic-engine ctl: route needs FROM and TO (edge or junction ids), e.g. "
                  "`traffic-engine ctl route J1 J7`", file=sys.stderr)
            return 2
        req = {"from": args.args[0], "to": args.args[1], "minute": args.minute}
    elif args.op in one_id:
        if len(args.args) != 1:
            print(f"traffic-engine ctl: {args.op} needs one junction id, e.g. `traffic-engine ctl {args.op} J1"
                  + (" --hold 0`" if args.op == "override" else "`"), file=sys.stderr)
            return 2
        req = {"junction": args.args[0]}
        if args.op == "override":
            req = _ctl_override_args(args)
            if isinstance(req, str):
                print(f"traffic-engine ctl: {req}", file=sys.stderr)
                return 2
        elif args.op == "release" and args.reason:
            req["reason"] = args.reason
    elif args.args:
        print(f"traffic-engine ctl: {args.op} takes no arguments", file=sys.stderr)
        return 2
    elif args.op == "audit":
        req = {"limit": args.limit}
    else:
        req = {}
    if args.keys and not args.as_name:
        print("traffic-engine ctl: --keys needs --as NAME (the key to connect with)", file=sys.stderr)
        return 2
    try:
        with OperatorClient(args.endpoint, timeout_s=args.timeout, keys_dir=args.keys, name=args.as_name) as client:
            result = client.request(args.op, **req)
    except OperatorError as exc:
        print(f"traffic-engine ctl: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2))
    elif args.op == "junction":
        _print_junction(result)
    elif args.op in ("override", "release"):
        ov = result.get("override") or result.get("released")
        print(f"{'override' if args.op == 'override' else 'released'} #{ov['id']} {ov['junction']}: {_describe(ov)}"
              + (f", until {_ts(ov['expires_ns'])}" if args.op == "override" else f" ({ov['ended_by']})"))
    elif args.op == "audit":
        _print_audit(result)
    elif args.op == "alarms":
        _print_alarms(result)
    elif args.op == "detectors":
        _print_detectors(result)
    elif args.op == "route":
        _print_route(result)
    else:
        _print_status(result)
    return 0


def _print_alarms(res: dict) -> None:
    active = res["active"]
    print(f"{len(active)} active alarm(s), {res['raised_total']} raised since start")
    for a in active:
        print(f"  #{a['id']:<5} {a['severity']:8} {a['kind']:18} {a['subject']}  {a['detail']}")


def _ts(ns: int | None) -> str:
    from engine.overrides import iso

    return iso(ns)


def _describe(ov: dict) -> str:
    if ov["mode"] == "hold":
        return f"hold phase {ov['phase']}"
    if ov["mode"] == "plan":
        return f"plan {ov['plan']} (cycle {ov['cycle_s']:g} s, splits {', '.join(f'{x:g}' for x in ov['splits_s'])})"
    return "flash"


def _print_junction(r: dict) -> None:
    print(f"junction     {r['junction']}  controller {r['controller']}  state {r['state']}"
          + ("  FLASHING" if r["flashing"] else ""))
    act = r["active_phase"]
    print(f"phase        showing {act if act >= 0 else '- (changing)'} since {_ts(r['active_since_ns'])}, "
          f"target {r['target_phase']}")
    ov = r["override"]
    print("override     " + ("none" if ov is None else
                             f"#{ov['id']} {_describe(ov)} by {ov['who']} until {_ts(ov['expires_ns'])}"
                             + (f" ({ov['reason']})" if ov["reason"] else "")))
    ad = r["adapter"]
    print("adapter      " + ("none registered" if ad is None else
                             f"{ad['identity']}  online {ad['online'] if ad['online'] is not None else '?'}  "
                             f"last seen {_ts(ad['last_seen_ns'])}"))
    for p in r["phases"]:
        print(f"  phase {p['index']:<3} {p['pattern']}" + ("" if p.get("in_cycle", True) else "  (lane phase)"))
    for link in r["links"]:
        moves = ", ".join(f"{a} -> {b}" for a, b in link["movements"])
        print(f"  link {link['index']:<3}  {link['state']}  since {_ts(link['since_ns'])}  {moves}")
    print(f"detectors    {len(r['detectors'])}: "
          + ", ".join(f"{k} {v}" for k, v in r["detectors_by_health"].items()))
    for d in r["detectors"]:
        if d["health"] != "ok":
            print(f"  {d['health']:22} {d['kind']:6} {d['id']}")


def _print_audit(r: dict) -> None:
    print(f"{len(r['active'])} active override(s); audit: {r['total']} entries since start"
          + (f", file {r['file']}" if r["file"] else ""))
    for ov in r["active"]:
        print(f"  #{ov['id']:<4} {ov['junction']:16} {_describe(ov)} by {ov['who']} until {_ts(ov['expires_ns'])}")
    for e in r["entries"]:
        what = e.get("what") or {}
        desc = " ".join(f"{k}={v}" for k, v in what.items() if v not in (None, ""))
        who = e["who"] + ("" if e["verified"] else " (unverified)")
        print(f"  {e['seq']:>5} {_ts(e['ts_ns'])}  {who:24} {e['action']:8} {e['junction']:16} {desc}  -> "
              f"{e['result']}" + (f": {e['error']}" if e.get("error") else "")
              + (f" #{e['override']}" if e.get("override") else ""))


def _keys(args: argparse.Namespace) -> int:
    from engine.security import KeysError, list_keys, new_key, revoke_key

    try:
        if args.keys_op == "new":
            result = new_key(args.dir, args.name, args.role)
        elif args.keys_op == "revoke":
            result = revoke_key(args.dir, args.name)
        else:
            result = list_keys(args.dir)
    except (KeysError, OSError) as exc:
        print(f"traffic-engine keys: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
    elif args.keys_op == "new":
        print(f"key {result['name']} ({result['role']}): public {result['public_key']}\n"
              f"  allow-list entry  {result['allow_list']}\n  key pair          {result['key_pair']} "
              f"(give it, with {result['server_key']}, to {result['name']} only)")
    elif args.keys_op == "revoke":
        print(f"revoked {result['name']} ({result['role']}): moved to {result['moved_to']}; a running engine "
              "drops it within security.reload_s")
    else:
        for k in result:
            print(f"  {k['role']:9} {k['name']:24} {k['public_key']}")
    return 0


def _replay(args: argparse.Namespace) -> int:
    from engine.replay import ReplayError, print_summary, quiet_rejections, replay

    if args.verbose == 0:
        quiet_rejections()
    try:
        result = replay(args.log, net_path=args.net, until=args.until, progress=not args.quiet)
    except (ReplayError, ValueError) as exc:
        print(f"traffic-engine replay: {exc}", file=sys.stderr)
        return 2
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print_summary(result)
    return 1 if result["mismatches"] else 0


def _feed(args: argparse.Namespace) -> int:
    from engine.feed import FeedClient, FeedError, format_line, resolve_endpoints

    try:
        feed, snapshot = resolve_endpoints(args.engine, args.feed, args.snapshot)
    except ValueError as exc:
        print(f"traffic-engine feed: {exc}", file=sys.stderr)
        return 2
    if args.count is not None and args.count < 1:
        print("traffic-engine feed: --count must be at least 1", file=sys.stderr)
        return 2
    shown = 0
    client = FeedClient(feed, snapshot, topics=args.topics or (), timeout_s=args.timeout)
    try:
        for msg in client.messages():
            if args.json:
                line = json.dumps({"kind": msg.kind, "seq": msg.seq, "topic": msg.topic, "body": msg.body})
            else:
                line = format_line(msg)
            print(line, flush=True)
            if msg.kind != "end":
                shown += 1
                if args.count is not None and shown >= args.count:
                    break
    except FeedError as exc:
        print(f"traffic-engine feed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `| head`
        sys.stderr.close()
        return 0
    finally:
        client.close()
    return 0


def _gateway(args: argparse.Namespace) -> int:
    from engine.feed import resolve_endpoints
    from engine.gateway import Gateway, parse_listen, ready_line

    try:
        feed, snapshot = resolve_endpoints(args.engine, args.feed, args.snapshot)
        listen = parse_listen(args.listen)
        gw = Gateway(args.net, feed, snapshot, listen=listen, buffer=args.buffer, timeout_s=args.timeout)
    except (ValueError, OSError) as exc:
        print(f"traffic-engine gateway: {exc}", file=sys.stderr)
        return 2

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    gw.start()
    print(ready_line(gw), flush=True)
    logging.getLogger("traffic_engine").info("gateway on %s (feed %s, snapshots %s)", gw.url, feed, snapshot)
    try:
        gw.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        gw.shutdown()
    return 0


def _print_detectors(res: dict) -> None:
    by = res["by_health"]
    print(f"{res['loops']} loops, {res['cameras']} cameras: "
          + ", ".join(f"{k} {v}" for k, v in by.items() if v or k == "ok"))
    for d in res["faulty"]:
        print(f"  {d['state']:22} {d['kind']:6} {d['id']}  (lanes {', '.join(d['lanes'])})")


def _print_route(r: dict) -> None:
    print(f"travel time  {r['travel_time_s']:.0f} s  ({r['length_m'] / 1000:.2f} km, {len(r['edges'])} edges)")
    print("via          " + " -> ".join(r["junctions"]))
    for edge, tt in zip(r["edges"], r["edge_travel_time_s"]):
        print(f"  {edge:30} {tt:7.1f} s")


def _print_status(st: dict) -> None:
    tick = st["tick"]
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    print(f"controller   {st['controller']} (clock {st['clock']})")
    print(f"ticks        {tick['count']}  p50 {fmt(tick['p50_ms'])} ms  p99 {fmt(tick['p99_ms'])} ms  "
          f"max {fmt(tick['max_ms'])} ms  (period {tick['period_s']} s)")
    rej = st["ingest"]["rejected"]
    print(f"ingest       accepted {st['ingest']['accepted']}  rejected {sum(rej.values())}  "
          f"rate {st['ingest']['rate_per_s']:.0f}/s  backlog {st['ingest']['backlog_ticks']} tick(s)"
          + "".join(f"\n               {k}: {v}" for k, v in sorted(rej.items())))
    print(f"detectors    loops {st['detectors']['loops']}  cameras {st['detectors']['cameras']}  "
          + "  ".join(f"{k} {v}" for k, v in sorted(st["detectors"]["by_health"].items())))
    print(f"alarms       {st['alarms']['active']} active, {st['alarms']['raised_total']} raised since start")
    print(f"junctions    {st['junctions']['signals']} signals, {st['junctions']['with_adapter']} with an adapter")
    feed = st.get("feed")
    if feed:
        print(f"feed         seq {feed['seq']}  {feed['topics']} topics  {feed['snapshots_served']} snapshots served"
              + (f"  ({feed['snapshots_cut']} cut, {feed['bad_requests']} bad requests)"
                 if feed["snapshots_cut"] or feed["bad_requests"] else ""))
    j, ad = st["junctions"], st.get("adapters", {})
    if "online" in j:
        print(f"adapters     online {j['online']}  offline {j['offline']}"
              + (f" ({', '.join(j['offline_ids'][:10])})" if j.get("offline_ids") else "")
              + f"  refused commands {ad.get('refused_commands', 0)}  refused hellos "
              f"{ad.get('registrations_refused', 0)}  protocol errors {ad.get('protocol_errors', 0)}")
    ov = st.get("overrides")
    if ov:
        print(f"overrides    {ov['active']} active ("
              + ", ".join(f"{k} {v}" for k, v in ov["by_mode"].items()) + f"), {ov['audit_total']} audit entries")
    sec = st.get("security") or {}
    if sec.get("enabled"):
        print(f"security     CurveZMQ, keys {sec['dir']}: " + ", ".join(f"{d} {n}" for d, n in sec["allowed"].items())
              + f" allowed, {sec['dropped']} message(s) dropped")
    rec = st.get("recording") or {}
    if rec.get("enabled"):
        print(f"recording    {rec['dir']}  segment {rec['segment']}  {rec['bytes_written'] / 1e6:.1f} MB written"
              + (f"  STOPPED: {rec['failed']} ({rec['dropped_bytes']} bytes dropped)" if rec["failed"] else ""))


def _fraction(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= x <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, not {x}")
    return x


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
    s.add_argument("--keys", metavar="DIR",
                   help="CurveZMQ on the adapter and operator sockets: only clients whose public key is in "
                        "DIR/adapters/ or DIR/operators/ get through (the engine's key pair is made in "
                        "DIR/server/ on first use; see `traffic-engine keys --help`). The feed stays public")
    s.add_argument("--record", metavar="DIR",
                   help="record every message in and out (and every tick) into DIR, a new or empty "
                        "directory, for `traffic-engine replay DIR` (segment size: recording.segment_bytes)")
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
    e.add_argument("--outputs", metavar="DIR",
                   help="keep the run's files in DIR (SUMO's tripinfo, statistics and collision outputs, "
                   "the detector layout, the engine's config and log) instead of a temporary directory")
    e.add_argument("--inject-fault", action="append", metavar="ID=KIND[@T]",
                   help="make detector ID lie from simulated second T (default 0): KIND is silent, stuck_on, "
                   "chattering, constant, zero_count_with_occupancy or no_activity; repeatable. The outcome "
                   "then lists the engine's detector health and its detector_fault alarms")
    e.add_argument("--detector-coverage", type=_fraction, metavar="F",
                   help="instrument only a random fraction F (0..1) of all edges, the others get no detector "
                        "(default: loops and cameras on every signalised approach); the JSON's `estimation` "
                        "block says how well the engine's estimates match SUMO's edge data")
    e.add_argument("--fail-detectors", type=_fraction, metavar="FRACTION",
                   help="fail this fraction (0..1) of the detectors, chosen at random: each one silent or "
                        "stuck for the whole run (engine controllers only)")
    e.add_argument("--guidance-share", type=_fraction, metavar="F",
                   help="a random fraction F (0..1) of the vehicles follows the engine's speed advice "
                        "(advice.<junction> on the feed) within 250 m of a signal; the JSON gains "
                        "stops_per_vehicle_guided/_unguided and spat_likely_error_p90_s (engine controllers only)")
    e.add_argument("--seed", type=int, default=0,
                   help="random seed of --detector-coverage, --fail-detectors and --guidance-share "
                        "(default %(default)s)")
    e.add_argument("--sumo-seed", type=int, metavar="N",
                   help="SUMO's own random seed (drivers' speed factors and the like; default: SUMO's "
                        "default, as BASELINES.md was measured): repeat a comparison under other driver "
                        "randomness, the same for every controller; the JSON records it as sumo_seed")
    e.add_argument("--kill-engine", metavar="S[:RESTART_S]",
                   help="kill -9 the engine at simulated second S: the signals' adapters keep SUMO running, "
                        "holding the last command and then (after adapters.fallback_after_s, 3 s) on their "
                        "local plans (SUMO's programs); with RESTART_S, start the engine again then on the "
                        "same endpoints: the adapters register again with what they show and the engine "
                        "takes over. The JSON gains a kill_engine block (fallback_s, handbacks, commands "
                        "applied after the restart); safety_violations covers the whole run "
                        "(engine controllers only)")
    e.add_argument("--box-cameras", action=argparse.BooleanOptionalAction, default=None,
                   help="watch each signal link's path through its junction with a box camera (a lane-area "
                        "zone on its internal lanes): where it sees the path empty, the safety stage skips "
                        "the waits that protect turners left inside the junction; where it sees a vehicle "
                        "inside that a stream entering now could meet, that stream waits. Default: on for "
                        "the engine's controllers with the default detectors, off with --detector-coverage "
                        "and for SUMO's programs; --no-box-cameras runs loops and approach cameras only")
    e.add_argument("--keys", metavar="DIR",
                   help="run the engine with CurveZMQ on its adapter and operator sockets (as serve --keys DIR): "
                        "the SUMO bridge's signal adapters connect with key --adapter-key, the evaluation's "
                        "status requests with --operator-key (make them with `traffic-engine keys new NAME "
                        "--dir DIR --role adapter|operator`); the JSON records them (engine controllers only)")
    e.add_argument("--adapter-key", metavar="NAME",
                   help="with --keys: the adapters' key pair, on DIR/adapters/ (default sumo-bridge)")
    e.add_argument("--operator-key", metavar="NAME",
                   help="with --keys: the operator key pair, on DIR/operators/ (default evaluate)")
    e.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    e.set_defaults(func=_evaluate)

    d = sub.add_parser("demo", help="the bundled town, every controller, one table")
    d.add_argument("--report", default="reports/demo.md", help="where to save the table (default %(default)s)")
    d.add_argument("--controllers", default="adaptive,max-pressure,fixed-time,sumo-static,sumo-actuated",
                   help="comma-separated controllers to compare (default %(default)s)")
    d.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    d.set_defaults(func=_demo)

    c = sub.add_parser("ctl", help="ask a running engine", description=(
        "Ask a running engine over its operator socket. Examples: `traffic-engine ctl status`, "
        "`traffic-engine ctl detectors --json`, `traffic-engine ctl route J1 J7`, "
        "`traffic-engine ctl junction J1`, `traffic-engine ctl override J1 --hold 2 --for 600 --reason "
        "'crash on the north approach'`, `traffic-engine ctl release J1`, `traffic-engine ctl audit`. "
        "Overrides go through the engine's safety stage (min green, yellow, red clearance), expire after "
        "--for seconds and are recorded in the audit trail with who asked."),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("op", choices=["status", "alarms", "detectors", "route", "junction", "override", "release",
                                  "audit"],
                   help="status: ingest, detectors, ticks, junctions, overrides; alarms: the active alarms; "
                   "detectors: detectors by health state and every faulty one; route FROM TO: the fastest "
                   "route between two junctions or edges (ids of the network) on the live travel times; "
                   "junction ID: links, phases, state, target, override, detectors, adapter of one signal; "
                   "override ID (--hold PHASE | --plan NAME | --flash): take over a signal; release ID: end "
                   "its override; audit: the override trail (who, when, what, result)")
    c.add_argument("args", nargs="*", metavar="ID", help="for route: FROM and TO; for junction, override, "
                                                         "release: the junction (signal) id")
    c.add_argument("--hold", type=int, metavar="PHASE",
                   help="override: hold this phase (the junction's own phase number, see `ctl junction ID`)")
    c.add_argument("--plan", metavar="NAME",
                   help="override: run this plan: `fixed` (Webster fixed-time from the flows measured now) or a "
                        "plan of the engine config's `plans` section")
    c.add_argument("--flash", action="store_true", help="override: flash every link (through yellow; back through "
                                                        "all-red when released)")
    c.add_argument("--for", dest="for_s", type=float, metavar="SECONDS",
                   help="override: expire after this long (default: the engine's overrides.default_for_s, 900 s)")
    c.add_argument("--reason", help="override, release: why (kept in the audit trail)")
    c.add_argument("--limit", type=int, default=50, help="audit: show the last N entries (default %(default)s)")
    c.add_argument("--keys", metavar="DIR", help="connect with CurveZMQ, key pair DIR/private/NAME.key_secret and "
                                                 "engine key DIR/server/engine.key (an engine run with --keys)")
    c.add_argument("--as", dest="as_name", metavar="NAME",
                   help="who you are: the key to use with --keys; without keys, a name recorded (unverified) "
                        "in the audit trail")
    c.add_argument("--minute", action="store_true",
                   help="route on the last completed minute's travel times instead of the latest tick's")
    c.add_argument("--endpoint", default="tcp://127.0.0.1:7704", help="operator socket (default %(default)s)")
    c.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for a reply (default %(default)s)")
    c.add_argument("--json", action="store_true", help="print the raw reply as JSON")
    c.set_defaults(func=_ctl)

    k = sub.add_parser("keys", help="CurveZMQ keys for adapters and operators", description=(
        "Key pairs for the engine's authenticated sockets (serve --keys DIR). Layout of DIR: "
        "server/engine.key(_secret) the engine's pair (made on first use); operators/NAME.key and "
        "adapters/NAME.key the allow-lists; private/NAME.key_secret each client's pair (give it, with "
        "server/engine.key, to that client only); revoked/ keys taken off. A running engine rereads the "
        "allow-lists every second: `keys revoke` shuts a key out, even on connections it has open."))
    ksub = k.add_subparsers(dest="keys_op", required=True, metavar="ACTION")
    kn = ksub.add_parser("new", help="make a key pair and put its public key on an allow-list")
    kn.add_argument("name", help="who the key belongs to (letters, digits, _ . -); the audit trail shows it")
    kn.add_argument("--role", choices=["operator", "adapter"], default="operator",
                    help="which socket accepts it (default %(default)s)")
    kr = ksub.add_parser("revoke", help="take a key off its allow-list (moved to DIR/revoked/)")
    kr.add_argument("name")
    kl = ksub.add_parser("list", help="the keys on the allow-lists, and the revoked ones")
    for kp in (kn, kr, kl):
        kp.add_argument("--dir", required=True, help="the key directory (as given to serve --keys)")
        kp.add_argument("--json", action="store_true", help="print the result as JSON")
    k.set_defaults(func=_keys)

    r = sub.add_parser("replay", help="run the engine over a recording and compare its commands", description=(
        "Rebuild the engine a recording was made with (config from the recording, the network it names, "
        "checked by SHA-256), feed it the recorded inputs on a manual clock, tick at the recorded tick "
        "times, and compare every command it sends with the recorded one, byte for byte. Prints a "
        "summary; exit code 0 when everything matches, 1 on a mismatch, 2 when the recording cannot "
        "be replayed."))
    r.add_argument("log", help="the recording: the directory given to serve --record")
    r.add_argument("--json", help="also write the summary as one JSON object to this file")
    r.add_argument("--until", help="stop before the first tick after this engine time: epoch ns, an ISO "
                                   "time (2026-01-01T00:10:00Z), or +SECONDS after the first tick")
    r.add_argument("--net", help="the network file, when it is no longer where it was recorded")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    r.set_defaults(func=_replay)

    def feed_endpoints(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--engine", metavar="ENDPOINTS",
                            help="the engine's endpoints: the JSON ready line `serve` printed, a file holding "
                                 "it, or the engine's config file (.toml/.json)")
        parser.add_argument("--feed", metavar="EP", help="the feed (PUB) endpoint (default: from --engine, else "
                                                         "tcp://127.0.0.1:7703)")
        parser.add_argument("--snapshot", metavar="EP", help="the snapshot (ROUTER) endpoint (default: from "
                                                             "--engine, else the feed's host at port 7705)")
        parser.add_argument("--timeout", type=float, default=5.0,
                            help="seconds to wait for the engine's snapshot (default %(default)s)")

    f = sub.add_parser("feed", help="print the public feed", description=(
        "Print the engine's public feed: first a snapshot (the latest message of every topic, marked S, "
        "then a 'snapshot complete' line), then every live update in order. Each line: seq, topic, a "
        "summary; --json prints one JSON object per line instead ({kind, seq, topic, body}; kind is "
        "snapshot, end or update). Messages are numbered across the feed; a gap (lost messages) or an "
        "engine restart makes it take a new snapshot, so nothing is missed or doubled. "
        "Example: `traffic-engine feed --topics spat. alarms --count 20`."))
    feed_endpoints(f)
    f.add_argument("--topics", nargs="+", metavar="PREFIX",
                   help="only topics starting with one of these (conditions, spat., spat.<junction>, advice., "
                        "alarms); default: all")
    f.add_argument("--count", type=int, metavar="N", help="exit after N messages (snapshot ones included)")
    f.add_argument("--json", action="store_true", help="JSON lines instead of the human summary")
    f.set_defaults(func=_feed)

    g = sub.add_parser("gateway", help="serve the feed over HTTP", description=(
        "Serve the engine's public feed over HTTP: GET /network.geojson (every edge of NET as a "
        "LineString, lon/lat when the network file has a projection, with its name, lanes, speed limit "
        "and current conditions), GET /spat (the latest SPaT of every signal), GET /stream (server-sent "
        "events: id = seq, event = topic; reconnects with Last-Event-ID resume from a buffer or get a "
        "fresh snapshot; ?topics=spat.,alarms filters), GET /healthz. Prints one JSON line with its URL "
        "when ready. Protocol: docs/protocol.md."))
    g.add_argument("net", help="the SUMO .net.xml the engine serves (for the edges' shapes)")
    feed_endpoints(g)
    g.add_argument("--listen", default="127.0.0.1:7780", metavar="HOST:PORT",
                   help="where to serve HTTP (default %(default)s; port 0 = any free port)")
    g.add_argument("--buffer", type=int, default=1024, metavar="N",
                   help="feed messages kept for /stream clients that reconnect (default %(default)s)")
    g.set_defaults(func=_gateway)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose + (args.command == "serve"), 2)]
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
