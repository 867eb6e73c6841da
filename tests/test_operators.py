"""Operator overrides: only ever shown through the safety stage, audited, expiring; the operator
ops over real sockets (``ctl junction/override/release/audit``)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import msgspec
import numpy as np
import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from controllers.safety import FLASH, GREEN, RED, YELLOW, Safety, SafetyConfig
from detectors import Clock, encode
from engine import protocol as P
from engine.alarms import AlarmBoard
from engine.client import OperatorClient, OperatorError
from engine.config import EngineConfig, OverrideParams, PlanParams, load_config
from engine.core import Engine
from engine.overrides import OverrideError, Overrides
from strategies import command_streams
from tests.serving import ANY, serving

NS = 10**9
T0 = 1_767_225_600 * NS
CFG = SafetyConfig(min_green_s=5.0, yellow_s=3.0, red_clearance_s=2.0)
PLANS = {"quad": PlanParams(cycle_s=60.0, splits_s=[15.0, 15.0, 15.0, 15.0]),
         "pair": PlanParams(cycle_s=40.0, splits_s=[25.0, 15.0], offset_s=7.0)}

_NETS: dict = {}


def _net(name):
    from conftest import RESCO_DIR
    from network import compile_network

    if not RESCO_DIR.is_dir():
        pytest.skip("RESCO scenarios not present")
    if name not in _NETS:
        _NETS[name] = compile_network(RESCO_DIR / name / f"{name}.net.xml")
    return _NETS[name]


def _stage(net, plans=PLANS, flows=None):
    """Overrides and a safety stage over ``net`` without the rest of an engine: what
    ``Engine.tick`` runs between the controller and the signals."""
    cfg = EngineConfig(plans=plans, safety=msgspec.structs.replace(EngineConfig().safety, min_green_s=CFG.min_green_s,
                                                                      yellow_s=CFG.yellow_s,
                                                                      red_clearance_s=CFG.red_clearance_s))
    flows = np.zeros(net.n_lanes) if flows is None else flows
    eng = SimpleNamespace(net=net, config=cfg, safety=Safety(net, CFG, start_ns=0), alarms=AlarmBoard(),
                          estimator=SimpleNamespace(state=SimpleNamespace(lane_flow_vph=flows)))
    eng.overrides = Overrides(eng)
    return eng


class Watch:
    """Checks every tick of a safety stage against the interlocks, flash included."""

    def __init__(self, net, safety):
        self.net, self.safety = net, safety
        n = net.n_links
        self.green_start = np.full(n, -10**18)
        self.yellow_start = np.full(n, -10**18)
        self.red_since = np.full(n, -10**18)
        self.flash_left = np.full(n, -10**18)  # when the link's junction came back from flash
        self.pairs = [(a, int(b)) for a in range(n)
                      for b in net.link_conflict_idx[net.link_conflict_ptr[a]:net.link_conflict_ptr[a + 1]] if a < b]
        self.tls_of = net.link_tls if hasattr(net, "link_tls") else np.repeat(
            np.arange(net.n_tls), np.diff(net.tls_link_ptr))
        self.flash_entries = self.flash_exits = 0

    def step(self, now, before, after):
        c, ptr = CFG, self.net.tls_link_ptr
        for a, b in self.pairs:  # (a flashing junction flashes every link: no G/y beside an o)
            assert not (after[a] in (GREEN, YELLOW) and after[b] != RED), (a, b, after[a], after[b])
            assert not (after[b] in (GREEN, YELLOW) and after[a] != RED), (a, b)
        for t in range(self.net.n_tls):
            links = after[ptr[t]:ptr[t + 1]]
            assert (links == FLASH).all() or not (links == FLASH).any(), f"signal {t} flashes in part: {links}"
            if links.size and links[0] == FLASH and before[ptr[t]] != FLASH:
                self.flash_entries += 1
                prev = before[ptr[t]:ptr[t + 1]]
                assert not (prev == GREEN).any(), "flash entered straight from green"
        for link in range(self.net.n_links):
            b, s = before[link], after[link]
            if b == s:
                continue
            if b == GREEN:
                assert s == YELLOW, f"link {link}: green -> {s} without yellow"
                assert now - self.green_start[link] >= c.min_green_s * NS, f"link {link}: green cut short"
                self.yellow_start[link] = now
            elif b == YELLOW:
                assert s in (RED, FLASH), f"link {link}: yellow -> {s}"
                assert now - self.yellow_start[link] >= c.yellow_s * NS, f"link {link}: short yellow"
            elif b == FLASH:
                assert s == RED, f"link {link}: flash -> {s} without all-red"
                self.flash_left[link] = now
                self.flash_exits += 1
            elif b == RED and s == GREEN:
                assert now - self.red_since[link] >= c.red_clearance_s * NS, f"link {link}: red clearance"
                t = self.tls_of[link]
                lo, hi = ptr[t], ptr[t + 1]
                # after flash: a full all-red clearance of the whole junction before any green
                assert now - self.flash_left[lo:hi].max() >= c.red_clearance_s * NS
                self.green_start[link] = now
            if s == RED:
                self.red_since[link] = now
            if s == FLASH:
                assert b in (RED, YELLOW), f"link {link}: {b} -> flash"


ACTIONS = st.tuples(st.integers(0, 59),  # tick
                    st.integers(0, 7),  # junction (mod n_tls)
                    st.sampled_from(["hold", "hold", "plan", "flash", "flash", "release"]),
                    st.integers(-1, 5),  # phase (some out of range: refused)
                    st.sampled_from(["quad", "pair", "fixed", "nope"]),
                    st.sampled_from([3.0, 10.0, 30.0, 900.0]))


@settings(max_examples=60)
@given(seed=st.integers(0, 2**31), actions=st.lists(ACTIONS, max_size=12),
       dts=st.lists(st.sampled_from([0.5, 1.0, 1.0, 2.0]), min_size=60, max_size=60))
def test_random_overrides_and_releases_reach_the_signals_only_safely(seed, actions, dts):
    """Whatever operators ask (holds, plans, flashes, releases, in any order, some refused) on top
    of a controller wanting random phases: never conflicting greens, no green shorter than min
    green, every green ends through a full yellow, flash is entered via yellow (never from green)
    and left via an all-red clearance of the whole junction; every request is in the audit trail."""
    net = _net("cologne8")
    eng = _stage(net, flows=np.random.default_rng(seed).uniform(0, 900, net.n_lanes))
    rng = np.random.default_rng(seed)
    watch = Watch(net, eng.safety)
    target = np.full(net.n_tls, -1, dtype=np.int32)
    by_tick: dict[int, list] = {}
    for a in actions:
        by_tick.setdefault(a[0], []).append(a)
    now, requests = 0, 0
    for k, dt in enumerate(dts):
        now += int(dt * NS)
        for _, j, mode, phase, plan, for_s in by_tick.get(k, []):
            junction = net.tls_ids[j % net.n_tls]
            requests += 1
            try:
                if mode == "release":
                    eng.overrides.release(junction, now, "op", False)
                else:
                    eng.overrides.override(junction, mode, now, "op", False, for_s=for_s,
                                           phase=phase if mode == "hold" else None,
                                           plan=plan if mode == "plan" else None)
            except OverrideError:
                pass
        # the controller: any phase of each signal, or none
        lo, hi = net.tls_phase_ptr[:-1], net.tls_phase_ptr[1:]
        want = lo + rng.integers(0, 1 << 30, net.n_tls) % np.maximum(hi - lo, 1)
        target[:] = np.where(rng.random(net.n_tls) < 0.1, -1, want)
        eng.overrides.apply(target, now)
        for t, ov in eng.overrides.active.items():  # the override is what the safety stage is asked
            if ov.mode == "hold":
                assert target[t] == net.tls_phase_ptr[t] + ov.phase
            elif ov.mode == "flash":
                assert target[t] == -1
        before = eng.safety.link_state.copy()
        eng.safety.enforce(target, now)
        watch.step(now, before, eng.safety.link_state)
    assert sum(e["action"] != "expire" for e in eng.overrides.audit.entries) == requests


@settings(max_examples=100)
@given(command_streams(), st.lists(st.tuples(st.integers(0, 79), st.integers(0, 2), st.booleans()), max_size=10))
def test_flash_interlock_on_any_signal_table(stream, toggles):
    """The flash kernel on random signal tables and command streams, flash switched on and off
    at random: the same interlocks hold (tests/strategies.py tables, any conflicts)."""
    table, steps = stream
    safety = Safety(table, CFG, start_ns=0)
    watch = Watch(table, safety)
    flips = {}
    for k, t, on in toggles:
        flips.setdefault(k, []).append((t % table.n_tls, on))
    now = 0
    for k, (dt, wanted) in enumerate(steps):
        now += int(dt * NS)
        for t, on in flips.get(k, []):
            safety.set_flash(t, on)
        before = safety.link_state.copy()
        safety.enforce(np.array(wanted, dtype=np.int32), now)
        watch.step(now, before, safety.link_state)
        for t in range(table.n_tls):
            lo, hi = table.tls_link_ptr[t], table.tls_link_ptr[t + 1]
            if not safety.flash[t]:
                assert not (safety.link_state[lo:hi] == FLASH).any(), "flash outlives its request"


def test_flash_goes_through_yellow_and_comes_back_through_all_red():
    """Two conflicting links: flash waits out min green, shows yellow 3 s, flashes (``o``); when
    released every link is red for the clearance before the first green."""
    from strategies import signal_table

    table = signal_table([(2, {(0, 1)}, [[0], [1]])])
    safety = Safety(table, CFG, start_ns=0)
    shown = []
    for second in range(1, 25):
        if second == 3:
            safety.set_flash(0, True)
        if second == 15:
            safety.set_flash(0, False)
        safety.enforce(np.array([0], dtype=np.int32), second * NS)
        shown.append(safety.state_chars().decode())
    # green at 1 s, min green to 6 s, yellow 6..9, flash 9..15, all red 15..17, green again at 17
    assert shown[:5] == ["Gr"] * 5
    assert shown[5:8] == ["yr"] * 3
    assert shown[8:14] == ["oo"] * 6
    assert shown[14:16] == ["rr"] * 2
    assert shown[16:] == ["Gr"] * 8


def test_hold_plan_refusals_expiry_and_audit():
    """A hold is reached and kept; a plan cycles through its splits; bad requests are refused
    with a reason and audited; an override expires by itself."""
    net = _net("cologne1")
    eng = _stage(net)
    j = net.tls_ids[0]
    target = np.zeros(net.n_tls, dtype=np.int32)
    now = 0

    def run(seconds, want=0):
        nonlocal now
        local = []
        for _ in range(seconds):
            now += NS
            target[:] = net.tls_phase_ptr[0] + want
            eng.overrides.apply(target, now)
            eng.safety.enforce(target, now)
            a = int(eng.safety.active_phase[0])
            local.append(a - int(net.tls_phase_ptr[0]) if a >= 0 else -1)
        return local

    assert run(10)[-1] == 0
    n = int(net.tls_phase_ptr[1] - net.tls_phase_ptr[0])  # the 4 of its cycle, then its lane phases
    with pytest.raises(OverrideError, match=f"phases 0..{n - 1}"):
        eng.overrides.override(j, "hold", now, "ann", False, phase=n)
    with pytest.raises(OverrideError, match="unknown junction"):
        eng.overrides.override("atlantis", "hold", now, "ann", False, phase=0)
    with pytest.raises(OverrideError, match="unknown plan 'nope'; known: fixed, pair, quad"):
        eng.overrides.override(j, "plan", now, "ann", False, plan="nope")
    with pytest.raises(OverrideError, match="2 splits"):
        eng.overrides.override(j, "plan", now, "ann", False, plan="pair")
    with pytest.raises(OverrideError, match="mode"):
        eng.overrides.override(j, "dance", now, "ann", False)
    with pytest.raises(OverrideError, match="--for"):
        eng.overrides.override(j, "flash", now, "ann", False, for_s=-5)
    with pytest.raises(OverrideError, match="no override"):
        eng.overrides.release(j, now, "ann", False)
    ov = eng.overrides.override(j, "hold", now, "ann", False, phase=2, for_s=30, reason="incident")
    shown = run(29)
    assert 2 in shown and shown[-15:] == [2] * 15  # reached, and held against the controller's wish
    shown = run(20)
    assert shown[-1] == 0  # expired after 30 s: the controller (phase 0) has it back
    assert ov.ended_by == "expired" and not eng.overrides.active
    assert eng.alarms.history[-1].kind == "override" and not eng.alarms.history[-1].active
    eng.overrides.override(j, "plan", now, "bob", True, plan="quad", for_s=600)
    shown = run(120)
    for p in range(4):  # every phase shown, each for its split less the change interval before it
        assert 8 <= shown.count(p) <= 2 * 15, (p, shown.count(p))
    rel = eng.overrides.release(j, now, "carl", True)
    assert rel.ended_by == "released by carl"
    entries = list(eng.overrides.audit.entries)
    assert [(e["action"], e["result"]) for e in entries] == (
        [("override", "refused")] * 6 + [("release", "refused"), ("override", "applied"), ("expire", "expired"),
                                         ("override", "applied"), ("release", "released")])
    assert entries[7]["who"] == "ann" and entries[7]["what"]["reason"] == "incident"
    assert entries[7]["expires_ns"] == entries[7]["ts_ns"] + 30 * NS
    assert f"phases 0..{n - 1}" in entries[0]["error"]


def test_named_plan_with_offset_is_aligned_to_the_clock():
    """A plan with ``offset_s`` runs its cycle on the engine clock, wherever the override starts."""
    net = _net("cologne8")
    t = next(k for k in range(net.n_tls) if net.tls_phase_ptr[k + 1] - net.tls_phase_ptr[k] == 2)
    phases = []
    for start in (3, 21):
        eng = _stage(net)
        eng.overrides.override(net.tls_ids[t], "plan", start * NS, "op", False, plan="pair")
        target = np.zeros(net.n_tls, dtype=np.int32)
        seq = []
        for s in range(50, 130):
            eng.overrides.apply(target, s * NS)
            seq.append(int(target[t] - net.tls_phase_ptr[t]))
        phases.append(seq)
        # phase 0 for (s - 7) mod 40 in [0, 25), phase 1 for the rest
        assert seq == [0 if (s - 7) % 40 < 25 else 1 for s in range(50, 130)]
    assert phases[0] == phases[1]


def test_config_refuses_bad_plans(tmp_path):
    with pytest.raises(ValueError, match="add up"):
        PlanParams(cycle_s=60.0, splits_s=[10.0, 10.0])
    bad = tmp_path / "e.toml"
    bad.write_text('[plans.fixed]\ncycle_s = 20\nsplits_s = [10, 10]\n')
    with pytest.raises(ValueError, match="reserved"):
        load_config(bad)
    net = _net("cologne1")
    with pytest.raises(ValueError, match="shorter than"):  # a plan for a named junction is checked at start
        Engine(net, EngineConfig(plans={"x": PlanParams(cycle_s=24.0, splits_s=[6.0, 6.0, 6.0, 6.0],
                                                        junctions=[net.tls_ids[0]])}))


# -- over real sockets --------------------------------------------------------------------


def recv(sock, timeout_ms=5000):
    assert sock.poll(timeout_ms), "no message within the timeout"
    return sock.recv_multipart()


class Rig:
    """An engine on simulated time serving on free ports, a registered adapter and a clock pusher."""

    def __init__(self, server, net):
        ctx = zmq.Context.instance()
        self.server, self.net = server, net
        self.push = ctx.socket(zmq.PUSH)
        self.push.connect(server.endpoints["ingest"])
        self.dealer = ctx.socket(zmq.DEALER)
        self.dealer.setsockopt(zmq.LINGER, 0)
        self.dealer.connect(server.endpoints["adapters"])
        self.dealer.send(P.encoder.encode(P.Hello(junction=net.tls_ids[0], n_links=net.tls_n_links(0))))
        assert P.engine_to_adapter_decoder.decode(recv(self.dealer)[0]).accepted
        self.second = 0
        self.ops = OperatorClient(server.endpoints["operators"], timeout_s=10)

    def tick(self, n=1) -> list[P.Command]:
        out = []
        for _ in range(n):
            self.second += 1
            self.push.send(encode(Clock(T0 + self.second * NS)))
            out.append(P.engine_to_adapter_decoder.decode(recv(self.dealer)[0]))
        return out

    def close(self):
        self.ops.close()
        self.push.close(0)
        self.dealer.close(0)


@pytest.fixture
def rig(tmp_path):
    net = _net("cologne1")
    cfg = EngineConfig(clock="sim", endpoints=ANY, plans=PLANS,
                       overrides=OverrideParams(default_for_s=900.0, audit_file=str(tmp_path / "audit.jsonl")))
    with serving(Engine(net, cfg)) as server:
        r = Rig(server, net)
        try:
            yield r
        finally:
            r.close()


def test_operator_ops_over_the_socket(rig, tmp_path):
    """``junction``, ``override``, ``release``, ``audit`` over the operator socket: the commands
    adapters get follow the override only through yellow, ``o`` for flash, back via all-red."""
    j = rig.net.tls_ids[0]
    cmds = rig.tick(12)
    info = rig.ops.request("junction", junction=j)
    assert info["junction"] == j and len(info["links"]) == rig.net.tls_n_links(0) and len(info["phases"]) == 8
    assert [p["in_cycle"] for p in info["phases"]] == [True] * 4 + [False] * 4  # cologne1's lane phases follow
    assert info["state"] == cmds[-1].state and info["override"] is None
    assert info["adapter"]["registered"] and info["detectors"] and info["controller"] == "adaptive"
    assert {p["pattern"].count("G") for p in info["phases"]} == {len(p["links"]) for p in info["phases"]}
    with pytest.raises(OperatorError, match="unknown junction"):
        rig.ops.request("junction", junction="atlantis")
    with pytest.raises(OperatorError, match="unknown plan"):
        rig.ops.request("override", junction=j, mode="plan", plan="nope", **{"as": "ann"})
    res = rig.ops.request("override", junction=j, mode="flash", for_s=60, reason="power cut", **{"as": "ann"})
    assert res["override"]["mode"] == "flash" and res["override"]["who"] == "ann"
    states = [c.state for c in rig.tick(15)]
    first_o = next(k for k, s in enumerate(states) if set(s) == {"o"})
    assert all("G" not in s and "g" not in s for s in states[first_o - 1:first_o])  # the tick before: yellow/red
    assert all(set(s) == {"o"} for s in states[first_o:])
    assert rig.ops.request("junction", junction=j)["flashing"]
    alarms = rig.ops.request("alarms")["active"]
    # (the rig's adapter only listens, so it may also be marked offline: adapters' business)
    assert [(a["kind"], a["subject"]) for a in alarms if a["kind"] != "adapter_offline"] == [("override", j)]
    rel = rig.ops.request("release", junction=j, **{"as": "bob"})
    assert rel["released"]["ended_by"] == "released by bob"
    states = [c.state for c in rig.tick(8)]
    red = round(EngineConfig().safety.red_clearance_s)  # (the rig's: the default, whole ticks)
    assert all(set(s) == {"r"} for s in states[:max(red, 1)])  # all red for the clearance
    assert any("G" in s for s in states[max(red, 1):])
    rig.ops.request("override", junction=j, mode="hold", phase=1, for_s=20)  # default who: anonymous:<identity>
    cmds = rig.tick(25)
    assert 1 in [c.phase for c in cmds[:19]]
    audit = rig.ops.request("audit", limit=10)
    got = [(e["action"], e["result"], e["who"]) for e in audit["entries"]]
    assert got == [("override", "refused", "ann"), ("override", "applied", "ann"), ("release", "released", "bob"),
                   ("override", "applied", got[3][2]), ("expire", "expired", "engine")]
    assert got[3][2].startswith("anonymous:") and not audit["entries"][3]["verified"]
    lines = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert lines == audit["entries"]
    st_ = rig.ops.request("status")
    assert st_["overrides"]["active"] == 0 and st_["overrides"]["audit_total"] == 5


def test_ctl_cli_against_a_running_engine(rig, capsys):
    """The ``ctl`` commands a user types, in-process against the serving engine."""
    from engine.cli import main

    ep = ["--endpoint", rig.server.endpoints["operators"]]
    j = rig.net.tls_ids[0]
    rig.tick(3)
    assert main(["ctl", "junction", j, *ep]) == 0
    assert f"junction     {j}" in capsys.readouterr().out
    assert main(["ctl", "override", j, "--hold", "2", "--for", "120", "--reason", "parade", "--as", "ann", *ep]) == 0
    assert "hold phase 2" in capsys.readouterr().out
    assert main(["ctl", "override", j, "--hold", "9", *ep]) == 1
    assert "phases 0..7" in capsys.readouterr().err
    assert main(["ctl", "override", j, "--hold", "1", "--flash", *ep]) == 2
    assert "exactly one" in capsys.readouterr().err
    assert main(["ctl", "release", *ep]) == 2
    assert main(["ctl", "audit", "--json", *ep]) == 0
    audit = json.loads(capsys.readouterr().out)
    assert [e["result"] for e in audit["entries"]] == ["applied", "refused"]
    assert audit["active"][0]["reason"] == "parade" and audit["active"][0]["who"] == "ann"
    assert main(["ctl", "release", j, *ep]) == 0
    assert "released" in capsys.readouterr().out


def test_replay_applies_recorded_overrides(tmp_path):
    """A recording with overrides replays without a mismatch: the override requests are inputs."""
    from engine.recorder import open_recorder
    from engine.replay import replay

    net = _net("cologne1")
    from conftest import RESCO_DIR

    cfg = EngineConfig(clock="sim", endpoints=ANY)
    with serving(Engine(net, cfg)) as server:
        server.recorder = open_recorder(tmp_path / "rec", config=cfg,
                                        net_path=str(RESCO_DIR / "cologne1" / "cologne1.net.xml"), segment_bytes=1 << 20)
        r = Rig(server, net)
        try:
            r.tick(5)
            r.ops.request("override", junction=net.tls_ids[0], mode="flash", for_s=6)
            r.tick(12)
            r.ops.request("override", junction=net.tls_ids[0], mode="hold", phase=3)
            r.tick(15)
            r.ops.request("release", junction=net.tls_ids[0])
            cmds = r.tick(5)
        finally:
            r.close()
    assert cmds
    result = replay(tmp_path / "rec", progress=False)
    assert result["commands_compared"] >= 37 and result["mismatches"] == 0, result["mismatch_examples"]


_ARG = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                 st.text(max_size=600), st.binary(max_size=8), st.lists(st.integers(), max_size=2),
                 st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@settings(max_examples=300)
@given(op=st.sampled_from(["junction", "override", "release", "audit"]),
       args=st.dictionaries(st.sampled_from(["junction", "mode", "phase", "plan", "for_s", "reason", "limit", "as"]),
                            _ARG, max_size=6),
       real_junction=st.booleans(), mode=st.sampled_from([None, "hold", "plan", "flash"]))
def test_operator_ops_refuse_any_bad_args_with_a_reason(op, args, real_junction, mode, tmp_path_factory):
    """Whatever types and values an operator sends, an op is answered (ok, or refused with a
    reason), the audit entry it leaves can be written as JSON, and ticks go on."""
    from engine.clock import ManualClock
    from engine.overrides import handle

    eng = _OPS_ENGINE.get("e")
    if eng is None:
        net = _net("cologne1")
        path = tmp_path_factory.mktemp("audit") / "audit.jsonl"
        eng = _OPS_ENGINE["e"] = Engine(net, EngineConfig(plans=PLANS, overrides=OverrideParams(audit_file=str(path))))
        eng.warm_up()
    if real_junction:
        args["junction"] = eng.net.tls_ids[0]
    if mode is not None:
        args["mode"] = mode
    clock = ManualClock()
    clock.set(T0 + (eng.ticks + 1) * NS)
    server = SimpleNamespace(engine=eng, config=eng.config, clock=clock, signal_adapter={}, links={})
    ok, result, error = handle(server, op, args, clock.now_ns(), "fuzz", False)
    assert ok or error
    msgspec.msgpack.encode(P.Reply(ok=ok, result=result, error=error))
    ok, result, error = handle(server, "audit", {}, clock.now_ns(), "fuzz", False)
    msgspec.msgpack.encode(P.Reply(ok=ok, result=result, error=error))  # the trail can be sent
    eng.tick(clock.now_ns())
    assert eng.overrides.audit.file_errors == 0


_OPS_ENGINE: dict = {}
