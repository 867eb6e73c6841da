"""A signal-controller adapter: the cabinet side of the adapter protocol (v2), as a library.

One :class:`SignalAdapter` speaks for one junction (a SUMO traffic-light id). It holds the
junction's links, its conflict table and the timings its cabinet enforces (a
:class:`JunctionSpec`), and decides, step by step, what the signal shows:

- **engine control**: the engine's ``Command`` says what to show (``mode = "run"``), or asks for a
  ``hold``, a ``force_off``, a local ``plan`` or ``flash`` (the operator's overrides). Before
  anything is shown it passes the adapter's own *conflict monitor*: a command that would show
  conflicting greens (or a green beside a conflicting yellow), end a green before its minimum,
  skip or cut a yellow, turn yellow back to green, or start a green before its conflicts (and
  its own red) had their red clearance is **refused**: counted by kind, reported back in the
  next ``Feedback`` with its reason, and the signal instead moves towards what was asked only as
  far as is safe (:meth:`SignalAdapter.guard`).
- **local fallback**: when the engine has said nothing (no command, no heartbeat) for
  ``fallback_after_s``, the adapter runs its local plan (for SUMO: the junction's own program
  from the ``.net.xml``). The plan is entered through the same guard (greens end after their
  minimum through yellow, conflicting greens start after red clearance) and each plan phase
  runs its full duration from the moment it is actually shown.
- **hand-back**: while silent it says ``Hello`` again every ``heartbeat_s`` with the state it
  shows and how long each link has shown its colour, so a restarted engine adopts the display
  and plans its next transitions from it; the first command after that takes over, through
  the guard again (no conflicting greens, no green cut short, no missing yellow).

The guard is the only path to the display, so no sequence of commands, plans or silences
can make an adapter show an unsafe sequence (``tests/test_adapters.py`` checks this with
hypothesis). All times are integer nanoseconds of the adapter's clock (for the SUMO bridge:
simulated time). Sockets are optional: the stepping logic runs without them, and
:meth:`SignalAdapter.connect` adds a DEALER (``socket_setup`` is applied to it before connect,
e.g. for CurveZMQ keys).
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import msgspec
import zmq

from engine import protocol as P

log = logging.getLogger("traffic_engine.adapter")

__all__ = ["RED", "YELLOW", "GREEN", "OFF", "REFUSAL_KINDS", "AdapterError", "LocalPlan", "JunctionSpec",
           "SignalAdapter", "check_hello", "sumo_programs"]

RED, YELLOW, GREEN, OFF = 0, 1, 2, 3
_CLASS = {"G": GREEN, "g": GREEN, "y": YELLOW, "Y": YELLOW, "r": RED, "s": RED, "u": RED, "o": OFF, "O": OFF}
REFUSAL_KINDS = ("bad_command", "conflicting_green", "no_yellow", "short_green", "short_yellow",
                 "yellow_to_green", "red_to_yellow", "no_clearance")
_LONG_AGO_NS = 3_600 * 10**9
_EPS_NS = 1_000  # timing comparisons tolerate a microsecond of rounding


class AdapterError(ValueError):
    """A junction description that cannot be used, with the reason."""


def _classes(state: str) -> list[int]:
    return [_CLASS[ch] for ch in state]


@dataclass(frozen=True)
class LocalPlan:
    """A fixed-time plan the cabinet runs on its own: phases of (state letters, duration in s)."""

    name: str
    phases: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class JunctionSpec:
    """What a cabinet knows of its junction: links, signal groups with their timings, the
    conflict table (local link pairs that must never be green, or green and yellow, together),
    local plans (the first is the default) and the red letter of each link (``r``, or ``s`` for
    a right turn on red)."""

    junction: str
    n_links: int
    groups: tuple[P.SignalGroup, ...]
    conflicts: tuple[tuple[int, int], ...]
    plans: tuple[LocalPlan, ...] = ()
    red_letters: str = ""

    def __post_init__(self) -> None:
        n = self.n_links
        if n <= 0:
            raise AdapterError(f"junction {self.junction}: no links")
        seen = [0] * n
        for g in self.groups:
            for i in g.links:
                if not 0 <= i < n:
                    raise AdapterError(f"junction {self.junction}: group {g.name} has link {i} outside 0..{n - 1}")
                seen[i] += 1
            if not (g.min_green_s >= 0 and g.yellow_s > 0 and g.red_clearance_s >= 0):
                raise AdapterError(f"junction {self.junction}: group {g.name} has bad timings")
        if any(c != 1 for c in seen):
            raise AdapterError(f"junction {self.junction}: every link must be in exactly one group")
        for a, b in self.conflicts:
            if not (0 <= a < n and 0 <= b < n and a != b):
                raise AdapterError(f"junction {self.junction}: bad conflict pair {(a, b)}")
        for plan in self.plans:
            if not plan.phases:
                raise AdapterError(f"junction {self.junction}: plan {plan.name!r} has no phases")
            for state, dur in plan.phases:
                if len(state) != n or any(ch not in _CLASS for ch in state) or not dur > 0:
                    raise AdapterError(f"junction {self.junction}: plan {plan.name!r} phase {state!r} is not "
                                       f"{n} signal letters with a positive duration")
        if self.red_letters and (len(self.red_letters) != n or set(self.red_letters) - set("rs")):
            raise AdapterError(f"junction {self.junction}: red_letters must be {n} of 'r'/'s'")

    @classmethod
    def from_network(cls, net, t: int, *, min_green_s: float, yellow_s: float, red_clearance_s: float,
                     programs: dict[str, list[tuple[str, float]]] | None = None) -> "JunctionSpec":
        """Signal ``t`` of a :class:`~network.CompiledNetwork`: one group per link with the given
        timings, the network's conflicts, and its SUMO program (``sumo_programs``) as the plan."""
        tls = net.tls_ids[t]
        n = net.tls_n_links(t)
        lo = int(net.tls_link_ptr[t])
        groups = tuple(P.SignalGroup(str(i), [i], min_green_s, yellow_s, red_clearance_s) for i in range(n))
        red = "".join("s" if net.link_stop_on_red[lo + i] else "r" for i in range(n))
        plans = ()
        phases = (programs or {}).get(tls)
        if phases:
            plans = (LocalPlan("0", tuple((s[:n].ljust(n, "r"), float(d)) for s, d in phases)),)
        return cls(tls, n, groups, tuple(net.conflict_pairs(t)), plans, red)


def sumo_programs(net_path: str | Path) -> dict[str, list[tuple[str, float]]]:
    """Each signal's first program in a SUMO ``.net.xml``: (state, duration s) per phase."""
    out: dict[str, list[tuple[str, float]]] = {}
    for _, el in ET.iterparse(str(net_path), events=("end",)):
        if el.tag == "tlLogic":
            tls = el.get("id")
            if tls not in out:
                out[tls] = [(ph.get("state"), float(ph.get("duration"))) for ph in el.iter("phase")]
            el.clear()
        elif el.tag in ("edge", "junction"):
            el.clear()
    return out


@dataclass
class _PlanRun:
    plan: LocalPlan
    states: list[str]  # the plan's phases as this cabinet may show them (``SignalAdapter.consistent``)
    k: int = 0
    reached_ns: int | None = None
    asked_ns: int | None = None  # when the current phase was first asked for


@dataclass
class AdapterStats:
    """Counters of one adapter."""

    commands: int = 0  # commands received for this junction
    applied: int = 0  # of those, shown as asked
    refused: Counter = field(default_factory=Counter)  # refused commands by kind (REFUSAL_KINDS)
    fallback_ns: int = 0  # time spent on the local plan because the engine was silent
    fallbacks: int = 0  # times the engine's silence started the local plan
    handbacks: int = 0  # times the engine took over again after a fallback
    dropped: int = 0  # messages not sent: the engine was not connected

    @property
    def refused_total(self) -> int:
        return sum(self.refused.values())


class SignalAdapter:
    """One junction's adapter: guard (conflict monitor), local fallback, and optionally a DEALER.

    Drive it with :meth:`step` once per display step (``command`` = a new command for this
    junction, or None); it returns the state to show. With a socket, :meth:`run_once` does the
    receiving, stepping, feedback, heartbeats and re-registration in one call.
    """

    def __init__(self, spec: JunctionSpec, *, heartbeat_s: float = 1.0, fallback_after_s: float = 3.0,
                 start_ns: int = 0, identity: bytes | None = None,
                 socket_setup: Callable[[zmq.Socket], None] | None = None, context: zmq.Context | None = None):
        if not heartbeat_s > 0:
            raise AdapterError("heartbeat_s must be > 0")
        if not fallback_after_s > heartbeat_s:
            raise AdapterError("fallback_after_s must be longer than heartbeat_s")
        self.spec = spec
        n = spec.n_links
        self.heartbeat_ns = int(round(heartbeat_s * 1e9))
        self.fallback_ns = int(round(fallback_after_s * 1e9))
        self.min_green_ns = [0] * n
        self.yellow_ns = [0] * n
        self.clear_ns = [0] * n
        for g in spec.groups:
            for i in g.links:
                self.min_green_ns[i] = int(round(g.min_green_s * 1e9))
                self.yellow_ns[i] = int(round(g.yellow_s * 1e9))
                self.clear_ns[i] = int(round(g.red_clearance_s * 1e9))
        self.foes: list[list[int]] = [[] for _ in range(n)]
        for a, b in spec.conflicts:
            if b not in self.foes[a]:
                self.foes[a].append(b)
                self.foes[b].append(a)
        self.red_letters = spec.red_letters or "r" * n
        # the display: per link its colour class, since when, and the letter shown
        self.cls = [RED] * n
        self.since_ns = [start_ns - _LONG_AGO_NS] * n
        self.letters = list(self.red_letters)
        self.mode = "start"  # start | engine | hold | force_off | plan | flash | fallback
        self.command: P.Command | None = None
        self.heard_ns = start_ns  # last word from the engine (command or heartbeat)
        self.now_ns = start_ns
        self.refused_reason = ""  # of the last command
        self.stats = AdapterStats()
        self._plan_run: _PlanRun | None = None
        self._fallback_since: int | None = None
        self._answered = -1  # seq of the last command handled
        # sockets (optional)
        self.identity = identity or f"adapter:{spec.junction}".encode()
        self.socket_setup = socket_setup
        self.ctx = context
        self.sock: zmq.Socket | None = None
        self.registered = False
        self.welcome: P.Welcome | None = None
        self._sent_ns = start_ns - _LONG_AGO_NS
        self._hello_ns = start_ns - _LONG_AGO_NS

    # -- display ----------------------------------------------------------------------------

    @property
    def shown(self) -> str:
        return "".join(self.letters)

    @property
    def in_fallback(self) -> bool:
        return self.mode == "fallback"

    def ages_ms(self, now_ns: int) -> list[int]:
        return [max(0, (now_ns - s) // 1_000_000) for s in self.since_ns]

    def check(self, state: str, now_ns: int) -> tuple[str, str] | None:
        """Why showing ``state`` at ``now_ns`` would be unsafe: (kind, reason), or None if safe."""
        n = self.spec.n_links
        if len(state) != n or any(ch not in _CLASS or _CLASS[ch] == OFF for ch in state):
            return "bad_command", f"state {state!r} is not {n} letters of G g y r s u"
        want = _classes(state)
        for a in range(n):
            if want[a] == GREEN:
                for b in self.foes[a]:
                    if want[b] == GREEN and a < b or want[b] == YELLOW:
                        return "conflicting_green", f"links {a} and {b} conflict ({state[a]}{state[b]})"
        for i in range(n):
            cur, w, age = self.cls[i], want[i], now_ns - self.since_ns[i]
            if cur == GREEN and w == RED:
                return "no_yellow", f"link {i} goes from green to red without yellow"
            if cur == GREEN and w == YELLOW and age + _EPS_NS < self.min_green_ns[i]:
                return "short_green", (f"link {i} ends its green after {age / 1e9:g} s, "
                                       f"min green {self.min_green_ns[i] / 1e9:g} s")
            if cur == YELLOW and w == RED and age + _EPS_NS < self.yellow_ns[i]:
                return "short_yellow", (f"link {i} ends its yellow after {age / 1e9:g} s, "
                                        f"yellow {self.yellow_ns[i] / 1e9:g} s")
            if cur == YELLOW and w == GREEN:
                return "yellow_to_green", f"link {i} goes from yellow back to green"
            if cur in (RED, OFF) and w == YELLOW:
                return "red_to_yellow", f"link {i} goes from red to yellow"
            if cur in (RED, OFF) and w == GREEN:
                if cur == OFF or age + _EPS_NS < self.clear_ns[i]:
                    return "no_clearance", f"link {i} turns green {age / 1e9:g} s after its own red"
                for b in self.foes[i]:
                    if self.cls[b] != RED or now_ns - self.since_ns[b] + _EPS_NS < self.clear_ns[b]:
                        return "no_clearance", f"link {i} turns green before conflicting link {b} had its red clearance"
        return None

    def guard(self, state: str, now_ns: int) -> str:
        """Move the display towards ``state`` as far as is safe at ``now_ns``; returns the display.

        Greens end only after their minimum and only through yellow; a yellow lasts its time and
        ends in red (never green); a link turns green only after its own red clearance and when
        every conflicting link has been red for its clearance and none turns green in the same
        step. A link held green that ``state`` wanted ended shows ``g`` (it gives way). ``o``
        (flash) is shown only when every link is red past its clearance."""
        n = self.spec.n_links
        want = _classes(state)
        cls, since, letters = self.cls, self.since_ns, self.letters
        if all(w == OFF for w in want):
            if all(c == OFF for c in cls):
                return self.shown
            if all(c == RED and now_ns - since[i] + _EPS_NS >= self.clear_ns[i] for i, c in enumerate(cls)):
                for i in range(n):
                    cls[i], since[i], letters[i] = OFF, now_ns, state[i]
                return self.shown
            want = [RED] * n
            state = self.red_letters
        for i in range(n):  # out of flash: all red, clearance from now
            if cls[i] == OFF:
                cls[i], since[i], letters[i] = RED, now_ns, self.red_letters[i]
        for i in range(n):
            c, w, age = cls[i], want[i], now_ns - since[i]
            if c == GREEN:
                if w == GREEN:
                    letters[i] = state[i]
                elif age + _EPS_NS >= self.min_green_ns[i]:
                    cls[i], since[i], letters[i] = YELLOW, now_ns, "y"
                else:
                    letters[i] = "g"
            elif c == YELLOW:
                if w != YELLOW and age + _EPS_NS >= self.yellow_ns[i]:
                    cls[i], since[i] = RED, now_ns
                    letters[i] = state[i] if w == RED else self.red_letters[i]
            elif w == RED:
                letters[i] = state[i]
        for i in range(n):
            if cls[i] != RED or want[i] != GREEN or now_ns - since[i] + _EPS_NS < self.clear_ns[i]:
                continue
            if all(cls[b] == RED and now_ns - since[b] + _EPS_NS >= self.clear_ns[b]
                   for b in self.foes[i]):
                cls[i], since[i], letters[i] = GREEN, now_ns, state[i]
        return self.shown

    # -- one step ---------------------------------------------------------------------------

    def heard(self, now_ns: int) -> None:
        """The engine said something (a heartbeat, a welcome): it is not silent."""
        self.heard_ns = max(self.heard_ns, now_ns)

    def step(self, now_ns: int, command: P.Command | None = None) -> str:
        """Decide and return what the signal shows from ``now_ns`` on."""
        self.now_ns = now_ns
        if command is not None:
            self._take(command, now_ns)
        elif now_ns - self.heard_ns >= self.fallback_ns and self.mode != "fallback":
            self.stats.fallbacks += 1
            log.warning("junction %s: engine silent for %g s: local plan", self.spec.junction,
                        (now_ns - self.heard_ns) / 1e9)
            self.mode = "fallback"
            self._fallback_since = now_ns
            self._start_plan("")
        if self.mode in ("fallback", "plan") and self._plan_run is not None:
            return self._run_plan(now_ns)
        if self.mode == "fallback":  # no plan: all red (a cabinet without a plan would flash)
            return self.guard(self.red_letters, now_ns)
        cmd = self.command
        if cmd is None:
            return self.guard(self.red_letters, now_ns)
        if self.mode == "hold":
            held = "".join(self.letters[i] if self.cls[i] == GREEN else self.red_letters[i]
                           for i in range(self.spec.n_links))
            return self.guard(held, now_ns)
        if self.mode == "force_off":
            return self.guard(cmd.next_state or cmd.state, now_ns)
        if self.mode == "flash":
            return self.guard("o" * self.spec.n_links, now_ns)
        return self.guard(cmd.state, now_ns)

    def _take(self, cmd: P.Command, now_ns: int) -> None:
        """A new command: check it, count it, switch mode."""
        self.heard(now_ns)
        self.stats.commands += 1
        self._answered = cmd.seq
        refusal = None
        if cmd.mode not in P.COMMAND_MODES:
            refusal = ("bad_command", f"unknown mode {cmd.mode!r}")
        elif cmd.mode == "run":
            refusal = self.check(cmd.state, now_ns)
        elif cmd.mode == "force_off":
            nxt = cmd.next_state or cmd.state
            refusal = self._conflicts_in(nxt)
        elif cmd.mode == "plan":
            if not self._find_plan(cmd.plan):
                refusal = ("bad_command", f"no local plan {cmd.plan!r}")
        if refusal is not None:
            kind, reason = refusal
            self.stats.refused[kind] += 1
            self.refused_reason = f"{kind}: {reason}"
            log.warning("junction %s: command %d refused: %s", self.spec.junction, cmd.seq, self.refused_reason)
        else:
            self.refused_reason = ""
            self.stats.applied += 1
        if refusal is not None and refusal[0] == "bad_command":
            return  # keep doing what was being done
        if self.mode == "fallback":
            self.stats.handbacks += 1
            log.info("junction %s: the engine is back: it has control again", self.spec.junction)
            self.stats.fallback_ns += now_ns - self._fallback_since
            self._fallback_since = None
        self.command = cmd
        new_mode = "engine" if cmd.mode == "run" else cmd.mode
        run = self._plan_run
        if new_mode == "plan" and (self.mode != "plan" or run is None or run.plan.name != cmd.plan):
            self._start_plan(cmd.plan)
        self.mode = new_mode

    def _conflicts_in(self, state: str) -> tuple[str, str] | None:
        n = self.spec.n_links
        if len(state) != n or any(ch not in _CLASS for ch in state):
            return "bad_command", f"state {state!r} is not {n} signal letters"
        want = _classes(state)
        for a in range(n):
            for b in self.foes[a]:
                if want[a] == GREEN and (want[b] == GREEN or want[b] == YELLOW):
                    return "conflicting_green", f"links {a} and {b} conflict"
        return None

    def _find_plan(self, name: str) -> LocalPlan | None:
        plans = self.spec.plans
        if not plans:
            return None
        if not name:
            return plans[0]
        return next((p for p in plans if p.name == name), None)

    def _start_plan(self, name: str) -> None:
        plan = self._find_plan(name)
        if plan is None:
            self._plan_run = None
            return
        green = {i for i, c in enumerate(self.cls) if c == GREEN}
        states = [self.consistent(state) for state, _ in plan.phases]
        best, best_score = 0, None
        for k, state in enumerate(states):
            want = _classes(state)
            greens = {i for i, w in enumerate(want) if w == GREEN}
            score = (green <= greens, YELLOW not in want, len(green & greens), -k)
            if best_score is None or score > best_score:
                best, best_score = k, score
        self._plan_run = _PlanRun(plan, states, best)

    def consistent(self, state: str) -> str:
        """``state`` without what this cabinet's conflict table forbids: of two conflicting links
        green together (or green beside yellow), the one that gives way (``g``; else the later
        one; beside a yellow: the green) is shown red instead. A plan written for a looser table
        then still runs (its phases can all be reached)."""
        letters = list(state)
        want = _classes(state)
        for a in range(len(letters)):
            for b in self.foes[a]:
                if want[a] == GREEN and want[b] == YELLOW:
                    drop = a
                elif want[a] == GREEN and want[b] == GREEN and a < b:
                    drop = a if letters[a] == "g" and letters[b] == "G" else b
                else:
                    continue
                letters[drop], want[drop] = self.red_letters[drop], RED
        return "".join(letters)

    def _run_plan(self, now_ns: int) -> str:
        run = self._plan_run
        phases = run.plan.phases
        while True:
            dur_ns = int(round(phases[run.k][1] * 1e9))
            shown_long = run.reached_ns is not None and now_ns - run.reached_ns + _EPS_NS >= dur_ns
            # (a watchdog: a phase the interlocks keep from being reached gives way after a while)
            stuck = run.reached_ns is None and run.asked_ns is not None and now_ns - run.asked_ns >= dur_ns + 60 * 10**9
            if not (shown_long or stuck):
                break
            run.reached_ns = run.asked_ns = None  # (a phase counts its duration from when it is shown)
            run.k = (run.k + 1) % len(phases)
        state = run.states[run.k]
        if run.asked_ns is None:
            run.asked_ns = now_ns
        shown = self.guard(state, now_ns)
        if run.reached_ns is None:
            want = _classes(state)
            if all(c == w or (w == YELLOW and c == RED) for c, w in zip(self.cls, want)):
                run.reached_ns = now_ns
        return shown

    # -- sockets ----------------------------------------------------------------------------

    def connect(self, endpoint: str) -> zmq.Socket:
        """A DEALER to the engine's adapter socket. Nothing queues while the engine is away
        (``IMMEDIATE``): a restarted engine gets no stale hello or feedback."""
        ctx = self.ctx or zmq.Context.instance()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.IDENTITY, self.identity)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IMMEDIATE, 1)
        if self.socket_setup is not None:
            self.socket_setup(sock)
        sock.connect(endpoint)
        self.sock = sock
        return sock

    def _send(self, msg) -> bool:
        try:
            self.sock.send(P.encoder.encode(msg), zmq.NOBLOCK)
        except zmq.Again:
            self.stats.dropped += 1
            return False
        return True

    def hello_message(self, now_ns: int) -> P.Hello:
        s = self.spec
        return P.Hello(junction=s.junction, n_links=s.n_links, version=2, groups=list(s.groups),
                       conflicts=[tuple(c) for c in s.conflicts], heartbeat_s=self.heartbeat_ns / 1e9,
                       fallback_after_s=self.fallback_ns / 1e9, ts_ns=now_ns, state=self.shown,
                       age_ms=self.ages_ms(now_ns))

    def hello(self, now_ns: int) -> bool:
        self.registered = False
        sent = self._send(self.hello_message(now_ns))
        if sent:
            self._hello_ns = now_ns
        return sent

    def feedback(self, now_ns: int) -> bool:
        """Report the display (and the fate of the last command)."""
        self._sent_ns = now_ns
        return self._send(P.Feedback(junction=self.spec.junction, ts_ns=now_ns, state=self.shown, mode=self.mode,
                                     seq=self._answered, refused=self.refused_reason,
                                     refused_total=self.stats.refused_total))

    def heartbeat(self, now_ns: int) -> bool:
        self._sent_ns = now_ns
        return self._send(P.Heartbeat(ts_ns=now_ns, junction=self.spec.junction))

    def handle(self, frame: bytes, now_ns: int):
        """One frame from the engine; a ``Command`` for this junction is returned (not applied)."""
        try:
            msg = P.engine_to_adapter_decoder.decode(frame)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.warning("junction %s: bad message from the engine: %s", self.spec.junction, exc)
            return None
        if isinstance(msg, P.Welcome):
            if msg.junction == self.spec.junction:
                self.welcome = msg
                self.registered = msg.accepted
                if msg.accepted:
                    self.heard(now_ns)
                else:
                    log.error("junction %s: the engine refused it: %s", self.spec.junction, msg.reason)
            return msg
        if isinstance(msg, P.Heartbeat):
            if msg.junction in ("", self.spec.junction):
                self.heard(now_ns)
            return msg
        if isinstance(msg, P.Command) and msg.junction == self.spec.junction:
            return msg
        return None

    def run_once(self, now_ns: int, wait_ms: int = 0) -> str:
        """Receive, step with the newest command, send feedback or a heartbeat, say hello again
        when unregistered or silent; returns the display. For live (wall-clock) adapters."""
        latest = None
        if self.sock.poll(wait_ms):
            while True:
                try:
                    frame = self.sock.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                msg = self.handle(frame, now_ns)
                if isinstance(msg, P.Command) and self.registered:
                    latest = msg
        shown = self.step(now_ns, latest)
        silent = now_ns - self.heard_ns >= self.heartbeat_ns * 2
        if not self.registered or silent:
            if now_ns - self._hello_ns >= self.heartbeat_ns:
                self.hello(now_ns)  # (a restarted engine knows nothing of this junction)
        elif latest is not None:
            self.feedback(now_ns)
        elif now_ns - self._sent_ns >= self.heartbeat_ns:
            self.heartbeat(now_ns)
        return shown

    def fallback_time_ns(self) -> int:
        """Time spent on the local plan because the engine was silent, the current stretch included."""
        ongoing = self.now_ns - self._fallback_since if self._fallback_since is not None else 0
        return self.stats.fallback_ns + ongoing

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(0)
            self.sock = None
        self.stats.fallback_ns = self.fallback_time_ns()
        if self._fallback_since is not None:
            self._fallback_since = self.now_ns


def check_hello(net, t: int, hello: P.Hello, safety, heartbeat_s: float) -> str | None:
    """Why the engine refuses a version-2 ``hello`` for signal ``t`` (None: accepted).

    The cabinet's conflict table must be the network's; its groups must cover each link once;
    its yellow and red clearance must equal the engine's (shorter: below the engine's safety
    timings; longer: the engine's commands would cut them), and its minimum green must not be
    longer than the engine's (the engine's commands would end greens before it); its
    ``fallback_after_s`` must be longer than the engine's heartbeat interval."""
    n = net.tls_n_links(t)
    seen = [0] * n
    for g in hello.groups:
        for i in g.links:
            if not 0 <= i < n:
                return f"group {g.name} names link {i}; the junction has links 0..{n - 1}"
            seen[i] += 1
    missing = [i for i, c in enumerate(seen) if c != 1]
    if missing:
        return f"link {missing[0]} is in {seen[missing[0]]} groups; each link must be in exactly one"
    theirs = {(min(a, b), max(a, b)) for a, b in hello.conflicts}
    ours = {(min(a, b), max(a, b)) for a, b in net.conflict_pairs(t)}
    if ours - theirs:
        a, b = min(ours - theirs)
        return f"the network's conflict ({a}, {b}) is missing from the adapter's conflict table"
    if theirs - ours:
        a, b = min(theirs - ours)
        return (f"the adapter's conflict ({a}, {b}) is not in the network: the engine's phases may "
                "show those links green together")
    eps = 1e-6
    for g in hello.groups:
        if g.min_green_s > safety.min_green_s + eps:
            return (f"group {g.name}: min green {g.min_green_s:g} s is longer than the engine's "
                    f"{safety.min_green_s:g} s: its commands could end greens the cabinet must hold")
        if g.min_green_s < 0:
            return f"group {g.name}: negative min green"
        for what, theirs_s, ours_s in (("yellow", g.yellow_s, safety.yellow_s),
                                       ("red clearance", g.red_clearance_s, safety.red_clearance_s)):
            if theirs_s < ours_s - eps:
                return (f"group {g.name}: {what} {theirs_s:g} s is below the engine's safety timing "
                        f"{ours_s:g} s")
            if theirs_s > ours_s + eps:
                return (f"group {g.name}: {what} {theirs_s:g} s is longer than the engine's {ours_s:g} s: "
                        "its commands would cut it")
    if hello.fallback_after_s and hello.fallback_after_s <= heartbeat_s:
        return (f"fallback_after_s {hello.fallback_after_s:g} s is not longer than the engine's heartbeat "
                f"interval {heartbeat_s:g} s")
    if hello.state and len(hello.state) != n:
        return f"state {hello.state!r} has {len(hello.state)} links, the junction {n}"
    if hello.state and any(ch not in _CLASS for ch in hello.state):
        return f"state {hello.state!r} has letters other than G g y Y r s u o O"
    if hello.age_ms and len(hello.age_ms) != n:
        return f"age_ms has {len(hello.age_ms)} entries, the junction {n} links"
    return None


# -- the engine's side: shared by engine.server and engine.replay ------------------------------

def register(engine, signal_adapter: dict[int, bytes], ident: bytes, msg: P.Hello) -> P.Welcome:
    """What the engine does with a ``Hello``: refuse it with the reason, or register the signal
    (``signal_adapter[t] = ident``) and, for a version-2 hello with its display, adopt that
    display into the safety stage (each link's colour and since when), so the next commands
    continue from what the signal shows (a restarted engine takes over from a local plan)."""
    net, cfg = engine.net, engine.config
    t = net.tls_index.get(msg.junction)
    if t is None:
        return P.Welcome(msg.junction, False, "unknown junction")
    if msg.n_links != net.tls_n_links(t):
        return P.Welcome(msg.junction, False,
                         f"link count {msg.n_links} differs from the network's {net.tls_n_links(t)}")
    if msg.version >= 2:
        reason = check_hello(net, t, msg, cfg.safety, cfg.heartbeat_s)
        if reason is not None:
            return P.Welcome(msg.junction, False, reason)
    signal_adapter[t] = ident
    if msg.version >= 2 and msg.state:
        adopt(engine.safety, int(net.tls_link_ptr[t]), msg.state, msg.ts_ns, msg.age_ms)
    if msg.version >= 2:
        return P.Welcome(msg.junction, True, "", cfg.heartbeat_s, cfg.adapters.offline_after_s)
    return P.Welcome(msg.junction, True)


_SAFETY_CLASS = {RED: 0, YELLOW: 1, GREEN: 2, OFF: 0}  # controllers.safety RED, YELLOW, GREEN


def adopt(safety, lo: int, state: str, ts_ns: int, age_ms: list[int]) -> None:
    """Set the safety stage's links ``lo..`` to the display ``state`` (shown since ``ts_ns`` minus
    each link's age; no age: since ``ts_ns``, the cautious guess for greens and clearances)."""
    for i, ch in enumerate(state):
        age_ns = age_ms[i] * 1_000_000 if i < len(age_ms) else 0
        safety.link_state[lo + i] = _SAFETY_CLASS[_CLASS[ch]]
        safety.link_since_ns[lo + i] = ts_ns - age_ns
        safety._long_clear[lo + i] = False


def engine_command(engine, t: int, chars: str, now_ns: int, seq: int, mode: str = "run",
                   plan: str = "") -> P.Command:
    """The command the engine sends signal ``t`` at a tick: the state to show, the phase it moves
    to, that phase's letters as ``next_state``, and the earliest end of the greens shown now
    that the next phase ends (their min green; 0 when none ends). ``mode``/``plan``: an
    operator's override (``hold``, ``force_off``, ``plan`` with the plan's name, ``flash``),
    which the adapter carries out itself under its own interlocks."""
    net, safety = engine.net, engine.safety
    lo, hi = int(net.tls_link_ptr[t]), int(net.tls_link_ptr[t + 1])
    state = chars[lo:hi]
    p = int(engine.target_phase[t])
    next_state, min_end = "", 0
    if p >= 0:
        cache = engine.__dict__.setdefault("_next_state_cache", {})
        if p not in cache:
            on = set(net.phase_link_idx[net.phase_link_ptr[p]:net.phase_link_ptr[p + 1]].tolist())
            cache[p] = (on, "".join(("g" if net.link_permissive[k] else "G") if k in on
                                    else ("s" if net.link_stop_on_red[k] else "r") for k in range(lo, hi)))
        on, next_state = cache[p]
        min_green_ns = int(round(engine.config.safety.min_green_s * 1e9))
        for k in range(lo, hi):
            if safety.link_state[k] == 2 and k not in on:
                min_end = max(min_end, int(safety.link_since_ns[k]) + min_green_ns, now_ns)
    return P.Command(junction=net.tls_ids[t], ts_ns=now_ns, seq=seq, state=state,
                     phase=engine.local_phase(t), mode=mode, next_state=next_state, min_end_ns=min_end,
                     plan=plan)
