"""Messages on the adapter, operator and feed sockets (msgpack, tagged structs).

Adapters (DEALER -> engine ROUTER 7702) speak for one or more signals (a signal is named by
its SUMO traffic-light id, the "junction" of the protocol). An adapter says ``Hello`` per
signal; the engine answers ``Welcome`` (or a refusal with its reason), then sends a
``Command`` for every signal every tick: the state to show, link by link, in SUMO's letters.
Adapters send ``Feedback`` with what they actually show and ``Heartbeat`` when idle.

Operators (DEALER/REQ -> engine ROUTER 7704) send ``Request`` and get one ``Reply``.
The feed (PUB 7703) sends two frames: the topic, then a msgpack map with a ``seq``.
"""

from __future__ import annotations

from typing import Any

import msgspec


class SignalGroup(msgspec.Struct, frozen=True, array_like=True):
    """One signal group of a cabinet (protocol v2): its links and the timings the cabinet enforces."""

    name: str
    links: list[int]  # local SUMO link indices
    min_green_s: float
    yellow_s: float
    red_clearance_s: float


class Hello(msgspec.Struct, tag="hello", frozen=True):
    junction: str
    n_links: int
    version: int = 1
    # version 2 (engine.adapter): the cabinet's groups, conflict table and current display
    groups: list[SignalGroup] = []
    conflicts: list[tuple[int, int]] = []  # local link pairs never green (or green and yellow) together
    heartbeat_s: float = 0.0  # the adapter's heartbeat interval
    fallback_after_s: float = 0.0  # the adapter runs its local plan after this long without the engine
    ts_ns: int = 0  # when ``state`` was shown
    state: str = ""  # what the signal shows now ("" unknown)
    age_ms: list[int] = []  # per link, how long it has shown its current colour (red/yellow/green)


class Welcome(msgspec.Struct, tag="welcome", frozen=True):
    junction: str
    accepted: bool
    reason: str = ""
    heartbeat_s: float = 0.0  # the engine's heartbeat interval (v2)
    offline_after_s: float = 0.0  # the engine marks the junction offline after this long without a word (v2)


COMMAND_MODES = ("run", "hold", "force_off", "plan", "flash")


class Command(msgspec.Struct, tag="command", frozen=True):
    junction: str
    ts_ns: int
    seq: int
    state: str  # one SUMO signal letter per link: G g y r s
    phase: int = -1  # the phase the engine is moving towards (signal-local index), -1 none
    # version 2 (engine.adapter); see docs/protocol.md
    mode: str = "run"  # run | hold | force_off | plan | flash
    next_state: str = ""  # the stage that follows (its letters), "" unknown
    min_end_ns: int = 0  # earliest end of the greens shown now that next_state ends (0 unknown)
    max_end_ns: int = 0  # latest end of those greens (0 unknown)
    plan: str = ""  # mode plan: the local plan to run ("" the cabinet's default)


class Feedback(msgspec.Struct, tag="feedback", frozen=True):
    junction: str
    ts_ns: int
    state: str
    # version 2 (engine.adapter)
    mode: str = ""  # engine | hold | force_off | plan | flash | fallback | start
    seq: int = -1  # the command this answers (-1 none)
    refused: str = ""  # why that command was refused ("" applied)
    refused_total: int = 0  # commands this adapter refused so far for this junction


class Heartbeat(msgspec.Struct, tag="heartbeat", frozen=True):
    ts_ns: int
    junction: str = ""


AdapterMessage = Hello | Feedback | Heartbeat
EngineToAdapter = Welcome | Command | Heartbeat


class Request(msgspec.Struct, frozen=True):
    op: str
    args: dict[str, Any] = {}


class Reply(msgspec.Struct, frozen=True):
    ok: bool
    result: dict[str, Any] = {}
    error: str = ""


encoder = msgspec.msgpack.Encoder()
adapter_decoder = msgspec.msgpack.Decoder(AdapterMessage)
engine_to_adapter_decoder = msgspec.msgpack.Decoder(EngineToAdapter)
request_decoder = msgspec.msgpack.Decoder(Request)
reply_decoder = msgspec.msgpack.Decoder(Reply)
