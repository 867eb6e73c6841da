"""``traffic-engine evaluate``: one controller, one scenario, the outcome as numbers.

For an engine controller the engine runs as its own process (``traffic-engine serve --clock
sim``) on free loopback ports; the bridge is its detectors and its signal adapters. For SUMO's
own controllers (``sumo-static`` ...) SUMO runs alone on a net whose programs netconvert
rebuilt. Both are measured the same way: SUMO's statistics for delay, the bridge's conflict
monitor for safety.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import NamedTuple, Sequence

import msgspec

from controllers import CONTROLLERS
from engine.client import OperatorClient, OperatorError
from engine.config import Endpoints, dump_config, load_config
from engine.security import KeysError, client_keys, curve_client
from network.compiled import compile_network, signal_junctions
from network.layout import box_layout, coverage_layout, default_layout, instrumented_edges, save_layout
from network.sumo_net import NetworkError
from sim.additional import write_additional
from sim.baselines import SUMO_CONTROLLERS, normalize_net
from engine.adapter import sumo_programs
from sim.bridge import SIM_EPOCH_NS, Bridge, BridgeError
from sim.detector_faults import AlarmWatch, DetectorFault, FaultError, FaultInjector, parse_fault
from sim.estimation import FeedRecorder, score, write_edgedata
from sim.faults import DetectorFaults
from sim.guidance import Guidance, SpatFeed
from sim.monitor import ConflictMonitor
from sim.outcomes import mean_time_loss_of, read_collisions, read_statistics
from sim.progress import Progress
from sim.scenario import Scenario, ScenarioError, load_scenario
from sim.sumo import SUMO_DEFAULT_SEED, Sumo

BUILTIN = (*SUMO_CONTROLLERS, "sumo-original")
ADAPTER_KEY = "sumo-bridge"  # with keys: the key pair the SUMO bridge's signal adapters connect with
OPERATOR_KEY = "evaluate"  # and the one this evaluation asks the engine's status with
ENGINE_START_TIMEOUT_S = 900.0  # a first start compiles every kernel: minutes on a busy machine


class EvalKeys(NamedTuple):
    """CurveZMQ for an evaluation: the key directory and the key pairs its clients connect with."""

    dir: Path
    adapter: str  # the SUMO bridge's signal adapters (on ``adapters/``)
    operator: str  # this evaluation's status requests (on ``operators/``)


class EvaluationError(RuntimeError):
    """An evaluation that could not run, with the reason."""


def evaluate(scenario: str | Path, *, controller: str, routes: str | None = None, begin: float | None = None,
             end: float | None = None, json_path: str | Path | None = None, tls_states: str | Path | None = None,
             config: str | Path | None = None, progress: bool = True, workdir: str | Path | None = None,
             inject_faults: Sequence[str | DetectorFault] = (), detector_coverage: float | None = None,
             fail_detectors: float | None = None, seed: int = 0, guidance_share: float | None = None,
             kill_engine: str | None = None, box_cameras: bool | None = None,
             sumo_seed: int | None = None, keys: str | Path | None = None,
             adapter_key: str | None = None, operator_key: str | None = None) -> dict:
    """Run ``controller`` on ``scenario`` and return (and optionally write) the outcome.

    ``sumo_seed``: SUMO's own random seed (drivers' speed factors, departures' lanes, ...);
    None is SUMO's default, the one ``BASELINES.md`` was measured with. Another seed repeats a
    run with other driver randomness, the same for every controller.

    ``kill_engine``: ``S`` or ``S:R``: kill -9 the engine at simulated second ``S`` (the signals'
    adapters go on alone, on their local plans after ``adapters.fallback_after_s``) and, with
    ``R``, start it again at second ``R`` on the same endpoints (the adapters register again and
    the engine takes over); the JSON gains a ``kill_engine`` block. Engine controllers only.

    ``inject_faults``: detector faults (``ID=KIND[@T]``, see ``sim.detector_faults``) the bridge
    injects into what the devices send; engine controllers only. ``detector_coverage``: instrument
    only that random fraction of the edges (drawn with ``seed``; :func:`network.layout.coverage_layout`)
    instead of every signalised approach. ``fail_detectors``: a random fraction (drawn with ``seed``)
    of the detectors fails, silent or stuck (``sim.faults``); engine controllers only (box cameras
    are not among them). ``box_cameras``: a box camera over each signal link's path through its
    junction (``network.layout.box_layout``). By default (None) an engine controller gets them
    with the default detectors (not with ``detector_coverage``, nor for SUMO's own programs,
    which read no detector of ours); False runs without them, True where impossible is an error.
    ``guidance_share``: that random fraction of the vehicles (drawn with ``seed``) follows the
    engine's speed advice (``sim.guidance``); the result gains stops per guided and unguided
    vehicle and the error of the published SPaT likely times. Engine controllers only.

    ``keys``: run the engine with CurveZMQ on its adapter and operator sockets (``serve --keys``)
    and have the SUMO bridge's signal adapters connect with key pair ``adapter_key`` (on the
    allow-list ``adapters/``; default ``ADAPTER_KEY``) and this evaluation's status requests with
    ``operator_key`` (on ``operators/``; default ``OPERATOR_KEY``), as a field installation would;
    the JSON records ``keys``. Engine controllers only.
    """
    try:
        faults = [f if isinstance(f, DetectorFault) else parse_fault(f) for f in inject_faults]
    except FaultError as exc:
        raise EvaluationError(str(exc)) from exc
    if detector_coverage is not None and not 0.0 <= detector_coverage <= 1.0:
        raise EvaluationError(f"--detector-coverage must be between 0 and 1, not {detector_coverage}")
    route_list = [r for r in routes.split(",") if r] if isinstance(routes, str) else routes
    try:
        sc = load_scenario(scenario, routes=route_list, begin=begin, end=end)
    except (ScenarioError, OSError) as exc:
        raise EvaluationError(str(exc)) from exc
    if sc.unapplied:
        print(f"traffic-engine evaluate: {Path(scenario).name}: not applied (the evaluation runs SUMO with its own "
              f"options, 1 s steps): {' '.join(sc.unapplied)}", file=sys.stderr)
    if controller not in BUILTIN and controller not in CONTROLLERS:
        raise EvaluationError(f"unknown controller {controller!r}; engine: {', '.join(sorted(CONTROLLERS))}; "
                              f"SUMO: {', '.join(BUILTIN)}")
    if faults and controller in BUILTIN:
        raise EvaluationError(f"--inject-fault needs an engine controller ({controller} reads SUMO's detectors itself)")
    if fail_detectors is not None and controller in BUILTIN:
        raise EvaluationError("--fail-detectors applies to engine controllers; SUMO's own read SUMO directly")
    if guidance_share is not None and controller in BUILTIN:
        raise EvaluationError("--guidance-share needs an engine controller: the advice comes from the engine's feed")
    if guidance_share is not None and not 0.0 <= guidance_share <= 1.0:
        raise EvaluationError(f"--guidance-share must be a fraction within 0..1, not {guidance_share}")
    if box_cameras is None:
        box_cameras = controller not in BUILTIN and detector_coverage is None
    if box_cameras and controller in BUILTIN:
        raise EvaluationError("--box-cameras needs an engine controller (SUMO's own programs read no detector of ours)")
    if box_cameras and detector_coverage is not None:
        raise EvaluationError("--box-cameras goes with the default detectors, not with --detector-coverage")
    if fail_detectors is not None and not 0.0 <= fail_detectors <= 1.0:
        raise EvaluationError(f"--fail-detectors must be a fraction within 0..1, not {fail_detectors}")
    kill = parse_kill(kill_engine) if kill_engine else None
    if kill is not None and controller in BUILTIN:
        raise EvaluationError("--kill-engine needs an engine controller")
    if keys is None and (adapter_key or operator_key):
        raise EvaluationError("--adapter-key and --operator-key go with --keys DIR")
    curve = None
    if keys is not None:
        if controller in BUILTIN:
            raise EvaluationError("--keys needs an engine controller (SUMO's own programs talk to no engine)")
        curve = EvalKeys(Path(keys).resolve(), adapter_key or ADAPTER_KEY, operator_key or OPERATOR_KEY)
        _check_keys(curve)
    tls_path = Path(tls_states).resolve() if tls_states else None
    seed_used = SUMO_DEFAULT_SEED if sumo_seed is None else sumo_seed
    with tempfile.TemporaryDirectory(prefix="te-eval-") as tmp:
        outdir = Path(workdir) if workdir else Path(tmp)
        outdir.mkdir(parents=True, exist_ok=True)
        if controller in BUILTIN:
            from sim.builtin import run_builtin

            result = run_builtin(sc, controller, outdir=outdir, tls_states=tls_path, progress=progress,
                                 sumo_seed=seed_used)
        else:
            result = run_engine(sc, controller, outdir=outdir, tls_states=tls_path, config=config, progress=progress,
                                faults=faults, detector_coverage=detector_coverage,
                                fail_detectors=fail_detectors, seed=seed, guidance_share=guidance_share,
                               kill=kill, box_cameras=box_cameras, sumo_seed=seed_used, keys=curve)
    result["sumo_seed"] = seed_used
    if sc.unapplied:
        result["sumocfg_options_not_applied"] = list(sc.unapplied)
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n")
    return result


def parse_kill(text: str) -> tuple[float, float | None]:
    """``S`` or ``S:R`` (simulated seconds, R > S) for ``--kill-engine``."""
    head, _, tail = str(text).partition(":")
    try:
        at = float(head)
        back = float(tail) if tail else None
    except ValueError:
        raise EvaluationError(f"--kill-engine wants S or S:RESTART_S in simulated seconds, not {text!r}") from None
    if at < 0 or (back is not None and not back > at):
        raise EvaluationError(f"--kill-engine {text!r}: need 0 <= S < RESTART_S")
    return at, back


class EngineProcess:
    """``traffic-engine serve`` in a child process, its endpoints read from its ready line."""

    def __init__(self, net: Path, config: Path, log_path: Path):
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine", "serve", str(net), "--config", str(config)],
            stdout=subprocess.PIPE, stderr=self._log, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.endpoints = self._wait_ready()

    def _wait_ready(self) -> dict[str, str]:
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + ENGINE_START_TIMEOUT_S
        buf = b""
        while time.monotonic() < deadline:
            if not sel.select(timeout=0.5):
                if self.proc.poll() is not None:
                    break
                continue
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                break
            buf += chunk
            for line in buf.splitlines():
                if line.startswith(b"{"):
                    try:
                        msg = json.loads(line)
                    except ValueError:
                        continue
                    if msg.get("ready"):
                        return msg["endpoints"]
        why = (f"it exited with code {self.proc.returncode}" if self.proc.poll() is not None
               else f"no ready line within {ENGINE_START_TIMEOUT_S:.0f} s")
        self.stop()
        raise EvaluationError(f"the engine did not start ({why}); its log ({self.log_path}):\n{self.log_tail()}")

    def log_tail(self, n: int = 20) -> str:
        if not self._log.closed:  # (stop() closes it: a failed start reads the tail afterwards)
            self._log.flush()
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> int:
        """kill -9, as a crash would."""
        self.proc.kill()
        self.proc.wait()
        return self.proc.returncode

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def run_engine(sc: Scenario, controller: str, *, outdir: Path, tls_states: Path | None,
               config: str | Path | None, progress: bool, faults: Sequence[DetectorFault] = (),
               detector_coverage: float | None = None, fail_detectors: float | None = None,
               seed: int = 0, guidance_share: float | None = None,
               kill: tuple[float, float | None] | None = None, box_cameras: bool = False,
               sumo_seed: int = SUMO_DEFAULT_SEED, keys: EvalKeys | None = None) -> dict:
    """Run SUMO with the engine in the loop over its sockets; the outcome as a dict, with the
    ``estimation`` block comparing the engine's published conditions with SUMO's edge data.
    ``keys``: CurveZMQ on the adapter and operator sockets (see :func:`evaluate`)."""
    wall0 = time.perf_counter()
    try:
        base = load_config(config)
    except ValueError as exc:
        raise EvaluationError(str(exc)) from exc
    try:
        net_path = normalize_net(sc.net)
        net = compile_network(net_path, permissive_turns=base.network.permissive_turns)
    except (NetworkError, OSError, RuntimeError) as exc:
        raise EvaluationError(f"cannot use network {sc.net}: {exc}") from exc
    if net.n_tls == 0:
        raise EvaluationError(f"{sc.net} has no traffic lights: nothing to control")
    specs = default_layout(net) if detector_coverage is None else coverage_layout(net, detector_coverage, seed)
    if box_cameras:  # a box camera over every signal link's path
        specs = specs + box_layout(net)
    try:
        injector = FaultInjector(list(faults), specs, dict(zip(net.lane_ids, net.lane_length_m.tolist())))
    except FaultError as exc:
        raise EvaluationError(str(exc)) from exc
    inventory = outdir / "detectors.json"
    save_layout(specs, inventory)
    if keys is not None:
        base = msgspec.structs.replace(base, security=msgspec.structs.replace(base.security, keys_dir=str(keys.dir)))
    cfg = msgspec.structs.replace(
        base, controller=controller, clock="sim", detectors=str(inventory),
        endpoints=Endpoints(ingest="tcp://127.0.0.1:*", adapters="tcp://127.0.0.1:*",
                            feed="tcp://127.0.0.1:*", operators="tcp://127.0.0.1:*",
                            snapshot="tcp://127.0.0.1:*"),
    )
    cfg_path = outdir / "engine.json"
    cfg_path.write_bytes(dump_config(cfg))
    additional = outdir / "detectors.add.xml"
    write_additional(additional, specs, lane_length_m=dict(zip(net.lane_ids, net.lane_length_m.tolist())),
                     tls_states_file=tls_states, tls_ids=net.tls_ids)

    truth = outdir / "edgedata.xml"
    truth_add = write_edgedata(outdir / "edgedata.add.xml", truth, begin=sc.begin)

    engine = EngineProcess(net_path, cfg_path, outdir / "engine.log")
    first_engine = engine
    killed = {"kill_at_s": kill[0], "restart_at_s": kill[1]} if kill else None
    feed = FeedRecorder(engine.endpoints["feed"], SIM_EPOCH_NS)
    monitor = ConflictMonitor(net, min_green_s=cfg.safety.min_green_s)
    bar = Progress(f"{sc.name} {controller}", begin=sc.begin, end=sc.end, enabled=progress)
    status: dict = {}
    health: dict = {}
    watch = AlarmWatch(engine.endpoints["feed"])  # joins before the bridge starts the clock
    spat_feed = SpatFeed(engine.endpoints["feed"], net) if guidance_share is not None else None
    guidance = None
    try:
        with Sumo(net_path, sc.routes, begin=sc.begin, end=sc.end, additional=(*sc.additional, additional, truth_add),
                  outdir=outdir, check_junction_collisions=True,
                  seed=sumo_seed, extra_args=["--collision-output", str(outdir / "collisions.xml")]) as sumo:
            failures = None
            if fail_detectors is not None:
                failures = DetectorFaults.draw(sum(x.kind == "loop" for x in specs),
                                               sum(x.kind == "camera" for x in specs), fail_detectors, seed)
            bridge = Bridge(sumo, net, specs, engine.endpoints, faults=injector, failures=failures,
                            timings=cfg.safety, programs=sumo_programs(net_path),
                            fallback_after_s=cfg.adapters.fallback_after_s, heartbeat_s=cfg.heartbeat_s,
                            engine_alive=lambda: engine.alive(), strict=kill is None, start_s=sc.begin,
                            socket_setup=None if keys is None else partial(
                                curve_client, keys=client_keys(keys.dir, keys.adapter)))  # loaded once for all
            try:
                sumo.setup_detectors(bridge.loop_ids, bridge.zone_ids, exit_zones=bridge.exit_zones)
                perm = sumo.signal_order(net.tls_ids)  # SUMO's signal order -> the network's
                bridge.register()
                if spat_feed is not None:
                    guidance = Guidance(sumo, net, spat_feed, guidance_share, seed, epoch_ns=SIM_EPOCH_NS,
                                        min_mps=cfg.spat.advice_min_mps)
                first = True
                while True:
                    t = sumo.time
                    if kill and "killed_sim_s" not in killed and t >= kill[0]:
                        killed["engine_exit"] = engine.kill()
                        killed["killed_sim_s"] = t
                        killed["violations_before_kill"] = monitor.total
                    if (kill and kill[1] is not None and "killed_sim_s" in killed
                            and "restarted_sim_s" not in killed and t >= kill[1]):
                        engine = _restart(engine, cfg, net_path, outdir)
                        bridge.resume(t)
                        killed["restarted_sim_s"] = t
                        killed["before_restart"] = bridge.adapter_summary()
                        killed["violations_before_restart"] = monitor.total
                    bridge.send_readings(t, first)
                    first = False
                    bridge.apply_commands(t)
                    if guidance is not None:
                        guidance.step(t)
                    sumo.step()
                    states = sumo.tls_states()
                    monitor.observe(sumo.time, [states[k] for k in perm])
                    if guidance is not None:
                        guidance.observe_signals(t, [states[k] for k in perm])
                    bar.update(sumo.time, sumo.running(), sumo.arrived_total())
                    feed.poll()
                    if sumo.done():
                        break
                sim_end = sumo.time
                feed.poll(wait_ms=200)
            finally:
                adapters = bridge.adapter_summary()
                bridge.close()
        if engine.alive():
            with OperatorClient(engine.endpoints["operators"], timeout_s=10,
                                keys_dir=None if keys is None else str(keys.dir),
                                name=None if keys is None else keys.operator) as client:
                status = client.request("status")
                health = client.request("detectors")
        fault_alarms = watch.collect("detector_fault", health.get("alarm_changes", 0))
    except (BridgeError, OperatorError) as exc:
        if keys is not None:
            exc = (f"{exc} (with keys {keys.dir}: is {keys.adapter!r} on its adapters/ allow-list and "
                   f"{keys.operator!r} on operators/?)")
        raise EvaluationError(f"{exc}\nengine log ({engine.log_path}):\n{engine.log_tail()}") from exc
    finally:
        watch.close()
        feed.close()
        if spat_feed is not None:
            spat_feed.close()
        engine.stop()
        if first_engine is not engine:
            first_engine.stop()
        bar.close()
    out = read_statistics(outdir / "stats.xml")
    estimation = score(feed, truth, list(net.edge_ids), instrumented_edges(net, specs))
    tick = status.get("tick", {})
    return {
        "scenario": sc.name,
        "controller": controller,
        **out.as_dict(),
        "collisions_where": read_collisions(outdir / "collisions.xml", signal_junctions(net)),
        "safety_violations": monitor.total,
        "safety_violations_by_kind": dict(monitor.counts),
        "sim_end_s": sim_end,
        "wall_s": round(time.perf_counter() - wall0, 2),
        "tick_p50_ms": tick.get("p50_ms"),
        "tick_p99_ms": tick.get("p99_ms"),
        "ingest_accepted": status.get("ingest", {}).get("accepted"),
        "ingest_rejected": status.get("ingest", {}).get("rejected"),
        "injected_faults": [str(f) for f in faults],
        "detector_health": health.get("by_health"),
        "detector_faults": {d["id"]: d["state"] for d in health.get("faulty", [])},
        "detector_alarms": [{"t_s": round((a["ts_ns"] - SIM_EPOCH_NS) / 1e9, 3), "detector": a["subject"],
                             "state": a["detail"], "active": a["active"]} for a in fault_alarms],
        "detector_alarm_changes": health.get("alarm_changes"),  # as the engine counted them
        "detector_coverage": detector_coverage,
        "box_cameras": sum(s.kind == "box" for s in specs),
        "detector_seed": seed if detector_coverage is not None else None,
        "estimation": estimation,
        **({"failed_detectors": failures.summary()} if failures is not None else {}),
        **(guidance.results() if guidance is not None else {}),
        **(_guided_time_loss(outdir / "tripinfo.xml", guidance.guided) if guidance is not None else {}),
        "adapters": adapters,
        **({"keys": {"dir": str(keys.dir), "adapter": keys.adapter, "operator": keys.operator}}
           if keys is not None else {}),
        **({"kill_engine": _kill_report(killed, adapters, status)} if killed else {}),
    }


def _check_keys(keys: EvalKeys) -> None:
    """The engine's key and both clients' key pairs must be in the key directory: a missing one is
    an error that says how to make it, before anything starts."""
    for name, role in ((keys.adapter, "adapter"), (keys.operator, "operator")):
        try:
            client_keys(keys.dir, name)
        except KeysError as exc:
            raise EvaluationError(f"--keys {keys.dir}: {exc} (a key for the {role}s: "
                                  f"`traffic-engine keys new {name} --dir {keys.dir} --role {role}`)") from None


def _restart(old: EngineProcess, cfg, net_path: Path, outdir: Path) -> EngineProcess:
    """A new engine process on the endpoints the killed one had."""
    ep = old.endpoints
    cfg2 = msgspec.structs.replace(cfg, endpoints=Endpoints(ingest=ep["ingest"], adapters=ep["adapters"],
                                                            feed=ep["feed"], operators=ep["operators"]))
    path = outdir / "engine-restarted.json"
    path.write_bytes(dump_config(cfg2))
    old._log.close()
    return EngineProcess(net_path, path, outdir / "engine-restarted.log")


def _guided_time_loss(tripinfo: Path, guided: set[str]) -> dict:
    """Whether guidance costs the guided vehicles time: mean time loss of their trips and of the others'."""
    g, u = mean_time_loss_of(tripinfo, guided)
    return {"time_loss_guided_s": None if g is None else round(g, 2),
            "time_loss_unguided_s": None if u is None else round(u, 2)}


def _kill_report(killed: dict, adapters: dict, status: dict) -> dict:
    """The ``kill_engine`` block: when, what the adapters did, and whether the engine is back."""
    before = killed.pop("before_restart", None)
    out = dict(killed)
    out["fallback_s"] = adapters["fallback_s"]
    out["silent_s"] = adapters["silent_s"]
    out["fallbacks"] = adapters["fallbacks"]
    out["handbacks"] = adapters["handbacks"]
    if before is not None:
        out["commands_applied_after_restart"] = adapters["commands_applied"] - before["commands_applied"]
        out["commands_refused_after_restart"] = adapters["commands_refused"] - before["commands_refused"]
    if status:
        out["engine_after"] = {"online": status.get("junctions", {}).get("online"),
                               "refused_commands": status.get("adapters", {}).get("refused_commands"),
                               "ticks": status.get("tick", {}).get("count")}
    return out


__all__ = ["EvaluationError", "evaluate", "run_engine"]
