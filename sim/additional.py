"""Write the SUMO additional file that places the detector inventory in the simulation.

- each loop :class:`~network.layout.DetectorSpec` becomes one ``<inductionLoop>`` (SUMO E1)
  with the spec's id, on its lane at ``pos_m``;
- each camera spec becomes one ``<laneAreaDetector>`` (SUMO E2) per lane, id
  ``f"{spec.id}#{k}"`` for its ``k``-th lane, covering the last ``range_m`` metres of the lane
  and of the lanes behind it (``upstream``), i.e. the queue a camera at the stop line sees, and
  one more per branch of that view (``branches``), id ``f"{spec.id}#{k}b{j}"`` for the ``j``-th
  branch of the camera (its readings add to lane ``k``'s);
- optionally a ``<timedEvent type="SaveTLSStates">`` that logs every signal's state each step.

The engine reads detectors through TraCI subscriptions, so their own interval output is
discarded: ``file="NUL"`` is SUMO's null device on every platform (checked with SUMO 1.28: no
file is created, no warning). Output paths are written absolute because SUMO resolves relative
paths in an additional file against that file's directory.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from network.layout import DetectorSpec

__all__ = ["NULL_FILE", "branch_zones", "camera_zone_ids", "loop_ids", "fold_zones", "reading_slots", "write_additional"]

NULL_FILE = "NUL"
"""SUMO's name for discarding a detector's file output."""


def _num(x: float) -> str:
    return repr(float(x))  # shortest exact form: a rounded endPos could overshoot the lane


def loop_ids(specs: Iterable[DetectorSpec]) -> list[str]:
    """SUMO ids of the loops of ``specs``, in inventory order."""
    return [s.id for s in specs if s.kind == "loop"]


def zones_of(spec: DetectorSpec) -> int:
    """Lane-area zones of a camera: one per lane; a box camera has one over its whole path, and
    one per stretch of it in the way of a conflicting link (``crossings``)."""
    return 1 + len(spec.crossings) if spec.kind == "box" else len(spec.lanes)


def branch_zones(spec: DetectorSpec) -> list[tuple[str, int]]:
    """The zones over the branches of a camera's view: ``(SUMO id, the lane k they add to)``."""
    return [(f"{spec.id}#{k}b{j}", k) for j, (k, _, _) in enumerate(spec.branches)] if spec.kind == "camera" else []


def reading_slots(cameras: Sequence[DetectorSpec]) -> tuple[list[str], list[int], int]:
    """SUMO's zones of ``cameras`` (approach and box cameras, in the order their readings are
    sent) and the reading slot each counts into: ``(zone ids, slot of each zone, slots)``. The
    slots are the cameras' readings laid end to end (:func:`zones_of` each); the zones are one
    per slot, then the branch zones, each counting into its lane's slot."""
    ptr = [0]
    for c in cameras:
        ptr.append(ptr[-1] + zones_of(c))
    ids = [f"{c.id}#{k}" for c in cameras for k in range(zones_of(c))]
    slots = list(range(len(ids)))
    for i, c in enumerate(cameras):
        for zid, k in branch_zones(c):
            ids.append(zid)
            slots.append(ptr[i] + k)
    return ids, slots, ptr[-1]


def fold_zones(values, slots, n_slots: int):
    """Per-zone counts (in :func:`reading_slots`' zone order) as per-slot readings: each branch
    zone's count added to its lane's (int32)."""
    values = np.asarray(values)
    if values.size == n_slots:
        return values
    return np.bincount(np.asarray(slots, dtype=np.int64), weights=values, minlength=n_slots).astype(np.int32)


def camera_zone_ids(specs: Iterable[DetectorSpec]) -> list[str]:
    """SUMO ids of the lane-area zones of the cameras (and box cameras) of ``specs``:
    ``f"{id}#{k}"`` per zone (see :func:`zones_of`), then the branch zones of every camera."""
    return reading_slots([s for s in specs if s.kind in ("camera", "box")])[0]


def write_additional(
    path: Path | str,
    specs: Sequence[DetectorSpec],
    *,
    lane_length_m: Mapping[str, float] | None = None,
    period_s: float = 1.0,
    tls_states_file: Path | str | None = None,
    tls_ids: Sequence[str] = (),
) -> Path:
    """Write the additional file for ``specs`` to ``path`` and return ``path``.

    ``lane_length_m`` (lane id -> length) is needed for cameras, whose zones end at the stop
    line, and used to check that every loop lies on its lane. ``tls_states_file`` adds a
    SaveTLSStates event for ``tls_ids`` (one event per signal, all writing the same file) or,
    when ``tls_ids`` is empty, for all signals (SUMO's default without ``source``).
    """
    if period_s <= 0:
        raise ValueError(f"period_s must be positive, got {period_s}")
    path = Path(path)
    root = ET.Element("additional")
    for spec in specs:
        if spec.kind == "loop":
            if len(spec.lanes) != 1:
                raise ValueError(f"loop {spec.id!r} must have exactly one lane, has {len(spec.lanes)}")
            lane = spec.lanes[0]
            if lane_length_m is not None and lane in lane_length_m:
                length = float(lane_length_m[lane])
                if not 0.0 <= spec.pos_m <= length:
                    raise ValueError(f"loop {spec.id!r} at {spec.pos_m} m lies outside lane {lane!r} ({length} m)")
            ET.SubElement(
                root,
                "inductionLoop",
                id=spec.id,
                lane=lane,
                pos=_num(spec.pos_m),
                period=_num(period_s),
                file=NULL_FILE,
            )
        elif spec.kind == "camera":
            if lane_length_m is None:
                raise ValueError("camera detectors need lane_length_m (lane id -> length in m)")
            if spec.range_m <= 0:
                raise ValueError(f"camera {spec.id!r} needs a positive range_m, got {spec.range_m}")
            zones = [(f"{spec.id}#{k}", 0.0, [lane, *(spec.upstream[k] if spec.upstream else ())])
                     for k, lane in enumerate(spec.lanes)]
            zones += [(zid, b[1], list(b[2])) for (zid, _), b in zip(branch_zones(spec), spec.branches)]
            for zid, start_m, chain in zones:  # chain: nearest the stop line first
                unknown = [x for x in chain if x not in lane_length_m]
                if unknown:
                    raise ValueError(f"camera {spec.id!r}: length of lane(s) {unknown} unknown")
                # from range_m back from the stop line to the end of the chain's nearest lane
                left = spec.range_m - start_m - sum(float(lane_length_m[x]) for x in chain[:-1])
                first_len = float(lane_length_m[chain[-1]])
                where = {"lane": chain[0]} if len(chain) == 1 else {"lanes": " ".join(reversed(chain))}
                ET.SubElement(root, "laneAreaDetector", id=zid, **where, pos=_num(max(0.0, first_len - left)),
                              endPos=_num(float(lane_length_m[chain[0]])), period=_num(period_s), file=NULL_FILE)
        elif spec.kind == "box":
            ET.SubElement(root, "laneAreaDetector", id=f"{spec.id}#0", lanes=" ".join(spec.lanes), pos="0",
                          endPos=_num(spec.pos_m), friendlyPos="true", period=_num(period_s), file=NULL_FILE)
            for j, (k0, pos, k1, end, _) in enumerate(spec.crossings):
                ET.SubElement(root, "laneAreaDetector", id=f"{spec.id}#{j + 1}", lanes=" ".join(spec.lanes[k0:k1 + 1]),
                              pos=_num(pos), endPos=_num(end), friendlyPos="true", period=_num(period_s),
                              file=NULL_FILE)
        else:
            raise ValueError(f"detector {spec.id!r}: unknown kind {spec.kind!r} (expected loop, camera or box)")
    if tls_states_file is not None:
        dest = str(Path(tls_states_file).resolve())
        if tls_ids:
            # SUMO's `source` takes a single signal id (a space-separated list is rejected as an
            # unknown signal), so one event per signal; events with the same `dest` share one file.
            for tls in tls_ids:
                ET.SubElement(root, "timedEvent", type="SaveTLSStates", source=tls, dest=dest)
        else:
            ET.SubElement(root, "timedEvent", type="SaveTLSStates", dest=dest)
    ET.indent(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="UTF-8", xml_declaration=True)
    return path
