"""Shared fixtures: SUMO location, the RESCO scenarios, a tiny generated city.

Markers (declared in ``pyproject.toml``): ``sumo`` for tests that run SUMO,
``slow`` for tests that take more than a few seconds.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import settings

from sim.tools import run_tool, sumo_home as _sumo_home

REPO_ROOT = Path(__file__).resolve().parents[1]
RESCO_DIR = REPO_ROOT.parent / "shared" / "scenarios" / "resco"

settings.register_profile("ci", deadline=None, max_examples=200)
settings.load_profile("ci")


@dataclass(frozen=True)
class SmallScenario:
    """A 2x2 signalized grid with fringe roads and ten minutes of flows."""

    net: Path
    routes: Path
    sumocfg: Path
    tls_ids: list[str] = field(default_factory=list)


@pytest.fixture(scope="session")
def resco_dir() -> Path:
    """``../shared/scenarios/resco`` next to the repository (skips when absent)."""
    if not RESCO_DIR.is_dir():
        pytest.skip(f"RESCO scenarios not present at {RESCO_DIR}")
    return RESCO_DIR


@pytest.fixture(scope="session")
def sumo_home() -> Path:
    """Root of the SUMO installation (``sumo.SUMO_HOME`` of the eclipse-sumo wheel)."""
    return _sumo_home()


SMALL_END = 600  # s of demand, and the end written into the .sumocfg


def build_small_scenario(directory: Path, seed: int = 7) -> SmallScenario:
    """Generate the small grid city into ``directory``.

    ``netgenerate`` builds a 2x2 grid (200 m blocks, two lanes each way) with
    150 m roads attached at the rim; SUMO's TLS guessing signalizes the four
    inner junctions.  Demand is ten ``<flow>`` elements from rim to rim at
    150-400 veh/h each over ``SMALL_END`` seconds, routed by SUMO at insertion.
    """
    import sumolib

    directory.mkdir(parents=True, exist_ok=True)
    net = directory / "small.net.xml"
    routes = directory / "small.rou.xml"
    sumocfg = directory / "small.sumocfg"
    run_tool(
        "netgenerate",
        [
            "--grid", "--grid.number", "2", "--grid.length", "200",
            "--grid.attach-length", "150",
            "--default.lanenumber", "2", "--default.speed", "13.89",
            "--tls.guess", "true",
            "--no-turnarounds.except-deadend",
            "--output-file", net.name,
        ],
        cwd=directory,
    )

    graph = sumolib.net.readNet(str(net))
    tls_ids = sorted(t.getID() for t in graph.getTrafficLights())
    edges = sorted(graph.getEdges(), key=lambda e: e.getID())
    # rim roads: edges leaving / entering a dead-end junction at the border
    sources = [e for e in edges if len(e.getFromNode().getIncoming()) == 1]
    sinks = [e for e in edges if len(e.getToNode().getOutgoing()) == 1]

    rng = random.Random(seed)
    pairs = []
    for src in sources:  # one flow out of every rim road ...
        dst = rng.choice([d for d in sinks if d.getToNode() != src.getFromNode()])
        pairs.append((src, dst))
    while len(pairs) < 10:  # ... plus a couple of extra ones
        src = rng.choice(sources)
        dst = rng.choice([d for d in sinks if d.getToNode() != src.getFromNode()])
        if (src, dst) not in pairs:
            pairs.append((src, dst))

    lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<routes>"]
    for i, (src, dst) in enumerate(pairs):
        vph = rng.randrange(150, 401, 10)
        lines.append(
            f'    <flow id="f{i}" begin="0" end="{SMALL_END}" vehsPerHour="{vph}" '
            f'from="{src.getID()}" to="{dst.getID()}" departLane="best" departSpeed="max"/>'
        )
    lines.append("</routes>")
    routes.write_text("\n".join(lines) + "\n")

    sumocfg.write_text(
        f"""<?xml version="1.0" encoding="UTF-8"?>
<configuration>
    <input>
        <net-file value="{net.name}"/>
        <route-files value="{routes.name}"/>
    </input>
    <time>
        <begin value="0"/>
        <end value="{SMALL_END}"/>
    </time>
</configuration>
"""
    )
    return SmallScenario(net=net, routes=routes, sumocfg=sumocfg, tls_ids=tls_ids)


@pytest.fixture(scope="session")
def small_scenario(tmp_path_factory) -> SmallScenario:
    """A tiny signalized city (4 traffic lights, ~380 vehicles in 10 min), built once per session."""
    return build_small_scenario(tmp_path_factory.mktemp("small_scenario"))
