"""Operator overrides: hold a phase, run a plan, or flash a junction; every request audited.

An override replaces, for one junction, the phase its controller wants. ``Engine.tick`` applies
the active overrides after the controller and before the safety stage, so the safety stage
checks every override exactly as it checks a controller: a hold reaches its phase only through
yellow and red clearance and never cuts a minimum green; a flash goes through yellow to flashing
(SUMO ``o``) and comes back through an all-red clearance (``controllers.safety._flash``).

- ``hold PHASE``: the junction wants phase PHASE (its own phase index, as ``ctl junction``
  lists them) for the whole override.
- ``plan NAME``: the junction runs a fixed cycle: ``fixed`` is the Webster plan the
  ``fixed-time`` controller would compute for this junction from the flows measured when the
  override starts (kept for the whole override), any other NAME a plan of the config's ``plans``
  section (``engine.config.PlanParams``). Each phase's split includes the change interval before
  its green; a phase with split 0 is skipped.
- ``flash``: every link of the junction flashes (``o``).

An override lasts ``--for`` seconds (``overrides.default_for_s``, 15 min, unless told; at most
``overrides.max_for_s``) and ends when it expires or is released; a new override on the same
junction replaces the old one. Unknown junctions, phases, plans or modes are refused.

Per tick the cost is a numba kernel over the active overrides only (``_apply``) and one
comparison for the next expiry; no loop over the junctions.

Every request (applied or refused), release and expiry goes into the audit trail: who (the
CurveZMQ key name when keys are on, else the name the operator gave, marked unverified), when
(engine clock), what, the result, and for an override its expiry and how it ended. The trail is
kept in memory (``overrides.audit_history`` entries) and appended as JSON lines to
``overrides.audit_file`` when set. An active override is also an alarm of kind ``override``
(subject: the junction), so it shows on the feed's ``alarms`` topic and in ``ctl alarms``.
"""

from __future__ import annotations

import json
import logging
import math
from collections import deque
from dataclasses import asdict, dataclass, field

import numpy as np
from numba import njit

log = logging.getLogger("traffic_engine.overrides")

MODE_NONE, MODE_HOLD, MODE_PLAN, MODE_FLASH = 0, 1, 2, 3
MODES = {"hold": MODE_HOLD, "plan": MODE_PLAN, "flash": MODE_FLASH}
OPS = ("junction", "override", "release", "audit")
FIXED = "fixed"


class OverrideError(ValueError):
    """A request that cannot be applied; the message says why."""


@njit(cache=True)
def _apply(now_ns, active, mode, hold_phase, plan_start_ns, plan_cycle_ns, tls_phase_ptr, split_end_ns, target):
    """Overwrite ``target`` for the signals in ``active``: the held phase, the plan's phase now,
    or -1 (no phase) for a flash."""
    for k in range(active.size):
        t = active[k]
        m = mode[t]
        if m == MODE_HOLD:
            target[t] = hold_phase[t]
        elif m == MODE_FLASH:
            target[t] = -1
        elif m == MODE_PLAN:
            pos = (now_ns - plan_start_ns[t]) % plan_cycle_ns[t]  # (sign of the divisor, as in Python)
            p1 = tls_phase_ptr[t + 1]
            target[t] = p1 - 1
            for p in range(tls_phase_ptr[t], p1):
                if pos < split_end_ns[p]:
                    target[t] = p
                    break


@dataclass
class Override:
    """One override of one junction."""

    id: int
    junction: str
    mode: str  # hold, plan, flash
    who: str
    verified: bool  # who was proved by a CurveZMQ key
    started_ns: int
    expires_ns: int
    reason: str = ""
    phase: int | None = None  # hold: the junction's own phase index
    plan: str | None = None
    cycle_s: float | None = None
    splits_s: list[float] | None = None
    ended_ns: int | None = None
    ended_by: str | None = None  # "expired", "released by NAME", "replaced by #ID"

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class AuditTrail:
    """The bounded in-memory trail, and the JSON-lines file it is appended to when configured."""

    history: int = 10_000
    path: str | None = None
    entries: deque = field(default_factory=deque)
    total: int = 0
    file_errors: int = 0

    def __post_init__(self) -> None:
        self.entries = deque(maxlen=self.history)

    def add(self, entry: dict) -> dict:
        self.total += 1
        entry = {"seq": self.total, **entry}
        self.entries.append(entry)
        if self.path:
            try:
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(entry, separators=(",", ":"), default=repr) + "\n")
            except OSError as exc:
                self.file_errors += 1
                if self.file_errors & (self.file_errors - 1) == 0:  # 1st, 2nd, 4th, ... failure
                    log.error("cannot append to the audit file %s (%d failure(s)): %s", self.path,
                              self.file_errors, exc)
        return entry


class Overrides:
    """The active overrides of one engine and their audit trail."""

    def __init__(self, engine):
        self.engine = engine
        net = engine.net
        self.net = net
        cfg = engine.config
        self.params = cfg.overrides
        self.plans = dict(cfg.plans)
        self.audit = AuditTrail(self.params.audit_history, self.params.audit_file)
        n_tls = net.n_tls
        self.mode = np.zeros(n_tls, dtype=np.int8)
        self.hold_phase = np.full(n_tls, -1, dtype=np.int32)
        self.plan_start_ns = np.zeros(n_tls, dtype=np.int64)
        self.plan_cycle_ns = np.ones(n_tls, dtype=np.int64)
        self.split_end_ns = np.zeros(net.n_phases, dtype=np.int64)
        self.active_idx = np.zeros(0, dtype=np.int32)
        self.active: dict[int, Override] = {}  # signal index -> its override
        self._next_id = 1
        self._next_expiry_ns = math.inf
        self._fixed = None  # a FixedTime controller, for the Webster plan (made on first use)
        for name, plan in self.plans.items():  # refuse, at start, a plan no junction can run
            if plan.junctions:
                bad = [j for j in plan.junctions if j not in net.tls_index]
                if bad:
                    raise ValueError(f"plans.{name}: unknown junctions {bad}")
                for j in plan.junctions:
                    self._check_plan_fits(name, plan, net.tls_index[j])

    # -- per tick -------------------------------------------------------------------------

    def apply(self, target_phase: np.ndarray, now_ns: int) -> None:
        """Expire what is due, then write the active overrides into ``target_phase``."""
        if now_ns >= self._next_expiry_ns:
            for t, ov in sorted(self.active.items(), key=lambda kv: kv[1].id):
                if ov.expires_ns <= now_ns:
                    self._end(t, now_ns, "expired")
                    self.audit.add({"ts_ns": now_ns, "who": "engine", "verified": True, "action": "expire",
                                    "junction": ov.junction, "override": ov.id, "result": "expired"})
        if self.active_idx.size:
            _apply(np.int64(now_ns), self.active_idx, self.mode, self.hold_phase, self.plan_start_ns,
                   self.plan_cycle_ns, self.net.tls_phase_ptr, self.split_end_ns, target_phase)

    def warm_up(self) -> None:
        """Compile the kernel (with an empty set of overrides nothing runs it otherwise)."""
        target = np.zeros(1, dtype=np.int32)
        _apply(np.int64(0), np.zeros(1, dtype=np.int32), np.array([MODE_PLAN], dtype=np.int8),
               np.zeros(1, dtype=np.int32), np.zeros(1, dtype=np.int64), np.ones(1, dtype=np.int64),
               np.array([0, 1], dtype=np.int64), np.ones(1, dtype=np.int64), target)

    # -- requests -------------------------------------------------------------------------

    def override(self, junction: str, mode: str, now_ns: int, who: str, verified: bool, *,
                 phase: int | None = None, plan: str | None = None, for_s: float | None = None,
                 reason: str = "") -> Override:
        """Apply an override (audited either way); raises :class:`OverrideError` when refused."""
        what = {k: _plain(v) for k, v in
                (("mode", mode), ("phase", phase), ("plan", plan), ("for_s", for_s), ("reason", reason))}
        entry = {"ts_ns": now_ns, "who": who, "verified": verified, "action": "override", "junction": _plain(junction),
                 "what": what}
        try:
            ov = self._make(junction, mode, now_ns, who, verified, phase, plan, for_s, reason)
        except OverrideError as exc:
            self.audit.add({**entry, "result": "refused", "error": str(exc)})
            raise
        t = self.net.tls_index[junction]
        old = self.active.get(t)
        if old is not None:
            self._end(t, now_ns, f"replaced by #{ov.id}")
        self._install(t, ov)
        self.audit.add({**entry, "override": ov.id, "result": "applied", "expires_ns": ov.expires_ns,
                        "replaced": None if old is None else old.id,
                        **({"cycle_s": ov.cycle_s, "splits_s": ov.splits_s} if ov.mode == "plan" else {})})
        log.info("override #%d %s %s by %s until %d", ov.id, junction, _describe(ov), who, ov.expires_ns)
        return ov

    def release(self, junction: str, now_ns: int, who: str, verified: bool, reason: str = "") -> Override:
        """End the junction's override (audited either way); raises :class:`OverrideError`."""
        entry = {"ts_ns": now_ns, "who": who, "verified": verified, "action": "release", "junction": _plain(junction),
                 "what": {"reason": _plain(reason)}}
        t = self.net.tls_index.get(junction) if isinstance(junction, str) else None
        ov = None if t is None else self.active.get(t)
        if not isinstance(reason, str) or len(reason) > 500:
            self.audit.add({**entry, "result": "refused", "error": "bad reason"})
            raise OverrideError("reason must be text of at most 500 characters")
        if ov is None:
            error = (f"unknown junction {junction!r}" if t is None else f"junction {junction!r} has no override")
            self.audit.add({**entry, "result": "refused", "error": error})
            raise OverrideError(error)
        self._end(t, now_ns, f"released by {who}")
        self.audit.add({**entry, "override": ov.id, "result": "released"})
        return ov

    def _make(self, junction, mode, now_ns, who, verified, phase, plan, for_s, reason) -> Override:
        net = self.net
        t = net.tls_index.get(junction) if isinstance(junction, str) else None
        if t is None:
            raise OverrideError(f"unknown junction {junction!r} (a signal id of the network; `ctl status` "
                                f"counts them, `ctl junction ID` shows one)")
        if not isinstance(mode, str) or mode not in MODES:
            raise OverrideError(f"unknown override mode {mode!r}; choose hold, plan or flash")
        if for_s is None:
            for_s = self.params.default_for_s
        if not isinstance(for_s, (int, float)) or isinstance(for_s, bool) or not 0 < for_s <= self.params.max_for_s:
            raise OverrideError(f"--for must be seconds in (0, {self.params.max_for_s:g}], not {for_s!r}")
        if not isinstance(reason, str) or len(reason) > 500:
            raise OverrideError("reason must be text of at most 500 characters")
        n_phases = int(net.tls_phase_ptr[t + 1] - net.tls_phase_ptr[t])
        if n_phases == 0 and mode != "flash":
            raise OverrideError(f"junction {junction!r} has no phases to hold or plan (only --flash)")
        ov = Override(self._next_id, junction, mode, who, verified, now_ns, now_ns + int(round(for_s * 1e9)), reason)
        if mode == "hold":
            if not isinstance(phase, int) or isinstance(phase, bool) or not 0 <= phase < n_phases:
                raise OverrideError(f"junction {junction!r} has phases 0..{n_phases - 1}, not {phase!r}")
            ov.phase = phase
        elif mode == "plan":
            if not isinstance(plan, str):
                raise OverrideError("--plan needs a NAME: fixed, or one of the config's plans")
            ov.plan = plan
            ov.cycle_s, ov.splits_s = self._plan_splits(plan, t)
        if phase is not None and mode != "hold" or plan is not None and mode != "plan":
            raise OverrideError(f"{mode} takes no {'phase' if phase is not None else 'plan'}")
        self._next_id += 1
        return ov

    def _plan_splits(self, name: str, t: int) -> tuple[float, list[float]]:
        if name == FIXED:
            return self._webster(t)
        plan = self.plans.get(name)
        if plan is None:
            known = ", ".join([FIXED, *sorted(self.plans)])
            raise OverrideError(f"unknown plan {name!r}; known: {known}")
        self._check_plan_fits(name, plan, t)
        return plan.cycle_s, list(plan.splits_s)

    def _cycle_phases(self, t: int) -> int:
        """How many phases signal ``t``'s cycle runs: its first ones, the lane phases follow them."""
        p0, p1 = int(self.net.tls_phase_ptr[t]), int(self.net.tls_phase_ptr[t + 1])
        return int(self.net.phase_in_cycle[p0:p1].sum())

    def _check_plan_fits(self, name, plan, t: int) -> None:
        net = self.net
        junction = net.tls_ids[t]
        if plan.junctions and junction not in plan.junctions:
            raise OverrideError(f"plan {name!r} is not for junction {junction!r} (only {', '.join(plan.junctions)})")
        n = self._cycle_phases(t)
        if len(plan.splits_s) != n:
            raise OverrideError(f"plan {name!r} has {len(plan.splits_s)} splits, junction {junction!r} has {n} phases "
                                f"in its cycle")
        s = self.engine.config.safety
        least = s.min_green_s + s.yellow_s + s.red_clearance_s
        short = [k for k, x in enumerate(plan.splits_s) if 0 < x < least]
        if short:
            raise OverrideError(f"plan {name!r}: splits of phases {short} are shorter than min green + yellow + "
                                f"red clearance ({least:g} s)")

    def _webster(self, t: int) -> tuple[float, list[float]]:
        """The fixed-time controller's Webster plan for signal ``t`` from the flows measured now."""
        from controllers.fixed_time import FixedTime, webster_plan
        from engine.core import make_controller

        if self._fixed is None:
            self._fixed = make_controller(FixedTime.name, self.net, self.engine.config)
        ft, net = self._fixed, self.net
        c = ft.config
        green = np.zeros(net.n_phases)
        cycle = webster_plan(t, self.engine.estimator.state.lane_flow_vph, net.tls_phase_ptr, net.phase_link_ptr,
                             net.phase_link_idx, net.link_move_ptr, net.link_move_idx, net.move_in_lane,
                             ft._in_share, c.saturation_flow_vph, ft.intergreen_s, c.min_green_s, c.cycle_min_s,
                             c.cycle_max_s, c.max_degree_of_saturation, net.phase_in_cycle, green)
        p0 = int(net.tls_phase_ptr[t])
        splits = [round(float(green[p] + ft.intergreen_s[p]), 3) for p in range(p0, p0 + self._cycle_phases(t))]
        return round(float(cycle), 3), splits

    def _install(self, t: int, ov: Override) -> None:
        net = self.net
        self.active[t] = ov
        self.mode[t] = MODES[ov.mode]
        self.engine.safety.set_flash(t, ov.mode == "flash")
        if ov.mode == "hold":
            self.hold_phase[t] = int(net.tls_phase_ptr[t]) + ov.phase
        elif ov.mode == "plan":
            p0 = int(net.tls_phase_ptr[t])
            ends = np.cumsum(np.round(np.array(ov.splits_s) * 1e9).astype(np.int64))
            self.split_end_ns[p0:p0 + ends.size] = ends
            self.plan_cycle_ns[t] = max(int(ends[-1]), 1)
            plan = self.plans.get(ov.plan)
            if plan is not None and plan.offset_s is not None:
                self.plan_start_ns[t] = int(round(plan.offset_s * 1e9))  # cycles aligned on the clock
            else:
                self.plan_start_ns[t] = ov.started_ns
        self._reindex()
        self.engine.alarms.raise_("override", ov.junction, ov.started_ns,
                                  f"#{ov.id} {_describe(ov)} until {iso(ov.expires_ns)}", "warning")

    def _end(self, t: int, now_ns: int, how: str) -> Override:
        ov = self.active.pop(t)
        ov.ended_ns, ov.ended_by = now_ns, how
        self.mode[t] = MODE_NONE
        if ov.mode == "flash":
            self.engine.safety.set_flash(t, False)  # back through an all-red clearance
        self._reindex()
        self.engine.alarms.clear("override", ov.junction, now_ns, f"#{ov.id} {_describe(ov)}: {how}")
        return ov

    def _reindex(self) -> None:
        self.active_idx = np.array(sorted(self.active), dtype=np.int32)
        self._next_expiry_ns = min((ov.expires_ns for ov in self.active.values()), default=math.inf)

    def status(self) -> dict:
        by_mode = {m: 0 for m in MODES}
        for ov in self.active.values():
            by_mode[ov.mode] += 1
        return {"active": len(self.active), "by_mode": by_mode, "audit_total": self.audit.total,
                "audit_file": self.audit.path, "audit_file_errors": self.audit.file_errors}


def iso(ns: int | None) -> str:
    """Engine time as ISO-8601 UTC to the tenth of a second ("-" for none)."""
    if ns is None or ns <= 0:
        return "-"
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ns / 1e9, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-5] + "Z"


def _plain(v):
    """A request value as the audit trail keeps it: plain JSON scalars, anything else as text."""
    if v is None or isinstance(v, (bool, float)) or isinstance(v, int) and -2**63 <= v < 2**63:
        return v
    if isinstance(v, str):
        return v[:500]
    return repr(v)[:100]


def _describe(ov: Override) -> str:
    if ov.mode == "hold":
        return f"hold phase {ov.phase}"
    if ov.mode == "plan":
        return f"plan {ov.plan} (cycle {ov.cycle_s:g} s)"
    return "flash"


# -- the operator ops ---------------------------------------------------------------------


def handle(server, op: str, args: dict, now_ns: int, who: str, verified: bool) -> tuple[bool, dict, str]:
    """One operator request of ``OPS``: ``(ok, result, error)``."""
    ovs: Overrides = server.engine.overrides
    who = who[:100]
    try:
        if op == "junction":
            return True, junction_info(server, _junction_arg(args)), ""
        if op == "override":
            if server.config.clock == "sim" and server.engine.ticks == 0:
                raise OverrideError("the engine has no time yet (simulated clock, no tick so far): try again "
                                    "after its first tick")
            mode = args.get("mode")
            ov = ovs.override(_junction_arg(args), mode, now_ns, who, verified, phase=args.get("phase"),
                              plan=args.get("plan"), for_s=args.get("for_s"), reason=args.get("reason", ""))
            return True, {"override": ov.as_dict(), "ts_ns": now_ns}, ""
        if op == "release":
            ov = ovs.release(_junction_arg(args), now_ns, who, verified, reason=args.get("reason", ""))
            return True, {"released": ov.as_dict(), "ts_ns": now_ns}, ""
        if op == "audit":
            limit = args.get("limit", 100)
            if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
                raise OverrideError(f"limit must be a positive integer, not {limit!r}")
            junction = args.get("junction")
            entries = [e for e in ovs.audit.entries if junction is None or e.get("junction") == junction]
            return True, {"entries": entries[-limit:], "total": ovs.audit.total, "kept": len(ovs.audit.entries),
                          "file": ovs.audit.path,
                          "active": [o.as_dict() for _, o in sorted(ovs.active.items())]}, ""
    except OverrideError as exc:
        return False, {}, str(exc)
    except (TypeError, ValueError) as exc:  # args of unexpected types: refused, never fatal
        log.warning("operator %s %s refused: %s", who, op, exc)
        return False, {}, f"bad args for {op}: {exc}"
    return False, {}, f"unknown op {op!r}"


def _junction_arg(args: dict) -> str:
    j = args.get("junction")
    if not isinstance(j, str) or not j:
        raise OverrideError("needs the junction id (arg 'junction')")
    return j


def junction_info(server, junction: str) -> dict:
    """Everything an operator wants to know about one signalised junction."""
    eng = server.engine
    net = eng.net
    t = net.tls_index.get(junction)
    if t is None:
        raise OverrideError(f"unknown junction {junction!r}")
    from controllers.safety import FLASH, GREEN, RED, YELLOW

    names = {int(RED): "red", int(YELLOW): "yellow", int(GREEN): "green", int(FLASH): "flash"}
    lo, hi = int(net.tls_link_ptr[t]), int(net.tls_link_ptr[t + 1])
    chars = eng.safety.state_chars()[lo:hi].decode()
    links, lanes_in = [], set()
    for link in range(lo, hi):
        moves = net.link_move_idx[net.link_move_ptr[link]:net.link_move_ptr[link + 1]]
        lanes_in.update(int(net.move_in_lane[m]) for m in moves)
        links.append({"index": link - lo, "state": chars[link - lo],
                      "phase_state": names.get(int(eng.safety.link_state[link]), "?"),
                      "since_ns": int(eng.safety.link_since_ns[link]),
                      "movements": [[net.lane_ids[net.move_in_lane[m]], net.lane_ids[net.move_out_lane[m]]]
                                    for m in moves],
                      "conflicts": [int(c) - lo for c in
                                    net.link_conflict_idx[net.link_conflict_ptr[link]:net.link_conflict_ptr[link + 1]]]})
    p0, p1 = int(net.tls_phase_ptr[t]), int(net.tls_phase_ptr[t + 1])
    phases = []
    for p in range(p0, p1):
        green = {int(x) - lo for x in net.phase_link_idx[net.phase_link_ptr[p]:net.phase_link_ptr[p + 1]]}
        phases.append({"index": p - p0, "links": sorted(green),
                       "pattern": "".join("G" if k in green else "r" for k in range(hi - lo)),
                       "in_cycle": bool(net.phase_in_cycle[p])})
    active = int(eng.safety.active_phase[t])
    # detectors on the lanes entering the junction, with their health
    from detectors.health import STATES

    bank, health = eng.bank, eng.health
    dets = []
    for d, lane in enumerate(bank.loop_lane.tolist()):
        if lane in lanes_in:
            dets.append((d, "loop", [net.lane_ids[lane]]))
    for c in range(bank.n_cameras):
        cl = bank.camera_lane_idx[bank.camera_lane_ptr[c]:bank.camera_lane_ptr[c + 1]].tolist()
        if lanes_in.intersection(cl):
            dets.append((bank.n_loops + c, "camera", [net.lane_ids[x] for x in cl]))
    detectors = [{"id": health.ids[d], "kind": kind, "lanes": lanes_of, "health": STATES[int(health.state[d])],
                  "since_ns": int(health.since_ns[d])} for d, kind, lanes_of in dets] if health.n else []
    ov = eng.overrides.active.get(t)
    ident = server.signal_adapter.get(t) if hasattr(server, "signal_adapter") else None
    adapter = None
    if ident is not None:
        link_obj = server.links.get(ident)
        text = ident.decode(errors="replace")
        adapter = {"identity": text if text.isprintable() and "\ufffd" not in text else ident.hex(),
                   "registered": True,
                   "online": getattr(link_obj, "online", None),
                   "last_seen_ns": getattr(link_obj, "last_seen_ns", None),
                   "feedback": (getattr(link_obj, "feedback", {}) or {}).get(t)}
    return {
        "junction": junction, "index": t, "controller": eng.controller.name, "ts_ns": server.clock.now_ns(),
        "state": chars, "links": links, "phases": phases,
        "active_phase": active - p0 if active >= 0 else -1,
        "active_since_ns": int(eng.safety.active_since_ns[t]),
        "target_phase": eng.local_phase(t),
        "flashing": bool(eng.safety.flash[t]),
        "override": None if ov is None else ov.as_dict(),
        "detectors": detectors,
        "detectors_by_health": {s: sum(1 for d in detectors if d["health"] == s) for s in STATES
                                if any(d["health"] == s for d in detectors)},
        "adapter": adapter,
    }


def apply_recorded(engine, body: bytes, now_ns: int) -> None:
    """Replay: apply a recorded operator request that changes the signals (override, release),
    as the server did, so a replay sends the same commands. Refusals are refused again."""
    from engine import protocol as P

    try:
        req = P.request_decoder.decode(body)
    except Exception:  # noqa: BLE001 (the server answered it with an error; nothing changed)
        return
    ovs = engine.overrides
    args = req.args
    try:
        if req.op == "override":
            ovs.override(args.get("junction"), args.get("mode"), now_ns, "replay", False, phase=args.get("phase"),
                         plan=args.get("plan"), for_s=args.get("for_s"), reason=args.get("reason", ""))
        elif req.op == "release":
            ovs.release(args.get("junction"), now_ns, "replay", False)
    except (OverrideError, TypeError):
        pass
