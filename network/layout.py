"""Where detectors sit: the inventory shared by the engine and whoever places them.

A detector inventory is a list of :class:`DetectorSpec`. The default layout instruments every
lane that enters a signalised junction with a stop-bar loop, an upstream loop about 60 m back
(where the lane is long enough), and one camera per approach road watching the last
``camera_range_m`` of each of its lanes. Inventories are plain JSON so a city can write its own.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np

from network.compiled import CompiledNetwork
from network.sumo_net import CAR_LENGTH_M

STOP_BAR_SETBACK_M = 1.5
UPSTREAM_DISTANCE_M = 60.0
MIN_UPSTREAM_GAP_M = 15.0
CAMERA_RANGE_M = 100.0


class DetectorSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One detector of the inventory.

    ``kind`` "box" is a camera over one signal link's path through its junction (``lanes``: the
    internal lanes, ``pos_m``: the length of the last; ``link``: the link's global index); its
    readings give the vehicles on that path, and of them the halting ones, then the same for each
    of its ``crossings``.
    ``kind`` is ``"loop"`` (one lane, at ``pos_m`` from the lane start; ``role`` is ``"stop"``
    at the stop bar or ``"upstream"``) or ``"camera"`` (several lanes, each watched over the
    last ``range_m`` before the stop line; readings list lanes in this order). Where a lane is
    shorter than ``range_m`` the camera also sees the lanes that lead into it: ``upstream[k]``
    lists them for lane ``k``, nearest first; where several lanes lead into one it sees each
    branch, and ``branches`` lists the others as ``(k, start_m, lanes)``: a branch of lane
    ``k``'s view whose first lane ends ``start_m`` metres before the stop line, its lanes nearest
    first (the camera reports lane ``k`` with all its branches summed). A camera that classifies movements counts the
    vehicles leaving lane ``k`` into edge ``e`` for every pair ``(k, e)`` of ``turns``, in that
    order (its readings' ``turn_counts``).
    """

    id: str
    kind: str
    lanes: tuple[str, ...]
    role: str = "stop"
    pos_m: float = 0.0
    range_m: float = 0.0
    upstream: tuple[tuple[str, ...], ...] = ()
    branches: tuple[tuple[int, float, tuple[str, ...]], ...] = ()  # camera: more of lane k's view
    turns: tuple[tuple[int, str], ...] = ()  # camera movement counts: (lane k, edge it turns into)
    link: int = -1  # a box camera: the signal link (global index) whose path through the junction it watches
    # a box camera: zones over the stretches of the path, from its start, where a car standing
    # there is (or will be, moving on) in the way of a conflicting link, each (first lane k, pos on it, last lane k, end pos on it, that link's
    # global index); its readings count the whole path first, then these zones in this order
    crossings: tuple[tuple[int, float, int, float, int], ...] = ()

    def zone_m(self, k: int, lane_length_m) -> float:
        """Length of road camera lane ``k`` watches (``lane_length_m``: lane id -> metres)."""
        total = float(lane_length_m[self.lanes[k]])
        for lane in self.upstream[k] if self.upstream else ():
            total += float(lane_length_m[lane])
        total = min(total, self.range_m)
        for j, start_m, lanes in self.branches:
            if j == k:
                total += min(sum(float(lane_length_m[x]) for x in lanes), max(self.range_m - start_m, 0.0))
        return total


def default_layout(net: CompiledNetwork, camera_range_m: float = CAMERA_RANGE_M) -> list[DetectorSpec]:
    """Loops and cameras on every lane entering a signalised junction."""
    signal_lanes = sorted({int(net.move_in_lane[k]) for k in range(net.n_movements) if net.move_link[k] >= 0})
    return _instrument(net, signal_lanes, camera_range_m)


def coverage_layout(net: CompiledNetwork, fraction: float, seed: int = 0,
                    camera_range_m: float = CAMERA_RANGE_M) -> list[DetectorSpec]:
    """Detectors on a random ``fraction`` of all edges (drawn with ``seed``), none elsewhere.

    Each chosen edge gets what a signalised approach gets in :func:`default_layout` (a stop-bar
    loop and, where the lane is long enough, an upstream loop on every lane, and a camera over
    the edge), whether or not a signal ends it; the other edges have no detector at all.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"detector coverage must be between 0 and 1, not {fraction}")
    n = int(round(fraction * net.n_edges))
    chosen = sorted(np.random.default_rng(seed).permutation(net.n_edges)[:n].tolist())
    lanes = [int(x) for e in chosen for x in net.edge_lane_idx[net.edge_lane_ptr[e]:net.edge_lane_ptr[e + 1]]]
    return _instrument(net, sorted(lanes), camera_range_m)


def box_layout(net: CompiledNetwork) -> list[DetectorSpec]:
    """A box camera over every path through its junction of every signal link: one zone over the
    path, and one over each stretch of it in the way of a conflicting link (the network's
    ``crossing_zones``)."""
    paths = net.graph.graph.get("link_internal_lanes", {})
    signals = net.graph.graph.get("signals", {})
    specs = []
    for t, tls in enumerate(net.tls_ids):
        base = int(net.tls_link_ptr[t])
        zones: dict[tuple[int, int], list] = {}
        for a, b, k, lo, hi in signals.get(tls, {}).get("crossing_zones", ()):
            zones.setdefault((a, k), []).append((lo, hi, base + b))
        for i in range(int(net.tls_link_ptr[t + 1]) - base):
            for k, lanes in enumerate(paths.get((tls, i), ())):
                specs.append(DetectorSpec(
                    id=f"B:{tls}:{i}:{k}", kind="box", lanes=tuple(x for x, _ in lanes), pos_m=float(lanes[-1][1]),
                    link=base + i, crossings=tuple(_zone_on(lanes, lo, hi, b) for lo, hi, b in zones.get((i, k), ()))))
    return specs


def _zone_on(lanes: list, lo_m: float, hi_m: float, foe: int) -> tuple[int, float, int, float, int]:
    """The lane-area zone over a path's lanes (``[(id, length)]``) that counts a car (of SUMO's
    default length) while its front is between ``lo_m`` and ``hi_m`` metres along the path: from
    ``lo_m`` to ``hi_m`` less a car length (a zone counts a car while any of it is inside), at
    least a tenth of a metre long."""
    end_m = max(hi_m - CAR_LENGTH_M, lo_m + 0.1)
    return (*_lane_at(lanes, lo_m), *_lane_at(lanes, end_m), foe)


def _lane_at(lanes: list, s_m: float) -> tuple[int, float]:
    """Which of a path's lanes ``s_m`` metres along it falls on, and where on it."""
    for k, (_, length) in enumerate(lanes):
        if s_m <= length or k == len(lanes) - 1:
            return k, round(min(max(s_m, 0.0), float(length)), 2)
        s_m -= length
    raise ValueError("a path without lanes")


def instrumented_edges(net: CompiledNetwork, specs: list[DetectorSpec]) -> np.ndarray:
    """bool[n_edges]: every lane of the edge has a counting loop (the estimator's "observed")."""
    has = np.zeros(net.n_lanes, dtype=np.bool_)
    for s in specs:
        if s.kind == "loop":
            has[net.lane_index[s.lanes[0]]] = True
    return np.array([bool(has[net.edge_lane_idx[net.edge_lane_ptr[e]:net.edge_lane_ptr[e + 1]]].all())
                     for e in range(net.n_edges)], dtype=np.bool_)


def _instrument(net: CompiledNetwork, lanes: list[int], camera_range_m: float) -> list[DetectorSpec]:
    """Stop-bar and upstream loops on ``lanes``, one camera per edge over its instrumented lanes."""
    specs: list[DetectorSpec] = []
    cams: dict[int, list[int]] = {}
    for lane in lanes:
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
    feeders = _feeders(net)
    dests: dict[int, set[str]] = {}
    for m in range(net.n_movements):
        a, b = int(net.move_in_lane[m]), int(net.move_out_lane[m])
        if net.lane_edge[a] != net.lane_edge[b]:
            dests.setdefault(a, set()).add(net.edge_ids[net.lane_edge[b]])
    for edge, lanes in cams.items():
        views = [_view(net, feeders, x, camera_range_m) for x in lanes]
        ups = tuple(tuple(net.lane_ids[y] for y in v[0][1][1:]) for v in views)
        specs.append(
            DetectorSpec(
                id=f"C:{net.edge_ids[edge]}",
                kind="camera",
                lanes=tuple(net.lane_ids[x] for x in lanes),
                range_m=camera_range_m,
                upstream=ups if any(ups) else (),
                branches=tuple((k, start, tuple(net.lane_ids[y] for y in chain))
                               for k, v in enumerate(views) for start, chain in v[1:]),
                turns=tuple((k, e) for k, x in enumerate(lanes) for e in sorted(dests.get(x, ()))),
            )
        )
    return specs


def _feeders(net: CompiledNetwork) -> dict[int, list[int]]:
    """Lane -> the lanes that feed it, for lanes no signalised movement feeds (a queue backs up
    through such a junction; behind a signal it is another approach's), U-turns left out (what
    stands on the opposite road is not queueing for this one)."""
    feeders: dict[int, set[int]] = {}
    signalised: set[int] = set()
    for k in range(net.n_movements):
        out, into = int(net.move_out_lane[k]), int(net.move_in_lane[k])
        e, f = int(net.lane_edge[out]), int(net.lane_edge[into])
        feeders.setdefault(out, set())
        if not (net.edge_from[f] == net.edge_to[e] and net.edge_to[f] == net.edge_from[e]):
            feeders[out].add(into)
        if net.move_link[k] >= 0:
            signalised.add(out)
    return {lane: sorted(f) for lane, f in feeders.items() if lane not in signalised}


def _view(net: CompiledNetwork, feeders: dict[int, list[int]], lane: int,
          range_m: float) -> list[tuple[float, list[int]]]:
    """What a camera of ``range_m`` at ``lane``'s stop line sees of the lanes vehicles queue back
    into: zones ``(start_m, lanes nearest first)``, each one sequence of lanes (the
    first is ``lane`` and the lanes behind it through its first feeders; each other feeder
    starts a zone of its own, ``start_m`` metres from the stop line). No lane is in two zones."""
    seen = {lane}
    zones: list[tuple[float, list[int]]] = []
    todo = [(lane, 0.0)]
    while todo:
        first, start = todo.pop(0)
        chain, covered, at = [first], start + float(net.lane_length_m[first]), first
        while covered < range_m:
            nxt = [f for f in feeders.get(at, ()) if f not in seen]
            if not nxt:
                break
            seen.update(nxt)
            todo.extend((f, covered) for f in nxt[1:])
            at = nxt[0]
            chain.append(at)
            covered += float(net.lane_length_m[at])
        zones.append((round(start, 2), chain))
    return zones


def save_layout(specs: list[DetectorSpec], path: str | Path) -> None:
    Path(path).write_bytes(msgspec.json.format(msgspec.json.encode(specs), indent=1))


def load_layout(path: str | Path) -> list[DetectorSpec]:
    """Read an inventory written by :func:`save_layout` (or by hand); errors name the file."""
    try:
        return msgspec.json.decode(Path(path).read_bytes(), type=list[DetectorSpec])
    except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ValueError(f"bad detector inventory {path}: {exc}") from exc


__all__ = ["DetectorSpec", "box_layout", "coverage_layout", "default_layout", "instrumented_edges", "load_layout", "save_layout"]
