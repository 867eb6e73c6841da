"""The safety stage: whatever a controller asks, the signals shown stay safe.

Controllers name a target phase per signal. This stage moves each signal link towards it one
tick at a time, link by link, under four interlocks:

- a green lasts at least ``min_green_s``;
- green ends only through yellow, which lasts ``yellow_s``;
- a link turns green only when it has been red for ``red_clearance_s`` (so a yellow never
  turns straight back to green) and every conflicting link has been red for its clearance:
  ``red_clearance_s``, or, for a turn whose green ended while it was giving way, the longer
  time the network says a vehicle waiting inside the junction needs to get out
  (``CompiledNetwork.link_clearance_s``);
- so no two conflicting links are ever green (or green and yellow) together;
- a link that gives way to another when both are green (a permissive left turn) shows a
  protected ``G`` only while the other has been red for the clearance time (and, with box
  cameras, while no box sees a vehicle of the other left on its path: a vehicle stuck inside the
  junction when its stream turned red is not one a protected turner looks out for); the other may then
  start only after the turn has gone through yellow and red clearance (or together with it), so
  no vehicle that entered on a protected green meets oncoming traffic released under it;
- with box cameras (``box``, vehicles on each link's path through the junction, NaN unknown): a
  link does not turn green while a box sees a vehicle on the path of a link, not green, whose
  vehicles stand in its path when they wait or are held up inside the junction
  (``CompiledNetwork.link_intruder_idx``: turners waiting at their internal stop, the network's
  ``intrusions``, and any car standing on a path that passes close to this one away from where
  they cross, its ``stand_ins``), nor while a box sees a vehicle of a conflicting link, not
  green, halting in its way (``CompiledNetwork.link_cross_idx``, the network's
  ``crossing_zones``: held up mid-junction, short of where the paths cross, where SUMO lets
  the other stream drive into it); a phase held back only so counts as shown once the fixed
  clearances are done; a box that sees a path empty waives the long clearance and
  the pass-time hold below (``_red_cleared``); and a turn is not green while a stream it gives
  way to is in its yellow or red clearance with a box seeing a vehicle on its path (it ends,
  once past its minimum green, and does not start: ``_straggler``): a vehicle of that stream
  held up inside the junction, restarting as its light ends, is one that turners entering on a
  permissive green misjudge (cologne3, where one drove into such a vehicle);
- a permissive turn that ends while the streams it gives way to end too stays green until they
  have been red for their pass time (``CompiledNetwork.link_yield_pass_s``: the last vehicle
  that ran their yellow has passed where the turners wait), so the turners waiting inside the junction leave on their own green
  behind it; one that ends while those streams
  stay takes them with it (through yellow, once their minimum green is over), so vehicles
  waiting inside the junction can get out.

A signal an operator flashes (``Safety.set_flash``) wants no phase: its greens end through
yellow as above, and once none of its links is green or yellow they all flash (``FLASH``, SUMO
``o``) together; when the flash ends they all turn red together and wait the clearance before
any green (``_flash``, run after the main kernel). A FLASH link is never red, so nothing
conflicting with it can start.

Not a rule, measured (28 Nov, ingolstadt21, default seed, mean time loss and teleports, against
93.4 s and 19): holding a link red while a camera that sees its whole exit lane counts it full
of halting vehicles, so that none stops inside the junction behind a full exit, made the
gridlock worse: 331.5 s and 156 (480.2 s and 351 when held only while every link out of the
full exit is red); only for links whose vehicles stand in other links' way, 152.1 s and 39,
and those only while the exit's links are red, 137.3 s and 40.

Links green in both the old and the new phase simply stay green. A target the signal cannot
reach yet (a conflicting green still in its minimum) is approached as far as is safe and
reached on a later tick. The kernel works on the links of every signal in one pass; the state
it keeps is per link: ``link_state`` (RED, YELLOW, GREEN) and ``link_since_ns``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from network.compiled import CompiledNetwork, csr

RED, YELLOW, GREEN = np.int8(0), np.int8(1), np.int8(2)
FLASH = np.int8(3)  # flashing (SUMO ``o``): an operator's flash override, see ``_flash``


@dataclass(frozen=True)
class SafetyConfig:
    min_green_s: float = 5.0
    yellow_s: float = 3.0
    red_clearance_s: float = 1.0

    def __post_init__(self) -> None:
        if not (self.min_green_s >= 0 and self.yellow_s > 0 and self.red_clearance_s >= 0):
            raise ValueError(f"bad safety timings: {self}")


@njit(cache=True)
def _enforce(now_ns, target_phase, tls_link_ptr, tls_phase_ptr, phase_link_ptr, phase_link_idx,
             link_conflict_ptr, link_conflict_idx, link_yield_ptr, link_yield_idx, link_yielder_ptr,
             link_yielder_idx, min_green_ns, yellow_ns, red_ns, clear_ns, exit_ns, link_state, link_since_ns,
             link_long_clear, want, active_phase, active_since_ns, box, intruder_ptr, intruder_idx,
             cross_ptr, cross_idx, cross, held):
    changes = 0
    for t in range(tls_link_ptr.size - 1):
        lo = tls_link_ptr[t]
        hi = tls_link_ptr[t + 1]
        for link in range(lo, hi):
            want[link] = False
            held[link] = False
        p = target_phase[t]
        if p < tls_phase_ptr[t] or p >= tls_phase_ptr[t + 1]:
            p = -1  # not one of this signal's phases: hold what is safe, start nothing
        if p >= 0:
            for k in range(phase_link_ptr[p], phase_link_ptr[p + 1]):
                want[phase_link_idx[k]] = True
        for link in range(lo, hi):
            age = now_ns - link_since_ns[link]
            s = link_state[link]
            straggler = s == GREEN and age >= min_green_ns and _straggler(
                now_ns, link, link_yield_ptr, link_yield_idx, link_state, link_since_ns, clear_ns, box)
            if s == GREEN and age >= min_green_ns and (not want[link] or straggler or _blocks_priority(
                    link, link_yield_ptr, link_yield_idx, link_state, want)):
                # (a wanted protected turn still ends, through yellow, before the stream it
                # gives way to starts)
                giving_way = _giving_way(now_ns, link, link_yield_ptr, link_yield_idx, link_state,
                                         link_since_ns, red_ns)
                if not straggler and not box[link] == 0.0 and _priority_ending(now_ns, link, link_yield_ptr, link_yield_idx,
                                                             link_state, link_since_ns, exit_ns, want):
                    continue  # the streams it gives way to end first: it ends once their last vehicle is out
                if giving_way and not _priority_can_end(now_ns, link, link_yield_ptr, link_yield_idx,
                                                        link_state, link_since_ns, min_green_ns):
                    continue  # the stream it gives way to is in its minimum green: end together later
                if giving_way:
                    # a permissive turn ends together with the greens it gives way to, or
                    # turners waiting inside the junction could never get out
                    for k in range(link_yield_ptr[link], link_yield_ptr[link + 1]):
                        b = link_yield_idx[k]
                        if link_state[b] == GREEN and not _yields_to(b, link, link_yield_ptr, link_yield_idx):
                            link_long_clear[b] = _giving_way(now_ns, b, link_yield_ptr, link_yield_idx,
                                                             link_state, link_since_ns, red_ns)
                            link_state[b] = YELLOW
                            link_since_ns[b] = now_ns
                            changes += 1
                link_long_clear[link] = giving_way
                link_state[link] = YELLOW
                link_since_ns[link] = now_ns
                changes += 1
            elif s == YELLOW and age >= yellow_ns:
                link_state[link] = RED
                link_since_ns[link] = now_ns
                changes += 1
        for link in range(lo, hi):
            if link_state[link] != RED or not want[link] or now_ns - link_since_ns[link] < red_ns:
                continue  # (a link's own red also lasts the clearance time: no yellow -> green)
            if _waits_for_priority(link, link_yield_ptr, link_yield_idx, link_state, want):
                continue  # a permissive turn starts with, or after, the stream it gives way to
            if _straggler(now_ns, link, link_yield_ptr, link_yield_idx, link_state, link_since_ns, clear_ns, box):
                continue  # not while a vehicle of a stream it gives way to is left inside it
            clear = True
            for k in range(link_conflict_ptr[link], link_conflict_ptr[link + 1]):
                c = link_conflict_idx[k]
                if not _red_cleared(now_ns, c, link_state, link_since_ns, link_long_clear, clear_ns, red_ns, box):
                    clear = False
                    break
            for k in range(link_yielder_ptr[link], link_yielder_ptr[link + 1]):
                a = link_yielder_idx[k]  # a gives way to this link: it must not be mid-protected-green
                if link_state[a] == GREEN and link_since_ns[a] == now_ns:
                    continue  # starting together with this link: permissive from the first second
                if not _red_cleared(now_ns, a, link_state, link_since_ns, link_long_clear, clear_ns, red_ns, box):
                    clear = False
                    break
            if clear and (_stood_in(link, link_state, box, intruder_ptr, intruder_idx) or _in_the_way(
                    link, link_state, cross_ptr, cross_idx, cross)):
                held[link] = True  # only a vehicle a box sees in its way holds it
                clear = False
            if clear:
                link_state[link] = GREEN
                link_since_ns[link] = now_ns
                changes += 1
                for k in range(link_conflict_ptr[link], link_conflict_ptr[link + 1]):
                    held[link_conflict_idx[k]] = False  # (not held by a box any more, but by this green)
        reached = p >= 0
        if p >= 0:
            for k in range(phase_link_ptr[p], phase_link_ptr[p + 1]):
                link = phase_link_idx[k]
                # (a link held only by a vehicle standing in its way does not keep the phase from
                # counting as shown: that vehicle may stand there for minutes, behind a full
                # exit, and a controller waiting for the phase would starve every other stream)
                if link_state[link] != GREEN and not (held[link] and (
                        _stood_in(link, link_state, box, intruder_ptr, intruder_idx)
                        or _in_the_way(link, link_state, cross_ptr, cross_idx, cross))):
                    reached = False  # (a link started after it in this pass may have let it go)
                    break
        if reached:
            if active_phase[t] != p:
                active_phase[t] = p
                active_since_ns[t] = now_ns
        elif active_phase[t] >= 0:
            active_phase[t] = -1
            active_since_ns[t] = now_ns
    return changes


@njit(cache=True)
def _flash(now_ns, flash, tls_link_ptr, link_state, link_since_ns, link_long_clear):
    """The flash interlock, run after ``_enforce`` (which treats a flashing signal as wanting no
    phase, so its greens end through yellow after their minimum green, and which never touches
    a FLASH link nor starts a green beside one).

    - ``flash[t]`` set: once no link of signal ``t`` is green or yellow (every yellow has run its
      full time), all its links flash together;
    - ``flash[t]`` clear while its links flash: all turn red together, marked for the long
      clearance, so every green afterwards waits for a full all-red clearance.

    Returns the number of signals still asking for, or showing, flash."""
    busy = 0
    for t in range(flash.size):
        lo = tls_link_ptr[t]
        hi = tls_link_ptr[t + 1]
        if hi == lo:
            continue
        if flash[t]:
            busy += 1
            if link_state[lo] == FLASH:
                continue
            quiet = True
            for link in range(lo, hi):
                if link_state[link] == GREEN or link_state[link] == YELLOW:
                    quiet = False
                    break
            if quiet:
                for link in range(lo, hi):
                    link_state[link] = FLASH
                    link_since_ns[link] = now_ns
        elif link_state[lo] == FLASH:
            for link in range(lo, hi):
                link_state[link] = RED
                link_since_ns[link] = now_ns
                link_long_clear[link] = True
    return busy


@njit(cache=True)
def _stood_in(link, link_state, box, intruder_ptr, intruder_idx):
    """Whether a box camera sees a vehicle on the path of a link, not green, whose vehicles
    stand in ``link``'s path when they wait or are held up inside the junction."""
    for k in range(intruder_ptr[link], intruder_ptr[link + 1]):
        a = intruder_idx[k]
        if link_state[a] != GREEN and box[a] > 0.0:
            return True
    return False


@njit(cache=True)
def _in_the_way(link, link_state, cross_ptr, cross_idx, cross):
    """Whether a box camera sees a vehicle of a conflicting link, not green, halting where it is
    in ``link``'s way (a crossing zone, ``link_cross_idx``): held up inside the junction, behind
    a vehicle stuck at a full exit, it may stand there long after its clearance."""
    for k in range(cross_ptr[link], cross_ptr[link + 1]):
        if cross[k] > 0.0 and link_state[cross_idx[k]] != GREEN:
            return True
    return False


@njit(cache=True)
def _red_cleared(now_ns, link, link_state, link_since_ns, link_long_clear, clear_ns, red_ns, box):
    """Whether ``link`` has been red for its clearance: the long one if it ended giving way,
    unless a box camera that watches the link's path through the junction sees it empty
    (``box[link] == 0``): nothing of it is left in the junction, the red clearance is enough.
    A box never asks for more than these fixed rules (a vehicle standing inside behind a full
    exit would otherwise hold every conflicting stream, and jam the network)."""
    need = clear_ns[link] if link_long_clear[link] and not box[link] == 0.0 else red_ns
    return link_state[link] == RED and now_ns - link_since_ns[link] >= need


@njit(cache=True)
def _giving_way(now_ns, link, link_yield_ptr, link_yield_idx, link_state, link_since_ns, red_ns):
    """Whether ``link`` is green only by giving way (a foe it yields to is not red, or only just
    red): its vehicles may then be waiting inside the junction when it ends."""
    for k in range(link_yield_ptr[link], link_yield_ptr[link + 1]):
        b = link_yield_idx[k]
        if link_state[b] != RED or now_ns - link_since_ns[b] < red_ns:
            return True
    return False


@njit(cache=True)
def _yields_to(a, b, link_yield_ptr, link_yield_idx):
    for k in range(link_yield_ptr[a], link_yield_ptr[a + 1]):
        if link_yield_idx[k] == b:
            return True
    return False


@njit(cache=True)
def _priority_can_end(now_ns, link, link_yield_ptr, link_yield_idx, link_state, link_since_ns, min_green_ns):
    """Whether every green that ``link`` gives way to (but not back) is past its minimum green."""
    for k in range(link_yield_ptr[link], link_yield_ptr[link + 1]):
        b = link_yield_idx[k]
        if (link_state[b] == GREEN and now_ns - link_since_ns[b] < min_green_ns
                and not _yields_to(b, link, link_yield_ptr, link_yield_idx)):
            return False
    return True


@njit(cache=True)
def _priority_ending(now_ns, link, link_yield_ptr, link_yield_idx, link_state, link_since_ns, exit_ns, want):
    """Whether a stream ``link`` gives way to (but not back) is ending too (not wanted, and not
    yet red for its pass time ``exit_ns[k]``, per yield entry). The turn then keeps its green until
    the last vehicle that ran that stream's yellow has passed where the turners wait: turners waiting inside it leave behind that vehicle,
    on their own green, instead of both moving on yellow or the turn moving on a stream that has
    just turned red (on cologne3 both collided, where SUMO's own programs did not).

    An empty box waives the hold (the caller's ``box[link] == 0``), so turn and stream end
    together; a turner arriving then may enter late in the shared yellow and meet the stream's
    last yellow runner (cologne3 ``--sumo-seed 1``, 27436 s, the turner at 8.3 m/s). Waiving it
    only where the turn's approach cameras saw no moving vehicle and its stop-bar loops counted
    none (28 Nov, one run each, mean time loss) removed that collision (that run 23.36 -> 25.66 s)
    but cost ingolstadt1 14.35 -> 17.58 s, cologne1 25.46 -> 28.15 (with a collision at its
    signal, where main has none), cologne8 19.27 -> 21.47,
    cologne3 25.22 -> 25.50 (ingolstadt7 30.07 -> 29.24). Not kept: on cologne3 SUMO's actuated
    program collides at signals 3 times as often (``benchmarks.collisions``, SUMO seeds 1-4)."""
    for k in range(link_yield_ptr[link], link_yield_ptr[link + 1]):
        b = link_yield_idx[k]
        if (exit_ns[k] > 0 and not want[b] and (link_state[b] != RED or now_ns - link_since_ns[b] < exit_ns[k])
                and not _yields_to(b, link, link_yield_ptr, link_yield_idx)):
            return True
    return False


@njit(cache=True)
def _blocks_priority(link, link_yield_ptr, link_yield_idx, link_state, want):
    """Whether green ``link`` gives way to a wanted link still red (which it keeps from starting)."""
    for k in range(link_yield_ptr[link], link_yield_ptr[link + 1]):
        b = link_yield_idx[k]
        if want[b] and link_state[b] == RED:
            return True
    return False


@njit(cache=True)
def _straggler(now_ns, link, link_yield_ptr, link_yield_idx, link_state, link_since_ns, clear_ns, box):
    """Whether a stream ``link`` gives way to (but not back) is in its yellow or red clearance
    while a box camera sees a vehicle on its path: a vehicle left inside the junction (it may
    have stood there, held up) that turners entering now might misjudge.

    Bounded by the clearance on purpose: a bound of 15 s after the stream's red kept turns
    back behind vehicles stuck at blocked exits (ingolstadt21 with box cameras: 94.2 s mean time
    loss, 7 teleports and a collision of a turn restarting with its stream; with this bound
    79.3 s, none)."""
    for k in range(link_yield_ptr[link], link_yield_ptr[link + 1]):
        b = link_yield_idx[k]
        if (link_state[b] != GREEN and box[b] > 0.0
                and (link_state[b] == YELLOW or now_ns - link_since_ns[b] < clear_ns[b])
                and not _yields_to(b, link, link_yield_ptr, link_yield_idx)):
            return True
    return False


@njit(cache=True)
def _waits_for_priority(link, link_yield_ptr, link_yield_idx, link_state, want):
    """Whether red ``link`` gives way to a wanted link not started yet (unless they give way to
    each other: then they start together)."""
    for k in range(link_yield_ptr[link], link_yield_ptr[link + 1]):
        b = link_yield_idx[k]
        if want[b] and link_state[b] == RED and not _yields_to(b, link, link_yield_ptr, link_yield_idx):
            return True
    return False


class Safety:
    """Per-link signal state and the interlocks that move it. One instance per engine."""

    def __init__(self, net: CompiledNetwork, config: SafetyConfig | None = None, start_ns: int = 0):
        self.net = net
        self.config = config or SafetyConfig()
        n_links, n_tls = net.n_links, net.n_tls
        # all red since long enough that the first green need not wait for clearance
        self.link_state = np.full(n_links, RED, dtype=np.int8)
        self.link_since_ns = np.full(n_links, start_ns - 3_600 * 10**9, dtype=np.int64)
        self.active_phase = np.full(n_tls, -1, dtype=np.int32)
        self.active_since_ns = np.full(n_tls, start_ns, dtype=np.int64)
        self._want = np.zeros(n_links, dtype=np.bool_)
        self._held = np.zeros(n_links, dtype=np.bool_)  # red, wanted, held back only by what boxes see
        self._no_box = np.full(n_links, np.nan)
        self._box = self._no_box
        self._no_cross = np.full(net.link_cross_idx.size, np.nan)
        self._cross = self._no_cross
        self._long_clear = np.zeros(n_links, dtype=np.bool_)  # ended while giving way
        self._yielder_ptr, self._yielder_idx = yielders(net)
        # what a conflicting link waits after this one turns red: the configured red clearance,
        # or longer where the junction's geometry needs it (vehicles waiting inside it)
        self._clear_ns = np.round(np.maximum(self.config.red_clearance_s, net.link_clearance_s) * 1e9).astype(np.int64)
        # how long a stream's last yellow runner may be in the junction after its red
        # (0: the turn waits at its stop line, not inside the junction: no hold)
        self._exit_ns = np.where(net.link_yield_pass_s > 0, np.round(np.maximum(
            self.config.red_clearance_s, net.link_yield_pass_s) * 1e9), 0).astype(np.int64)
        self._now_ns = start_ns
        self._chars = np.zeros(n_links, dtype=np.uint8)
        # per signal, whether an operator asked it to flash (``engine.overrides`` sets it)
        self.flash = np.zeros(n_tls, dtype=np.bool_)
        self._flash_busy = False

    def set_flash(self, t: int, on: bool) -> None:
        """Ask signal ``t`` to go to flash (through yellow) or to come back (through all-red)."""
        self.flash[t] = on
        self._flash_busy = True

    def enforce(self, target_phase: np.ndarray, now_ns: int, box: np.ndarray | None = None,
                cross: np.ndarray | None = None) -> int:
        """Move every signal towards ``target_phase`` (int32[n_tls], -1 = none); returns changes.
        ``box`` (float64[n_links]): vehicles a box camera sees on each link's path through its
        junction, NaN where none watches it (then the fixed clearances apply). ``cross``
        (float64, per entry of ``link_cross_idx``): halting vehicles a box camera sees on the
        stretch of the crossing link's path that is in the link's way, NaN where none watches it."""
        c, net = self.config, self.net
        self._now_ns = now_ns
        self._box = self._no_box if box is None else box
        self._cross = self._no_cross if cross is None else cross
        if self._flash_busy:  # a flashing signal (or one going to flash) wants no phase
            target_phase = np.where(self.flash, np.int32(-1), target_phase).astype(np.int32)
        changes = _enforce(
            np.int64(now_ns), target_phase, net.tls_link_ptr, net.tls_phase_ptr, net.phase_link_ptr,
            net.phase_link_idx, net.link_conflict_ptr, net.link_conflict_idx, net.link_yield_ptr,
            net.link_yield_idx, self._yielder_ptr, self._yielder_idx,
            np.int64(round(c.min_green_s * 1e9)), np.int64(round(c.yellow_s * 1e9)),
            np.int64(round(c.red_clearance_s * 1e9)), self._clear_ns, self._exit_ns, self.link_state, self.link_since_ns,
            self._long_clear, self._want,
            self.active_phase, self.active_since_ns, self._box,
            net.link_intruder_ptr, net.link_intruder_idx, net.link_cross_ptr, net.link_cross_idx, self._cross,
            self._held,
        )
        if self._flash_busy:
            self._flash_busy = _flash(np.int64(now_ns), self.flash, net.tls_link_ptr, self.link_state,
                                      self.link_since_ns, self._long_clear) > 0
        return changes

    def state_chars(self) -> bytes:
        """SUMO state characters of every link: y, r, s (stop), G, or g for a green that gives
        way to a foe showing green or yellow, or red for less than the clearance time (vehicles
        of a yellow foe may still be crossing), or whose path a box camera sees a vehicle on (the
        box readings of the last ``enforce``)."""
        net = self.net
        _link_chars(np.int64(self._now_ns), self._clear_ns, self.link_state,
                    self.link_since_ns, net.link_yield_ptr, net.link_yield_idx, net.link_permissive,
                    net.link_stop_on_red, self._chars, self._box)
        return self._chars.tobytes()

    def state_strings(self) -> list[str]:
        """Per signal, its SUMO state string."""
        chars = self.state_chars().decode()
        ptr = self.net.tls_link_ptr
        return [chars[ptr[t] : ptr[t + 1]] for t in range(self.net.n_tls)]


@njit(cache=True)
def _link_chars(now_ns, clear_ns, link_state, link_since_ns, yield_ptr, yield_idx, permissive, stop_on_red, out, box):
    for link in range(link_state.size):
        s = link_state[link]
        if s == GREEN:
            c = 71  # G
            if permissive[link]:
                c = 103  # g
            else:
                for k in range(yield_ptr[link], yield_ptr[link + 1]):
                    b = yield_idx[k]
                    if link_state[b] != RED or now_ns - link_since_ns[b] < clear_ns[b] or box[b] > 0.0:
                        c = 103
                        break
        elif s == YELLOW:
            c = 121  # y
        elif s == FLASH:
            c = 111  # o
        elif stop_on_red[link]:
            c = 115  # s
        else:
            c = 114  # r
        out[link] = c


def yielders(net) -> tuple[np.ndarray, np.ndarray]:
    """CSR over links: the links that give way to each (the reverse of ``link_yield``)."""
    rows: list[list[int]] = [[] for _ in range(net.n_links)]
    for a in range(net.n_links):
        for b in net.link_yield_idx[net.link_yield_ptr[a]:net.link_yield_ptr[a + 1]]:
            rows[int(b)].append(a)
    return csr(rows)
