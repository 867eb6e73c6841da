"""What recording costs: ``python -m benchmarks.record [--messages N] [--json FILE]``.

On the bundled demo town (``sim/scenarios/demo``), with single-reading ingest messages (one
``LoopReading`` per ZeroMQ message, the engine's worst case) and batched ones (100 readings):

Machines are shared: every figure is the best of ``--repeat`` runs, with and without recording
alternating.

- ``socket``: a real engine process (``traffic-engine serve --clock sim``) takes N messages
  pushed over loopback TCP, without and with ``--record``; messages/s and their ratio;
- ``in-process``: the same loop body without sockets, ``DetectorBank.absorb_frame`` alone and
  behind ``Recorder.ingest``; messages/s and their ratio;
- ``writer``: the recorder alone (records/s, MB/s) against the limit of the same bytes handed to
  ``os.write`` in 1 MiB blocks, measured in the same run; the ratio;
- ``read``/``replay``: records/s of reading the log back, and of ``traffic-engine replay`` over
  a lockstep recording (ingest, ticks and commands compared).
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zmq

from benchmarks import parser, write_json
from detectors.messages import Batch, Clock, LoopReading, encode
from engine import protocol as P
from engine.client import OperatorClient
from engine.config import EngineConfig
from engine.core import Engine
from engine.recorder import LogReader, Recorder
from network import compile_network, default_layout

DEMO = Path(__file__).resolve().parents[1] / "sim" / "scenarios" / "demo" / "demo.net.xml"
T0 = 1_767_225_600 * 10**9
ANY = ('[endpoints]\ningest = "tcp://127.0.0.1:*"\nadapters = "tcp://127.0.0.1:*"\n'
       'feed = "tcp://127.0.0.1:*"\noperators = "tcp://127.0.0.1:*"\nsnapshot = "tcp://127.0.0.1:*"\n')


_used = itertools.count()


def make_frames(loops: list[str], n: int, batch: int) -> list[bytes]:
    """``n`` ingest messages of ``batch`` loop readings each, all valid at ``T0``. Each call's
    readings are new intervals (a microsecond apart per loop), so none is a duplicate of another."""
    rng = np.random.default_rng(0)
    frames = []
    k = 0
    base = next(_used) * n * batch
    for _ in range(n):
        rs = []
        for _ in range(batch):
            ts = T0 + (base + k) // len(loops) * 1000
            rs.append(LoopReading(loops[k % len(loops)], ts, 1.0, int(rng.integers(0, 2)), float(rng.random() * 0.5)))
            k += 1
        frames.append(encode(rs[0]) if batch == 1 else encode(Batch(rs)))
    return frames


class EngineProcess:
    """A real engine process (``serve --clock sim``, its clock started at ``T0``) and a PUSH to it."""

    def __init__(self, work: Path, record: bool):
        cfg = work / "engine.toml"
        cfg.write_text(ANY)
        args = [sys.executable, "-m", "engine", "serve", str(DEMO), "--config", str(cfg), "--clock", "sim"]
        if record:
            args += ["--record", str(work / f"socket-log-{time.monotonic_ns()}")]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.push = zmq.Context.instance().socket(zmq.PUSH)
        self.push.setsockopt(zmq.LINGER, 0)
        ep = json.loads(self.proc.stdout.readline())["endpoints"]
        self.push.connect(ep["ingest"])
        self.client = OperatorClient(ep["operators"], timeout_s=60)
        self.push.send(encode(Clock(T0)))  # start the engine's clock, so readings are checked against it
        while self.client.request("status")["tick"]["count"] < 1:
            time.sleep(0.01)
        self.taken = 0

    def rate(self, frames: list[bytes], readings: int) -> float:
        """Messages/s the engine takes over loopback TCP: from the first send until the operator
        socket reports every reading accepted."""
        t0 = time.perf_counter()
        for f in frames:
            self.push.send(f)
        self.taken += readings
        while True:
            st = self.client.request("status")["ingest"]
            if st["accepted"] + sum(st["rejected"].values()) >= self.taken:
                break
            time.sleep(0.002)
        dt = time.perf_counter() - t0
        if st["rejected"] or st["accepted"] != self.taken:
            raise RuntimeError(f"benchmark readings were rejected: {st}")
        return len(frames) / dt

    def close(self) -> None:
        self.client.close()
        self.push.close(0)
        self.proc.terminate()
        self.proc.wait(30)


def bench_in_process(engine: Engine, frames: list[bytes], recorder: Recorder | None) -> float:
    bank = engine.bank
    t0 = time.perf_counter()
    if recorder is None:
        for f in frames:
            bank.absorb_frame(f, T0)
    else:
        rec = recorder.ingest
        for f in frames:
            rec(f, T0)
            bank.absorb_frame(f, T0)
        recorder.flush()
    return len(frames) / (time.perf_counter() - t0)


def bench_writer(frames: list[bytes], work: Path) -> dict:
    rec = Recorder(work / f"writer-{time.monotonic_ns()}", {}, segment_bytes=1 << 30)
    t0 = time.perf_counter()
    ingest = rec.ingest
    for f in frames:
        ingest(f, T0)
    rec.flush()
    dt = time.perf_counter() - t0
    nbytes = rec.bytes_written
    rec.close()
    # the limit: the same number of bytes, written in 1 MiB blocks with nothing else to do
    block = os.urandom(1 << 20)
    path = work / f"raw-{time.monotonic_ns()}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    t1 = time.perf_counter()
    left = nbytes
    while left > 0:
        left -= os.write(fd, block[:min(left, len(block))])
    raw_dt = time.perf_counter() - t1
    os.close(fd)
    path.unlink()
    return {"records_per_s": len(frames) / dt, "mb_per_s": nbytes / dt / 1e6, "raw_mb_per_s": nbytes / raw_dt / 1e6,
            "bytes": nbytes, "log": str(rec.dir)}


def bench_read(log: Path) -> float:
    t0 = time.perf_counter()
    n = sum(1 for _ in LogReader(log))
    return n / (time.perf_counter() - t0)


def lockstep_log(net, loops: list[str], work: Path, ticks: int) -> Path:
    """A recording of a real engine process driven in lockstep with an adapter per signal."""
    cfg = work / "engine.toml"
    cfg.write_text(ANY)
    log = work / f"lockstep-{time.monotonic_ns()}"
    proc = subprocess.Popen([sys.executable, "-m", "engine", "serve", str(DEMO), "--config", str(cfg), "--clock", "sim",
                             "--record", str(log)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    ctx = zmq.Context.instance()
    push = ctx.socket(zmq.PUSH)
    socks = []
    try:
        ep = json.loads(proc.stdout.readline())["endpoints"]
        push.connect(ep["ingest"])
        for t, tls in enumerate(net.tls_ids):
            d = ctx.socket(zmq.DEALER)
            d.connect(ep["adapters"])
            d.send(P.encoder.encode(P.Hello(junction=tls, n_links=net.tls_n_links(t))))
            d.poll(30_000)
            d.recv()
            socks.append(d)
        rng = np.random.default_rng(1)
        for k in range(1, ticks + 1):
            ts = T0 + k * 10**9
            for x in loops:  # one message per reading, as many field devices send them
                push.send(encode(LoopReading(x, ts, 1.0, int(rng.integers(0, 2)), float(rng.random() * 0.5))))
            push.send(encode(Clock(ts)))
            for d in socks:
                d.poll(30_000)
                d.recv()
    finally:
        push.close(0)
        for d in socks:
            d.close(0)
        proc.terminate()
        proc.wait(30)
    return log


def bench_replay(log: Path) -> dict:
    out = subprocess.run([sys.executable, "-m", "engine", "replay", str(log), "-q", "--json", str(log / "replay.json")],
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"replay failed: {out.stdout}{out.stderr}")
    return json.loads((log / "replay.json").read_text())


def main(argv: list[str] | None = None) -> int:
    p = parser("record", __doc__)
    p.add_argument("--messages", type=int, default=200_000,
                   help="single-reading messages per measurement (default %(default)s; batches of 100: 1/20 of it)")
    p.add_argument("--ticks", type=int, default=200,
                   help="ticks of the lockstep recording replayed (default %(default)s)")
    p.add_argument("--repeat", type=int, default=3,
                   help="measurements of each figure, alternating with and without recording; the best "
                        "counts (default %(default)s)")
    p.add_argument("--dir", help="where logs are written (default: a temporary directory, removed after)")
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args(argv)
    net = compile_network(DEMO)
    loops = [s.id for s in default_layout(net) if s.kind == "loop"]
    out: dict = {"network": DEMO.name, "messages": args.messages}
    with tempfile.TemporaryDirectory(prefix="te-bench-record-", dir=args.dir) as tmp:
        work = Path(tmp)
        for label, batch in (("single", 1), ("batch100", 100)):
            n = args.messages if batch == 1 else max(1, args.messages // 20)
            fresh = functools.partial(make_frames, loops, n, batch)  # a reading is taken once
            frames = fresh()
            engine = Engine(net, EngineConfig())
            engine.warm_up()
            bench_in_process(engine, fresh()[: min(n, 1000)], None)  # warm the code paths
            rec = Recorder(work / f"inproc-{label}", {}, segment_bytes=1 << 30)
            plain = recorded = sock_plain = sock_rec = 0.0
            for _ in range(args.repeat):
                plain = max(plain, bench_in_process(engine, fresh(), None))
                recorded = max(recorded, bench_in_process(engine, fresh(), rec))
            rec.close()
            engines = EngineProcess(work, record=False), EngineProcess(work, record=True)
            try:
                for _ in range(args.repeat):
                    sock_plain = max(sock_plain, engines[0].rate(fresh(), n * batch))
                    sock_rec = max(sock_rec, engines[1].rate(fresh(), n * batch))
            finally:
                for e in engines:
                    e.close()
            w = bench_writer(frames, work)
            read = bench_read(Path(w["log"]))
            out[label] = {
                "readings_per_message": batch,
                "bytes_per_message": round(float(np.mean([len(f) for f in frames])), 1),
                "socket_msgs_per_s": sock_plain, "socket_recorded_msgs_per_s": sock_rec,
                "socket_ratio": sock_rec / sock_plain,
                "inproc_msgs_per_s": plain, "inproc_recorded_msgs_per_s": recorded, "inproc_ratio": recorded / plain,
                "writer_records_per_s": w["records_per_s"], "writer_mb_per_s": w["mb_per_s"],
                "raw_write_mb_per_s": w["raw_mb_per_s"], "writer_ratio": w["mb_per_s"] / w["raw_mb_per_s"],
                "read_records_per_s": read,
            }
            r = out[label]
            print(f"{label} ({batch} reading(s)/message, {r['bytes_per_message']:.0f} B):")
            print(f"  engine process over TCP  {sock_plain:12,.0f} msg/s   recording {sock_rec:12,.0f} msg/s   "
                  f"ratio {r['socket_ratio']:.2f}")
            print(f"  ingest in process        {plain:12,.0f} msg/s   recording {recorded:12,.0f} msg/s   "
                  f"ratio {r['inproc_ratio']:.2f}")
            print(f"  recorder alone           {w['records_per_s']:12,.0f} rec/s   {w['mb_per_s']:8.0f} MB/s   "
                  f"raw os.write {w['raw_mb_per_s']:8.0f} MB/s   ratio {r['writer_ratio']:.2f}")
            print(f"  reading the log back     {read:12,.0f} rec/s", flush=True)
        log = lockstep_log(net, loops, work, args.ticks)
        rp = bench_replay(log)
        out["replay"] = {k: rp[k] for k in ("ticks", "records", "commands_compared", "mismatches", "records_per_s",
                                            "replay_s")}
        print(f"replay of a lockstep recording: {rp['records']:,} records, {rp['ticks']} ticks, "
              f"{rp['commands_compared']:,} commands compared, {rp['mismatches']} mismatches, "
              f"{rp['records_per_s']:,} records/s")
    if args.json:
        write_json(args.json, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
