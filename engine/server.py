"""The engine's sockets and its loop: one thread, messages consumed in order.

- ingest (PULL): frames are absorbed in order as they arrive, a bounded amount per loop turn;
  the rest wait in ZeroMQ's own bounded queue (see ``_watch_ingest`` for the overload policy).
- adapters (ROUTER): ``Hello`` registers signals; every tick each registered signal gets a
  ``Command`` (which is also the engine's heartbeat).
- feed (PUB): every tick ``conditions`` (per edge), ``spat.<signal>`` and ``advice.<signal>`` (per
  signal, ``engine.spat``); ``alarms`` when one is raised or cleared. Every message goes through
  ``engine.feed.FeedPublisher`` (one ``seq`` across the feed, the latest body per topic kept),
  which also answers snapshot requests on the snapshot socket (ROUTER) so late joiners miss
  nothing (the clone pattern).
- operators (ROUTER): ``Request`` -> ``Reply``; ``status``, ``alarms``, ``detectors``, ``route``,
  and the ops of ``engine.overrides`` (``junction``, ``override``, ``release``, ``audit``).
- with ``security.keys_dir`` the adapter and operator sockets are CurveZMQ servers with
  allow-lists (``engine.security``); a message whose key is not allowed (any more) is dropped.

With ``clock = "wall"`` the loop ticks every ``tick_s`` of the system clock. With ``clock =
"sim"`` it ticks when a ``Clock`` watermark arrives on the ingest socket, at the watermark's
time, so a simulator drives it in lockstep and a run is deterministic.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import concurrent.futures
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import msgspec
import numpy as np
import zmq

from engine import protocol as P
from engine.adapter import engine_command, register
from engine.clock import ManualClock, WallClock
from engine.core import Engine
from engine.feed import FeedPublisher, snapshot_endpoint
from engine.recorder import NullRecorder
from engine.spat import SpatStage

log = logging.getLogger("traffic_engine.server")
COALESCE_BELOW = 256  # frames: a drain that took fewer waits ``ingest.coalesce_ms`` before the next


@dataclass
class AdapterLink:
    identity: bytes
    junctions: list[int] = field(default_factory=list)
    last_seen_ns: int = 0
    feedback: dict[int, str] = field(default_factory=dict)
    refused_seq: dict[int, int] = field(default_factory=dict)  # per signal, the last refused command's seq


class Server:
    """Binds the four sockets around an :class:`Engine` and runs its loop."""

    def __init__(self, engine: Engine, context: zmq.Context | None = None, recorder: NullRecorder | None = None):
        self.engine = engine
        self.recorder = recorder or NullRecorder()  # engine.recorder: every message in and out, on disk
        self.config = engine.config
        self.clock = ManualClock() if self.config.clock == "sim" else WallClock()
        keys_dir = self.config.security.keys_dir
        # with keys, a context of its own: one ZAP authenticator per context (engine.security)
        self._own_ctx = context is None and keys_dir is not None
        self.ctx = context or (zmq.Context() if keys_dir else zmq.Context.instance())
        self.security = None
        if keys_dir:
            from engine.security import Security

            self.security = Security(self.ctx, keys_dir, self.config.security.reload_s)
        curve = self.security.server_options if self.security else (lambda domain: {})
        ep = self.config.endpoints
        # (options before bind: a listener copies them when it is made)
        self.ingest = self._bind(zmq.PULL, ep.ingest, {zmq.RCVHWM: self.config.ingest.receive_hwm})
        self.adapters = self._bind(zmq.ROUTER, ep.adapters, curve("adapters"))
        self.adapters.setsockopt(zmq.ROUTER_MANDATORY, 0)
        self.feed = self._bind(zmq.PUB, ep.feed, {zmq.SNDHWM: self.config.feed.send_hwm})
        self.operators = self._bind(zmq.ROUTER, ep.operators, curve("operators"))
        self.snapshot = self._bind(zmq.ROUTER, snapshot_endpoint(ep.feed, ep.snapshot),
                                   {zmq.SNDHWM: self.config.feed.snapshot_hwm})
        self.publisher = FeedPublisher(self.feed, self.snapshot)
        self.endpoints = {
            name: sock.getsockopt_string(zmq.LAST_ENDPOINT)
            for name, sock in (("ingest", self.ingest), ("adapters", self.adapters), ("feed", self.feed),
                               ("operators", self.operators), ("snapshot", self.snapshot))
        }
        self.spat = SpatStage(engine.net, engine.safety, self.config.spat, self.config.tick_s)
        self.spat.update(0, engine.estimator.state.lane_queue_veh)  # (loads its kernels before the first tick)
        self.links: dict[bytes, AdapterLink] = {}
        self.adapter_keys: dict[bytes, str] = {}  # with keys: adapter identity -> its key's name
        self.signal_adapter: dict[int, bytes] = {}
        self.command_seq = 0
        self.stopping = threading.Event()
        self.protocol_errors = 0
        self.registrations_refused = 0  # hellos refused (unknown junction, contradicting timings ...)
        self.refused_commands = 0  # commands adapters reported refusing (their conflict monitors)
        self.refused_by_kind: dict[str, int] = {}
        self.offline: set[int] = set()  # signals whose adapter has been silent for adapters.offline_after_s
        self._last_out_ns = 0  # when the adapters last heard from the engine (for heartbeats)
        self._drain_cap = self.config.ingest.max_queue  # frames per turn, lowered while frames are large
        self._inflight = None  # (batch, job): an ingest batch the kernel is taking in the background
        self._worker = (concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ingest")
                        if self.config.ingest.pipeline else None)
        self.drains_capped = 0  # drain turns that stopped at their cap with frames still waiting
        self._drains_capped_seen = 0
        self.backlog_ticks = 0  # consecutive ticks that found a backlog
        self.backlog_ticks_total = 0
        self._rate_window: deque[tuple[int, int]] = deque(maxlen=10)

    def _bind(self, kind: int, endpoint: str, options: dict[int, int] | None = None) -> zmq.Socket:
        sock = self.ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        for opt, value in (options or {}).items():
            sock.setsockopt(opt, value)
        if endpoint.endswith(":0"):
            endpoint = endpoint[:-2] + ":*"
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            sock.close()
            raise OSError(f"cannot bind {endpoint}: {exc} (is another engine running? set other "
                          "endpoints in the config, or a port of * for any free port)") from exc
        return sock

    def ready_line(self) -> str:
        return json.dumps({"ready": True, "endpoints": self.endpoints, "pid": os.getpid()})

    # -- the loop -------------------------------------------------------------------------

    def serve_forever(self) -> None:
        poller = zmq.Poller()
        for sock in (self.ingest, self.adapters, self.operators, self.snapshot):
            poller.register(sock, zmq.POLLIN)
        tick_ns = int(self.config.tick_s * 1e9)
        wall = not isinstance(self.clock, ManualClock)
        next_tick = self.clock.now_ns() + tick_ns
        coalesce_s = self.config.ingest.coalesce_ms / 1e3 if wall else 0.0
        while not self.stopping.is_set():
            timeout_ms = max(0.0, (next_tick - self.clock.now_ns()) / 1e6) if wall else 100.0
            events = dict(poller.poll(min(timeout_ms, 100.0)))
            if self.ingest in events:
                if self._drain_ingest() < COALESCE_BELOW and coalesce_s:
                    # a trickle: let frames gather for a moment so each pass takes many at once
                    # (on the wall clock only; a simulator waits for every tick)
                    time.sleep(coalesce_s)
            else:
                self._settle()
            if self.adapters in events:
                self._drain_adapters()
            if self.operators in events:
                self._drain_operators()
            if self.snapshot in events:
                self.publisher.serve_snapshots()
            if self.security is not None and self.security.maybe_reload():  # keys added or revoked
                self._forget_revoked_adapters()
            self.recorder.flush()
            if wall:
                now = self.clock.now_ns()
                if now >= next_tick:
                    self.run_tick(now)
                    missed = (now - next_tick) // tick_ns
                    if missed:
                        log.warning("tick overran: skipped %d tick(s)", missed)
                    next_tick += (missed + 1) * tick_ns
                self._heartbeat(now)

    def _drain_ingest(self) -> int:
        """Take waiting frames (a bounded number, see ``_watch_ingest``) and absorb them in order."""
        recv = self.ingest.recv
        frames = []
        append = frames.append
        capped = True
        try:
            for _ in range(self._drain_cap):
                append(recv(zmq.NOBLOCK))
        except zmq.Again:
            capped = False
        lens = np.fromiter(map(len, frames), dtype=np.int64, count=len(frames))
        if frames:  # bound the bytes of the next turn by this turn's frame size, not per frame
            ing = self.config.ingest
            self._drain_cap = max(1, min(ing.max_queue, int(ing.max_drain_bytes * len(frames) / max(lens.sum(), 1))))
        self.drains_capped += capped
        self._settle()  # the batch in flight is finished (its slow frames, its ticks) before this one
        if not frames:
            return 0
        sim = isinstance(self.clock, ManualClock)
        # a simulated clock has no time until the first watermark
        now = None if sim and self.engine.ticks == 0 else self.clock.now_ns()
        bank = self.engine.bank
        batch = bank.prepare(frames, lens)
        self._drained, self._recorded, self._absorb_now = frames, 0, now
        if capped and self._worker is not None:
            # more is waiting: the kernel takes this batch in another thread (it releases the
            # GIL) while the next turn receives; everything that reads the bank settles first
            self._inflight = (batch, self._worker.submit(bank.fast_pass, batch, 0, now))
        else:
            bank.finish(batch, bank.fast_pass(batch, 0, now), now, self._on_clock)
            self._record_ingest(len(frames))
        return len(frames)

    def _settle(self) -> None:
        """Finish the ingest batch the kernel is taking in the background, if any."""
        if self._inflight is None:
            return
        batch, job = self._inflight
        self._inflight = None
        self.engine.bank.finish(batch, job.result(), self._absorb_now, self._on_clock)
        self._record_ingest(len(batch.frames))

    def _record_ingest(self, stop: int) -> None:
        """Record the drained frames up to ``stop`` with the clock they were checked against."""
        if self.recorder.enabled:
            for frame in self._drained[self._recorded:stop]:
                self.recorder.ingest(frame, self._absorb_now)
        self._recorded = stop

    def _on_clock(self, clock, k: int) -> int | None:
        """Frame ``k`` was a watermark: on simulated time, tick at it; returns the clock after it."""
        self._record_ingest(k + 1)  # what came before the tick is on record before it
        sim = isinstance(self.clock, ManualClock)
        if not refuse_watermark(self.engine.bank, clock, sim, self.engine.ticks, self.clock.now_ns()):
            self.clock.set(clock.ts_ns)
            self.run_tick(clock.ts_ns)
        elif not sim:
            return self._absorb_now
        self._absorb_now = self.clock.now_ns() if self.engine.ticks else None
        return self._absorb_now

    def run_tick(self, now_ns: int) -> None:
        self._settle()
        self.recorder.tick(now_ns)
        self._watch_ingest(now_ns)
        chars = self.engine.tick(now_ns).decode()
        self._send_commands(chars, now_ns)
        self._watch_adapters(now_ns)
        self._publish(chars, now_ns)
        self._publish_alarms()

    def _watch_ingest(self, now_ns: int) -> None:
        """Backlog and rate of the ingest, once per tick.

        The policy under overload: the loop drains at most ``ingest.max_queue`` frames per turn
        (fewer when frames are large: about ``ingest.max_drain_bytes`` at the last turn's frame
        size) and ticks on time between turns; what it has not
        taken waits in ZeroMQ's queue, bounded by ``ingest.receive_hwm`` frames per sender, and
        beyond that senders are refused (a PUSH blocks or gets EAGAIN: the sender's choice). Nothing
        that reached the engine is dropped; a reading that waited longer than ``max_age_s`` is
        rejected as ``late``, counted. A backlog that outlasts ``ingest.overload_ticks`` ticks
        raises the ``ingest_overload`` alarm; it clears on the first tick with an empty queue.
        """
        backlog = self.drains_capped > self._drains_capped_seen
        self._drains_capped_seen = self.drains_capped
        self.backlog_ticks = self.backlog_ticks + 1 if backlog else 0
        if self.backlog_ticks:
            self.backlog_ticks_total += 1
        limit = self.config.ingest.overload_ticks
        alarms = self.engine.alarms
        if self.backlog_ticks >= limit:
            alarms.raise_("ingest_overload", "ingest", now_ns,
                          f"ingest queue not emptied for {self.backlog_ticks} ticks", "critical")
        elif self.backlog_ticks == 0:
            alarms.clear("ingest_overload", "ingest", now_ns)
        self._rate_window.append((now_ns, self.engine.bank.accepted))

    def ingest_rate_per_s(self) -> float:
        """Readings accepted per second over the last ticks (at most ten)."""
        if len(self._rate_window) < 2:
            return 0.0
        (t0, a0), (t1, a1) = self._rate_window[0], self._rate_window[-1]
        return (a1 - a0) / ((t1 - t0) / 1e9) if t1 > t0 else 0.0

    @property
    def feed_seq(self) -> int:
        """The seq of the latest feed message."""
        return self.publisher.seq

    def _publish_alarms(self) -> None:
        for alarm in self.engine.alarms.take_changes():
            self.publisher.publish(b"alarms", msgspec.structs.asdict(alarm))

    def _send_commands(self, chars: str, now_ns: int) -> None:
        self.command_seq += 1
        self._last_out_ns = now_ns
        for t, ident in self.signal_adapter.items():
            frame = P.encoder.encode(engine_command(self.engine, t, chars, now_ns, self.command_seq))
            self.recorder.adapter_out(ident, frame, now_ns)
            self.adapters.send_multipart([ident, frame])

    def _publish(self, chars: str, now_ns: int) -> None:
        net, st = self.engine.net, self.engine.estimator.state
        body = {
            "seq": 0, "ts_ns": now_ns, "edges": net.edge_ids,
            "flow_vph": np.round(st.edge_flow_vph, 1).tolist(),
            "speed_mps": np.round(st.edge_speed_mps, 2).tolist(),
            "density_vpkm": np.round(st.edge_density_vpkm, 1).tolist(),
            "queue_veh": np.round(st.edge_queue_veh, 1).tolist(),
            "travel_time_s": np.round(st.edge_travel_time_s, 2).tolist(),
            **conditions_extra(st),
        }
        self.publisher.publish(b"conditions", body)
        # spat.<junction> and advice.<junction>: bodies from engine.spat (a kernel over every link)
        eng = self.engine
        self.spat.load_plan(eng.controller, eng.target_phase)
        self.spat.update(now_ns, st.lane_queue_veh)
        for topic, body in self.spat.messages(chars, now_ns, eng.local_phase):
            self.publisher.publish(topic, body)

    # -- adapters -------------------------------------------------------------------------

    def _drain_adapters(self) -> None:
        self._settle()
        net = self.engine.net
        while True:
            try:
                if self.security is None:
                    ident, frame = self.adapters.recv_multipart(zmq.NOBLOCK)[:2]
                else:  # each message's key must be on the adapters' allow-list now (revocation)
                    frames = self.adapters.recv_multipart(zmq.NOBLOCK, copy=False)
                    key = self.security.who("adapters", frames[-1])
                    if key is None:
                        continue
                    ident, frame = frames[0].bytes, frames[1].bytes
                    self.adapter_keys[ident] = key
            except zmq.Again:
                return
            except (ValueError, IndexError):
                self.protocol_errors += 1
                continue
            self.recorder.adapter_in(ident, frame, self.clock.now_ns())
            try:
                msg = P.adapter_decoder.decode(frame)
            except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
                self.protocol_errors += 1
                log.warning("bad adapter message from %r: %s", ident, exc)
                continue
            link = self.links.setdefault(ident, AdapterLink(ident))
            link.last_seen_ns = self.clock.now_ns() if self.engine.ticks else -1  # (-1: before the first tick)
            if isinstance(msg, P.Hello):
                t = net.tls_index.get(msg.junction)
                old = self.signal_adapter.get(t) if t is not None else None
                reply = register(self.engine, self.signal_adapter, ident, msg)
                if reply.accepted:
                    if old is not None and old != ident:
                        log.warning("junction %s moves to a new adapter %r", msg.junction, ident)
                        self.links[old].junctions.remove(t)
                    if t not in link.junctions:
                        link.junctions.append(t)
                    log.info("adapter %r registered junction %s", ident, msg.junction)
                else:
                    self.registrations_refused += 1
                    log.warning("adapter %r refused for junction %s: %s", ident, msg.junction, reply.reason)
                out = P.encoder.encode(reply)
                self.recorder.adapter_out(ident, out, self.clock.now_ns())
                self.adapters.send_multipart([ident, out])
            elif isinstance(msg, P.Feedback):
                t = net.tls_index.get(msg.junction)
                if t is not None:
                    link.feedback[t] = msg.state
                    if msg.refused and link.refused_seq.get(t) != msg.seq:
                        link.refused_seq[t] = msg.seq
                        self.refused_commands += 1
                        kind = msg.refused.split(":", 1)[0]
                        self.refused_by_kind[kind] = self.refused_by_kind.get(kind, 0) + 1
                        log.warning("junction %s refused command %d: %s", msg.junction, msg.seq, msg.refused)

    def _watch_adapters(self, now_ns: int) -> None:
        """Once per tick: a signal whose adapter has said nothing for ``adapters.offline_after_s``
        is offline (alarm ``adapter_offline``, cleared when the adapter speaks again)."""
        limit_ns = int(self.config.adapters.offline_after_s * 1e9)
        net, alarms = self.engine.net, self.engine.alarms
        for t, ident in self.signal_adapter.items():
            link = self.links.get(ident)
            if link is not None and link.last_seen_ns < 0:
                link.last_seen_ns = now_ns  # heard before the first tick: counts as heard at it
            silent_ns = now_ns - link.last_seen_ns if link is not None else limit_ns
            if silent_ns >= limit_ns and t not in self.offline:
                self.offline.add(t)
                alarms.raise_("adapter_offline", net.tls_ids[t], now_ns,
                              f"no message from adapter {ident.decode(errors='replace')} for {silent_ns / 1e9:.1f} s",
                              "critical")
            elif silent_ns < limit_ns and t in self.offline:
                self.offline.discard(t)
                alarms.clear("adapter_offline", net.tls_ids[t], now_ns, "adapter back")

    def _heartbeat(self, now_ns: int) -> None:
        """On the wall clock: a ``Heartbeat`` to every adapter when nothing went out for ``heartbeat_s``."""
        if now_ns - self._last_out_ns < self.config.heartbeat_s * 1e9 or not self.signal_adapter:
            return
        self._last_out_ns = now_ns
        frame = P.encoder.encode(P.Heartbeat(ts_ns=now_ns))
        for ident in dict.fromkeys(self.signal_adapter.values()):
            self.adapters.send_multipart([ident, frame])  # (not recorded: it carries no decision)

    def _forget_revoked_adapters(self) -> None:
        """An adapter whose key was revoked gets no more commands: its signals are unregistered."""
        allowed = set(self.security.names["adapters"].values())
        for ident, key in list(self.adapter_keys.items()):
            if key not in allowed:
                del self.adapter_keys[ident]
                for t in [t for t, i in self.signal_adapter.items() if i == ident]:
                    del self.signal_adapter[t]
                self.links.pop(ident, None)
                log.warning("adapter %r: key %s revoked, its signals unregistered", ident, key)

    # -- operators ------------------------------------------------------------------------

    def _drain_operators(self) -> None:
        self._settle()
        while True:
            try:
                frames = self.operators.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            key_name = None
            if self.security is not None:  # each message's key must be on the operators' allow-list now
                key_name = self.security.who("operators", frames[-1])
                if key_name is None:
                    continue
            frames = [f.bytes for f in frames]
            ident, body = frames[0], frames[-1]
            envelope = frames[1:-1]  # REQ peers add an empty delimiter
            now_ns = self.clock.now_ns()
            self.recorder.operator_in(ident, body, now_ns)
            try:
                req = P.request_decoder.decode(body)
                reply = self.handle_request(req, ident, key_name, now_ns)
            except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
                reply = P.Reply(ok=False, error=f"bad request: {exc}")
            out = P.encoder.encode(reply)
            self.recorder.operator_out(ident, out, self.clock.now_ns())
            self.operators.send_multipart([ident, *envelope, out])

    def handle_request(self, req: P.Request, ident: bytes = b"", key_name: str | None = None,
                       now_ns: int | None = None) -> P.Reply:
        from engine import overrides

        if req.op in overrides.OPS:
            # who: the key's name when keys are on; else the name the operator gave (unverified)
            claimed = req.args.get("as")
            who = key_name or (claimed if isinstance(claimed, str) and claimed else f"anonymous:{ident.hex()}")
            ok, result, error = overrides.handle(self, req.op, req.args,
                                                 self.clock.now_ns() if now_ns is None else now_ns,
                                                 who, key_name is not None)
            return P.Reply(ok=ok, result=result, error=error)
        if req.op == "status":
            return P.Reply(ok=True, result=self.status())
        if req.op == "route":
            return self.route(req.args)
        if req.op == "alarms":
            board = self.engine.alarms
            return P.Reply(ok=True, result={
                "active": [msgspec.structs.asdict(a) for a in board.active()],
                "recent": [msgspec.structs.asdict(a) for a in list(board.history)[-100:]],
                "raised_total": board.raised_total})
        if req.op == "detectors":
            return P.Reply(ok=True, result=self.detectors())
        return P.Reply(ok=False, error=f"unknown op {req.op!r}; known: status, alarms, detectors, route, "
                                       "junction, override, release, audit")

    def detectors(self) -> dict:
        """Health of the detectors: counts by state, every faulty one, alarm changes so far."""
        eng = self.engine
        return {"by_health": eng.detector_health(), "faulty": eng.faulty_detectors(),
                "loops": eng.bank.n_loops, "cameras": eng.bank.n_cameras,
                "faults_total": eng.health.faults_total, "changes_total": eng.health.changes_total,
                "alarm_changes": eng.detector_alarm_changes}

    def route(self, args: dict) -> P.Reply:
        """Fastest route ``args["from"]`` -> ``args["to"]`` (edge or junction ids) on the live
        travel times (``args["minute"]``: on the last minute's instead of the tick's)."""
        from network.routing import Router, RouteError

        origin, dest = args.get("from"), args.get("to")
        if not isinstance(origin, str) or not isinstance(dest, str):
            return P.Reply(ok=False, error="route needs string args 'from' and 'to' (edge or junction ids)")
        eng = self.engine
        if getattr(self, "_router", None) is None:
            self._router = Router(eng.net, eng.estimator.model)
        st = eng.estimator.state
        tt = st.minute_travel_time_s if args.get("minute") else st.edge_travel_time_s
        try:
            result = self._router.route(origin, dest, tt).as_dict()
        except RouteError as exc:
            return P.Reply(ok=False, error=str(exc))
        result["ts_ns"] = self.clock.now_ns()
        return P.Reply(ok=True, result=result)

    def status(self) -> dict:
        eng = self.engine
        ts = eng.tick_stats()
        return {
            "controller": eng.controller.name,
            "clock": self.config.clock,
            "now_ns": self.clock.now_ns(),
            "tick": {"count": ts.ticks, "p50_ms": ts.p50_ms, "p99_ms": ts.p99_ms, "max_ms": ts.max_ms,
                     "period_s": self.config.tick_s},
            "ingest": {"accepted": eng.bank.accepted, "rejected": dict(eng.bank.rejected),
                       "rate_per_s": round(self.ingest_rate_per_s(), 1), "backlog_ticks": self.backlog_ticks,
                       "backlog_ticks_total": self.backlog_ticks_total},
            "detectors": {"loops": eng.bank.n_loops, "cameras": eng.bank.n_cameras, "by_health": eng.detector_health()},
            "alarms": {"active": len(eng.alarms.active()), "raised_total": eng.alarms.raised_total},
            "junctions": {"signals": eng.net.n_tls, "with_adapter": len(self.signal_adapter),
                          "online": len(self.signal_adapter) - len(self.offline), "offline": len(self.offline),
                          "offline_ids": sorted(eng.net.tls_ids[t] for t in self.offline)},
            "adapters": {"protocol_errors": self.protocol_errors, "connected": len(self.links),
                         "registrations_refused": self.registrations_refused,
                         "refused_commands": self.refused_commands, "refused_by_kind": dict(self.refused_by_kind)},
            "recording": self.recorder.status(),
            "feed": self.publisher.status(),
            "overrides": eng.overrides.status(),
            "security": self.security.status() if self.security else {"enabled": False},
        }

    def close(self) -> None:
        self._settle()
        if self._worker is not None:
            self._worker.shutdown()
        self.recorder.close(self.engine)
        for sock in (self.ingest, self.adapters, self.feed, self.operators, self.snapshot):
            sock.close(0)
        if self.security is not None:
            self.security.close()
        if self._own_ctx:
            self.ctx.term()


def refuse_watermark(bank, clock, sim: bool, ticks: int, now_ns: int) -> bool:
    """Count and log a ``Clock`` watermark the engine must not tick at (on the wall clock, or not
    after its last tick); True if refused. The server and ``replay`` both judge watermarks here."""
    if not sim:
        bank.reject("clock_in_wall_mode", "Clock watermarks are for engines on simulated time")
        return True
    if ticks and clock.ts_ns <= now_ns:
        bank.reject("clock_backwards", f"watermark {clock.ts_ns} <= {now_ns}")
        return True
    return False


def conditions_extra(st) -> dict:
    """The estimation keys of the ``conditions`` message beyond the per-tick basics (protocol.md)."""
    from network.estimate import los_letters

    return {
        "delay_s": _rounded_or_nil(st.edge_delay_s, 1),
        "los": los_letters(st.edge_los),
        "observed": st.edge_observed.tolist(),
        "minute": {
            "end_ns": st.minute_end_ns,
            "flow_vph": np.round(st.minute_flow_vph, 1).tolist(),
            "speed_mps": np.round(st.minute_speed_mps, 2).tolist(),
            "density_vpkm": np.round(st.minute_density_vpkm, 1).tolist(),
            "queue_veh": np.round(st.minute_queue_veh, 2).tolist(),
            "travel_time_s": np.round(st.minute_travel_time_s, 2).tolist(),
            "delay_s": _rounded_or_nil(st.minute_delay_s, 1),
            "los": los_letters(st.minute_los),
        },
    }


def _rounded_or_nil(a: np.ndarray, decimals: int) -> list:
    """``a`` rounded, as a list, with None (msgpack nil) where it is NaN (a tenth of the time of a
    Python loop over 10k edges)."""
    out = np.round(a, decimals).tolist()
    for k in np.flatnonzero(a != a).tolist():
        out[k] = None
    return out


def print_ready(server: Server) -> None:
    print(server.ready_line(), flush=True)
    sys.stdout.flush()
