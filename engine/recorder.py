"""The engine's flight recorder: every message in, every tick and every message out, on disk.

A recording is a directory of segment files ``segment-000000.telog``, ``segment-000001.telog``
... written append-only and rotated when a segment reaches ``recording.segment_bytes``. Each
segment starts with a header, then holds records back to back (all integers little-endian)::

    header:  b"TELOG\\0" | u16 format version | u32 n | n bytes of JSON (see ``open_recorder``)
    record:  u8 kind | i64 t_ns | u32 n | n bytes of payload

Records are written in blocks, one ``os.write`` each, and every block ends with a ``CHECK``
record (``t_ns`` 0, payload: u32 CRC-32 of the block's bytes before it), so a block is whole or
not at all.

``t_ns`` is on the engine's clock: for ``INGEST`` the time the detector bank checked the frame
against (-1 when a simulated clock had not started), for ``TICK`` the tick's ``now_ns``, for the
others the engine's clock when the message was received or sent. The payload of ``INGEST`` is
the frame as received; ``ADAPTER_*`` and ``OPERATOR_*`` payloads are ``u8 n | n bytes of the
peer's ZeroMQ identity | the frame``; ``END`` (written on a clean shutdown) is a msgpack map of
the engine's final counters.

Ordering and durability: records are kept in a buffer and handed to the OS with one
``os.write`` when the buffer fills, at the end of every drain batch (``flush``), at every tick
before the engine acts (``tick``) and before any message goes out while inputs are pending
(``adapter_out``/``operator_out``). So whatever the engine acted on or answered about is in the
file, in order, even after a ``kill -9``. There is no fsync per message (the OS page cache
survives a killed process, not a power cut); segments are fsynced when they are closed.

A crash can leave a torn block at the end of the last segment (a record cut short, a kind
that is not one of ours, zeros, or a block without its ``CHECK``): the reader ignores it and
says how many bytes it skipped. A bad ``CHECK`` with data after it, or a damaged segment that
is not the last, is damage, not a torn tail, and an error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import struct
import threading
import time
import zlib
from pathlib import Path
from typing import Iterator, NamedTuple

import msgspec

log = logging.getLogger("traffic_engine.recorder")

FORMAT_VERSION = 1
MAGIC = b"TELOG\x00"
SEGMENT_GLOB = "segment-*.telog"
INVENTORY_NAME = "detectors.json"  # the detector inventory in use, copied beside the segments

INGEST, ADAPTER_IN, OPERATOR_IN, TICK, ADAPTER_OUT, OPERATOR_OUT, END, CHECK = 1, 2, 3, 4, 5, 6, 7, 8
KIND_NAMES = {INGEST: "ingest", ADAPTER_IN: "adapter_in", OPERATOR_IN: "operator_in", TICK: "tick",
              ADAPTER_OUT: "adapter_out", OPERATOR_OUT: "operator_out", END: "end"}

_HEAD = struct.Struct("<6sHI")
_REC = struct.Struct("<BqI")
REC_SIZE = _REC.size  # 13 bytes
_CRC = struct.Struct("<I")
CHECK_SIZE = REC_SIZE + _CRC.size


class LogError(ValueError):
    """A path that is not a recording, or a recording damaged other than at its tail."""


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def segment_name(index: int) -> str:
    return f"segment-{index:06d}.telog"


# -- writing -----------------------------------------------------------------------------------


class NullRecorder:
    """What the server holds when recording is off: every hook does nothing."""

    enabled = False

    def ingest(self, frame: bytes, t_ns: int | None) -> None:
        pass

    def adapter_in(self, identity: bytes, frame: bytes, t_ns: int) -> None:
        pass

    def operator_in(self, identity: bytes, frame: bytes, t_ns: int) -> None:
        pass

    def tick(self, now_ns: int) -> None:
        pass

    def adapter_out(self, identity: bytes, frame: bytes, t_ns: int) -> None:
        pass

    def operator_out(self, identity: bytes, frame: bytes, t_ns: int) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self, engine=None) -> None:
        pass

    def status(self) -> dict:
        return {"enabled": False}


class Recorder(NullRecorder):
    """Appends records to a rotating set of segment files in ``directory``.

    ``header`` (JSON-able) goes at the top of every segment, with the format version and the
    segment's index added. ``directory`` must not already hold a recording. Not thread-safe:
    the server's single loop thread is its only caller.
    """

    enabled = True

    def __init__(self, directory: str | Path, header: dict, *, segment_bytes: int = 64 << 20,
                 buffer_bytes: int = 1 << 20):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        existing = sorted(self.dir.glob(SEGMENT_GLOB))
        if existing:
            raise LogError(f"{self.dir} already holds a recording ({len(existing)} segment(s)); "
                           "record into a new or empty directory")
        if segment_bytes < 4096:
            raise ValueError(f"recording.segment_bytes must be at least 4096, not {segment_bytes}")
        self.header = dict(header)
        self.segment_bytes = segment_bytes
        self.buffer_bytes = buffer_bytes
        self.segment = -1
        self.bytes_written = 0
        self.failed: str | None = None  # why recording stopped (a disk error), None while it works
        self.dropped_bytes = 0
        self._fd = -1
        self._size = 0
        self._buf = bytearray()
        self._out_mark = 0  # length of the buffer after its last output record (0: nothing since a write)
        self._pack = _REC.pack
        self._open_segment()

    # the hooks: one call per message, buffered --------------------------------------------

    def ingest(self, frame: bytes, t_ns: int | None) -> None:
        buf = self._buf
        buf += self._pack(INGEST, -1 if t_ns is None else t_ns, len(frame))
        buf += frame
        if len(buf) >= self.buffer_bytes:
            self.flush()

    def adapter_in(self, identity: bytes, frame: bytes, t_ns: int) -> None:
        self._peer(ADAPTER_IN, identity, frame, t_ns)

    def operator_in(self, identity: bytes, frame: bytes, t_ns: int) -> None:
        self._peer(OPERATOR_IN, identity, frame, t_ns)

    def tick(self, now_ns: int) -> None:
        """A tick at ``now_ns`` is about to run: record it and write out everything before it."""
        self._buf += self._pack(TICK, now_ns, 0)
        self.flush()

    def adapter_out(self, identity: bytes, frame: bytes, t_ns: int) -> None:
        """Call just before sending ``frame``: the inputs it may answer are written out first."""
        if len(self._buf) != self._out_mark:  # something other than outputs since the last write
            self.flush()
        self._peer(ADAPTER_OUT, identity, frame, t_ns)
        self._out_mark = len(self._buf)

    def operator_out(self, identity: bytes, frame: bytes, t_ns: int) -> None:
        if len(self._buf) != self._out_mark:
            self.flush()
        self._peer(OPERATOR_OUT, identity, frame, t_ns)
        self._out_mark = len(self._buf)

    def _peer(self, kind: int, identity: bytes, frame: bytes, t_ns: int) -> None:
        ident = bytes(identity[:255])
        buf = self._buf
        buf += self._pack(kind, t_ns, 1 + len(ident) + len(frame))
        buf.append(len(ident))
        buf += ident
        buf += frame
        if len(buf) >= self.buffer_bytes:
            self.flush()

    # to disk ----------------------------------------------------------------------------------

    def flush(self) -> None:
        """Hand the buffer to the OS (one write), then rotate if the segment is full.

        A failing disk (full, gone) does not stop the engine: recording stops, the error is
        logged and shown in ``status()``, and later records are counted and dropped.
        """
        self._out_mark = 0
        buf = self._buf
        if not buf:
            return
        if self.failed is not None:
            self.dropped_bytes += len(buf)
            buf.clear()
            return
        buf += self._pack(CHECK, 0, 4) + _CRC.pack(zlib.crc32(buf))
        data = memoryview(buf)
        try:
            while data:
                n = os.write(self._fd, data)
                self._size += n
                self.bytes_written += n
                data = data[n:]
            if self._size >= self.segment_bytes:
                self._close_segment(wait=False)
                self._open_segment()
        except OSError as exc:
            self.failed = f"{type(exc).__name__}: {exc}"
            self.dropped_bytes += len(data)
            log.error("recording into %s stopped: %s (the engine keeps running; records are dropped)",
                      self.dir, self.failed)
        finally:
            data.release()
            buf.clear()

    def status(self) -> dict:
        return {"enabled": True, "dir": str(self.dir), "segment": self.segment, "bytes_written": self.bytes_written,
                "failed": self.failed, "dropped_bytes": self.dropped_bytes}

    def close(self, engine=None) -> None:
        """Write an ``END`` record (the engine's final counters, when given), flush, fsync, close."""
        if self._fd < 0:
            return
        if self.failed is not None:
            self._close_segment(wait=True)
            return
        end = {"bytes": self.bytes_written + len(self._buf)}
        if engine is not None:
            end.update(ticks=engine.ticks, accepted=engine.bank.accepted, rejected=dict(engine.bank.rejected))
        body = msgspec.msgpack.encode(end)
        self._buf += self._pack(END, time.time_ns(), len(body))
        self._buf += body
        self.flush()
        if self._fd >= 0:
            self._close_segment(wait=True)

    def _open_segment(self) -> None:
        self.segment += 1
        path = self.dir / segment_name(self.segment)
        head = {"format": FORMAT_VERSION, **self.header, "segment": self.segment, "opened_ns": time.time_ns()}
        body = json.dumps(head, sort_keys=True).encode()
        data = _HEAD.pack(MAGIC, FORMAT_VERSION, len(body)) + body
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        os.write(self._fd, data)
        self._size = len(data)

    def _close_segment(self, wait: bool) -> None:
        """fsync and close the current segment; on rotation (``wait=False``) in a thread, so the
        engine's loop does not wait for the disk."""
        fd, self._fd = self._fd, -1
        if wait:
            _fsync_close(fd)
        else:
            threading.Thread(target=_fsync_close, args=(fd,), name="recorder-fsync", daemon=True).start()


def _fsync_close(fd: int) -> None:
    try:
        os.fsync(fd)
    except OSError as exc:
        log.error("recording: fsync failed: %s", exc)
    finally:
        os.close(fd)


def open_recorder(directory: str | Path, *, config, net_path: str | Path, segment_bytes: int,
                  buffer_bytes: int = 1 << 20) -> Recorder:
    """A :class:`Recorder` whose header says how to rebuild the engine: config, network, inventory.

    The network is named by its absolute path and SHA-256 (replay checks both); a detector
    inventory file named in the config is copied into the recording, so a replay does not
    depend on it staying where it was.
    """
    from engine.config import dump_config

    directory = Path(directory)
    existing = sorted(directory.glob(SEGMENT_GLOB)) if directory.is_dir() else []
    if existing:
        raise LogError(f"{directory} already holds a recording ({len(existing)} segment(s)); "
                       "record into a new or empty directory")
    net_path = Path(net_path).resolve()
    inventory = None
    if config.detectors:
        src = Path(config.detectors).resolve()
        directory.mkdir(parents=True, exist_ok=True)
        dst = directory / INVENTORY_NAME
        shutil.copyfile(src, dst)
        inventory = {"path": str(src), "copy": INVENTORY_NAME, "sha256": file_sha256(dst)}
    header = {
        "engine_config": json.loads(dump_config(config)),
        "network": {"path": str(net_path), "sha256": file_sha256(net_path)},
        "detectors": inventory,
        "pid": os.getpid(),
    }
    return Recorder(directory, header, segment_bytes=segment_bytes, buffer_bytes=buffer_bytes)


# -- reading -----------------------------------------------------------------------------------


class Record(NamedTuple):
    kind: int
    t_ns: int
    payload: bytes

    @property
    def name(self) -> str:
        return KIND_NAMES.get(self.kind, f"kind{self.kind}")

    def peer(self) -> tuple[bytes, bytes]:
        """``(identity, frame)`` of an ``ADAPTER_*``/``OPERATOR_*`` record."""
        n = self.payload[0]
        return self.payload[1:1 + n], self.payload[1 + n:]


class LogReader:
    """Reads a recording (its directory, or one segment file) record by record, in order.

    ``header`` is the first segment's header. After iterating, ``torn_bytes`` says how many
    bytes at the end of the last segment were not a whole block (a crash mid-write) and were
    ignored; damage anywhere else raises :class:`LogError`.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.is_dir():
            self.segments = sorted(self.path.glob(SEGMENT_GLOB))
            if not self.segments:
                raise LogError(f"{self.path} holds no recording (no {SEGMENT_GLOB} files)")
        elif self.path.is_file():
            self.segments = [self.path]
        else:
            raise LogError(f"no recording at {self.path}")
        self.directory = self.path if self.path.is_dir() else self.path.parent
        self.header, self.header_bytes = self._read_header(self.segments[0])  # of the first segment
        self.torn_bytes = 0

    @property
    def total_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.segments)

    @staticmethod
    def _read_header(path: Path, data: bytes | None = None) -> tuple[dict, int]:
        if data is None:
            with open(path, "rb") as f:
                data = f.read(_HEAD.size)
                if len(data) == _HEAD.size:
                    data += f.read(_HEAD.unpack(data)[2])
        if len(data) < _HEAD.size:
            raise LogError(f"{path}: too short for a segment header")
        magic, version, n = _HEAD.unpack_from(data, 0)
        if magic != MAGIC:
            raise LogError(f"{path}: not a traffic-engine recording (bad magic)")
        if version != FORMAT_VERSION:
            raise LogError(f"{path}: format version {version}, this reader knows {FORMAT_VERSION}")
        end = _HEAD.size + n
        if len(data) < end:
            raise LogError(f"{path}: segment header cut short")
        try:
            head = json.loads(bytes(data[_HEAD.size:end]))
        except ValueError as exc:
            raise LogError(f"{path}: bad segment header: {exc}") from exc
        return head, end

    def __iter__(self) -> Iterator[Record]:
        return (rec for rec, _ in self.iter_with_offsets())

    def iter_with_offsets(self) -> Iterator[tuple[Record, int]]:
        """Records with their byte offset counted over all segments in order (for progress);
        within one segment file, the record's offset in that file."""
        done = 0
        self.torn_bytes = 0
        last = len(self.segments) - 1
        for i, seg in enumerate(self.segments):
            data = seg.read_bytes()
            _, pos = self._read_header(seg, data)
            for rec, at in self._records(seg, data, pos, i == last):
                yield rec, done + at
            done += len(data)

    def _records(self, seg: Path, data: bytes, pos: int, is_last: bool) -> Iterator[tuple[Record, int]]:
        """Records (and their byte offsets) of the whole, checked blocks of one segment; a torn
        last block is skipped (``torn_bytes``)."""
        unpack = _REC.unpack_from
        new = tuple.__new__
        kinds = KIND_NAMES
        size = len(data)
        block = pos  # where the block being read began
        pending: list[tuple[Record, int]] = []
        append = pending.append
        bad_check_at = -1
        while pos + REC_SIZE <= size:
            kind, t_ns, n = unpack(data, pos)
            start = pos + REC_SIZE
            end = start + n
            if end > size:
                break
            if kind == CHECK:
                if n != 4 or _CRC.unpack_from(data, start)[0] != zlib.crc32(data[block:pos]):
                    bad_check_at = end
                    break
                yield from pending
                pending.clear()
                pos = block = end
                continue
            if kind not in kinds:
                break
            append((new(Record, (kind, t_ns, data[start:end])), pos))
            pos = end
        if block < size:
            if not is_last:
                raise LogError(f"{seg}: damaged at byte {block} of {size} (not the last segment)")
            if 0 <= bad_check_at < size:
                raise LogError(f"{seg}: block at byte {block} fails its checksum and more data follows: "
                               "the recording is damaged")
            self.torn_bytes = size - block


def read_records(path: str | Path) -> Iterator[Record]:
    """Every whole record of the recording at ``path``, in order, across segments."""
    return iter(LogReader(path))


__all__ = ["ADAPTER_IN", "ADAPTER_OUT", "END", "FORMAT_VERSION", "INGEST", "KIND_NAMES", "LogError", "LogReader",
           "NullRecorder", "OPERATOR_IN", "OPERATOR_OUT", "Record", "Recorder", "TICK", "file_sha256",
           "open_recorder", "read_records"]
