"""The safety stage: property tests over any command stream, and the kernel against the reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import naive
from controllers import CONTROLLERS
from controllers.safety import GREEN, RED, YELLOW, Safety, SafetyConfig
from strategies import command_streams, signal_table

CFG = SafetyConfig(min_green_s=5.0, yellow_s=3.0, red_clearance_s=1.0)
NS = 10**9


def run_stream(table, steps, cfg=CFG, boxes=None):
    """Drive the safety stage; yield (now_ns, previous states, states, since) after each tick.
    ``boxes`` (a seed): box cameras report on a random half of the links, random vehicle counts
    (mostly none), each tick, and their crossing zones likewise; the readings of the tick are
    ``run_stream.box`` and ``run_stream.cross``."""
    safety = Safety(table, cfg, start_ns=0)
    rng = np.random.default_rng(boxes) if boxes is not None else None
    watched = rng.random(table.n_links) < 0.5 if rng is not None else None
    now = 0
    for dt, wanted in steps:
        now += int(dt * NS)
        before = safety.link_state.copy()
        box = cross = None
        if rng is not None:
            box = np.where(watched & (rng.random(table.n_links) < 0.95),
                           np.where(rng.random(table.n_links) < 0.7, 0.0, rng.integers(1, 4, table.n_links)), np.nan)
            cross = random_boxes(rng, table.link_cross_idx.size, empty=0.8)
        run_stream.box, run_stream.cross = box, cross
        safety.enforce(np.array(wanted, dtype=np.int32), now, box, cross)
        yield now, before, safety.link_state.copy(), safety.link_since_ns.copy()


def random_boxes(rng, n_links, empty):
    """One tick of box readings: 80 % of the links reported, of those a share ``empty`` saw
    nobody, the others 1-3 vehicles; NaN where none reported."""
    return np.where(rng.random(n_links) < 0.8,
                    np.where(rng.random(n_links) < empty, 0.0, rng.integers(1, 4, n_links)), np.nan)


def drive_with_boxes(table, steps, seed, empty):
    """Drive a fresh safety stage with fresh box readings each tick (``random_boxes``, on the
    links' paths and on their crossing zones); yield (safety, box, cross, target) after each tick."""
    safety = Safety(table, CFG, start_ns=0)
    rng = np.random.default_rng(seed)
    now = 0
    for dt, wanted in steps:
        now += int(dt * NS)
        box = random_boxes(rng, table.n_links, empty=empty)
        cross = random_boxes(rng, table.link_cross_idx.size, empty=empty)
        target = np.array(wanted, dtype=np.int32)
        safety.enforce(target, now, box, cross)
        yield safety, box, cross, target


def conflict_pairs(table):
    for a in range(table.n_links):
        for b in table.link_conflict_idx[table.link_conflict_ptr[a]:table.link_conflict_ptr[a + 1]]:
            if a < b:
                yield a, int(b)


@pytest.mark.parametrize("boxes", [None, 7])
@given(command_streams())
def test_no_conflicting_links_green_or_yellow_together(boxes, stream):
    """Whatever a controller asks, two conflicting links are never both showing green or yellow."""
    table, steps = stream
    pairs = list(conflict_pairs(table))
    for _, _, state, _ in run_stream(table, steps, boxes=boxes):
        for a, b in pairs:
            assert not (state[a] != RED and state[b] != RED), (a, b, state)


@pytest.mark.parametrize("boxes", [None, 7])
@given(command_streams())
def test_every_green_lasts_min_green_and_ends_in_full_yellow(boxes, stream):
    """No green shorter than minimum green, no green -> red without yellow, no short yellow."""
    table, steps = stream
    green_start = {}
    yellow_start = {}
    for now, before, state, since in run_stream(table, steps, boxes=boxes):
        for link in range(table.n_links):
            b, s = before[link], state[link]
            if b == GREEN and s == RED:
                raise AssertionError(f"link {link} went green -> red without yellow")
            if b == RED and s == YELLOW or b == YELLOW and s == GREEN:
                raise AssertionError(f"link {link} went {b} -> {s}")
            if b != GREEN and s == GREEN:
                green_start[link] = now
            if b == GREEN and s == YELLOW:
                assert now - green_start[link] >= CFG.min_green_s * NS
                yellow_start[link] = now
            if b == YELLOW and s == RED:
                assert now - yellow_start[link] >= CFG.yellow_s * NS


@given(command_streams())
def test_with_box_cameras_the_long_clearance_is_waived_only_for_an_empty_path(stream):
    """The long clearance after a turn that gave way is waived only where a box camera sees that
    turn's path through the junction empty; otherwise the fixed clearances hold, and never less
    than the red clearance."""
    table, steps = stream
    red_since = {link: -10**18 for link in range(table.n_links)}
    gave_way = {link: False for link in range(table.n_links)}
    for now, before, state, _ in run_stream(table, steps, boxes=11):
        box = run_stream.box
        for link in range(table.n_links):
            if before[link] != GREEN and state[link] == GREEN:
                assert before[link] == RED and now - red_since[link] >= CFG.red_clearance_s * NS
                for c in naive.conflicts_of(table, link):
                    assert before[c] == RED and state[c] == RED
                    long = max(CFG.red_clearance_s, table.link_clearance_s[c]) if gave_way[c] else CFG.red_clearance_s
                    if box[c] == 0:
                        long = CFG.red_clearance_s  # the path is empty: nobody waits inside
                    assert now - red_since[c] >= long * NS, (c, box[c])
        for link in range(table.n_links):
            if before[link] == GREEN and state[link] == YELLOW:
                gave_way[link] = any(before[b] != RED for b in naive.yields_of(table, link))
            if before[link] != RED and state[link] == RED:
                red_since[link] = now


def in_the_way(table, link, state, box, cross):
    """Links not green whose vehicles a box sees standing in ``link``'s way: on the path of an
    intruder, or on the crossing zone of a link whose path crosses it."""
    ins = table.link_intruder_idx[table.link_intruder_ptr[link]:table.link_intruder_ptr[link + 1]]
    lo, hi = table.link_cross_ptr[link], table.link_cross_ptr[link + 1]
    return ({int(a) for a in ins if state[a] != GREEN and box[a] > 0}
            | {int(table.link_cross_idx[k]) for k in range(lo, hi)
               if state[table.link_cross_idx[k]] != GREEN and cross[k] > 0})


@given(command_streams())
def test_no_green_while_a_box_sees_a_vehicle_standing_in_its_way(stream):
    """A link does not turn green while a box camera sees a vehicle of a link, not green, standing
    in its way: anywhere on the path of a link whose vehicles stand in its path when they wait or
    are held up inside the junction (a turner waiting for a vehicle stuck ahead of it, which
    ingolstadt21's gneJ257 showed; a car held up behind a full exit, its body across the start of
    the opposite left turn, which an unseen town showed), or on the stretch of a crossing path
    that is in its way (a crossing zone: a car held up mid-junction, which another unseen town
    showed); a box that sees nobody there, or none that watches, holds nothing; nor does a link
    green (with it, or since before)."""
    table, steps = stream
    for now, before, state, _ in run_stream(table, steps, boxes=13):
        for link in range(table.n_links):
            if before[link] != GREEN and state[link] == GREEN:
                assert not in_the_way(table, link, state, run_stream.box, run_stream.cross), link


@given(command_streams())
def test_a_phase_held_only_by_a_vehicle_standing_in_its_way_counts_as_shown(stream):
    """The active phase is the target phase once each of its links is green or held back only
    by a vehicle a box sees standing in its way, the fixed clearances done (held up behind a full
    exit it may stand there for minutes, and a controller waiting for its phase would starve
    every other stream: on ingolstadt21 that gridlocked, 179 s mean time loss and 56 teleports
    instead of 79 s and none); never while a link of it is red with nothing in its way, nor while
    a link conflicting with one of it is not red, or red for less than the red clearance."""
    table, steps = stream
    for safety, box, cross, target in drive_with_boxes(table, steps, seed=23, empty=0.5):
        state, since, now = safety.link_state, safety.link_since_ns, safety._now_ns
        for t in range(table.n_tls):
            p = int(target[t])
            if not int(table.tls_phase_ptr[t]) <= p < int(table.tls_phase_ptr[t + 1]):
                assert safety.active_phase[t] == -1
                continue
            members = [int(x) for x in table.phase_link_idx[table.phase_link_ptr[p]:table.phase_link_ptr[p + 1]]]
            if all(state[x] == GREEN for x in members):
                assert safety.active_phase[t] == p
            links = range(int(table.tls_link_ptr[t]), int(table.tls_link_ptr[t + 1]))
            if not any(naive.yields_of(table, x) for x in links):
                # (no link gives way: the fixed rules are the own and the conflicts' red clearance)
                def held(x):
                    red_for = lambda y: state[y] == RED and now - since[y] >= CFG.red_clearance_s * NS
                    return (red_for(x) and all(red_for(c) for c in naive.conflicts_of(table, x))
                            and bool(in_the_way(table, x, state, box, cross)))
                assert (safety.active_phase[t] == p) == all(state[x] == GREEN or held(x) for x in members), t
            if safety.active_phase[t] != p:
                continue
            for x in members:
                if state[x] != GREEN:
                    assert state[x] == RED and in_the_way(table, x, state, box, cross), x
                    for c in naive.conflicts_of(table, x):
                        assert state[c] == RED and now - since[c] >= CFG.red_clearance_s * NS, (x, c)


@given(command_streams())
def test_no_protected_green_while_a_box_sees_a_vehicle_of_a_stream_it_gives_way_to(stream):
    """A turn shows its protected ``G`` only while no box camera sees a vehicle on the path of a
    stream it gives way to: a vehicle left inside the junction (on ingolstadt21 and cologne1,
    one stuck behind a waiting turner, restarting after its stream's red) keeps it ``g``."""
    table, steps = stream
    for safety, box, _, _ in drive_with_boxes(table, steps, seed=17, empty=0.6):
        chars = safety.state_chars().decode()
        for link, ch in enumerate(chars):
            if ch == "G":
                seen = [b for b in naive.yields_of(table, link) if box[b] > 0]
                assert not seen, (link, seen)


@given(command_streams())
def test_no_turn_green_while_a_box_sees_a_vehicle_of_an_ending_stream_it_gives_way_to(stream):
    """While a stream a turn gives way to is in its yellow or red clearance and a box camera sees
    a vehicle on its path (one held up inside, restarting as its light ends: cologne3), the turn
    does not start, and ends once past its minimum green."""
    table, steps = stream
    safety = Safety(table, CFG, start_ns=0)
    clear_ns = np.round(np.maximum(CFG.red_clearance_s, table.link_clearance_s) * NS)
    rng = np.random.default_rng(23)
    yields = {a: [b for b in naive.yields_of(table, a) if a not in naive.yields_of(table, b)]
              for a in range(table.n_links)}

    def straggler(link, state, since, now, box):
        return [b for b in yields[link] if box[b] > 0 and (
            state[b] == YELLOW or state[b] == RED and now - since[b] < clear_ns[b])]

    now = 0
    for dt, wanted in steps:
        now += int(dt * NS)
        before, since_before = safety.link_state.copy(), safety.link_since_ns.copy()
        box = random_boxes(rng, table.n_links, empty=0.5)
        safety.enforce(np.array(wanted, dtype=np.int32), now, box)
        state, since = safety.link_state, safety.link_since_ns
        for link in range(table.n_links):
            if before[link] == GREEN and now - since_before[link] >= CFG.min_green_s * NS:
                seen = straggler(link, before, since_before, now, box)
                assert not (seen and state[link] == GREEN), (link, seen)
            if before[link] != GREEN and state[link] == GREEN:
                seen = straggler(link, state, since, now, box)
                assert not seen, (link, seen)


@given(command_streams())
def test_green_starts_only_after_red_clearance_of_every_conflict(stream):
    """A link turns green only after its own red clearance and each conflicting link's clearance;
    a turn whose green ended while a foe it gives way to was showing gets the longer clearance
    the geometry asks for (a vehicle may be waiting inside the junction)."""
    table, steps = stream
    red_since = {link: -10**18 for link in range(table.n_links)}
    gave_way = {link: False for link in range(table.n_links)}

    def needed(c):
        long = max(CFG.red_clearance_s, table.link_clearance_s[c])
        return (long if gave_way[c] else CFG.red_clearance_s) * NS

    for now, before, state, _ in run_stream(table, steps):
        for link in range(table.n_links):
            if before[link] != GREEN and state[link] == GREEN:
                assert before[link] == RED and now - red_since[link] >= CFG.red_clearance_s * NS
                for c in naive.conflicts_of(table, link):
                    assert before[c] == RED and state[c] == RED
                    assert now - red_since[c] >= needed(c)
        for link in range(table.n_links):
            if before[link] == GREEN and state[link] == YELLOW:
                gave_way[link] = any(before[b] != RED for b in naive.yields_of(table, link))
            if before[link] != RED and state[link] == RED:
                red_since[link] = now


@pytest.mark.parametrize("boxes", [None, 7])
@given(command_streams())
def test_a_priority_stream_never_starts_under_a_protected_turn(boxes, stream):
    """A link starts green only when every link that gives way to it is red past the clearance
    (or starts with it): no vehicle committed on a protected turn meets released oncoming traffic."""
    table, steps = stream
    yielders = {b: [a for a in range(table.n_links) if b in naive.yields_of(table, a)] for b in range(table.n_links)}
    for now, before, state, since in run_stream(table, steps, boxes=boxes):
        for b in range(table.n_links):
            if before[b] != GREEN and state[b] == GREEN:
                for a in yielders[b]:
                    assert before[a] == RED, (a, b)
                    assert state[a] == GREEN and since[a] == now or now - since[a] >= CFG.red_clearance_s * NS


@given(command_streams())
def test_kernel_matches_plain_python_reference(stream):
    """The numba kernel and tests/naive.py agree on every link state, every tick."""
    table, steps = stream
    n = table.n_links
    state = [0] * n
    since = [-3600 * NS] * n
    active = [-1] * table.n_tls
    active_since = [0] * table.n_tls
    long_clear = [False] * n
    safety = Safety(table, CFG, start_ns=0)
    now = 0
    for dt, wanted in steps:
        now += int(dt * NS)
        safety.enforce(np.array(wanted, dtype=np.int32), now)
        naive.enforce(table, wanted, state, since, active, active_since, now,
                      5 * NS, 3 * NS, 1 * NS, long_clear)
        assert safety.link_state.tolist() == state
        assert safety.active_phase.tolist() == active


def test_a_wanted_phase_is_reached_after_the_clearances():
    """Two conflicting movements: the change takes min green, then yellow, then red clearance."""
    table = signal_table([(2, {(0, 1)}, [[0], [1]])])
    safety = Safety(table, CFG, start_ns=0)
    shown = []
    for second in range(1, 16):
        safety.enforce(np.array([0 if second < 3 else 1], dtype=np.int32), second * NS)
        shown.append(safety.state_chars().decode())
    # green at 1 s; asked to change at 3 s but held to 6 s (min green), yellow 6..9, red 9..10, green 10
    assert shown[:5] == ["Gr"] * 5
    assert shown[5:8] == ["yr"] * 3
    assert shown[8] == "rr"
    assert shown[9:] == ["rG"] * 6
    assert safety.active_phase[0] == 1



_NETS = {}


def _real_net():
    from conftest import RESCO_DIR
    from network import compile_network

    if not RESCO_DIR.is_dir():
        pytest.skip("RESCO scenarios not present")
    if "net" not in _NETS:
        _NETS["net"] = compile_network(RESCO_DIR / "cologne8" / "cologne8.net.xml")
    return _NETS["net"]


@pytest.mark.parametrize("name", sorted(CONTROLLERS))
@settings(max_examples=15)
@given(seed=st.integers(0, 2**32 - 1), p_report=st.floats(0.0, 1.0), busy=st.floats(0.0, 1.0))
def test_every_controller_through_the_safety_stage_stays_safe(name, seed, p_report, busy):
    """Any controller, fed random detector reports (some lanes silent) on a real network: the
    signals never show conflicting links together and every green lasts its minimum."""
    from detectors.bank import LaneObservations
    from engine.config import EngineConfig
    from engine.core import make_controller
    from network.estimate import Estimator

    net = _real_net()
    rng = np.random.default_rng(seed)
    ctl = make_controller(name, net, EngineConfig(controller=name))
    est = Estimator(net)
    safety = Safety(net, CFG, start_ns=0)
    target = np.full(net.n_tls, -1, dtype=np.int32)
    healthy = rng.random(net.n_lanes) > 0.1
    pairs = list(conflict_pairs(net))
    green_start = np.zeros(net.n_links, dtype=np.int64)
    n = net.n_lanes
    for step in range(1, 200):
        now = step * NS
        seen = rng.random(n) < p_report
        veh = np.where(seen, rng.integers(0, 12, n) * (rng.random(n) < busy), np.nan)
        obs = LaneObservations(
            stop_count=np.where(seen, rng.random(n) < busy * 0.5, 0).astype(float),
            stop_occupancy=np.where(seen, rng.random(n) * busy, np.nan), stop_seen=seen,
            upstream_count=np.where(seen, rng.random(n) < busy * 0.5, 0).astype(float), upstream_seen=seen,
            speed_mps=np.full(n, np.nan), camera_vehicles=veh, camera_queue_veh=np.floor(veh * 0.5), interval_s=1.0)
        state = est.update(obs)
        if hasattr(ctl, "observe"):
            ctl.observe(obs, healthy, now)
        ctl.decide(state, safety.active_phase, safety.active_since_ns, now, target)
        before = safety.link_state.copy()
        safety.enforce(target, now)
        after = safety.link_state
        for a, b in pairs:
            assert not (after[a] != RED and after[b] != RED), (a, b)
        started = (before != GREEN) & (after == GREEN)
        green_start[started] = now
        ended = (before == GREEN) & (after == YELLOW)
        assert (now - green_start[ended] >= CFG.min_green_s * NS).all()


def test_engine_config_states_the_safety_stage_defaults():
    """``engine.config`` (msgspec only, on purpose) repeats the safety stage's default timings;
    a change to one that leaves the other behind fails here, field by field."""
    from dataclasses import fields

    from engine.config import SafetyTimings

    engine_side, stage_side = SafetyTimings(), SafetyConfig()
    names = [f.name for f in fields(SafetyConfig)]
    assert names and set(names) == set(SafetyTimings.__struct_fields__)
    for name in names:
        assert getattr(engine_side, name) == getattr(stage_side, name), name
