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


def test_creep_never_takes_a_queue_head_into_the_junction():
    """On the final approach a guided vehicle creeps only behind a leader still on its own lane,
    stopped at red or still slow: never as the head of the queue, nor behind one already inside the
    junction, whatever the signal, the leader's speed and the green left (property)."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from sim.guidance import CREEP_GO_MPS, STOP_MPS, creep_holds

    release_m = 30.0

    @settings(max_examples=300, deadline=None)
    @given(st.booleans(), st.floats(0.0, release_m), st.sampled_from("GgyrsuO"), st.none() | st.floats(0.0, 20.0),
           st.booleans(), st.none() | st.floats(0.0, 90.0))
    def check(queued, dist, state, lead_mps, same_lane, green_left_s):
        held = creep_holds(queued, dist, state, lead_mps, same_lane, green_left_s, release_m)
        if lead_mps is None or not same_lane:
            assert not held
        if held:
            assert state in "rs" or lead_mps < CREEP_GO_MPS
            assert queued or lead_mps < STOP_MPS

    check()


def test_creep_lets_a_queue_go_that_reaches_the_stop_line_in_its_green():
    """Before the final approach a queued guided vehicle keeps walking pace behind a slow leader or
    while its signal is not green, and on green while the green ends before the queue ahead can
    carry it to the stop line; it drives off once its signal is green, the leader is away, and the
    green lasts long enough or its end is not published (property)."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from sim.guidance import CREEP_GO_MPS, QUEUE_PASS_S_PER_M, creep_holds

    release_m = 30.0

    @settings(max_examples=300, deadline=None)
    @given(st.floats(release_m + 0.01, 250.0), st.sampled_from("GgyrsuO"), st.none() | st.floats(0.0, 20.0),
           st.booleans(), st.none() | st.floats(0.0, 90.0))
    def check(dist, state, lead_mps, same_lane, green_left_s):
        held = creep_holds(True, dist, state, lead_mps, same_lane, green_left_s, release_m)
        slow_lead = lead_mps is not None and lead_mps < CREEP_GO_MPS
        if state in "rsyu":
            assert held == (lead_mps is not None)
        elif slow_lead:
            assert held
        else:
            too_short = green_left_s is not None and green_left_s < dist * QUEUE_PASS_S_PER_M
            assert held == too_short

    check()
    # examples: 100 m back in a queue, 10 s of green left, leader driving off: it waits at walking pace
    assert creep_holds(True, 100.0, "G", 5.0, True, 10.0, release_m)
    assert not creep_holds(True, 100.0, "G", 5.0, True, 40.0, release_m)
    assert not creep_holds(True, 100.0, "G", 5.0, True, None, release_m)
    assert creep_holds(True, 100.0, "r", 5.0, True, None, release_m)
    assert not creep_holds(True, 20.0, "G", 0.0, False, None, release_m)


def test_creep_slows_a_driving_vehicle_only_behind_a_standing_leader_on_its_lane():
    """A guided vehicle that is driving (not queued) takes walking pace only when the leader close
    ahead on its own lane stands, wherever it is and whatever the signal shows (property)."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from sim.guidance import STOP_MPS, creep_holds

    @settings(max_examples=300, deadline=None)
    @given(st.floats(0.0, 250.0), st.sampled_from("GgyrsuO"), st.none() | st.floats(0.0, 20.0), st.booleans(),
           st.none() | st.floats(0.0, 90.0))
    def check(dist, state, lead_mps, same_lane, green_left_s):
        held = creep_holds(False, dist, state, lead_mps, same_lane, green_left_s, 30.0)
        assert held == (lead_mps is not None and same_lane and lead_mps < STOP_MPS)

    check()


def test_time_loss_is_split_between_guided_and_other_trips(tmp_path):
    """The guided vehicles' mean time loss and the others', from SUMO's tripinfo."""
    from sim.outcomes import mean_time_loss_of

    p = tmp_path / "tripinfo.xml"
    p.write_text('<tripinfos><tripinfo id="a" timeLoss="10.0"/><tripinfo id="b" timeLoss="20.0"/>'
                 '<tripinfo id="c" timeLoss="3.0"/><personinfo id="p"/></tripinfos>')
    assert mean_time_loss_of(p, {"a", "b"}) == (15.0, 3.0)
    assert mean_time_loss_of(p, set()) == (None, 11.0)
