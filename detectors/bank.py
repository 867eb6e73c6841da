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
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec
import numpy as np

from detectors.fastpath import NO_TIME, REASONS, IdTable, LoopState, absorb_loop_arrays, absorb_loop_frames
from detectors.messages import (COUNT_DTYPE, OCC_DTYPE, SPEED_DTYPE, Batch, CameraReading, Clock, IngestMessage,
                                LoopBulk, LoopReading, Roster, decode)
from network.compiled import CompiledNetwork
from network.layout import DetectorSpec

log = logging.getLogger("traffic_engine.ingest")

ROLE_STOP, ROLE_UPSTREAM = 0, 1
MAX_VEH_PER_LANE_PER_S = 1.0  # no lane discharges more than 3,600 veh/h; above that is not a count
MAX_CAMERA_VEH_PER_M = 0.25  # a car every 4 m, bumper to bumper, is the most a camera can see
MAX_VEHICLE_CLASSES = 16
_REASON_CODE = {r: code for code, r in enumerate(REASONS)}  # the kernels' rejection reasons


@dataclass(frozen=True)
class IngestLimits:
    """Bounds that separate a reading from noise."""

    max_message_bytes: int = 1 << 20
    max_future_s: float = 5.0  # readings stamped further ahead of the engine clock are skewed
    max_age_s: float = 300.0  # readings older than this are late
    max_interval_s: float = 3600.0
    max_sources: int = 100_000  # sources whose batch/bulk sequence numbers are tracked
    max_rosters: int = 100_000


@dataclass
class FrameBatch:
    """Received frames, joined for the kernel (``buf``; frame k is ``buf[offsets[k]:offsets[k+1]]``)."""

    frames: list[bytes]
    buf: np.ndarray
    offsets: np.ndarray
    first_bad: np.ndarray  # per rejection reason, the first frame rejected for it (-1: none)


def _clip64(x: int) -> int:
    """msgspec takes integers up to 2**64 - 1; the kernels hold int64."""
    return max(-(1 << 63), min(x, (1 << 63) - 1))


BOX_BLIND_VEH = 5.0  # vehicles into the junction unseen by its box cameras: they are not trusted


@dataclass
class LaneObservations:
    """What the detectors said about each lane during one tick (float64[n_lanes] each).

    Counts are vehicles in the tick; ``*_seen`` say whether any detector of that kind reported;
    per-lane arrays are float64[n_lanes];
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
    # box cameras: vehicles on each signal link's path through its junction (float64[n_links],
    # NaN where none watches it or it did not report this tick; None: the bank has no box cameras)
    link_box_veh: np.ndarray | None = None
    # box cameras' crossing zones: per entry of ``link_cross_idx`` (a link, a link crossing it),
    # halting vehicles on the stretch of the crossing link's path in the link's way (NaN:
    # unknown; None: the bank has no crossing zones)
    cross_box_veh: np.ndarray | None = None


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
        self.box_index: dict[str, int] = {}
        box_link: list[int] = []
        box_zone_ptr, zone_entry, zone_link = [0], [], []  # box crossing zones, see ``_cross_box``
        for spec in specs:
            if spec.kind == "box":  # a camera over a link's path through the junction (internal lanes)
                if not 0 <= spec.link < net.n_links:
                    raise ValueError(f"detector {spec.id}: no signal link {spec.link}")
                if spec.id in self.box_index:
                    raise ValueError(f"detector id used twice: {spec.id}")
                self.box_index[spec.id] = len(box_link)
                box_link.append(spec.link)
                for *_, foe in spec.crossings:
                    row = range(int(net.link_cross_ptr[foe]), int(net.link_cross_ptr[foe + 1])) if (
                        0 <= foe < net.n_links) else range(0)
                    entry = [k for k in row if net.link_cross_idx[k] == spec.link]
                    if not entry:
                        raise ValueError(f"detector {spec.id}: a crossing zone in the way of link {foe}, "
                                         f"which the network does not know link {spec.link} to cross")
                    zone_entry.append(entry[0])
                    zone_link.append(spec.link)
                box_zone_ptr.append(len(zone_entry))
                continue
            missing = [x for x in (*spec.lanes, *(u for up in spec.upstream for u in up),
                                   *(u for _, _, lanes in spec.branches for u in lanes)) if x not in net.lane_index]
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
                bad = [b for b in spec.branches if not 0 <= b[0] < len(spec.lanes) or not b[2]]
                if bad:
                    raise ValueError(f"detector {spec.id}: bad branch {bad[0]} (lane index, start, lanes)")
                for k, edge in spec.turns:
                    if not 0 <= k < len(spec.lanes) or edge not in net.edge_index:
                        raise ValueError(f"detector {spec.id}: bad turn ({k}, {edge!r})")
                    turn_lane.append(net.lane_index[spec.lanes[k]])
                    turn_edge.append(net.edge_index[edge])
                turn_ptr.append(len(turn_lane))
            else:
                raise ValueError(f"detector {spec.id}: unknown kind {spec.kind!r}")
        self.box_link = np.array(box_link, dtype=np.int64)
        self._box_veh = np.full(len(box_link), np.nan)
        self.box_zone_ptr = np.array(box_zone_ptr, dtype=np.int64)
        self.zone_entry = np.array(zone_entry, dtype=np.int64)  # per crossing zone: its entry in link_cross_idx
        self.zone_link = np.array(zone_link, dtype=np.int64)  # and the link whose path it is on
        self._zone_veh = np.full(len(zone_entry), np.nan)
        self._box_last_seq = np.full(len(box_link), -1, dtype=np.int64)
        self._box_last_ts = np.full(len(box_link), NO_TIME, dtype=np.int64)
        self._box_watched = np.zeros(net.n_links, dtype=np.bool_)  # links some box camera watches
        self._box_watched[self.box_link] = True
        # box health: (link, entry lane) pairs of the watched links; per lane, vehicles its
        # stop-bar loop counted since a box of one of its links last saw anybody
        pl = sorted({(int(net.move_link[m]), int(net.move_in_lane[m])) for m in range(net.n_movements)
                     if net.move_link[m] >= 0 and self._box_watched[net.move_link[m]]})
        self._pl_link = np.array([x for x, _ in pl], dtype=np.int64)
        self._pl_lane = np.array([y for _, y in pl], dtype=np.int64)
        self._box_blind = np.zeros(net.n_lanes)
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
        self.loop_ids = [spec.id for spec in specs if spec.kind == "loop"]
        self._id_table = IdTable.build(self.loop_ids)
        self.loops = LoopState(n_loops)
        self._lim = np.array([self.limits.max_interval_s, self.limits.max_future_s * 1e9,
                              self.limits.max_age_s * 1e9])
        self._cam_vehicles = np.full(n_slots, np.nan)
        self._cam_queue = np.full(n_slots, np.nan)
        self._cam_last_seq = np.full(len(cam_range), -1, dtype=np.int64)
        self._cam_last_ts = np.full(len(cam_range), NO_TIME, dtype=np.int64)
        self._source_seq: dict[tuple[str, str], int] = {}  # (kind, source) -> last batch/bulk seq
        self._rosters: dict[tuple[str, int], np.ndarray] = {}  # (source, roster) -> loop indices

        self._py_accepted = 0
        self._py_rejected: Counter[str] = Counter()
        self._logged: Counter[str] = Counter()
        self.watermark_ns: int | None = None

    @property
    def n_loops(self) -> int:
        return self.loop_lane.size

    @property
    def n_cameras(self) -> int:
        return self.camera_range_m.size

    @property
    def accepted(self) -> int:
        """Readings accepted so far (a camera reading counts once, a bulk message per loop)."""
        return self._py_accepted + int(self.loops.accepted[0])

    @property
    def rejected(self) -> Counter[str]:
        """Readings (and frames that were not readings at all) rejected so far, by reason."""
        out = Counter(self._py_rejected)
        for code, n in enumerate(self.loops.rejected.tolist()):
            if n:
                out[REASONS[code]] += n
        return out

    def rejected_count(self, reason: str) -> int:
        """``rejected[reason]`` without building the whole count."""
        code = _REASON_CODE.get(reason)
        return self._py_rejected[reason] + (int(self.loops.rejected[code]) if code is not None else 0)

    # -- intake ---------------------------------------------------------------------------

    def reject(self, reason: str, detail: str = "", n: int = 1) -> None:
        self._py_rejected[reason] += n
        self._log_rejection(reason, self.rejected_count(reason), detail)

    def _log_rejection(self, reason: str, total: int, detail: str) -> None:
        """Log the first ten of each reason, then whenever the count passes a power of two."""
        before = self._logged[reason]
        if total == before:
            return
        self._logged[reason] = total
        if before < 10 or total.bit_length() > before.bit_length():
            log.warning("rejected reading (%s, %d so far): %s", reason, total, detail[:200])

    def absorb_frames(self, frames: list[bytes], now_ns: int | None,
                      on_clock: Callable[[Clock, int], int | None] | None = None,
                      lens: np.ndarray | None = None) -> None:
        """Absorb received frames in order. Plain loop readings go through the numba kernel; each
        other frame is decoded by msgspec. A ``Clock`` frame (the ``k``-th) calls ``on_clock(clock, k)``,
        which may tick the engine and returns the clock to check the frames after it against.
        ``lens``: the frames' lengths, when the caller has them already."""
        if frames:
            batch = self.prepare(frames, lens)
            self.finish(batch, self.fast_pass(batch, 0, now_ns), now_ns, on_clock)

    def prepare(self, frames: list[bytes], lens: np.ndarray | None = None) -> FrameBatch:
        """The frames joined into one buffer for the kernel (no engine state is touched)."""
        if lens is None:
            lens = np.fromiter(map(len, frames), dtype=np.int64, count=len(frames))
        offsets = np.zeros(len(frames) + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        small = lens <= self.limits.max_message_bytes
        buf = np.frombuffer(b"".join(frames) if small.all() else
                            b"".join(f if ok else b"" for f, ok in zip(frames, small)), dtype=np.uint8)
        if not small.all():  # oversized frames were left out of the buffer: they have length 0 there
            offsets[1:] = np.cumsum(np.where(small, lens, 0))
        return FrameBatch(frames, buf, offsets, np.full(len(REASONS), -1, dtype=np.int64))

    def fast_pass(self, batch: FrameBatch, k: int, now_ns: int | None) -> int:
        """Run the kernel from frame ``k`` while frames are plain loop readings; returns the first
        frame it left. The kernel releases the GIL, so this may run in another thread while the
        caller receives (nothing else may touch the bank meanwhile)."""
        t = self._id_table
        return absorb_loop_frames(batch.buf, batch.offsets, k, NO_TIME if now_ns is None else now_ns, self._lim,
                                  MAX_VEH_PER_LANE_PER_S, self.limits.max_message_bytes, t.slot_hash, t.slot_index,
                                  t.id_bytes, t.id_ptr, batch.first_bad, *self.loops.arrays())

    def finish(self, batch: FrameBatch, k: int, now_ns: int | None,
               on_clock: Callable[[Clock, int], int | None] | None = None) -> None:
        """Absorb the batch from frame ``k`` (the first one the kernel left) to its end."""
        frames, n = batch.frames, len(batch.frames)
        while k < n:
            clock = self.absorb_frame(frames[k], now_ns)
            if clock is not None:
                now_ns = on_clock(clock, k) if on_clock is not None else now_ns
            k = self.fast_pass(batch, k + 1, now_ns)
        self._log_kernel_rejections(batch.first_bad, lambda f: bytes(frames[f]).hex())

    def _log_kernel_rejections(self, first_bad: np.ndarray, describe: Callable[[int], str]) -> None:
        for code in np.flatnonzero(first_bad >= 0).tolist():
            reason = REASONS[code]
            self._log_rejection(reason, self.rejected_count(reason), describe(int(first_bad[code])))

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

    def absorb(self, msg: IngestMessage, now_ns: int | None) -> None:
        if isinstance(msg, LoopReading):
            self._absorb_loops([msg], now_ns)
        elif isinstance(msg, CameraReading):
            self._absorb_camera(msg, now_ns)
        elif isinstance(msg, Batch):
            n = len(msg.readings)
            if not self._source_in_order("batch", msg.source, msg.seq, n):
                return
            self._absorb_loops([r for r in msg.readings if isinstance(r, LoopReading)], now_ns)
            for r in msg.readings:
                if isinstance(r, CameraReading):
                    self._absorb_camera(r, now_ns)
        elif isinstance(msg, Roster):
            self._add_roster(msg)
        elif isinstance(msg, LoopBulk):
            self._absorb_bulk(msg, now_ns)

    def _source_in_order(self, kind: str, source: str, seq: int, n: int) -> bool:
        """Batch and bulk sequence numbers per source; a replayed message rejects all it holds."""
        if seq < 0 or not source:
            return True
        key = (kind, source)
        last = self._source_seq.get(key)
        if last is not None and seq <= last:
            self.reject("replay", f"{kind} from {source}: seq {seq} after {last}", n)
            return False
        if last is None and len(self._source_seq) >= self.limits.max_sources:
            self.reject("source_limit", f"{kind} from {source}: {self.limits.max_sources} sources known", n)
            return False
        self._source_seq[key] = seq
        return True

    def _absorb_loops(self, readings: list[LoopReading], now_ns: int | None) -> None:
        if not readings:
            return
        idx = np.fromiter((self.loop_index.get(r.detector, -1) for r in readings), dtype=np.int64,
                          count=len(readings))
        ts = np.array([_clip64(r.ts_event_ns) for r in readings], dtype=np.int64)
        interval = np.array([r.interval_s for r in readings], dtype=np.float64)
        count = np.array([_clip64(r.count) for r in readings], dtype=np.int64)
        occ = np.array([r.occupancy for r in readings], dtype=np.float64)
        # no speed -> NaN; a NaN that was sent is not "no speed" but a bad value -> inf (non_finite)
        speed = np.array([np.nan if r.speed_mps is None else (np.inf if r.speed_mps != r.speed_mps else r.speed_mps)
                          for r in readings], dtype=np.float64)
        seq = np.array([_clip64(r.seq) for r in readings], dtype=np.int64)
        self._absorb_loop_arrays(idx, ts, interval, count, occ, speed, seq, now_ns,
                                 lambda k: repr(readings[k]))

    def _absorb_loop_arrays(self, idx, ts, interval, count, occ, speed, seq, now_ns, describe) -> None:
        first_bad = np.full(len(REASONS), -1, dtype=np.int64)
        absorb_loop_arrays(idx, ts, interval, count, occ, speed, seq, NO_TIME if now_ns is None else now_ns,
                           self._lim, MAX_VEH_PER_LANE_PER_S, first_bad, *self.loops.arrays())
        self._log_kernel_rejections(first_bad, describe)

    def _add_roster(self, msg: Roster) -> None:
        key = (msg.source, msg.roster)
        if key not in self._rosters and len(self._rosters) >= self.limits.max_rosters:
            return self.reject("roster_limit", f"{msg.source} roster {msg.roster}: {len(self._rosters)} known")
        self._rosters[key] = np.fromiter((self.loop_index.get(d, -1) for d in msg.detectors), dtype=np.int64,
                                         count=len(msg.detectors))

    def _absorb_bulk(self, msg: LoopBulk, now_ns: int | None) -> None:
        n = len(msg.count) // COUNT_DTYPE.itemsize
        idx = self._rosters.get((msg.source, msg.roster))
        if idx is None:
            return self.reject("unknown_roster", f"{msg.source} roster {msg.roster} ({n} readings)", max(n, 1))
        if (len(msg.count) != idx.size * COUNT_DTYPE.itemsize or len(msg.occupancy) != idx.size * OCC_DTYPE.itemsize
                or len(msg.speed_mps) not in (0, idx.size * SPEED_DTYPE.itemsize)):
            return self.reject("lanes_mismatch", f"{msg.source} roster {msg.roster}: columns do not match its "
                               f"{idx.size} loops", max(idx.size, 1))
        if not self._source_in_order("loops", msg.source, msg.seq, idx.size):
            return
        count = np.frombuffer(msg.count, dtype=COUNT_DTYPE).astype(np.int64)
        occ = np.frombuffer(msg.occupancy, dtype=OCC_DTYPE).astype(np.float64)
        if msg.speed_mps:
            speed = np.frombuffer(msg.speed_mps, dtype=SPEED_DTYPE).astype(np.float64)
        else:
            speed = np.full(idx.size, np.nan)
        m = idx.size
        self._absorb_loop_arrays(idx, np.full(m, _clip64(msg.ts_event_ns), dtype=np.int64),
                                 np.full(m, msg.interval_s), count, occ, speed, np.full(m, -1, dtype=np.int64),
                                 now_ns, lambda k: f"{msg.source} roster {msg.roster} item {k}")

    def _absorb_camera(self, r: CameraReading, now_ns: int | None) -> None:
        lim = self.limits
        if not (0.0 < r.interval_s <= lim.max_interval_s) or not math.isfinite(r.interval_s):
            return self.reject("bad_interval", f"{r!r}")
        if now_ns is not None:
            if r.ts_event_ns > now_ns + lim.max_future_s * 1e9:
                return self.reject("clock_skew", f"{r!r} ahead of engine clock {now_ns}")
            if r.ts_event_ns < now_ns - lim.max_age_s * 1e9:
                return self.reject("late", f"{r!r} older than {lim.max_age_s} s")
        c = self.camera_index.get(r.camera)
        b = self.box_index.get(r.camera, -1) if c is None else -1
        if c is None and b < 0:
            return self.reject("unknown_detector", r.camera)
        # a box camera: one zone (the link's path through the junction), no movements; its own
        # sequence and clock, checked like a camera's
        box = b >= 0
        last_seq, last_ts, i = (self._box_last_seq, self._box_last_ts, b) if box else (
            self._cam_last_seq, self._cam_last_ts, c)
        if r.seq >= 0 and r.seq <= last_seq[i]:
            return self.reject("replay", f"{r.camera} seq {r.seq} after {last_seq[i]}")
        ts = _clip64(r.ts_event_ns)
        if ts < last_ts[i]:
            return self.reject("out_of_order", f"{r!r}")
        if r.seq < 0 and ts == last_ts[i]:
            return self.reject("duplicate", f"{r!r}")
        lo, hi = (0, 1 + int(self.box_zone_ptr[b + 1] - self.box_zone_ptr[b])) if box else (
            int(self.camera_lane_ptr[c]), int(self.camera_lane_ptr[c + 1]))
        if len(r.counts) != hi - lo or len(r.queue_veh) != hi - lo:
            return self.reject("lanes_mismatch", f"{r.camera}: expected {hi - lo} {'zones' if box else 'lanes'}")
        counts = np.array([_clip64(x) for x in r.counts], dtype=np.float64)
        queue = np.asarray(r.queue_veh, dtype=np.float64)
        if not (np.isfinite(queue).all()):
            return self.reject("non_finite", f"{r!r}")
        if (counts < 0).any() or (queue < 0).any():
            return self.reject("negative", f"{r!r}")
        if not box:  # (the bank does not know the length of a box's internal lanes)
            cap = self._cam_capacity[lo:hi]
            if (counts > cap).any() or (queue > cap).any():
                return self.reject("count_impossible", f"{r!r}")
        t0, t1 = (0, 0) if box else (int(self.camera_turn_ptr[c]), int(self.camera_turn_ptr[c + 1]))
        turns = None
        if r.turn_counts:
            if len(r.turn_counts) != t1 - t0:
                return self.reject("lanes_mismatch", f"{r.camera}: expected {t1 - t0} turn counts")
            turns = np.array([_clip64(x) for x in r.turn_counts], dtype=np.float64)
            if (turns < 0).any():
                return self.reject("negative", f"{r!r}")
            if (turns > MAX_VEH_PER_LANE_PER_S * r.interval_s + 1).any():
                return self.reject("count_impossible", f"{r!r}")
        if len(r.classes) > MAX_VEHICLE_CLASSES:
            return self.reject("malformed", f"{r.camera}: {len(r.classes)} vehicle classes")
        for name, per_lane in r.classes.items():
            if len(per_lane) != hi - lo:
                return self.reject("lanes_mismatch", f"{r.camera}: class {name!r}: expected {hi - lo} lanes")
            if any(x < 0 for x in per_lane):
                return self.reject("negative", f"{r.camera}: class {name!r}: {per_lane}")
            if any(x > c for x, c in zip(per_lane, counts.tolist())):
                return self.reject("count_impossible", f"{r.camera}: class {name!r} counts more than in view")
        if turns is not None:
            seen = self._turn_count[t0:t1]
            self._turn_count[t0:t1] = np.where(np.isnan(seen), 0.0, seen) + turns
        if r.seq >= 0:
            last_seq[i] = _clip64(r.seq)
        last_ts[i] = ts
        if box:
            self._box_veh[b] = counts[0]
            self._zone_veh[self.box_zone_ptr[b]:self.box_zone_ptr[b + 1]] = queue[1:]  # (halting)
        else:
            self._cam_vehicles[lo:hi] = counts
            self._cam_queue[lo:hi] = queue
        self._py_accepted += 1

    # -- per tick -------------------------------------------------------------------------

    def close_tick(self, interval_s: float, loop_ok: np.ndarray | None = None,
                   camera_ok: np.ndarray | None = None) -> LaneObservations:
        """Per-lane observations of the readings absorbed since the last call; resets.

        ``loop_ok``/``camera_ok`` (bool per loop / camera, from ``detectors.health``): detectors
        that are False are left out, as if they had not reported (their readings stay accepted).
        """
        n = self.net.n_lanes
        L = self.loops
        stop = self.loop_role == ROLE_STOP
        seen = L.time > 0
        if loop_ok is not None:
            stop = stop & loop_ok
            seen = seen & loop_ok
            up = (self.loop_role != ROLE_STOP) & loop_ok
        else:
            up = ~stop
        if camera_ok is not None and not camera_ok.all():
            bad_slots = np.repeat(~camera_ok, np.diff(self.camera_lane_ptr))
            self._cam_vehicles[bad_slots] = np.nan
            self._cam_queue[bad_slots] = np.nan
        stop_count = np.zeros(n)
        up_count = np.zeros(n)
        stop_occ_time = np.zeros(n)
        stop_time = np.zeros(n)
        stop_seen = np.zeros(n, dtype=np.bool_)
        up_seen = np.zeros(n, dtype=np.bool_)
        np.add.at(stop_count, self.loop_lane[stop], L.count[stop])
        np.add.at(up_count, self.loop_lane[up], L.count[up])
        np.add.at(stop_occ_time, self.loop_lane[stop], L.occ_time[stop])
        np.add.at(stop_time, self.loop_lane[stop], L.time[stop])
        stop_seen[self.loop_lane[stop & seen]] = True
        up_seen[self.loop_lane[up & seen]] = True
        speed_sum = np.zeros(n)
        speed_n = np.zeros(n)
        used = stop | up
        np.add.at(speed_sum, self.loop_lane[used], L.speed_sum[used])
        np.add.at(speed_n, self.loop_lane[used], L.speed_n[used])
        cam_veh = np.full(n, np.nan)
        cam_queue = np.full(n, np.nan)
        cam_veh[self.camera_lane_idx] = self._cam_vehicles
        cam_queue[self.camera_lane_idx] = self._cam_queue
        box = self._link_box(stop_count)
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
                link_box_veh=box,
                cross_box_veh=self._cross_box(box),
            )
        L.reset_tick()
        self._cam_vehicles.fill(np.nan)
        self._cam_queue.fill(np.nan)
        self._turn_count.fill(np.nan)
        self._box_veh.fill(np.nan)
        self._zone_veh.fill(np.nan)
        return obs

    def _cross_box(self, link_box: np.ndarray | None) -> np.ndarray | None:
        """float64[entries of ``link_cross_idx``]: per link and link crossing it, halting vehicles
        a box camera saw this tick on the stretch of the crossing link's path that is in the
        link's way (a vehicle passing through is not held up there). NaN: no such zone, it did
        not report, or the box of its path is not trusted (``_link_box``). None without crossing
        zones."""
        if not self.zone_entry.size:
            return None
        out = np.full(self.net.link_cross_idx.size, np.nan)
        out[self.zone_entry] = np.where(np.isnan(link_box[self.zone_link]), np.nan, self._zone_veh)
        return out

    def _link_box(self, stop_count: np.ndarray) -> np.ndarray | None:
        """float64[n_links]: vehicles the box cameras saw on each link's paths this tick (NaN:
        no box camera, one of the link's did not report, or they are blind: the stop-bar loop
        of an entry lane counted ``BOX_BLIND_VEH`` vehicles into the junction since any box of
        that lane's links last saw one; a box stuck at "empty" must not shorten a clearance).
        None without box cameras."""
        if not self.box_link.size:
            return None
        out = np.zeros(self.net.n_links)
        np.add.at(out, self.box_link, self._box_veh)  # (a link whose box did not report: NaN)
        out[~self._box_watched] = np.nan
        someone = np.zeros(self.net.n_lanes, dtype=np.bool_)
        someone[self._pl_lane[out[self._pl_link] > 0]] = True
        self._box_blind = np.where(someone, 0.0, self._box_blind + stop_count)
        out[self._pl_link[self._box_blind[self._pl_lane] >= BOX_BLIND_VEH]] = np.nan
        return out
