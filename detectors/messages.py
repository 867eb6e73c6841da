"""Wire messages on the ingest socket (PUSH -> engine PULL), msgpack-encoded.

A message is one of the tagged structs below (msgpack arrays, tag first); a ``Batch`` carries
several readings. Timestamps are integer nanoseconds since the Unix epoch (``ts_event_ns``: when
the interval being reported ended, by the source's clock). ``Clock`` is the simulator's
watermark: everything up to ``ts_ns`` has been sent, so an engine on simulated time may tick.
For bulk, a source sends a ``Roster`` (its loop ids) once and then ``LoopBulk`` messages whose
numpy columns follow the roster's order. docs/protocol.md is the reference.
"""

from __future__ import annotations

import msgspec
import numpy as np

PROTOCOL_VERSION = 1


class LoopReading(msgspec.Struct, tag="loop", frozen=True, array_like=True):
    """One induction loop over one interval."""

    detector: str
    ts_event_ns: int
    interval_s: float
    count: int  # vehicles that crossed the loop in the interval
    occupancy: float  # fraction of the interval the loop was occupied, 0..1
    speed_mps: float | None = None  # mean speed, only from loops that measure it
    seq: int = -1  # the source's sequence number, -1 when it has none


class CameraReading(msgspec.Struct, tag="camera", frozen=True, array_like=True):
    """One camera watching the lanes of one approach, lanes in inventory order."""

    camera: str
    ts_event_ns: int
    interval_s: float
    counts: list[int]  # vehicles in view per lane
    queue_veh: list[float]  # queued (halting) vehicles per lane
    seq: int = -1
    turn_counts: list[int] = []  # vehicles that left the view into each of the inventory's `turns`
    classes: dict[str, list[int]] = {}  # vehicles in view per lane by class ("car", "truck", "bus", ...)


class Batch(msgspec.Struct, tag="batch", frozen=True, array_like=True):
    """Several readings from one source in one message."""

    readings: list[LoopReading | CameraReading]
    source: str = ""
    seq: int = -1


class Clock(msgspec.Struct, tag="clock", frozen=True, array_like=True):
    """Watermark from a simulator: all readings up to ``ts_ns`` are sent."""

    ts_ns: int


class Roster(msgspec.Struct, tag="roster", frozen=True, array_like=True):
    """A source's list of loops, once; its ``loops`` messages then carry columns in this order."""

    source: str
    roster: int  # the source's number for this list; a new list under the same number replaces it
    detectors: list[str]


class LoopBulk(msgspec.Struct, tag="loops", frozen=True, array_like=True):
    """One interval of every loop of a roster, as little-endian numpy columns (bulk ingest)."""

    source: str
    roster: int
    seq: int  # the source's sequence number for its bulk messages
    ts_event_ns: int
    interval_s: float
    count: bytes  # int32 per loop
    occupancy: bytes  # float32 per loop, 0..1
    speed_mps: bytes = b""  # float32 per loop, NaN where not measured; empty when no loop measures


IngestMessage = LoopReading | CameraReading | Batch | Clock | Roster | LoopBulk

COUNT_DTYPE = np.dtype("<i4")
OCC_DTYPE = SPEED_DTYPE = np.dtype("<f4")


def loop_bulk(source: str, roster: int, seq: int, ts_event_ns: int, interval_s: float, count, occupancy,
              speed_mps=None) -> LoopBulk:
    """A ``LoopBulk`` from arrays (any numeric dtype; converted to the wire dtypes)."""
    return LoopBulk(source, roster, seq, ts_event_ns, interval_s,
                    np.ascontiguousarray(count, dtype=COUNT_DTYPE).tobytes(),
                    np.ascontiguousarray(occupancy, dtype=OCC_DTYPE).tobytes(),
                    b"" if speed_mps is None else np.ascontiguousarray(speed_mps, dtype=SPEED_DTYPE).tobytes())

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(IngestMessage)


def encode(msg: IngestMessage) -> bytes:
    return _encoder.encode(msg)


def decode(frame: bytes) -> IngestMessage:
    """Decode one frame; raises ``msgspec.DecodeError``/``ValidationError`` on bad input."""
    return _decoder.decode(frame)
