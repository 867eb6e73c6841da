"""The public feed: every topic goes through one :class:`FeedPublisher`, and a late joiner gets a
snapshot and then the numbered updates (the ZeroMQ guide's "Clone" pattern, chapter 5).

Server side (in the engine's one thread):

- ``publish(topic, body)`` gives the message the next ``seq`` (one counter across the whole
  feed) and ``prev_seq`` (the seq of the previous message on the same topic, 0 for none),
  encodes it ONCE, sends the two frames on the PUB socket and keeps the encoded frame as the
  topic's current state. ``alarms`` is the one topic with several values: its state is every
  active alarm (key: the alarm's ``id``; a clear deletes it).
- ``serve_snapshots()`` answers snapshot requests on the ROUTER socket with every current state
  frame (optionally only topics starting with given prefixes), oldest first, then an end marker
  carrying the ``seq`` the snapshot is at.

Client side, :class:`FeedClient`: subscribe FIRST, then ask for the snapshot, apply it, drop the
updates buffered meanwhile with ``seq`` <= the snapshot's, and apply the rest in order. A gap (a
``seq`` jump when subscribed to everything, a ``prev_seq`` that is not the last seq seen on that
topic when subscribed to prefixes) or a ``seq`` going backwards (the engine restarted) makes it
take a new snapshot. So a late joiner misses nothing and doubles nothing.

Queues (the HWM policy): the PUB socket keeps at most ``feed.send_hwm`` messages per subscriber
(``[feed]`` in the config, 10,000 by default: several ticks even of a large region); beyond that
ZeroMQ drops that subscriber's messages (never blocks the engine) and the subscriber sees the gap
and re-snapshots. CONFLATE is not used: it does not work with two-frame messages, and the
snapshot is the conflated state anyway. The snapshot ROUTER queues at most ``feed.snapshot_hwm``
messages per client; a snapshot that does not fit (or whose client has gone) is cut short and
counted, and the client times out and asks again. Protocol: docs/protocol.md, section Feed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import msgspec
import zmq

log = logging.getLogger("traffic_engine.feed")

ALARMS = b"alarms"
ITEM, END, ERROR = b"item", b"end", b"error"
COPY_BELOW = 64 << 10  # frames larger than this are sent without a copy (ZeroMQ keeps a reference)
MAX_PREFIXES, MAX_PREFIX_BYTES = 64, 256
DEFAULT_SNAPSHOT = "tcp://127.0.0.1:7705"


def snapshot_endpoint(feed: str, snapshot: str | None) -> str:
    """The snapshot socket's endpoint: ``snapshot`` when set, else beside the feed: any free port
    when the feed binds any free port (``*`` or 0), else the feed's host at port 7705."""
    if snapshot:
        return snapshot
    head, _, port = feed.rpartition(":")
    if port in ("*", "0"):
        return head + ":*"
    if head.startswith("tcp://"):
        return head + ":7705"
    return DEFAULT_SNAPSHOT


class FeedError(RuntimeError):
    """The engine's feed did not answer (or answered nonsense)."""


class _Request(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    op: str
    prefixes: list[str] = []


_request_decoder = msgspec.msgpack.Decoder(_Request)


class FeedPublisher:
    """Every feed message goes through :meth:`publish`; :meth:`serve_snapshots` answers late joiners.

    Not thread-safe: the engine's loop thread calls both."""

    def __init__(self, pub: zmq.Socket, snapshot: zmq.Socket | None = None):
        self.pub = pub
        self.snapshot = snapshot
        if snapshot is not None:
            snapshot.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a gone client is an error, not a silent drop
        self.seq = 0
        self._encode = msgspec.msgpack.Encoder().encode
        self._topic_seq: dict[bytes, int] = {}  # topic -> seq of its latest message
        self._state: dict[bytes, tuple[int, bytes, bytes]] = {}  # key -> (seq, topic, frame)
        self.snapshots_served = 0
        self.snapshots_cut = 0  # could not be sent whole (client gone, or its queue full)
        self.bad_requests = 0
        self.bytes_published = 0

    def publish(self, topic: bytes, body: dict[str, Any]) -> int:
        """Number, encode (once), send and keep ``body`` as ``topic``'s state; returns its seq.

        ``body`` gains ``seq`` and ``prev_seq``."""
        self.seq = seq = self.seq + 1
        body["seq"] = seq
        body["prev_seq"] = self._topic_seq.get(topic, 0)
        self._topic_seq[topic] = seq
        frame = self._encode(body)
        self.pub.send(topic, zmq.SNDMORE)
        self.pub.send(frame, copy=len(frame) < COPY_BELOW)
        self.bytes_published += len(frame)
        if topic == ALARMS:
            key = b"alarms/%d" % body["id"]
            if body.get("active", True):
                self._state[key] = (seq, topic, frame)
            else:
                self._state.pop(key, None)
        else:
            self._state[topic] = (seq, topic, frame)
        return seq

    def topics(self) -> int:
        return len(self._state)

    def serve_snapshots(self) -> int:
        """Answer every waiting snapshot request; returns how many were answered."""
        if self.snapshot is None:
            return 0
        served = 0
        while True:
            try:
                frames = self.snapshot.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return served
            ident = frames[0]
            try:
                if len(frames) != 2:
                    raise ValueError(f"{len(frames) - 1} frames, expected 1 (use a DEALER)")
                req = _request_decoder.decode(frames[1])
                if req.op != "snapshot":
                    raise ValueError(f"unknown op {req.op!r}; known: snapshot")
                if len(req.prefixes) > MAX_PREFIXES or any(len(p) > MAX_PREFIX_BYTES for p in req.prefixes):
                    raise ValueError(f"at most {MAX_PREFIXES} prefixes of at most {MAX_PREFIX_BYTES} bytes")
            except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
                self.bad_requests += 1
                if self.bad_requests <= 10 or self.bad_requests & (self.bad_requests - 1) == 0:
                    log.warning("bad snapshot request (%d so far): %s", self.bad_requests, exc)
                self._send(ident, [ERROR, b"", self._encode({"error": f"bad snapshot request: {exc}"})])
                continue
            if self._send_snapshot(ident, [p.encode() for p in req.prefixes]):
                served += 1

    def _send(self, ident: bytes, frames: list[bytes]) -> bool:
        try:
            self.snapshot.send_multipart([ident, *frames], zmq.NOBLOCK)
            return True
        except (zmq.Again, zmq.ZMQError):  # queue full, or the client has gone (ROUTER_MANDATORY)
            return False

    def _send_snapshot(self, ident: bytes, prefixes: list[bytes]) -> bool:
        items = [v for v in self._state.values() if not prefixes or v[1].startswith(tuple(prefixes))]
        items.sort()
        send = self.snapshot.send
        try:
            for _, topic, frame in items:
                send(ident, zmq.SNDMORE | zmq.NOBLOCK)
                send(ITEM, zmq.SNDMORE | zmq.NOBLOCK)
                send(topic, zmq.SNDMORE | zmq.NOBLOCK)
                send(frame, zmq.NOBLOCK, copy=len(frame) < COPY_BELOW)
        except (zmq.Again, zmq.ZMQError) as exc:
            self.snapshots_cut += 1
            log.warning("snapshot for %r cut short after a full queue or a gone client (%s); it will ask again",
                        ident, exc)
            return False
        # the last message of topics whose state is not one message (alarms: the latest change
        # may have been a clear), so a client can check prev_seq on their next message
        topic_seq = {t.decode(): s for t, s in self._topic_seq.items()
                     if t == ALARMS and (not prefixes or t.startswith(tuple(prefixes)))}
        end = self._encode({"seq": self.seq, "count": len(items), "topic_seq": topic_seq})
        if not self._send(ident, [END, b"", end]):
            self.snapshots_cut += 1
            return False
        self.snapshots_served += 1
        return True

    def status(self) -> dict:
        return {"seq": self.seq, "topics": len(self._state), "snapshots_served": self.snapshots_served,
                "snapshots_cut": self.snapshots_cut, "bad_requests": self.bad_requests,
                "bytes_published": self.bytes_published}


# -- the client -----------------------------------------------------------------------------------


class FeedMessage(NamedTuple):
    """One message of the feed as a client sees it.

    ``kind``: ``"snapshot"`` (a topic's state from a snapshot), ``"end"`` (a snapshot is complete;
    ``seq`` is the seq it is at, ``body`` has ``count`` and ``reason``: ``"join"``, ``"gap"`` or
    ``"restart"``) or ``"update"`` (a live message, in seq order)."""

    kind: str
    seq: int
    topic: str
    body: dict


def state_key(topic: str, body: dict) -> str:
    """The key a message's state is kept under: its topic; for ``alarms``, ``alarms/<id>``."""
    return f"alarms/{body.get('id')}" if topic == "alarms" else topic


class FeedClient:
    """A late-joining subscriber that misses nothing and doubles nothing (the clone pattern).

    ``state`` is the feed's current state: key (see :func:`state_key`) -> latest body; ``seq`` the
    last applied seq. Call :meth:`start` once (it raises :class:`FeedError` when no snapshot
    comes within ``timeout_s``), then :meth:`poll` or iterate :meth:`messages`.
    """

    _decode = msgspec.msgpack.Decoder().decode
    _encode = msgspec.msgpack.Encoder().encode

    def __init__(self, feed: str, snapshot: str, topics: Iterable[str] = (), timeout_s: float = 5.0,
                 context: zmq.Context | None = None, rcvhwm: int = 100_000, join_wait_s: float = 1.0):
        self.feed_endpoint, self.snapshot_endpoint = feed, snapshot
        self.prefixes = [t for t in topics]
        self.everything = not self.prefixes or "" in self.prefixes
        if self.everything:
            self.prefixes = []
        self.timeout_s = timeout_s
        self.join_wait_s = join_wait_s
        self.ctx = context or zmq.Context.instance()
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.RCVHWM, rcvhwm)
        for p in self.prefixes or [""]:
            self.sub.setsockopt(zmq.SUBSCRIBE, p.encode())
        self.sub.connect(feed)
        self.state: dict[str, dict] = {}
        self.seq = 0
        self._topic_seq: dict[str, int] = {}
        self._buffer: list[tuple[bytes, bytes]] = []  # updates received while a snapshot is taken
        self.snapshots = 0
        self.gaps = 0
        self.restarts = 0
        self.started = False

    # -- snapshot

    def start(self) -> list[FeedMessage]:
        """Take the first snapshot. Waits (at most ``join_wait_s``) for a first update before
        asking, so the subscription is live when the snapshot is taken and no resnapshot is needed."""
        if self.join_wait_s > 0 and self.sub.poll(int(self.join_wait_s * 1000)):
            self._drain_sub()
        self.started = True
        return self._snapshot("join")

    def _drain_sub(self) -> None:
        while True:
            try:
                self._buffer.append(tuple(self.sub.recv_multipart(zmq.NOBLOCK)))
            except zmq.Again:
                return

    def _snapshot(self, reason: str) -> list[FeedMessage]:
        dealer = self.ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(self.snapshot_endpoint)
        try:
            dealer.send(self._encode({"op": "snapshot", "prefixes": self.prefixes}))
            items: list[tuple[str, dict]] = []
            poller = zmq.Poller()
            poller.register(dealer, zmq.POLLIN)
            poller.register(self.sub, zmq.POLLIN)
            deadline = time.monotonic() + self.timeout_s
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise FeedError(f"no snapshot from {self.snapshot_endpoint} within {self.timeout_s:g} s "
                                    "(is the engine running? is that its snapshot endpoint?)")
                events = dict(poller.poll(left * 1000))
                if self.sub in events:
                    self._drain_sub()
                if dealer not in events:
                    continue
                frames = dealer.recv_multipart()
                if len(frames) != 3:
                    raise FeedError(f"bad snapshot reply: {len(frames)} frames")
                kind, topic, body = frames
                if kind == ITEM:
                    items.append((topic.decode(), self._decode(body)))
                elif kind == END:
                    end = self._decode(body)
                    break
                elif kind == ERROR:
                    raise FeedError(self._decode(body).get("error", "snapshot refused"))
                else:
                    raise FeedError(f"bad snapshot reply kind {kind!r}")
        finally:
            dealer.close(0)
        self.snapshots += 1
        self.state = {}
        self._topic_seq = {}
        out = []
        for topic, body in items:
            self.state[state_key(topic, body)] = body
            seq = body.get("seq", 0)
            self._topic_seq[topic] = max(self._topic_seq.get(topic, 0), seq)
            out.append(FeedMessage("snapshot", seq, topic, body))
        self._topic_seq.update(end.get("topic_seq", {}))
        self.seq = end["seq"]
        out.append(FeedMessage("end", self.seq, "", {"seq": self.seq, "count": end.get("count", len(items)),
                                                     "reason": reason}))
        log.info("snapshot (%s): %d topics at seq %d", reason, len(items), self.seq)
        buffered, self._buffer = self._buffer, []
        out.extend(self._apply(buffered, fresh=True))
        return out

    # -- updates

    def _apply(self, frames: list[tuple[bytes, ...]], fresh: bool = False) -> list[FeedMessage]:
        out: list[FeedMessage] = []
        for k, msg in enumerate(frames):
            if len(msg) != 2:
                continue
            topic, body = msg[0].decode(), self._decode(msg[1])
            seq = body.get("seq", 0)
            if seq <= self.seq:
                if fresh:  # buffered while the snapshot was taken: already in it
                    continue
                self.restarts += 1  # a seq going backwards: the engine restarted
                log.warning("feed seq went back from %d to %d (engine restarted?): new snapshot", self.seq, seq)
                self._buffer = [m for m in frames[k:]]
                out.extend(self._snapshot("restart"))
                return out
            expected_prev = self._topic_seq.get(topic, 0)
            gap = seq != self.seq + 1 if self.everything else body.get("prev_seq", 0) != expected_prev
            if gap:
                self.gaps += 1
                log.warning("feed gap before seq %d (last applied %d, topic %s): new snapshot", seq, self.seq, topic)
                self._buffer = [m for m in frames[k:]]
                self._drain_sub()
                out.extend(self._snapshot("gap"))
                return out
            self.seq = seq
            self._topic_seq[topic] = seq
            key = state_key(topic, body)
            if topic == "alarms" and not body.get("active", True):
                self.state.pop(key, None)
            else:
                self.state[key] = body
            out.append(FeedMessage("update", seq, topic, body))
        return out

    def poll(self, timeout_ms: int = 0) -> list[FeedMessage]:
        """Apply and return every update waiting (waiting up to ``timeout_ms`` for the first)."""
        if not self.started:
            return self.start()
        if not self._buffer and timeout_ms and not self.sub.poll(timeout_ms):
            return []
        self._drain_sub()
        frames, self._buffer = self._buffer, []
        return self._apply(frames)

    def messages(self, timeout_ms: int = 1000) -> Iterator[FeedMessage]:
        """The snapshot, then every update, forever (each poll waits up to ``timeout_ms``)."""
        while True:
            yield from self.poll(timeout_ms)

    def close(self) -> None:
        self.sub.close(0)

    def __enter__(self) -> "FeedClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- printing (traffic-engine feed) ---------------------------------------------------------------


def summary(topic: str, body: dict) -> str:
    """One human line about a message's body."""
    if topic == "conditions":
        edges = body.get("edges") or []
        speed = [s for s in body.get("speed_mps") or [] if s is not None]
        flow = [f for f in body.get("flow_vph") or [] if f is not None]
        los = body.get("los") or []
        counts = {c: los.count(c) for c in "ABCDEF" if c in los}
        observed = sum(1 for o in body.get("observed") or [] if o)
        return (f"{len(edges)} edges ({observed} observed), mean speed "
                f"{(sum(speed) / len(speed)) if speed else 0:.1f} m/s, flow {sum(flow):.0f} veh/h in all"
                + (", LOS " + " ".join(f"{c}:{n}" for c, n in counts.items()) if counts else ""))
    if topic == "alarms":
        verb = "RAISE" if body.get("active") else "clear"
        return (f"{verb} #{body.get('id')} {body.get('severity', '')} {body.get('kind', '')} "
                f"{body.get('subject', '')}  {body.get('detail', '')}").rstrip()
    if topic.startswith("spat."):
        extra = "".join(f" {k} {body[k]}" for k in ("phase",) if k in body)
        return f"state {body.get('state', '')}{extra}"
    skip = {"seq", "prev_seq", "ts_ns"}
    parts = []
    for k, v in body.items():
        if k in skip:
            continue
        text = repr(v) if not isinstance(v, (list, dict)) else f"[{len(v)}]"
        parts.append(f"{k}={text}")
        if len(parts) == 6:
            break
    return " ".join(parts)


def format_line(msg: FeedMessage) -> str:
    if msg.kind == "end":
        return f"{msg.seq:>10} {'-- snapshot complete':30} {msg.body['count']} topics ({msg.body['reason']})"
    mark = "S" if msg.kind == "snapshot" else " "
    return f"{msg.seq:>10} {mark} {msg.topic:28} {summary(msg.topic, msg.body)}"


def resolve_endpoints(engine: str | None, feed: str | None, snapshot: str | None) -> tuple[str, str]:
    """The feed and snapshot endpoints from the command line: ``--engine`` is the ready line
    ``serve`` printed (JSON), a file holding it, or the engine's config file (.toml or .json);
    ``--feed``/``--snapshot`` override; the defaults are the engine's."""
    from pathlib import Path

    found: dict = {}
    if engine:
        text = engine.strip()
        if not text.startswith("{"):
            p = Path(text)
            if not p.is_file():
                raise ValueError(f"--engine {engine!r} is neither a ready line (JSON) nor a file")
            if p.suffix == ".toml":
                from engine.config import load_config

                ep = load_config(p).endpoints
                found = {"feed": ep.feed, "snapshot": snapshot_endpoint(ep.feed, ep.snapshot)}
                text = ""
            else:
                text = p.read_text().strip().splitlines()[0] if p.read_text().strip() else ""
        if text:
            try:
                obj = msgspec.json.decode(text)
            except msgspec.DecodeError as exc:
                raise ValueError(f"--engine: not JSON: {exc}") from None
            eps = obj.get("endpoints") if isinstance(obj, dict) else None
            if not isinstance(eps, dict) or "feed" not in eps:
                raise ValueError("--engine: no endpoints.feed in it (give serve's ready line or the engine config)")
            found = {"feed": eps["feed"], "snapshot": snapshot_endpoint(eps["feed"], eps.get("snapshot"))}
    feed = feed or found.get("feed") or "tcp://127.0.0.1:7703"
    if "*" in feed:
        raise ValueError(f"feed endpoint {feed!r} has no port: give the one the engine bound (its ready line)")
    return feed, snapshot or found.get("snapshot") or snapshot_endpoint(feed, None)
