"""Detector failures for the simulated city: ``evaluate --fail-detectors FRACTION --seed N``.

A random ``fraction`` of the placed detectors (loops and cameras alike, drawn with ``seed``)
fails for the whole run, each one of two ways, with equal odds:

- *silent*: it sends nothing at all (a cut cable, a dead gateway);
- *stuck*: it keeps sending a constant reading. A stuck loop reports presence all the time
  (occupancy 1, no vehicle counted, no speed: "stuck on"); a stuck camera repeats, forever, the
  first reading in which it saw any vehicle (until then it reports what it sees).

The bridge applies :class:`DetectorFaults` to what SUMO's detectors measured before sending, so
the engine gets exactly what a city with broken detectors would send it and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class DetectorFaults:
    """Which detectors fail and how; ``loops`` and ``cameras`` rewrite one step's readings."""

    fraction: float
    seed: int
    loop_silent: np.ndarray  # bool[n_loops]
    loop_stuck: np.ndarray
    camera_silent: np.ndarray  # bool[n_cameras]
    camera_stuck: np.ndarray
    _latched: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    @classmethod
    def draw(cls, n_loops: int, n_cameras: int, fraction: float, seed: int) -> DetectorFaults:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"the fraction of failed detectors must be within 0..1, not {fraction}")
        rng = np.random.default_rng(seed)
        n = n_loops + n_cameras
        failed = np.zeros(n, dtype=np.bool_)
        failed[rng.choice(n, size=int(round(fraction * n)), replace=False)] = True
        stuck = rng.random(n) < 0.5
        return cls(fraction, seed, failed[:n_loops] & ~stuck[:n_loops], failed[:n_loops] & stuck[:n_loops],
                   failed[n_loops:] & ~stuck[n_loops:], failed[n_loops:] & stuck[n_loops:])

    def loops(self, count: np.ndarray, occupancy: np.ndarray, speed: np.ndarray):
        """``(count, occupancy, speed, send)``: stuck loops rewritten; ``send`` false for silent ones."""
        count = np.where(self.loop_stuck, 0, count)
        occupancy = np.where(self.loop_stuck, 1.0, occupancy)
        speed = np.where(self.loop_stuck, np.nan, speed)
        return count, occupancy, speed, ~self.loop_silent

    def camera(self, c: int, vehicles: np.ndarray, queue: np.ndarray):
        """``(vehicles, queue)`` camera ``c`` sends, or None when it is silent."""
        if self.camera_silent[c]:
            return None
        if not self.camera_stuck[c]:
            return vehicles, queue
        if c not in self._latched and np.any(vehicles > 0):
            self._latched[c] = (vehicles.copy(), queue.copy())
        return self._latched.get(c, (vehicles, queue))

    def summary(self) -> dict:
        return {"fraction": self.fraction, "seed": self.seed,
                "loops_silent": int(self.loop_silent.sum()), "loops_stuck": int(self.loop_stuck.sum()),
                "cameras_silent": int(self.camera_silent.sum()), "cameras_stuck": int(self.camera_stuck.sum())}


__all__ = ["DetectorFaults"]
