"""Fastest routes on the live travel times.

Routes follow the lane connections, so a turn the network does not allow is never taken: the
search runs on the *edge graph* (one node per edge, an arc ``i -> e`` for every turn some lane
connection makes, weighted with the travel time of ``e``), with scipy's Dijkstra over a CSR
matrix built once; each query only refreshes the weights from the current estimates.

A route starts and ends at a junction or an edge. From a junction it may take any edge leaving
it; to a junction it ends with any edge entering it. A route from an edge includes that edge's
travel time (the traveller is at its start); a route to an edge includes it too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

from network.compiled import CompiledNetwork
from network.estimate import EdgeModel


class RouteError(ValueError):
    """A route request that cannot be answered, with the reason."""


@dataclass(frozen=True)
class Route:
    """A fastest route: its edges in order, the junctions it passes, its travel time."""

    edges: tuple[str, ...]
    junctions: tuple[str, ...]
    travel_time_s: float
    length_m: float
    edge_travel_time_s: tuple[float, ...]

    def as_dict(self) -> dict:
        return {"edges": list(self.edges), "junctions": list(self.junctions),
                "travel_time_s": round(self.travel_time_s, 1), "length_m": round(self.length_m, 1),
                "edge_travel_time_s": [round(t, 1) for t in self.edge_travel_time_s]}


class Router:
    """Fastest-route queries on one network; weights come with each query."""

    def __init__(self, net: CompiledNetwork, model: EdgeModel):
        self.net = net
        ne = net.n_edges
        # nodes 0..ne-1 are edges; ne is the query's origin, ne + 1 its destination
        self._n = ne + 2
        self._src = model.turn_from.astype(np.int64)
        self._dst = model.turn_to.astype(np.int64)
        self._out = [np.flatnonzero(net.edge_from == j) for j in range(len(net.junction_ids))]
        self._in = [np.flatnonzero(net.edge_to == j) for j in range(len(net.junction_ids))]

    def _resolve(self, name: str, role: str) -> tuple[str, int]:
        if name in self.net.edge_index:
            return "edge", self.net.edge_index[name]
        if name in self.net.junction_index:
            return "junction", self.net.junction_index[name]
        raise RouteError(f"unknown {role} {name!r}: not an edge or junction id of this network")

    def route(self, origin: str, destination: str, edge_tt_s: np.ndarray) -> Route:
        """The fastest route from ``origin`` to ``destination`` (edge or junction ids) with
        ``edge_tt_s`` (float64[n_edges]) as the travel time of each edge."""
        net = self.net
        ne = net.n_edges
        kind_o, o = self._resolve(origin, "origin")
        kind_d, d = self._resolve(destination, "destination")
        if origin == destination:
            raise RouteError("origin and destination are the same")
        tt = np.maximum(np.asarray(edge_tt_s, dtype=np.float64), 1e-3)
        starts = np.array([o]) if kind_o == "edge" else self._out[o]
        ends = np.array([d]) if kind_d == "edge" else self._in[d]
        if not starts.size:
            raise RouteError(f"no edge leaves junction {origin!r}")
        if not ends.size:
            raise RouteError(f"no edge enters junction {destination!r}")
        rows = np.concatenate([self._src, np.full(starts.size, ne), ends])
        cols = np.concatenate([self._dst, starts, np.full(ends.size, ne + 1)])
        w = np.concatenate([tt[self._dst], tt[starts], np.full(ends.size, 1e-9)])
        graph = csr_matrix((w, (rows, cols)), shape=(self._n, self._n))
        dist, pred = dijkstra(graph, directed=True, indices=ne, return_predecessors=True)
        if not np.isfinite(dist[ne + 1]):
            raise RouteError(f"no route from {origin!r} to {destination!r} on the network's turns")
        path = []
        node = int(pred[ne + 1])
        while node != ne:
            path.append(node)
            node = int(pred[node])
        path.reverse()
        junctions = [net.junction_ids[net.edge_from[path[0]]]] + [net.junction_ids[net.edge_to[e]] for e in path]
        return Route(
            edges=tuple(net.edge_ids[e] for e in path), junctions=tuple(junctions),
            travel_time_s=float(tt[path].sum()), length_m=float(net.edge_length_m[path].sum()),
            edge_travel_time_s=tuple(float(tt[e]) for e in path),
        )
