"""Signal-controller adapters (protocol v2, ``engine.adapter``): registration, the adapter's
conflict monitor, heartbeats and the offline alarm, local fallback and hand-back, and a kill -9
of the engine in the middle of an evaluation with real SUMO.

Engines run in a thread (``tests.serving``) or as processes (the kill test); adapters talk to
them over real ZeroMQ sockets on free loopback ports. Displays are judged by the simulator's
independent referee, :class:`sim.monitor.ConflictMonitor`.
"""

from __future__ import annotations

import time
from pathlib import Path

import msgspec
import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import protocol as P
from engine.adapter import JunctionSpec, LocalPlan, SignalAdapter, sumo_programs
from engine.client import OperatorClient
from engine.config import AdapterParams, EngineConfig, Endpoints, SafetyTimings
from engine.core import Engine
from network import compile_network
from sim.monitor import ConflictMonitor
from tests.serving import ANY, serving

DEMO_NET = Path(__file__).resolve().parents[1] / "sim" / "scenarios" / "demo" / "demo.net.xml"
T0 = 1_767_225_600 * 10**9
S = 10**9


@pytest.fixture(scope="module")
def demo():
    net = compile_network(DEMO_NET)
    return net, sumo_programs(DEMO_NET)


def spec_for(net, programs, t=0, **timings) -> JunctionSpec:
    s = SafetyTimings()  # the engine's defaults: a cabinet that matches them
    base = dict(min_green_s=s.min_green_s, yellow_s=s.yellow_s, red_clearance_s=s.red_clearance_s)
    base.update(timings)
    return JunctionSpec.from_network(net, t, programs=programs, **base)


def wait_for(what, timeout_s=20.0, step_s=0.02):
    """Poll ``what()`` until it is truthy (a bounded wait, not a timed assertion)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(step_s)
    raise AssertionError(f"condition not met within {timeout_s} s")


def hello_reply(dealer, hello: P.Hello) -> P.Welcome:
    dealer.send(P.encoder.encode(hello))
    assert dealer.poll(5000), "no welcome"
    return P.engine_to_adapter_decoder.decode(dealer.recv())


# -- registration ---------------------------------------------------------------------------

def test_registration_refusals_name_their_reason(demo):
    """A v2 hello is refused, with the reason, when the cabinet's conflict table or timings
    contradict the network or the engine's safety timings; a matching one is welcomed."""
    net, programs = demo
    good = SignalAdapter(spec_for(net, programs)).hello_message(T0)
    groups = good.groups
    known = set(map(tuple, good.conflicts))
    extra = next((a, b) for a in range(good.n_links) for b in range(a + 1, good.n_links) if (a, b) not in known)
    cases = {
        "is missing from the adapter's conflict table": msgspec.structs.replace(good, conflicts=good.conflicts[1:]),
        "is not in the network": msgspec.structs.replace(good, conflicts=good.conflicts + [extra]),
        "longer than the engine's 5 s": msgspec.structs.replace(
            good, groups=[msgspec.structs.replace(groups[0], min_green_s=7.0), *groups[1:]]),
        "yellow 2 s is below the engine's safety timing 3 s": msgspec.structs.replace(
            good, groups=[*groups[:-1], msgspec.structs.replace(groups[-1], yellow_s=2.0)]),
        "red clearance 4 s is longer": msgspec.structs.replace(
            good, groups=[msgspec.structs.replace(g, red_clearance_s=4.0) for g in groups]),
        "each link must be in exactly one": msgspec.structs.replace(good, groups=groups[1:]),
        "not longer than the engine's heartbeat": msgspec.structs.replace(good, fallback_after_s=0.5),
        "unknown junction": msgspec.structs.replace(good, junction="atlantis"),
    }
    with serving(Engine(net, EngineConfig(clock="sim", endpoints=ANY))) as server:
        dealer = zmq.Context.instance().socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(server.endpoints["adapters"])
        try:
            for expect, hello in cases.items():
                reply = hello_reply(dealer, hello)
                assert not reply.accepted, expect
                assert expect in reply.reason, (expect, reply.reason)
            reply = hello_reply(dealer, good)
            assert reply.accepted, reply.reason
            assert reply.heartbeat_s == 1.0 and reply.offline_after_s == 5.0
            with OperatorClient(server.endpoints["operators"]) as client:
                status = client.request("status")
            assert status["adapters"]["registrations_refused"] == len(cases)
            assert status["junctions"]["with_adapter"] == 1
        finally:
            dealer.close(0)


# -- the adapter's conflict monitor ------------------------------------------------------------

def test_unsafe_commands_are_refused_and_reported_over_sockets(demo):
    """A command with conflicting greens, or one skipping yellow, is refused by the adapter: the
    signal shows a safe state, and the feedback carries the reason."""
    net, programs = demo
    spec = spec_for(net, programs)
    a, b = spec.conflicts[0]
    ctx = zmq.Context.instance()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    adapter = SignalAdapter(spec, start_ns=T0)
    adapter.connect(f"tcp://127.0.0.1:{port}")
    try:
        now = T0
        wait_for(lambda: adapter.run_once(now) is not None and router.poll(0))
        ident, frame = router.recv_multipart()
        assert isinstance(P.adapter_decoder.decode(frame), P.Hello)
        router.send_multipart([ident, P.encoder.encode(P.Welcome(spec.junction, True))])
        red = spec.red_letters

        def send(state, seq):
            router.send_multipart([ident, P.encoder.encode(P.Command(spec.junction, now, seq, state))])
            wait_for(lambda: adapter.sock.poll(0))
            shown = adapter.run_once(now)
            while True:  # the feedback for this command (heartbeats may come first)
                assert router.poll(5000)
                msg = P.adapter_decoder.decode(router.recv_multipart()[1])
                if isinstance(msg, P.Feedback) and msg.seq == seq:
                    return shown, msg

        both = "".join("G" if i in (a, b) else red[i] for i in range(spec.n_links))
        shown, fb = send(both, 1)
        assert fb.refused.startswith("conflicting_green"), fb.refused
        assert not (shown[a] in "Gg" and shown[b] in "Gg")
        assert fb.state == shown and fb.refused_total == 1
        only_a = "".join("G" if i == a else red[i] for i in range(spec.n_links))
        now += 10 * S
        shown, fb = send(only_a, 2)
        assert fb.refused == "" and shown[a] == "G"
        now += 10 * S
        shown, fb = send(red, 3)  # green straight to red
        assert fb.refused.startswith("no_yellow"), fb.refused
        assert shown[a] == "y"
        assert adapter.stats.refused == {"conflicting_green": 1, "no_yellow": 1}
    finally:
        adapter.close()
        router.close(0)


@st.composite
def junctions(draw):
    n = draw(st.integers(2, 6))
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    conflicts = draw(st.lists(st.sampled_from(pairs), unique=True, max_size=len(pairs))) if pairs else []
    min_green = draw(st.sampled_from([0.0, 2.0, 5.0]))
    yellow = draw(st.sampled_from([1.0, 3.0]))
    red = draw(st.sampled_from([0.0, 1.0, 2.0]))
    letters = st.text(alphabet="GgyrsS", min_size=n, max_size=n).map(lambda s: s.replace("S", "r"))
    phases = draw(st.lists(st.tuples(letters, st.sampled_from([1.0, 3.0, 10.0])), min_size=1, max_size=4))
    groups = tuple(P.SignalGroup(str(i), [i], min_green, yellow, red) for i in range(n))
    return JunctionSpec("j", n, groups, tuple(conflicts), (LocalPlan("0", tuple(phases)),))


def steps(n):
    letters = st.text(alphabet="Ggyrs", min_size=n, max_size=n)
    command = st.builds(lambda state, mode, nxt: ("cmd", state, mode, nxt), letters,
                        st.sampled_from(["run", "run", "run", "hold", "force_off", "plan", "flash", "bogus"]), letters)
    silence = st.builds(lambda k: ("silence", k), st.integers(1, 8))
    return st.lists(st.one_of(command, command, silence), max_size=60)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_no_command_sequence_makes_the_adapter_unsafe(data):
    """Whatever the engine sends (or does not send), the adapter never shows conflicting greens
    (or a green beside a conflicting yellow), never ends a green before its minimum or without
    yellow, never cuts a yellow, and starts a green only after its own and every conflicting
    link's red clearance."""
    spec = data.draw(junctions())
    g = spec.groups[0]
    adapter = SignalAdapter(spec, fallback_after_s=3.0, heartbeat_s=1.0, start_ns=T0)
    monitor = ConflictMonitor.from_conflicts({"j": (spec.n_links, spec.conflicts)}, min_green_s=g.min_green_s,
                                             min_yellow_s=g.yellow_s)
    now, seq = T0, 0
    red_since = [T0 - 3600 * S] * spec.n_links
    prev = None

    def show(state):
        nonlocal prev
        monitor.observe((now - T0) / S, [state])
        for i, ch in enumerate(state):
            was = prev[i] if prev else "r"
            if ch in "Gg" and was not in "Gg":  # a new green: own and conflicting clearance kept
                assert now - red_since[i] >= g.red_clearance_s * S
                for x, y in spec.conflicts:
                    foe = y if x == i else x if y == i else None
                    if foe is not None:
                        assert state[foe] in "rs" and now - red_since[foe] >= g.red_clearance_s * S
            if ch in "rso" and was not in "rso":
                red_since[i] = now
        prev = state

    for step in data.draw(steps(spec.n_links)):
        if step[0] == "silence":
            for _ in range(step[1]):
                now += S
                show(adapter.step(now))
        else:
            seq += 1
            now += S
            _, state, mode, nxt = step
            show(adapter.step(now, P.Command("j", now, seq, state, mode=mode, next_state=nxt)))
    assert monitor.total == 0, monitor.events[:3]


def test_local_plan_runs_after_silence_and_hands_back(demo):
    """Silent engine: after fallback_after_s the adapter runs SUMO's program (every phase for its
    full duration once shown); the next command takes over, and the whole display is safe."""
    net, programs = demo
    spec = spec_for(net, programs)
    adapter = SignalAdapter(spec, fallback_after_s=3.0, start_ns=T0)
    monitor = ConflictMonitor.from_conflicts({"j": (spec.n_links, spec.conflicts)}, min_green_s=5.0, min_yellow_s=3.0)
    now = T0
    phases = spec.plans[0].phases
    main = max((p for p, _ in phases if "y" not in p), key=lambda p: sum(ch in "Gg" for ch in p))
    green0 = "".join(ch if ch in "Gg" else spec.red_letters[i] for i, ch in enumerate(main))
    shown = []
    for k in range(40):  # the engine runs phase 4's greens
        now += S
        shown.append(adapter.step(now, P.Command(spec.junction, now, k, green0)))
        monitor.observe(k, [shown[-1]])
    assert adapter.mode == "engine" and shown[-1] == green0
    for k in range(40, 240):  # silence
        now += S
        shown.append(adapter.step(now))
        monitor.observe(k, [shown[-1]])
    assert adapter.mode == "fallback" and adapter.stats.fallbacks == 1
    seen = set(shown[43:])
    assert {adapter.consistent(p) for p, _ in phases} <= seen  # the program's phases are all shown
    for k in range(240, 300):  # the engine is back and asks for its green again
        now += S
        shown.append(adapter.step(now, P.Command(spec.junction, now, k, green0)))
        monitor.observe(k, [shown[-1]])
    assert adapter.mode == "engine" and adapter.stats.handbacks == 1
    assert shown[-1] == green0
    assert monitor.total == 0, monitor.events[:3]


def test_a_plan_the_conflict_table_forbids_still_cycles_safely():
    """A local plan written for a looser conflict table (two conflicting links green together)
    runs with the link that gives way held red: every phase is reached, nothing unsafe shown."""
    groups = tuple(P.SignalGroup(str(i), [i], 5.0, 3.0, 2.0) for i in range(3))
    plan = LocalPlan("0", (("Ggr", 20.0), ("yyr", 3.0), ("rrG", 20.0), ("rry", 3.0)))
    spec = JunctionSpec("j", 3, groups, ((0, 1), (0, 2), (1, 2)), (plan,))
    adapter = SignalAdapter(spec, start_ns=T0)
    assert adapter.consistent("Ggr") == "Grr" and adapter.consistent("yyr") == "yyr"
    monitor = ConflictMonitor.from_conflicts({"j": (3, spec.conflicts)}, min_green_s=5.0, min_yellow_s=3.0)
    shown = []
    for k in range(1, 200):
        shown.append(adapter.step(T0 + k * S))
        monitor.observe(k, [shown[-1]])
    assert adapter.mode == "fallback"
    assert {"Grr", "yrr", "rrG", "rry"} <= set(shown)
    assert monitor.total == 0, monitor.events[:3]


# -- heartbeats, offline alarm, fallback and resume over sockets --------------------------------

def test_offline_alarm_fallback_and_resume_over_sockets(demo):
    """A live engine on the wall clock: a silent adapter's junction goes offline (alarm raised,
    status counts it) and back online when it speaks (alarm cleared). Then the engine stops: the
    adapter runs its local plan; a new engine on the same endpoint gets its hello with the
    display, and its commands are applied again; nothing unsafe is shown throughout."""
    net, programs = demo
    cfg = EngineConfig(clock="wall", tick_s=0.1, heartbeat_s=0.1, endpoints=ANY,
                       adapters=AdapterParams(offline_after_s=0.5))
    spec = spec_for(net, programs)
    adapter = SignalAdapter(spec, heartbeat_s=0.1, fallback_after_s=0.5, start_ns=time.time_ns())
    monitor = ConflictMonitor.from_conflicts({"j": (spec.n_links, spec.conflicts)}, min_green_s=5.0, min_yellow_s=3.0)
    t_obs = [0.0]

    def run(seconds=None, until=None):
        deadline = time.monotonic() + (seconds if seconds is not None else 30.0)
        while time.monotonic() < deadline:
            shown = adapter.run_once(time.time_ns(), wait_ms=20)
            t_obs[0] += 1.0  # (the monitor wants increasing times; each call is one observation)
            monitor.observe(t_obs[0], [shown])
            if until is not None and until():
                return True
        return until is None

    def alarms(client):
        return {(a["kind"], a["subject"]) for a in client.request("alarms")["active"]}

    with serving(Engine(net, cfg)) as server:
        endpoint = server.endpoints["adapters"]
        adapter.connect(endpoint)
        with OperatorClient(server.endpoints["operators"]) as client:
            assert run(until=lambda: adapter.registered and adapter.stats.commands > 3)
            assert client.request("status")["junctions"]["online"] == 1
            # silence: the engine marks the junction offline
            wait_for(lambda: ("adapter_offline", spec.junction) in alarms(client))
            assert client.request("status")["junctions"]["offline"] == 1
            assert run(until=lambda: ("adapter_offline", spec.junction) not in alarms(client))
            status = client.request("status")
            assert status["junctions"]["offline"] == 0 and status["junctions"]["online"] == 1
            recent = [(a["kind"], a["active"]) for a in client.request("alarms")["recent"]
                      if a["kind"] == "adapter_offline"]
            assert recent == [("adapter_offline", True), ("adapter_offline", False)]
    # the engine is gone (commands it sent while the adapter was not listening may have been
    # refused: it had moved on; what counts is that nothing unsafe was shown)
    refused = adapter.stats.refused_total
    assert run(until=lambda: adapter.mode == "fallback")
    run(1.0)
    assert adapter.mode == "fallback"
    cfg2 = msgspec.structs.replace(cfg, endpoints=Endpoints(ingest="tcp://127.0.0.1:*", adapters=endpoint,
                                                            feed="tcp://127.0.0.1:*", operators="tcp://127.0.0.1:*"))
    handbacks = adapter.stats.handbacks  # (a slow machine may also have fallen back while the
    # test waited for the alarm above: that one was handed back already)
    with serving(Engine(net, cfg2)) as server:
        applied = adapter.stats.applied
        assert run(until=lambda: adapter.mode == "engine" and adapter.stats.applied > applied + 5)
        assert adapter.stats.handbacks == handbacks + 1
        with OperatorClient(server.endpoints["operators"]) as client:
            assert client.request("status")["adapters"]["refused_commands"] == 0
    adapter.close()
    assert adapter.stats.refused_total == refused  # the new engine continued from the display
    assert monitor.total == 0, monitor.events[:3]


# -- kill -9 the engine in the middle of an evaluation (real SUMO) ------------------------------

@pytest.mark.sumo
@pytest.mark.slow
def test_kill_engine_mid_evaluation_falls_back_and_resumes(small_scenario, tmp_path):
    """kill -9 at 120 s, restart at 240 s: SUMO keeps stepping with every signal on its own
    program, no safety violation, no teleport, every vehicle arrives; after the restart the
    adapters register again and the engine's commands are applied, none refused."""
    from sim.evaluate import evaluate

    r = evaluate(small_scenario.sumocfg, controller="adaptive", end=900, kill_engine="120:240", progress=False,
                 json_path=tmp_path / "kill.json")
    n_tls = len(small_scenario.tls_ids)
    k = r["kill_engine"]
    assert k["engine_exit"] == -9 and k["killed_sim_s"] == 120 and k["restarted_sim_s"] == 240
    assert r["safety_violations"] == 0, r["safety_violations_by_kind"]
    assert r["collisions"] == 0 and r["teleports"] == 0
    assert r["trips_completed"] == r["trips_total"] > 0
    assert k["fallbacks"] == n_tls and k["handbacks"] == n_tls
    assert 100 <= k["fallback_s"] <= 120  # the local plans ran from 120 + 3 s until the engine was back
    assert k["commands_applied_after_restart"] > 0 and k["commands_refused_after_restart"] == 0
    assert k["engine_after"]["online"] == n_tls


def test_kill_engine_option_is_checked():
    """``--kill-engine`` takes S or S:RESTART_S with RESTART_S after S; anything else is refused."""
    from sim.evaluate import EvaluationError, parse_kill

    assert parse_kill("120") == (120.0, None)
    assert parse_kill("120:240") == (120.0, 240.0)
    for bad in ("abc", "120:60", "-5", "10:10", "1:x"):
        with pytest.raises(EvaluationError):
            parse_kill(bad)


def test_adapter_benchmark_engine_commands_all_pass(tmp_path):
    """``benchmarks.adapter``: every command the engine's safety stage makes on the demo passes
    the adapters' monitors (same timings), and silence then starts every local plan."""
    import json

    from benchmarks.adapter import main

    out = tmp_path / "adapter.json"
    assert main(["--ticks", "60", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["commands"] == 60 * r["junctions"] > 0
    assert r["refused"] == 0
    assert r["fallbacks"] == r["junctions"]
    assert r["command_step_us"] > 0 and r["plan_step_us"] > 0
