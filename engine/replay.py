"""``traffic-engine replay``: run the engine over a recording and check it says the same again.

The engine is rebuilt from the recording's header (its config, the network it names, checked
by SHA-256, and the detector inventory copied into the recording) and driven on a manual clock
by the recorded inputs, in their recorded order:

- ``INGEST`` frames go to the detector bank with the engine time they were checked against;
- ``ADAPTER_IN`` hellos register signals as the server does (which signals get commands);
- ``TICK`` records tick the engine at the recorded ``now_ns``;
- ``OPERATOR_IN`` requests: ``override`` and ``release`` are applied at their recorded engine
  time (``engine.overrides.apply_recorded``); the other ops change nothing.

Every message the engine sent to adapters (welcomes and, each tick, one command per registered
signal) is rebuilt and compared byte for byte with the recorded ``ADAPTER_OUT`` record, in
order. When the recording ends cleanly its final counters (ticks, accepted, rejected by reason)
are compared too. A recording cut by a crash may lack the commands of its very last tick (they
are written right after they are sent); those are reported as ``unrecorded_tail``, not as
mismatches.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import Counter, deque
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

import msgspec

from engine import protocol as P
from engine.adapter import engine_command, register
from engine.clock import ManualClock
from engine.config import EngineConfig, RecordingParams
from engine.recorder import (ADAPTER_IN, ADAPTER_OUT, END, INGEST, KIND_NAMES, OPERATOR_IN, TICK, LogError,
                             LogReader, file_sha256)
from engine.overrides import apply_recorded
from engine.server import refuse_watermark

MAX_EXAMPLES = 10


class ReplayError(RuntimeError):
    """A recording that cannot be replayed here (network moved or changed, inventory missing...)."""


def parse_until(text: str) -> tuple[str, int]:
    """``--until``: epoch nanoseconds, an ISO-8601 time (UTC unless it says otherwise), or
    ``+SECONDS`` after the first tick. Returns ``("abs", ns)`` or ``("rel", ns)``."""
    s = text.strip()
    try:
        if s.startswith("+"):
            return "rel", int(round(float(s[1:]) * 1e9))
        if s.isdigit():
            return "abs", int(s)
        dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        return "abs", int(round(dt.timestamp() * 1e6)) * 1000
    except ValueError:
        raise ValueError(f"--until {text!r}: give epoch nanoseconds, an ISO time such as "
                         "2026-01-01T00:10:00Z, or +SECONDS after the first tick") from None


class _Progress:
    """Share of the recording's bytes replayed, on stderr: in place on a terminal (5/s),
    a line per 10 % elsewhere."""

    def __init__(self, total: int, stream: TextIO | None = None, enabled: bool = True):
        self.total = max(total, 1)
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.t0 = time.monotonic()
        self.last = -1.0
        self.next_share = 0.1

    def update(self, done: int, ticks: int, mismatches: int) -> None:
        if not self.enabled:
            return
        share = done / self.total
        now = time.monotonic()
        if self.tty:
            if now - self.last < 0.2:
                return
        elif share < self.next_share:
            return
        else:
            while self.next_share <= share:
                self.next_share += 0.1
        self.last = now
        line = (f"replay {100 * share:5.1f}%  {done / 1e6:.1f}/{self.total / 1e6:.1f} MB  ticks {ticks}  "
                f"mismatches {mismatches}  wall {now - self.t0:.0f}s")
        self.stream.write(("\r" + line) if self.tty else (line + "\n"))
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty and self.last >= 0:
            self.stream.write("\n")
            self.stream.flush()


def _describe(frame: bytes) -> str:
    try:
        msg = P.engine_to_adapter_decoder.decode(frame)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
        return repr(frame[:80])
    return repr(msg)


def load_engine(reader: LogReader, net_path: str | Path | None = None):
    """The :class:`Engine` a recording was made with, rebuilt from its header."""
    from engine.core import Engine
    from network import compile_network

    head = reader.header
    try:
        cfg = msgspec.json.decode(json.dumps(head["engine_config"]).encode(), type=EngineConfig)
    except (KeyError, msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
        raise ReplayError(f"{reader.path}: the header's engine config cannot be read: {exc}") from exc
    cfg = msgspec.structs.replace(cfg, recording=RecordingParams())
    net_info = head.get("network") or {}
    path = Path(net_path or net_info.get("path", ""))
    if not path.is_file():
        raise ReplayError(f"the recorded network {path} is not there; point to it with --net")
    digest = file_sha256(path)
    if net_info.get("sha256") and digest != net_info["sha256"]:
        raise ReplayError(f"network {path} differs from the recorded one (sha256 {digest[:12]}..., "
                          f"recorded {net_info['sha256'][:12]}...)")
    inv = head.get("detectors")
    if inv:
        copy = reader.directory / inv["copy"]
        if not copy.is_file():
            raise ReplayError(f"the recording's detector inventory {copy} is missing")
        if file_sha256(copy) != inv["sha256"]:
            raise ReplayError(f"the recording's detector inventory {copy} was changed after recording")
        cfg = msgspec.structs.replace(cfg, detectors=str(copy))
    try:
        net = compile_network(path, permissive_turns=cfg.network.permissive_turns)
        return Engine(net, cfg)
    except ValueError as exc:
        raise ReplayError(f"cannot rebuild the engine: {exc}") from exc


def replay(log: str | Path, *, net_path: str | Path | None = None, until: str | None = None,
           progress: bool = True, stream: TextIO | None = None) -> dict:
    """Replay the recording at ``log``; returns the summary (see the module docstring)."""
    wall0 = time.perf_counter()
    until_spec = parse_until(until) if until else None
    try:
        reader = LogReader(log)
    except LogError as exc:
        raise ReplayError(str(exc)) from exc
    engine = load_engine(reader, net_path)
    loop0 = time.perf_counter()
    cfg, bank = engine.config, engine.bank
    sim = cfg.clock == "sim"
    clock = ManualClock()
    signal_adapter: dict[int, bytes] = {}  # as Server.signal_adapter: signal -> adapter, in hello order
    expected: deque[tuple[bytes, bytes, bool]] = deque()  # (identity, frame, is_command) still to be matched
    by_kind: Counter[str] = Counter()
    examples: list[dict] = []
    state = {"mismatches": 0, "commands": 0, "outputs": 0}
    end_counters = None
    until_ns = None
    stopped_early = False
    command_seq = 0
    first_tick = last_tick = None
    bar = _Progress(reader.total_bytes, stream, progress)

    def mismatch(kind: str, recorded: bytes | None, replayed: bytes | None, ident: bytes) -> None:
        state["mismatches"] += 1
        if len(examples) < MAX_EXAMPLES:
            examples.append({"kind": kind, "tick_ns": last_tick, "adapter": ident.decode(errors="replace"),
                             "recorded": None if recorded is None else _describe(recorded),
                             "replayed": None if replayed is None else _describe(replayed)})

    def settle() -> None:
        while expected:
            ident, frame, _ = expected.popleft()
            mismatch("missing_from_recording", None, frame, ident)

    try:
        for rec, offset in reader.iter_with_offsets():
            kind = rec.kind
            if kind == TICK and until_spec is not None:
                if until_ns is None:
                    until_ns = until_spec[1] + (rec.t_ns if until_spec[0] == "rel" else 0)
                if rec.t_ns > until_ns:
                    stopped_early = True
                    break
            by_kind[KIND_NAMES[kind]] += 1
            if kind == INGEST:
                settle()
                now = None if rec.t_ns < 0 else rec.t_ns
                watermark = bank.absorb_frame(rec.payload, now)
                if watermark is not None:  # judged as the server judges it; the ticks are recorded
                    refuse_watermark(bank, watermark, sim, engine.ticks, clock.now_ns())
            elif kind == TICK:
                settle()
                clock.set(rec.t_ns)
                first_tick = rec.t_ns if first_tick is None else first_tick
                last_tick = rec.t_ns
                chars = engine.tick(rec.t_ns).decode()
                command_seq += 1
                for t, ident in signal_adapter.items():
                    cmd = engine_command(engine, t, chars, rec.t_ns, command_seq)
                    expected.append((ident, P.encoder.encode(cmd), True))
            elif kind == ADAPTER_IN:
                settle()
                ident, frame = rec.peer()
                reply = _adapter_in(engine, signal_adapter, ident, frame)
                if reply is not None:
                    expected.append((ident, P.encoder.encode(reply), False))
            elif kind == ADAPTER_OUT:
                ident, frame = rec.peer()
                if not expected:
                    mismatch("not_replayed", frame, None, ident)
                    continue
                want_ident, want, is_command = expected.popleft()
                state["outputs"] += 1
                state["commands"] += is_command
                if (want_ident, want) != (ident, frame):
                    mismatch("differs", frame, want, ident)
            elif kind == OPERATOR_IN:
                settle()
                ident, frame = rec.peer()
                apply_recorded(engine, frame, rec.t_ns)  # overrides and releases change the signals
            elif kind == END:
                settle()
                end_counters = msgspec.msgpack.decode(rec.payload)
            bar.update(offset, engine.ticks, state["mismatches"])
    except LogError as exc:
        raise ReplayError(str(exc)) from exc
    finally:
        bar.close()
    unrecorded_tail = 0
    if end_counters is not None:
        settle()
    elif not stopped_early:
        unrecorded_tail = len(expected)  # a crash between sending the last commands and writing them
    replayed = {"ticks": engine.ticks, "accepted": bank.accepted, "rejected": dict(bank.rejected)}
    counters_match = None
    if end_counters is not None and "ticks" in end_counters and not stopped_early:
        recorded = {k: end_counters.get(k) for k in replayed}
        counters_match = recorded == replayed
        if not counters_match:
            state["mismatches"] += 1
            if len(examples) < MAX_EXAMPLES:
                examples.append({"kind": "counters", "recorded": recorded, "replayed": replayed})
    wall = time.perf_counter() - wall0
    loop_s = time.perf_counter() - loop0
    n_records = sum(by_kind.values())
    return {
        "log": str(reader.path),
        "segments": len(reader.segments),
        "bytes": reader.total_bytes,
        "records": n_records,
        "records_by_kind": dict(by_kind),
        "ticks": engine.ticks,
        "first_tick_ns": first_tick,
        "last_tick_ns": last_tick,
        "commands_compared": state["commands"],
        "outputs_compared": state["outputs"],
        "mismatches": state["mismatches"],
        "mismatch_examples": examples,
        "clean_end": end_counters is not None,
        "counters": replayed,
        "counters_match": counters_match,
        "unrecorded_tail": unrecorded_tail,
        "torn_bytes": reader.torn_bytes,
        "until_ns": until_ns,
        "stopped_at_until": stopped_early,
        "wall_s": round(wall, 3),
        "replay_s": round(loop_s, 3),  # the replay loop alone, without rebuilding the engine
        "records_per_s": round(n_records / loop_s) if loop_s > 0 else None,
    }


def _adapter_in(engine, signal_adapter: dict[int, bytes], ident: bytes, frame: bytes) -> P.Welcome | None:
    """What ``Server._drain_adapters`` does with one adapter message, minus the sockets."""
    try:
        msg = P.adapter_decoder.decode(frame)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
        return None
    if not isinstance(msg, P.Hello):
        return None
    return register(engine, signal_adapter, ident, msg)


def print_summary(r: dict, stream: TextIO | None = None) -> None:
    out = stream or sys.stdout
    kinds = "  ".join(f"{k} {v}" for k, v in sorted(r["records_by_kind"].items()))
    print(f"recording    {r['log']}  ({r['segments']} segment(s), {r['bytes'] / 1e6:.1f} MB)", file=out)
    print(f"records      {r['records']}  ({kinds})", file=out)
    print(f"ticks        {r['ticks']}" + ("  (stopped at --until)" if r["stopped_at_until"] else ""), file=out)
    print(f"commands     {r['commands_compared']} compared ({r['outputs_compared']} adapter messages)", file=out)
    print(f"mismatches   {r['mismatches']}", file=out)
    for ex in r["mismatch_examples"]:
        print(f"  {json.dumps(ex)}", file=out)
    end = "clean shutdown" if r["clean_end"] else "no END record (the engine was killed, or is still running)"
    print(f"end          {end}" + (f"; counters match: {r['counters_match']}" if r["clean_end"] else ""), file=out)
    if r["unrecorded_tail"]:
        print(f"             {r['unrecorded_tail']} command(s) of the last tick were sent but not recorded", file=out)
    if r["torn_bytes"]:
        print(f"torn tail    {r['torn_bytes']} byte(s) after the last whole record ignored", file=out)
    print(f"speed        {r['records_per_s']} records/s ({r['replay_s']} s replaying, {r['wall_s']} s in all)",
          file=out)


def quiet_rejections() -> None:
    """Rejections were logged when they were recorded; replaying them again is noise."""
    logging.getLogger("traffic_engine.ingest").setLevel(logging.ERROR)


__all__ = ["ReplayError", "load_engine", "parse_until", "print_summary", "replay"]
