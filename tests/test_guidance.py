"""Speed guidance's figures (sim.guidance) computed from plain counts."""

from __future__ import annotations


def test_same_edge_reduction_weighs_unguided_rates_by_guided_entries():
    """Guided stops are set against the unguided stop rate of each edge the guided vehicles
    entered, weighted by their entries; edges only guided vehicles entered are left out."""
    from sim.guidance import same_edge_reduction

    entries = {(True, "a"): 2, (False, "a"): 4, (True, "b"): 1, (False, "b"): 1, (True, "c"): 5}
    stops = {(True, "a"): 1, (False, "a"): 4, (True, "b"): 0, (False, "b"): 2, (True, "c"): 9}
    # expected unguided-like stops: 2 x 4/4 + 1 x 2/1 = 4; guided on a and b: 1
    assert same_edge_reduction(entries, stops) == 1.0 - 1 / 4
    assert same_edge_reduction({(True, "c"): 5}, {(True, "c"): 9}) is None
    assert same_edge_reduction({(True, "a"): 1, (False, "a"): 1}, {(True, "a"): 2, (False, "a"): 1}) == -1.0
