"""Reading SUMO networks into a graph and compiling them to arrays."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
import sumolib
from hypothesis import given, settings
from hypothesis import strategies as st

from network import compile_network, default_layout, read_sumo_net
from network.layout import load_layout, save_layout
from network.sumo_net import (NetworkError, _crossing_zones, _polyline_distance, _standing_intrusions, _swept_chords,
                              _waiting_intrusions)

DEMO_NET = Path(__file__).resolve().parents[1] / "sim" / "scenarios" / "demo" / "demo.net.xml"
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
    """On cologne1: crossing through movements conflict; an opposing left and through do not
    (unless the turn waits in the through stream's path, see the next test)."""
    path = net_file(resco_dir, "cologne1")
    g = read_sumo_net(path)
    sig = next(iter(g.graph["signals"].values()))
    states = [s for p in sig["programs"] for s in p]
    assert sig["conflicts"], "a four-way junction has conflicts"
    intrusions = set(sig["intrusions"])
    for a, b in sig["conflicts"]:
        if (a, b) not in intrusions and (b, a) not in intrusions:
            assert not any(s[a] in "Gg" and s[b] in "Gg" for s in states)
    # pairs that give way (permissive) but are shown together are not conflicts, unless the
    # turn would wait in the other's path
    for a, b in sig["yields"]:
        if any(s[a] in "Gg" and s[b] in "Gg" for s in states):
            assert ((min(a, b), max(a, b)) in set(sig["conflicts"])) == ((a, b) in set(sig["intrusions"]))


def test_a_turn_that_waits_in_a_streams_path_is_never_green_with_it(resco_dir):
    """cologne1's left turns 13 and 3 wait with their front corners in the path of the opposing
    through lanes 2 and 12 (SUMO's own programs collide there): those pairs conflict, so no phase
    holds both, and the turns are still served (protected)."""
    g = read_sumo_net(net_file(resco_dir, "cologne1"))
    sig = next(iter(g.graph["signals"].values()))
    for a, b in [(13, 2), (3, 12)]:
        assert (a, b) in sig["yields"] and (a, b) in sig["intrusions"]
        assert (min(a, b), max(a, b)) in sig["conflicts"]
        assert not any(a in p and b in p for p in sig["phases"])
        assert any(a in p for p in sig["phases"]) and any(b in p for p in sig["phases"])


def _entry_lanes(g, tls):
    """Entry lane -> the set of ``tls`` links that leave it."""
    lanes: dict[str, set[int]] = {}
    for m in g.graph["movements"]:
        if m["tls"] == tls:
            lanes.setdefault(m["from_lane"], set()).add(m["link_index"])
    return lanes


@pytest.mark.parametrize("name", SCENARIOS)
def test_lane_phases_serve_whole_lanes_and_keep_waiting_turns_apart(resco_dir, name):
    """Lane phases come after the program's (``cycle_phases``), only where a program phase serves
    part of a lane; each serves whole entry lanes, is no subset of another phase, and never
    shows a turn that would wait in some stream's path together with a stream it gives way to."""
    g = read_sumo_net(net_file(resco_dir, name))
    for tls, sig in g.graph["signals"].items():
        lanes = _entry_lanes(g, tls)
        k = sig["cycle_phases"]
        cycle, extra = [set(p) for p in sig["phases"][:k]], [set(p) for p in sig["phases"][k:]]
        half = [l for l, links in lanes.items() if any(0 < len(links & p) < len(links) for p in cycle)]
        if not half:
            assert not extra, tls
        intruders = {a for a, _ in sig["intrusions"]}
        for p in extra:
            for l, links in lanes.items():
                assert not (links & p) or links <= p, (tls, p, l)
            assert not any(p < q for q in cycle + extra), (tls, p)
            assert not any(a in p and b in p for a, b in sig["yields"] if a in intruders), (tls, p)


def test_lane_phases_are_bounded():
    """24 lanes in 12 conflicting pairs have 4,096 greatest compatible sets: a bounded number of
    them is looked at and at most ``MAX_LANE_PHASES`` become phases, each whole-lane and
    conflict-free, each serving the lane a phase serves only in part."""
    from network.sumo_net import MAX_LANE_PHASES, _lane_phases

    link_from = {i: {f"L{i:02d}"} for i in range(24)} | {24: {"L00"}}
    conflicts = {(2 * k, 2 * k + 1) for k in range(12)}
    extra = _lane_phases([[0]], conflicts, [], set(), link_from)
    assert len(extra) == MAX_LANE_PHASES
    for p in extra:
        assert {0, 24} <= set(p) and len(p) == 13
        assert not any((a, b) in conflicts for a, b in itertools.combinations(p, 2))


def test_cologne1_lane_phases_serve_each_approach_whole(resco_dir):
    """cologne1's left turns share a lane with a through lane and go protected in the program's
    phases, so its through lane and its left turn are never green together there: each approach
    gets a lane phase serving all of its lanes."""
    g = read_sumo_net(net_file(resco_dir, "cologne1"))
    tls, sig = next(iter(g.graph["signals"].items()))
    extra = [set(p) for p in sig["phases"][sig["cycle_phases"]:]]
    approaches: dict[str, set[int]] = {}
    for lane, links in _entry_lanes(g, tls).items():
        approaches.setdefault(g.graph["lanes"][lane]["edge"], set()).update(links)
    assert len(approaches) == 4
    for links in approaches.values():
        assert any(links <= p for p in extra), links
    net = compile_network(g)
    assert net.phase_in_cycle.tolist() == [True] * sig["cycle_phases"] + [False] * len(extra)


def _path(*points):
    return [list(points)]


def test_waiting_intrusions_geometry():
    """Link 0 waits at (10, 0) heading east, its car 1.8 m wide; a stream crossing 1.5 m ahead of
    its front touches it; a parallel one whose centre line is within half a car width of a front
corner does too, one further out does not."""
    waiting = [[(0.0, 0.0), (10.0, 0.0)], [(10.0, 0.0), (20.0, 8.0)]]
    near = _path((10.5, -20.0), (10.5, 20.0))  # crosses 0.5 m ahead of the front
    side = _path((-5.0, 1.5), (30.0, 1.5))   # parallel, 1.5 m to the left: 0.6 m from a corner
    far = _path((-5.0, 2.0), (30.0, 2.0))    # 1.1 m from the corner: clear
    paths = {("t", 0): [waiting], ("t", 1): [near], ("t", 2): [side], ("t", 3): [far]}
    assert _waiting_intrusions("t", 4, paths) == {(0, 1), (0, 2)}
    # a link without a waiting point (one internal lane) waits nowhere
    assert _waiting_intrusions("t", 2, {("t", 0): [_path((0.0, 0.0), (10.0, 0.0))], ("t", 1): [near]}) == set()


def test_standing_intrusions_geometry():
    """Link 0 runs east and ends at (20, 0); a car held up there (its front anywhere in the last
    7.5 m) is 1.8 m wide. A path 1.5 m beside its end, one that crosses it and then runs 1.6 m
    beside it (the unseen town's five-way junction, in miniature), count; one that only crosses
    it (SUMO guards a crossing), one 2.5 m away, and one into the same exit lane do not."""
    paths = {
        ("t", 0): [_path((0.0, 0.0), (20.0, 0.0))],
        ("t", 1): [_path((14.0, 1.5), (30.0, 1.5))],       # beside its end, never crossing
        ("t", 2): [_path((17.0, -10.0), (17.0, 10.0))],    # crosses it, square
        ("t", 3): [_path((14.0, 2.5), (30.0, 2.5))],       # 1.6 m from its body: clear
        ("t", 4): [_path((14.0, 1.5), (30.0, 1.5))],       # beside it, but into its exit lane
        ("t", 5): [_path((5.0, -10.0), (5.0, 1.6), (25.0, 1.6))],  # crosses at x=5, then beside
    }
    conns = {("t", i): [(None, i, f"out{i}")] for i in range(6)}
    conns[("t", 4)] = [(None, 4, "out0")]
    entries = {("t", i): {f"in{i}"} for i in range(6)}
    found = _standing_intrusions("t", 6, paths, conns, entries)
    assert {(a, b) for a, b in found if a == 0} == {(0, 1), (0, 5)}
    # a car standing at the end of link 1 or 5 reaches back over link 0 nowhere near a crossing
    assert (2, 0) not in found and (3, 0) not in found
    # the same pairs with a shared entry lane: they follow each other, SUMO handles it
    entries[("t", 1)] = {"in0"}
    assert (0, 1) not in _standing_intrusions("t", 6, paths, conns, entries)


def test_crossing_zones_geometry():
    """Link 0 runs east 20 m, link 1 north across it at x = 10. A car of link 0 (5 m long, 1.8 m
    wide) is in link 1's way while its body is within half a car width of x = 10: front between
    about 9.1 and 15.9 m along; before that it will be when it moves on, so its zone runs from the
    path's start to about 15.9 m. Link 0's second lane is twice as long as its shape (SUMO's own
    lane metres), so the zone ends further along in lane metres; link 2, beside link 1 but into
    link 0's exit lane, merges with it: no zone."""
    paths = {
        ("t", 0): [[[(0.0, 0.0), (10.0, 0.0)], [(10.0, 0.0), (20.0, 0.0)]]],
        ("t", 1): [[[(10.0, -10.0), (10.0, 10.0)]]],
        ("t", 2): [[[(12.0, -10.0), (12.0, 0.0), (20.0, 0.0)]]],
    }
    internal = {("t", 0): [[("a", 10.0), ("b", 20.0)]], ("t", 1): [[("c", 20.0)]], ("t", 2): [[("d", 18.0)]]}
    conns = {("t", 0): [(None, 0, "out0")], ("t", 1): [(None, 1, "out1")], ("t", 2): [(None, 2, "out0")]}
    entries = {("t", i): {f"in{i}"} for i in range(3)}
    zones = {(a, b): (k, lo, hi) for a, b, k, lo, hi in
             _crossing_zones("t", [(0, 1), (0, 2)], internal, paths, conns, entries)}
    assert set(zones) == {(0, 1), (1, 0)}
    k, lo, hi = zones[(0, 1)]
    assert k == 0 and lo == 0.0 and 10.0 + 2 * 5.4 <= hi <= 10.0 + 2 * 6.0
    _, lo, hi = zones[(1, 0)]  # link 1's cars across link 0 (y = 0): front up to about 15.9 m
    assert lo == 0.0 and 15.4 <= hi <= 16.0


def test_a_crossing_zone_counts_a_car_while_its_front_is_in_the_stretch():
    """A zone from the stretch's start to its end less a car length: a lane-area zone counts a car
    while any of it is inside, so from its front entering to its rear leaving, its front then at
    the stretch's end; over two lanes, in each lane's own metres."""
    from network.layout import _zone_on
    lanes = [("a", 10.0), ("b", 20.0)]
    assert _zone_on(lanes, 8.0, 16.0, 7) == (0, 8.0, 1, 1.0, 7)
    assert _zone_on(lanes, 12.0, 14.0, 7) == (1, 2.0, 1, 2.1, 7)  # shorter than a car: a tenth of a metre


def test_swept_chords_of_a_long_vehicle_cut_the_curve():
    """A 12 m bus turning a right angle: its body, a chord from rear to front, passes inside the
    curve its centre line follows; a car waiting there is clear of the centre line but not of the
    bus (the ingolstadt21 gneJ257 collision, in miniature)."""
    turn = [[(0.0, 0.0), (10.0, 0.0), (10.0, 10.0)]]  # internal path: east, then north
    out = [(10.0, 10.0), (10.0, 40.0)]
    chords = _swept_chords(turn + [out], 12.0)
    assert chords, "a path with an outgoing lane sweeps something"
    for (rx, ry), (fx, fy) in chords:  # every chord is at most the vehicle's length
        assert math.hypot(fx - rx, fy - ry) <= 12.0 + 1e-6
    # the front reaches 12 m past the junction, so the rear has left it
    assert max(fy for _, (_, fy) in chords) == pytest.approx(22.0, abs=0.6)
    waiting = [[(2.0, 8.0), (7.0, 3.0)], [(7.0, 3.0), (12.0, -2.0)]]  # waits at (7, 3) heading south-east
    paths = {("t", 0): [waiting], ("t", 1): [turn]}
    assert _waiting_intrusions("t", 2, paths) == set()  # its centre line stays 3 m away
    assert _waiting_intrusions("t", 2, paths, {("t", 1): [chords]}) == {(0, 1)}  # its body does not


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(-50, 50), st.floats(-50, 50)), min_size=2, max_size=5),
       st.tuples(st.floats(-50, 50), st.floats(-50, 50)))
def test_polyline_distance_matches_dense_sampling(shape, p):
    dense = min(math.hypot(p[0] - (ax + t * (bx - ax)), p[1] - (ay + t * (by - ay)))
                for (ax, ay), (bx, by) in zip(shape, shape[1:]) for t in np.linspace(0.0, 1.0, 2001))
    got = _polyline_distance(p, shape)
    assert got <= dense + 1e-9
    seg = max(math.hypot(bx - ax, by - ay) for (ax, ay), (bx, by) in zip(shape, shape[1:]))
    assert dense - got <= seg / 2000 + 1e-9


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


def test_a_network_read_once_is_read_from_the_cache_until_it_changes(tmp_path: Path, monkeypatch) -> None:
    """``compile_network(path)`` keeps the graph on disk (``network.netcache``): a second compile
    gives the same arrays without reading the network; an edited file, or the other
    ``permissive_turns`` choice, is read afresh; an unreadable cache file is replaced."""
    import pickle

    import network.netcache as netcache
    from network.compiled import compile_network

    monkeypatch.setenv("TRAFFIC_ENGINE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TRAFFIC_ENGINE_NET_CACHE", raising=False)
    net = tmp_path / "demo.net.xml"
    net.write_bytes(DEMO_NET.read_bytes())
    reads = []
    real = netcache.sumo_net.read_sumo_net
    monkeypatch.setattr(netcache.sumo_net, "read_sumo_net", lambda *a, **k: reads.append(a) or real(*a, **k))

    first = compile_network(net)
    second = compile_network(net)
    assert len(reads) == 1
    for name in ("link_conflict_idx", "link_yield_idx", "link_cross_idx", "link_intruder_idx", "phase_link_idx",
                 "lane_length_m", "link_clearance_s"):
        assert np.array_equal(getattr(first, name), getattr(second, name)), name
    assert first.tls_ids == second.tls_ids and first.lane_ids == second.lane_ids
    assert second.graph.graph["source"] == str(net)

    compile_network(net, permissive_turns=False)
    assert len(reads) == 2
    files = sorted((tmp_path / "cache" / "graphs").glob("*.pickle"))
    assert len(files) == 2
    for f in files:
        f.write_bytes(b"not a pickle")
    assert np.array_equal(compile_network(net).link_conflict_idx, first.link_conflict_idx)
    assert len(reads) == 3
    rewritten = [f for f in files if f.read_bytes() != b"not a pickle"]
    assert len(rewritten) == 1 and isinstance(pickle.loads(rewritten[0].read_bytes()), nx.DiGraph)

    net.write_text(net.read_text() + "\n<!-- edited -->\n")
    compile_network(net)
    assert len(reads) == 4


@pytest.mark.parametrize("name", ["cologne3", "cologne8", "ingolstadt7", "ingolstadt21", "arterial4x4"])
def test_camera_views_follow_every_branch_a_queue_backs_into(resco_dir, name):
    """A camera lane's view: its zones are lane sequences vehicles drive (no U-turn, no signal
    between), no lane is in two of its zones, and every lane that feeds a lane of the view
    (unsignalised, not a U-turn) and starts within the camera's range is in it."""
    net = compile_network(net_file(resco_dir, name))
    length = dict(zip(net.lane_ids, net.lane_length_m.tolist()))
    feeds: dict[str, set[str]] = {}
    signalised: set[str] = set()
    for m in range(net.n_movements):
        a, b = net.lane_ids[net.move_in_lane[m]], net.lane_ids[net.move_out_lane[m]]
        ea, eb = net.lane_edge[net.move_in_lane[m]], net.lane_edge[net.move_out_lane[m]]
        if net.move_link[m] >= 0:
            signalised.add(b)
        elif not (net.edge_from[ea] == net.edge_to[eb] and net.edge_to[ea] == net.edge_from[eb]):
            feeds.setdefault(b, set()).add(a)
    cams = [s for s in default_layout(net) if s.kind == "camera"]
    branches = 0
    for cam in cams:
        for k, lane in enumerate(cam.lanes):
            zones = [(0.0, (lane, *(cam.upstream[k] if cam.upstream else ())))]
            zones += [(start, lanes) for j, start, lanes in cam.branches if j == k]
            branches += len(zones) - 1
            ends = {lane: length[lane]}  # lane of the view -> metres from the stop line to its start
            for start, lanes in zones:
                if start > 0:  # a branch: its first lane feeds a lane of the view that starts start_m back
                    assert any(lanes[0] in feeds.get(x, ()) and ends[x] == pytest.approx(start, abs=0.01)
                               for x in ends), (cam.id, k, lanes)
                for near, far in zip(lanes, lanes[1:]):
                    assert far in feeds.get(near, ()) and near not in signalised, (cam.id, near, far)
                at = start
                for x in lanes:
                    assert x not in ends or x == lane, f"{cam.id}: lane {x} in two zones of lane {k}"
                    at += length[x]
                    ends[x] = at
            for x, end in ends.items():  # closed: whatever feeds a lane of the view within range is in it
                if end < cam.range_m and x not in signalised:
                    assert feeds.get(x, set()) <= set(ends), (cam.id, x, feeds.get(x))
            want = min(length[lane] + sum(length[x] for x in zones[0][1][1:]), cam.range_m) + sum(
                min(sum(length[x] for x in lanes), cam.range_m - start) for start, lanes in zones[1:])
            assert cam.zone_m(k, length) == pytest.approx(want)
    if name == "cologne3":  # the approach whose queue backs up through two priority junctions
        cam = next(c for c in cams if c.id == "C:200818108#0")
        assert any("8197886#0_0" in lanes for _, _, lanes in cam.branches)
        assert branches > 0


def test_movements_without_a_signal_know_whom_they_give_way_to(resco_dir):
    """ingolstadt1's side road 391891458#0 merges into 164051413 giving way to the main road
    653473569#5 (the junction's right of way); the main road gives way to nobody there, and
    movements a signal controls carry no such list (their signal says who goes)."""
    g = read_sumo_net(resco_dir / "ingolstadt1" / "ingolstadt1.net.xml")
    moves = g.graph["movements"]
    by = {(m["from_lane"], m["to_lane"]): k for k, m in enumerate(moves)}
    side = moves[by["391891458#0_1", "164051413_1"]]
    assert by["653473569#5_1", "164051413_1"] in side["yields_to"]
    assert not moves[by["653473569#5_1", "164051413_1"]].get("yields_to")
    assert all(not m.get("yields_to") for m in moves if m["tls"] is not None)
    assert all(moves[j]["junction"] == m["junction"] for m in moves for j in m.get("yields_to", ()))
