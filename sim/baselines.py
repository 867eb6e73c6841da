"""SUMO's own signal controllers as baselines: networks with rebuilt signal programs.

``netconvert -s NET --tls.rebuild --tls.default-type TYPE`` replaces every signal program of a
network with one SUMO builds itself (``static`` fixed time, ``actuated`` gap-based,
``delay_based`` time-loss based), as ``BASELINES.md`` prescribes. Rebuilt networks are cached:
the key is the SHA-256 of the network file, the controller type and the SUMO version, so an
edited network or an upgraded SUMO rebuilds. The cache lives in ``$TRAFFIC_ENGINE_CACHE`` or
``~/.cache/traffic-engine``; files are written under a temporary name and renamed into place,
so parallel workers never read a half-written network.
"""

from __future__ import annotations

import functools
import hashlib
import os
import uuid
from pathlib import Path

from network.netcache import cache_root
from sim.tools import run_tool, sumo_env, sumo_home

__all__ = ["SUMO_CONTROLLERS", "cache_dir", "normalize_net", "rebuild_net", "sumo_version"]

SUMO_CONTROLLERS: dict[str, str] = {
    "sumo-static": "static",
    "sumo-actuated": "actuated",
    "sumo-delay-based": "delay_based",
}
"""Controller name used by the engine's evaluations -> SUMO ``--tls.default-type``."""

_TLS_TYPES = frozenset(SUMO_CONTROLLERS.values())


def cache_dir() -> Path:
    """Where rebuilt networks are kept (created on demand)."""
    return cache_root() / "nets"


def tool_env() -> dict[str, str]:
    """Environment for SUMO subprocesses: ``SUMO_HOME`` and PROJ's data directory (for geo-referenced nets)."""
    env = sumo_env()
    proj = sumo_home() / "data" / "proj"
    if proj.is_dir():
        env.setdefault("PROJ_LIB", str(proj))
    return env


@functools.lru_cache(maxsize=1)
def sumo_version() -> str:
    """First line of ``netconvert --version`` (e.g. ``Eclipse SUMO netconvert 1.28.0``)."""
    out = run_tool("netconvert", ["--version"], env=tool_env()).stdout
    return out.strip().splitlines()[0] if out.strip() else "unknown"


def _net_key(net: Path, tls_type: str) -> str:
    with net.open("rb") as f:
        h = hashlib.file_digest(f, "sha256")
    h.update(b"\0" + tls_type.encode() + b"\0" + sumo_version().encode())
    return h.hexdigest()


def rebuild_net(net: Path | str, tls_type: str) -> Path:
    """Path of ``net`` with all signal programs rebuilt by netconvert as ``tls_type``.

    ``tls_type`` is one of ``static``, ``actuated``, ``delay_based``. A cached copy is reused
    when the network bytes, the type and the SUMO version are unchanged.
    """
    if tls_type not in _TLS_TYPES:
        raise ValueError(f"unknown SUMO signal type {tls_type!r}; expected one of {sorted(_TLS_TYPES)}")
    return _netconvert(net, tls_type, ["--tls.rebuild", "--tls.default-type", tls_type])


def normalize_net(net: Path | str) -> Path:
    """Path of ``net`` re-written by this SUMO's netconvert, signal programs kept as they are.

    Networks written by older netconverts place the waiting points of turning vehicles inside
    junctions where SUMO 1.28's junction collision check finds overlaps, even under their own
    programs (RESCO cologne3: 19 collisions, cologne8: 24; re-written: 0). Every evaluation
    therefore runs on the re-written network, as the rebuilt baselines do.
    """
    return _netconvert(net, "normalized", [])


def _netconvert(net: Path | str, kind: str, options: list[str]) -> Path:
    net = Path(net).resolve()
    if not net.is_file():
        raise FileNotFoundError(f"network file not found: {net}")
    key = _net_key(net, kind)
    stem = net.name.removesuffix(".gz").removesuffix(".xml").removesuffix(".net")
    out_dir = cache_dir()
    out = out_dir / f"{stem}.{kind}.{key[:20]}.net.xml"
    if out.is_file():
        return out
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{out.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp.net.xml"
    try:
        run_tool("netconvert", ["-s", net, *options, "-o", tmp, "--no-warnings"], env=tool_env())
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
