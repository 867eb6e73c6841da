"""The one door to a running SUMO: the only module that imports ``libsumo``/``traci``.

:class:`Sumo` starts a simulation with the evaluation protocol's options, advances it one
second at a time, and reads everything in bulk through subscriptions: per step there is one
exchange per domain (simulation, induction loops, lane-area zones, signals), never a call per
lane. ``api="libsumo"`` (default) runs SUMO inside this process; ``api="traci"`` runs it as a
child process over a socket, with the same behaviour (and several simulations at once).

libsumo holds one simulation per process: :meth:`Sumo.close` ends it, and a new
:class:`Sumo` may start afterwards in the same process (checked with SUMO 1.28: start, close,
start again works, any number of times). Two libsumo simulations cannot run at the same time;
use ``api="traci"`` for that.

Reproducibility. SUMO 1.28 is not always a function of its inputs alone: on some junctions
(cologne1's cluster junction, where left turners wait inside the junction) the outcome depends
on the process's memory layout. cologne1 with the rebuilt static program gives a mean time
loss of 28.62 s or, in some runs, 29.20 s (actuated: 22.61 or 24.39 s); which one depends on
path lengths, on earlier libsumo runs in the same process (e.g. the 4th and 8th of a series),
on extra TraCI calls. cologne3, cologne8, grid4x4, ingolstadt1 and ingolstadt7 gave identical
figures in the same checks. With ``api="traci"`` SUMO runs in a fresh process with
address-space randomisation off (``setarch -R``; ``pin_layout=False`` to disable), so the same
command gives the same result every time. With libsumo, SUMO shares the heap of the Python
process and such junctions may differ from run to run.

Loop readings (``read_loops``), for the step that just ended:

- ``count``: vehicles whose front crossed the loop during the step. Computed as the set
  difference between the ids SUMO reports on the loop this step and the previous step, so a
  slow vehicle standing on the loop for several steps counts once. It equals the
  ``nVehEntered`` of SUMO's own E1 output with a 1 s period (checked on cologne1: every loop,
  every second).
- ``occupancy``: fraction of the step the loop was covered, equal to SUMO's E1 interval
  occupancy for a 1 s interval. SUMO's ``LAST_STEP_OCCUPANCY`` alone misses the part of the
  step during which a vehicle that was already on the loop drives off it; that part is added
  from the loop's time since the last detection. In the rare steps where that is ambiguous
  (the vehicle on the loop leaves and another one arrives within the same step, or a vehicle
  leaves the loop sideways by changing lanes) the loop's vehicle data is fetched for that one
  loop and the occupancy computed exactly.
- ``speed_mps``: mean speed of the vehicles that entered during the step, NaN when none did
  (SUMO reports -1; also NaN when the only vehicle that entered left the lane sideways over
  the loop, which SUMO excludes from its speed).

Camera zones (``read_cameras``): vehicles inside each lane-area zone at the end of the step
(a vehicle counts while any part of it is in the zone, so also while its front is already in
the junction) and those among them halting (below 1.39 m/s, SUMO's default jam threshold).
SUMO's E2 halting count sometimes includes a vehicle that left the zone during the step; it is
capped at the vehicle count. Measured on cologne1 (29,280 zone-seconds) it then differs from
"vehicles in the zone now below 1.39 m/s" in 1.1 % of readings, by one vehicle.

Movement counts (``read_zone_exits``): the vehicles that left each zone, and the normal edge
each reaches after the junction (what a camera that classifies turns reports). This is the one
per-vehicle call: one ``vehicle.getRoadID`` per vehicle while it crosses the junction.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import traci.constants as tc

from sim.tools import sumo_binary, sumo_home

__all__ = ["APIS", "SUMO_DEFAULT_SEED", "Sumo", "SumoError"]

APIS = ("libsumo", "traci")
SUMO_DEFAULT_SEED = 23423
"""SUMO's built-in random seed: the BASELINES.md figures were measured with it."""
STEP_S = 1.0

_SIM_VARS = (
    tc.VAR_TIME,
    tc.VAR_MIN_EXPECTED_VEHICLES,
    tc.VAR_DEPARTED_VEHICLES_NUMBER,
    tc.VAR_ARRIVED_VEHICLES_NUMBER,
    tc.VAR_COLLIDING_VEHICLES_NUMBER,
)
_LOOP_VARS = (
    tc.LAST_STEP_VEHICLE_ID_LIST,
    tc.LAST_STEP_OCCUPANCY,
    tc.LAST_STEP_MEAN_SPEED,
    tc.LAST_STEP_TIME_SINCE_DETECTION,
)
_ZONE_COUNT_VARS = (tc.LAST_STEP_VEHICLE_NUMBER, tc.LAST_STEP_VEHICLE_HALTING_NUMBER)
_ZONE_VARS = _ZONE_COUNT_VARS + (tc.LAST_STEP_VEHICLE_ID_LIST,)
_EXIT_PENDING_S = 60.0  # a vehicle not on a normal edge this long after leaving a zone is forgotten
_TLS_VARS = (tc.TL_RED_YELLOW_GREEN_STATE,)

_libsumo_owner: "Sumo | None" = None  # the Sumo currently holding the in-process simulation
_CONNECT_POLL_S = 0.05
_CONNECT_TIMEOUT_S = 120.0


@functools.lru_cache(maxsize=1)
def _layout_pin_prefix() -> tuple[str, ...]:
    """``setarch ARCH -R``: runs a child with address-space randomisation off, if that works here."""
    setarch = shutil.which("setarch")
    if setarch is None:
        return ()
    prefix = (setarch, platform.machine(), "-R")
    try:
        ok = subprocess.run([*prefix, "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        ok = False
    return prefix if ok else ()


class SumoError(RuntimeError):
    """SUMO could not start, or the simulation was used in a state that does not allow it."""


class Sumo:
    """One SUMO simulation, stepped one second at a time.

    Outputs go to ``outdir``: ``stats.xml`` (``--statistic-output``, read it with
    :func:`sim.outcomes.read_statistics` after :meth:`close`) and ``tripinfo.xml``.
    ``seed`` defaults to SUMO's own default seed and junction collision checks are off, as in
    the protocol that produced ``BASELINES.md``; ``check_junction_collisions=True`` adds
    ``--collision.check-junctions`` (SUMO's default collision action, teleport, stays).
    ``extra_args`` are appended to the command line. With ``api="traci"`` and ``pin_layout``
    (default) SUMO runs with address-space layout randomisation off (``setarch -R``, where
    available), which makes repeated runs bit-identical; see the module docstring.
    """

    def __init__(
        self,
        net: Path | str,
        routes: Sequence[Path | str],
        *,
        begin: float,
        end: float,
        additional: Sequence[Path | str] = (),
        outdir: Path | str,
        api: str = "libsumo",
        extra_args: Sequence[str] = (),
        seed: int = SUMO_DEFAULT_SEED,
        check_junction_collisions: bool = False,
        time_to_teleport_s: float = 300.0,
        pin_layout: bool = True,
    ) -> None:
        if api not in APIS:
            raise ValueError(f"api must be one of {APIS}, got {api!r}")
        if not end > begin:
            raise ValueError(f"end ({end}) must be after begin ({begin})")
        self.net = Path(net)
        self.routes = tuple(Path(r) for r in routes)
        self.additional = tuple(Path(a) for a in additional)
        self.begin = float(begin)
        self.end = float(end)
        self.outdir = Path(outdir)
        self.api = api
        self.extra_args = tuple(str(a) for a in extra_args)
        self.seed = int(seed)
        self.check_junction_collisions = bool(check_junction_collisions)
        self.time_to_teleport_s = float(time_to_teleport_s)
        self.pin_layout = bool(pin_layout)

        self._conn: Any = None  # libsumo module or a traci Connection: same API
        self._time = self.begin
        self._min_expected = -1
        self._departed = 0
        self._arrived = 0
        self._colliding_vehicles = 0
        self._tls_ids: tuple[str, ...] = ()
        self._tls_states: list[str] = []
        self._tls_stale = True
        self._loop_ids: tuple[str, ...] = ()
        self._loop_prev: list[frozenset[str]] = []
        self._loop_count = np.zeros(0, dtype=np.int32)
        self._loop_occ = np.zeros(0, dtype=np.float64)
        self._loop_speed = np.zeros(0, dtype=np.float64)
        self._zone_ids: tuple[str, ...] = ()
        self._exit_ids: tuple[str, ...] = ()
        self._zone_res: dict | None = None
        self.exact_occupancy_fetches = 0
        """Steps x loops where occupancy needed the loop's vehicle data (see module docstring)."""

    # ---------------------------------------------------------------- lifecycle

    @property
    def stats_path(self) -> Path:
        return self.outdir / "stats.xml"

    @property
    def tripinfo_path(self) -> Path:
        return self.outdir / "tripinfo.xml"

    def command(self) -> list[str]:
        """The SUMO command line this simulation runs."""
        cmd = [
            sumo_binary("sumo"),
            "-n", str(self.net),
            "-r", ",".join(str(r) for r in self.routes),
        ]
        if self.additional:
            cmd += ["-a", ",".join(str(a) for a in self.additional)]
        cmd += [
            "-b", repr(self.begin),
            "-e", repr(self.end),
            "--step-length", repr(STEP_S),
            "--time-to-teleport", repr(self.time_to_teleport_s),
            "--statistic-output", str(self.stats_path),
            "--tripinfo-output", str(self.tripinfo_path),
            "--no-step-log", "true",
            "--no-warnings", "true",
            "--seed", str(self.seed),
        ]
        if self.check_junction_collisions:
            cmd += ["--collision.check-junctions", "true"]
        return cmd + list(self.extra_args)

    @property
    def started(self) -> bool:
        return self._conn is not None

    def start(self) -> "Sumo":
        """Launch SUMO and subscribe to the simulation counters and every signal's state."""
        global _libsumo_owner
        if self._conn is not None:
            raise SumoError("this simulation is already running")
        for path in (self.net, *self.routes, *self.additional):
            if not path.is_file():
                raise SumoError(f"input file not found: {path}")
        self.outdir.mkdir(parents=True, exist_ok=True)
        home = sumo_home()
        os.environ.setdefault("SUMO_HOME", str(home))  # XML validation of inputs
        if (home / "data" / "proj").is_dir():
            os.environ.setdefault("PROJ_LIB", str(home / "data" / "proj"))  # geo-referenced nets
        cmd = self.command()
        if self.api == "libsumo":
            if _libsumo_owner is not None:
                raise SumoError(
                    "another libsumo simulation is running in this process; close it first "
                    "or use api='traci'"
                )
            import libsumo

            try:
                libsumo.start(cmd)
            except Exception as exc:
                raise SumoError(f"SUMO failed to start: {exc}\ncommand: {' '.join(cmd)}") from exc
            _libsumo_owner = self
            self._conn = libsumo
        else:
            self._conn = self._start_traci(cmd)

        try:
            c = self._conn
            c.simulation.subscribe(_SIM_VARS)
            self._time = float(c.simulation.getTime())
            self._min_expected = int(c.simulation.getMinExpectedNumber())
            self._departed = self._arrived = self._colliding_vehicles = 0
            self._tls_ids = tuple(c.trafficlight.getIDList())
            for tls in self._tls_ids:
                c.trafficlight.subscribe(tls, _TLS_VARS)
            self._tls_states = [c.trafficlight.getRedYellowGreenState(t) for t in self._tls_ids]
            self._tls_stale = False
        except BaseException:
            self.close()
            raise
        return self

    def _start_traci(self, cmd: list[str]) -> Any:
        """Launch SUMO as a child process and connect to it (like ``traci.start``, without its 1 s wait)."""
        import traci
        from sumolib.miscutils import getFreeSocketPort

        prefix = _layout_pin_prefix() if self.pin_layout else ()
        for _attempt in range(3):
            port = getFreeSocketPort()
            proc = subprocess.Popen([*prefix, *cmd, "--remote-port", str(port)], stdout=subprocess.DEVNULL)
            try:
                with contextlib.redirect_stdout(io.StringIO()):  # traci prints every retry
                    return traci.connect(
                        port,
                        numRetries=int(_CONNECT_TIMEOUT_S / _CONNECT_POLL_S),
                        proc=proc,
                        waitBetweenRetries=_CONNECT_POLL_S,
                    )
            except traci.exceptions.TraCIException:
                # SUMO exited before accepting: a bad input (reported on stderr) or the port was taken
                proc.wait()
            except Exception:
                proc.kill()
                proc.wait()
                raise
        raise SumoError(f"SUMO failed to start (exit status {proc.returncode}); command: {' '.join(cmd)}")

    def close(self) -> None:
        """End the simulation; SUMO then writes ``stats.xml`` and ``tripinfo.xml``. Idempotent."""
        global _libsumo_owner
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.close()
        finally:
            if _libsumo_owner is self:
                _libsumo_owner = None

    def __enter__(self) -> "Sumo":
        if self._conn is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _live(self) -> Any:
        if self._conn is None:
            raise SumoError("the simulation is not running (call start())")
        return self._conn

    @property
    def connection(self) -> Any:
        """The libsumo module or traci connection itself, for per-vehicle actuation (speed
        guidance, ``sim.guidance``); everything else reads through this class."""
        return self._live()

    # ---------------------------------------------------------------- time

    @property
    def time(self) -> float:
        """Current simulation time in seconds."""
        return self._time

    def step(self) -> None:
        """Advance one second and refresh every subscribed reading."""
        c = self._live()
        if self._time >= self.end:
            raise SumoError(f"the simulation reached its end time {self.end}")
        c.simulationStep()
        sim = c.simulation.getSubscriptionResults()
        self._time = float(sim[tc.VAR_TIME])
        self._min_expected = int(sim[tc.VAR_MIN_EXPECTED_VEHICLES])
        self._departed += int(sim[tc.VAR_DEPARTED_VEHICLES_NUMBER])
        self._arrived += int(sim[tc.VAR_ARRIVED_VEHICLES_NUMBER])
        self._colliding_vehicles += int(sim[tc.VAR_COLLIDING_VEHICLES_NUMBER])
        self._tls_stale = True
        self._zone_res = None
        if self._loop_ids:
            self._update_loops(c)

    def _zone_results(self, c: Any) -> dict:
        """This step's subscription results of every zone, fetched once per step (the call
        converts every zone's readings: on grid4x4 with box cameras, 5,760 zones)."""
        if self._zone_res is None:
            self._zone_res = c.lanearea.getAllSubscriptionResults()
        return self._zone_res

    def done(self) -> bool:
        """True once every vehicle has arrived (after begin) or the end time is reached."""
        return (self._time > self.begin and self._min_expected == 0) or self._time >= self.end

    def running(self) -> int:
        """Vehicles in the network now (departed and not yet arrived)."""
        return self._departed - self._arrived

    def arrived_total(self) -> int:
        """Vehicles that have arrived since begin."""
        return self._arrived

    def departed_total(self) -> int:
        """Vehicles that have departed since begin."""
        return self._departed

    def collisions_so_far(self) -> int:
        """Collisions since begin: vehicles involved in collisions / 2 (each involves two)."""
        return self._colliding_vehicles // 2

    # ---------------------------------------------------------------- detectors

    def setup_detectors(self, loop_ids: Sequence[str], camera_zone_ids: Sequence[str],
                        exit_zones: int | None = None) -> None:
        """Subscribe to the given loops and lane-area zones; readings follow this order.

        ``exit_zones``: only the first that many zones report movements (``read_zone_exits``;
        default all). The others (box cameras inside junctions) are read for their counts only,
        which keeps a network with thousands of zones from fetching every vehicle id of each,
        every step."""
        c = self._live()
        known_loops = set(c.inductionloop.getIDList())
        known_zones = set(c.lanearea.getIDList())
        missing = [i for i in loop_ids if i not in known_loops] + [i for i in camera_zone_ids if i not in known_zones]
        if missing:
            raise SumoError(f"{len(missing)} detectors not in the simulation (first: {missing[:3]})")
        for i in self._loop_ids:
            c.inductionloop.unsubscribe(i)
        for i in self._zone_ids:
            c.lanearea.unsubscribe(i)
        self._loop_ids = tuple(loop_ids)
        self._zone_ids = tuple(camera_zone_ids)
        self._zone_res = None
        n_exit = len(self._zone_ids) if exit_zones is None else max(0, min(int(exit_zones), len(self._zone_ids)))
        self._exit_ids = self._zone_ids[:n_exit]
        for i in self._loop_ids:
            c.inductionloop.subscribe(i, _LOOP_VARS)
        for k, i in enumerate(self._zone_ids):
            c.lanearea.subscribe(i, _ZONE_VARS if k < n_exit else _ZONE_COUNT_VARS)
        n = len(self._loop_ids)
        empty: frozenset[str] = frozenset()
        self._zone_prev = [empty] * len(self._exit_ids)
        self._exit_pending: dict[str, tuple[int, float]] = {}
        # vehicles on the loops now count as already seen: a count needs a crossing
        res = c.inductionloop.getAllSubscriptionResults() if n else {}
        self._loop_prev = [frozenset(res[i][tc.LAST_STEP_VEHICLE_ID_LIST]) if i in res else empty for i in self._loop_ids]
        self._loop_count = np.zeros(n, dtype=np.int32)
        self._loop_occ = np.zeros(n, dtype=np.float64)
        self._loop_speed = np.full(n, np.nan, dtype=np.float64)

    def _update_loops(self, c: Any) -> None:
        res = c.inductionloop.getAllSubscriptionResults()
        t = self._time
        t0 = t - STEP_S
        count = self._loop_count
        occupancy = self._loop_occ
        speed = self._loop_speed
        prev_all = self._loop_prev
        for k, lid in enumerate(self._loop_ids):
            r = res[lid]
            ids = r[tc.LAST_STEP_VEHICLE_ID_LIST]
            prev = prev_all[k]
            if not ids:
                if prev:
                    prev_all[k] = frozenset()
                count[k] = 0
                occupancy[k] = 0.0
                speed[k] = math.nan
                continue
            now = frozenset(ids)
            prev_all[k] = now
            new = now - prev
            occ = r[tc.LAST_STEP_OCCUPANCY] / 100.0
            carried = len(now) - len(new)  # vehicles already on the loop when the step began
            exact = True
            if carried:
                tsd = r[tc.LAST_STEP_TIME_SINCE_DETECTION]
                if new or carried > 1:
                    exact = False
                elif tsd > 0.0:
                    # the one vehicle left during the step, at t - tsd; SUMO's occupancy misses it
                    if tsd < STEP_S:
                        occ += (STEP_S - tsd) / STEP_S
                    else:
                        exact = False
                elif occ < 1.0 - 1e-9:
                    exact = False  # still "on" yet not covering the step: it left sideways
            elif occ <= 0.0:
                exact = False  # entered yet no occupancy: left the lane over the loop
            if not exact:
                occ = self._loop_occupancy_from_data(c, lid, t0, t)
            count[k] = len(new)
            occupancy[k] = min(max(occ, 0.0), 1.0)
            v = r[tc.LAST_STEP_MEAN_SPEED]
            speed[k] = v if v >= 0.0 else math.nan

    def _loop_occupancy_from_data(self, c: Any, loop_id: str, t0: float, t: float) -> float:
        """Exact occupied fraction of ``[t0, t]`` from the loop's per-vehicle entry/leave times."""
        self.exact_occupancy_fetches += 1
        covered = 0.0
        for _vid, _length, entry, leave, _vtype in c.inductionloop.getVehicleData(loop_id):
            until = t if leave < 0.0 else min(leave, t)
            covered += max(0.0, until - max(entry, t0))
        return covered / (t - t0)

    def read_loops(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(count int32[n], occupancy float64[n] in 0..1, speed_mps float64[n])`` of the last step.

        In ``setup_detectors`` order; speed is NaN where no vehicle entered. Arrays are copies.
        """
        self._live()
        return self._loop_count.copy(), self._loop_occ.copy(), self._loop_speed.copy()

    def read_cameras(self) -> tuple[np.ndarray, np.ndarray]:
        """``(vehicles int32[n_zones], halting int32[n_zones])`` in each zone now."""
        c = self._live()
        n = len(self._zone_ids)
        vehicles = np.zeros(n, dtype=np.int32)
        halting = np.zeros(n, dtype=np.int32)
        if n:
            res = self._zone_results(c)
            for k, zid in enumerate(self._zone_ids):
                r = res[zid]
                vehicles[k] = r[tc.LAST_STEP_VEHICLE_NUMBER]
                halting[k] = r[tc.LAST_STEP_VEHICLE_HALTING_NUMBER]
            # SUMO's E2 halting count can include a vehicle that left the zone during the step
            np.minimum(halting, vehicles, out=halting)
        return vehicles, halting

    def read_zone_exits(self) -> list[tuple[int, str]]:
        """Movements seen by the camera zones: ``(zone index, edge id)`` for each vehicle that
        left a zone and has since reached a normal edge (what a camera that classifies turns
        reports: the road a vehicle leaving its view turned into). Call once per step.

        A vehicle that left a zone is looked up (one vehicle call each) until it is off the
        junction; a vehicle that left sideways into the next lane of the same road reports that
        road, which the caller ignores.
        """
        c = self._live()
        out: list[tuple[int, str]] = []
        if not self._exit_ids:
            return out
        res = self._zone_results(c)
        pending = self._exit_pending
        t = self._time
        for k, zid in enumerate(self._exit_ids):
            ids = res[zid][tc.LAST_STEP_VEHICLE_ID_LIST]
            prev = self._zone_prev[k]
            if not ids and not prev:
                continue
            now = frozenset(ids)
            for vid in prev - now:
                pending[vid] = (k, t)
            self._zone_prev[k] = now
        for vid, (k, t_left) in list(pending.items()):
            try:
                road = c.vehicle.getRoadID(vid)
            except Exception:  # arrived or teleported: libsumo and traci raise their own errors
                del pending[vid]
                continue
            if road and not road.startswith(":"):
                out.append((k, road))
                del pending[vid]
            elif t - t_left > _EXIT_PENDING_S:
                del pending[vid]
        return out

    # ---------------------------------------------------------------- signals

    def tls_ids(self) -> tuple[str, ...]:
        """Ids of all signals, in the order :meth:`tls_states` uses."""
        self._live()
        return self._tls_ids

    def signal_order(self, tls_ids: Sequence[str]) -> list[int]:
        """Positions in :meth:`tls_states` of the signals ``tls_ids``, in that order."""
        order = {tls: k for k, tls in enumerate(self.tls_ids())}
        missing = [t for t in tls_ids if t not in order]
        if missing:
            raise SumoError(f"signals unknown to SUMO ({self.net.name}): {missing[:5]}")
        return [order[t] for t in tls_ids]

    def tls_states(self) -> list[str]:
        """Current state string of every signal (SUMO link order), including states just set."""
        c = self._live()
        if self._tls_stale:
            res = c.trafficlight.getAllSubscriptionResults()
            self._tls_states = [res[t][tc.TL_RED_YELLOW_GREEN_STATE] for t in self._tls_ids]
            self._tls_stale = False
        return list(self._tls_states)

    def set_tls_state(self, tls_id: str, state: str) -> None:
        """Show ``state`` (one character per link) at signal ``tls_id`` from now on."""
        c = self._live()
        states = self.tls_states() if self._tls_stale else self._tls_states
        try:
            k = self._tls_ids.index(tls_id)
        except ValueError:
            raise SumoError(f"unknown signal {tls_id!r}") from None
        if len(state) != len(states[k]):
            raise SumoError(f"signal {tls_id!r} has {len(states[k])} links, state {state!r} has {len(state)}")
        c.trafficlight.setRedYellowGreenState(tls_id, state)
        self._tls_states[k] = state

