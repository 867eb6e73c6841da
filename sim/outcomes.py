"""What a run achieved, read from SUMO's own ``--statistic-output``.

SUMO writes the file when the simulation closes. Its ``vehicleTripStatistics`` element (means
over completed trips) is only filled when SUMO collects trip data, i.e. when the run also has
``--tripinfo-output`` or ``--duration-log.statistics``; :class:`sim.sumo.Sumo` always sets the
former. The means are exactly what ``--duration-log.statistics`` prints (``TimeLoss`` etc.).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["Outcomes", "StatisticsError", "read_collisions", "read_statistics"]


class StatisticsError(ValueError):
    """A statistic-output file that is missing, unreadable or lacks trip statistics."""


@dataclass
class Outcomes:
    """Ground-truth outcomes of one run."""

    trips_total: int
    """Vehicles SUMO loaded: every vehicle of the route files departing within the horizon."""
    trips_completed: int
    """Vehicles that arrived (the number of completed trips the means are taken over)."""
    mean_travel_time_s: float
    """Mean trip duration, departure to arrival (SUMO ``duration``)."""
    mean_waiting_time_s: float
    """Mean time spent below 0.1 m/s, not counting intended stops (SUMO ``waitingTime``)."""
    mean_time_loss_s: float
    """Mean time lost to driving below the ideal speed (SUMO ``timeLoss``; RESCO's delay)."""
    teleports: int
    """Vehicles teleported (jams, collisions, wrong lanes)."""
    collisions: int
    """Collisions SUMO detected."""

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _attr(elem: ET.Element | None, name: str, path: Path, kind: type = float):
    if elem is None:
        raise StatisticsError(f"{path}: element for {name!r} missing")
    value = elem.get(name)
    if value is None:
        raise StatisticsError(f"{path}: <{elem.tag}> has no attribute {name!r}")
    return kind(float(value)) if kind is int else kind(value)


def read_statistics(path: Path | str) -> Outcomes:
    """Parse a SUMO ``--statistic-output`` file."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError as exc:
        raise StatisticsError(f"statistic output not found: {path}") from exc
    except ET.ParseError as exc:
        raise StatisticsError(f"cannot parse statistic output {path}: {exc}") from exc
    vehicles = root.find("vehicles")
    trips = root.find("vehicleTripStatistics")
    if trips is None:
        raise StatisticsError(
            f"{path}: no <vehicleTripStatistics>; run SUMO with --tripinfo-output or "
            "--duration-log.statistics so that it collects trip data"
        )
    teleports = root.find("teleports")
    safety = root.find("safety")
    return Outcomes(
        trips_total=_attr(vehicles, "loaded", path, int),
        trips_completed=_attr(trips, "count", path, int),
        mean_travel_time_s=_attr(trips, "duration", path),
        mean_waiting_time_s=_attr(trips, "waitingTime", path),
        mean_time_loss_s=_attr(trips, "timeLoss", path),
        teleports=_attr(teleports, "total", path, int) if teleports is not None else 0,
        collisions=_attr(safety, "collisions", path, int) if safety is not None else 0,
    )


STANDING_MPS = 0.5  # a collision victim slower than this stood still


def mean_time_loss_of(tripinfo: Path | str, ids: set[str]) -> tuple[float | None, float | None]:
    """Mean SUMO ``timeLoss`` of the finished trips in ``tripinfo`` of the vehicles in ``ids`` and
    of the others (None: no such trip)."""
    sums = {True: 0.0, False: 0.0}
    counts = {True: 0, False: 0}
    for _, elem in ET.iterparse(str(tripinfo)):
        if elem.tag == "tripinfo":
            k = elem.get("id") in ids
            sums[k] += float(elem.get("timeLoss", "0"))
            counts[k] += 1
            elem.clear()
    return tuple(sums[k] / counts[k] if counts[k] else None for k in (True, False))


def read_collisions(path: Path | str, signal_junctions: set[str], keep: int = 10) -> dict:
    """Where the collisions of a SUMO ``--collision-output`` file happened.

    Returns ``{"at_signals": n, "elsewhere": n, "victim_standing_in_junction": n,
    "at_signals_victim_standing_in_junction": n, "first": [...]}``:
    collisions inside (or on the lanes right after) a signalised junction, the rest, and of all of
    them those whose victim stood still inside a junction (it had entered and could not leave:
    its exit was full; SUMO lets crossing traffic with right of way, or with green, drive into
    such a vehicle); then the first ``keep`` as dicts (time, type, lane, junction, speeds). A
    missing file means no collision output was asked for: all zero.
    """
    path = Path(path)
    out = {"at_signals": 0, "elsewhere": 0, "victim_standing_in_junction": 0,
           "at_signals_victim_standing_in_junction": 0, "first": []}
    if not path.is_file():
        return out
    for c in ET.parse(path).getroot().iter("collision"):
        lane = c.get("lane", "")
        junction = lane[1:].rsplit("_", 2)[0] if lane.startswith(":") else ""
        where = "at_signals" if junction in signal_junctions else "elsewhere"
        out[where] += 1
        victim_mps = float(c.get("victimSpeed", "nan"))
        standing = bool(junction) and victim_mps < STANDING_MPS
        out["victim_standing_in_junction"] += standing
        out["at_signals_victim_standing_in_junction"] += standing and where == "at_signals"
        if len(out["first"]) < keep:
            out["first"].append({"time_s": float(c.get("time", "nan")), "type": c.get("type"), "lane": lane,
                                 "junction": junction or None, "signalised": where == "at_signals",
                                 "collider_mps": float(c.get("colliderSpeed", "nan")), "victim_mps": victim_mps,
                                 "victim_standing_in_junction": standing})
    return out
