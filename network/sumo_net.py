"""Read a SUMO network into a networkx graph.

Nodes are junctions, edges are roads (``G.edges[u, v]`` holds the fastest road between two
junctions when there are parallel ones). Everything the engine compiles lives on the graph:

- ``G.graph["edges"]``: road id -> ``{from, to, length_m, speed_mps, lanes}``
- ``G.graph["lanes"]``: lane id -> ``{edge, index, length_m, speed_mps}``
- ``G.graph["movements"]``: lane-to-lane connections ``{from_lane, to_lane, junction, tls,
  link_index, direction}`` (``tls`` is None where no signal controls the movement)
- ``G.graph["signals"]``: signal id -> ``{n_links, junctions, conflicts, yields, permissive, clearance_s,
  stop_on_red, phases, programs}`` (``stop_on_red``: links whose red is SUMO's ``s``, a right
  turn on red after stopping)

Conflicts come from the junction's own right-of-way table: two links are *foes* when SUMO's
request table says they cross or merge. A foe pair that some phase of the network's own signal
program shows green together is a permissive pair (one yields, as a left turn to oncoming
traffic); a foe pair that no program ever shows green together must never be green together.
Phases are the distinct green sets of the network's programs, in program order, plus one
greedy phase for each link no program serves, so every link can be served.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import networkx as nx
import sumolib

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
    # (tls, link) -> list of (node, junction-local index, to-lane id); and its clearance need
    link_conns: dict[tuple[str, int], list] = {}
    link_clear: dict[tuple[str, int], float] = {}
    for edge in net.getEdges(withInternal=False):
        for lane in edge.getLanes():
            for conn in lane.getOutgoing():
                to_lane = conn.getToLane()
                tls = conn.getTLSID() or None
                link = conn.getTLLinkIndex() if tls else -1
                node = edge.getToNode()
                if tls is not None and link >= 0:
                    link_conns.setdefault((tls, link), []).append((node, node.getLinkIndex(conn), to_lane.getID()))
                    link_clear[(tls, link)] = max(link_clear.get((tls, link), 0.0), _sneaker_clearance_s(net, conn))
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
        signals[tls_id] = _signal(tls_id, n_links, programs, link_conns, permissive_turns)
        signals[tls_id]["clearance_s"] = [round(link_clear.get((tls_id, i), 0.0), 2) for i in range(n_links)]
        for j in signals[tls_id]["junctions"]:
            g.nodes[j]["tls"] = tls_id

    g.graph.update(edges=edges, lanes=lanes, movements=movements, signals=signals)
    return g


def _signal(tls_id: str, n_links: int, programs: list[list[str]], link_conns: dict,
            permissive_turns: bool = True) -> dict:
    """Conflicts, yields and phases of one signal, from its junctions' right-of-way tables."""
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
    for a, b in itertools.combinations(range(n_links), 2):
        if not foes(a, b):
            continue
        if (a, b) not in together or (not permissive_turns and crossing(a, b)):
            conflicts.append((a, b))
        if yields(a, b):
            yield_pairs.append((a, b))
        if yields(b, a):
            yield_pairs.append((b, a))

    conflict_set = set(conflicts)
    phases: list[list[int]] = []
    for s in states:
        if "y" in s or "u" in s:  # a transition, not a phase to hold
            continue
        # split in link order: SUMO numbers links by approach, so a split phase serves whole
        # approaches, and a lane shared by a through and a turn is never half served
        green = [i for i, ch in enumerate(s) if ch in _GREEN]
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

    return {
        "n_links": n_links,
        "junctions": junctions,
        "permissive_turns": permissive_turns,
        "conflicts": conflicts,
        "yields": yield_pairs,
        "permissive": sorted(set(range(n_links)) - shown_major),
        "stop_on_red": sorted({i for s in states for i, ch in enumerate(s) if ch == "s"}),
        "phases": phases,
        "programs": programs,
    }


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


SNEAKER_ACCEL_MPS2 = 2.6  # SUMO's default passenger car acceleration
VEHICLE_LENGTH_M = 5.0


def _sneaker_clearance_s(net, conn) -> float:
    """Red clearance a link needs for a vehicle waiting inside the junction to get out.

    A turn that gives way inside the junction (SUMO splits its path at an internal waiting
    point) can leave a vehicle standing there when its green ends; it then starts from rest and
    must cover the rest of its path and its own length before a conflicting stream may start:
    ``sqrt(2 d / a)``. Links without an internal waiting point need no more than the default.
    """
    via = conn.getViaLaneID()
    if not via:
        return 0.0
    rest = 0.0
    lane = net.getLane(via)
    for _ in range(8):  # the path's further internal pieces, after the waiting point
        nxt = None
        for c in lane.getOutgoing():
            to = c.getViaLaneID() or (c.getToLane().getID() if c.getToLane().getEdge().getFunction() == "internal" else "")
            if to:
                nxt = net.getLane(to)
                break
        if nxt is None:
            break
        rest += nxt.getLength()
        lane = nxt
    if rest == 0.0:
        return 0.0
    return (2.0 * (rest + VEHICLE_LENGTH_M) / SNEAKER_ACCEL_MPS2) ** 0.5
