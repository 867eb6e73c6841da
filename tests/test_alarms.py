"""Alarms, and the ingest's overload policy seen from outside over real sockets."""

from __future__ import annotations

import time

import msgspec
import pytest
import zmq

from detectors import LoopReading, encode
from engine.alarms import AlarmBoard
from engine.client import OperatorClient
from engine.config import EngineConfig, HealthParams, IngestParams
from engine.core import Engine
from network import compile_network
from tests.serving import ANY, serving


def test_board_reports_changes_once():
    board = AlarmBoard()
    assert board.raise_("detector_fault", "L:a", 1, "stuck on")
    assert not board.raise_("detector_fault", "L:a", 2, "stuck on")  # already active: no change
    assert board.raise_("detector_fault", "L:b", 3)
    assert not board.clear("detector_fault", "L:c", 4)  # never raised
    assert board.clear("detector_fault", "L:a", 5)
    changes = board.take_changes()
    assert [(a.subject, a.active, a.ts_ns) for a in changes] == [("L:a", True, 1), ("L:b", True, 3), ("L:a", False, 5)]
    assert changes[0].id == changes[2].id != changes[1].id
    assert board.take_changes() == []
    assert [a.subject for a in board.active()] == ["L:b"]
    with pytest.raises(ValueError):
        board.raise_("x", "y", 6, severity="apocalyptic")


def test_overload_raises_an_alarm_loses_nothing_and_clears(resco_dir):
    """A flood the engine can take only slowly (ten frames per loop turn): the backlog raises
    ``ingest_overload`` on the feed, every reading is still counted once, and the alarm clears."""
    net = compile_network(resco_dir / "cologne1" / "cologne1.net.xml")
    # detector health off: a flood of one vehicle per loop per second is chatter, and its alarms are not this test's
    cfg = EngineConfig(endpoints=ANY, tick_s=0.05, ingest=IngestParams(max_queue=10, overload_ticks=2),
                       health=HealthParams(enabled=False))
    ctx = zmq.Context.instance()
    with serving(Engine(net, cfg)) as server:
        engine = server.engine
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"alarms")
        sub.connect(server.endpoints["feed"])
        push = ctx.socket(zmq.PUSH)
        push.connect(server.endpoints["ingest"])
        try:
            time.sleep(0.3)  # let the subscription reach the publisher
            loops = sorted(engine.bank.loop_index)
            n = 20_000
            now = time.time_ns()
            for k in range(n):
                reading = LoopReading(loops[k % len(loops)], now + (k // len(loops)) * 1000, 1.0, 1, 0.1)
                push.send(encode(reading))
            seen = []
            deadline = time.time() + 60
            while time.time() < deadline and not (seen and not seen[-1]["active"]):
                if sub.poll(200):
                    _, body = sub.recv_multipart()
                    seen.append(msgspec.msgpack.decode(body))
            assert [(a["kind"], a["active"]) for a in seen] == [("ingest_overload", True), ("ingest_overload", False)]
            with OperatorClient(server.endpoints["operators"]) as client:
                st = client.request("status")
                alarms = client.request("alarms")
            assert st["ingest"]["accepted"] + sum(st["ingest"]["rejected"].values()) == n
            assert st["ingest"]["rejected"] == {}
            assert st["ingest"]["backlog_ticks_total"] >= 2
            assert alarms["active"] == [] and alarms["raised_total"] == 1
        finally:
            push.close(0)
            sub.close(0)
