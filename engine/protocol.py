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


class Hello(msgspec.Struct, tag="hello", frozen=True):
    junction: str
    n_links: int
    version: int = 1


class Welcome(msgspec.Struct, tag="welcome", frozen=True):
    junction: str
    accepted: bool
    reason: str = ""


class Command(msgspec.Struct, tag="command", frozen=True):
    junction: str
    ts_ns: int
    seq: int
    state: str  # one SUMO signal letter per link: G g y r s
    phase: int = -1  # the phase the engine is moving towards (signal-local index), -1 none


class Feedback(msgspec.Struct, tag="feedback", frozen=True):
    junction: str
    ts_ns: int
    state: str


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
