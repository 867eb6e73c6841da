"""Hostile input at a live engine process over real sockets: it stays up and counts every good reading.

One ``traffic-engine serve`` process takes every hypothesis example in turn. Each example pushes
good loop readings (each a new interval of a real detector) mixed with hostile frames: random
bytes, good frames cut short or padded, wrong types, NaN and infinity, negative and impossible
values, unknown ids, replays, frames far in the future or past, oversized frames and empty ones.
Afterwards the engine must answer, still tick, and have accepted exactly the good readings.
"""

from __future__ import annotations

import itertools
import json
import math
import signal
import subprocess
import sys
import time

import msgspec
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detectors import Batch, CameraReading, Clock, LoopReading, encode
from engine.client import OperatorClient
from network import compile_network, default_layout

S = 10**9


@pytest.fixture(scope="module")
def engine_proc(resco_dir, tmp_path_factory):
    net_path = resco_dir / "cologne1" / "cologne1.net.xml"
    tmp = tmp_path_factory.mktemp("fuzz")
    cfg = tmp / "engine.toml"
    cfg.write_text('tick_s = 0.1\n[endpoints]\ningest = "tcp://127.0.0.1:*"\nadapters = "tcp://127.0.0.1:*"\n'
                   'feed = "tcp://127.0.0.1:*"\noperators = "tcp://127.0.0.1:*"\n'
                   'snapshot = "tcp://127.0.0.1:*"\n'
                   '[ingest]\nmax_message_bytes = 65536\n')
    err = (tmp / "engine.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "engine", "serve", str(net_path), "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=err, text=True)
    ready = json.loads(proc.stdout.readline())
    net = compile_network(net_path)
    loops = sorted(s.id for s in default_layout(net) if s.kind == "loop")
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.connect(ready["endpoints"]["ingest"])
    client = OperatorClient(ready["endpoints"]["operators"], timeout_s=10)
    yield {"proc": proc, "push": push, "client": client, "loops": loops, "interval": itertools.count(1)}
    client.close()
    push.close(0)
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(10) == 0, "the engine did not stop cleanly after the fuzzing"
    finally:
        if proc.poll() is None:
            proc.kill()
        err.close()


def hostile_frames(loops):
    """Frames that must never be accepted as readings."""
    good = st.sampled_from(loops).map(lambda d: encode(LoopReading(d, time.time_ns(), 1.0, 1, 0.2)))
    bad_reading = st.builds(
        LoopReading,
        detector=st.one_of(st.sampled_from(loops), st.text(max_size=40)),
        ts_event_ns=st.one_of(st.just(0), st.just(2**63 - 1), st.just(-5),
                              st.integers(3600, 10**6).map(lambda d: time.time_ns() + d * S)),
        interval_s=st.one_of(st.just(1.0), st.sampled_from([0.0, -1.0, math.nan, math.inf])),
        count=st.one_of(st.integers(-10**6, -1), st.integers(10**4, 2**63 - 1)),
        occupancy=st.sampled_from([math.nan, math.inf, -0.1, 1.5, 0.5]),
    )
    return st.one_of(
        st.binary(max_size=120),
        good.flatmap(lambda f: st.integers(0, len(f) - 1).map(lambda k: f[:k])),  # cut short
        good.map(lambda f: f + b"\x00"),  # trailing bytes
        good.map(lambda f: f.replace(b"loop", b"loup")),  # unknown tag
        bad_reading.map(encode),
        st.sampled_from(loops).map(lambda d: msgspec.msgpack.encode(["loop", d, "yesterday", 1.0, 1, 0.2])),
        st.sampled_from(loops).map(lambda d: encode(CameraReading(d, time.time_ns(), 1.0, [1], [0.0]))),
        st.just(encode(Clock(time.time_ns()))),  # a watermark at an engine on the wall clock
        st.just(b"\x98" + b"\xff" * 70_000),  # oversized
        st.just(encode(Batch([LoopReading("no-such-loop", time.time_ns(), 1.0, 1, 0.1)] * 50))),
    )


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
          deadline=None)
@given(data=st.data())
def test_engine_survives_hostile_input_and_counts_every_good_reading(engine_proc, data):
    e = engine_proc
    before = e["client"].request("status")
    hostile = data.draw(st.lists(hostile_frames(e["loops"]), min_size=1, max_size=30))
    picked = data.draw(st.lists(st.sampled_from(e["loops"]), min_size=1, max_size=30, unique=True))
    k = next(e["interval"])
    base = time.time_ns()
    good = [encode(LoopReading(d, base + k * 1000, 1.0, 1, 0.2, 5.0, k)) for d in picked]
    replays = good[: len(good) // 3]  # the same readings again: rejected as replays
    frames = [f for pair in itertools.zip_longest(hostile, good) for f in pair if f is not None] + replays
    for f in frames:
        e["push"].send(f)
    deadline = time.time() + 20
    while True:
        st_ = e["client"].request("status")
        taken = st_["ingest"]["accepted"] - before["ingest"]["accepted"]
        rejected = sum(st_["ingest"]["rejected"].values()) - sum(before["ingest"]["rejected"].values())
        ticked = st_["tick"]["count"] > before["tick"]["count"]
        if taken >= len(good) and rejected >= len(replays) and ticked or time.time() > deadline:
            break
        time.sleep(0.05)
    assert e["proc"].poll() is None, "the engine died"
    assert taken == len(good)
    assert st_["ingest"]["rejected"].get("replay", 0) - before["ingest"]["rejected"].get("replay", 0) >= len(replays)
    assert st_["tick"]["count"] > before["tick"]["count"]  # and it still ticks
