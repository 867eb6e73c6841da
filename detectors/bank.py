"""The detector bank: validate readings against the inventory and bin them per lane per tick.

``DetectorBank.absorb_frame`` takes one raw ingest frame, decodes it, checks every reading and
accumulates the accepted ones; ``close_tick`` turns what arrived since the last tick into
per-lane arrays (:class:`LaneObservations`) and resets the accumulators. Every rejection is
counted by reason and logged (rate-limited); nothing here raises on bad input.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field

import msgspec
import numpy as np

from detectors.messages import Batch, CameraReading, Clock, LoopReading, decode
from network.compiled import CompiledNetwork
from network.layout import DetectorSpec

log = logging.getLogger("traffic_engine.ingest")

ROLE_STOP, ROLE_UPSTREAM = 0, 1
MAX_VEH_PER_LANE_PER_S = 1.0  # no lane discharges more than 3,600 veh/h; above that is not a count
MAX_CAMERA_VEH_PER_M = 0.25  # a car every 4 m, bumper to bumper, is the most a camera can see


@dataclass(frozen=True)
class IngestLimits:
    """Bounds that separate a reading from noise."""

    max_message_bytes: int = 1 << 20
    max_future_s: float = 5.0  # readings stamped further ahead of the engine clock are skewed
    max_age_s: float = 300.0  # readings older than this are late
    max_interval_s: float = 3600.0


@dataclass
class LaneObservations:
    """What the detectors said about each lane during one tick (float64[n_lanes] each).

    Counts are vehicles in the tick; ``*_seen`` say whether any detector of that kind reported;
    ``speed_mps``, ``camera_vehicles`` and ``camera_queue_veh`` are NaN where nothing was seen.
    """

    stop_count: np.ndarray
    stop_occupancy: np.ndarray
    stop_seen: np.ndarray
    upstream_count: np.ndarray
    upstream_seen: np.ndarray
    speed_mps: np.ndarray
    camera_vehicles: np.ndarray
    camera_queue_veh: np.ndarray
    interval_s: float
    # camera movement counts, one slot per (lane, edge it turns into) of every camera's `turns`:
    # the slot's lane and destination edge (indices, fixed), vehicles in the tick (NaN: not reported)
    turn_lane: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    turn_edge: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    turn_count: np.ndarray = field(default_factory=lambda: np.zeros(0))


class DetectorBank:
    """Inventory, validation and per-tick binning of detector readings."""

    def __init__(self, net: CompiledNetwork, specs: list[DetectorSpec], limits: IngestLimits | None = None):
        self.net = net
        self.limits = limits or IngestLimits()
        self.loop_index: dict[str, int] = {}
        self.camera_index: dict[str, int] = {}
        loop_lane, loop_role = [], []
        cam_ptr, cam_lanes, cam_range = [0], [], []
        turn_ptr, turn_lane, turn_edge = [0], [], []
        for spec in specs:
            missing = [x for x in (*spec.lanes, *(u for up in spec.upstream for u in up)) if x not in net.lane_index]
            if missing:
                raise ValueError(f"detector {spec.id}: lanes not in the network: {missing}")
            if spec.id in self.loop_index or spec.id in self.camera_index:
                raise ValueError(f"detector id used twice: {spec.id}")
            if spec.kind == "loop":
                self.loop_index[spec.id] = len(loop_lane)
                loop_lane.append(net.lane_index[spec.lanes[0]])
                loop_role.append(ROLE_UPSTREAM if spec.role == "upstream" else ROLE_STOP)
            elif spec.kind == "camera":
                self.camera_index[spec.id] = len(cam_range)
                cam_lanes.extend(net.lane_index[x] for x in spec.lanes)
                cam_ptr.append(len(cam_lanes))
                cam_range.append(spec.range_m)
                for k, edge in spec.turns:
                    if not 0 <= k < len(spec.lanes) or edge not in net.edge_index:
                        raise ValueError(f"detector {spec.id}: bad turn ({k}, {edge!r})")
                    turn_lane.append(net.lane_index[spec.lanes[k]])
                    turn_edge.append(net.edge_index[edge])
                turn_ptr.append(len(turn_lane))
            else:
                raise ValueError(f"detector {spec.id}: unknown kind {spec.kind!r}")
        self.loop_lane = np.array(loop_lane, dtype=np.int32)
        self.loop_role = np.array(loop_role, dtype=np.int8)
        self.camera_lane_ptr = np.array(cam_ptr, dtype=np.int64)
        self.camera_lane_idx = np.array(cam_lanes, dtype=np.int32)
        self.camera_range_m = np.array(cam_range, dtype=np.float64)
        self.camera_turn_ptr = np.array(turn_ptr, dtype=np.int64)
        self.turn_lane = np.array(turn_lane, dtype=np.int32)
        self.turn_edge = np.array(turn_edge, dtype=np.int32)
        self._turn_count = np.full(len(turn_lane), np.nan)
        lane_len = dict(zip(net.lane_ids, net.lane_length_m.tolist()))
        self._cam_capacity = np.array(
            [max(1.0, spec.zone_m(k, lane_len) * MAX_CAMERA_VEH_PER_M)
             for spec in specs if spec.kind == "camera" for k in range(len(spec.lanes))],
            dtype=np.float64,
        )

        n_loops, n_slots = len(loop_lane), len(cam_lanes)
        self._loop_count = np.zeros(n_loops)
        self._loop_occ_time = np.zeros(n_loops)  # occupancy x interval, summed
        self._loop_time = np.zeros(n_loops)
        self._loop_speed_sum = np.zeros(n_loops)
        self._loop_speed_n = np.zeros(n_loops)
        self._cam_vehicles = np.full(n_slots, np.nan)
        self._cam_queue = np.full(n_slots, np.nan)
        self._last_seq: dict[str, int] = {}

        self.accepted = 0
        self.rejected: Counter[str] = Counter()
        self.watermark_ns: int | None = None

    @property
    def n_loops(self) -> int:
        return self.loop_lane.size

    @property
    def n_cameras(self) -> int:
        return self.camera_range_m.size

    # -- intake ---------------------------------------------------------------------------

    def reject(self, reason: str, detail: str = "") -> None:
        self.rejected[reason] += 1
        n = self.rejected[reason]
        if n <= 10 or n & (n - 1) == 0:  # the first ten, then at powers of two
            log.warning("rejected reading (%s, %d so far): %s", reason, n, detail[:200])

    def absorb_frame(self, frame: bytes, now_ns: int | None) -> Clock | None:
        """Decode and absorb one ingest frame. Returns a ``Clock`` watermark if it was one.

        ``now_ns`` is the engine's clock; None while a simulated clock has not started yet
        (then the skew and lateness checks cannot apply).
        """
        if len(frame) > self.limits.max_message_bytes:
            self.reject("oversized", f"{len(frame)} bytes")
            return None
        try:
            msg = decode(frame)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
            # (msgspec raises UnicodeDecodeError, a ValueError, on invalid UTF-8 in a string)
            self.reject("malformed", str(exc))
            return None
        if isinstance(msg, Clock):
            return msg
        self.absorb(msg, now_ns)
        return None

    def absorb(self, msg: LoopReading | CameraReading | Batch, now_ns: int | None) -> None:
        if isinstance(msg, Batch):
            for r in msg.readings:
                self._absorb_one(r, now_ns)
        else:
            self._absorb_one(msg, now_ns)

    def _absorb_one(self, r: LoopReading | CameraReading, now_ns: int | None) -> None:
        lim = self.limits
        if not (0.0 < r.interval_s <= lim.max_interval_s) or not math.isfinite(r.interval_s):
            return self.reject("bad_interval", f"{r!r}")
        if now_ns is not None:
            if r.ts_event_ns > now_ns + lim.max_future_s * 1e9:
                return self.reject("clock_skew", f"{r!r} ahead of engine clock {now_ns}")
            if r.ts_event_ns < now_ns - lim.max_age_s * 1e9:
                return self.reject("late", f"{r!r} older than {lim.max_age_s} s")
        if isinstance(r, LoopReading):
            i = self.loop_index.get(r.detector)
            if i is None:
                return self.reject("unknown_detector", r.detector)
            if not self._check_seq(r.detector, r.seq):
                return None
            if not (math.isfinite(r.occupancy) and (r.speed_mps is None or math.isfinite(r.speed_mps))):
                return self.reject("non_finite", f"{r!r}")
            if r.count < 0 or (r.speed_mps is not None and r.speed_mps < 0):
                return self.reject("negative", f"{r!r}")
            if not 0.0 <= r.occupancy <= 1.0:
                return self.reject("occupancy_range", f"{r!r}")
            if r.count > MAX_VEH_PER_LANE_PER_S * r.interval_s + 1:
                return self.reject("count_impossible", f"{r!r}")
            self._loop_count[i] += r.count
            self._loop_occ_time[i] += r.occupancy * r.interval_s
            self._loop_time[i] += r.interval_s
            if r.speed_mps is not None and r.count > 0:
                self._loop_speed_sum[i] += r.speed_mps * r.count
                self._loop_speed_n[i] += r.count
        else:
            c = self.camera_index.get(r.camera)
            if c is None:
                return self.reject("unknown_detector", r.camera)
            lo, hi = int(self.camera_lane_ptr[c]), int(self.camera_lane_ptr[c + 1])
            if len(r.counts) != hi - lo or len(r.queue_veh) != hi - lo:
                return self.reject("lanes_mismatch", f"{r.camera}: expected {hi - lo} lanes")
            counts = np.asarray(r.counts, dtype=np.float64)
            queue = np.asarray(r.queue_veh, dtype=np.float64)
            if not (np.isfinite(queue).all()):
                return self.reject("non_finite", f"{r!r}")
            if (counts < 0).any() or (queue < 0).any():
                return self.reject("negative", f"{r!r}")
            cap = self._cam_capacity[lo:hi]
            if (counts > cap).any() or (queue > cap).any():
                return self.reject("count_impossible", f"{r!r}")
            t0, t1 = int(self.camera_turn_ptr[c]), int(self.camera_turn_ptr[c + 1])
            turns = None
            if r.turn_counts:
                if len(r.turn_counts) != t1 - t0:
                    return self.reject("lanes_mismatch", f"{r.camera}: expected {t1 - t0} turn counts")
                turns = np.asarray(r.turn_counts, dtype=np.float64)
                if (turns < 0).any():
                    return self.reject("negative", f"{r!r}")
                if (turns > MAX_VEH_PER_LANE_PER_S * r.interval_s + 1).any():
                    return self.reject("count_impossible", f"{r!r}")
            if not self._check_seq(r.camera, r.seq):
                return None
            self._cam_vehicles[lo:hi] = counts
            self._cam_queue[lo:hi] = queue
            if turns is not None:
                seen = self._turn_count[t0:t1]
                self._turn_count[t0:t1] = np.where(np.isnan(seen), 0.0, seen) + turns
        self.accepted += 1

    def _check_seq(self, source: str, seq: int) -> bool:
        if seq < 0:
            return True
        last = self._last_seq.get(source)
        if last is not None and seq <= last:
            self.reject("replay", f"{source} seq {seq} after {last}")
            return False
        self._last_seq[source] = seq
        return True

    # -- per tick -------------------------------------------------------------------------

    def close_tick(self, interval_s: float) -> LaneObservations:
        """Per-lane observations of the readings absorbed since the last call; resets."""
        n = self.net.n_lanes
        stop = self.loop_role == ROLE_STOP
        seen = self._loop_time > 0
        stop_count = np.zeros(n)
        up_count = np.zeros(n)
        stop_occ_time = np.zeros(n)
        stop_time = np.zeros(n)
        stop_seen = np.zeros(n, dtype=np.bool_)
        up_seen = np.zeros(n, dtype=np.bool_)
        np.add.at(stop_count, self.loop_lane[stop], self._loop_count[stop])
        np.add.at(up_count, self.loop_lane[~stop], self._loop_count[~stop])
        np.add.at(stop_occ_time, self.loop_lane[stop], self._loop_occ_time[stop])
        np.add.at(stop_time, self.loop_lane[stop], self._loop_time[stop])
        stop_seen[self.loop_lane[stop & seen]] = True
        up_seen[self.loop_lane[~stop & seen]] = True
        speed_sum = np.zeros(n)
        speed_n = np.zeros(n)
        np.add.at(speed_sum, self.loop_lane, self._loop_speed_sum)
        np.add.at(speed_n, self.loop_lane, self._loop_speed_n)
        cam_veh = np.full(n, np.nan)
        cam_queue = np.full(n, np.nan)
        cam_veh[self.camera_lane_idx] = self._cam_vehicles
        cam_queue[self.camera_lane_idx] = self._cam_queue
        with np.errstate(invalid="ignore", divide="ignore"):
            obs = LaneObservations(
                stop_count=stop_count,
                stop_occupancy=np.where(stop_time > 0, stop_occ_time / stop_time, np.nan),
                stop_seen=stop_seen,
                upstream_count=up_count,
                upstream_seen=up_seen,
                speed_mps=np.where(speed_n > 0, speed_sum / speed_n, np.nan),
                camera_vehicles=cam_veh,
                camera_queue_veh=cam_queue,
                interval_s=interval_s,
                turn_lane=self.turn_lane,
                turn_edge=self.turn_edge,
                turn_count=self._turn_count.copy(),
            )
        for a in (self._loop_count, self._loop_occ_time, self._loop_time, self._loop_speed_sum, self._loop_speed_n):
            a.fill(0.0)
        self._cam_vehicles.fill(np.nan)
        self._cam_queue.fill(np.nan)
        self._turn_count.fill(np.nan)
        return obs
