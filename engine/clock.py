"""Injected time. Integer nanoseconds since the Unix epoch, everywhere."""

from __future__ import annotations

import time


class WallClock:
    """The live clock: epoch time, advanced by the monotonic clock so it never jumps back."""

    def __init__(self) -> None:
        self._epoch0 = time.time_ns()
        self._mono0 = time.monotonic_ns()

    def now_ns(self) -> int:
        return self._epoch0 + (time.monotonic_ns() - self._mono0)


class ManualClock:
    """A clock that moves only when told: tests, replay, and lockstep simulation."""

    def __init__(self, start_ns: int = 0) -> None:
        self._now = int(start_ns)

    def now_ns(self) -> int:
        return self._now

    def set(self, ts_ns: int) -> None:
        if ts_ns < self._now:
            raise ValueError(f"manual clock cannot go back ({ts_ns} < {self._now})")
        self._now = int(ts_ns)

    def advance(self, seconds: float) -> None:
        self._now += int(round(seconds * 1e9))
