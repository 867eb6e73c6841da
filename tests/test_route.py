"""``traffic-engine ctl route``: fastest routes on the live estimates, over real sockets."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import msgspec
import pytest
import zmq

import naive
from detectors import Batch, CameraReading, Clock, encode
from engine.config import EngineConfig
from engine.core import Engine
from network import compile_network
from tests.serving import ANY, serving

T0 = 1_767_225_600 * 10**9


@pytest.fixture(scope="module")
def net(small_scenario):
    return compile_network(small_scenario.net)


@pytest.fixture
def server(net):
    with serving(Engine(net, EngineConfig(clock="sim", endpoints=ANY))) as s:
        yield s


def ctl(endpoint, *args):
    return subprocess.run([sys.executable, "-m", "engine", "ctl", *args, "--endpoint", endpoint],
                          capture_output=True, text=True, timeout=60)


def test_route_follows_the_live_travel_times(net, server):
    """A queue seen by a camera slows its edge; the route the engine answers is then the
    fastest on the published travel times, as a hand-written Dijkstra finds it."""
    ctx = zmq.Context.instance()
    push = ctx.socket(zmq.PUSH)
    push.connect(server.endpoints["ingest"])
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"conditions")
    sub.connect(server.endpoints["feed"])
    time.sleep(0.2)
    # the camera of the busiest inner approach reports a long standing queue
    bank = server.engine.bank
    cam = next(c for c in bank.camera_index if c.startswith("C:") and c[2:] in ("A0B0", "B0A0", "A1B1", "B1A1"))
    k = bank.camera_index[cam]
    n_lanes = int(bank.camera_lane_ptr[k + 1] - bank.camera_lane_ptr[k])
    try:
        for second in range(1, 121):
            ts = T0 + second * 10**9
            push.send(encode(Batch([CameraReading(cam, ts, 1.0, [12] * n_lanes, [12.0] * n_lanes)], seq=second)))
            push.send(encode(Clock(ts)))
        deadline = time.monotonic() + 30
        body = None
        while time.monotonic() < deadline:
            assert sub.poll(5000)
            _, raw = sub.recv_multipart()
            body = msgspec.msgpack.decode(raw)
            if body["ts_ns"] == T0 + 120 * 10**9:
                break
        assert body is not None and body["ts_ns"] == T0 + 120 * 10**9
    finally:
        push.close(0)
        sub.close(0)
    tt = body["travel_time_s"]
    slow = net.edge_index[cam[2:]]
    # the conditions message: every edge, per tick and for the last completed minute
    ne = net.n_edges
    assert all(len(body[k]) == ne for k in ("flow_vph", "speed_mps", "density_vpkm", "queue_veh", "delay_s", "los",
                                             "observed"))
    assert body["minute"]["end_ns"] == T0 + 120 * 10**9 - 60 * 10**9  # the minute (60 s, 120 s] ends next tick
    assert all(len(body["minute"][k]) == ne for k in ("flow_vph", "travel_time_s", "queue_veh", "los"))
    assert body["queue_veh"][slow] > 20 and body["minute"]["queue_veh"][slow] == pytest.approx(12 * n_lanes, abs=0.01)
    assert body["los"][slow] == "F" and body["delay_s"][slow] > 80
    assert tt[slow] > 3 * min(tt)  # the queue shows in the published travel time
    origin = net.junction_ids[net.edge_from[slow]]
    dest = net.junction_ids[net.edge_to[slow]]
    r = ctl(server.endpoints["operators"], "route", origin, dest, "--json")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    want_tt, want_edges = naive.fastest_route(net, tt, origin, dest)
    assert got["travel_time_s"] == pytest.approx(want_tt, abs=0.1 * len(got["edges"]) + 0.1)
    assert cam[2:] not in got["edges"]  # around the queue, not through it
    assert got["junctions"][0] == origin and got["junctions"][-1] == dest
    assert sum(got["edge_travel_time_s"]) == pytest.approx(got["travel_time_s"], abs=0.1 * len(got["edges"]))
    # the plain-text form names the same route
    text = ctl(server.endpoints["operators"], "route", origin, dest)
    assert text.returncode == 0 and " -> ".join(got["junctions"]) in text.stdout


def test_route_errors_are_clear(net, server):
    ep = server.endpoints["operators"]
    r = ctl(ep, "route", "nowhere", net.junction_ids[0])
    assert r.returncode == 1 and "unknown origin 'nowhere'" in r.stderr
    r = ctl(ep, "route", net.junction_ids[0])
    assert r.returncode == 2 and "FROM and TO" in r.stderr
    r = ctl(ep, "route", net.edge_ids[0], net.edge_ids[0])
    assert r.returncode == 1 and "same" in r.stderr
