"""Run SUMO's own signal controllers on a scenario, under the same referee as the engine.

``sumo-static``, ``sumo-actuated`` and ``sumo-delay-based`` rebuild every signal program with
netconvert (:mod:`sim.baselines`); ``sumo-original`` runs the programs as shipped (on the
network re-written by this SUMO's netconvert, like every evaluation). SUMO then
drives its signals itself while :class:`~sim.monitor.ConflictMonitor`, built from the network
SUMO actually runs, watches every second. The run ends when every vehicle has arrived or at
the scenario's end; outcomes come from SUMO's statistic output.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from network.compiled import compile_network, signal_junctions
from sim.additional import write_additional
from sim.baselines import SUMO_CONTROLLERS, normalize_net, rebuild_net
from sim.monitor import ConflictMonitor
from sim.outcomes import read_collisions, read_statistics
from sim.progress import Progress
from sim.scenario import Scenario
from sim.sumo import SUMO_DEFAULT_SEED, Sumo

__all__ = ["BUILTIN_CONTROLLERS", "run_builtin"]

BUILTIN_CONTROLLERS = ("sumo-original", *SUMO_CONTROLLERS)
"""Controllers :func:`run_builtin` accepts."""


def builtin_net(scenario: Scenario, controller: str) -> Path:
    """The network file SUMO runs for ``controller``."""
    if controller == "sumo-original":
        return normalize_net(scenario.net)
    try:
        tls_type = SUMO_CONTROLLERS[controller]
    except KeyError:
        raise ValueError(f"unknown built-in controller {controller!r}; expected one of {BUILTIN_CONTROLLERS}") from None
    return rebuild_net(scenario.net, tls_type)


def run_builtin(
    scenario: Scenario,
    controller: str,
    *,
    outdir: Path,
    tls_states: Path | None = None,
    progress: bool = False,
    api: str = "traci",
    check_junction_collisions: bool = True,
    sumo_seed: int = SUMO_DEFAULT_SEED,
) -> dict[str, Any]:
    """Run ``controller`` (one of :data:`BUILTIN_CONTROLLERS`) on ``scenario``.

    SUMO's outputs go to ``outdir``; ``tls_states`` (optional) receives SUMO's per-second
    signal state log. Returns the evaluation record: ``scenario``, ``controller``, the
    :class:`~sim.outcomes.Outcomes` fields, ``safety_violations`` (monitor total) and
    ``safety_violations_by_kind``, ``sim_end_s``, ``wall_s`` (start of SUMO to its close) and
    ``tick_p50_ms``/``tick_p99_ms`` (None: SUMO's controllers have no engine tick).

    ``api`` defaults to ``"traci"``: SUMO in a fresh child process with a pinned memory layout,
    so that re-running the same evaluation gives the same figures (see :mod:`sim.sumo`).
    ``check_junction_collisions=False`` gives BASELINES.md's protocol, which did not check
    collisions inside junctions (a collision there teleports the vehicles and so changes the
    figures: cologne1 static 28.72 s with 25 collisions instead of 28.62 s).
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    net_path = builtin_net(scenario, controller)
    net = compile_network(net_path)
    monitor = ConflictMonitor(net)

    additional = list(scenario.additional)
    if tls_states is not None:
        additional.append(write_additional(outdir / "tls_states.add.xml", [], tls_states_file=tls_states))

    display = Progress(f"{scenario.name} {controller}", scenario.begin, scenario.end, enabled=progress)
    wall0 = time.perf_counter()
    sim = Sumo(net_path, scenario.routes, begin=scenario.begin, end=scenario.end,
               additional=additional, outdir=outdir, api=api,
               seed=sumo_seed,
               check_junction_collisions=check_junction_collisions,
               extra_args=["--collision-output", str(outdir / "collisions.xml")])
    with sim:
        perm = sim.signal_order(net.tls_ids)
        states = sim.tls_states()
        monitor.observe(sim.time, [states[k] for k in perm])
        while not sim.done():
            sim.step()
            states = sim.tls_states()
            monitor.observe(sim.time, [states[k] for k in perm])
            display.update(sim.time, sim.running(), sim.arrived_total())
        sim_end = sim.time
    wall = time.perf_counter() - wall0

    outcomes = read_statistics(sim.stats_path)
    display.close(
        f"{scenario.name} {controller}: time loss {outcomes.mean_time_loss_s:.2f} s, "
        f"{outcomes.trips_completed}/{outcomes.trips_total} trips, "
        f"{outcomes.teleports} teleports, {outcomes.collisions} collisions, "
        f"{monitor.total} safety violations, {wall:.1f} s wall"
    )
    return {
        "scenario": scenario.name,
        "controller": controller,
        **outcomes.as_dict(),
        "collisions_where": read_collisions(outdir / "collisions.xml", signal_junctions(net)),
        "safety_violations": monitor.total,
        "safety_violations_by_kind": monitor.by_kind(),
        "sim_end_s": sim_end,
        "wall_s": wall,
        "tick_p50_ms": None,
        "tick_p99_ms": None,
    }
