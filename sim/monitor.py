"""A conflict monitor: counts unsafe signal displays, as the simulator's independent referee.

Like a cabinet's malfunction management unit it watches what every signal shows, once per
simulated second, and counts violations by kind:

- ``conflicting_green``: two links that must never move together (a conflict pair of the
  :class:`~network.CompiledNetwork`) are both green (``G``/``g``), or one is green while the
  other is still yellow (``y``/``Y``). Counted once per pair per observation. Pairs the engine
  keeps apart only out of caution (a permissive turn whose waiting point stands in the other's
  path, which the network's own program shows together) are not the network's rule and are not
  counted: SUMO's own programs are judged by the network's rules.
- ``no_yellow``: a link goes from green straight to red (``r``, ``s`` or ``u``) without yellow.
- ``short_yellow``: a yellow interval shorter than ``min_yellow_s`` that ends in red.
- ``short_green``: a green interval shorter than ``min_green_s`` that ends in yellow or red.

An interval's length is the time from the observation where it was first seen to the one
where the next state was first seen. Intervals already running at the first observation have
an unknown start and are exempt from the length checks. ``o``/``O`` (off, blinking) are
ignored: nothing is counted into or out of them.

The whole network is checked at once: states of all signals are joined into one per-link
array and every rule is a numpy expression over links and conflict pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

from network.compiled import CompiledNetwork

__all__ = ["KINDS", "ConflictMonitor", "Violation"]

KINDS = ("conflicting_green", "no_yellow", "short_yellow", "short_green")

_RED, _YELLOW, _GREEN, _OFF, _BAD = 0, 1, 2, 3, -1
_CLASS = np.full(256, _BAD, dtype=np.int8)
for _chars, _cls in (("rsu", _RED), ("yY", _YELLOW), ("Gg", _GREEN), ("oO", _OFF)):
    for _ch in _chars:
        _CLASS[ord(_ch)] = _cls
_EPS = 1e-9


@dataclass(frozen=True)
class Violation:
    """One counted violation, for diagnosis."""

    t_s: float
    kind: str
    tls_id: str
    links: tuple[int, ...]
    """Local SUMO link indices at the signal (two for a conflict, one otherwise)."""


class ConflictMonitor:
    """Counts signal-safety violations of a whole network; see the module docstring.

    ``net`` must be compiled from the network SUMO runs, so that its link order is SUMO's.
    ``observe`` takes the state strings of all signals in ``net.tls_ids`` order. The first
    ``max_events`` violations are kept in :attr:`events`.
    """

    def __init__(
        self,
        net: CompiledNetwork,
        *,
        min_green_s: float = 5.0,
        min_yellow_s: float = 2.7,
        max_events: int = 1000,
    ) -> None:
        ptr = np.asarray(net.link_conflict_ptr, dtype=np.int64)
        idx = np.asarray(net.link_conflict_idx, dtype=np.int64)
        rows = np.repeat(np.arange(ptr.size - 1, dtype=np.int64), np.diff(ptr))
        keep = idx > rows
        exempt = _caution_pairs(net)
        if exempt:
            keep &= np.array([(int(a), int(b)) not in exempt for a, b in zip(rows, idx)], dtype=bool)
        self._setup(net.tls_ids, np.diff(np.asarray(net.tls_link_ptr)), rows[keep], idx[keep],
                    min_green_s, min_yellow_s, max_events)

    @classmethod
    def from_conflicts(
        cls,
        signals: Mapping[str, tuple[int, Iterable[tuple[int, int]]]],
        *,
        min_green_s: float = 5.0,
        min_yellow_s: float = 2.7,
        max_events: int = 1000,
    ) -> "ConflictMonitor":
        """A monitor from explicit data: signal id -> (number of links, local conflict pairs)."""
        self = cls.__new__(cls)
        n_each = np.array([n for n, _ in signals.values()], dtype=np.int64)
        base = np.concatenate([[0], np.cumsum(n_each)[:-1]]).astype(np.int64)
        pa: list[int] = []
        pb: list[int] = []
        for k, (n, pairs) in enumerate(signals.values()):
            for a, b in pairs:
                if not (0 <= a < n and 0 <= b < n and a != b):
                    raise ValueError(f"bad conflict pair {(a, b)} for a signal with {n} links")
                pa.append(int(base[k]) + min(a, b))
                pb.append(int(base[k]) + max(a, b))
        self._setup(tuple(signals), n_each, np.array(pa, dtype=np.int64), np.array(pb, dtype=np.int64),
                    min_green_s, min_yellow_s, max_events)
        return self

    def _setup(
        self,
        tls_ids: Sequence[str],
        n_links_each: np.ndarray,
        pair_a: np.ndarray,
        pair_b: np.ndarray,
        min_green_s: float,
        min_yellow_s: float,
        max_events: int,
    ) -> None:
        self.tls_ids = tuple(tls_ids)
        self.min_green_s = float(min_green_s)
        self.min_yellow_s = float(min_yellow_s)
        self.max_events = int(max_events)
        self._n_links_each = np.asarray(n_links_each, dtype=np.int64)
        self._link_ptr = np.concatenate([[0], np.cumsum(self._n_links_each)]).astype(np.int64)
        n_links = int(self._link_ptr[-1])
        self._link_tls = np.repeat(np.arange(len(self.tls_ids), dtype=np.int64), self._n_links_each)
        self.pair_a = np.asarray(pair_a, dtype=np.int64)
        self.pair_b = np.asarray(pair_b, dtype=np.int64)
        self._n_links = n_links
        self._cls = np.full(n_links, _OFF, dtype=np.int8)
        self._start = np.zeros(n_links, dtype=np.float64)
        self._exempt = np.ones(n_links, dtype=np.bool_)
        self._last_t: float | None = None
        self.observations = 0
        self.counts: dict[str, int] = {k: 0 for k in KINDS}
        self.events: list[Violation] = []

    @property
    def total(self) -> int:
        """All violations counted so far."""
        return sum(self.counts.values())

    @property
    def n_pairs(self) -> int:
        """Conflict pairs watched."""
        return int(self.pair_a.size)

    def _classes(self, states: Sequence[str]) -> np.ndarray:
        if len(states) != len(self.tls_ids):
            raise ValueError(f"expected {len(self.tls_ids)} signal states, got {len(states)}")
        lengths = np.fromiter(map(len, states), dtype=np.int64, count=len(states))
        if not np.array_equal(lengths, self._n_links_each):
            bad = int(np.flatnonzero(lengths != self._n_links_each)[0])
            raise ValueError(
                f"signal {self.tls_ids[bad]!r}: state {states[bad]!r} has {lengths[bad]} links, "
                f"the network has {self._n_links_each[bad]}"
            )
        try:
            raw = "".join(states).encode("ascii")
        except UnicodeEncodeError as exc:
            raise ValueError(f"signal states must be ASCII: {exc}") from None
        cls = _CLASS[np.frombuffer(raw, dtype=np.uint8)]
        if (cls == _BAD).any():
            k = int(np.flatnonzero(cls == _BAD)[0])
            raise ValueError(f"unknown signal state character {raw[k:k + 1].decode()!r}")
        return cls

    def _record(self, t_s: float, kind: str, links_a: np.ndarray, links_b: np.ndarray | None = None) -> None:
        self.counts[kind] += int(links_a.size)
        room = self.max_events - len(self.events)
        for j in range(min(room, int(links_a.size))):
            a = int(links_a[j])
            t = int(self._link_tls[a])
            base = int(self._link_ptr[t])
            links = (a - base,) if links_b is None else (a - base, int(links_b[j]) - base)
            self.events.append(Violation(t_s, kind, self.tls_ids[t], links))

    def observe(self, t_s: float, states: Sequence[str]) -> int:
        """Check the states shown at time ``t_s``; return the violations found in this step."""
        t_s = float(t_s)
        if self._last_t is not None and not t_s > self._last_t:
            raise ValueError(f"observations must move forward in time: {t_s} after {self._last_t}")
        cls = self._classes(states)
        before = self.total

        green = cls == _GREEN
        yellow = cls == _YELLOW
        ga, gb = green[self.pair_a], green[self.pair_b]
        bad = (ga & (gb | yellow[self.pair_b])) | (yellow[self.pair_a] & gb)
        if bad.any():
            self._record(t_s, "conflicting_green", self.pair_a[bad], self.pair_b[bad])

        if self._last_t is not None:
            prev = self._cls
            changed = cls != prev
            length = t_s - self._start
            timed = ~self._exempt
            was_green = prev == _GREEN
            to_red = cls == _RED
            no_yellow = was_green & to_red
            short_yellow = (prev == _YELLOW) & to_red & timed & (length < self.min_yellow_s - _EPS)
            short_green = was_green & (to_red | yellow) & timed & (length < self.min_green_s - _EPS)
            for kind, mask in (("no_yellow", no_yellow), ("short_yellow", short_yellow), ("short_green", short_green)):
                if mask.any():
                    self._record(t_s, kind, np.flatnonzero(mask))
            self._start[changed] = t_s
            self._exempt[changed] = False
        else:
            self._start[:] = t_s
        self._cls = cls
        self._last_t = t_s
        self.observations += 1
        return self.total - before

    def by_kind(self) -> dict[str, int]:
        """A copy of the counts by kind."""
        return dict(self.counts)


def _caution_pairs(net) -> set[tuple[int, int]]:
    """Global link pairs (low, high) that conflict in ``net`` only because a turn would wait in
    the other's path (``caution_conflicts`` of ``network.sumo_net``: the network's own program
    shows them green together)."""
    graph = getattr(net, "graph", None)
    if graph is None:
        return set()
    ptr = np.asarray(net.tls_link_ptr)
    return {(int(ptr[t]) + a, int(ptr[t]) + b) for t, tls in enumerate(net.tls_ids)
            for a, b in graph.graph["signals"].get(tls, {}).get("caution_conflicts", ())}
