"""Write the SUMO additional file that places the detector inventory in the simulation.

- each loop :class:`~network.layout.DetectorSpec` becomes one ``<inductionLoop>`` (SUMO E1)
  with the spec's id, on its lane at ``pos_m``;
- each camera spec becomes one ``<laneAreaDetector>`` (SUMO E2) per lane, id
  ``f"{spec.id}#{k}"`` for its ``k``-th lane, covering the last ``range_m`` metres of the lane
  (clipped to the lane), i.e. the queue a camera at the stop line sees;
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

from network.layout import DetectorSpec

__all__ = ["NULL_FILE", "camera_zone_ids", "loop_ids", "write_additional"]

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


def camera_zone_ids(specs: Iterable[DetectorSpec]) -> list[str]:
    """SUMO ids of the lane-area zones of the cameras (and box cameras) of ``specs``:
    ``f"{id}#{k}"`` per zone."""
    return [f"{s.id}#{k}" for s in specs if s.kind in ("camera", "box") for k in range(zones_of(s))]


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
            for k, lane in enumerate(spec.lanes):
                chain = [lane, *(spec.upstream[k] if spec.upstream else ())]  # nearest first
                unknown = [x for x in chain if x not in lane_length_m]
                if unknown:
                    raise ValueError(f"camera {spec.id!r}: length of lane(s) {unknown} unknown")
                length = float(lane_length_m[lane])
                if len(chain) == 1:
                    ET.SubElement(root, "laneAreaDetector", id=f"{spec.id}#{k}", lane=lane,
                                  pos=_num(max(0.0, length - spec.range_m)), endPos=_num(length),
                                  period=_num(period_s), file=NULL_FILE)
                    continue
                # a zone over several consecutive lanes: from range_m back, to the stop line
                left = spec.range_m - sum(float(lane_length_m[x]) for x in chain[:-1])
                first_len = float(lane_length_m[chain[-1]])
                ET.SubElement(root, "laneAreaDetector", id=f"{spec.id}#{k}", lanes=" ".join(reversed(chain)),
                              pos=_num(max(0.0, first_len - left)), endPos=_num(length),
                              period=_num(period_s), file=NULL_FILE)
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
