"""Synthetic networks for benchmarks: square grids of signalised junctions made by netgenerate.

``grid_net(n)`` returns the path of an ``n x n`` grid (cached like the rebuilt RESCO networks,
keyed by its parameters and the SUMO version), so benchmarks can run at region scale without a
city's files.
"""

from __future__ import annotations

import os
from pathlib import Path

from sim.baselines import cache_dir, sumo_version
from sim.tools import run_tool


def grid_net(n: int, lanes: int = 2, length_m: float = 200.0) -> Path:
    """An ``n`` x ``n`` grid of traffic-light junctions, ``lanes`` lanes per direction."""
    if n < 2:
        raise ValueError("a grid needs at least 2 x 2 junctions")
    version = sumo_version().split()[-1]
    out = cache_dir() / "synthetic" / f"grid{n}x{n}-l{lanes}-{int(length_m)}m-sumo{version}.net.xml"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp.xml")
    run_tool("netgenerate", ["--grid", "--grid.number", str(n), "--grid.length", str(length_m),
                             "--grid.attach-length", str(length_m), "--default.lanenumber", str(lanes),
                             "--tls.guess", "true", "--no-turnarounds", "true", "-o", tmp])
    tmp.replace(out)
    return out
