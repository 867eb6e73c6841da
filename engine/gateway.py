"""The HTTP gateway: the public feed over HTTP for browsers and web maps (``traffic-engine gateway``).

One thread (:class:`FeedMirror`) follows the engine's feed with a :class:`~engine.feed.FeedClient`
(snapshot, then numbered updates), keeps the current state and the last ``buffer`` messages,
each encoded to JSON once. HTTP handlers (stdlib ``ThreadingHTTPServer``, a thread per request)
only read from it:

- ``GET /network.geojson``: every edge of the network file as a LineString (lon/lat when the
  network has a projection, else the network's x/y and a ``note``) with its static attributes and
  the latest ``conditions``;
- ``GET /spat``: the latest ``spat.<junction>`` of every signal;
- ``GET /stream``: server-sent events, one per feed message (``id:`` its seq, ``event:`` its
  topic); ``Last-Event-ID`` resumes from the buffer, or a fresh snapshot when it is not there;
- ``GET /healthz``: 200 when the mirror has a snapshot, else 503.

The HTTP API is documented in docs/protocol.md ("HTTP gateway").
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import msgspec

from engine.feed import FeedClient, FeedError, FeedMessage, state_key

log = logging.getLogger("traffic_engine.gateway")
KEEPALIVE_S = 15.0
_json = msgspec.json.Encoder()


class FeedMirror(threading.Thread):
    """Follows the feed in its own thread; everything else reads it under ``cond``."""

    def __init__(self, feed: str, snapshot: str, buffer: int = 1024, timeout_s: float = 5.0):
        super().__init__(name="feed-mirror", daemon=True)
        self.feed_ep, self.snapshot_ep, self.timeout_s = feed, snapshot, timeout_s
        self.cond = threading.Condition()
        self.state: dict[str, tuple[int, str, bytes, dict]] = {}  # key -> (seq, topic, json, body)
        self.buffer: deque[tuple[int, str, bytes]] = deque(maxlen=buffer)  # (seq, topic, json)
        self.floor = 0  # every message with seq > floor (up to seq) is in the buffer
        self.seq = 0
        self.ready = False
        self.generation = 0  # +1 at every snapshot the mirror takes
        self.last_message = 0.0
        self.client: FeedClient | None = None
        self.error = "no snapshot from the engine yet"
        self.stopping = threading.Event()
        self.conditions: dict | None = None

    def run(self) -> None:
        while not self.stopping.is_set():
            client = FeedClient(self.feed_ep, self.snapshot_ep, timeout_s=self.timeout_s)
            try:
                self.client = client
                msgs = client.start()
                while not self.stopping.is_set():
                    if msgs:
                        self._apply(msgs)
                    msgs = client.poll(200)
            except FeedError as exc:
                with self.cond:
                    self.error = str(exc)
                    self.ready = False
                log.warning("gateway: %s; retrying", exc)
                self.stopping.wait(1.0)
            finally:
                client.close()

    def _apply(self, msgs: list[FeedMessage]) -> None:
        with self.cond:
            snap: dict | None = None
            for m in msgs:
                if m.kind == "snapshot":
                    if snap is None:
                        snap = {}
                    snap[state_key(m.topic, m.body)] = (m.seq, m.topic, _json.encode(m.body), m.body)
                elif m.kind == "end":
                    self.state = snap or {}
                    snap = None
                    self.seq = self.floor = m.seq
                    self.buffer.clear()
                    self.generation += 1
                    self.ready = True
                    self.error = ""
                    self.conditions = self.state.get("conditions", (0, "", b"", None))[3]
                else:
                    data = _json.encode(m.body)
                    key = state_key(m.topic, m.body)
                    if m.topic == "alarms" and not m.body.get("active", True):
                        self.state.pop(key, None)
                    else:
                        self.state[key] = (m.seq, m.topic, data, m.body)
                    if m.topic == "conditions":
                        self.conditions = m.body
                    if len(self.buffer) == self.buffer.maxlen:
                        self.floor = self.buffer[0][0]
                    self.buffer.append((m.seq, m.topic, data))
                    self.seq = m.seq
            self.last_message = time.monotonic()
            self.cond.notify_all()

    def snapshot_events(self, prefixes: list[str]) -> tuple[int, list[tuple[str, bytes]]]:
        """(seq, [(topic, json)]) of the current state, oldest first (call under ``cond``)."""
        items = sorted(v for v in self.state.values() if _wanted(v[1], prefixes))
        return self.seq, [(topic, data) for _, topic, data, _ in items]

    def stop(self) -> None:
        self.stopping.set()
        with self.cond:
            self.cond.notify_all()


def _wanted(topic: str, prefixes: list[str]) -> bool:
    return not prefixes or topic.startswith(tuple(prefixes))


class NetworkShapes:
    """The network file's edges as GeoJSON features (static part), built once."""

    def __init__(self, net_path: str):
        import sumolib

        net = sumolib.net.readNet(str(net_path), withInternal=False)
        self.geo = bool(net.hasGeoProj())
        if self.geo:
            try:
                net.convertXY2LonLat(0.0, 0.0)
            except ImportError:  # pragma: no cover - pyproj is a dependency
                self.geo = False
        self.edges: list[str] = []
        self.features: list[dict] = []
        for edge in net.getEdges(withInternal=False):
            shape = edge.getShape() or edge.getLanes()[0].getShape()
            if self.geo:
                coords = [[round(c, 7) for c in net.convertXY2LonLat(x, y)] for x, y in shape]
            else:
                coords = [[round(x, 2), round(y, 2)] for x, y in shape]
            self.edges.append(edge.getID())
            self.features.append({
                "type": "Feature", "id": edge.getID(),
                "geometry": {"type": "LineString", "coordinates": coords},
                "properties": {"id": edge.getID(), "name": edge.getName() or "", "lanes": edge.getLaneNumber(),
                               "speed_limit_mps": round(edge.getSpeed(), 2), "length_m": round(edge.getLength(), 1),
                               "from": edge.getFromNode().getID(), "to": edge.getToNode().getID()},
            })

    CONDITION_KEYS = ("speed_mps", "flow_vph", "density_vpkm", "queue_veh", "travel_time_s", "delay_s", "los",
                      "observed")

    def geojson(self, conditions: dict | None) -> dict:
        index = {e: k for k, e in enumerate(conditions["edges"])} if conditions else {}
        cols = {k: conditions.get(k) for k in self.CONDITION_KEYS} if conditions else {}
        features = []
        for edge, feat in zip(self.edges, self.features):
            k = index.get(edge)
            props = dict(feat["properties"])
            for name in self.CONDITION_KEYS:
                col = cols.get(name)
                props[name] = col[k] if k is not None and col is not None and k < len(col) else None
            features.append({**feat, "properties": props})
        out = {"type": "FeatureCollection", "features": features,
               "coordinates": "lonlat" if self.geo else "xy",
               "seq": conditions.get("seq", 0) if conditions else 0,
               "ts_ns": conditions.get("ts_ns", 0) if conditions else 0}
        if not self.geo:
            out["note"] = ("the network file has no geographic projection: coordinates are the network's "
                           "x/y in metres, not lon/lat")
        return out


class Gateway:
    """The HTTP server and its feed mirror."""

    def __init__(self, net_path: str, feed: str, snapshot: str, listen: tuple[str, int] = ("127.0.0.1", 7780),
                 buffer: int = 1024, timeout_s: float = 5.0):
        self.shapes = NetworkShapes(net_path)
        self.mirror = FeedMirror(feed, snapshot, buffer=buffer, timeout_s=timeout_s)
        self._geo_cache: tuple[int, bytes] = (-1, b"")
        self._geo_lock = threading.Lock()
        self.streams = 0
        gateway = self

        class Handler(_Handler):
            gw = gateway

        self.httpd = ThreadingHTTPServer(listen, Handler)
        self.httpd.daemon_threads = True

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> None:
        self.mirror.start()

    def serve_forever(self) -> None:
        self.httpd.serve_forever(poll_interval=0.2)

    def shutdown(self) -> None:
        self.mirror.stop()
        self.httpd.shutdown()
        self.httpd.server_close()

    def network_geojson(self) -> bytes:
        with self.mirror.cond:
            cond = self.mirror.conditions
        seq = cond.get("seq", 0) if cond else 0
        with self._geo_lock:  # encoded once per conditions message, however many ask
            if self._geo_cache[0] != seq:
                self._geo_cache = (seq, _json.encode(self.shapes.geojson(cond)))
            return self._geo_cache[1]


class _Handler(BaseHTTPRequestHandler):
    gw: Gateway
    server_version = "traffic-engine-gateway/1"

    def log_message(self, fmt, *args) -> None:
        log.debug("%s %s", self.address_string(), fmt % args)

    def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Access-Control-Allow-Origin", "*")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        try:
            if url.path == "/network.geojson":
                self._send(200, self.gw.network_geojson(), "application/geo+json")
            elif url.path == "/spat":
                self._spat()
            elif url.path == "/stream":
                self._stream(query)
            elif url.path == "/healthz":
                self._health()
            elif url.path == "/":
                self._send(200, _json.encode({"endpoints": ["/network.geojson", "/spat", "/stream", "/healthz"],
                                              "protocol": "docs/protocol.md, HTTP gateway"}))
            else:
                self._send(404, _json.encode({"error": f"no such path {url.path}; try /network.geojson, /spat, "
                                                       "/stream or /healthz"}))
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _spat(self) -> None:
        m = self.gw.mirror
        with m.cond:
            junctions = {v[3].get("junction", topic[5:]): v[3] for topic, v in m.state.items()
                         if topic.startswith("spat.")}
            body = {"seq": m.seq, "junctions": junctions}
        self._send(200 if m.ready else 503, _json.encode(body))

    def _health(self) -> None:
        m = self.gw.mirror
        with m.cond:
            age = time.monotonic() - m.last_message if m.last_message else None
            client = m.client
            body = {"ok": m.ready, "seq": m.seq, "topics": len(m.state),
                    "last_message_age_s": None if age is None else round(age, 3),
                    "snapshots": client.snapshots if client else 0, "gaps": client.gaps if client else 0,
                    "streams": self.gw.streams, "error": m.error}
        self._send(200 if m.ready else 503, _json.encode(body))

    def _stream(self, query: dict) -> None:
        m = self.gw.mirror
        prefixes = [p for t in query.get("topics", []) for p in t.split(",") if p]
        last = self.headers.get("Last-Event-ID") or (query.get("last_event_id") or [None])[0]
        try:
            cursor = int(last) if last not in (None, "") else None
        except ValueError:
            cursor = None
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Access-Control-Allow-Origin", "*")
        self.end_headers()
        with m.cond:
            self.gw.streams += 1
        try:
            write, flush = self.wfile.write, self.wfile.flush
            write(b"retry: 2000\n\n")
            generation = -1
            while not m.stopping.is_set():
                out: list[bytes] = []
                with m.cond:
                    if not m.cond.wait_for(lambda: m.ready and (m.seq != cursor or m.generation != generation),
                                           KEEPALIVE_S):
                        out.append(b": keepalive\n\n")
                    elif cursor is None or not (m.floor <= cursor <= m.seq) or (
                            generation not in (-1, m.generation) and cursor < m.floor):
                        # a fresh snapshot: each topic's state as its event (no id), then the marker
                        seq, items = m.snapshot_events(prefixes)
                        for topic, data in items:
                            out.append(b"event: %s\ndata: %s\n\n" % (topic.encode(), data))
                        out.append(b"id: %d\nevent: snapshot\ndata: %s\n\n"
                                   % (seq, _json.encode({"seq": seq, "count": len(items)})))
                        cursor, generation = seq, m.generation
                    else:  # resume from the buffer
                        for seq, topic, data in m.buffer:
                            if seq > cursor and _wanted(topic, prefixes):
                                out.append(b"id: %d\nevent: %s\ndata: %s\n\n" % (seq, topic.encode(), data))
                        cursor, generation = m.seq, m.generation
                write(b"".join(out))
                flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass
        finally:
            with m.cond:
                self.gw.streams -= 1


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--listen wants HOST:PORT (e.g. 127.0.0.1:7780; port 0 = any free port), not {text!r}")
    return host or "127.0.0.1", int(port)


def ready_line(gw: Gateway) -> str:
    return json.dumps({"ready": True, "url": gw.url, "feed": gw.mirror.feed_ep, "snapshot": gw.mirror.snapshot_ep,
                       "coordinates": "lonlat" if gw.shapes.geo else "xy", "edges": len(gw.shapes.edges)})
