"""The network compiled to struct-of-arrays, the only form kernels see.

Every id becomes an integer index once, here. Lists of lists are CSR pairs: the items of row
``r`` are ``x_idx[x_ptr[r]:x_ptr[r + 1]]``. Signal links are numbered globally: signal ``t``
owns links ``tls_link_ptr[t]`` to ``tls_link_ptr[t + 1] - 1``, in SUMO link-index order, so a
signal's state string is the slice of the per-link state array.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx
import numpy as np

from network.netcache import cached_graph


def csr(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """CSR ``(ptr, idx)`` arrays (int64, int32) of a list of integer rows."""
    ptr = np.zeros(len(rows) + 1, dtype=np.int64)
    ptr[1:] = np.cumsum([len(r) for r in rows])
    idx = np.fromiter((x for r in rows for x in r), dtype=np.int32, count=int(ptr[-1]))
    return ptr, idx


@dataclass(frozen=True, eq=False)
class CompiledNetwork:
    """Integer-indexed arrays of one road network. Read-only after compilation."""

    graph: nx.DiGraph = field(repr=False)
    junction_ids: tuple[str, ...]
    edge_ids: tuple[str, ...]
    lane_ids: tuple[str, ...]
    tls_ids: tuple[str, ...]

    edge_from: np.ndarray  # int32[n_edges] junction index
    edge_to: np.ndarray  # int32[n_edges]
    edge_length_m: np.ndarray  # float64[n_edges]
    edge_speed_mps: np.ndarray  # float64[n_edges] (speed limit)
    edge_lane_ptr: np.ndarray
    edge_lane_idx: np.ndarray

    lane_edge: np.ndarray  # int32[n_lanes]
    lane_length_m: np.ndarray  # float64[n_lanes]
    lane_speed_mps: np.ndarray  # float64[n_lanes]

    move_in_lane: np.ndarray  # int32[n_movements]
    move_out_lane: np.ndarray  # int32[n_movements]
    move_link: np.ndarray  # int32[n_movements] global signal link, -1 when unsignalised

    tls_link_ptr: np.ndarray  # int64[n_tls + 1]
    link_tls: np.ndarray  # int32[n_links]
    link_conflict_ptr: np.ndarray  # CSR over links: links that must never be green together
    link_conflict_idx: np.ndarray
    link_yield_ptr: np.ndarray  # CSR over links: links this one gives way to
    link_yield_idx: np.ndarray
    link_permissive: np.ndarray  # bool[n_links] never a protected green in the source program
    link_stop_on_red: np.ndarray  # bool[n_links] red is "stop, then go" (right turn on red)
    link_clearance_s: np.ndarray  # float64[n_links] red clearance the geometry needs (0: default)
    link_yield_pass_s: np.ndarray  # float64, aligned with link_yield_idx: how long after the stream
    # turns red its last yellow runner may still be coming past where the yielding link waits
    link_intruder_ptr: np.ndarray  # CSR over links: links whose vehicles, waiting or held up inside
    link_intruder_idx: np.ndarray  # the junction, stand in this link's path (``intrusions``, ``stand_ins``)
    link_cross_ptr: np.ndarray  # CSR over links: links with a stretch of path in this link's way
    link_cross_idx: np.ndarray  # (``crossing_zones``: a box camera zone watches each such stretch)
    link_move_ptr: np.ndarray  # CSR over links: movements the link controls
    link_move_idx: np.ndarray

    tls_phase_ptr: np.ndarray  # int64[n_tls + 1] phases of each signal
    phase_tls: np.ndarray  # int32[n_phases]
    phase_link_ptr: np.ndarray  # CSR over phases: global links green in the phase
    phase_link_idx: np.ndarray
    phase_in_cycle: np.ndarray  # bool[n_phases]: one of the phases a cycle runs (not a lane phase)

    lane_index: dict[str, int] = field(repr=False)
    edge_index: dict[str, int] = field(repr=False)
    tls_index: dict[str, int] = field(repr=False)
    junction_index: dict[str, int] = field(repr=False)

    @property
    def n_lanes(self) -> int:
        return len(self.lane_ids)

    @property
    def n_edges(self) -> int:
        return len(self.edge_ids)

    @property
    def n_tls(self) -> int:
        return len(self.tls_ids)

    @property
    def n_links(self) -> int:
        return int(self.tls_link_ptr[-1])

    @property
    def n_phases(self) -> int:
        return int(self.tls_phase_ptr[-1])

    @property
    def n_movements(self) -> int:
        return int(self.move_in_lane.size)

    def tls_n_links(self, tls: int) -> int:
        return int(self.tls_link_ptr[tls + 1] - self.tls_link_ptr[tls])

    def conflict_pairs(self, tls: int) -> list[tuple[int, int]]:
        """Conflicting link pairs of one signal, as local SUMO link indices ``(a < b)``."""
        base = int(self.tls_link_ptr[tls])
        out = []
        for a in range(base, int(self.tls_link_ptr[tls + 1])):
            for b in self.link_conflict_idx[self.link_conflict_ptr[a] : self.link_conflict_ptr[a + 1]]:
                if a < b:
                    out.append((a - base, int(b) - base))
        return out


def compile_network(graph_or_path: nx.DiGraph | str | Path, *, permissive_turns: bool = True) -> CompiledNetwork:
    """Compile a graph from :func:`read_sumo_net` (or a ``.net.xml`` path, read with
    ``permissive_turns``, through the on-disk cache of ``network.netcache``) to arrays."""
    g = (graph_or_path if isinstance(graph_or_path, nx.DiGraph)
         else cached_graph(graph_or_path, permissive_turns=permissive_turns))
    junction_ids = tuple(g.nodes)
    junction_index = {j: i for i, j in enumerate(junction_ids)}
    edges = g.graph["edges"]
    edge_ids = tuple(edges)
    edge_index = {e: i for i, e in enumerate(edge_ids)}
    lanes = g.graph["lanes"]
    lane_ids = tuple(lane for e in edge_ids for lane in edges[e]["lanes"])
    lane_index = {lane: i for i, lane in enumerate(lane_ids)}
    signals = g.graph["signals"]
    tls_ids = tuple(signals)
    tls_index = {t: i for i, t in enumerate(tls_ids)}

    edge_lane_ptr, edge_lane_idx = csr([[lane_index[x] for x in edges[e]["lanes"]] for e in edge_ids])

    n_links_each = [signals[t]["n_links"] for t in tls_ids]
    tls_link_ptr = np.zeros(len(tls_ids) + 1, dtype=np.int64)
    tls_link_ptr[1:] = np.cumsum(n_links_each)
    n_links = int(tls_link_ptr[-1])
    link_tls = np.repeat(np.arange(len(tls_ids), dtype=np.int32), n_links_each)

    conflicts: list[list[int]] = [[] for _ in range(n_links)]
    yields: list[list[int]] = [[] for _ in range(n_links)]
    permissive = np.zeros(n_links, dtype=np.bool_)
    stop_on_red = np.zeros(n_links, dtype=np.bool_)
    clearance = np.zeros(n_links, dtype=np.float64)
    yield_pass: list[dict[int, float]] = [{} for _ in range(n_links)]
    intruders: list[list[int]] = [[] for _ in range(n_links)]
    crossers: list[set[int]] = [set() for _ in range(n_links)]
    phases: list[list[int]] = []
    phase_tls: list[int] = []
    phase_in_cycle: list[bool] = []
    tls_phase_counts = []
    for t, tls in enumerate(tls_ids):
        base = int(tls_link_ptr[t])
        sig = signals[tls]
        for a, b in sig["conflicts"]:
            conflicts[base + a].append(base + b)
            conflicts[base + b].append(base + a)
        for a, b in sig["yields"]:
            yields[base + a].append(base + b)
        conflicting = {(min(a, b), max(a, b)) for a, b in sig["conflicts"]}
        for a, b in sig.get("intrusions", []):
            if (min(a, b), max(a, b)) in conflicting:
                intruders[base + b].append(base + a)
        for a, b in sig.get("stand_ins", []):
            intruders[base + b].append(base + a)
        for a, b, *_ in sig.get("crossing_zones", []):
            crossers[base + b].add(base + a)
        permissive[[base + i for i in sig["permissive"]]] = True
        stop_on_red[[base + i for i in sig["stop_on_red"]]] = True
        clearance[base:base + sig["n_links"]] = sig["clearance_s"]
        for (a, b), s in zip(sig["yields"], sig.get("yield_pass_s", [0.0] * len(sig["yields"]))):
            yield_pass[base + a][base + b] = s
        n_cycle = sig.get("cycle_phases", len(sig["phases"]))
        for k, p in enumerate(sig["phases"]):
            phases.append([base + i for i in p])
            phase_tls.append(t)
            phase_in_cycle.append(k < n_cycle)
        tls_phase_counts.append(len(sig["phases"]))

    moves = [m for m in g.graph["movements"]]
    move_in = np.array([lane_index[m["from_lane"]] for m in moves], dtype=np.int32)
    move_out = np.array([lane_index[m["to_lane"]] for m in moves], dtype=np.int32)
    move_link = np.array(
        [
            tls_link_ptr[tls_index[m["tls"]]] + m["link_index"]
            if m["tls"] in tls_index and 0 <= m["link_index"] < signals[m["tls"]]["n_links"]
            else -1
            for m in moves
        ],
        dtype=np.int32,
    )
    link_moves: list[list[int]] = [[] for _ in range(n_links)]
    for k, link in enumerate(move_link):
        if link >= 0:
            link_moves[link].append(k)

    tls_phase_ptr = np.zeros(len(tls_ids) + 1, dtype=np.int64)
    tls_phase_ptr[1:] = np.cumsum(tls_phase_counts)
    lc_ptr, lc_idx = csr([sorted(c) for c in conflicts])
    ly_ptr, ly_idx = csr([sorted(y) for y in yields])
    lm_ptr, lm_idx = csr(link_moves)
    in_ptr, in_idx = csr([sorted(set(x)) for x in intruders])
    cr_ptr, cr_idx = csr([sorted(x) for x in crossers])
    pl_ptr, pl_idx = csr(phases)

    return CompiledNetwork(
        graph=g,
        junction_ids=junction_ids,
        edge_ids=edge_ids,
        lane_ids=lane_ids,
        tls_ids=tls_ids,
        edge_from=np.array([junction_index[edges[e]["from"]] for e in edge_ids], dtype=np.int32),
        edge_to=np.array([junction_index[edges[e]["to"]] for e in edge_ids], dtype=np.int32),
        edge_length_m=np.array([edges[e]["length_m"] for e in edge_ids], dtype=np.float64),
        edge_speed_mps=np.array([edges[e]["speed_mps"] for e in edge_ids], dtype=np.float64),
        edge_lane_ptr=edge_lane_ptr,
        edge_lane_idx=edge_lane_idx,
        lane_edge=np.array([edge_index[lanes[x]["edge"]] for x in lane_ids], dtype=np.int32),
        lane_length_m=np.array([lanes[x]["length_m"] for x in lane_ids], dtype=np.float64),
        lane_speed_mps=np.array([lanes[x]["speed_mps"] for x in lane_ids], dtype=np.float64),
        move_in_lane=move_in,
        move_out_lane=move_out,
        move_link=move_link,
        tls_link_ptr=tls_link_ptr,
        link_tls=link_tls,
        link_conflict_ptr=lc_ptr,
        link_conflict_idx=lc_idx,
        link_yield_ptr=ly_ptr,
        link_yield_idx=ly_idx,
        link_permissive=permissive,
        link_stop_on_red=stop_on_red,
        link_clearance_s=clearance,
        link_yield_pass_s=np.array([yield_pass[i][b] for i, y in enumerate(yields) for b in sorted(y)],
                                   dtype=np.float64),
        link_intruder_ptr=in_ptr,
        link_intruder_idx=in_idx,
        link_cross_ptr=cr_ptr,
        link_cross_idx=cr_idx,
        link_move_ptr=lm_ptr,
        link_move_idx=lm_idx,
        tls_phase_ptr=tls_phase_ptr,
        phase_tls=np.array(phase_tls, dtype=np.int32),
        phase_link_ptr=pl_ptr,
        phase_link_idx=pl_idx,
        phase_in_cycle=np.array(phase_in_cycle, dtype=np.bool_),
        lane_index=lane_index,
        edge_index=edge_index,
        tls_index=tls_index,
        junction_index=junction_index,
    )


def signal_junctions(net: CompiledNetwork) -> set[str]:
    """Ids of the junctions some signal controls."""
    return {j for sig in net.graph.graph["signals"].values() for j in sig["junctions"]}
