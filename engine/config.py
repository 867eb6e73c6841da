"""Engine configuration: one msgspec struct tree, read from JSON or TOML; unknown keys are errors."""

from __future__ import annotations

from pathlib import Path

import msgspec


class _Conf(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class Endpoints(_Conf):
    """Where the engine binds. A port of ``*`` (or 0) binds any free port; the ready line says which."""

    ingest: str = "tcp://127.0.0.1:7701"
    adapters: str = "tcp://127.0.0.1:7702"
    feed: str = "tcp://127.0.0.1:7703"
    operators: str = "tcp://127.0.0.1:7704"
    # the feed's snapshot ROUTER (late joiners, engine.feed); unset: beside the feed, any free port
    # when the feed binds one, else the feed's host at port 7705
    snapshot: str | None = None


class NetworkParams(_Conf):
    """How the network file is read. ``permissive_turns = false``: turns that give way to
    oncoming traffic in the network's program become protected-only (their crossing foes
    conflict), which trades capacity for no vehicle ever waiting inside the junction."""

    permissive_turns: bool = True


class SafetyTimings(_Conf):
    """What every signal keeps whatever a controller asks (a city sets its own). The red
    clearance is the all-red between a link's yellow and a conflicting green: 1 s by default
    (with the 3 s yellow a 4 s change interval, the usual minimum); where a turn that gave way
    can leave vehicles inside the junction the network asks for longer
    (``CompiledNetwork.link_clearance_s``), and box cameras hold a green while they see a vehicle
    in its way. Measured against 2 s (``evaluate``, adaptive, default SUMO seed, mean time loss):
    cologne1 30.1 -> 25.5 s, ingolstadt1 17.3 -> 14.4, cologne3 25.3 -> 25.2, cologne8 20.9 ->
    19.3, ingolstadt7 32.1 -> 30.1, grid4x4 29.4 -> 24.4, arterial4x4 206.3 -> 188.0, with no
    collision at a signal in those runs; other SUMO seeds gave a few on cologne3 and ingolstadt7,
    as the 2 s clearance did on cologne3 and cologne1."""

    min_green_s: float = 5.0
    yellow_s: float = 3.0
    red_clearance_s: float = 1.0


class MaxPressureParams(_Conf):
    min_hold_s: float = 8.0
    max_green_s: float = 60.0


class ActuatedParams(_Conf):
    max_green_s: float = 45.0
    gap_s: float = 3.0
    fail_after_s: float = 10.0


class AdaptiveParams(_Conf):
    min_hold_s: float = 5.0
    max_green_s: float = 50.0
    gap_s: float = 3.0
    switch_ratio: float = 0.0  # 0: off
    early_switch_veh: float = 8.0  # 0: off
    moving_weight: float = 0.5
    free_flow_extends: bool = True
    max_wait_s: float = 120.0
    fail_after_s: float = 10.0
    stuck_after_s: float = 120.0
    blind_veh: float = 3.0
    recall_veh: float = 0.01
    presence_veh: float = 1.0
    average_tau_s: float = 600.0
    commit_s: float = 0.0  # > 0: planned mode, green ends and successors committed this far ahead
    plan_lost_s: float = 2.0
    plan_headway_s: float = 2.0
    plan_tail_s: float = 1.0
    plan_moving_weight: float = 0.5
    plan_early_end: bool = False
    optional_phase_veh: float = 3.0  # a phase whose links another phase shows too runs only for this demand (0: always)
    bridge_veh: float = 3.0  # leave a green through a phase it contains that has this demand (< 0: off)


class ScatsParams(_Conf):
    saturation_flow_vph: float = 1800.0
    cycle_min_s: float = 40.0
    cycle_max_s: float = 120.0
    cycle_step_s: float = 10.0
    max_degree_of_saturation: float = 0.9
    smoothing: float = 0.5
    max_correction: float = 0.2
    fail_after_s: float = 10.0


class FixedTimeParams(_Conf):
    saturation_flow_vph: float = 1800.0
    cycle_min_s: float = 40.0
    cycle_max_s: float = 120.0


class IngestParams(_Conf):
    max_message_bytes: int = 1 << 20
    max_future_s: float = 5.0
    max_age_s: float = 300.0
    max_queue: int = 10_000  # frames taken per loop turn at most; the rest wait in ZeroMQ's queue
    max_drain_bytes: int = 32 << 20  # about this many bytes per loop turn (judged by the last turn's frames)
    receive_hwm: int = 100_000  # frames ZeroMQ queues per sender before it refuses more
    overload_ticks: int = 3  # ticks with a backlog before the ingest_overload alarm
    pipeline: bool = True  # under load, receive the next frames while the kernel takes the last ones
    coalesce_ms: float = 1.0  # on the wall clock, after a drain of a few frames, wait this long


class RecordingParams(_Conf):
    """The flight recorder (``engine.recorder``): every message in and out, on disk under ``dir``
    in segments of ``segment_bytes``. Off unless ``enabled`` (``serve --record DIR`` turns it on)."""

    enabled: bool = False
    dir: str | None = None
    segment_bytes: int = 64 << 20

    def __post_init__(self) -> None:
        if self.enabled and not self.dir:
            raise ValueError("recording.enabled needs recording.dir")
        if self.segment_bytes < 4096:
            raise ValueError(f"recording.segment_bytes must be at least 4096, not {self.segment_bytes}")


class FeedParams(_Conf):
    """The public feed's queues (``engine.feed``). A subscriber more than ``send_hwm`` messages
    behind loses messages (the engine never waits for it); it sees the gap and re-snapshots."""

    send_hwm: int = 10_000  # messages queued per subscriber on the PUB socket (0: no limit)
    snapshot_hwm: int = 100_000  # messages queued per client on the snapshot socket (one per topic)

    def __post_init__(self) -> None:
        if self.send_hwm < 0 or self.snapshot_hwm < 1:
            raise ValueError("feed.send_hwm must be >= 0 (0: no limit) and feed.snapshot_hwm >= 1")


class HealthParams(_Conf):
    """Detector health checks, after PeMS diagnostics and NTCIP 1202 detector alarms
    (``detectors.health``). Durations are seconds of detector time, so they hold for any
    reporting period; each check must hold that long before its state is entered (the
    on-delay), and a faulty detector returns to ``ok`` only after ``clear_s`` without any fault.

    The defaults are set so a vehicle standing on a stop-bar loop through a long red, or a camera
    watching a queue at red, is not a fault; lower them only where signals cycle fast."""

    enabled: bool = True
    missing_s: float = 120.0  # missing: no reading for this long
    stuck_on_s: float = 300.0  # stuck_on: occupancy >= stuck_occupancy without a break (max presence)
    stuck_occupancy: float = 0.95  # (a camera: vehicles in view / what its zone can hold)
    constant_s: float = 120.0  # constant: the same non-zero reading repeated for this long ...
    constant_min_samples: int = 4  # ... and at least this many times
    camera_constant_s: float = 600.0  # (a camera: a standing queue repeats itself for a whole red)
    chatter_vps: float = 0.9  # chattering: a loop counting more than this per second (3,240 veh/h) ...
    camera_chatter_vps: float = 3.0  # ... a camera whose vehicles in view jump by this per lane per second ...
    chatter_tau_s: float = 60.0  # ... on average over this time constant; or a loop that
    flicker_min_vps: float = 0.2  # ... counts at least this per second
    flicker_occ_s: float = 0.1  # ... each vehicle covering it less than this (no car passes a loop that fast)
    fzon_s: float = 300.0  # flow_zero_occ_nonzero: no count for this long ...
    fzon_occupied_s: float = 15.0  # ... while occupied this many seconds (a camera: queue with no vehicles)
    no_activity_s: float = 300.0  # no_activity: zero count and zero occupancy for this long ...
    no_activity_peer_veh: float = 10.0  # ... while its peers (same lane, else same road) counted this many
    clear_s: float = 60.0  # a fault clears after this long without any fault condition

    def __post_init__(self) -> None:
        for name in self.__struct_fields__:
            v = getattr(self, name)
            if not isinstance(v, bool) and not (v >= 0 and v == v and v != float("inf")):
                raise ValueError(f"health.{name} must be a finite number >= 0, not {v}")
        if not 0 < self.stuck_occupancy <= 1:
            raise ValueError(f"health.stuck_occupancy must be in (0, 1], not {self.stuck_occupancy}")
        if self.chatter_tau_s <= 0:
            raise ValueError("health.chatter_tau_s must be > 0")


class SpatParams(_Conf):
    """SPaT look-ahead and speed advice (``engine.spat``)."""

    horizon_s: float = 60.0  # how far the look-ahead runs the safety stage forward
    advice_min_mps: float = 5.0  # a band whose top is below this is "expect to stop"
    margin_s: float = 1.0  # arrive this long after a window opens and before it closes
    discharge_headway_s: float = 2.0  # per vehicle queued ahead, before the window opens for an arrival

    def __post_init__(self) -> None:
        if not 1.0 <= self.horizon_s <= 600.0:
            raise ValueError(f"spat.horizon_s must be within 1..600 s, not {self.horizon_s}")
        for name in ("advice_min_mps", "margin_s", "discharge_headway_s"):
            v = getattr(self, name)
            if not (v >= 0 and v != float("inf")):
                raise ValueError(f"spat.{name} must be a finite number >= 0, not {v}")


class AdapterParams(_Conf):
    """Signal-controller adapters (``engine.adapter``, docs/protocol.md). The engine marks a
    junction ``offline`` (alarm ``adapter_offline``) when its adapter has said nothing for
    ``offline_after_s``; ``fallback_after_s`` is what the reference adapters (the SUMO bridge)
    wait without a word from the engine before they run their local plans."""

    offline_after_s: float = 5.0
    fallback_after_s: float = 3.0

    def __post_init__(self) -> None:
        if not (self.offline_after_s > 0 and self.fallback_after_s > 0):
            raise ValueError("adapters.offline_after_s and adapters.fallback_after_s must be > 0")


class PlanParams(_Conf):
    """A named signal plan an operator can switch a junction to (``ctl override ID --plan NAME``).

    ``splits_s`` has one entry per phase of the junction, in its phase order (``ctl junction``
    lists them): the seconds of the cycle given to that phase, including the change interval
    (yellow and red clearance) before its green; 0 skips the phase. They add up to ``cycle_s``.
    ``offset_s``: when set, cycles start where (engine time in s - offset_s) is a multiple of
    ``cycle_s`` (so junctions on the same cycle stay coordinated); unset, the first cycle starts
    when the override does. ``junctions``: the junctions it may be used on (empty: any junction
    with as many phases as ``splits_s`` has entries)."""

    cycle_s: float
    splits_s: list[float]
    offset_s: float | None = None
    junctions: list[str] = []

    def __post_init__(self) -> None:
        if not self.splits_s or any(not (0 <= x < 3600) for x in self.splits_s) or not any(self.splits_s):
            raise ValueError(f"plan splits_s must be seconds in [0, 3600), at least one > 0: {self.splits_s}")
        if abs(sum(self.splits_s) - self.cycle_s) > 0.01:
            raise ValueError(f"plan splits_s add up to {sum(self.splits_s):g} s, not cycle_s = {self.cycle_s:g} s")


class OverrideParams(_Conf):
    """Operator overrides (``engine.overrides``): how long one lasts unless told
    (``ctl override --for``), the longest allowed, and the audit trail: how many entries are kept
    in memory and, if ``audit_file`` is set, the JSON-lines file every entry is appended to."""

    default_for_s: float = 900.0
    max_for_s: float = 86_400.0
    audit_history: int = 10_000
    audit_file: str | None = None

    def __post_init__(self) -> None:
        if not 0 < self.default_for_s <= self.max_for_s:
            raise ValueError("overrides: need 0 < default_for_s <= max_for_s")
        if self.audit_history < 1:
            raise ValueError("overrides.audit_history must be at least 1")


class SecurityParams(_Conf):
    """CurveZMQ on the adapter and operator sockets (``engine.security``): ``keys_dir`` holds the
    engine's key pair and the allow-lists of client keys (``serve --keys DIR`` sets it). Unset:
    no authentication (loopback or a trusted network only)."""

    keys_dir: str | None = None
    reload_s: float = 1.0  # how often the allow-lists are checked for added or revoked keys


class EngineConfig(_Conf):
    """Everything ``traffic-engine serve`` can be told. All fields have working defaults."""

    tick_s: float = 1.0
    clock: str = "wall"  # "wall": tick on the system clock; "sim": tick on Clock watermarks
    controller: str = "adaptive"
    detectors: str | None = None  # inventory JSON; default: loops and cameras on every signal approach
    heartbeat_s: float = 1.0
    endpoints: Endpoints = Endpoints()
    network: NetworkParams = NetworkParams()
    safety: SafetyTimings = SafetyTimings()
    max_pressure: MaxPressureParams = MaxPressureParams()
    fixed_time: FixedTimeParams = FixedTimeParams()
    actuated: ActuatedParams = ActuatedParams()
    adaptive: AdaptiveParams = AdaptiveParams()
    scats: ScatsParams = ScatsParams()
    ingest: IngestParams = IngestParams()
    recording: RecordingParams = RecordingParams()
    health: HealthParams = HealthParams()
    feed: FeedParams = FeedParams()
    spat: SpatParams = SpatParams()
    adapters: AdapterParams = AdapterParams()
    plans: dict[str, PlanParams] = {}
    overrides: OverrideParams = OverrideParams()
    security: SecurityParams = SecurityParams()

    def __post_init__(self) -> None:
        if self.clock not in ("wall", "sim"):
            raise ValueError(f"clock must be 'wall' or 'sim', not {self.clock!r}")
        if not 0.05 <= self.tick_s <= 60:
            raise ValueError(f"tick_s must be between 0.05 and 60 s, not {self.tick_s}")
        if not 0 < self.heartbeat_s < self.adapters.fallback_after_s:
            raise ValueError(f"heartbeat_s ({self.heartbeat_s}) must be > 0 and shorter than "
                             f"adapters.fallback_after_s ({self.adapters.fallback_after_s})")
        if "fixed" in self.plans:
            raise ValueError("plans: the name 'fixed' is reserved (the Webster fixed-time plan)")


def load_config(path: str | Path | None, **overrides) -> EngineConfig:
    """Read a config file (``.json`` or ``.toml``); ``overrides`` replace top-level fields.

    Raises ``ValueError`` naming the file and the offending key on any error.
    """
    if path is None:
        cfg = EngineConfig()
    else:
        p = Path(path)
        try:
            raw = p.read_bytes()
            if p.suffix == ".toml":
                cfg = msgspec.toml.decode(raw, type=EngineConfig)
            else:
                cfg = msgspec.json.decode(raw, type=EngineConfig)
        except OSError as exc:
            raise ValueError(f"cannot read config {p}: {exc}") from exc
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ValueError(f"bad config {p}: {exc}") from exc
    overrides = {k: v for k, v in overrides.items() if v is not None}
    try:
        return msgspec.structs.replace(cfg, **overrides) if overrides else cfg
    except (TypeError, ValueError) as exc:
        raise ValueError(f"bad config override: {exc}") from exc


def dump_config(cfg: EngineConfig) -> bytes:
    return msgspec.json.format(msgspec.json.encode(cfg), indent=2)
