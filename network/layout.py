"""Where detectors sit: the inventory shared by the engine and whoever places them.

A detector inventory is a list of :class:`DetectorSpec`. The default layout instruments every
lane that enters a signalised junction with a stop-bar loop, an upstream loop about 60 m back
(where the lane is long enough), and one camera per approach road watching the last
``camera_range_m`` of each of its lanes. Inventories are plain JSON so a city can write its own.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from network.compiled import CompiledNetwork

STOP_BAR_SETBACK_M = 1.5
UPSTREAM_DISTANCE_M = 60.0
MIN_UPSTREAM_GAP_M = 15.0
CAMERA_RANGE_M = 100.0


class DetectorSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One detector of the inventory.

    ``kind`` is ``"loop"`` (one lane, at ``pos_m`` from the lane start; ``role`` is ``"stop"``
    at the stop bar or ``"upstream"``) or ``"camera"`` (several lanes, each watched over the
    last ``range_m`` before the stop line; readings list lanes in this order).
    """

    id: str
    kind: str
    lanes: tuple[str, ...]
    role: str = "stop"
    pos_m: float = 0.0
    range_m: float = 0.0


def default_layout(net: CompiledNetwork, camera_range_m: float = CAMERA_RANGE_M) -> list[DetectorSpec]:
    """Loops and cameras on every lane entering a signalised junction."""
    signal_lanes = sorted({int(net.move_in_lane[k]) for k in range(net.n_movements) if net.move_link[k] >= 0})
    specs: list[DetectorSpec] = []
    cams: dict[int, list[int]] = {}
    for lane in signal_lanes:
        lane_id = net.lane_ids[lane]
        length = float(net.lane_length_m[lane])
        stop_pos = max(0.1, length - STOP_BAR_SETBACK_M)
        specs.append(DetectorSpec(id=f"L:{lane_id}:stop", kind="loop", lanes=(lane_id,), role="stop", pos_m=stop_pos))
        up_pos = length - UPSTREAM_DISTANCE_M
        if up_pos < 0.1:
            up_pos = 0.1
        if stop_pos - up_pos >= MIN_UPSTREAM_GAP_M:
            specs.append(DetectorSpec(id=f"L:{lane_id}:up", kind="loop", lanes=(lane_id,), role="upstream", pos_m=up_pos))
        cams.setdefault(int(net.lane_edge[lane]), []).append(lane)
    for edge, lanes in cams.items():
        specs.append(
            DetectorSpec(
                id=f"C:{net.edge_ids[edge]}",
                kind="camera",
                lanes=tuple(net.lane_ids[x] for x in lanes),
                range_m=camera_range_m,
            )
        )
    return specs


def save_layout(specs: list[DetectorSpec], path: str | Path) -> None:
    Path(path).write_bytes(msgspec.json.format(msgspec.json.encode(specs), indent=1))


def load_layout(path: str | Path) -> list[DetectorSpec]:
    """Read an inventory written by :func:`save_layout` (or by hand); errors name the file."""
    try:
        return msgspec.json.decode(Path(path).read_bytes(), type=list[DetectorSpec])
    except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ValueError(f"bad detector inventory {path}: {exc}") from exc


__all__ = ["DetectorSpec", "default_layout", "load_layout", "save_layout"]
