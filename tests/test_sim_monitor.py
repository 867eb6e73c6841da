"""Conflict monitor: each violation kind on hand-made sequences, a plain-Python reference, real SUMO."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.monitor import KINDS, ConflictMonitor, Violation

RESCO = Path(__file__).resolve().parents[1].parent / "shared/scenarios/resco"

# one signal, 4 links: 0 and 1 conflict with 2 and 3 (two crossing streets)
CROSS = {"J": (4, [(0, 2), (0, 3), (1, 2), (1, 3)])}


def run(states: list[str], *, signals=CROSS, times=None, **kw) -> ConflictMonitor:
    m = ConflictMonitor.from_conflicts(signals, **kw)
    for k, s in enumerate(states):
        m.observe(float(k if times is None else times[k]), [s] if isinstance(s, str) else s)
    return m


def cycle(green_a=10, yellow=3, red_clear=1, green_b=10) -> list[str]:
    """A correct two-phase cycle, one state per second."""
    return (
        ["GGrr"] * green_a + ["yyrr"] * yellow + ["rrrr"] * red_clear
        + ["rrGG"] * green_b + ["rryy"] * yellow + ["rrrr"] * red_clear
    )


def test_correct_cycles_give_no_violation() -> None:
    m = run(cycle() * 5)
    assert m.counts == {k: 0 for k in KINDS}
    assert m.total == 0 and m.observations == 5 * 28


def test_conflicting_green_once_per_pair_per_step() -> None:
    m = run(["GGrr", "GGrr", "GGGr", "GGGr", "rrrr"])
    # two steps with 0-2 and 1-2 both green
    assert m.counts["conflicting_green"] == 4
    assert {(e.tls_id, e.links) for e in m.events if e.kind == "conflicting_green"} == {("J", (0, 2)), ("J", (1, 2))}
    assert [e.t_s for e in m.events if e.kind == "conflicting_green"] == [2.0, 2.0, 3.0, 3.0]


def test_permissive_lowercase_green_counts_as_green() -> None:
    assert run(["Ggrr", "Grgr"]).counts["conflicting_green"] == 1


def test_green_against_yellow_is_a_conflict() -> None:
    m = run(["GGrr"] * 6 + ["yGrr", "yrGr"])
    # step 6: link 0 yellow, link 1 green - no conflict (same street)
    # step 7: link 0 yellow while link 2 (its conflict) is green
    assert m.counts["conflicting_green"] == 1
    assert m.events[0].links == (0, 2) and m.events[0].t_s == 7.0


def test_non_conflicting_links_may_be_green_together() -> None:
    assert run(["GGrr", "GGrr"], signals={"J": (4, [(0, 2)])}).total == 0
    assert run(["rGGr", "rGGr"], signals={"J": (4, [(0, 2)])}).total == 0


def test_no_yellow() -> None:
    m = run(["GGrr"] * 6 + ["rGrr", "rsrr"])
    assert m.counts["no_yellow"] == 2  # link 0 to r, then link 1 to s (stop-then-go is red too)
    assert m.counts["short_green"] == 0


def test_green_to_red_yellow_u_is_no_yellow() -> None:
    assert run(["GGrr"] * 6 + ["uGrr"]).counts["no_yellow"] == 1


def test_short_yellow() -> None:
    m = run(["GGrr"] * 6 + ["yyrr", "yyrr", "rrrr"], min_yellow_s=2.7)
    assert m.counts["short_yellow"] == 2  # both links: yellow for 2 s
    assert run(["GGrr"] * 6 + ["yyrr"] * 3 + ["rrrr"]).counts["short_yellow"] == 0


def test_short_yellow_uses_time_not_observation_count() -> None:
    """Observations at uneven times: yellow seen at 6.0 and 6.5, red at 8.8 -> 2.8 s, fine."""
    times = [0, 1, 2, 3, 4, 5, 6.0, 6.5, 8.8]
    assert run(["GGrr"] * 6 + ["yyrr", "yyrr", "rrrr"], times=times).counts["short_yellow"] == 0
    times = [0, 1, 2, 3, 4, 5, 6.0, 6.5, 8.6]
    assert run(["GGrr"] * 6 + ["yyrr", "yyrr", "rrrr"], times=times).counts["short_yellow"] == 2


def test_yellow_ended_by_green_is_not_short_yellow() -> None:
    assert run(["GGrr"] * 6 + ["yyrr", "GGrr"] + ["GGrr"] * 6).counts["short_yellow"] == 0


def test_short_green() -> None:
    m = run(["rrrr", "GGrr", "GGrr", "yyrr", "yyrr", "yyrr", "rrrr"])
    assert m.counts["short_green"] == 2  # green for 2 s < 5 s
    assert m.counts["short_yellow"] == 0
    m = run(["rrrr"] + ["GGrr"] * 5 + ["yyrr"] * 3 + ["rrrr"])
    assert m.counts["short_green"] == 0  # exactly 5 s


def test_green_to_red_after_short_green_counts_both_kinds() -> None:
    m = run(["rrrr", "GGrr", "rrrr"])
    assert m.counts["short_green"] == 2 and m.counts["no_yellow"] == 2 and m.total == 4


def test_green_G_to_g_continues_the_same_green() -> None:
    assert run(["rrrr", "GGrr", "GGrr", "ggrr", "ggrr", "GGrr", "yyrr"]).counts["short_green"] == 0


def test_intervals_running_at_the_first_observation_are_exempt() -> None:
    m = run(["GGrr", "yyrr", "yyrr", "yyrr", "rrrr"])
    assert m.counts["short_green"] == 0
    m = run(["yyrr", "rrrr"])
    assert m.counts["short_yellow"] == 0
    # ... but only the first interval
    m = run(["GGrr", "yyrr", "yyrr", "yyrr", "GGrr", "yyrr", "yyrr", "yyrr", "rrrr"])
    assert m.counts["short_green"] == 2


def test_off_states_are_ignored() -> None:
    m = run(["GGrr", "oooo", "OOOO", "rrrr", "oorr", "GGrr"])
    assert m.total == 0


def test_several_signals_are_checked_together() -> None:
    signals = {"A": (2, [(0, 1)]), "B": (3, [(0, 2)])}
    m = ConflictMonitor.from_conflicts(signals)
    m.observe(0, ["Gr", "GGr"])
    m.observe(1, ["GG", "GrG"])
    assert m.counts["conflicting_green"] == 2
    assert {(e.tls_id, e.links) for e in m.events if e.kind == "conflicting_green"} == {("A", (0, 1)), ("B", (0, 2))}
    assert m.counts["no_yellow"] == 1 and m.events[-1] == Violation(1.0, "no_yellow", "B", (1,))


def test_bad_input_is_rejected() -> None:
    m = ConflictMonitor.from_conflicts(CROSS)
    with pytest.raises(ValueError, match="expected 1 signal states"):
        m.observe(0, ["GGrr", "GGrr"])
    with pytest.raises(ValueError, match="has 3 links"):
        m.observe(0, ["GGr"])
    with pytest.raises(ValueError, match="unknown signal state character"):
        m.observe(0, ["GGxr"])
    m.observe(1, ["GGrr"])
    with pytest.raises(ValueError, match="forward in time"):
        m.observe(1, ["GGrr"])
    with pytest.raises(ValueError, match="bad conflict pair"):
        ConflictMonitor.from_conflicts({"J": (2, [(0, 2)])})


def test_max_events_bounds_the_log_not_the_counts() -> None:
    m = run(["GGGG"] * 10, max_events=5)
    assert m.counts["conflicting_green"] == 40
    assert len(m.events) == 5


# ---------------------------------------------------------------- reference implementation

_CLASS = {**dict.fromkeys("rsu", "red"), **dict.fromkeys("yY", "yellow"), **dict.fromkeys("Gg", "green"), **dict.fromkeys("oO", "off")}


def naive_counts(signals, times, sequence, min_green_s=5.0, min_yellow_s=2.7) -> dict[str, int]:
    """The rules of sim.monitor, link by link and pair by pair."""
    counts = dict.fromkeys(KINDS, 0)
    prev: dict[tuple[str, int], str] = {}
    start: dict[tuple[str, int], float] = {}
    exempt: dict[tuple[str, int], bool] = {}
    for step, (t, states) in enumerate(zip(times, sequence)):
        for (tls, (n, pairs)), state in zip(signals.items(), states):
            cls = [_CLASS[ch] for ch in state]
            for a, b in pairs:
                ca, cb = cls[a], cls[b]
                if (ca == "green" and cb in ("green", "yellow")) or (ca == "yellow" and cb == "green"):
                    counts["conflicting_green"] += 1
            for i in range(n):
                key = (tls, i)
                if step == 0:
                    prev[key], start[key], exempt[key] = cls[i], t, True
                    continue
                p, c = prev[key], cls[i]
                length = t - start[key]
                if p == "green" and c == "red":
                    counts["no_yellow"] += 1
                if p == "yellow" and c == "red" and not exempt[key] and length < min_yellow_s - 1e-9:
                    counts["short_yellow"] += 1
                if p == "green" and c in ("yellow", "red") and not exempt[key] and length < min_green_s - 1e-9:
                    counts["short_green"] += 1
                if c != p:
                    start[key], exempt[key] = t, False
                prev[key] = c
    return counts


@st.composite
def signal_runs(draw):
    n_sig = draw(st.integers(1, 3))
    signals = {}
    for s in range(n_sig):
        n = draw(st.integers(1, 5))
        pairs = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)).filter(lambda p: p[0] < p[1]), unique=True, max_size=6))
        signals[f"S{s}"] = (n, pairs)
    steps = draw(st.integers(1, 40))
    alphabet = "GgyYrsuoO"
    # sticky sequences, so that intervals of several steps occur
    sequence = []
    current = ["".join(draw(st.sampled_from(alphabet)) for _ in range(n)) for n, _ in signals.values()]
    for _ in range(steps):
        nxt = []
        for state in current:
            chars = list(state)
            for i in range(len(chars)):
                if draw(st.integers(0, 3)) == 0:
                    chars[i] = draw(st.sampled_from(alphabet))
            nxt.append("".join(chars))
        current = nxt
        sequence.append(current)
    gaps = draw(st.lists(st.sampled_from([0.5, 1.0, 1.0, 1.0, 2.0]), min_size=steps, max_size=steps))
    times = list(np.cumsum(gaps))
    return signals, times, sequence


@settings(max_examples=300, deadline=None)
@given(signal_runs())
def test_vectorised_monitor_matches_reference(data) -> None:
    """Whatever the states, the numpy monitor counts exactly what the plain rules count."""
    signals, times, sequence = data
    m = ConflictMonitor.from_conflicts(signals)
    for t, states in zip(times, sequence):
        m.observe(t, states)
    assert m.counts == naive_counts(signals, times, sequence)


@settings(max_examples=100, deadline=None)
@given(st.integers(5, 40), st.integers(3, 6), st.integers(0, 3), st.integers(5, 40), st.integers(1, 4))
def test_any_well_formed_cycle_is_clean(green_a, yellow, red_clear, green_b, repeats) -> None:
    """Greens of at least 5 s, yellows of at least 3 s, never crossing: no violation."""
    assert run(cycle(green_a, yellow, red_clear, green_b) * repeats).total == 0


# ---------------------------------------------------------------- real SUMO


@pytest.mark.sumo
@pytest.mark.skipif(not (RESCO / "cologne1").is_dir(), reason="RESCO scenarios not present")
def test_monitor_on_sumo_actuated_program_and_on_injected_faults(tmp_path: Path, monkeypatch) -> None:
    """SUMO's actuated program of cologne1 is clean; states forced into SUMO are caught."""
    from network import compile_network
    from sim.baselines import rebuild_net
    from sim.scenario import load_scenario
    from sim.sumo import Sumo

    monkeypatch.setenv("TRAFFIC_ENGINE_CACHE", str(tmp_path / "cache"))
    sc = load_scenario(RESCO / "cologne1" / "cologne1.sumocfg", end=25200 + 1500)
    net_path = rebuild_net(sc.net, "actuated")
    net = compile_network(net_path)
    monitor = ConflictMonitor(net)
    assert monitor.n_pairs > 0
    with Sumo(net_path, sc.routes, begin=sc.begin, end=sc.end, outdir=tmp_path / "out") as sim:
        assert set(sim.tls_ids()) == set(net.tls_ids)
        perm = [sim.tls_ids().index(t) for t in net.tls_ids]

        def observe() -> None:
            states = sim.tls_states()
            monitor.observe(sim.time, [states[k] for k in perm])

        observe()
        tls = net.tls_ids[0]
        k = sim.tls_ids().index(tls)
        held = 0  # seconds the signal has shown its current state
        while sim.time < sc.begin + 1200 or "G" not in sim.tls_states()[k] or held < 6:
            last = sim.tls_states()[k]
            sim.step()
            observe()
            held = held + 1 if sim.tls_states()[k] == last else 0
        assert monitor.counts == dict.fromkeys(KINDS, 0)
        assert monitor.observations == sim.time - sc.begin + 1 > 1200

        # inject: all red at once, then a conflict pair green together for 2 s, then all red again
        n = net.tls_n_links(0)
        before = sim.tls_states()[k]
        greens_before = sum(1 for ch in before if ch in "Gg")
        assert greens_before > 0
        sim.set_tls_state(tls, "r" * n)
        sim.step()
        observe()
        assert monitor.counts["no_yellow"] == greens_before
        a, b = net.conflict_pairs(0)[0]
        forced = ["r"] * n
        forced[a] = forced[b] = "G"
        forced = "".join(forced)
        sim.set_tls_state(tls, forced)
        assert sim.tls_states()[k] == forced
        sim.step()
        observe()
        assert monitor.counts["conflicting_green"] == 1
        sim.step()
        observe()  # SUMO keeps showing the forced state
        assert sim.tls_states()[k] == forced
        assert monitor.counts["conflicting_green"] == 2
        sim.set_tls_state(tls, "r" * n)
        sim.step()
        observe()
        assert monitor.counts["no_yellow"] == greens_before + 2
        assert monitor.counts["short_green"] == 2  # a and b were green for 2 s
        assert monitor.counts["short_yellow"] == 0
        assert {e.links for e in monitor.events if e.kind == "conflicting_green"} == {(a, b)}
