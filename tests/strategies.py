"""Shared hypothesis strategies and synthetic signal tables."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from hypothesis import strategies as st

from network.compiled import csr


def signal_table(signals: list[tuple[int, set[tuple[int, int]], list[list[int]]]]) -> SimpleNamespace:
    """A network-like namespace with just the signal arrays the safety stage reads.

    ``signals`` holds, per signal, ``(n_links, conflict pairs (a, b), phases as link lists)`` and
    optionally yield pairs ``(a, b)`` (a gives way to b), per-link clearance seconds, per
    yield pair its pass seconds, intrusion pairs ``(a, b)`` (a vehicle of ``a`` waiting or held
    up inside the junction stands in ``b``'s path) and crossing pairs ``(a, b)`` (a box camera
    zone watches the stretch of ``a``'s path in ``b``'s way); signal-local link numbers.
    """
    link_ptr = np.zeros(len(signals) + 1, dtype=np.int64)
    conflicts, yields, phases, phase_counts, phase_tls, clearance, passes = [], [], [], [], [], [], []
    intruders, crossers = [], []
    for t, (n, pairs, ph, *rest) in enumerate(signals):
        base = int(link_ptr[t])
        link_ptr[t + 1] = base + n
        rows = [[] for _ in range(n)]
        for a, b in pairs:
            rows[a].append(base + b)
            rows[b].append(base + a)
        conflicts.extend(sorted(r) for r in rows)
        ys = [[] for _ in range(n)]
        for a, b in (rest[0] if rest else ()):
            ys[a].append(base + b)
        clearance.extend(rest[1] if len(rest) > 1 else [0.0] * n)
        pass_of = dict(zip(rest[0], rest[2])) if len(rest) > 2 else {}
        yields.extend(sorted(y) for y in ys)
        ins = [[] for _ in range(n)]
        for a, b in (rest[3] if len(rest) > 3 else ()):
            ins[b].append(base + a)
        intruders.extend(sorted(x) for x in ins)
        cr = [set() for _ in range(n)]
        for a, b in (rest[4] if len(rest) > 4 else ()):
            cr[b].add(base + a)
        crossers.extend(sorted(x) for x in cr)
        passes.extend(pass_of.get((a, b - base), 0.0) for a, y in enumerate(ys) for b in sorted(y))
        phases.extend([base + x for x in p] for p in ph)
        phase_counts.append(len(ph))
        phase_tls.extend([t] * len(ph))
    phase_ptr = np.zeros(len(signals) + 1, dtype=np.int64)
    phase_ptr[1:] = np.cumsum(phase_counts)
    n_links = int(link_ptr[-1])
    lc_ptr, lc_idx = csr(conflicts)
    pl_ptr, pl_idx = csr(phases)
    ly_ptr, ly_idx = csr(yields)
    li_ptr, li_idx = csr(intruders)
    lx_ptr, lx_idx = csr(crossers)
    return SimpleNamespace(
        n_tls=len(signals), n_links=n_links, n_phases=int(phase_ptr[-1]),
        tls_link_ptr=link_ptr, tls_phase_ptr=phase_ptr, phase_tls=np.array(phase_tls, dtype=np.int32),
        phase_link_ptr=pl_ptr, phase_link_idx=pl_idx, link_conflict_ptr=lc_ptr, link_conflict_idx=lc_idx,
        link_yield_ptr=ly_ptr, link_yield_idx=ly_idx,
        link_permissive=np.zeros(n_links, dtype=np.bool_), link_stop_on_red=np.zeros(n_links, dtype=np.bool_),
        link_clearance_s=np.array(clearance, dtype=np.float64), link_yield_pass_s=np.array(passes, dtype=np.float64),
        link_intruder_ptr=li_ptr, link_intruder_idx=li_idx, link_cross_ptr=lx_ptr,
        link_cross_idx=lx_idx,
    )


@st.composite
def signals(draw, max_links: int = 8):
    """One signal: links, any conflict pairs, and phases that may even contain conflicting links."""
    n = draw(st.integers(1, max_links))
    pairs = draw(st.sets(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1))
                         .filter(lambda ab: ab[0] < ab[1]), max_size=n * (n - 1) // 2))
    phases = draw(st.lists(st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True),
                           min_size=1, max_size=6))
    yields = draw(st.sets(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1))
                          .filter(lambda ab: ab[0] != ab[1] and (min(ab), max(ab)) not in pairs), max_size=n))
    clearance = draw(st.lists(st.sampled_from([0.0, 0.0, 3.4, 5.0]), min_size=n, max_size=n))
    yields = sorted(yields)
    passes = draw(st.lists(st.sampled_from([0.0, 0.0, 2.5, 4.6]), min_size=len(yields), max_size=len(yields)))
    intrusions = [(a, b) if draw(st.booleans()) else (b, a) for a, b in sorted(pairs) if draw(st.booleans())]
    # stand-ins: a car of a, held up inside the junction, stands in b's path (any two links,
    # conflicting or not; they share the intruder table)
    intrusions += sorted(draw(st.sets(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1))
                                      .filter(lambda ab: ab[0] != ab[1]), max_size=n)))
    # crossing zones: the stretch of a's path in b's way (the network makes them for conflicting
    # links only; drawing give-way pairs too costs the kernel nothing and tests more)
    crossings = [(a, b) if draw(st.booleans()) else (b, a) for a, b in sorted(pairs) + yields if draw(st.booleans())]
    return n, pairs, phases, yields, clearance, passes, intrusions, crossings


@st.composite
def command_streams(draw):
    """A signal table and a stream of (seconds since last tick, wanted phase per signal)."""
    sigs = draw(st.lists(signals(), min_size=1, max_size=3))
    table = signal_table(sigs)
    n_phases = table.n_phases
    steps = draw(st.lists(
        st.tuples(st.sampled_from([0.1, 0.5, 1.0, 1.0, 1.0, 2.0, 3.5]),
                  st.lists(st.integers(-1, n_phases - 1), min_size=table.n_tls, max_size=table.n_tls)),
        min_size=1, max_size=80))
    return table, steps
