"""The public feed over real sockets: the clone pattern (snapshot + numbered updates), gap
detection, ``traffic-engine feed`` and the HTTP gateway (GeoJSON, SPaT, server-sent events)."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import msgspec
import pytest
import zmq

from detectors import Clock, encode
from engine.config import EngineConfig, HealthParams
from engine.core import Engine
from engine.feed import FeedClient, FeedError, FeedPublisher, state_key
from engine.gateway import Gateway, NetworkShapes
from network import compile_network
from tests.serving import ANY, serving

T0 = 1_767_225_600 * 10**9
REPO = Path(__file__).resolve().parents[1]
DEMO_NET = REPO / "sim" / "scenarios" / "demo" / "demo.net.xml"


@pytest.fixture(scope="module")
def demo_net():
    return compile_network(DEMO_NET)


@contextmanager
def ticking(server, period_s: float = 0.004):
    """Push a ``Clock`` watermark (one simulated second later) every ``period_s`` in a thread."""
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(server.endpoints["ingest"])
    stop = threading.Event()
    sent = [0]

    def run():
        while not stop.is_set():
            sent[0] += 1
            push.send(encode(Clock(T0 + sent[0] * 10**9)))
            time.sleep(period_s)

    th = threading.Thread(target=run, daemon=True)
    th.start()
    try:
        yield sent
    finally:
        stop.set()
        th.join(5)
        push.close(0)


def settle(server, *clients, timeout_s=10.0, sent=None):
    """Poll the clients until each has applied everything the engine published (after the
    engine has gone quiet: watermarks still queued on its ingest make more ticks; with ``sent``,
    what ``ticking`` yielded, first until the engine's clock has reached the last of them, so no
    tick can follow on a loaded machine)."""
    deadline = time.monotonic() + timeout_s
    while sent is not None and server.clock.now_ns() < T0 + sent[0] * 10**9 and time.monotonic() < deadline:
        for c in clients:
            c.poll(10)
    last = -1
    while server.feed_seq != last and time.monotonic() < deadline:
        last = server.feed_seq
        for c in clients:
            c.poll(300)
    while any(c.seq < server.feed_seq for c in clients) and time.monotonic() < deadline:
        for c in clients:
            c.poll(50)
    assert all(c.seq == server.feed_seq for c in clients), [c.seq for c in clients] + [server.feed_seq]


def test_late_joiner_gets_snapshot_then_consecutive_updates_and_the_same_state(demo_net):
    """A subscriber joining while the engine publishes (conditions, spat, and alarms from detectors
    that never report) gets a snapshot, then updates numbered exactly one after another, and ends
    in the same state as one that was there from the start; a prefix-filtered one too."""
    cfg = EngineConfig(clock="sim", endpoints=ANY, health=HealthParams(missing_s=3.0, clear_s=1.0))
    with serving(Engine(demo_net, cfg)) as server:
        ep = server.endpoints
        early = FeedClient(ep["feed"], ep["snapshot"], join_wait_s=0.0)
        first = early.start()
        assert [m.kind for m in first] == ["end"] and first[0].seq == 0  # nothing published yet
        with ticking(server) as sent:
            deadline = time.monotonic() + 10
            while server.feed_seq < 300 and time.monotonic() < deadline:
                early.poll(50)
            late = FeedClient(ep["feed"], ep["snapshot"])
            spat_only = FeedClient(ep["feed"], ep["snapshot"], topics=["spat.", "alarms"])
            got = late.start()
            got_spat = spat_only.start()
            mark = server.feed_seq
            while server.feed_seq < mark + 200 and time.monotonic() < deadline + 10:
                got += late.poll(20)
                got_spat += spat_only.poll(0)
                early.poll(0)
        settle(server, early, late, sent=sent)
        # (a filtered client's seq does not follow the engine's, so it cannot be settled by seq:
        # drain it, and again if the engine published meanwhile, a tick queued late on a loaded
        # machine, with the others settled to that)
        for _ in range(10):
            while spat_only.poll(50):
                pass
            if server.feed_seq == early.seq:
                break
            settle(server, early, late)
    kinds = [m.kind for m in got]
    end = kinds.index("end")
    assert kinds[:end] == ["snapshot"] * end and end >= 1 + demo_net.n_tls  # conditions + every signal
    snap = got[:end]
    assert {m.topic for m in snap} >= {"conditions", *(f"spat.{t}" for t in demo_net.tls_ids)}
    assert any(m.topic == "alarms" for m in snap), "active alarms belong to the snapshot"
    assert all(m.seq <= got[end].seq for m in snap)
    updates = [m.seq for m in got[end + 1:]]
    assert all(m.kind == "update" for m in got[end + 1:])
    assert updates[0] == got[end].seq + 1 and updates == list(range(updates[0], updates[0] + len(updates)))
    assert len(updates) >= 200
    assert late.gaps == early.gaps == 0 and late.snapshots == 1
    assert late.state == early.state
    assert sum(k.startswith("alarms/") for k in late.state) > 0
    # the filtered joiner: no gaps, the same state for its topics
    assert spat_only.gaps == 0 and spat_only.snapshots == 1
    want = {k: v for k, v in early.state.items() if k.startswith(("spat.", "alarms"))}
    assert spat_only.state == want and not any(m.topic == "conditions" for m in got_spat)


def _body(k: int, topic: int, size: int) -> dict:
    return {"ts_ns": k, "topic": topic, "pad": "x" * size}


def test_lost_messages_are_detected_and_a_new_snapshot_restores_the_state():
    """With tiny queues a subscriber that stops reading loses messages; the client sees the gap,
    takes a new snapshot and ends with exactly the publisher's state."""
    ctx = zmq.Context.instance()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, 1)
    pub.setsockopt(zmq.SNDBUF, 4096)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind("tcp://127.0.0.1:*")
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind("tcp://127.0.0.1:*")
    publisher = FeedPublisher(pub, router)
    feed_ep, snap_ep = (s.getsockopt_string(zmq.LAST_ENDPOINT) for s in (pub, router))
    stop = threading.Event()
    burst = threading.Event()
    go = threading.Event()
    pause, paused = threading.Event(), threading.Event()
    topics = [b"t.%d" % i for i in range(20)]

    def run():
        k = 0
        while not stop.is_set():
            publisher.serve_snapshots()
            if pause.is_set():
                paused.set()
                time.sleep(0.001)
            elif go.is_set() and not burst.is_set():
                for _ in range(3000):  # far more than the queues and socket buffers hold
                    k += 1
                    publisher.publish(topics[k % 20], _body(k, k % 20, 4000))
                burst.set()
            elif go.is_set():
                k += 1
                publisher.publish(topics[k % 20], _body(k, k % 20, 10))
                time.sleep(0.01)  # slow enough for the tiny queues once the client reads again
            else:
                time.sleep(0.001)

    th = threading.Thread(target=run, daemon=True)
    th.start()
    client = FeedClient(feed_ep, snap_ep, rcvhwm=1, join_wait_s=0.0)
    client.sub.setsockopt(zmq.RCVBUF, 4096)
    try:
        client.start()
        go.set()
        assert burst.wait(30)
        time.sleep(0.2)
        msgs = []
        deadline = time.monotonic() + 20
        while (client.gaps == 0 or client.seq < publisher.seq - 5) and time.monotonic() < deadline:
            msgs += client.poll(20)
        pause.set()
        assert paused.wait(5)
        while client.seq < publisher.seq and time.monotonic() < deadline:
            msgs += client.poll(20)
        assert client.gaps >= 1 and client.snapshots >= 2
        assert any(m.kind == "end" and m.body["reason"] == "gap" for m in msgs)
        assert client.seq == publisher.seq
        expected = {t.decode(): msgspec.msgpack.decode(f) for _, t, f in publisher._state.values()}
        assert client.state == expected
        updates = [m.seq for m in msgs if m.kind in ("update", "end")]
        assert updates == sorted(updates) and len(set(updates)) == len(updates)  # never doubled
    finally:
        stop.set()
        th.join(5)
        client.close()
        pub.close(0)
        router.close(0)


def test_snapshot_refuses_a_bad_request_and_keeps_serving():
    """A malformed snapshot request gets an error reply (counted), and the next good one is served."""
    ctx = zmq.Context.instance()
    pub, router = ctx.socket(zmq.PUB), ctx.socket(zmq.ROUTER)
    for s in (pub, router):
        s.setsockopt(zmq.LINGER, 0)
        s.bind("tcp://127.0.0.1:*")
    publisher = FeedPublisher(pub, router)
    publisher.publish(b"alarms", {"id": 1, "active": True, "kind": "x"})
    publisher.publish(b"alarms", {"id": 2, "active": True, "kind": "y"})
    publisher.publish(b"alarms", {"id": 1, "active": False, "kind": "x"})
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(router.getsockopt_string(zmq.LAST_ENDPOINT))
    try:
        dealer.send(b"\xc1not msgpack")
        dealer.send(msgspec.msgpack.encode({"op": "snapshot", "prefixes": ["alarms"]}))
        replies = []
        deadline = time.monotonic() + 5
        while len(replies) < 3 and time.monotonic() < deadline:
            publisher.serve_snapshots()
            if dealer.poll(50):
                replies.append(dealer.recv_multipart())
        assert replies[0][0] == b"error" and "bad snapshot request" in msgspec.msgpack.decode(replies[0][2])["error"]
        assert publisher.bad_requests == 1
        assert replies[1][:2] == [b"item", b"alarms"] and msgspec.msgpack.decode(replies[1][2])["id"] == 2
        end = msgspec.msgpack.decode(replies[2][2])
        assert replies[2][0] == b"end" and end["seq"] == 3 and end["count"] == 1 and end["topic_seq"] == {"alarms": 3}
    finally:
        for s in (dealer, pub, router):
            s.close(0)


def test_feed_command_prints_json_lines_and_fails_clearly_without_an_engine(demo_net):
    """``traffic-engine feed --count N --json`` prints the snapshot then updates, N messages in
    all, each a JSON object; with no engine it says so and exits 1."""
    cfg = EngineConfig(clock="sim", endpoints=ANY, health=HealthParams(enabled=False))  # no alarms
    with serving(Engine(demo_net, cfg)) as server, ticking(server):
        ep = server.endpoints
        while server.feed_seq < 20:
            time.sleep(0.01)
        ready = json.dumps({"ready": True, "endpoints": ep})
        n = 1 + demo_net.n_tls + 20  # the snapshot (conditions and every signal), then 20 updates
        out = subprocess.run([sys.executable, "-m", "engine", "feed", "--engine", ready, "--count", str(n), "--json"],
                             capture_output=True, text=True, timeout=60, cwd=REPO)
        human = subprocess.run([sys.executable, "-m", "engine", "feed", "--feed", ep["feed"], "--snapshot",
                                ep["snapshot"], "--count", "5", "--topics", "conditions"],
                               capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(x) for x in out.stdout.splitlines()]
    kinds = [x["kind"] for x in lines]
    assert sum(k != "end" for k in kinds) == n and kinds.count("end") == 1
    end = kinds.index("end")
    assert kinds[:end] == ["snapshot"] * end
    seqs = [x["seq"] for x in lines[end + 1:]]
    assert seqs == list(range(lines[end]["seq"] + 1, lines[end]["seq"] + 1 + len(seqs)))
    assert all(x["body"]["seq"] == x["seq"] for x in lines if x["kind"] != "end")
    cond = next(x for x in lines if x["topic"] == "conditions")
    assert len(cond["body"]["edges"]) == demo_net.n_edges == len(cond["body"]["speed_mps"])
    assert human.returncode == 0, human.stderr
    rows = human.stdout.splitlines()
    assert len(rows) == 6 and all(" conditions " in r and "edges" in r for r in rows if "snapshot complete" not in r)
    with zmq.Context.instance().socket(zmq.ROUTER) as free:  # a port nobody answers on
        free.bind("tcp://127.0.0.1:*")
        dead = free.getsockopt_string(zmq.LAST_ENDPOINT)
        feed_ep = dead[: dead.rfind(":")] + ":1"
        bad = subprocess.run([sys.executable, "-m", "engine", "feed", "--feed", feed_ep, "--snapshot", "tcp://127.0.0.1:1",
                              "--timeout", "0.3"], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert bad.returncode == 1 and "no snapshot from tcp://127.0.0.1:1" in bad.stderr and not bad.stdout


def test_client_times_out_without_an_engine():
    client = FeedClient("tcp://127.0.0.1:1", "tcp://127.0.0.1:1", timeout_s=0.2, join_wait_s=0.0)
    try:
        with pytest.raises(FeedError, match="no snapshot"):
            client.start()
    finally:
        client.close()


# -- the HTTP gateway ------------------------------------------------------------------------------


@contextmanager
def gateway_for(net_path, server, buffer=1024):
    gw = Gateway(str(net_path), server.endpoints["feed"], server.endpoints["snapshot"], listen=("127.0.0.1", 0),
                 buffer=buffer)
    gw.start()
    th = threading.Thread(target=gw.serve_forever, daemon=True)
    th.start()
    try:
        yield gw
    finally:
        gw.shutdown()
        th.join(5)


def get(gw, path, headers=None):
    host, port = gw.httpd.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request("GET", path, headers=headers or {})
    resp = conn.getresponse()
    return resp.status, resp.getheader("Content-Type"), resp.read()


def sse_events(gw, n, headers=None, path="/stream"):
    """The first ``n`` events of ``/stream`` as dicts (id, event, data), skipping comments."""
    host, port = gw.httpd.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request("GET", path, headers=headers or {})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Type") == "text/event-stream"
    events, cur = [], {}
    try:
        while len(events) < n:
            line = resp.fp.readline().decode().rstrip("\n")
            if not line:
                if "event" in cur:
                    events.append(cur)
                cur = {}
                continue
            if line.startswith(":"):
                continue
            field, _, value = line.partition(": ")
            if field in ("id", "event", "data"):
                cur[field] = json.loads(value) if field == "data" else value
    finally:
        conn.close()
    return events


def wait_ready(gw, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status, _, body = get(gw, "/healthz")
        if status == 200 and json.loads(body)["seq"] > 0:
            return json.loads(body)
        time.sleep(0.05)
    raise AssertionError("gateway never became ready")


def test_gateway_geojson_spat_and_health_on_a_projected_network(resco_dir):
    """cologne1 has a projection: every edge is a LineString in lon/lat around Cologne with its
    static attributes and the engine's latest conditions; /spat has every signal."""
    net_path = resco_dir / "cologne1" / "cologne1.net.xml"
    net = compile_network(net_path)
    with serving(Engine(net, EngineConfig(clock="sim", endpoints=ANY))) as server:
        with gateway_for(net_path, server) as gw:
            status, _, body = get(gw, "/healthz")
            assert status in (200, 503)
            with ticking(server, 0.02):
                health = wait_ready(gw)
                while gw.mirror.conditions is None:
                    time.sleep(0.02)
                status, ctype, body = get(gw, "/network.geojson")
                s_status, _, spat = get(gw, "/spat")
            n_status, _, nothing = get(gw, "/nope")
    assert health["ok"] and health["gaps"] == 0
    assert status == 200 and ctype == "application/geo+json"
    fc = json.loads(body)
    assert fc["type"] == "FeatureCollection" and fc["coordinates"] == "lonlat" and "note" not in fc
    ids = [f["id"] for f in fc["features"]]
    assert sorted(ids) == sorted(net.edge_ids)
    for f in fc["features"]:
        g = f["geometry"]
        assert g["type"] == "LineString" and len(g["coordinates"]) >= 2
        for lon, lat in g["coordinates"]:
            assert 6.8 < lon < 7.1 and 50.8 < lat < 51.1  # Cologne
        p = f["properties"]
        assert p["id"] == f["id"] and p["lanes"] >= 1 and p["speed_limit_mps"] > 0
        assert {"name", "speed_mps", "flow_vph", "density_vpkm", "travel_time_s", "los", "observed"} <= set(p)
        assert isinstance(p["speed_mps"], float) and isinstance(p["observed"], bool) and p["los"] in "ABCDEF"
    assert fc["seq"] > 0
    assert s_status == 200 and set(json.loads(spat)["junctions"]) == set(net.tls_ids)
    assert n_status == 404 and "no such path" in json.loads(nothing)["error"]


def test_network_without_projection_is_served_in_xy_with_a_note():
    shapes = NetworkShapes(str(DEMO_NET))
    fc = json.loads(msgspec.json.encode(shapes.geojson(None)))
    assert fc["coordinates"] == "xy" and "no geographic projection" in fc["note"]
    assert len(fc["features"]) == len(compile_network(DEMO_NET).edge_ids)
    for f in fc["features"]:
        assert f["geometry"]["type"] == "LineString"
        assert all(-10 <= x <= 2000 and -10 <= y <= 2000 for x, y in f["geometry"]["coordinates"])
        assert f["properties"]["speed_mps"] is None  # no conditions yet


def test_gateway_stream_resumes_from_last_event_id_or_sends_a_fresh_snapshot(demo_net):
    """/stream: a snapshot (each topic's state, then a ``snapshot`` event whose id is its seq), then
    every message with id = seq and event = topic, consecutive; a reconnect with Last-Event-ID
    continues right after it; an id no longer buffered gets a fresh snapshot."""
    with serving(Engine(demo_net, EngineConfig(clock="sim", endpoints=ANY))) as server:
        with gateway_for(DEMO_NET, server, buffer=64) as gw, ticking(server, 0.01):
            wait_ready(gw)
            n_topics = 1 + 2 * demo_net.n_tls  # conditions, spat.* and advice.* of every signal
            first = sse_events(gw, n_topics + 1 + 40)
            k = next(i for i, e in enumerate(first) if e["event"] == "snapshot")
            snap, live = first[:k], first[k + 1:]
            marker = first[k]
            assert {e["event"] for e in snap} >= {"conditions", *(f"spat.{t}" for t in demo_net.tls_ids),
                                                  *(f"advice.{t}" for t in demo_net.tls_ids)}
            assert all("id" not in e for e in snap) and marker["data"]["count"] == len(snap)
            ids = [int(e["id"]) for e in live]
            assert ids == list(range(int(marker["id"]) + 1, int(marker["id"]) + 1 + len(ids)))
            assert all(e["data"]["seq"] == int(e["id"]) for e in live)
            resume_at = ids[-1]
            again = sse_events(gw, 5, headers={"Last-Event-ID": str(resume_at)})
            assert [int(e["id"]) for e in again] == list(range(resume_at + 1, resume_at + 6))
            time.sleep(0.5)  # 50 ticks later the buffer of 64 has moved past id 1
            old = sse_events(gw, n_topics + 1, headers={"Last-Event-ID": "1"})
            assert old[-1]["event"] == "snapshot" and int(old[-1]["id"]) > 64
            spat_only = sse_events(gw, demo_net.n_tls + 3, path="/stream?topics=spat.")
    assert all(e["event"].startswith("spat.") or e["event"] == "snapshot" for e in spat_only)


def test_gateway_and_feed_commands_start_serve_and_stop_cleanly(demo_net):
    """``traffic-engine gateway`` prints its URL and serves /healthz; ``traffic-engine feed`` stops
    on Ctrl-C without a traceback; both explain themselves with --help."""
    import signal as sig

    cfg = EngineConfig(clock="sim", endpoints=ANY, health=HealthParams(enabled=False))
    with serving(Engine(demo_net, cfg)) as server, ticking(server, 0.02):
        ep = server.endpoints
        gw = subprocess.Popen([sys.executable, "-m", "engine", "gateway", str(DEMO_NET), "--feed", ep["feed"],
                               "--snapshot", ep["snapshot"], "--listen", "127.0.0.1:0"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        # (Ctrl-C as at a terminal: a suite started in the background, ``make test &``, hands its
        # children SIGINT ignored, and the feed then rightly goes on, as it did in three CI runs)
        feed = subprocess.Popen([sys.executable, "-X", "faulthandler", "-m", "engine", "feed", "--feed", ep["feed"],
                                 "--snapshot", ep["snapshot"]],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                                preexec_fn=lambda: sig.signal(sig.SIGINT, sig.SIG_DFL))
        try:
            ready = json.loads(gw.stdout.readline())
            assert ready["ready"] and ready["coordinates"] == "xy" and ready["edges"] == demo_net.n_edges
            host, port = ready["url"].split("//")[1].rstrip("/").split(":")
            deadline = time.monotonic() + 20
            while True:
                conn = http.client.HTTPConnection(host, int(port), timeout=10)
                conn.request("GET", "/healthz")
                resp = conn.getresponse()
                health = json.loads(resp.read())
                conn.close()
                if resp.status == 200 or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert resp.status == 200 and health["ok"] and health["seq"] > 0
            first = feed.stdout.readline()
            assert first.split()[0].isdigit()
            # (keep reading what it prints: with nobody reading, a full pipe would block its
            # exit on flushing stdout, as it would for any program)
            rest = threading.Thread(target=feed.stdout.read, daemon=True)
            rest.start()
            feed.send_signal(sig.SIGINT)
            try:
                code = feed.wait(60)
            except subprocess.TimeoutExpired:  # (say where it hangs)
                feed.send_signal(sig.SIGABRT)  # faulthandler prints every thread's stack
                feed.wait(10)
                pytest.fail("traffic-engine feed did not stop within 60 s of SIGINT:\n" + feed.stderr.read())
            assert code == 130 and "Traceback" not in feed.stderr.read()
            gw.send_signal(sig.SIGTERM)
            assert gw.wait(20) == 0 and "Traceback" not in gw.stderr.read()
        finally:
            for p in (gw, feed):
                if p.poll() is None:
                    p.kill()
                    p.wait()
    for cmd, words in (("feed", ("snapshot", "--topics", "--count", "--json")),
                       ("gateway", ("/network.geojson", "Last-Event-ID", "--listen"))):
        h = subprocess.run([sys.executable, "-m", "engine", cmd, "--help"], capture_output=True, text=True, cwd=REPO)
        assert h.returncode == 0 and all(w in h.stdout for w in words), h.stdout


def test_a_restarted_engine_is_noticed_and_followed_from_a_new_snapshot():
    """The seq starts again at 1 when the engine restarts: the client takes a new snapshot of the
    new engine instead of dropping its messages as old ones."""
    ctx = zmq.Context.instance()

    class Engine_(threading.Thread):
        """A publisher in its own thread: ``n`` messages on ``topic`` (5 ms apart), serving snapshots."""

        def __init__(self, topic, n, feed="tcp://127.0.0.1:*", snap="tcp://127.0.0.1:*"):
            super().__init__(daemon=True)
            self.pub, self.router = ctx.socket(zmq.PUB), ctx.socket(zmq.ROUTER)
            for sock, ep in ((self.pub, feed), (self.router, snap)):
                sock.setsockopt(zmq.LINGER, 0)
                for attempt in range(100):  # a closed socket frees its port a moment later
                    try:
                        sock.bind(ep)
                        break
                    except zmq.ZMQError:
                        if attempt == 99:
                            raise
                        time.sleep(0.02)
            self.endpoints = [x.getsockopt_string(zmq.LAST_ENDPOINT) for x in (self.pub, self.router)]
            self.publisher = FeedPublisher(self.pub, self.router)
            self.topic, self.n = topic, n
            self.stop = threading.Event()
            self.start()

        def run(self):
            while not self.stop.is_set():
                if self.publisher.seq < self.n:
                    self.publisher.publish(self.topic, {"k": self.publisher.seq})
                self.publisher.serve_snapshots()
                time.sleep(0.005)

        def close(self):
            self.stop.set()
            self.join(5)
            self.pub.close(0)
            self.router.close(0)

    def follow(client, engine):
        got = []
        deadline = time.monotonic() + 15
        while client.seq != engine.n and time.monotonic() < deadline:
            got += client.poll(20)
        return got

    old = Engine_(b"before", 60)
    client = FeedClient(*old.endpoints, join_wait_s=0.2)
    new = None
    try:
        first = client.start()
        assert first[0].kind in ("snapshot", "end")
        follow(client, old)
        assert client.seq == 60 and client.restarts == 0
        old.close()
        new = Engine_(b"after", 40, *old.endpoints)
        got = follow(client, new)
        assert client.restarts == 1 and client.seq == 40
        assert any(m.kind == "end" and m.body["reason"] == "restart" for m in got)
        assert set(client.state) == {"after"} and client.state["after"]["k"] == 39
    finally:
        client.close()
        old.close()
        if new is not None:
            new.close()


def test_endpoints_come_from_the_ready_line_a_file_or_the_config(tmp_path):
    from engine.feed import resolve_endpoints, snapshot_endpoint

    assert snapshot_endpoint("tcp://127.0.0.1:*", None) == "tcp://127.0.0.1:*"  # never a fixed port in tests
    assert snapshot_endpoint("tcp://10.1.2.3:7703", None) == "tcp://10.1.2.3:7705"
    assert snapshot_endpoint("tcp://10.1.2.3:7703", "tcp://10.1.2.3:9000") == "tcp://10.1.2.3:9000"
    ready = '{"ready": true, "endpoints": {"feed": "tcp://127.0.0.1:4001", "snapshot": "tcp://127.0.0.1:4002"}}'
    assert resolve_endpoints(ready, None, None) == ("tcp://127.0.0.1:4001", "tcp://127.0.0.1:4002")
    (tmp_path / "ready.txt").write_text(ready + "\n")
    assert resolve_endpoints(str(tmp_path / "ready.txt"), None, "tcp://h:1") == ("tcp://127.0.0.1:4001", "tcp://h:1")
    (tmp_path / "e.toml").write_text('[endpoints]\nfeed = "tcp://10.0.0.9:8803"\n')
    assert resolve_endpoints(str(tmp_path / "e.toml"), None, None) == ("tcp://10.0.0.9:8803", "tcp://10.0.0.9:7705")
    assert resolve_endpoints(None, None, None) == ("tcp://127.0.0.1:7703", "tcp://127.0.0.1:7705")
    with pytest.raises(ValueError, match="neither a ready line"):
        resolve_endpoints(str(tmp_path / "missing.json"), None, None)
    with pytest.raises(ValueError, match="no endpoints.feed"):
        resolve_endpoints('{"ready": true}', None, None)
    (tmp_path / "any.toml").write_text('[endpoints]\nfeed = "tcp://127.0.0.1:*"\n')
    with pytest.raises(ValueError, match="has no port"):
        resolve_endpoints(str(tmp_path / "any.toml"), None, None)
