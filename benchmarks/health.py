"""Detector health at city scale: ``python -m benchmarks.health [--detectors N] [--ticks K] [--json FILE]``.

Builds N detectors (loops in stop/upstream pairs on a lane, and one three-lane camera per three
such pairs, so about 6/7 loops) with the peers ``DetectorHealth.for_bank`` would give them, and
runs K ticks of 1 Hz readings through ``DetectorHealth.update`` (the kernel over every detector
at once): plausible traffic, with one detector in a hundred faulty in each of the six ways (6 % in all).
It prints the kernel's median and p99 time per tick, nanoseconds per detector, the share of a
1 s tick, and, measured in the same run, the floor any per-tick check pays: one numpy pass
reading the same input arrays, and the ratio of the two. Also the states at the end, to show
the checks ran. ``--json FILE`` writes the figures.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np

from benchmarks import parser, write_json
from detectors.health import STATES, DetectorHealth
from engine.config import HealthParams


def build(n_detectors: int):
    """(health, n_loops, n_slots, fault kind per loop (-1 healthy) and per camera)."""
    groups = max(1, n_detectors // 7)  # a group: 3 lanes x 2 loops + 1 camera
    n_loops, n_cams = 6 * groups, groups
    ids = [f"L{i}" for i in range(n_loops)] + [f"C{c}" for c in range(n_cams)]
    peer_idx = np.empty(n_loops + 6 * n_cams, dtype=np.int64)
    peer_idx[:n_loops] = np.arange(n_loops) ^ 1  # the other loop on the lane
    peer_idx[n_loops:] = np.arange(n_loops)  # a camera: the six loops of its three lanes
    peer_ptr = np.concatenate([np.arange(n_loops + 1), n_loops + 6 * np.arange(1, n_cams + 1)])
    cam_ptr = 3 * np.arange(n_cams + 1)
    params = SimpleNamespace(**{f: getattr(HealthParams(), f) for f in HealthParams.__struct_fields__})
    h = DetectorHealth(ids, n_loops, cam_ptr, np.full(3 * n_cams, 25.0), peer_ptr, peer_idx, params)
    rng = np.random.default_rng(0)
    loop_fault = np.where(rng.random(n_loops) < 0.06, rng.integers(0, 6, n_loops), -1)
    cam_fault = np.where(rng.random(n_cams) < 0.06, rng.integers(0, 6, n_cams), -1)
    return h, n_loops, 3 * n_cams, loop_fault, cam_fault


def readings(k: int, rng, n_loops: int, n_slots: int, loop_fault, cam_fault):
    """Tick k's arrays: loop count, occupied seconds, seconds covered; camera vehicles, queue."""
    count = (rng.random(n_loops) < 0.25).astype(np.float64)
    occ = count * rng.uniform(0.2, 0.6, n_loops)
    time_s = np.ones(n_loops)
    veh = np.minimum(rng.poisson(3.0, n_slots), 25).astype(np.float64)
    queue = np.floor(veh * rng.random(n_slots))
    f = loop_fault
    time_s[f == 0] = 0.0  # silent
    count[f == 1], occ[f == 1] = 0.0, 1.0  # stuck on
    count[f == 2], occ[f == 2] = 2.0 * (k % 2), 0.02  # chattering
    count[f == 3], occ[f == 3] = 1.0, 0.25  # constant
    count[f == 4], occ[f == 4] = 0.0, 0.1  # zero count, occupancy
    count[f == 5], occ[f == 5] = 0.0, 0.0  # no activity
    slot_fault = np.repeat(cam_fault, 3)
    veh[slot_fault == 0] = np.nan
    queue[slot_fault == 0] = np.nan
    veh[slot_fault == 1] = 25.0
    veh[slot_fault == 2] = 25.0 * (k % 2)
    veh[slot_fault == 3], queue[slot_fault == 3] = 4.0, 1.0
    veh[slot_fault == 4], queue[slot_fault == 4] = 0.0, 2.0
    veh[slot_fault == 5], queue[slot_fault == 5] = 0.0, 0.0
    return count, occ * time_s, time_s, veh, queue


def bench(n_detectors: int, ticks: int) -> dict:
    h, n_loops, n_slots, loop_fault, cam_fault = build(n_detectors)
    h.warm_up()
    rng = np.random.default_rng(1)
    frames = [readings(k, rng, n_loops, n_slots, loop_fault, cam_fault) for k in range(ticks)]
    kernel_ns, floor_ns = [], []
    sink = 0.0
    for k in range(ticks):
        count, occ_time, time_s, veh, queue = frames[k]
        t0 = time.perf_counter_ns()
        h.update(1.0, count, occ_time, time_s, veh, queue, k)
        kernel_ns.append(time.perf_counter_ns() - t0)
        t0 = time.perf_counter_ns()
        sink += float(count.sum() + occ_time.sum() + time_s.sum() + np.nansum(veh) + np.nansum(queue))
        floor_ns.append(time.perf_counter_ns() - t0)
    p50, p99, floor = np.median(kernel_ns), np.percentile(kernel_ns, 99), np.median(floor_ns)
    return {
        "detectors": h.n, "loops": n_loops, "cameras": h.n - n_loops, "ticks": ticks,
        "kernel_us_p50": p50 / 1e3, "kernel_us_p99": p99 / 1e3, "ns_per_detector": p50 / h.n,
        "tick_share_p99": p99 / 1e9, "read_inputs_us_p50": floor / 1e3, "ratio_to_read_inputs": p50 / floor,
        "states": h.counts(), "_sink": sink,
    }


def main(argv: list[str] | None = None) -> int:
    p = parser("health", __doc__)
    p.add_argument("--detectors", type=int, default=100_000, help="detectors to check (default %(default)s)")
    p.add_argument("--ticks", type=int, default=400,
                   help="ticks of 1 s (default %(default)s: long enough for the 5-minute checks to fire)")
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args(argv)
    if args.detectors < 7 or args.ticks < 1:
        p.error("need at least 7 detectors and 1 tick")
    r = bench(args.detectors, args.ticks)
    r.pop("_sink")
    print(f"detector health, {r['detectors']} detectors ({r['loops']} loops, {r['cameras']} cameras), "
          f"{r['ticks']} ticks of 1 s")
    print(f"  kernel per tick      p50 {r['kernel_us_p50']:10.1f} us   p99 {r['kernel_us_p99']:10.1f} us   "
          f"({r['ns_per_detector']:.1f} ns per detector; p99 = {100 * r['tick_share_p99']:.3f} % of a 1 s tick)")
    print(f"  reading the inputs   p50 {r['read_inputs_us_p50']:10.1f} us   (one numpy pass over the same arrays)")
    print(f"  ratio kernel / reading the inputs: {r['ratio_to_read_inputs']:.2f}")
    print("  states at the end:   " + ", ".join(f"{s} {r['states'][s]}" for s in STATES))
    if args.json:
        write_json(args.json, r)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
