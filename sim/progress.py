"""A progress line for long simulation runs, on stderr.

On a terminal one line is rewritten in place (``\\r``), at most five times per wall second.
Elsewhere (CI logs, files) a full line is written every 10 % of the horizon or every 30 wall
seconds, whichever comes first. A line shows::

    cologne8 sumo-static  01:23:20  46.3%  run 412  arr 3120  wall 12s  412x

the label, simulated time since begin (and the share of the horizon), vehicles running and
arrived, wall seconds since the start, and simulated seconds per wall second.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, TextIO

__all__ = ["Progress", "format_hms"]


def format_hms(seconds: float) -> str:
    """``HH:MM:SS`` of a non-negative duration (hours may exceed 99)."""
    s = max(0, int(seconds))
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
    """Progress of one run from ``begin`` to ``end`` (simulation seconds)."""

    TTY_INTERVAL_S = 0.2
    LOG_STEP = 0.10
    LOG_INTERVAL_S = 30.0

    def __init__(
        self,
        label: str,
        begin: float,
        end: float,
        *,
        enabled: bool = True,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        tty: bool | None = None,
    ) -> None:
        self.label = label
        self.begin = float(begin)
        self.end = float(end)
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        if tty is None:
            isatty = getattr(self.stream, "isatty", None)
            tty = bool(isatty()) if callable(isatty) else False
        self.tty = tty
        self._t0 = clock()
        # a terminal shows the first update at once; a log waits for 10 % or 30 s
        self._last_write = -float("inf") if tty else self._t0
        self._next_share = self.LOG_STEP
        self._width = 0
        self._state = (self.begin, 0, 0)
        self._closed = False

    def _line(self, sim_t: float, running: int, arrived: int, now: float) -> str:
        elapsed_sim = max(0.0, sim_t - self.begin)
        horizon = max(self.end - self.begin, 1e-9)
        wall = max(now - self._t0, 0.0)
        rate = f"{elapsed_sim / wall:.0f}x" if wall > 0 else "-"
        return (
            f"{self.label}  {format_hms(elapsed_sim)}  {100.0 * elapsed_sim / horizon:5.1f}%"
            f"  run {running}  arr {arrived}  wall {wall:.0f}s  {rate}"
        )

    def _write_tty(self, line: str) -> None:
        pad = max(0, self._width - len(line))
        self.stream.write("\r" + line + " " * pad)
        self.stream.flush()
        self._width = len(line)

    def update(self, sim_t: float, running: int, arrived: int) -> None:
        """Report the current simulation time and vehicle counts (cheap when nothing is due)."""
        self._state = (sim_t, running, arrived)
        if not self.enabled or self._closed:
            return
        now = self.clock()
        if self.tty:
            if now - self._last_write >= self.TTY_INTERVAL_S:
                self._last_write = now
                self._write_tty(self._line(sim_t, running, arrived, now))
            return
        share = (sim_t - self.begin) / max(self.end - self.begin, 1e-9)
        if share + 1e-12 >= self._next_share or now - self._last_write >= self.LOG_INTERVAL_S:
            while self._next_share <= share + 1e-12:
                self._next_share += self.LOG_STEP
            self._last_write = now
            self.stream.write(self._line(sim_t, running, arrived, now) + "\n")
            self.stream.flush()

    def close(self, summary: str | None = None) -> None:
        """Write the final state (and ``summary`` on its own line). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if not self.enabled:
            return
        now = self.clock()
        line = self._line(*self._state, now)
        if self.tty:
            self._write_tty(line)
            self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        if summary:
            self.stream.write(summary + "\n")
        self.stream.flush()
