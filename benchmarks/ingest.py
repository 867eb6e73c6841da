"""Ingest against the raw ZeroMQ ceiling: ``python -m benchmarks.ingest [--json FILE]``.

Four measurements on one synthetic region (a netgenerate grid with an inventory of
``--detectors`` loops), each sender a separate process pushing over TCP on loopback:

1. single-reading messages: the raw pyzmq PUSH/PULL ceiling (a receiver that only calls
   ``recv``) and the engine's ingest (its serve loop: receive, parse, validate, bin) for the same
   frames, and their ratio. Each receiver starts with the sender's frames already queued, so
   the figures are of the receiving side, not of how fast one Python process can send;
2. bulk messages (a roster, then ``loops`` frames of numpy columns): raw and engine readings/s;
3. sustained: every detector reports once a second (in bulk, one frame per gateway) to a live
   engine ticking on the wall clock; tick duration and lateness, readings accepted;
4. burst: single-reading messages as fast as one sender process can push them (up to ten times
   the 1 Hz rate), beyond what the engine takes: memory growth, tick lateness, what the sender's
   queue refused, and that every reading that got through was counted.

With ``--json FILE`` it writes ``raw_msgs_per_s``, ``ingest_msgs_per_s``, ``ratio_single``,
``batched_readings_per_s`` and the rest of the figures.
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import threading
import time
from pathlib import Path

import numpy as np
import zmq

from benchmarks import parser, write_json
from detectors.messages import LoopReading, Roster, encode, loop_bulk
from engine.config import Endpoints, EngineConfig, IngestParams
from engine.core import Engine
from engine.server import Server
from network import compile_network, default_layout
from network.layout import DetectorSpec

ANY = Endpoints(ingest="tcp://127.0.0.1:*", adapters="tcp://127.0.0.1:*", feed="tcp://127.0.0.1:*",
                operators="tcp://127.0.0.1:*", snapshot="tcp://127.0.0.1:*")
MS = 1_000_000


def inventory(net, n_detectors: int) -> list[DetectorSpec]:
    """The default layout, topped up with mid-block counting loops to ``n_detectors`` loops."""
    specs = [s for s in default_layout(net) if s.kind == "loop"][:n_detectors]
    k = 0
    while len(specs) < n_detectors:
        lane = net.lane_ids[k % net.n_lanes]
        specs.append(DetectorSpec(id=f"X:{lane}:{k // net.n_lanes}", kind="loop", lanes=(lane,), role="upstream",
                                  pos_m=float(net.lane_length_m[k % net.n_lanes]) / 2))
        k += 1
    return specs


# -- senders (separate processes) ---------------------------------------------------------------

def single_frames(ids: list[str], n: int, ts0: int) -> list[bytes]:
    """``n`` one-reading frames cycling over ``ids``; each round a millisecond later."""
    m = len(ids)
    return [encode(LoopReading(ids[k % m], ts0 + (k // m) * MS, 1.0, int(k % 3 == 0), 0.1, None, ts0 // MS + k // m))
            for k in range(n)]


def bulk_frames(ids: list[str], per_frame: int, n_frames: int, ts0: int, seed: int = 0) -> list[bytes]:
    """Rosters of ``per_frame`` loops (one per gateway), then ``n_frames`` bulk frames over them."""
    rng = np.random.default_rng(seed)
    groups = [ids[i:i + per_frame] for i in range(0, len(ids), per_frame)]
    out = [encode(Roster(f"gw{g}", 1, grp)) for g, grp in enumerate(groups)]
    for j in range(n_frames):
        g = j % len(groups)
        size = len(groups[g])
        out.append(encode(loop_bulk(f"gw{g}", 1, ts0 // MS + j // len(groups), ts0 + (j // len(groups)) * MS, 1.0,
                                    rng.integers(0, 2, size), rng.random(size) * 0.3)))
    return out


def _sender(endpoint: str, kind: str, ids: list[str], n: int, per_frame: int, ts0: int, ready, go) -> None:
    frames = single_frames(ids, n, ts0) if kind == "single" else bulk_frames(ids, per_frame, n, ts0)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.connect(endpoint)
    ready.set()
    go.wait()
    send = sock.send
    for f in frames:
        send(f)
    sock.close(linger=-1)
    ctx.term()


def _paced_sender(endpoint: str, ids: list[str], per_frame: int, seconds: float, burst_s: float,
                  burst_factor: int, out) -> None:
    """Every second a bulk frame per gateway for every loop; then a burst of single frames."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.SNDTIMEO, 0)  # a field gateway does not block: it drops and counts
    sock.connect(endpoint)
    groups = [ids[i:i + per_frame] for i in range(0, len(ids), per_frame)]
    for g, grp in enumerate(groups):
        sock.send(encode(Roster(f"gw{g}", 1, grp)))
    rng = np.random.default_rng(1)
    sent = dropped = 0
    t_start = time.time()
    for s in range(int(seconds)):
        ts = time.time_ns()
        for g, grp in enumerate(groups):
            frame = encode(loop_bulk(f"gw{g}", 1, s, ts, 1.0, rng.integers(0, 2, len(grp)), rng.random(len(grp)) * 0.3))
            try:
                sock.send(frame)
                sent += len(grp)
            except zmq.Again:
                dropped += len(grp)
        time.sleep(max(0.0, t_start + s + 1 - time.time()))
    # the burst's frames are made first, so the sender does nothing but push
    n_burst = int(min(burst_factor * len(ids) * burst_s, 2_000_000))
    burst = single_frames(ids, n_burst, time.time_ns())
    burst_sent = burst_dropped = 0
    send = sock.send
    t0 = time.time()
    for frame in burst:  # as fast as this process can push: the offered rate is measured, not set
        try:
            send(frame, zmq.NOBLOCK)
            burst_sent += 1
        except zmq.Again:
            burst_dropped += 1
        if (burst_sent + burst_dropped) % 4096 == 0 and time.time() - t0 >= burst_s:
            break
    k = burst_sent + burst_dropped
    out.put({"sent": sent, "dropped": dropped, "burst_offered": k, "burst_sent": burst_sent,
             "burst_dropped_by_sender": burst_dropped, "burst_offered_per_s": k / max(time.time() - t0, 1e-9),
             "elapsed_s": time.time() - t_start})
    sock.close(linger=2000)
    ctx.term()


def _start_sender(ctx_mp, endpoint, kind, ids, n, per_frame, ts0):
    ready, go = ctx_mp.Event(), ctx_mp.Event()
    p = ctx_mp.Process(target=_sender, args=(endpoint, kind, ids, n, per_frame, ts0, ready, go), daemon=True)
    p.start()
    if not ready.wait(300):
        raise RuntimeError("sender did not get ready")
    return p, go


# -- receivers ----------------------------------------------------------------------------------

def preload(ctx_mp, endpoint, kind, ids, n, per_frame) -> int:
    """Have a sender push all its frames into the receiver's queue and finish; returns how many.

    Timing then starts with the queue full, so it measures the receiving side alone and not
    how fast one Python process can send."""
    p, go = _start_sender(ctx_mp, endpoint, kind, ids, n, per_frame, time.time_ns())
    go.set()
    p.join()
    time.sleep(0.5)  # the receiver's I/O thread moves the last bytes from TCP into its queue
    return n if kind == "single" else n + -(-len(ids) // per_frame)


def raw_rate(ctx_mp, kind, ids, n, per_frame) -> float:
    """Messages per second a PULL socket takes from a full queue when it does nothing else."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    sock.setsockopt(zmq.RCVHWM, 0)  # no limit: the whole run fits
    sock.bind("tcp://127.0.0.1:*")
    total = preload(ctx_mp, sock.getsockopt_string(zmq.LAST_ENDPOINT), kind, ids, n, per_frame)
    recv = sock.recv
    t0 = time.perf_counter()
    for _ in range(total):
        recv()
    dt = time.perf_counter() - t0
    sock.close(0)
    ctx.term()
    return total / dt


def engine_rate(ctx_mp, server: Server, kind, ids, n, per_frame) -> float:
    """Messages per second a live engine (its serve loop running in a thread) takes from a full queue."""
    bank = server.engine.bank
    base = bank.accepted + sum(bank.rejected.values())
    readings = n if kind == "single" else n * per_frame
    total = preload(ctx_mp, server.endpoints["ingest"], kind, ids, n, per_frame)
    server.stopping.clear()
    th = threading.Thread(target=server.serve_forever, daemon=True)
    t0 = time.perf_counter()
    th.start()
    try:
        while bank.accepted + sum(bank.rejected.values()) - base < readings:
            time.sleep(0.0005)
            if time.perf_counter() - t0 > 300:
                raise RuntimeError("the engine did not take every message")
        dt = time.perf_counter() - t0
    finally:
        server.stopping.set()
        th.join(10)
    if bank.rejected:
        raise RuntimeError(f"benchmark readings were rejected: {dict(bank.rejected)}")
    return total / dt


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def sustained(ctx_mp, net, specs, per_frame: int, seconds: float, burst_s: float, burst_factor: int) -> dict:
    """A live engine on the wall clock with every loop reporting each second, then a burst."""
    engine = Engine(net, EngineConfig(endpoints=ANY), detectors=specs)
    engine.warm_up()
    server = Server(engine)
    late_ms, took_ms, rss = [], [], []
    run_tick = server.run_tick

    def timed_tick(now_ns: int) -> None:
        t0 = time.time_ns()
        late_ms.append((t0 - now_ns) / MS)
        run_tick(now_ns)
        took_ms.append((time.time_ns() - t0) / MS)
        rss.append(rss_mb())

    server.run_tick = timed_tick
    th = threading.Thread(target=server.serve_forever, daemon=True)
    th.start()
    out = ctx_mp.Queue()
    ids = [s.id for s in specs]
    p = ctx_mp.Process(target=_paced_sender, args=(server.endpoints["ingest"], ids, per_frame, seconds, burst_s,
                                                   burst_factor, out), daemon=True)
    p.start()
    p.join(seconds + burst_s + 120)
    sender = out.get(timeout=10)
    n_steady = len(took_ms)
    time.sleep(2.0)  # let the engine catch up with what the burst left queued
    server.stopping.set()
    th.join(10)
    server.close()
    bank = engine.bank
    steady = slice(1, max(2, int(seconds) - 1))  # the first tick has no readings yet
    return {
        "sustained_detectors": len(ids), "sustained_seconds": int(seconds),
        "sustained_readings_sent": sender["sent"], "sustained_readings_dropped_by_sender": sender["dropped"],
        "tick_p99_ms": float(np.percentile(took_ms[steady], 99)), "tick_max_ms": float(np.max(took_ms[steady])),
        "tick_late_p99_ms": float(np.percentile(late_ms[steady], 99)),
        "tick_period_ms": 1000.0, "ticks": len(took_ms),
        "burst_factor": burst_factor, "burst_s": burst_s,
        "burst_offered_msgs_per_s": sender["burst_offered_per_s"],
        "burst_offered_factor": sender["burst_offered_per_s"] / len(ids),  # against every loop at 1 Hz
        "burst_dropped_by_sender": sender["burst_dropped_by_sender"],
        "burst_tick_late_max_ms": float(np.max(late_ms[int(seconds):n_steady] or [0.0])),
        "rss_before_burst_mb": rss[int(seconds) - 1] if len(rss) >= seconds else rss[-1],
        "rss_max_mb": float(np.max(rss)),
        "accepted": bank.accepted, "rejected": dict(bank.rejected),
        "lost": sender["sent"] + sender["burst_sent"] - bank.accepted - sum(bank.rejected.values()),
    }


def main(argv: list[str] | None = None) -> int:
    p = parser("ingest", __doc__)
    p.add_argument("--grid", type=int, default=30, help="junctions per side of the synthetic grid (default %(default)s)")
    p.add_argument("--detectors", type=int, default=100_000, help="loops in the inventory (default %(default)s)")
    p.add_argument("--messages", type=int, default=1_000_000, help="single-reading messages sent (default %(default)s)")
    p.add_argument("--bulk-size", type=int, default=10_000, help="readings per bulk message (default %(default)s)")
    p.add_argument("--bulk-messages", type=int, default=500, help="bulk messages sent (default %(default)s)")
    p.add_argument("--seconds", type=float, default=20, help="length of the sustained run (default %(default)s)")
    p.add_argument("--burst-seconds", type=float, default=5, help="length of the 10x burst (default %(default)s)")
    p.add_argument("--repeat", type=int, default=3, help="take the best of this many runs (default %(default)s)")
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args(argv)

    from sim.synthetic import grid_net

    ctx_mp = mp.get_context("spawn")
    net = compile_network(grid_net(args.grid))
    specs = inventory(net, args.detectors)
    ids = [s.id for s in specs]
    print(f"region: {net.n_tls} signals, {net.n_lanes} lanes, {len(ids):,} loops", flush=True)
    res: dict = {"signals": net.n_tls, "lanes": net.n_lanes, "detectors": len(ids)}

    engine = Engine(net, EngineConfig(endpoints=ANY, ingest=IngestParams(receive_hwm=0)), detectors=specs)
    engine.warm_up()
    server = Server(engine)
    size = min(args.bulk_size, len(ids))
    live = functools.partial(engine_rate, ctx_mp, server)

    try:
        # best of --repeat, raw and engine alternating, so both see the same machine
        raw = ours = raw_b = ours_b = 0.0
        for _ in range(args.repeat):
            raw = max(raw, raw_rate(ctx_mp, "single", ids, args.messages, 0))
            ours = max(ours, live("single", ids, args.messages, 0))
            raw_b = max(raw_b, raw_rate(ctx_mp, "bulk", ids, args.bulk_messages, size))
            ours_b = max(ours_b, live("bulk", ids, args.bulk_messages, size))
    finally:
        server.close()
    res |= {"message_bytes": len(single_frames(ids[:1], 1, time.time_ns())[0]), "raw_msgs_per_s": raw,
            "ingest_msgs_per_s": ours, "ratio_single": ours / raw}
    print(f"single readings ({res['message_bytes']} B): raw pyzmq {raw:,.0f} msg/s, engine {ours:,.0f} msg/s, "
          f"ratio {ours / raw:.2f} (target >= 0.5)", flush=True)
    res |= {"bulk_size": size, "raw_bulk_msgs_per_s": raw_b, "raw_bulk_readings_per_s": raw_b * size,
            "batched_readings_per_s": ours_b * size, "ratio_batched": ours_b / raw_b}
    print(f"bulk readings ({size:,}/msg): raw pyzmq {raw_b * size:,.0f} readings/s, engine "
          f"{ours_b * size:,.0f} readings/s, ratio {ours_b / raw_b:.2f} (target >= 10,000,000/s)", flush=True)

    s = sustained(ctx_mp, net, specs, size, args.seconds, args.burst_seconds, 10)
    res |= s
    print(f"sustained: {s['sustained_detectors']:,} loops at 1 Hz for {s['sustained_seconds']} s: tick p99 "
          f"{s['tick_p99_ms']:.1f} ms, late p99 {s['tick_late_p99_ms']:.1f} ms (period 1000 ms), "
          f"{s['sustained_readings_dropped_by_sender']} dropped by the sender", flush=True)
    print(f"burst: {s['burst_offered_msgs_per_s']:,.0f} single msgs/s offered for {s['burst_s']:.0f} s "
          f"({s['burst_offered_factor']:.1f}x the 1 Hz rate; asked {s['burst_factor']}x): "
          f"{s['burst_dropped_by_sender']:,} refused at the sender's queue, tick late max "
          f"{s['burst_tick_late_max_ms']:.0f} ms, RSS {s['rss_before_burst_mb']:.0f} -> max {s['rss_max_mb']:.0f} MB, "
          f"accepted {s['accepted']:,}, rejected {s['rejected']}, lost {s['lost']}", flush=True)
    if args.json:
        write_json(args.json, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
