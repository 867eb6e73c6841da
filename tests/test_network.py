"""Reading SUMO networks into a graph and compiling them to arrays."""

from __future__ import annotations

import itertools

import networkx as nx
import pytest
import sumolib

from network import compile_network, default_layout, read_sumo_net
from network.layout import load_layout, save_layout
from network.sumo_net import NetworkError

SCENARIOS = ["cologne1", "cologne8", "ingolstadt21", "grid4x4", "arterial4x4"]


def net_file(resco_dir, name):
    return next((resco_dir / name).glob("*.net.xml"))


@pytest.mark.parametrize("name", SCENARIOS)
def test_graph_matches_sumolib(resco_dir, name):
    """Every normal road and every signal of the file is in the graph, with its attributes."""
    path = net_file(resco_dir, name)
    g = read_sumo_net(path)
    ref = sumolib.net.readNet(str(path), withPrograms=True)
    assert isinstance(g, nx.DiGraph)
    roads = [e for e in ref.getEdges() if e.getFunction() == "" and any(l.allows("passenger") for l in e.getLanes())]
    assert set(g.graph["edges"]) == {e.getID() for e in roads}
    for e in roads[:50]:
        data = g.graph["edges"][e.getID()]
        assert data["length_m"] == pytest.approx(e.getLength())
        assert data["speed_mps"] == pytest.approx(e.getSpeed())
        assert g.has_edge(e.getFromNode().getID(), e.getToNode().getID())
    assert set(g.graph["signals"]) == {t.getID() for t in ref.getTrafficLights()}


@pytest.mark.parametrize("name", SCENARIOS)
def test_phases_never_contain_conflicts_and_cover_every_link(resco_dir, name):
    """Phases are conflict-free, and every link that controls a movement is in some phase."""
    g = read_sumo_net(net_file(resco_dir, name))
    for tls, sig in g.graph["signals"].items():
        conflicts = set(sig["conflicts"])
        for phase in sig["phases"]:
            for a, b in itertools.combinations(sorted(phase), 2):
                assert (a, b) not in conflicts, (tls, phase, a, b)
        used = {m["link_index"] for m in g.graph["movements"] if m["tls"] == tls}
        assert used <= {i for p in sig["phases"] for i in p}


def test_conflicts_are_foes_the_program_never_shows_together(resco_dir):
    """On cologne1: crossing through movements conflict; an opposing left and through do not."""
    path = net_file(resco_dir, "cologne1")
    g = read_sumo_net(path)
    sig = next(iter(g.graph["signals"].values()))
    states = [s for p in sig["programs"] for s in p]
    assert sig["conflicts"], "a four-way junction has conflicts"
    for a, b in sig["conflicts"]:
        assert not any(s[a] in "Gg" and s[b] in "Gg" for s in states)
    # pairs that give way (permissive) but are shown together are not conflicts
    for a, b in sig["yields"]:
        if any(s[a] in "Gg" and s[b] in "Gg" for s in states):
            assert (min(a, b), max(a, b)) not in set(sig["conflicts"])


def test_compiled_arrays_are_consistent(resco_dir):
    net = compile_network(net_file(resco_dir, "ingolstadt21"))
    assert net.tls_link_ptr[-1] == net.n_links == net.link_tls.size
    assert net.phase_link_ptr.size == net.n_phases + 1
    for lane, e in enumerate(net.lane_edge):
        lanes = net.edge_lane_idx[net.edge_lane_ptr[e]:net.edge_lane_ptr[e + 1]]
        assert lane in lanes
    for k in range(net.n_movements):
        link = net.move_link[k]
        if link >= 0:
            assert k in net.link_move_idx[net.link_move_ptr[link]:net.link_move_ptr[link + 1]]
    # conflicts are symmetric and stay inside one signal
    for a in range(net.n_links):
        for b in net.link_conflict_idx[net.link_conflict_ptr[a]:net.link_conflict_ptr[a + 1]]:
            assert a in net.link_conflict_idx[net.link_conflict_ptr[b]:net.link_conflict_ptr[b + 1]]
            assert net.link_tls[a] == net.link_tls[b]


def test_default_layout_instruments_every_signal_approach(resco_dir, tmp_path):
    net = compile_network(net_file(resco_dir, "cologne8"))
    specs = default_layout(net)
    stop_lanes = {s.lanes[0] for s in specs if s.kind == "loop" and s.role == "stop"}
    signal_lanes = {net.lane_ids[net.move_in_lane[k]] for k in range(net.n_movements) if net.move_link[k] >= 0}
    assert stop_lanes == signal_lanes
    for s in specs:
        if s.kind == "loop":
            assert 0 < s.pos_m <= net.lane_length_m[net.lane_index[s.lanes[0]]]
    save_layout(specs, tmp_path / "inv.json")
    assert load_layout(tmp_path / "inv.json") == specs


def test_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(NetworkError, match="not found"):
        read_sumo_net(tmp_path / "missing.net.xml")
    bad = tmp_path / "bad.net.xml"
    bad.write_text("<net><edge id=")
    with pytest.raises(NetworkError, match="cannot read"):
        read_sumo_net(bad)
    inv = tmp_path / "inv.json"
    inv.write_text('[{"id": "x", "kind": "loop", "lanes": ["a"], "colour": 1}]')
    with pytest.raises(ValueError, match="bad detector inventory"):
        load_layout(inv)
