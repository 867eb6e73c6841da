"""Scenarios: which network, demand and detectors SUMO runs, and over which horizon.

A :class:`Scenario` is built from a SUMO ``.sumocfg`` (``input/net-file``, ``route-files``,
``additional-files`` and ``time/begin``) or from a bare ``.net.xml`` plus route files.
Paths in a configuration are relative to the configuration file and come back absolute.

The horizon follows the evaluation protocol of ``BASELINES.md``: a run starts at the
scenario's begin time and goes on until every vehicle has arrived, at most
:data:`DEFAULT_HORIZON_S` (3 h) after begin. The ``end`` written in a ``.sumocfg`` is therefore
ignored; pass ``end=`` explicitly to cut a run shorter or longer.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

__all__ = ["DEFAULT_HORIZON_S", "Scenario", "ScenarioError", "load_scenario", "parse_time"]

DEFAULT_HORIZON_S = 10800.0
"""Default run length after begin: 3 h, enough for every RESCO vehicle to arrive."""

PathLike = str | os.PathLike

# option name -> synonyms accepted in a configuration file (SUMO's long and short names)
_CFG_KEYS = {
    "net": ("net-file", "n"),
    "routes": ("route-files", "r"),
    "additional": ("additional-files", "a"),
    "begin": ("begin", "b"),
    "end": ("end", "e"),
}


class ScenarioError(ValueError):
    """A scenario that cannot be loaded: missing file, bad configuration, missing routes."""


@dataclass(frozen=True)
class Scenario:
    """One runnable scenario. All paths are absolute; times are seconds of simulation time."""

    name: str
    """File stem without ``.net``/``.sumocfg`` (``cologne1``)."""
    net: Path
    """The ``.net.xml`` SUMO loads."""
    routes: tuple[Path, ...]
    """Route (demand) files, in load order."""
    additional: tuple[Path, ...]
    """Additional files from the configuration (detectors, programs, ...), in load order."""
    begin: float
    """Simulation time at which the run starts."""
    end: float
    """Simulation time at which the run stops at the latest."""
    unapplied: tuple[str, ...] = ()
    """Options of the ``.sumocfg`` the evaluation does not apply (``step-length=0.5``, ...): it
    runs SUMO with its own command line (1 s steps, the evaluation protocol's teleport time and
    collision checks), taking only the files and the begin time from the configuration."""

    @property
    def horizon_s(self) -> float:
        """Length of the run in simulated seconds (``end - begin``)."""
        return self.end - self.begin


def parse_time(text: str) -> float:
    """A SUMO time value: seconds (``"25200"``, ``"1.5"``) or ``[[D:]H:]M:S`` (``"7:00:00"``)."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    parts = text.split(":")
    if 2 <= len(parts) <= 4:
        try:
            values = [float(p) for p in parts]
        except ValueError:
            values = []
        if values:
            factors = (86400.0, 3600.0, 60.0, 1.0)[-len(values) :]
            return sum(v * f for v, f in zip(values, factors))
    raise ScenarioError(f"not a time value: {text!r}")


def _split_files(value: str) -> list[str]:
    """A SUMO file list: comma- and/or whitespace-separated."""
    return [p for p in re.split(r"[,\s]+", value.strip()) if p]


def _scenario_name(path: Path) -> str:
    name = path.name
    for suffix in (".sumocfg", ".net.xml.gz", ".net.xml", ".xml"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _existing(paths: Iterable[PathLike], base: Path, what: str, source: Path | None) -> tuple[Path, ...]:
    out = []
    for p in paths:
        path = Path(p)
        if not path.is_absolute():
            path = base / path
        path = path.resolve()
        if not path.is_file():
            where = f" (listed in {source})" if source is not None else ""
            raise ScenarioError(f"{what} not found: {path}{where}")
        out.append(path)
    return tuple(out)


def _read_cfg(path: Path) -> tuple[dict[str, str], tuple[str, ...]]:
    """Option values of a ``.sumocfg`` (sections are ignored as SUMO ignores them), and the
    options other than those of ``_CFG_KEYS`` as ``name=value``."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise ScenarioError(f"cannot parse SUMO configuration {path}: {exc}") from exc
    found: dict[str, str] = {}
    other: list[str] = []
    known = {n for names in _CFG_KEYS.values() for n in names}
    for elem in root.iter():
        for key, names in _CFG_KEYS.items():
            if elem.tag in names:
                value = elem.get("value")
                if value is None:
                    raise ScenarioError(f"{path}: <{elem.tag}> has no value attribute")
                found[key] = value
        if elem.tag not in known and elem.get("value") is not None:
            other.append(f"{elem.tag}={elem.get('value')}")
    return found, tuple(other)


def load_scenario(
    path: PathLike,
    routes: Sequence[PathLike] | PathLike | None = None,
    begin: float | None = None,
    end: float | None = None,
    *,
    additional: Sequence[PathLike] | None = None,
) -> Scenario:
    """Load a scenario from a ``.sumocfg`` or a ``.net.xml``.

    Arguments override the configuration: ``routes`` and ``additional`` replace its file lists
    (relative paths are taken from the current directory), ``begin`` its begin time. ``end``
    defaults to ``begin + 3 h`` whatever the configuration says (see the module docstring).
    A ``.net.xml`` needs ``routes``; its begin defaults to 0.
    """
    path = Path(path)
    if not path.is_file():
        raise ScenarioError(f"scenario file not found: {path}")
    path = path.resolve()
    name = _scenario_name(path)
    cwd = Path.cwd()
    if isinstance(routes, (str, os.PathLike)):
        routes = [routes]

    if path.name.endswith(".sumocfg"):
        cfg, unapplied = _read_cfg(path)
        if "net" not in cfg:
            raise ScenarioError(f"{path}: no input/net-file in the configuration")
        net_files = _split_files(cfg["net"])
        if len(net_files) != 1:
            raise ScenarioError(f"{path}: expected one net-file, got {cfg['net']!r}")
        net = _existing(net_files, path.parent, "network file", path)[0]
        if routes is not None:
            route_paths = _existing(routes, cwd, "route file", None)
        else:
            route_paths = _existing(_split_files(cfg.get("routes", "")), path.parent, "route file", path)
        if additional is not None:
            add_paths = _existing(additional, cwd, "additional file", None)
        else:
            add_paths = _existing(_split_files(cfg.get("additional", "")), path.parent, "additional file", path)
        cfg_begin = parse_time(cfg["begin"]) if "begin" in cfg else 0.0
    elif path.name.endswith((".net.xml", ".net.xml.gz")):
        if not routes:
            raise ScenarioError(
                f"{path} is a network without demand: pass routes=[...] (route files) "
                "or load the scenario's .sumocfg instead"
            )
        net = path
        route_paths = _existing(routes, cwd, "route file", None)
        add_paths = _existing(additional or (), cwd, "additional file", None)
        cfg_begin = 0.0
        unapplied = ()
    else:
        raise ScenarioError(f"{path}: expected a .sumocfg or a .net.xml file")

    if not route_paths:
        raise ScenarioError(f"{path}: the scenario has no route files (pass routes=[...])")
    b = float(begin) if begin is not None else cfg_begin
    e = float(end) if end is not None else b + DEFAULT_HORIZON_S
    if not e > b:
        raise ScenarioError(f"{path}: end ({e}) must be after begin ({b})")
    return Scenario(name=name, net=net, routes=route_paths, additional=add_paths, begin=b, end=e,
                    unapplied=unapplied)
