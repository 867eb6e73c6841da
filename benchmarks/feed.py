"""The public feed's cost and its late joiners: ``python -m benchmarks.feed [--json FILE]``.

1. Publish cost: an engine on a synthetic ``--grid N`` x N network (N=50: 10,200 edges, 2,500
   signals) publishes ``--ticks`` ticks (``conditions`` and one ``spat.<signal>`` per signal)
   through :class:`engine.feed.FeedPublisher` to a subscriber in another process. Reported: the
   publish time per tick on the engine's thread (build the bodies, number, encode once, send,
   keep the state), bytes per tick, and messages/s as the subscriber received them.
2. The limit, measured in the same run: the same frames, already encoded, sent on a bare PUB
   socket to the same kind of subscriber (raw PUB/SUB). ``ratio`` = feed msg/s / raw msg/s.
3. Late joiners: an engine on a smaller grid ticks as fast as it can while ``--joins``
   subscribers join one after another: a plain SUB (loses what was published before its
   subscription reached the engine: the slow joiner) and a :class:`engine.feed.FeedClient`
   (snapshot, then updates). ``lost`` counts messages published after the joiner connected that
   it never got (plain SUB), or topics whose final state differs from the engine's plus seq gaps
   (clone client): the clone pattern should make it 0.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import threading
import time
from pathlib import Path

import msgspec
import zmq

from benchmarks import write_json

T0 = 1_767_225_600 * 10**9
ANY_ENDPOINTS = dict(ingest="tcp://127.0.0.1:*", adapters="tcp://127.0.0.1:*", feed="tcp://127.0.0.1:*",
                     operators="tcp://127.0.0.1:*", snapshot="tcp://127.0.0.1:*")


def _subscriber(endpoint: str, expect: int, out: mp.Queue, timeout_s: float) -> None:
    """(child process) receive ``expect`` messages; report count, bytes and first-to-last time."""
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)
    out.put("ready")
    n = nbytes = 0
    t_first = t_last = None
    while n < expect:
        if not sub.poll(int(timeout_s * 1000)):
            break
        frames = sub.recv_multipart()
        t_last = time.perf_counter()
        if t_first is None:
            t_first = t_last
        n += 1
        nbytes += len(frames[-1])
    out.put({"received": n, "bytes": nbytes, "elapsed_s": (t_last - t_first) if n > 1 else 0.0})
    sub.close(0)
    ctx.term()


def _with_subscriber(endpoint: str, expect: int, send) -> dict:
    """Run ``send()`` while a subscriber in another process counts ``expect`` messages."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_subscriber, args=(endpoint, expect, q, 10.0))
    proc.start()
    assert q.get(timeout=60) == "ready"
    time.sleep(0.5)  # let the subscription reach the publisher
    sent = send()
    result = q.get(timeout=600)
    proc.join(30)
    result.update(sent)
    result["msg_per_s"] = (result["received"] - 1) / result["elapsed_s"] if result["elapsed_s"] else 0.0
    return result


def _engine(grid: int, send_hwm: int):
    from engine.config import EngineConfig, Endpoints, FeedParams, HealthParams
    from engine.core import Engine
    from network import compile_network
    from sim.synthetic import grid_net

    net = compile_network(grid_net(grid))
    cfg = EngineConfig(clock="sim", endpoints=Endpoints(**ANY_ENDPOINTS), feed=FeedParams(send_hwm=send_hwm),
                       health=HealthParams(missing_s=5.0))
    engine = Engine(net, cfg)
    engine.warm_up()
    return net, engine


def publish_cost(grid: int, ticks: int) -> dict:
    from engine.server import Server

    net, engine = _engine(grid, send_hwm=0)  # unbounded here: the run measures speed, not drops
    server = Server(engine)
    chars = engine.tick(T0).decode()
    per_tick = 1 + net.n_tls
    try:
        # frames of one tick, captured as the feed encodes them, for the raw run
        frames: list[tuple[bytes, bytes]] = []
        real_send = server.feed.send

        def capture(data, flags=0, copy=True, **kw):
            frames.append(data)
            return real_send(data, flags, copy=copy, **kw)

        server.publisher.pub = type("Capture", (), {"send": staticmethod(capture)})()
        server._publish(chars, T0)
        server.publisher.pub = server.feed
        pairs = list(zip(frames[0::2], frames[1::2]))
        tick_bytes = sum(len(f) for _, f in pairs)

        def feed_run() -> dict:
            times = []
            for k in range(ticks):
                t0 = time.perf_counter()
                server._publish(chars, T0 + k)
                times.append(time.perf_counter() - t0)
            return {"publish_ms_per_tick_median": statistics.median(times) * 1e3,
                    "publish_ms_per_tick_max": max(times) * 1e3,
                    "publish_msg_per_s": per_tick / statistics.median(times)}

        feed = _with_subscriber(server.endpoints["feed"], ticks * per_tick, feed_run)

        ctx = zmq.Context.instance()
        pub = ctx.socket(zmq.PUB)
        pub.setsockopt(zmq.SNDHWM, 0)
        pub.setsockopt(zmq.LINGER, 0)
        pub.bind("tcp://127.0.0.1:*")

        def raw_run() -> dict:
            times = []
            for _ in range(ticks):
                t0 = time.perf_counter()
                for topic, frame in pairs:
                    pub.send(topic, zmq.SNDMORE)
                    pub.send(frame, copy=len(frame) < 65536)
                times.append(time.perf_counter() - t0)
            return {"publish_ms_per_tick_median": statistics.median(times) * 1e3,
                    "publish_msg_per_s": per_tick / statistics.median(times)}

        raw = _with_subscriber(pub.getsockopt_string(zmq.LAST_ENDPOINT), ticks * per_tick, raw_run)
        pub.close(0)
    finally:
        server.close()
    return {"grid": grid, "edges": net.n_edges, "signals": net.n_tls, "ticks": ticks, "messages_per_tick": per_tick,
            "bytes_per_tick": tick_bytes, "conditions_bytes": len(pairs[0][1]), "feed": feed, "raw": raw,
            "ratio_msg_per_s": feed["msg_per_s"] / raw["msg_per_s"] if raw["msg_per_s"] else None,
            "ratio_publish_cost": (feed["publish_ms_per_tick_median"] / raw["publish_ms_per_tick_median"])}


def late_joiners(grid: int, joins: int, period_s: float) -> dict:
    import subprocess
    import sys
    import tempfile

    from detectors import Clock, encode
    from engine.feed import FeedClient, state_key
    from sim.synthetic import grid_net

    net_path = grid_net(grid)
    tmp = Path(tempfile.mkdtemp(prefix="feed-bench-"))
    cfg = tmp / "engine.toml"
    cfg.write_text('clock = "sim"\n[endpoints]\n' + "".join(f'{k} = "{v}"\n' for k, v in ANY_ENDPOINTS.items())
                   + "[health]\nmissing_s = 5.0\n")  # every detector goes missing: alarms in the state
    proc = subprocess.Popen([sys.executable, "-m", "engine", "serve", str(net_path), "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    ep = json.loads(proc.stdout.readline())["endpoints"]
    ctx = zmq.Context.instance()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(ep["ingest"])
    truth = FeedClient(ep["feed"], ep["snapshot"], join_wait_s=0.0)  # there from the start
    truth.start()
    stop, running = threading.Event(), threading.Event()
    running.set()

    def tick():
        k = 0
        while not stop.is_set():
            running.wait(0.1)
            if running.is_set():
                k += 1
                push.send(encode(Clock(T0 + k * 10**9)))
            time.sleep(period_s)

    def quiet() -> int:
        """Pause the ticks until the engine has published everything; returns its last seq."""
        running.clear()
        while truth.poll(300):
            pass
        return truth.seq

    decode = msgspec.msgpack.decode
    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    plain_lost, plain_missing, clone_lost, clone_gaps, rates = [], [], [], [], []
    try:
        for _ in range(joins):
            t0, s0 = time.monotonic(), truth.seq
            while time.monotonic() - t0 < 1.0:
                truth.poll(5)
            rates.append((truth.seq - s0) / (time.monotonic() - t0))
            sub = ctx.socket(zmq.SUB)
            sub.setsockopt(zmq.RCVHWM, 0)
            sub.setsockopt(zmq.SUBSCRIBE, b"")
            truth.poll(0)
            joined_at = truth.seq  # (a lower bound of the engine's seq when the SUB connects)
            sub.connect(ep["feed"])
            client = FeedClient(ep["feed"], ep["snapshot"], join_wait_s=0.0)
            client.start()
            got: set[int] = set()
            plain_state: dict[str, dict] = {}

            def drain():
                while True:
                    try:
                        topic, body = sub.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        return
                    msg = decode(body)
                    got.add(msg["seq"])
                    plain_state[state_key(topic.decode(), msg)] = msg

            t_end = time.monotonic() + 1.0
            while time.monotonic() < t_end:
                client.poll(5)
                truth.poll(0)
                drain()
            last = quiet()
            while client.seq < last:
                client.poll(20)
            drain()
            plain_lost.append(len(set(range(joined_at + 1, last + 1)) - got))
            plain_missing.append(sum(1 for k, v in truth.state.items() if plain_state.get(k) != v))
            clone_lost.append(sum(1 for k, v in truth.state.items() if client.state.get(k) != v)
                              + len(set(client.state) - set(truth.state)) + client.gaps)
            clone_gaps.append(client.gaps)
            sub.close(0)
            client.close()
            running.set()
    finally:
        stop.set()
        running.set()
        ticker.join(5)
        truth.close()
        push.close(0)
        proc.terminate()
        proc.wait(30)
    return {"grid": grid, "joins": joins, "tick_period_s": period_s,
            "feed_msg_per_s_while_joining": round(statistics.median(rates)), "truth_gaps": truth.gaps,
            "plain_sub_lost_messages": plain_lost, "plain_sub_wrong_or_missing_state": plain_missing,
            "clone_lost": clone_lost, "clone_gaps": clone_gaps}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--grid", type=int, default=50, help="publish cost on an N x N grid (default %(default)s)")
    p.add_argument("--ticks", type=int, default=20, help="ticks published for the cost (default %(default)s)")
    p.add_argument("--join-grid", type=int, default=8, help="late joiners on an N x N grid (default %(default)s)")
    p.add_argument("--joins", type=int, default=5, help="late joiners of each kind (default %(default)s)")
    p.add_argument("--period", type=float, default=0.002, help="seconds between ticks while joining (default %(default)s)")
    p.add_argument("--json", help="write the figures as JSON here")
    args = p.parse_args(argv)
    cost = publish_cost(args.grid, args.ticks)
    f, r = cost["feed"], cost["raw"]
    print(f"publish cost, {cost['grid']}x{cost['grid']} grid: {cost['edges']} edges, {cost['signals']} signals, "
          f"{cost['messages_per_tick']} messages and {cost['bytes_per_tick'] / 1e6:.2f} MB per tick "
          f"(conditions {cost['conditions_bytes'] / 1e6:.2f} MB)")
    print(f"  feed  {f['publish_ms_per_tick_median']:7.2f} ms/tick on the engine thread (max "
          f"{f['publish_ms_per_tick_max']:.2f}), received {f['received']}/{cost['ticks'] * cost['messages_per_tick']} "
          f"at {f['msg_per_s']:,.0f} msg/s")
    print(f"  raw   {r['publish_ms_per_tick_median']:7.2f} ms/tick (same frames, already encoded, bare PUB), received "
          f"{r['received']} at {r['msg_per_s']:,.0f} msg/s")
    print(f"  ratio feed/raw: {cost['ratio_msg_per_s']:.2f} of the raw msg/s; publish cost x{cost['ratio_publish_cost']:.1f}")
    late = late_joiners(args.join_grid, args.joins, args.period)
    print(f"late joiners, {late['grid']}x{late['grid']} grid, engine in its own process publishing "
          f"{late['feed_msg_per_s_while_joining']:,} msg/s, {late['joins']} joins (early subscriber's gaps: "
          f"{late['truth_gaps']}):")
    print(f"  plain SUB    lost {late['plain_sub_lost_messages']} messages published after it connected; "
          f"state keys missing or wrong at the end: {late['plain_sub_wrong_or_missing_state']}")
    print(f"  FeedClient   state keys missing or wrong at the end, plus gaps: {late['clone_lost']} "
          f"(gaps {late['clone_gaps']})")
    result = {"publish": cost, "late_joiners": late}
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
