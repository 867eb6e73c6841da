"""How long one engine tick takes on real networks: ``python -m benchmarks.tick [--json FILE]``.

For each RESCO network (read from ../shared/scenarios/resco) and each engine controller, the
benchmark feeds the engine a realistic tick's worth of detector readings (every loop and camera
reporting once) and times ``Engine.tick`` (binning, estimation, decision, safety). It also
times the decision and safety kernels alone. Figures are medians over the ticks, in
microseconds.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from benchmarks import parser, write_json
from controllers import CONTROLLERS
from detectors.messages import Batch, CameraReading, LoopReading, encode
from engine.config import EngineConfig
from engine.core import Engine
from network import compile_network, default_layout

RESCO = Path(__file__).resolve().parents[1].parent / "shared" / "scenarios" / "resco"
T0 = 1_767_225_600 * 10**9


def readings_frame(specs, lane_len, rng, ts_ns: int) -> bytes:
    """One tick of plausible readings from every detector (counts within what a zone can hold)."""
    out = []
    for s in specs:
        if s.kind == "loop":
            out.append(LoopReading(s.id, ts_ns, 1.0, int(rng.integers(0, 2)), float(rng.random() * 0.5)))
        else:
            cap = [max(1, int(s.zone_m(k, lane_len) / 7.5)) for k in range(len(s.lanes))]
            veh = [int(rng.integers(0, c + 1)) for c in cap]
            out.append(CameraReading(s.id, ts_ns, 1.0, veh, [float(rng.integers(0, v + 1)) for v in veh]))
    return encode(Batch(out))


def bench(net_path: Path, controller: str, ticks: int) -> dict:
    net = compile_network(net_path)
    specs = default_layout(net)
    engine = Engine(net, EngineConfig(controller=controller), detectors=specs)
    engine.warm_up()
    rng = np.random.default_rng(0)
    lane_len = dict(zip(net.lane_ids, net.lane_length_m.tolist()))
    frames = [readings_frame(specs, lane_len, rng, T0 + k * 10**9) for k in range(ticks)]  # a reading is taken once
    tick_us, decide_us, safety_us = [], [], []
    for k in range(ticks):
        now = T0 + k * 10**9
        engine.bank.absorb_frame(frames[k], now)
        t0 = time.perf_counter_ns()
        engine.tick(now)
        tick_us.append((time.perf_counter_ns() - t0) / 1e3)
        t0 = time.perf_counter_ns()
        engine.controller.decide(engine.estimator.state, engine.safety.active_phase, engine.safety.active_since_ns,
                                 now, engine.target_phase)
        decide_us.append((time.perf_counter_ns() - t0) / 1e3)
        t0 = time.perf_counter_ns()
        engine.safety.enforce(engine.target_phase, now)
        safety_us.append((time.perf_counter_ns() - t0) / 1e3)
    if engine.bank.rejected:
        raise RuntimeError(f"benchmark readings were rejected: {dict(engine.bank.rejected)}")
    return {
        "network": net_path.parent.name, "controller": controller, "signals": net.n_tls, "lanes": net.n_lanes,
        "detectors": len(specs), "ticks": ticks,
        "tick_us_p50": float(np.median(tick_us)), "tick_us_p99": float(np.percentile(tick_us, 99)),
        "decide_us_p50": float(np.median(decide_us)), "safety_us_p50": float(np.median(safety_us)),
    }


def main(argv: list[str] | None = None) -> int:
    p = parser("tick", __doc__)
    p.add_argument("--ticks", type=int, default=300, help="ticks per network and controller (default %(default)s)")
    p.add_argument("--json", help="also write the rows to this file")
    args = p.parse_args(argv)
    nets = sorted(RESCO.glob("*/*.net.xml"))
    if not nets:
        p.error(f"no RESCO networks under {RESCO}")
    rows = []
    print(f"{'network':14} {'controller':13} {'signals':>7} {'detectors':>9} {'tick p50 us':>11} "
          f"{'tick p99 us':>11} {'decide us':>9} {'safety us':>9}")
    for path in nets:
        for ctl in sorted(CONTROLLERS):
            r = bench(path, ctl, args.ticks)
            rows.append(r)
            print(f"{r['network']:14} {ctl:13} {r['signals']:7d} {r['detectors']:9d} {r['tick_us_p50']:11.1f} "
                  f"{r['tick_us_p99']:11.1f} {r['decide_us_p50']:9.1f} {r['safety_us_p50']:9.1f}", flush=True)
    if args.json:
        write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
