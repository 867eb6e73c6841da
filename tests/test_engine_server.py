"""The engine's sockets, over real ZeroMQ on loopback with free ports."""

from __future__ import annotations

import time

import msgspec
import numpy as np
import pytest
import zmq

from detectors import Batch, Clock, LoopReading, encode
from engine import protocol as P
from engine.client import OperatorClient, OperatorError
from engine.config import EngineConfig, Endpoints, load_config
from engine.core import Engine
from engine.server import Server
from network import compile_network
from tests.serving import ANY, serving

T0 = 1_767_225_600 * 10**9


@pytest.fixture(scope="module")
def net(resco_dir):
    return compile_network(resco_dir / "cologne1" / "cologne1.net.xml")


@pytest.fixture
def running(net):
    """An engine on simulated time, serving in a thread."""
    with serving(Engine(net, EngineConfig(clock="sim", endpoints=ANY))) as server:
        yield server


def recv(sock, timeout_ms=5000):
    assert sock.poll(timeout_ms), "no message within the timeout"
    return sock.recv_multipart()


def test_lockstep_tick_sends_commands_and_publishes(net, running):
    ctx = zmq.Context.instance()
    push = ctx.socket(zmq.PUSH)
    push.connect(running.endpoints["ingest"])
    tls = net.tls_ids[0]
    dealer = ctx.socket(zmq.DEALER)
    dealer.connect(running.endpoints["adapters"])
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(running.endpoints["feed"])
    try:
        dealer.send(P.encoder.encode(P.Hello(junction=tls, n_links=net.tls_n_links(0))))
        welcome = P.engine_to_adapter_decoder.decode(recv(dealer)[0])
        assert welcome == P.Welcome(tls, True)
        time.sleep(0.2)  # let the subscription reach the publisher
        stop_loop = next(iter(running.engine.bank.loop_index))
        for second in range(1, 4):
            ts = T0 + second * 10**9
            push.send(encode(Batch([LoopReading(stop_loop, ts, 1.0, 1, 0.3)], seq=second)))
            push.send(b"\x93garbage")
            push.send(encode(Clock(ts)))
            cmd = P.engine_to_adapter_decoder.decode(recv(dealer)[0])
            assert isinstance(cmd, P.Command) and cmd.ts_ns == ts and cmd.junction == tls
            assert len(cmd.state) == net.tls_n_links(0) and set(cmd.state) <= set("GgyrsS")
        topics = set()
        seqs = []
        while sub.poll(500):
            topic, body = sub.recv_multipart()
            topics.add(topic)
            seqs.append(msgspec.msgpack.decode(body)["seq"])
        assert {b"conditions", b"spat." + tls.encode()} <= topics
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        with OperatorClient(running.endpoints["operators"]) as client:
            st = client.request("status")
            assert st["ingest"]["accepted"] == 3
            assert st["ingest"]["rejected"] == {"malformed": 3}
            assert st["tick"]["count"] == 3 and st["tick"]["p99_ms"] > 0
            with pytest.raises(OperatorError, match="unknown op"):
                client.request("launch-missiles")
    finally:
        for s in (push, dealer, sub):
            s.close(0)


def test_unknown_junction_and_wrong_link_count_are_refused(net, running):
    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.connect(running.endpoints["adapters"])
    try:
        dealer.send(P.encoder.encode(P.Hello(junction="atlantis", n_links=4)))
        w = P.engine_to_adapter_decoder.decode(recv(dealer)[0])
        assert not w.accepted and "unknown" in w.reason
        dealer.send(P.encoder.encode(P.Hello(junction=net.tls_ids[0], n_links=999)))
        w = P.engine_to_adapter_decoder.decode(recv(dealer)[0])
        assert not w.accepted and "link count" in w.reason
        dealer.send(b"not msgpack at all")
        time.sleep(0.2)
        with OperatorClient(running.endpoints["operators"]) as client:
            assert client.request("status")["adapters"]["protocol_errors"] == 1
    finally:
        dealer.close(0)


def test_config_rejects_unknown_keys(tmp_path):
    bad = tmp_path / "engine.json"
    bad.write_text('{"tick_s": 1.0, "controler": "max-pressure"}')
    with pytest.raises(ValueError, match="controler"):
        load_config(bad)
    toml = tmp_path / "engine.toml"
    toml.write_text('tick_s = 0.5\ncontroller = "fixed-time"\n[safety]\nyellow_s = 4.0\n')
    cfg = load_config(toml)
    assert cfg.tick_s == 0.5 and cfg.controller == "fixed-time" and cfg.safety.yellow_s == 4.0
    with pytest.raises(ValueError, match="clock"):
        load_config(None, clock="sundial")


def test_busy_port_gives_a_clear_error(net):
    ctx = zmq.Context.instance()
    holder = ctx.socket(zmq.PULL)
    port = holder.bind_to_random_port("tcp://127.0.0.1")
    try:
        cfg = EngineConfig(endpoints=msgspec.structs.replace(ANY, ingest=f"tcp://127.0.0.1:{port}"))
        with pytest.raises(OSError, match="cannot bind"):
            Server(Engine(net, cfg))
    finally:
        holder.close(0)


def _lockstep_run(net, pipeline: bool) -> tuple[list[bytes], dict]:
    """Readings and watermarks pushed faster than a tiny drain takes them, one adapter; the
    commands it gets and the ingest counts."""
    from engine.config import IngestParams

    cfg = EngineConfig(clock="sim", endpoints=ANY, ingest=IngestParams(max_queue=7, pipeline=pipeline))
    ctx = zmq.Context.instance()
    commands = []
    with serving(Engine(net, cfg)) as server:
        engine = server.engine
        dealer = ctx.socket(zmq.DEALER)
        dealer.connect(server.endpoints["adapters"])
        push = ctx.socket(zmq.PUSH)
        push.connect(server.endpoints["ingest"])
        try:
            tls = net.tls_ids[0]
            dealer.send(P.encoder.encode(P.Hello(junction=tls, n_links=net.tls_n_links(0))))
            recv(dealer)
            loops = sorted(engine.bank.loop_index)
            rng = np.random.default_rng(5)
            for second in range(1, 41):
                ts = T0 + second * 10**9
                for k, d in enumerate(loops):
                    reading = LoopReading(d, ts - 10**6, 1.0, int(rng.integers(0, 2)), float(rng.random() * 0.4))
                    push.send(encode(reading))
                    if k % 11 == 0:
                        push.send(b"\x93junk")
                push.send(encode(Clock(ts)))
            for _ in range(40):
                commands.append(recv(dealer, 20_000)[0])
            with OperatorClient(server.endpoints["operators"]) as client:
                ingest = client.request("status")["ingest"]
        finally:
            dealer.close(0)
            push.close(0)
    return commands, {"accepted": ingest["accepted"], "rejected": ingest["rejected"], "loops": len(loops)}


def test_pipelined_ingest_changes_nothing(net):
    """With the kernel taking batches in the background (pipeline) or not, the engine absorbs the
    same readings in the same order relative to its ticks and sends the same commands."""
    with_pipeline = _lockstep_run(net, pipeline=True)
    without = _lockstep_run(net, pipeline=False)
    assert len(with_pipeline[0]) == 40
    assert with_pipeline == without
    n = with_pipeline[1]["loops"]
    assert with_pipeline[1]["accepted"] == 40 * n
    assert with_pipeline[1]["rejected"] == {"malformed": 40 * -(-n // 11)}
