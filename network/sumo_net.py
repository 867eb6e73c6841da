"""Read a SUMO network into a networkx graph.

Nodes are junctions, edges are roads (``G.edges[u, v]`` holds the fastest road between two
junctions when there are parallel ones). Everything the engine compiles lives on the graph:

- ``G.graph["edges"]``: road id -> ``{from, to, length_m, speed_mps, lanes}``
- ``G.graph["lanes"]``: lane id -> ``{edge, index, length_m, speed_mps}``
- ``G.graph["movements"]``: lane-to-lane connections ``{from_lane, to_lane, junction, tls,
  link_index, direction}`` (``tls`` is None where no signal controls the movement)
- ``G.graph["signals"]``: signal id -> ``{n_links, junctions, conflicts, yields, permissive, clearance_s,
  yield_pass_s, stop_on_red, phases, cycle_phases, programs, intrusions, stand_ins, crossing_zones,
  caution_conflicts}`` (``stop_on_red``: links
  whose red is SUMO's ``s``, a right turn on red after stopping; ``caution_conflicts``: the conflicts
  that are only there because a turn would wait in the other's path; ``stand_ins``: pairs
  ``(a, b)`` where a car of ``a`` held up inside the junction stands in ``b``'s path away from
  where they cross, :func:`_standing_intrusions`; ``crossing_zones``: ``[a, b, k, 0.0, hi_m]``,
  the stretch of path ``k`` of ``a`` where a car halted is, or will be, in conflicting ``b``'s
  way, :func:`_crossing_zones`)

Conflicts come from the junction's own right-of-way table: two links are *foes* when SUMO's
request table says they cross or merge. A foe pair that some phase of the network's own signal
program shows green together is a permissive pair (one yields, as a left turn to oncoming
traffic); a foe pair that no program ever shows green together must never be green together.
Neither must a permissive pair where the turn, waiting inside the junction, stands in the other
stream's path (the junction's geometry puts its waiting point too close: ``_waiting_intrusions``,
which also sweeps the body of a 12 m bus along every path buses may take, the bus changing lanes
as soon as its front is out of the junction); such a turn is served protected instead.
Phases are the distinct green sets of the network's programs, in program order, plus one
greedy phase for each link no program serves, so every link can be served: the first
``cycle_phases`` phases, the ones a cycle runs. Where one of them serves only some of a lane's
links (a shared through-and-left lane whose left turn goes on its own), the lane is blocked
whenever a vehicle for the unserved link reaches its head; *lane phases* follow them
(``_lane_phases``): each greatest set of whole entry lanes that may be green together, so a
controller free to choose its next phase can serve such a lane whole. A turn that gives way and
would wait in another stream's path goes with the streams it gives way to in no lane phase, since
it might still be waiting there when a later phase keeps those streams and adds the other.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import networkx as nx
import numpy as np
import sumolib
from scipy.spatial import cKDTree

_GREEN = "Gg"


class NetworkError(ValueError):
    """A network file that cannot be used, with the reason."""


def read_sumo_net(path: str | Path, *, permissive_turns: bool = True) -> nx.DiGraph:
    """Read ``path`` (a SUMO ``.net.xml``) into a DiGraph, with signals, conflicts and phases.

    ``permissive_turns=False`` makes every pair of crossing foes a conflict, even where the
    network's program lets one give way to the other (a left turn against oncoming traffic):
    such turns then only go on their own, protected, and phases that mixed them are split.
    """
    path = Path(path)
    if not path.is_file():
        raise NetworkError(f"network file not found: {path}")
    try:
        net = sumolib.net.readNet(str(path), withInternal=True, withPrograms=True)
    except Exception as exc:  # sumolib raises plain SAX errors
        raise NetworkError(f"cannot read SUMO network {path}: {exc}") from exc

    g = nx.DiGraph(name=path.name, source=str(path), permissive_turns=permissive_turns)
    for node in net.getNodes():
        if node.getType() == "internal":
            continue
        x, y = node.getCoord()
        g.add_node(node.getID(), x=float(x), y=float(y), type=node.getType(), tls=None)

    edges: dict[str, dict] = {}
    lanes: dict[str, dict] = {}
    for edge in net.getEdges(withInternal=False):
        if edge.getFunction() not in ("", "normal"):
            continue
        lane_ids = []
        for lane in edge.getLanes():
            if not lane.allows("passenger"):
                continue
            lanes[lane.getID()] = {
                "edge": edge.getID(),
                "index": lane.getIndex(),
                "length_m": float(lane.getLength()),
                "speed_mps": float(lane.getSpeed()),
            }
            lane_ids.append(lane.getID())
        if not lane_ids:
            continue
        u, v = edge.getFromNode().getID(), edge.getToNode().getID()
        data = {
            "id": edge.getID(),
            "from": u,
            "to": v,
            "length_m": float(edge.getLength()),
            "speed_mps": float(edge.getSpeed()),
            "lanes": lane_ids,
        }
        edges[edge.getID()] = data
        old = g.get_edge_data(u, v)
        tt = data["length_m"] / max(data["speed_mps"], 0.1)
        if old is None or tt < old["length_m"] / max(old["speed_mps"], 0.1):
            g.add_edge(u, v, **data)

    movements = []
    move_conns = []  # the sumolib connection of each movement
    # (tls, link) -> list of (node, junction-local index, to-lane id); and its clearance need
    link_conns: dict[tuple[str, int], list] = {}
    link_from: dict[tuple[str, int], set] = {}  # (tls, link) -> its entry lanes
    link_clear: dict[tuple[str, int], float] = {}
    link_paths: dict[tuple[str, int], list] = {}  # internal lane shapes of each link's paths
    link_sweeps: dict[tuple[str, int], list] = {}  # the chords a long vehicle's body sweeps on them
    link_internal: dict[tuple[str, int], list] = {}  # per path: [(internal lane id, length)]
    for edge in net.getEdges(withInternal=False):
        for lane in edge.getLanes():
            for conn in lane.getOutgoing():
                to_lane = conn.getToLane()
                tls = conn.getTLSID() or None
                link = conn.getTLLinkIndex() if tls else -1
                node = edge.getToNode()
                if tls is not None and link >= 0:
                    link_conns.setdefault((tls, link), []).append((node, node.getLinkIndex(conn), to_lane.getID()))
                    link_from.setdefault((tls, link), set()).add(lane.getID())
                    link_clear[(tls, link)] = max(link_clear.get((tls, link), 0.0), _sneaker_clearance_s(net, conn))
                    inner = _internal_lanes(net, conn)
                    path = [x.getShape() for x in inner]
                    link_paths.setdefault((tls, link), []).append(path)
                    if inner:
                        link_internal.setdefault((tls, link), []).append([(x.getID(), x.getLength()) for x in inner])
                    if _carries_long_vehicles(lane):
                        # SUMO lets a vehicle change lanes as soon as its front is out of the
                        # junction: its body then runs from its rear in the junction to the front
                        # on the next lane over (a bus did so on ingolstadt21's gneJ257)
                        for out in _lanes_within_one(to_lane):
                            link_sweeps.setdefault((tls, link), []).append(
                                _swept_chords(path + [out.getShape()], LONG_VEHICLE_LENGTH_M))
                if lane.getID() in lanes and to_lane.getID() in lanes:
                    movements.append(
                        {
                            "from_lane": lane.getID(),
                            "to_lane": to_lane.getID(),
                            "junction": node.getID(),
                            "tls": tls,
                            "link_index": int(link),
                            "direction": conn.getDirection(),
                        }
                    )
                    move_conns.append(conn)
    _unsignalised_yields(movements, move_conns)

    signals = {}
    for tl in net.getTrafficLights():
        tls_id = tl.getID()
        programs = [
            [ph.state for ph in prog.getPhases()] for _, prog in sorted(tl.getPrograms().items())
        ]
        n_links = max((len(s) for p in programs for s in p), default=0)
        n_links = max(n_links, 1 + max((li for _, _, li in tl.getConnections()), default=-1))
        if n_links == 0:
            continue
        intrusions = _waiting_intrusions(tls_id, n_links, link_paths, link_sweeps)
        signals[tls_id] = _signal(tls_id, n_links, programs, link_conns, permissive_turns, intrusions,
                                  {i: link_from.get((tls_id, i), set()) for i in range(n_links)})
        signals[tls_id]["clearance_s"] = [round(link_clear.get((tls_id, i), 0.0), 2) for i in range(n_links)]
        signals[tls_id]["stand_ins"] = sorted(_standing_intrusions(tls_id, n_links, link_paths, link_conns, link_from))
        signals[tls_id]["crossing_zones"] = _crossing_zones(
            tls_id, signals[tls_id]["conflicts"], link_internal, link_paths, link_conns, link_from)
        signals[tls_id]["yield_pass_s"] = [
            round(_pass_time_s(link_paths.get((tls_id, a), []), link_paths.get((tls_id, b), [])), 2)
            for a, b in signals[tls_id]["yields"]]
        for j in signals[tls_id]["junctions"]:
            g.nodes[j]["tls"] = tls_id

    g.graph.update(edges=edges, lanes=lanes, movements=movements, signals=signals, link_internal_lanes=link_internal)
    return g


def _unsignalised_yields(movements: list[dict], conns: list) -> None:
    """``yields_to`` of each movement through a junction without a signal: the movements (indices
    into ``movements``) that the junction's right of way (its ``request`` rows) puts first."""
    at: dict[str, list[int]] = {}
    for k, mv in enumerate(movements):
        if mv["tls"] is None:
            at.setdefault(mv["junction"], []).append(k)
    for ks in at.values():
        node = conns[ks[0]].getFrom().getToNode()
        for k in ks:
            first = [j for j in ks if j != k and node.forbids(conns[j], conns[k])]
            if first:
                movements[k]["yields_to"] = first


def _signal(tls_id: str, n_links: int, programs: list[list[str]], link_conns: dict,
            permissive_turns: bool = True, intrusions: frozenset = frozenset(),
            link_from: dict | None = None) -> dict:
    """Conflicts, yields and phases of one signal, from its junctions' right-of-way tables.

    ``intrusions``: pairs ``(a, b)`` where a vehicle of ``a`` waiting inside the junction stands
    in the path of ``b`` (:func:`_waiting_intrusions`); if ``a`` would give way to ``b`` there,
    giving way does not keep them apart, so the pair is a conflict instead. ``link_from``: each
    link's entry lanes (for the lane phases; none without it).
    """
    conns = {i: link_conns.get((tls_id, i), []) for i in range(n_links)}
    junctions = sorted({node.getID() for cs in conns.values() for node, _, _ in cs})

    def foes(a: int, b: int) -> bool:
        return any(
            na is nb and ia >= 0 and ib >= 0 and na.areFoes(ia, ib)
            for na, ia, _ in conns[a]
            for nb, ib, _ in conns[b]
        )

    def crossing(a: int, b: int) -> bool:
        """Foes whose paths cross (not merely merge into the same lane)."""
        return any(
            na is nb and ia >= 0 and ib >= 0 and na.areFoes(ia, ib) and la != lb
            for na, ia, la in conns[a]
            for nb, ib, lb in conns[b]
        )

    def yields(a: int, b: int) -> bool:
        """Link ``a`` must give way to link ``b`` when both are green."""
        return any(
            na is nb and ia >= 0 and ib >= 0 and na._prohibits[ia][-(ib + 1)] == "1"
            for na, ia, _ in conns[a]
            for nb, ib, _ in conns[b]
        )

    states = [s.ljust(n_links, "r") for p in programs for s in p]
    together = set()
    shown_major = set()
    for s in states:
        green = [i for i, ch in enumerate(s) if ch in _GREEN]
        shown_major.update(i for i in green if s[i] == "G")
        together.update(itertools.combinations(green, 2))

    conflicts = []
    yield_pairs = []
    stuck_in_way: set[tuple[int, int]] = set()  # (a, b): a would wait in b's path
    caution: list[tuple[int, int]] = []  # conflicts only because of that (the program shows them together)
    for a, b in itertools.combinations(range(n_links), 2):
        if not foes(a, b):
            continue
        ab, ba = yields(a, b), yields(b, a)
        blocked = [(x, y) for x, y, gives_way in ((a, b, ab), (b, a, ba)) if gives_way and (x, y) in intrusions]
        stuck_in_way.update(blocked)
        rule = (a, b) not in together or (not permissive_turns and crossing(a, b))
        if rule or blocked:
            conflicts.append((a, b))
        if blocked and not rule:
            caution.append((a, b))
        if ab:
            yield_pairs.append((a, b))
        if ba:
            yield_pairs.append((b, a))

    conflict_set = set(conflicts)
    phases: list[list[int]] = []
    for s in states:
        if "y" in s or "u" in s:  # a transition, not a phase to hold
            continue
        # split in link order: SUMO numbers links by approach, so a split phase serves whole
        # approaches, and a lane shared by a through and a turn is never half served
        green = [i for i, ch in enumerate(s) if ch in _GREEN]
        # a turn that would wait in the path of a stream green with it leaves the phase (it is
        # served protected, by another phase or one made for it below), the stream stays
        green = [i for i in green if not any((i, j) in stuck_in_way for j in green)]
        for group in _conflict_free_groups(green, conflict_set):
            if group not in phases:
                phases.append(group)
    served = {i for p in phases for i in p}
    for i in range(n_links):
        if i in served or not conns[i]:
            continue
        phase = [i]
        for j in range(n_links):
            if j != i and j not in phase and all(
                (min(j, k), max(j, k)) not in conflict_set for k in phase
            ):
                phase.append(j)
        phase.sort()
        phases.append(phase)
        served.update(phase)
    cycle_phases = len(phases)
    phases += _lane_phases(phases, conflict_set, yield_pairs, {a for a, _ in intrusions}, link_from or {})

    return {
        "n_links": n_links,
        "junctions": junctions,
        "permissive_turns": permissive_turns,
        "conflicts": conflicts,
        "yields": yield_pairs,
        "intrusions": sorted(intrusions),
        "caution_conflicts": caution,
        "permissive": sorted(set(range(n_links)) - shown_major),
        "stop_on_red": sorted({i for s in states for i, ch in enumerate(s) if ch == "s"}),
        "phases": phases,
        "cycle_phases": cycle_phases,
        "programs": programs,
    }


MAX_LANE_PHASES = 16  # per signal (RESCO's have at most 4)
MAX_LANE_CLIQUES = 2000  # sets of lanes looked at per signal


def _lane_phases(phases: list[list[int]], conflicts: set, yield_pairs: list, intruders: set,
                 link_from: dict) -> list[list[int]]:
    """The greatest sets of whole entry lanes that may be green together and that no phase in
    ``phases`` already shows, each as a phase (sorted links); none unless some phase serves only
    part of a lane. Two lanes go together when no link of one conflicts with a link of the other,
    nor gives way to it while it would wait in some stream's path (``intruders``)."""
    lanes: dict[str, set[int]] = {}
    for link, entries in link_from.items():
        for lane in entries:
            lanes.setdefault(lane, set()).add(link)
    apart = set(conflicts) | {(min(a, b), max(a, b)) for a, b in yield_pairs if a in intruders}

    def together(x: set[int], y: set[int]) -> bool:
        return all((min(i, j), max(i, j)) not in apart for i in x for j in y)

    shown = [set(p) for p in phases]
    whole = [lane for lane in sorted(lanes) if together(lanes[lane], lanes[lane])]
    half = {lane for lane in whole if any(0 < len(lanes[lane] & p) < len(lanes[lane]) for p in shown)}
    if not half:
        return []
    # nodes are the lanes' places in ``whole``: integers iterate in the same order in every
    # process, lane ids (strings) do not, and the clique search walks sets
    g = nx.Graph()
    g.add_nodes_from(range(len(whole)))
    g.add_edges_from((i, j) for i, j in itertools.combinations(range(len(whole)), 2)
                     if together(lanes[whole[i]], lanes[whole[j]]))
    extra: list[list[int]] = []
    # only sets holding a half-served lane are wanted, so each such lane's are searched for; a
    # signal joining several junctions may have very many: a bounded number is looked at
    cliques: set[tuple[int, ...]] = set()
    per_lane = max(1, MAX_LANE_CLIQUES // len(half))
    for i, lane in enumerate(whole):
        if lane in half:
            cliques.update(tuple(sorted(c)) for c in itertools.islice(nx.find_cliques(g, nodes=[i]), per_lane))
    for clique in sorted(cliques):
        links = set().union(*(lanes[whole[i]] for i in clique))
        if not any(links <= p for p in shown):
            shown.append(links)
            extra.append(sorted(links))
            if len(extra) == MAX_LANE_PHASES:
                break
    return extra


def _conflict_free_groups(links: list[int], conflicts: set[tuple[int, int]]) -> list[list[int]]:
    """Split ``links`` greedily, in order, into groups without a conflicting pair."""
    groups: list[list[int]] = []
    for i in links:
        for g in groups:
            if all((min(i, j), max(i, j)) not in conflicts for j in g):
                g.append(i)
                break
        else:
            groups.append([i])
    return groups


VEHICLE_HALF_WIDTH_M = 0.9  # SUMO's default passenger car is 1.8 m wide


def _internal_lanes(net, conn) -> list:
    """The internal lanes a connection drives through, in order: its via lane, then the pieces
    after each internal waiting point (at most 8; empty: none)."""
    via = conn.getViaLaneID()
    if not via:
        return []
    lanes = [net.getLane(via)]
    for _ in range(8):
        nxt = None
        for c in lanes[-1].getOutgoing():
            to = c.getViaLaneID() or (c.getToLane().getID() if c.getToLane().getEdge().getFunction() == "internal" else "")
            if to:
                nxt = net.getLane(to)
                break
        if nxt is None:
            break
        lanes.append(nxt)
    return lanes


def _waiting_intrusions(tls_id: str, n_links: int, link_paths: dict, link_sweeps: dict | None = None) -> frozenset:
    """Pairs ``(a, b)``: a vehicle of link ``a`` waiting at its internal stop stands in ``b``'s path.

    A turn that gives way inside the junction waits with its front at the end of its first
    internal lane. Where the junction's geometry puts that point so close to a foe's path that the
    waiting car's front corners (half a car width either side) come within half a car width of
    the foe's centre line, a foe passing at speed hits it: SUMO's own programs collide there
    (cologne1 shows 29 junction collisions under SUMO's actuated program, all of this kind).
    ``link_sweeps`` (:func:`_swept_chords`) adds the body of a long vehicle on ``b``: a bus's
    body cuts inside its path's curve, so it may hit a waiting car its centre line misses (a bus
    on ingolstadt21's ``gneJ257``, link 1, against a left turner waiting on link 7).
    """
    waiting: dict[int, list] = {}
    passing: dict[int, list] = {}
    for i in range(n_links):
        for path in link_paths.get((tls_id, i), []):
            if path:
                passing.setdefault(i, []).extend(path)
            if len(path) >= 2 and len(path[0]) >= 2:
                (x0, y0), (x1, y1) = path[0][-2], path[0][-1]
                norm = math.hypot(x1 - x0, y1 - y0)
                if norm > 0:
                    px, py = -(y1 - y0) / norm * VEHICLE_HALF_WIDTH_M, (x1 - x0) / norm * VEHICLE_HALF_WIDTH_M
                    waiting.setdefault(i, []).extend([(x1 + px, y1 + py), (x1 - px, y1 - py), (x1, y1)])
        for chords in (link_sweeps or {}).get((tls_id, i), []):
            passing.setdefault(i, []).extend(chords)  # (each chord a two-point shape)
    out = set()
    for a, corners in waiting.items():
        for b, shapes in passing.items():
            if a != b and any(_polyline_distance(p, shape) < VEHICLE_HALF_WIDTH_M for p in corners for shape in shapes):
                out.add((a, b))
    return frozenset(out)


CAR_LENGTH_M = 5.0  # SUMO's default passenger car
MIN_GAP_M = 2.5  # and the gap it keeps to the car ahead
STAND_STEP_M = 0.25  # sampling of paths and car bodies


def _standing_intrusions(tls_id: str, n_links: int, link_paths: dict, link_conns: dict,
                         link_from: dict) -> frozenset:
    """Pairs ``(a, b)``: a car of link ``a`` standing somewhere on its path through the junction
    (held up behind a full exit, say) has its body within half a car width of ``b``'s centre
    line, on a stretch of ``b``'s path where the two paths do not cross.

    SUMO keeps a vehicle of ``b`` off a foe only around the points where their lanes cross;
    where ``a``'s path merely passes close (a tight five-way junction, where a left turn's exit
    runs past the start of the opposite left turn and a car standing there cuts the corner into
    it), nothing stops ``b`` driving into a car of ``a`` left standing there (an unseen town of
    ``benchmarks.unseen``, seed 5: three collisions so, at signal ``1``, links 17 and 4).
    Links that share an entry or an exit lane are left out (they follow or merge, which SUMO
    handles)."""
    to_lanes = {i: {to for _, _, to in link_conns.get((tls_id, i), [])} for i in range(n_links)}
    flat = _polylines(tls_id, range(n_links), link_paths)
    samples = {i: [_resample(x, STAND_STEP_M) for x in paths] for i, paths in flat.items()}
    out = set()
    for a, paths_a in flat.items():
        body = np.concatenate([_body_points(x, CAR_LENGTH_M + MIN_GAP_M) for x in paths_a])
        tree = cKDTree(body)
        lo, hi = body.min(axis=0) - VEHICLE_HALF_WIDTH_M, body.max(axis=0) + VEHICLE_HALF_WIDTH_M
        for b, paths_b in flat.items():
            if a == b or to_lanes[a] & to_lanes[b] or link_from.get((tls_id, a), set()) & link_from.get((tls_id, b), set()):
                continue
            for path_b, (pts_b, along_b) in zip(paths_b, samples[b]):
                inside = ((pts_b >= lo) & (pts_b <= hi)).all(axis=1)
                if not inside.any():
                    continue
                near = np.zeros(len(pts_b), dtype=np.bool_)
                near[inside] = tree.query(pts_b[inside], distance_upper_bound=VEHICLE_HALF_WIDTH_M)[0] < VEHICLE_HALF_WIDTH_M
                if not near.any():
                    continue
                cross = [c for path_a in paths_a for c in _crossings_along(path_b, path_a)]
                if _unprotected_stretch(near, along_b, cross):
                    out.add((a, b))
                    break
    return frozenset(out)


def _crossing_zones(tls_id: str, conflicts: list, link_internal: dict, link_paths: dict, link_conns: dict,
                    link_from: dict) -> list[list]:
    """Per pair of conflicting links ``(a, b)`` (``conflicts``, either way round) and path ``k``
    of ``a`` (``link_internal[(tls, a)][k]``): ``[a, b, k, 0.0, hi_m]``, the stretch of that
    path, in lane-length metres from its start, where a car standing with its front anywhere in
    it is in the way of ``b``'s vehicles (its body within half a car width of ``b``'s centre
    line) or will be when it moves on: from the path's start to the last such front position.

    A box camera counts the vehicles, and the halting ones, in that stretch (a lane-area zone
    from the path's start to ``hi_m`` less a car length, so a car counts until its front is
    past ``hi_m``). SUMO lets ``b``'s vehicles drive into a car of ``a`` held up there, where
    ``a`` gives way to ``b`` and its front has not reached the point where the centre lines
    cross (an unseen town of ``benchmarks.unseen``, seed 7, signal ``228``: twelve collisions
    so, under max-pressure). A car halted before the stretch where it is in the way counts too:
    on the same town under fixed-time a car stood 30 s at the start of its path behind a full
    exit, the conflicting stream started, one of its cars got stuck across that path, and the
    first car, moving on, drove into it. Links sharing an entry or an exit lane are left out
    (they follow or merge, which SUMO handles). Pairs where one only gives way to the other are
    left out too: a permissive turner waits in the oncoming stream's way by design (zones on
    them as well, holding on any vehicle in a zone, not only a halting one, cost ingolstadt21
    under adaptive 122.7 s mean time loss and 27 teleports; on conflicts only 85.7 s and 7)."""
    links = {x for pair in conflicts for x in pair}
    to_lanes = {i: {to for _, _, to in link_conns.get((tls_id, i), [])} for i in links}
    lines = _polylines(tls_id, links, link_paths)
    centre: dict[int, tuple] = {}  # per link: a tree over its centre lines, and their box widened
    bodies: dict[int, list] = {}  # per link, per path: (shapes, lanes, body grid, front positions)
    out: list[list] = []
    for a, b in sorted({(a, b) for a, b in conflicts} | {(b, a) for a, b in conflicts}):
        if b not in lines or to_lanes[a] & to_lanes[b] or link_from.get((tls_id, a), set()) & link_from.get(
                (tls_id, b), set()):
            continue
        if b not in centre:
            pts = np.concatenate([_resample(x, STAND_STEP_M)[0] for x in lines[b]])
            centre[b] = (cKDTree(pts), pts.min(axis=0) - VEHICLE_HALF_WIDTH_M, pts.max(axis=0) + VEHICLE_HALF_WIDTH_M)
        if a not in bodies:
            paths = [p for p in link_paths.get((tls_id, a), []) if p]
            bodies[a] = [(shapes, lanes, *_body_grid(flat, 0.5)) if len(flat := _flat(shapes)) >= 2 else None
                         for shapes, lanes in zip(paths, link_internal.get((tls_id, a), []))]
        for k, body in enumerate(bodies[a]):
            if body is None or not body[3].size:
                continue
            shapes, lanes, grid, s = body
            tree, lo_b, hi_b = centre[b]
            near = ((grid >= lo_b) & (grid <= hi_b)).all(axis=2)  # (only points near b's box are looked up)
            if not near.any():
                continue
            d = np.full(near.shape, np.inf)
            d[near] = tree.query(grid[near], distance_upper_bound=VEHICLE_HALF_WIDTH_M)[0]
            hit = (d < VEHICLE_HALF_WIDTH_M).any(axis=1)
            if hit.any():
                hi = _lane_metres(shapes, lanes, float(s[hit].max()))
                out.append([a, b, k, 0.0, round(hi, 2)])
    return out


def _polylines(tls_id: str, links, link_paths: dict) -> dict[int, list[np.ndarray]]:
    """Per link of ``links``, the polylines of its paths through the junction (those of at least
    two points)."""
    out: dict[int, list[np.ndarray]] = {}
    for i in links:
        for path in link_paths.get((tls_id, i), []):
            pts = _flat(path)
            if len(pts) >= 2:
                out.setdefault(i, []).append(pts)
    return out


def _flat(shapes: list) -> np.ndarray:
    """The polyline of a path of internal lane shapes, repeated points dropped."""
    pts = [tuple(p) for shape in shapes for p in shape]
    return np.asarray([p for k, p in enumerate(pts) if k == 0 or p != pts[k - 1]], dtype=np.float64).reshape(-1, 2)


def _lane_metres(shapes: list, lanes: list, s_m: float) -> float:
    """Where ``s_m`` metres along the polyline of ``shapes`` lies in the lanes' own metres
    (SUMO's lane positions, summed over the path's lanes: a lane's length may differ from its
    shape's)."""
    done = 0.0
    for shape, (_, length) in zip(shapes, lanes):
        g = float(_cumulative_m(np.asarray(shape, dtype=np.float64))[-1]) if len(shape) >= 2 else 0.0
        if s_m <= g or shape is shapes[-1]:
            return done + (min(s_m, g) / g * length if g > 0 else 0.0)
        s_m -= g
        done += length
    return done


def _unprotected_stretch(near: np.ndarray, along: np.ndarray, crossings: list[tuple[float, float]]) -> bool:
    """Whether a ``near`` sample lies outside the stretch around every crossing point
    ``(where along, sine of the angle)`` that a car body crossing there covers anyway (a car
    width over the sine of the angle, and a metre): SUMO's own protection."""
    s = along[near]
    covered = np.zeros(s.size, dtype=np.bool_)
    for at, sine in crossings:
        covered |= np.abs(s - at) <= 2 * VEHICLE_HALF_WIDTH_M / max(sine, 0.1) + 1.0
    return not covered.all()


def _resample(path: np.ndarray, step_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Points every ``step_m`` along the polyline ``path``, and how far along each is (m)."""
    cum = _cumulative_m(path)
    s = np.append(np.arange(0.0, cum[-1], step_m), cum[-1])
    return _points_at(path, cum, s), s


def _cumulative_m(path: np.ndarray) -> np.ndarray:
    """How far along the polyline ``path`` each of its points is (m)."""
    seg = np.diff(path, axis=0)
    return np.concatenate([[0.0], np.cumsum(np.hypot(seg[:, 0], seg[:, 1]))])


def _points_at(path: np.ndarray, cum: np.ndarray, s: np.ndarray) -> np.ndarray:
    """The points of ``path`` (its points ``cum`` metres along) ``s`` metres along it."""
    return np.column_stack([np.interp(s, cum, path[:, 0]), np.interp(s, cum, path[:, 1])])


def _body_points(path: np.ndarray, from_end_m: float, length_m: float = CAR_LENGTH_M, step_m: float = 0.5) -> np.ndarray:
    """Points of the body of a car ``length_m`` long whose front stands anywhere in the last
    ``from_end_m`` of ``path`` (every ``step_m``)."""
    grid, s = _body_grid(path, step_m, length_m)
    return grid[s >= s[-1] - from_end_m].reshape(-1, 2) if s.size else grid.reshape(-1, 2)


def _body_grid(path: np.ndarray, step_m: float, length_m: float = CAR_LENGTH_M) -> tuple[np.ndarray, np.ndarray]:
    """Per front position every ``step_m`` along ``path`` (and how far along it is, m), points of
    the body of a car ``length_m`` long standing there: a grid over the rectangle from its rear
    to its front (the chord: a car cuts the corner of a curve), a car width across."""
    front, s = _resample(path, step_m)
    rear = _points_at(path, _cumulative_m(path), np.maximum(s - length_m, 0.0))
    d = front - rear
    n = np.hypot(d[:, 0], d[:, 1])
    ok = n > 0
    rear, d, n, s = rear[ok], d[ok], n[ok], s[ok]
    side = np.column_stack([-d[:, 1], d[:, 0]]) / n[:, None]
    t = np.linspace(0.0, 1.0, 11)[None, :, None, None]
    w = np.linspace(-VEHICLE_HALF_WIDTH_M, VEHICLE_HALF_WIDTH_M, 5)[None, None, :, None]
    grid = rear[:, None, None, :] + t * d[:, None, None, :] + w * side[:, None, None, :]
    return grid.reshape(len(s), -1, 2), s


def _crossings_along(path_b: np.ndarray, path_a: np.ndarray) -> list[tuple[float, float]]:
    """Where along ``path_b`` (m) the polyline ``path_a`` crosses it, and the sine of the angle."""
    out = []
    run = 0.0
    for q1, q2 in zip(path_b[:-1], path_b[1:]):
        r = q2 - q1
        length = float(np.hypot(r[0], r[1]))
        for p1, p2 in zip(path_a[:-1], path_a[1:]):
            s = p2 - p1
            den = r[0] * s[1] - r[1] * s[0]
            if den == 0:
                continue
            w = p1 - q1
            t = (w[0] * s[1] - w[1] * s[0]) / den
            u = (w[0] * r[1] - w[1] * r[0]) / den
            if 0.0 <= t <= 1.0 and 0.0 <= u <= 1.0:
                out.append((run + t * length, abs(den) / (length * float(np.hypot(s[0], s[1])))))
        run += length
    return out


LONG_VEHICLE_CLASSES = ("bus", "coach", "truck", "trailer")
LONG_VEHICLE_LENGTH_M = 12.0  # a standard city bus


def _carries_long_vehicles(lane) -> bool:
    return any(lane.allows(c) for c in LONG_VEHICLE_CLASSES)


def _lanes_within_one(lane) -> list:
    """``lane`` and the lanes beside it on its edge that a long vehicle may use."""
    edge, i = lane.getEdge(), lane.getIndex()
    return [l for l in edge.getLanes() if abs(l.getIndex() - i) <= 1 and (l is lane or _carries_long_vehicles(l))]


def _swept_chords(shapes: list, length_m: float, step_m: float = 0.5) -> list[tuple]:
    """The chords (rear point, front point) of a vehicle ``length_m`` long whose front follows
    ``shapes`` (its internal lanes, then its outgoing lane) every ``step_m``, until its rear has
    left the internal lanes: the area its body sweeps, as a set of segments."""
    if len(shapes) < 2:
        return []
    inside = sum(math.hypot(b[0] - a[0], b[1] - a[1]) for sh in shapes[:-1] for a, b in zip(sh, sh[1:]))
    points: list[tuple[float, float, float]] = []  # (distance along, x, y)
    run = 0.0
    for sh in shapes:
        for (ax, ay), (bx, by) in zip(sh, sh[1:]):
            seg = math.hypot(bx - ax, by - ay)
            n = max(1, int(seg / step_m))
            for k in range(n):
                if run + seg * k / n > inside + length_m:
                    break
                t = k / n
                points.append((run + seg * t, ax + t * (bx - ax), ay + t * (by - ay)))
            run += seg
    chords, rear = [], 0
    for s, x, y in points:
        while points[rear][0] < s - length_m:
            rear += 1
        chords.append(((points[rear][1], points[rear][2]), (x, y)))
    return chords


def _polyline_distance(p: tuple[float, float], shape) -> float:
    return min((_nearest_on_segment(p, a, b)[0] for a, b in zip(shape, shape[1:])), default=math.inf)


def _nearest_on_segment(p, a, b) -> tuple[float, float]:
    """Distance from ``p`` to segment ``ab``, and where on it the nearest point is (0..1)."""
    (px, py), (ax, ay), (bx, by) = p, a, b
    dx, dy = bx - ax, by - ay
    den = dx * dx + dy * dy
    t = 0.0 if den == 0 else min(1.0, max(0.0, ((px - ax) * dx + (py - ay) * dy) / den))
    return math.hypot(px - ax - t * dx, py - ay - t * dy), t


YELLOW_RUNNER_MPS = 6.0  # a vehicle that entered late on yellow, from a queue: not at full speed


def _pass_time_s(paths_a: list, paths_b: list) -> float:
    """How long after ``b`` turns red the last vehicle that ran its yellow may still be coming
    past the point where a vehicle of ``a`` (which gives way to ``b``) waits inside the junction:
    its path up to that point and its own length at ``YELLOW_RUNNER_MPS`` (0 when ``a`` has no
    waiting point inside the junction, or ``b`` no path through it)."""
    waits = [path[0][-1] for path in paths_a if len(path) >= 2 and path[0]]
    longest = 0.0
    for point in waits:
        for path in paths_b:
            best, at, run = math.inf, 0.0, 0.0
            for shape in path:
                for a, b in zip(shape, shape[1:]):
                    seg = math.hypot(b[0] - a[0], b[1] - a[1])
                    d, t = _nearest_on_segment(point, a, b)
                    if d < best:
                        best, at = d, run + t * seg  # (along the path to its point nearest the waiting point)
                    run += seg
            if best < math.inf:
                longest = max(longest, (at + VEHICLE_LENGTH_M) / YELLOW_RUNNER_MPS)
    return longest


SNEAKER_ACCEL_MPS2 = 2.6  # SUMO's default passenger car acceleration
VEHICLE_LENGTH_M = 5.0
# a vehicle waiting inside the junction starts only once the last vehicle of the stream it gives
# way to (which may have entered on yellow) has passed it, and it reacts: about 2 s after red
SNEAKER_STARTUP_S = 2.0


def _sneaker_clearance_s(net, conn) -> float:
    """Red clearance a link needs for a vehicle waiting inside the junction to get out.

    A turn that gives way inside the junction (SUMO splits its path at an internal waiting
    point) can leave a vehicle standing there when its green ends; it then starts from rest and
    must cover the rest of its path and its own length before a conflicting stream may start:
    ``SNEAKER_STARTUP_S + sqrt(2 d / a)`` (the start-up: on the demo town a turner that waited
    for the last vehicles of the stream it gave way to was still inside the junction 8 s after
    its red, 3 s past the bare ``sqrt``). Links without an internal waiting point need no more
    than the default.
    """
    rest = sum(lane.getLength() for lane in _internal_lanes(net, conn)[1:])  # after the waiting point
    if rest == 0.0:
        return 0.0
    return SNEAKER_STARTUP_S + (2.0 * (rest + VEHICLE_LENGTH_M) / SNEAKER_ACCEL_MPS2) ** 0.5
