"""Detector faults injected into a SUMO run: the device lies, SUMO is untouched.

The bridge reads every detector from SUMO as usual and, just before it sends the readings, lets
a :class:`FaultInjector` change what the chosen devices say, from a given simulated time on:

- ``silent``: the device sends nothing (the engine should call it ``missing``);
- ``stuck_on``: a loop reports occupancy 1 and no count; a camera reports every lane full;
- ``chattering``: a loop counts 2 vehicles every other second with almost no occupancy (contact
  bounce); a camera's vehicles in view jump between empty and full every second;
- ``constant``: the device freezes on its first reading from then on with a vehicle in it, and
  repeats it;
- ``zero_count_with_occupancy``: a loop reports no count, with its real occupancy, never below
  0.1 (a drifted threshold); a camera reports no vehicle in view but its real queue, at least 1;
- ``no_activity``: the device reports, but zero count and zero occupancy (a cut lead-in).

A fault is written ``ID=KIND[@T]`` (``L:-143_0:stop=stuck_on@120``): detector id, kind, and
the simulated second it starts (default: from the start). Ids may contain ``=`` and ``@``; the
last ``=`` separates the kind.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import msgspec
import numpy as np
import zmq

from detectors.bank import MAX_CAMERA_VEH_PER_M
from network.layout import DetectorSpec

FAULT_KINDS = ("silent", "stuck_on", "chattering", "constant", "zero_count_with_occupancy", "no_activity")
EXPECTED_STATE = {  # what the engine's health check should call each fault
    "silent": "missing", "stuck_on": "stuck_on", "chattering": "chattering", "constant": "constant",
    "zero_count_with_occupancy": "flow_zero_occ_nonzero", "no_activity": "no_activity",
}
CHATTER_OCCUPANCY = 0.02
DRIFT_OCCUPANCY = 0.1


class FaultError(ValueError):
    """A fault that cannot be injected as written."""


@dataclass(frozen=True)
class DetectorFault:
    detector: str
    kind: str
    start_s: float = 0.0

    def __str__(self) -> str:
        return f"{self.detector}={self.kind}@{self.start_s:g}"


def parse_fault(text: str) -> DetectorFault:
    """``ID=KIND[@T]`` -> :class:`DetectorFault`; a clear :class:`FaultError` otherwise."""
    det, eq, rest = text.rpartition("=")
    if not eq or not det:
        raise FaultError(f"fault {text!r}: write ID=KIND[@T], KIND one of {', '.join(FAULT_KINDS)}")
    kind, at, start = rest.partition("@")
    if kind not in FAULT_KINDS:
        raise FaultError(f"fault {text!r}: unknown kind {kind!r}; one of {', '.join(FAULT_KINDS)}")
    t = 0.0
    if at:
        try:
            t = float(start)
        except ValueError:
            raise FaultError(f"fault {text!r}: start {start!r} is not a number of seconds") from None
        if not math.isfinite(t) or t < 0:
            raise FaultError(f"fault {text!r}: start must be a finite time >= 0 s")
    return DetectorFault(det, kind, t)


class FaultInjector:
    """Rewrites the readings of faulty devices; vectorised over the loop and camera arrays."""

    def __init__(self, faults: list[DetectorFault], specs: list[DetectorSpec], lane_length_m: dict[str, float]):
        loops = [s.id for s in specs if s.kind == "loop"]
        cams = [s for s in specs if s.kind == "camera"]
        loop_pos = {d: k for k, d in enumerate(loops)}
        cam_pos = {c.id: k for k, c in enumerate(cams)}
        seen: set[str] = set()
        self.loop_faults: list[tuple[int, DetectorFault]] = []
        self.cam_faults: list[tuple[int, DetectorFault]] = []
        for f in faults:
            if f.detector in seen:
                raise FaultError(f"detector {f.detector} has two faults")
            seen.add(f.detector)
            if f.detector in loop_pos:
                self.loop_faults.append((loop_pos[f.detector], f))
            elif f.detector in cam_pos:
                self.cam_faults.append((cam_pos[f.detector], f))
            else:
                some = ", ".join((loops + [c.id for c in cams])[:3])
                raise FaultError(f"fault on unknown detector {f.detector!r} (the layout's ids look like {some})")
        self.cam_ptr = np.cumsum([0] + [len(c.lanes) for c in cams])
        # whole vehicles each camera lane's zone can hold (the engine's bound, rounded down)
        self.cam_full = np.array([math.floor(max(1.0, c.zone_m(k, lane_length_m) * MAX_CAMERA_VEH_PER_M))
                                  for c in cams for k in range(len(c.lanes))], dtype=np.int64)
        self._latched: dict[str, tuple] = {}

    def __bool__(self) -> bool:
        return bool(self.loop_faults or self.cam_faults)

    def loops(self, t_s: float, count: np.ndarray, occ: np.ndarray, speed: np.ndarray) -> np.ndarray:
        """Rewrite loop readings in place for ``t_s``; returns a bool mask of loops that send."""
        send = np.ones(count.size, dtype=np.bool_)
        for i, f in self.loop_faults:
            if t_s < f.start_s:
                continue
            k = f.kind
            if k == "silent":
                send[i] = False
            elif k == "stuck_on":
                count[i], occ[i], speed[i] = 0, 1.0, math.nan
            elif k == "chattering":
                count[i], occ[i], speed[i] = (2 if int(t_s) % 2 == 0 else 0), CHATTER_OCCUPANCY, math.nan
            elif k == "constant":
                frozen = self._latched.get(f.detector)
                if frozen is None and count[i] > 0:
                    frozen = self._latched[f.detector] = (int(count[i]), float(occ[i]), float(speed[i]))
                if frozen is not None:
                    count[i], occ[i], speed[i] = frozen
            elif k == "zero_count_with_occupancy":
                count[i], occ[i], speed[i] = 0, max(float(occ[i]), DRIFT_OCCUPANCY), math.nan
            elif k == "no_activity":
                count[i], occ[i], speed[i] = 0, 0.0, math.nan
        return send

    def cameras(self, t_s: float, veh: np.ndarray, halt: np.ndarray) -> np.ndarray:
        """Rewrite camera zone readings in place; returns a bool mask of cameras that send."""
        send = np.ones(self.cam_ptr.size - 1, dtype=np.bool_)
        for c, f in self.cam_faults:
            if t_s < f.start_s:
                continue
            lo, hi = self.cam_ptr[c], self.cam_ptr[c + 1]
            full = self.cam_full[lo:hi]
            k = f.kind
            if k == "silent":
                send[c] = False
            elif k == "stuck_on":
                veh[lo:hi] = full
                halt[lo:hi] = full
            elif k == "chattering":
                veh[lo:hi] = full if int(t_s) % 2 == 0 else 0
                halt[lo:hi] = 0
            elif k == "constant":
                frozen = self._latched.get(f.detector)
                if frozen is None and veh[lo:hi].sum() > 0:
                    frozen = self._latched[f.detector] = (veh[lo:hi].copy(), halt[lo:hi].copy())
                if frozen is not None:
                    veh[lo:hi], halt[lo:hi] = frozen
            elif k == "zero_count_with_occupancy":
                halt[lo:hi] = np.maximum(halt[lo:hi], 1)
                veh[lo:hi] = 0
            elif k == "no_activity":
                veh[lo:hi] = 0
                halt[lo:hi] = 0
        return send


class AlarmWatch:
    """A SUB on the engine's feed, topic ``alarms``: what an operator's screen would have shown.
    Create it before the simulation starts: a subscriber misses what was published before it
    joined."""

    def __init__(self, feed_endpoint: str, context: zmq.Context | None = None):
        self.sock = (context or zmq.Context.instance()).socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"alarms")
        self.sock.connect(feed_endpoint)
        self.alarms: list[dict] = []

    def _drain(self, timeout_ms: int) -> bool:
        if not self.sock.poll(timeout_ms):
            return False
        while True:
            try:
                _, body = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return True
            self.alarms.append(msgspec.msgpack.decode(body))

    def collect(self, kind: str, expected: int, timeout_s: float = 10.0) -> list[dict]:
        """Alarms of ``kind`` received, waiting (at most ``timeout_s``) until ``expected`` have come."""
        deadline = time.monotonic() + timeout_s
        while True:
            got = [a for a in self.alarms if a.get("kind") == kind]
            left = deadline - time.monotonic()
            if len(got) >= expected or left <= 0:
                return got
            self._drain(int(min(left, 0.2) * 1000))

    def close(self) -> None:
        self.sock.close(0)
