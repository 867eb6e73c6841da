"""Recording and replay: the log on disk, `serve --record`, `replay`, and a kill -9 of the engine.

Engines run as real processes (``python -m engine serve``) on free loopback ports; peers are
real ZeroMQ sockets. The determinism test runs the engine in a closed loop with real SUMO.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import msgspec
import pytest
import zmq

from detectors import Batch, Clock, LoopReading, encode
from engine import protocol as P
from engine.client import OperatorClient
from engine.config import EngineConfig, load_config
from engine.recorder import (ADAPTER_IN, ADAPTER_OUT, CHECK, CHECK_SIZE, END, INGEST, OPERATOR_IN, OPERATOR_OUT,
                             REC_SIZE, TICK, LogError, LogReader, Recorder, open_recorder, read_records)
from engine.replay import parse_until, replay
from network import compile_network
from network.layout import default_layout

DEMO_NET = Path(__file__).resolve().parents[1] / "sim" / "scenarios" / "demo" / "demo.net.xml"
T0 = 1_767_225_600 * 10**9
ANY_PORTS = ('[endpoints]\ningest = "tcp://127.0.0.1:*"\nadapters = "tcp://127.0.0.1:*"\n'
             'feed = "tcp://127.0.0.1:*"\noperators = "tcp://127.0.0.1:*"\nsnapshot = "tcp://127.0.0.1:*"\n')


@pytest.fixture(scope="module")
def demo():
    net = compile_network(DEMO_NET)
    loops = [s.id for s in default_layout(net) if s.kind == "loop"]
    return net, loops


class Serve:
    """``python -m engine serve`` in a child process, with its ready line read."""

    def __init__(self, tmp: Path, *args: str, config: str = ""):
        cfg = tmp / "engine.toml"
        cfg.write_text(config + ANY_PORTS)
        self.proc = subprocess.Popen([sys.executable, "-m", "engine", "serve", str(DEMO_NET), "--config", str(cfg),
                                      *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"engine did not start: {self.proc.stderr.read()}")
        self.endpoints = json.loads(line)["endpoints"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()


def register(net, endpoint: str, ctx: zmq.Context) -> list[zmq.Socket]:
    """One DEALER per signal, each welcomed."""
    socks = []
    for t, tls in enumerate(net.tls_ids):
        d = ctx.socket(zmq.DEALER)
        d.setsockopt(zmq.IDENTITY, f"adapter:{tls}".encode())
        d.setsockopt(zmq.LINGER, 0)
        d.connect(endpoint)
        d.send(P.encoder.encode(P.Hello(junction=tls, n_links=net.tls_n_links(t))))
        socks.append(d)
    for d in socks:
        assert d.poll(10_000), "no welcome"
        assert P.engine_to_adapter_decoder.decode(d.recv()).accepted
    return socks


def commands_for(socks: list[zmq.Socket], ts: int) -> list[bytes]:
    """Each signal's command frame for watermark ``ts``."""
    out = []
    for d in socks:
        assert d.poll(10_000), f"no command for {ts}"
        frame = d.recv()
        assert P.engine_to_adapter_decoder.decode(frame).ts_ns == ts
        out.append(frame)
    return out


def loop_batch(loops: list[str], rng: random.Random, ts: int, seq: int) -> bytes:
    return encode(Batch([LoopReading(x, ts, 1.0, rng.randint(0, 1), round(rng.random() * 0.6, 3)) for x in loops],
                        source="test", seq=seq))


# -- the file format ---------------------------------------------------------------------------


def test_segments_rotate_and_the_reader_spans_them_in_order(tmp_path):
    """Small segments: many files, none much over the limit, every record back in order."""
    rng = random.Random(3)
    rec = Recorder(tmp_path / "log", {"test": True}, segment_bytes=4096, buffer_bytes=700)
    written = []
    for i in range(3000):
        kind = rng.choice([INGEST, TICK, ADAPTER_IN, ADAPTER_OUT, OPERATOR_IN, OPERATOR_OUT])
        t = T0 + i
        if kind == INGEST:
            frame = rng.randbytes(rng.randint(0, 120))
            rec.ingest(frame, t)
            written.append((INGEST, t, frame))
        elif kind == TICK:
            rec.tick(t)
            written.append((TICK, t, b""))
        else:
            ident, frame = f"peer{rng.randint(0, 9)}".encode(), rng.randbytes(rng.randint(0, 60))
            getattr(rec, {ADAPTER_IN: "adapter_in", ADAPTER_OUT: "adapter_out", OPERATOR_IN: "operator_in",
                          OPERATOR_OUT: "operator_out"}[kind])(ident, frame, t)
            written.append((kind, t, bytes([len(ident)]) + ident + frame))
    rec.close()
    reader = LogReader(tmp_path / "log")
    assert len(reader.segments) > 10
    got = list(reader)
    assert [(r.kind, r.t_ns, r.payload) for r in got[:-1]] == written
    assert got[-1].kind == END and msgspec.msgpack.decode(got[-1].payload)["bytes"] > 3000 * REC_SIZE
    assert reader.torn_bytes == 0
    for seg in reader.segments:
        # a segment closes at the first flush past the limit: at most one buffer (+ one record) over
        assert seg.stat().st_size <= 4096 + 700 + REC_SIZE + 200
        assert LogReader(seg).header["segment"] == int(seg.stem.split("-")[1])
        assert LogReader(seg).header["test"] is True
    with pytest.raises(LogError, match="already holds a recording"):
        Recorder(tmp_path / "log", {})


def test_a_torn_tail_is_ignored_and_a_damaged_middle_is_an_error(tmp_path):
    rec = Recorder(tmp_path / "log", {}, segment_bytes=4096, buffer_bytes=100)
    frames = [bytes([i]) * 50 for i in range(200)]
    for i, f in enumerate(frames):
        rec.ingest(f, i)
        rec.flush()  # one block per record
    segs = sorted((tmp_path / "log").glob("*.telog"))
    last = segs[-1]
    size = last.stat().st_size
    with open(last, "r+b") as f:  # cut the last record in half, as a crash mid-write would
        f.truncate(size - 20)
    reader = LogReader(tmp_path / "log")
    got = [r.payload for r in reader]
    assert got == frames[:-1] and reader.torn_bytes == REC_SIZE + 50 + CHECK_SIZE - 20
    with open(last, "ab") as f:  # zeros where a file system extended the file but lost the data
        f.write(b"\0" * 64)
    assert [r.payload for r in read_records(tmp_path / "log")] == frames[:-1]
    data = bytearray(last.read_bytes())
    data[-200] ^= 0xFF  # a flipped bit inside the last segment, not at its end
    last.write_bytes(bytes(data))
    with pytest.raises(LogError, match="checksum"):
        list(read_records(tmp_path / "log"))
    with open(segs[0], "r+b") as f:  # damage in a segment that is not the last
        f.truncate(segs[0].stat().st_size - 3)
    with pytest.raises(LogError, match="damaged"):
        list(read_records(tmp_path / "log"))
    (tmp_path / "junk").write_bytes(b"not a log at all")
    with pytest.raises(LogError, match="bad magic"):
        LogReader(tmp_path / "junk")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_stops_recording_not_the_engine(tmp_path):
    """Writes that fail (here: into /dev/full, ENOSPC) are logged, shown in status and counted as
    dropped; the hooks keep working and the buffer stays bounded."""
    rec = Recorder(tmp_path / "log", {}, buffer_bytes=4096)
    rec.ingest(b"before", 1)
    rec.flush()
    full = os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, rec._fd)  # the segment's descriptor now writes to a full device
    os.close(full)
    for i in range(10_000):
        rec.ingest(b"x" * 100, i)
        rec.adapter_out(b"a", b"cmd", i)
        assert len(rec._buf) < 4096 + 200
    rec.tick(10**9)
    st = rec.status()
    assert st["failed"] and "No space left" in st["failed"]
    assert st["dropped_bytes"] > 10_000 * 100
    rec.close()
    assert [r.payload for r in read_records(tmp_path / "log")] == [b"before"]


def test_recording_config_section(tmp_path):
    assert EngineConfig().recording.enabled is False
    cfg = tmp_path / "e.toml"
    cfg.write_text('[recording]\nenabled = true\ndir = "rec"\nsegment_bytes = 8192\n')
    assert load_config(cfg).recording.segment_bytes == 8192
    cfg.write_text('[recording]\nenabled = true\n')
    with pytest.raises(ValueError, match="recording.dir"):
        load_config(cfg)


# -- a live engine -------------------------------------------------------------------------------


def test_kill_9_loses_nothing_the_engine_acted_on_or_acknowledged(demo, tmp_path):
    """Lockstep ticks, then readings acknowledged by a status reply, then a burst cut by kill -9:
    every frame sent before the last command or reply received is in the log, in order, and so is
    every command received; the log replays with the same commands."""
    net, loops = demo
    log = tmp_path / "log"
    eng = Serve(tmp_path, "--clock", "sim", "--record", str(log))
    ctx = zmq.Context.instance()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(eng.endpoints["ingest"])
    socks = []
    rng = random.Random(11)
    sent: list[bytes] = []
    received: list[bytes] = []
    try:
        socks = register(net, eng.endpoints["adapters"], ctx)
        for k in range(1, 31):  # 1. lockstep: readings, a bad frame, the watermark; wait for the commands
            ts = T0 + k * 10**9
            for frame in (loop_batch(loops, rng, ts, k), b"\x93junk", encode(Clock(ts))):
                push.send(frame)
                sent.append(frame)
            received += commands_for(socks, ts)
        acked_ticks = len(sent)
        n = 3000  # 2. readings with no tick after them, acknowledged by the status reply
        for i in range(n):
            frame = encode(LoopReading(loops[i % len(loops)], ts + (i // len(loops) + 1) * 1000, 1.0, i % 2, 0.2))
            push.send(frame)
            sent.append(frame)
        with OperatorClient(eng.endpoints["operators"], timeout_s=10) as client:
            expected = 30 * len(loops) + n
            for _ in range(200):
                st = client.request("status")
                if st["ingest"]["accepted"] == expected:
                    break
                time.sleep(0.05)
        assert st["ingest"]["accepted"] == expected and st["ingest"]["rejected"] == {"malformed": 30}
        assert st["recording"]["dir"] == str(log) and st["recording"]["failed"] is None
        acked = len(sent)
        for i in range(20_000):  # 3. a burst nobody waits for, then kill -9
            frame = encode(LoopReading(loops[i % len(loops)], ts + 10**8 + i // len(loops) * 1000, 1.0, 1, 0.3))
            push.send(frame)
            sent.append(frame)
        eng.proc.send_signal(signal.SIGKILL)
        assert eng.proc.wait(10) == -signal.SIGKILL
    finally:
        push.close(0)
        for s in socks:
            s.close(0)
        eng.stop()
    records = list(read_records(log))
    ingested = [r.payload for r in records if r.kind == INGEST]
    assert len(ingested) >= acked >= acked_ticks
    assert ingested == sent[:len(ingested)]  # in order, with no gap
    assert [r.t_ns for r in records if r.kind == TICK] == [T0 + k * 10**9 for k in range(1, 31)]
    commands = [r.peer()[1] for r in records if r.kind == ADAPTER_OUT and b"command" in r.payload]
    assert sorted(commands) == sorted(received)  # (the signals' order within a tick is the hellos')
    assert sum(r.kind == OPERATOR_IN for r in records) == sum(r.kind == OPERATOR_OUT for r in records) >= 1
    assert sum(r.kind == ADAPTER_IN for r in records) == net.n_tls
    assert not any(r.kind == END for r in records)
    # a power cut could also leave half a record: the reader and replay skip it
    last = sorted(log.glob("*.telog"))[-1]
    with open(last, "ab") as f:
        f.write(bytes([INGEST]) + (T0).to_bytes(8, "little") + (500).to_bytes(4, "little") + b"half")
    r = replay(log, progress=False)
    assert r["mismatches"] == 0 and r["ticks"] == 30 and r["commands_compared"] == 30 * net.n_tls
    assert r["torn_bytes"] == REC_SIZE + 4 and not r["clean_end"]
    assert r["counters"]["accepted"] == 30 * len(loops) + len(ingested) - acked_ticks


def test_wall_clock_recording_replays_tick_for_tick(demo, tmp_path):
    """On the wall clock the recorded tick times and receive times drive the replay: same commands,
    same counters (readings checked for lateness against the recorded receive time)."""
    net, loops = demo
    log = tmp_path / "log"
    eng = Serve(tmp_path, "--record", str(log), config="tick_s = 0.1\n")
    ctx = zmq.Context.instance()
    push = ctx.socket(zmq.PUSH)
    push.connect(eng.endpoints["ingest"])
    socks = []
    rng = random.Random(5)
    try:
        socks = register(net, eng.endpoints["adapters"], ctx)
        for k in range(20):
            now = time.time_ns()
            push.send(loop_batch(loops, rng, now, k))
            push.send(encode(LoopReading(loops[0], now - 3600 * 10**9, 1.0, 1, 0.1)))  # late
            push.send(encode(Clock(now)))  # not on the wall clock
            time.sleep(0.05)
        for d in socks:
            assert d.poll(10_000)
        time.sleep(0.3)
        ctl = subprocess.run([sys.executable, "-m", "engine", "ctl", "status",
                              "--endpoint", eng.endpoints["operators"]], capture_output=True, text=True, timeout=60)
        assert ctl.returncode == 0 and f"recording    {log}  segment 0" in ctl.stdout
        eng.proc.send_signal(signal.SIGTERM)
        assert eng.proc.wait(20) == 0
    finally:
        push.close(0)
        for s in socks:
            s.close(0)
        eng.stop()
    r = replay(log, progress=False)
    assert r["clean_end"] and r["counters_match"] and r["mismatches"] == 0
    assert r["ticks"] >= 5 and r["commands_compared"] == r["ticks"] * net.n_tls
    assert r["counters"]["rejected"] == {"late": 20, "clock_in_wall_mode": 20}
    until = replay(log, until="+0.25", progress=False)
    assert until["stopped_at_until"] and 0 < until["ticks"] < r["ticks"] and until["mismatches"] == 0


def test_serve_refuses_a_directory_that_holds_a_recording(tmp_path):
    log = tmp_path / "log"
    log.mkdir()
    (log / "segment-000000.telog").write_bytes(b"TELOG")
    cfg = tmp_path / "engine.toml"
    cfg.write_text(ANY_PORTS)
    r = subprocess.run([sys.executable, "-m", "engine", "serve", str(DEMO_NET), "--config", str(cfg),
                        "--record", str(log)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "already holds a recording" in r.stderr
    r = subprocess.run([sys.executable, "-m", "engine", "replay", str(tmp_path / "nothing-here")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "no recording" in r.stderr


def test_replay_checks_the_network_and_reads_until(tmp_path):
    """A network that differs from the recorded one is refused (exit 2) before anything runs."""
    log = tmp_path / "log"
    open_recorder(log, config=EngineConfig(clock="sim"), net_path=DEMO_NET, segment_bytes=1 << 20).close()
    assert LogReader(log).header["network"]["path"] == str(DEMO_NET.resolve())
    other = tmp_path / "demo.net.xml"
    other.write_bytes(DEMO_NET.read_bytes().replace(b"</net>", b"<!-- changed --></net>"))
    r = subprocess.run([sys.executable, "-m", "engine", "replay", str(log), "-q", "--net", str(other)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "differs from the recorded one" in r.stderr
    assert replay(log, progress=False)["ticks"] == 0
    with pytest.raises(ValueError, match="--until"):
        parse_until("yesterday")
    assert parse_until("+1.5") == ("rel", 1_500_000_000)
    assert parse_until("2026-01-01T00:00:10Z") == ("abs", T0 + 10 * 10**9)
    assert parse_until(str(T0)) == ("abs", T0)


# -- determinism, closed loop with SUMO --------------------------------------------------------


@pytest.mark.sumo
def test_replay_of_a_sumo_run_gives_byte_identical_commands(small_scenario, tmp_path):
    """SUMO drives a recording engine for two simulated minutes; replay sends the very same
    command bytes, tick for tick, and a command altered in the log is found."""
    from sim.evaluate import evaluate

    log = tmp_path / "log"
    cfg = tmp_path / "engine.json"
    cfg.write_text(json.dumps({"recording": {"enabled": True, "dir": str(log), "segment_bytes": 200_000}}))
    out = evaluate(small_scenario.sumocfg, controller="max-pressure", end=120, config=cfg, progress=False)
    n_tls = len(small_scenario.tls_ids)
    summary = tmp_path / "replay.json"
    r = subprocess.run([sys.executable, "-m", "engine", "replay", str(log), "--json", str(summary), "-q"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads(summary.read_text())
    assert res["mismatches"] == 0 and res["clean_end"] and res["counters_match"]
    assert res["segments"] > 1  # the replay spans rotated segments
    assert res["ticks"] >= 120 and res["commands_compared"] == res["ticks"] * n_tls
    assert res["counters"]["accepted"] == out["ingest_accepted"] > 1000
    assert "mismatches   0" in r.stdout

    # alter one command's state letter in a copy of the log: replay must say so and exit 1
    bad = tmp_path / "bad"
    shutil.copytree(log, bad)
    seg = LogReader(bad).segments[-1]
    data = bytearray(seg.read_bytes())
    data[_last_green_letter(seg)] = ord("r")
    seg.write_bytes(_rechecksum(bytes(data), LogReader(seg).header_bytes))
    r = subprocess.run([sys.executable, "-m", "engine", "replay", str(bad), "-q"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 1 and "mismatches   1" in r.stdout and "differs" in r.stdout


def _last_green_letter(seg: Path) -> int:
    """Byte offset in ``seg`` of a ``G`` in the state of the last recorded command showing one."""
    found = None
    for rec, off in LogReader(seg).iter_with_offsets():
        if rec.kind != ADAPTER_OUT:
            continue
        ident, frame = rec.peer()
        msg = P.engine_to_adapter_decoder.decode(frame)
        if isinstance(msg, P.Command) and "G" in msg.state:
            state_at = frame.rindex(msg.state.encode())
            found = off + REC_SIZE + 1 + len(ident) + state_at + msg.state.index("G")
    assert found is not None
    return found


def _rechecksum(data: bytes, pos: int) -> bytes:
    """``data`` (a segment) with every block's CRC recomputed from ``pos``, the end of its header,
    as a recorder writing those bytes would have."""
    out = bytearray(data)
    block = pos
    while pos < len(out):
        kind, _, n = struct.unpack_from("<BqI", out, pos)
        if kind == CHECK:
            struct.pack_into("<I", out, pos + REC_SIZE, zlib.crc32(out[block:pos]))
            block = pos + REC_SIZE + n
        pos += REC_SIZE + n
    return bytes(out)
