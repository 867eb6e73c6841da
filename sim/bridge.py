"""The SUMO bridge: the simulated city's field devices, talking to the engine over its sockets.

Each simulated second the bridge

1. reads every placed detector by subscription (``sim.sumo``) and PUSHes the readings to the
   engine's ingest socket as one ``Batch``, stamped with simulated time, then a ``Clock``
   watermark for that second (with injected faults, ``sim.detector_faults``, some devices lie);
2. waits until every signal's adapter (one DEALER per signal) has the engine's ``Command`` for
   that second, and applies the commanded states to SUMO;
3. steps SUMO and lets the conflict monitor look at what SUMO actually showed.

The engine ticks on the watermark, so engine and simulation advance in lockstep and a run is
deterministic. Nothing here reads SUMO's vehicles for deciding: only detectors reach the engine.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import zmq

from detectors.messages import Batch, CameraReading, Clock, LoopReading, encode
from engine import protocol as P
from network.compiled import CompiledNetwork
from network.layout import DetectorSpec

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
                 failures=None):
        self.sumo = sumo
        self.net = net
        self.faults = faults  # a sim.detector_faults.FaultInjector: devices that lie (SUMO is untouched)
        self.ctx = context or zmq.Context.instance()
        self.timeout_ms = int(command_timeout_s * 1000)
        self.loop_ids = [s.id for s in specs if s.kind == "loop"]
        self.cameras = [s for s in specs if s.kind == "camera"]
        self.zone_ids = [f"{c.id}#{k}" for c in self.cameras for k in range(len(c.lanes))]
        self.zone_ptr = np.cumsum([0] + [len(c.lanes) for c in self.cameras])
        # camera movement counts: (zone, edge turned into) -> (camera, slot in its `turns`)
        self.turn_slot: dict[tuple[int, str], tuple[int, int]] = {
            (int(self.zone_ptr[c]) + k, edge): (c, j)
            for c, cam in enumerate(self.cameras) for j, (k, edge) in enumerate(cam.turns)
        }
        self.push = self.ctx.socket(zmq.PUSH)
        self.push.setsockopt(zmq.LINGER, 2000)
        self.push.connect(endpoints["ingest"])
        self.adapters: list[zmq.Socket] = []
        self._index: dict[zmq.Socket, int] = {}
        self.poller = zmq.Poller()
        for tls in net.tls_ids:
            sock = self.ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.IDENTITY, f"sim:{tls}".encode())
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(endpoints["adapters"])
            self._index[sock] = len(self.adapters)
            self.adapters.append(sock)
            self.poller.register(sock, zmq.POLLIN)
        self.failures = failures  # sim.faults.DetectorFaults: a random share of broken detectors, or None
        self.seq = 0
        self.shown = [""] * net.n_tls
        self.wait_s = 0.0

    def register(self, timeout_s: float = 30.0) -> None:
        """Say hello for every signal and wait for the engine to welcome each."""
        for t, sock in enumerate(self.adapters):
            sock.send(P.encoder.encode(P.Hello(junction=self.net.tls_ids[t], n_links=self.net.tls_n_links(t))))
        pending = set(range(len(self.adapters)))
        deadline = time.monotonic() + timeout_s
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                missing = ", ".join(self.net.tls_ids[t] for t in sorted(pending))
                raise BridgeError(f"engine did not welcome signals within {timeout_s:g} s: {missing}")
            for sock, _ in self.poller.poll(left * 1000):
                t = self._index[sock]
                msg = P.engine_to_adapter_decoder.decode(sock.recv())
                if isinstance(msg, P.Welcome):
                    if not msg.accepted:
                        raise BridgeError(f"engine refused signal {msg.junction}: {msg.reason}")
                    pending.discard(t)

    def send_readings(self, t_s: float, first: bool) -> int:
        """PUSH what every detector saw in the last second, then the watermark for ``t_s``."""
        ts = sim_ts_ns(t_s)
        readings: list[LoopReading | CameraReading] = []
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
                veh, halt = self.sumo.read_cameras()
                turns = [[0] * len(cam.turns) for cam in self.cameras]
                for zone, edge in self.sumo.read_zone_exits():
                    slot = self.turn_slot.get((zone, edge))
                    if slot is not None:
                        turns[slot[0]][slot[1]] += 1
                send = self.faults.cameras(t_s, veh, halt) if self.faults else None
                for c, cam in enumerate(self.cameras):
                    if send is not None and not send[c]:
                        continue
                    lo, hi = self.zone_ptr[c], self.zone_ptr[c + 1]
                    seen = (veh[lo:hi], halt[lo:hi])
                    if self.failures is not None:
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

    def apply_commands(self, t_s: float) -> None:
        """Wait for every signal's command for ``t_s`` and show it in SUMO."""
        ts = sim_ts_ns(t_s)
        pending = set(range(len(self.adapters)))
        t0 = time.perf_counter()
        while pending:
            events = self.poller.poll(self.timeout_ms)
            if not events:
                missing = ", ".join(self.net.tls_ids[t] for t in sorted(pending)[:5])
                raise BridgeError(f"no command from the engine for t={t_s:g} s within "
                                  f"{self.timeout_ms / 1000:g} s (signals {missing} ...)")
            for sock, _ in events:
                t = self._index[sock]
                while True:
                    try:
                        frame = sock.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    msg = P.engine_to_adapter_decoder.decode(frame)
                    if not isinstance(msg, P.Command):
                        continue
                    if msg.ts_ns != ts:
                        log.debug("stale command for %s at %d (want %d)", msg.junction, msg.ts_ns, ts)
                        continue
                    if msg.state != self.shown[t]:
                        self.sumo.set_tls_state(self.net.tls_ids[t], msg.state)
                        self.shown[t] = msg.state
                    pending.discard(t)
        self.wait_s += time.perf_counter() - t0

    def close(self) -> None:
        self.push.close()
        for sock in self.adapters:
            sock.close(0)
