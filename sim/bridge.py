"""The SUMO bridge: the simulated city's field devices, talking to the engine over its sockets.

Each simulated second the bridge

1. reads every placed detector by subscription (``sim.sumo``) and PUSHes the readings to the
   engine's ingest socket as one ``Batch``, stamped with simulated time, then a ``Clock``
   watermark for that second (with injected faults, ``sim.detector_faults``, some devices lie);
2. waits until every signal's adapter has the engine's ``Command`` for that second, and shows
   in SUMO what the adapter decides;
3. steps SUMO and lets the conflict monitor look at what SUMO actually showed.

The engine ticks on the watermark, so engine and simulation advance in lockstep and a run is
deterministic. Nothing here reads SUMO's vehicles for deciding: only detectors reach the engine.

The bridge is the reference adapter: every signal is an :class:`engine.adapter.SignalAdapter`
(its own DEALER, the network's conflicts, the engine's safety timings as its cabinet's, SUMO's
program from the ``.net.xml`` as its local plan), so every command passes the adapter's
conflict monitor before SUMO shows it. With ``strict=False``, when the engine goes silent (its
process died, or no command came within ``command_timeout_s``) the bridge stops sending readings
and stops waiting: SUMO keeps stepping, one simulated second per step, the adapters hold the
last command and after ``fallback_after_s`` simulated seconds run their local plans.
:meth:`Bridge.resume` (after the engine is back on the same endpoints) says hello again with
every signal's display, and lockstep continues; a run with a planned kill and restart is as
deterministic as one without. With ``strict=True`` (a plain evaluation) silence is a
``BridgeError``: an outcome measured without the engine would not be the controller's.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import zmq

from detectors.messages import Batch, CameraReading, Clock, LoopReading, encode
from engine import protocol as P
from engine.adapter import JunctionSpec, SignalAdapter
from network.compiled import CompiledNetwork
from network.layout import DetectorSpec
from sim.additional import fold_zones, reading_slots, zones_of

log = logging.getLogger("traffic_engine.bridge")

# simulated second 0 is this instant (2026-01-01T00:00:00Z), so timestamps look like field data
SIM_EPOCH_NS = 1_767_225_600 * 10**9


class BridgeError(RuntimeError):
    """The engine did not answer as the protocol says."""


def sim_ts_ns(t_s: float) -> int:
    return SIM_EPOCH_NS + int(round(t_s * 1e9))


class Bridge:
    """Detector gateway and signal adapters of a simulated city."""

    def __init__(self, sumo, net: CompiledNetwork, specs: list[DetectorSpec], endpoints: dict[str, str],
                 context: zmq.Context | None = None, command_timeout_s: float = 30.0, faults=None,
                 failures=None, *, timings=None, programs: dict | None = None, fallback_after_s: float = 3.0,
                 heartbeat_s: float = 1.0, engine_alive=None, strict: bool = True, start_s: float = 0.0,
                 socket_setup=None):
        """``timings``: the cabinets' min green, yellow and red clearance (an object with
        ``min_green_s``, ``yellow_s``, ``red_clearance_s``: the engine config's ``safety``);
        ``programs``: local plans per signal (``engine.adapter.sumo_programs``);
        ``engine_alive``: a callable, False once the engine process is gone (the wait for its
        commands then ends at once); ``strict``: a missing command or a dead engine is a
        ``BridgeError`` (else the signals go on without the engine); ``socket_setup``: applied to
        each adapter's DEALER before it connects (``engine.security.secure_client`` for an engine
        run with keys)."""
        self.sumo = sumo
        self.net = net
        self.faults = faults  # a sim.detector_faults.FaultInjector: devices that lie (SUMO is untouched)
        self.ctx = context or zmq.Context.instance()
        self.timeout_ms = int(command_timeout_s * 1000)
        self.loop_ids = [s.id for s in specs if s.kind == "loop"]
        # approach cameras first, then box cameras (the fault injectors index approach cameras only)
        self.cameras = [s for s in specs if s.kind == "camera"] + [s for s in specs if s.kind == "box"]
        self.n_approach_cameras = sum(s.kind == "camera" for s in specs)
        self.zone_ptr = np.cumsum([0] + [zones_of(c) for c in self.cameras])
        # SUMO's zones: one per reading slot, then those over the branches of a camera lane's
        # view, each adding to its lane's slot (``zone_slot``)
        self.zone_ids, slots, self.n_slots = reading_slots(self.cameras)
        self.zone_slot = np.array(slots, dtype=np.int64)
        # camera movement counts: (zone, edge turned into) -> (camera, slot in its `turns`)
        self.turn_slot: dict[tuple[int, str], tuple[int, int]] = {
            (int(self.zone_ptr[c]) + k, edge): (c, j)
            for c, cam in enumerate(self.cameras) for j, (k, edge) in enumerate(cam.turns)
        }
        # the zones whose vehicles are followed for movement counts: the first this many (the
        # approach cameras'; box cameras count vehicles only)
        self.exit_zones = 1 + max((z for z, _ in self.turn_slot), default=-1)
        self.push = self.ctx.socket(zmq.PUSH)
        self.push.setsockopt(zmq.LINGER, 2000)
        self.push.connect(endpoints["ingest"])
        self.adapters: list[zmq.Socket] = []
        self.signals: list[SignalAdapter] = []
        self._index: dict[zmq.Socket, int] = {}
        self.poller = zmq.Poller()
        if timings is None:
            from engine.config import SafetyTimings
            timings = SafetyTimings()
        self.engine_alive = engine_alive
        self.strict = strict
        self.silent = False  # the engine is gone: no readings sent, no command awaited
        self.silent_steps = 0  # simulated seconds without the engine
        self.endpoints = endpoints
        for t, tls in enumerate(net.tls_ids):
            spec = JunctionSpec.from_network(net, t, min_green_s=timings.min_green_s, yellow_s=timings.yellow_s,
                                             red_clearance_s=timings.red_clearance_s, programs=programs)
            adapter = SignalAdapter(spec, heartbeat_s=heartbeat_s, fallback_after_s=fallback_after_s,
                                    start_ns=sim_ts_ns(start_s), identity=f"sim:{tls}".encode(), context=self.ctx,
                                    socket_setup=socket_setup)
            sock = adapter.connect(endpoints["adapters"])
            self._index[sock] = len(self.adapters)
            self.adapters.append(sock)
            self.signals.append(adapter)
            self.poller.register(sock, zmq.POLLIN)
        self.failures = failures  # sim.faults.DetectorFaults: a random share of broken detectors, or None
        self.seq = 0
        self.shown = [""] * net.n_tls
        self.wait_s = 0.0

    def register(self, timeout_s: float = 30.0, t_s: float | None = None) -> None:
        """Say hello (protocol v2: groups, conflicts, the display at ``t_s``) for every signal and
        wait for the engine to welcome each. Each hello is sent once, when its DEALER is
        connected, so a welcome answers exactly one hello."""
        now = sim_ts_ns(self.sumo.time if t_s is None else t_s)
        unsent = set(range(len(self.adapters)))
        pending = set(unsent)
        deadline = time.monotonic() + timeout_s
        while pending:
            for t in sorted(unsent):
                if self.signals[t].hello(now):
                    unsent.discard(t)
            left = deadline - time.monotonic()
            if left <= 0:
                missing = ", ".join(self.net.tls_ids[t] for t in sorted(pending))
                raise BridgeError(f"engine did not welcome signals within {timeout_s:g} s: {missing}")
            for sock, _ in self.poller.poll(min(left, 0.05) * 1000):
                t = self._index[sock]
                msg = self.signals[t].handle(sock.recv(), now)
                if isinstance(msg, P.Welcome) and msg.junction == self.net.tls_ids[t]:
                    if not msg.accepted:
                        raise BridgeError(f"engine refused signal {msg.junction}: {msg.reason}")
                    pending.discard(t)
        self.silent = False

    def resume(self, t_s: float, timeout_s: float = 60.0) -> None:
        """The engine is back (on the same endpoints): register every signal again with what it
        shows now; the next ``send_readings`` / ``apply_commands`` run in lockstep again."""
        self.register(timeout_s, t_s)

    def send_readings(self, t_s: float, first: bool) -> int:
        """PUSH what every detector saw in the last second, then the watermark for ``t_s``."""
        ts = sim_ts_ns(t_s)
        readings: list[LoopReading | CameraReading] = []
        if not self.silent and self.engine_alive is not None and not self.engine_alive():
            self._go_silent(t_s, "the engine process is gone")
        if self.silent:
            return 0  # (nothing queues for an engine that is not there)
        if not first:
            count, occ, speed = self.sumo.read_loops()
            send = None
            if self.failures is not None:
                count, occ, speed, send = self.failures.loops(count, occ, speed)
            if self.faults:
                lying = self.faults.loops(t_s, count, occ, speed)
                send = lying if send is None else send & lying
            for i, det in enumerate(self.loop_ids):
                if send is not None and not send[i]:
                    continue
                s = float(speed[i])
                readings.append(LoopReading(det, ts, 1.0, int(count[i]), float(occ[i]),
                                            None if math.isnan(s) else s))
            if self.cameras:
                veh, halt = (fold_zones(x, self.zone_slot, self.n_slots) for x in self.sumo.read_cameras())
                turns = [[0] * len(cam.turns) for cam in self.cameras]
                for zone, edge in self.sumo.read_zone_exits():
                    slot = self.turn_slot.get((zone, edge))
                    if slot is not None:
                        turns[slot[0]][slot[1]] += 1
                send = self.faults.cameras(t_s, veh, halt) if self.faults else None
                for c, cam in enumerate(self.cameras):
                    approach = c < self.n_approach_cameras
                    if send is not None and approach and not send[c]:
                        continue
                    lo, hi = self.zone_ptr[c], self.zone_ptr[c + 1]
                    seen = (veh[lo:hi], halt[lo:hi])
                    if self.failures is not None and approach:
                        seen = self.failures.camera(c, *seen)
                        if seen is None:
                            continue
                    readings.append(CameraReading(cam.id, ts, 1.0, seen[0].tolist(), seen[1].astype(float).tolist(),
                                                  turn_counts=turns[c]))
        self.seq += 1
        if readings:
            self.push.send(encode(Batch(readings=readings, source="sumo", seq=self.seq)))
        self.push.send(encode(Clock(ts)))
        return len(readings)

    def _go_silent(self, t_s: float, why: str) -> None:
        if self.strict:
            raise BridgeError(f"t={t_s:g} s: {why}")
        log.warning("t=%g s: %s: signals continue on their own (local plans after %g s)", t_s, why,
                    self.signals[0].fallback_ns / 1e9 if self.signals else 0)
        self.silent = True

    def apply_commands(self, t_s: float) -> None:
        """Wait for every signal's command for ``t_s``, pass each through its adapter (conflict
        monitor, fallback) and show what the adapter decides in SUMO."""
        ts = sim_ts_ns(t_s)
        pending = set(range(len(self.adapters))) if not self.silent else set()
        commands: list[P.Command | None] = [None] * len(self.adapters)
        t0 = time.perf_counter()
        deadline = t0 + self.timeout_ms / 1000
        while pending:
            events = self.poller.poll(100)
            if not events:
                if self.engine_alive is not None and not self.engine_alive():
                    self._go_silent(t_s, "the engine process is gone")
                    break
                if time.perf_counter() < deadline:
                    continue
                missing = ", ".join(self.net.tls_ids[t] for t in sorted(pending)[:5])
                self._go_silent(t_s, f"no command from the engine within {self.timeout_ms / 1000:g} s "
                                     f"(signals {missing} ...)")
                break
            for sock, _ in events:
                self._receive(sock, ts, commands, pending)
        if self.silent:
            self.silent_steps += 1
            for sock in self.adapters:  # whatever is still there (heartbeats, a late command)
                self._receive(sock, ts, commands, pending)
        for t, adapter in enumerate(self.signals):
            state = adapter.step(ts, commands[t])
            if state != self.shown[t]:
                self.sumo.set_tls_state(self.net.tls_ids[t], state)
                self.shown[t] = state
            if commands[t] is not None:
                adapter.feedback(ts)
        self.wait_s += time.perf_counter() - t0

    def _receive(self, sock, ts: int, commands: list, pending: set) -> None:
        t = self._index[sock]
        adapter = self.signals[t]
        while True:
            try:
                frame = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            msg = adapter.handle(frame, ts)
            if not isinstance(msg, P.Command):
                continue
            if msg.ts_ns != ts:
                log.debug("stale command for %s at %d (want %d)", msg.junction, msg.ts_ns, ts)
                continue
            commands[t] = msg
            pending.discard(t)

    def adapter_summary(self) -> dict:
        """What the adapters did: refused commands by kind, fallbacks, time on local plans."""
        refused: dict[str, int] = {}
        for a in self.signals:
            for k, v in a.stats.refused.items():
                refused[k] = refused.get(k, 0) + v
        return {
            "commands": sum(a.stats.commands for a in self.signals),
            "commands_applied": sum(a.stats.applied for a in self.signals),
            "commands_refused": sum(refused.values()),
            "refused_by_kind": refused,
            "fallbacks": sum(a.stats.fallbacks for a in self.signals),
            "handbacks": sum(a.stats.handbacks for a in self.signals),
            "fallback_s": round(max((a.fallback_time_ns() for a in self.signals), default=0) / 1e9, 3),
            "silent_s": self.silent_steps,
        }

    def close(self) -> None:
        self.push.close()
        for adapter in self.signals:
            adapter.close()
