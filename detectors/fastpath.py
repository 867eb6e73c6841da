"""The ingest fast path: loop readings validated and accumulated by numba kernels.

Two kernels share one validation routine (``_verdict``), so every loop reading meets the same
checks whichever way it came:

- ``absorb_loop_frames`` parses single-reading ``loop`` frames straight from the received bytes
  (msgpack, as ``detectors.messages`` writes them) and stops at the first frame it cannot take
  as it stands (a camera reading, a batch, a watermark, an id it does not know, anything
  unusual); the caller hands that frame to msgspec and calls the kernel again after it. Frames
  keep their order.
- ``absorb_loop_arrays`` takes columns: the numpy frames of a ``loops`` bulk message, or the
  loop readings of a ``batch`` gathered into arrays.

Detector ids are found by FNV-1a hash in an open-addressing table (``IdTable``) and compared
byte for byte, so the kernels never build a Python string.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

# Rejection reasons, in the order the checks run. Codes index ``LoopState.rejected``.
REASONS = (
    "bad_interval", "clock_skew", "late", "unknown_detector", "replay", "out_of_order", "duplicate",
    "non_finite", "negative", "occupancy_range", "count_impossible",
)
R_BAD_INTERVAL, R_SKEW, R_LATE, R_UNKNOWN, R_REPLAY, R_OUT_OF_ORDER, R_DUPLICATE, R_NON_FINITE, \
    R_NEGATIVE, R_OCC_RANGE, R_IMPOSSIBLE = range(len(REASONS))
NO_TIME = np.iinfo(np.int64).min  # "the engine clock has not started": skew and lateness not checked

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


@njit(cache=True, inline="always")
def _fnv1a(buf, lo, hi):
    h = _FNV_OFFSET
    for k in range(lo, hi):
        h = (h ^ np.uint64(buf[k])) * _FNV_PRIME
    return h


@dataclass(frozen=True)
class IdTable:
    """Detector ids as bytes with an open-addressing hash table over them."""

    slot_hash: np.ndarray  # uint64[size]
    slot_index: np.ndarray  # int32[size], -1 empty
    id_bytes: np.ndarray  # uint8[], all ids concatenated (UTF-8)
    id_ptr: np.ndarray  # int64[n + 1]

    @classmethod
    def build(cls, ids: list[str]) -> IdTable:
        encoded = [s.encode() for s in ids]
        id_ptr = np.zeros(len(ids) + 1, dtype=np.int64)
        id_ptr[1:] = np.cumsum([len(b) for b in encoded])
        id_bytes = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()
        size = 16
        while size < 2 * len(ids):
            size *= 2
        slot_hash = np.zeros(size, dtype=np.uint64)
        slot_index = np.full(size, -1, dtype=np.int32)
        _fill_table(id_bytes, id_ptr, slot_hash, slot_index)
        return cls(slot_hash, slot_index, id_bytes, id_ptr)

    def lookup(self, name: str) -> int:
        b = np.frombuffer(name.encode(), dtype=np.uint8)
        return int(_lookup(b, 0, b.size, self.slot_hash, self.slot_index, self.id_bytes, self.id_ptr))


@njit(cache=True)
def _fill_table(id_bytes, id_ptr, slot_hash, slot_index):
    mask = slot_hash.size - 1
    for i in range(id_ptr.size - 1):
        h = _fnv1a(id_bytes, id_ptr[i], id_ptr[i + 1])
        s = np.int64(h & np.uint64(mask))
        while slot_index[s] >= 0:
            s = (s + 1) & mask
        slot_hash[s] = h
        slot_index[s] = i


@njit(cache=True, inline="always")
def _lookup(buf, lo, hi, slot_hash, slot_index, id_bytes, id_ptr):
    """Index of the id in ``buf[lo:hi]``, -1 if unknown."""
    h = _fnv1a(buf, lo, hi)
    mask = slot_hash.size - 1
    s = np.int64(h & np.uint64(mask))
    n = hi - lo
    while slot_index[s] >= 0:
        if slot_hash[s] == h:
            i = slot_index[s]
            a = id_ptr[i]
            if id_ptr[i + 1] - a == n:
                same = True
                for k in range(n):
                    if id_bytes[a + k] != buf[lo + k]:
                        same = False
                        break
                if same:
                    return i
        s = (s + 1) & mask
    return -1


class LoopState:
    """Per-loop accumulators of one tick, and what each loop last sent (struct of arrays)."""

    def __init__(self, n_loops: int):
        self.count = np.zeros(n_loops)  # vehicles, summed over the tick's readings
        self.occ_time = np.zeros(n_loops)  # occupancy x interval, summed
        self.time = np.zeros(n_loops)  # interval seconds covered
        self.speed_sum = np.zeros(n_loops)  # speed x count, of readings with a speed
        self.speed_n = np.zeros(n_loops)
        self.last_seq = np.full(n_loops, -1, dtype=np.int64)
        self.last_ts = np.full(n_loops, NO_TIME, dtype=np.int64)
        self.rejected = np.zeros(len(REASONS), dtype=np.int64)
        self.accepted = np.zeros(1, dtype=np.int64)

    def arrays(self) -> tuple:
        return (self.count, self.occ_time, self.time, self.speed_sum, self.speed_n, self.last_seq,
                self.last_ts, self.rejected, self.accepted)

    def reset_tick(self) -> None:
        for a in (self.count, self.occ_time, self.time, self.speed_sum, self.speed_n):
            a.fill(0.0)


@njit(cache=True)
def _verdict(known, ts, interval, count, occ, speed, seq, now_ns, max_interval_s, max_future_ns, max_age_ns,
             cap_per_s, last_seq, last_ts):
    """Check one loop reading: -1 if it is good, else a reason code. Scalars only, so the call
    costs no reference counting. ``speed`` is NaN when not measured."""
    if not (interval > 0.0 and interval <= max_interval_s):
        return R_BAD_INTERVAL
    if now_ns != NO_TIME:
        if ts > now_ns + max_future_ns:
            return R_SKEW
        if ts < now_ns - max_age_ns:
            return R_LATE
    if not known:
        return R_UNKNOWN
    if seq >= 0 and seq <= last_seq:
        return R_REPLAY
    if ts < last_ts:
        return R_OUT_OF_ORDER
    if seq < 0 and ts == last_ts:
        return R_DUPLICATE
    if not math.isfinite(occ) or math.isinf(speed):
        return R_NON_FINITE
    if count < 0 or speed < 0.0:
        return R_NEGATIVE
    if not (occ >= 0.0 and occ <= 1.0):
        return R_OCC_RANGE
    if count > cap_per_s * interval + 1.0:
        return R_IMPOSSIBLE
    return -1


@njit(cache=True)
def absorb_loop_arrays(idx, ts, interval, count, occ, speed, seq, now_ns, lim, cap_per_s, first_bad,
                       st_count, st_occ_time, st_time, st_speed_sum, st_speed_n, st_last_seq, st_last_ts,
                       st_rejected, st_accepted):
    """Readings as columns. ``first_bad[r]`` gets the position of the first reading rejected for
    reason ``r`` in this call (-1 if none), for the log."""
    max_interval_s, max_future_ns, max_age_ns = lim[0], lim[1], lim[2]
    accepted = 0
    for k in range(idx.size):
        i = idx[k]
        known = i >= 0
        j = i if known else 0
        r = _verdict(known, ts[k], interval[k], count[k], occ[k], speed[k], seq[k], now_ns, max_interval_s,
                     max_future_ns, max_age_ns, cap_per_s, st_last_seq[j] if known else -1,
                     st_last_ts[j] if known else NO_TIME)
        if r < 0:
            accepted += 1
            if seq[k] >= 0:
                st_last_seq[i] = seq[k]
            st_last_ts[i] = ts[k]
            st_count[i] += count[k]
            st_occ_time[i] += occ[k] * interval[k]
            st_time[i] += interval[k]
            if speed[k] == speed[k] and count[k] > 0:
                st_speed_sum[i] += speed[k] * count[k]
                st_speed_n[i] += count[k]
        else:
            st_rejected[r] += 1
            if first_bad[r] < 0:
                first_bad[r] = k
    st_accepted[0] += accepted


# -- msgpack, as much of it as a loop reading uses ------------------------------------------------

@njit(cache=True, inline="always")
def _be(buf, p, n):
    v = np.uint64(0)
    for k in range(n):
        v = (v << np.uint64(8)) | np.uint64(buf[p + k])
    return v


@njit(cache=True, inline="always")
def _read_int(buf, p, end):
    """(ok, value, next position) for a msgpack integer no wider than int64."""
    if p >= end:
        return False, 0, p
    b = buf[p]
    if b <= 0x7F:
        return True, np.int64(b), p + 1
    if b >= 0xE0:
        return True, np.int64(b) - 256, p + 1
    if 0xCC <= b <= 0xCF:
        n = 1 << (b - 0xCC)
        if p + 1 + n > end:
            return False, 0, p
        v = _be(buf, p + 1, n)
        if v >= np.uint64(1) << np.uint64(63):
            return False, 0, p
        return True, np.int64(v), p + 1 + n
    if 0xD0 <= b <= 0xD3:
        n = 1 << (b - 0xD0)
        if p + 1 + n > end:
            return False, 0, p
        v = _be(buf, p + 1, n)
        bits = 8 * n
        if bits < 64 and v >= np.uint64(1) << np.uint64(bits - 1):
            return True, np.int64(v) - (np.int64(1) << bits), p + 1 + n
        return True, np.int64(v), p + 1 + n  # int64: two's complement wraps on the cast
    return False, 0, p


@njit(cache=True, inline="always")
def _read_float(buf, p, end):
    """(ok, value, next position) for a msgpack float32/float64 or integer."""
    if p >= end:
        return False, 0.0, p
    b = buf[p]
    if b == 0xCB:
        if p + 9 > end:
            return False, 0.0, p
        return True, np.uint64(_be(buf, p + 1, 8)).view(np.float64), p + 9
    if b == 0xCA:
        if p + 5 > end:
            return False, 0.0, p
        return True, np.float64(np.uint32(_be(buf, p + 1, 4)).view(np.float32)), p + 5
    ok, v, q = _read_int(buf, p, end)
    return ok, np.float64(v), q


@njit(cache=True, inline="always")
def _str_span(buf, p, end):
    """(ok, start, stop) of a msgpack str (fixstr, str8 or str16)."""
    if p >= end:
        return False, 0, 0
    b = buf[p]
    if 0xA0 <= b <= 0xBF:
        n, q = np.int64(b - 0xA0), p + 1
    elif b == 0xD9 and p + 2 <= end:
        n, q = np.int64(buf[p + 1]), p + 2
    elif b == 0xDA and p + 3 <= end:
        n, q = np.int64(_be(buf, p + 1, 2)), p + 3
    else:
        return False, 0, 0
    if q + n > end:
        return False, 0, 0
    return True, q, q + n


@njit(cache=True, nogil=True)
def absorb_loop_frames(buf, offsets, start, now_ns, lim, cap_per_s, max_frame, slot_hash, slot_index,
                       id_bytes, id_ptr, first_bad, st_count, st_occ_time, st_time, st_speed_sum, st_speed_n,
                       st_last_seq, st_last_ts, st_rejected, st_accepted):
    """Absorb frames ``start, start+1, ...`` (frame k is ``buf[offsets[k]:offsets[k+1]]``) while each
    is a plain single loop reading of a known detector; returns the index of the first frame that is
    not (``offsets.size - 1`` when all were taken). ``first_bad[r]`` gets the first frame rejected for
    reason ``r``."""
    n_frames = offsets.size - 1
    for f in range(start, n_frames):
        p, end = offsets[f], offsets[f + 1]
        if end - p > max_frame or end - p < 8:
            return f
        head = buf[p]
        if head < 0x96 or head > 0x98:  # a fixarray of 6 to 8 items: the tag and 5 to 7 fields
            return f
        n_items = np.int64(head - 0x90)
        if not (buf[p + 1] == 0xA4 and buf[p + 2] == 0x6C and buf[p + 3] == 0x6F and buf[p + 4] == 0x6F
                and buf[p + 5] == 0x70):  # "loop"
            return f
        ok, a, b = _str_span(buf, p + 6, end)
        if not ok:
            return f
        i = _lookup(buf, a, b, slot_hash, slot_index, id_bytes, id_ptr)
        if i < 0:
            return f  # msgspec decides whether it is an unknown id or not valid UTF-8 at all
        ok, ts, q = _read_int(buf, b, end)
        if not ok:
            return f
        ok, interval, q = _read_float(buf, q, end)
        if not ok:
            return f
        ok, count, q = _read_int(buf, q, end)
        if not ok:
            return f
        ok, occ, q = _read_float(buf, q, end)
        if not ok:
            return f
        speed = np.nan
        seq = np.int64(-1)
        if n_items >= 7:
            if q < end and buf[q] == 0xC0:
                q += 1
            else:
                ok, speed, q = _read_float(buf, q, end)
                if not ok or speed != speed:  # a NaN speed is not "no speed": leave it to the slow path
                    return f
        if n_items == 8:
            ok, seq, q = _read_int(buf, q, end)
            if not ok:
                return f
        if q != end:
            return f
        r = _verdict(True, ts, interval, count, occ, speed, seq, now_ns, lim[0], lim[1], lim[2], cap_per_s,
                     st_last_seq[i], st_last_ts[i])
        if r < 0:
            st_accepted[0] += 1
            if seq >= 0:
                st_last_seq[i] = seq
            st_last_ts[i] = ts
            st_count[i] += count
            st_occ_time[i] += occ * interval
            st_time[i] += interval
            if speed == speed and count > 0:
                st_speed_sum[i] += speed * count
                st_speed_n[i] += count
        else:
            st_rejected[r] += 1
            if first_bad[r] < 0:
                first_bad[r] = f
    return n_frames
