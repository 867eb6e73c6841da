"""The estimation stage against a plain-Python reference (tests/naive.py), on real networks."""

from __future__ import annotations

import numpy as np
import pytest

import naive
from detectors.bank import LaneObservations
from network import compile_network
from network import estimate as est
from network.estimate import Estimator


@pytest.fixture(scope="module")
def net(resco_dir):
    return compile_network(resco_dir / "cologne8" / "cologne8.net.xml")


@pytest.fixture(scope="module")
def small_net(small_scenario):
    return compile_network(small_scenario.net)


def random_obs(rng, n, seen=0.8):
    nan = np.full(n, np.nan)
    cam = rng.random(n) < 0.4
    spd = rng.random(n) < 0.3
    return LaneObservations(
        stop_count=rng.integers(0, 2, n).astype(float), stop_occupancy=rng.random(n),
        stop_seen=rng.random(n) < seen, upstream_count=rng.integers(0, 2, n).astype(float),
        upstream_seen=rng.random(n) < 0.6, speed_mps=np.where(spd, rng.uniform(0, 15, n), nan),
        camera_vehicles=np.where(cam, rng.integers(0, 12, n), nan),
        camera_queue_veh=np.where(cam, rng.integers(0, 6, n), nan), interval_s=1.0,
    )


def test_lane_speeds_and_counts_match_reference_over_a_run(net):
    """Every prefix of a random observation stream gives the reference's per-lane state on
    lanes some detector saw (the others are filled from their edge, checked below)."""
    rng = np.random.default_rng(11)
    e = Estimator(net)
    n = net.n_lanes
    ref = [np.zeros(n), np.zeros(n), np.zeros(n), net.lane_speed_mps.copy(), np.zeros(n)]
    for _ in range(120):
        obs = random_obs(rng, n, seen=1.0)
        obs.camera_vehicles[:] = rng.integers(0, 12, n)
        obs.camera_queue_veh[:] = np.minimum(obs.camera_vehicles, rng.integers(0, 6, n))
        st = e.update(obs)
        naive.lanes_step(1.0, obs, net.lane_length_m, net.lane_speed_mps, ref, est)
        np.testing.assert_allclose(st.lane_vehicles, ref[0])
        np.testing.assert_allclose(st.lane_queue_veh, ref[1])
        np.testing.assert_allclose(st.lane_flow_vph, ref[2])
        np.testing.assert_allclose(st.lane_speed_mps, ref[3])


def test_a_vehicle_standing_on_the_stop_bar_loop_stays_in_the_loop_balance(small_net):
    """Loops only: a vehicle counted in upstream, then counted out as it reaches the stop-bar loop
    and stopping on it, is the lane's queue while it stands there, and gone once it has left."""
    n = small_net.n_lanes
    e = Estimator(small_net)
    nan = np.full(n, np.nan)

    def tick(up, stop, occ):
        return e.update(LaneObservations(np.full(n, float(stop)), np.full(n, occ), np.ones(n, bool),
                                         np.full(n, float(up)), np.ones(n, bool), nan, nan, nan, 1.0))

    st = tick(1, 0, 0.0)  # in over the upstream loop
    np.testing.assert_allclose(st.lane_vehicles, 1.0)
    st = tick(0, 1, 0.4)  # reaches the stop-bar loop, counted, still rolling
    np.testing.assert_allclose(st.lane_vehicles, 0.0)
    for _ in range(30):  # stands on it through a red
        st = tick(0, 0, 1.0)
        np.testing.assert_allclose(st.lane_vehicles, 1.0)
        np.testing.assert_allclose(st.lane_queue_veh, 1.0)
    st = tick(1, 0, 1.0)  # another one comes in behind it
    np.testing.assert_allclose(st.lane_vehicles, 2.0)
    st = tick(0, 0, 0.3)  # the first leaves the loop on green
    np.testing.assert_allclose(st.lane_vehicles, 1.0)
    st = tick(0, 1, 0.5)  # the second reaches the loop and drives over it
    st = tick(0, 0, 0.0)
    np.testing.assert_allclose(st.lane_vehicles, 0.0)


def test_single_loop_speed_comes_from_occupancy(small_net):
    """One vehicle over a loop covered for 0.5 s of a 1 s tick moves at L_eff / 0.5 s."""
    n = small_net.n_lanes
    e = Estimator(small_net)
    before = e.state.lane_speed_mps.copy()
    obs = LaneObservations(np.ones(n), np.full(n, 0.5), np.ones(n, bool), np.zeros(n), np.zeros(n, bool),
                           np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan), 1.0)
    st = e.update(obs)
    v = np.minimum(est.EFFECTIVE_VEHICLE_LENGTH_M / 0.5, 2 * small_net.lane_speed_mps)
    np.testing.assert_allclose(st.lane_speed_mps, before + (1 / est.SPEED_TAU_S) * (v - before))


@pytest.mark.parametrize("which", ["small", "cologne8"])
def test_edge_estimates_match_reference_over_a_run(which, small_net, resco_dir):
    """Flows (observed and solved), queues, travel times, delays, LOS and the minute values of
    the kernel equal the plain-Python reference at every tick of a random run that crosses
    three minute boundaries, with signals changing and detectors missing."""
    net = small_net if which == "small" else compile_network(resco_dir / "cologne8" / "cologne8.net.xml")
    rng = np.random.default_rng(3)
    e = Estimator(net)
    n, ne = net.n_lanes, net.n_edges
    lanes = [np.zeros(n), np.zeros(n), np.zeros(n), net.lane_speed_mps.copy(), np.zeros(n)]
    st = {"x": [0.0] * ne, "flow_s": [0.0] * ne, "queue_s": [0.0] * ne, "prior": 0.0,
          "acc_flow": [0.0] * ne, "acc_queue": [0.0] * ne, "acc_time": 0.0, "turn_s": {}, "lpq": {}, "y": {}}
    # a fixed half of the edges has detectors; the rest never reports
    has = np.zeros(n, dtype=bool)
    for k in rng.permutation(ne)[: ne // 2]:
        has[net.edge_lane_idx[net.edge_lane_ptr[k]:net.edge_lane_ptr[k + 1]]] = True
    link_state = np.zeros(net.n_links, dtype=np.int8)
    minutes_seen = 0
    # camera movement counts on the instrumented edges' lanes (one slot per lane and edge reached),
    # and one slot naming no turn of the network, which must be ignored
    slots = sorted({(int(net.move_in_lane[k]), int(net.lane_edge[net.move_out_lane[k]]))
                    for k in range(net.n_movements) if has[net.move_in_lane[k]]})
    slots.append((0, int(net.lane_edge[0])))
    turn_lane = np.array([a for a, _ in slots], dtype=np.int32)
    turn_edge = np.array([b for _, b in slots], dtype=np.int32)
    for tick in range(1, 200):
        obs = random_obs(rng, n, seen=1.0)
        for arr in (obs.camera_vehicles, obs.camera_queue_veh, obs.speed_mps):
            arr[~has] = np.nan
        obs.stop_seen &= has
        obs.upstream_seen &= has
        obs.stop_seen[rng.random(n) < 0.02] = False  # a detector that misses a tick
        obs.turn_lane, obs.turn_edge = turn_lane, turn_edge
        obs.turn_count = np.where(rng.random(len(slots)) < 0.97, rng.integers(0, 2, len(slots)), np.nan)
        link_state[:] = np.where(rng.random(net.n_links) < 0.1, 2 - link_state, link_state)
        now = tick * 10**9
        s = e.update(obs, now, link_state)
        naive.lanes_step(1.0, obs, net.lane_length_m, net.lane_speed_mps, lanes, est)
        st["minute_done"] = tick > 1 and (now - 1) // est.MINUTE_NS != (now - 10**9 - 1) // est.MINUTE_NS
        observed, out = naive.edges_step(net, 1.0, obs, lanes[2], lanes_observed(obs), link_state == 2, st, est,
                                         go=(link_state != 0) | net.link_stop_on_red)
        for ln in range(n):
            if ("lane", ln) in out:
                lanes[1][ln], lanes[0][ln], lanes[2][ln] = out["lane", ln]
        np.testing.assert_array_equal(s.edge_observed, [observed[k] for k in range(ne)])
        np.testing.assert_allclose(s.edge_flow_now_vph, st["x"], rtol=1e-9, atol=1e-6)
        got = np.column_stack([s.edge_flow_vph, s.edge_queue_veh, s.edge_travel_time_s, s.edge_speed_mps,
                               s.edge_density_vpkm, s.edge_delay_s, s.edge_los])
        np.testing.assert_allclose(got, [out["t", k] for k in range(ne)], rtol=1e-9, atol=1e-6)
        np.testing.assert_allclose(s.lane_vehicles, lanes[0], atol=1e-9)
        np.testing.assert_allclose(s.lane_queue_veh, lanes[1], atol=1e-9)
        if st["minute_done"]:
            minutes_seen += 1
            assert s.minute_end_ns == ((now - 1) // est.MINUTE_NS) * est.MINUTE_NS
            got = np.column_stack([s.minute_flow_vph, s.minute_queue_veh, s.minute_travel_time_s,
                                   s.minute_speed_mps, s.minute_density_vpkm, s.minute_delay_s, s.minute_los])
            np.testing.assert_allclose(got, [out["m", k] for k in range(ne)], rtol=1e-9, atol=1e-6)
    assert minutes_seen == 3


def lanes_observed(obs):
    return obs.stop_seen | ~np.isnan(obs.camera_vehicles) | (obs.upstream_seen & obs.stop_seen)


def test_solver_recovers_an_unobserved_edge_from_conservation(small_net):
    """With every edge observed but one that lies between observed edges, the solver finds the
    flow conservation asks for: what its junction receives minus what the other exits take."""
    net = small_net
    e = Estimator(net)
    m = e.model
    # an edge with both predecessors and successors
    k = next(k for k in range(net.n_edges) if m.tin_ptr[k + 1] > m.tin_ptr[k] and m.tout_ptr[k + 1] > m.tout_ptr[k])
    rng = np.random.default_rng(1)
    n = net.n_lanes
    flows = rng.uniform(200, 800, net.n_edges)
    obs = LaneObservations(np.zeros(n), np.zeros(n), np.ones(n, bool), np.zeros(n), np.zeros(n, bool),
                           np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan), 1.0)
    lanes_k = net.edge_lane_idx[net.edge_lane_ptr[k]:net.edge_lane_ptr[k + 1]]
    obs.stop_seen[lanes_k] = False
    e.update(obs)
    R = e.turn_ratios.copy()
    # the edge's own equation: x_k = sum R x_i over its predecessors
    ins = m.tin_idx[m.tin_ptr[k]:m.tin_ptr[k + 1]]
    want = float(sum(R[t] * flows[m.turn_from[t]] for t in ins))
    for _ in range(400):  # flows as veh/h, held for 400 ticks of 1 s (counts of fractional vehicles)
        obs.stop_count[:] = 0
        for x in range(net.n_edges):
            if x != k:
                ls = net.edge_lane_idx[net.edge_lane_ptr[x]:net.edge_lane_ptr[x + 1]]
                obs.stop_count[ls] = flows[x] / 3600 / len(ls)
        st = e.update(obs)
    # the successors' equations pull too; with them inconsistent the answer is a compromise,
    # so the check is against the equation of the edge's own inflow within the pull of its exits
    assert st.edge_observed.sum() == net.n_edges - 1 and not st.edge_observed[k]
    assert st.edge_flow_now_vph[k] == pytest.approx(want, rel=0.35)


def test_u_turns_carry_no_flow_so_dead_ends_are_boundaries(net):
    """The conservation uses no turn that only a U-turn makes: at cologne8's dead end 258585973
    the edge arriving there is a sink and the edge leaving it a source, not one stream."""
    m = est.edge_model(net)
    moves = net.graph.graph["movements"]
    takes = {}
    for k in range(net.n_movements):
        a, b = int(net.lane_edge[net.move_in_lane[k]]), int(net.lane_edge[net.move_out_lane[k]])
        if a != b:
            takes.setdefault((a, b), set()).add(moves[k]["direction"])
    used = {(int(m.turn_from[t]), int(m.turn_to[t])) for t in m.tout_idx.tolist()}
    assert used == {key for key, dirs in takes.items() if dirs - {"t"}}
    sink, source = net.edge_index["-186623965#14"], net.edge_index["186623965#9"]
    assert (sink, source) in takes and takes[sink, source] == {"t"}
    assert m.tout_ptr[sink + 1] == m.tout_ptr[sink] and m.tin_ptr[source + 1] == m.tin_ptr[source]


@pytest.mark.parametrize("held", [True, False])
def test_a_queue_longer_than_its_edge_spills_onto_the_unsignalised_edge_feeding_it(net, held):
    """A camera queue 4 vehicles beyond what its (short) edge holds puts those 4 on the one
    unobserved, unsignalised edge that feeds it (as the minute's mean queue there), when a
    vehicle stands on the stop-bar loop. With that loop free the standing vehicles the camera
    sees wait upstream for something else: neither edge has a queue from them."""
    m = est.edge_model(net)
    pick = None
    for e in range(net.n_edges):
        ins = m.tin_idx[m.tin_ptr[e]:m.tin_ptr[e + 1]]
        if len(ins) == 1 and net.edge_length_m[e] < est.CAMERA_RANGE_M:
            i = int(m.turn_from[ins[0]])
            if not m.e_signal[i] and m.e_storage[i] >= 5 and m.e_storage[e] >= 1 and i != e:
                pick = (i, e)
                break
    assert pick is not None
    i, e = pick
    n = net.n_lanes
    lanes_e = net.edge_lane_idx[net.edge_lane_ptr[e]:net.edge_lane_ptr[e + 1]]
    obs = LaneObservations(np.zeros(n), np.zeros(n), np.zeros(n, bool), np.zeros(n), np.zeros(n, bool),
                           np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan), 1.0)
    obs.stop_seen[lanes_e] = True
    obs.stop_occupancy[lanes_e] = 1.0 if held else 0.0
    obs.camera_queue_veh[lanes_e] = (m.e_storage[e] + 4.0) / len(lanes_e)
    obs.camera_vehicles[lanes_e] = obs.camera_queue_veh[lanes_e]
    e_ = Estimator(net)
    for tick in range(1, 125):
        st = e_.update(obs, tick * 10**9)
    assert st.minute_end_ns == 2 * est.MINUTE_NS
    assert st.minute_queue_veh[e] == pytest.approx(m.e_storage[e] if held else 0.0)
    assert st.minute_queue_veh[i] == pytest.approx(4.0 if held else 0.0)


def test_a_shared_lane_splits_as_its_movements_cross_when_served_alone(net):
    """A one-lane approach whose two movements its signal serves in turn: the stop-bar loop's
    counts while one movement alone may go are that movement's, so the turning ratio learns the
    split (10 of every 12 vehicles one way) instead of the direction prior; counts while both
    may go tell nothing, and without signal states the prior stands."""
    m = est.edge_model(net)
    pick = None
    for ln in range(net.n_lanes):
        e = int(net.lane_edge[ln])
        js = [j for j in range(m.lane_lt_ptr[ln], m.lane_lt_ptr[ln + 1]) if m.lt_weight[j] > 0]
        if net.edge_lane_ptr[e + 1] - net.edge_lane_ptr[e] != 1 or len(js) != 2:
            continue
        links = [set(m.lt_link_idx[m.lt_link_ptr[j]:m.lt_link_ptr[j + 1]].tolist()) for j in js]
        if links[0] and links[1] and not links[0] & links[1]:
            pick = (ln, e, [int(m.lt_turn[j]) for j in js], [sorted(x) for x in links])
            break
    assert pick is not None
    ln, e, (ta, tb), (la, lb) = pick
    n = net.n_lanes

    def run(with_signals: bool, both_open_burst: bool = False) -> np.ndarray:
        e_ = Estimator(net)
        state = np.zeros(net.n_links, dtype=np.int8)
        for tick in range(1800):
            phase_a = tick % 40 < 20
            count = (tick % 10 == 0) if phase_a else (tick % 2 == 0)
            state[:] = 0
            state[la if phase_a else lb] = 2
            if both_open_burst and tick % 40 == 39:
                state[la] = state[lb] = 2  # both may go: a burst that belongs to neither
                count = 5
            stop = np.zeros(n)
            stop[ln] = float(count)
            seen = np.zeros(n, bool)
            seen[ln] = True
            obs = LaneObservations(stop, np.zeros(n), seen, np.zeros(n), np.zeros(n, bool), np.full(n, np.nan),
                                   np.full(n, np.nan), np.full(n, np.nan), 1.0)
            e_.update(obs, (tick + 1) * 10**9, state if with_signals else None)
        return e_.turn_ratios[[ta, tb]].copy()

    prior = m.lt_weight[m.lane_lt_ptr[ln]:m.lane_lt_ptr[ln + 1]]
    learned = run(True)
    assert learned == pytest.approx([2 / 12, 10 / 12], abs=0.03)
    assert run(True, both_open_burst=True) == pytest.approx(learned, abs=0.03)
    blind = run(False)
    assert blind.sum() == pytest.approx(1.0)
    assert blind == pytest.approx(blind[0] / prior[prior > 0][0] * prior[prior > 0], rel=1e-9)


def test_a_shared_lane_discharges_at_the_share_of_its_flow_that_has_green(net):
    """A one-lane signalised approach nothing observes, fed by a counted edge: while only one of
    its two movements shows green, its point queue discharges at saturation flow times that
    movement's share of the lane (a vehicle for the red movement at its head holds the others),
    so the queue grows where all-green would keep it empty."""
    m = est.edge_model(net)
    pick = None
    for ln in range(net.n_lanes):
        e = int(net.lane_edge[ln])
        js = [j for j in range(m.lane_lt_ptr[ln], m.lane_lt_ptr[ln + 1]) if m.lt_weight[j] > 0]
        ins = m.tin_idx[m.tin_ptr[e]:m.tin_ptr[e + 1]]
        if net.edge_lane_ptr[e + 1] - net.edge_lane_ptr[e] != 1 or len(js) != 2 or len(ins) != 1:
            continue
        links = [m.lt_link_idx[m.lt_link_ptr[j]:m.lt_link_ptr[j + 1]] for j in js]
        if len(links[0]) and len(links[1]) and not set(links[0]) & set(links[1]) and m.turn_from[ins[0]] != e:
            pick = (ln, e, int(m.turn_from[ins[0]]), js, links)
            break
    assert pick is not None
    ln, e, i, js, links = pick
    (ja, la), (jb, lb) = sorted(zip(js, links), key=lambda p: m.lt_weight[p[0]])  # a: the lesser share
    share_a = m.lt_weight[ja] / m.lane_wsum[ln]  # no counts on the lane: its prior split
    n = net.n_lanes
    lanes_i = net.edge_lane_idx[net.edge_lane_ptr[i]:net.edge_lane_ptr[i + 1]]

    def run(green_links) -> tuple[float, float]:
        e_ = Estimator(net)
        state = np.zeros(net.n_links, dtype=np.int8)
        state[green_links] = 2
        q, acc = 0.0, 0.0
        for tick in range(1, 61):
            obs = LaneObservations(np.zeros(n), np.zeros(n), np.zeros(n, bool), np.zeros(n), np.zeros(n, bool),
                                   np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan), 1.0)
            obs.stop_seen[lanes_i] = True
            obs.stop_count[lanes_i] = 1700.0 / 3600 / len(lanes_i)  # below one lane's saturation flow
            st = e_.update(obs, tick * 10**9, state)
            rate = est.SATURATION_VPH_PER_LANE * (share_a if len(green_links) == len(la) else 1.0)
            q = min(max(q + (st.edge_flow_vph[e] - rate) / 3600.0, 0.0), m.e_spill_cap[e])
            acc += min(q, m.e_storage[e])
        st = e_.update(obs, 61 * 10**9, state)
        assert st.minute_end_ns == est.MINUTE_NS
        return float(st.minute_queue_veh[e]), acc / 60

    got, want = run(la)
    assert got > 0.1 and got == pytest.approx(want, rel=1e-9)
    assert run(np.concatenate([la, lb])) == (0.0, 0.0)


def test_an_uncounted_edge_shares_its_flow_among_lanes_as_their_directions_weigh(resco_dir):
    """grid4x4's approaches have a right-turn, a through and a left-turn lane. Where nothing
    counts them, the through lane carries ``STRAIGHT_WEIGHT`` times what each turn lane does
    (not a third each), in the turning ratios and in what reaches each lane's point queue."""
    net = compile_network(resco_dir / "grid4x4" / "grid4x4.net.xml")
    e_ = Estimator(net)
    m = e_.model
    k = net.edge_index["left2A2"]
    lanes = net.edge_lane_idx[net.edge_lane_ptr[k]:net.edge_lane_ptr[k + 1]]
    moves = net.graph.graph["movements"]
    weight = {}  # turn -> the direction weight of the one lane that takes it
    for mv in range(net.n_movements):
        if net.move_in_lane[mv] in lanes:
            t = int(np.flatnonzero((m.turn_from == k) & (m.turn_to == net.lane_edge[net.move_out_lane[mv]]))[0])
            weight[t] = est.DIRECTION_WEIGHT.get(moves[mv]["direction"], 1.0)
    assert sorted(weight.values()) == [1.0, 1.0, est.STRAIGHT_WEIGHT]
    n = net.n_lanes
    obs = LaneObservations(np.zeros(n), np.zeros(n), np.zeros(n, bool), np.zeros(n), np.zeros(n, bool),
                           np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan), 1.0)
    e_.update(obs)
    total = sum(weight.values())
    for t, w in weight.items():
        assert e_.turn_ratios[t] == pytest.approx(w / total, rel=1e-9)
    np.testing.assert_allclose(sorted(m.lane_prior[lanes]), sorted(w / total for w in weight.values()))


def test_a_minor_approach_queues_to_give_way_as_the_major_stream_grows(resco_dir):
    """ingolstadt1's 391891458#0 gives way to 653473569#5 where both merge into 164051413 (a
    junction without a signal, by the network's right of way). Counted but without a camera,
    it holds the gap-acceptance queue of its flow: more the more the major stream carries
    (that the kernel computes it as written is the reference test's part)."""
    net = compile_network(resco_dir / "ingolstadt1" / "ingolstadt1.net.xml")
    minor, major = net.edge_index["391891458#0"], net.edge_index["653473569#5"]
    m = est.edge_model(net)
    assert m.e_give_way[minor] and not m.e_give_way[major]
    n = net.n_lanes

    def minute_queue(major_vph: float) -> float:
        e_ = Estimator(net)
        for tick in range(1, 62):
            obs = LaneObservations(np.zeros(n), np.zeros(n), np.zeros(n, bool), np.zeros(n), np.zeros(n, bool),
                                   np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan), 1.0)
            for k, vph in ((minor, 300.0), (major, major_vph)):
                ls = net.edge_lane_idx[net.edge_lane_ptr[k]:net.edge_lane_ptr[k + 1]]
                obs.stop_seen[ls] = True
                obs.stop_count[ls] = vph / 3600 / len(ls)
            st = e_.update(obs, tick * 10**9)
        assert st.minute_end_ns == est.MINUTE_NS and st.edge_observed[minor]
        return float(st.minute_queue_veh[minor])

    quiet, busy = minute_queue(0.0), minute_queue(1500.0)
    assert 0.0 < quiet < busy
