"""``evaluate --detector-coverage``: the engine's published estimates against SUMO's edge data."""

from __future__ import annotations

import json

import pytest

from network import compile_network
from network.layout import coverage_layout, instrumented_edges
from sim.baselines import normalize_net
from sim.evaluate import EvaluationError, evaluate

pytestmark = pytest.mark.sumo


def test_coverage_layout_instruments_exactly_the_drawn_edges(small_scenario):
    net = compile_network(small_scenario.net)
    specs = coverage_layout(net, 0.5, seed=3)
    inst = instrumented_edges(net, specs)
    assert inst.sum() == round(0.5 * net.n_edges)
    lanes = {x for s in specs for x in s.lanes}
    for e in range(net.n_edges):
        mine = {net.lane_ids[x] for x in net.edge_lane_idx[net.edge_lane_ptr[e]:net.edge_lane_ptr[e + 1]]}
        assert (mine <= lanes) == bool(inst[e]) and (not mine & lanes) == (not inst[e])
    assert coverage_layout(net, 0.5, seed=3) == specs and coverage_layout(net, 0.5, seed=4) != specs
    with pytest.raises(ValueError, match="between 0 and 1"):
        coverage_layout(net, 1.5)


def test_estimation_block_on_a_small_city(small_scenario, tmp_path):
    """Half the edges instrumented: counted edges match SUMO's flows closely, every figure is
    there, the engine still controls the city (it falls back on estimates where nothing sees)."""
    out = tmp_path / "r.json"
    r = evaluate(small_scenario.sumocfg, controller="max-pressure", detector_coverage=0.5, seed=1,
                 json_path=out, progress=False)
    assert json.loads(out.read_text()) == r
    est = r["estimation"]
    net = compile_network(normalize_net(small_scenario.net))
    assert est["edges_observed"] == round(0.5 * net.n_edges) == net.n_edges - est["edges_unobserved"]
    assert est["bins"] >= 2 and est["edge_bins_flow_observed"] >= est["edges_observed"]
    assert est["edge_bins_flow_unobserved"] > 0
    # what loops count is what leaves the edge: bins aligned, nothing lost on the feed
    # (10.7 on this tiny town since the safety stage holds permissive turns past their streams'
    # clearance: few bins, low flows; 0.3-2 % on the RESCO networks, benchmarks.estimate)
    assert est["flow_mape_observed"] < 15
    assert 0 <= est["flow_geh_lt5_share_unobserved"] <= 1
    for key in ("flow_mape_unobserved", "speed_mape", "travel_time_mape", "queue_mae_veh"):
        assert est[key] is not None and est[key] >= 0
    assert est["queue_mae_veh"] < 5
    assert r["detector_coverage"] == 0.5 and r["trips_completed"] == r["trips_total"] > 100
    assert r["collisions_where"]["at_signals"] == 0 and r["safety_violations"] == 0


def test_bad_coverage_is_refused(small_scenario):
    with pytest.raises(EvaluationError, match="between 0 and 1"):
        evaluate(small_scenario.sumocfg, controller="max-pressure", detector_coverage=2.0, progress=False)
