"""What the adapter's conflict monitor and fallback cost: ``python -m benchmarks.adapter [--json FILE]``.

The engine (in-process, ``adaptive``, no detector data: it runs on recall) ticks the bundled
demo town for ``--ticks`` simulated seconds; every signal's command of every tick is then fed to
one :class:`engine.adapter.SignalAdapter` per signal (check + guard, as the SUMO bridge does),
and the same adapters are run as long again on their local plans (SUMO's programs). Figures are
microseconds per junction step (one command checked and shown, or one plan step) and the share
of commands refused (0 when the adapters' timings are the engine's).
"""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks import parser, write_json
from engine import protocol as P
from engine.adapter import JunctionSpec, SignalAdapter, sumo_programs
from engine.config import EngineConfig
from engine.core import Engine
from network import compile_network

DEMO_NET = Path(__file__).resolve().parents[1] / "sim" / "scenarios" / "demo" / "demo.net.xml"
T0 = 1_767_225_600 * 10**9


def run(ticks: int = 600) -> dict:
    net = compile_network(DEMO_NET)
    cfg = EngineConfig(clock="sim")
    engine = Engine(net, cfg)
    ptr = net.tls_link_ptr
    states = []
    for k in range(ticks):
        chars = engine.tick(T0 + k * 10**9).decode()
        states.append([chars[ptr[t]:ptr[t + 1]] for t in range(net.n_tls)])
    programs = sumo_programs(DEMO_NET)
    s = cfg.safety
    adapters = [SignalAdapter(JunctionSpec.from_network(net, t, min_green_s=s.min_green_s, yellow_s=s.yellow_s,
                                                        red_clearance_s=s.red_clearance_s, programs=programs),
                              start_ns=T0) for t in range(net.n_tls)]
    t0 = time.perf_counter()
    for k, row in enumerate(states):
        now = T0 + k * 10**9
        for t, a in enumerate(adapters):
            a.step(now, P.Command(net.tls_ids[t], now, k, row[t]))
    command_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for k in range(ticks, 2 * ticks):
        now = T0 + k * 10**9
        for a in adapters:
            a.step(now)
    plan_s = time.perf_counter() - t0
    steps = ticks * net.n_tls
    refused = sum(a.stats.refused_total for a in adapters)
    return {
        "junctions": net.n_tls,
        "links": net.n_links,
        "ticks": ticks,
        "command_step_us": round(command_s / steps * 1e6, 2),
        "plan_step_us": round(plan_s / steps * 1e6, 2),
        "commands": steps,
        "refused": refused,
        "fallbacks": sum(a.stats.fallbacks for a in adapters),
    }


def main(argv: list[str] | None = None) -> int:
    ap = parser("adapter", __doc__)
    ap.add_argument("--ticks", type=int, default=600, help="simulated seconds of commands (default %(default)s)")
    ap.add_argument("--json", help="also write the figures as one JSON object to this file")
    args = ap.parse_args(argv)
    if args.ticks < 1:
        ap.error("--ticks must be at least 1")
    r = run(args.ticks)
    print(f"{r['junctions']} junctions, {r['links']} links, {r['ticks']} ticks: "
          f"command checked and shown {r['command_step_us']} us/junction, local plan step {r['plan_step_us']} "
          f"us/junction; {r['refused']} of {r['commands']} commands refused; {r['fallbacks']} fallbacks")
    if args.json:
        write_json(args.json, r)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
