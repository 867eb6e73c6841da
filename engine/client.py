"""Clients of the engine's sockets: what an operator tool or a device uses."""

from __future__ import annotations

import zmq

from engine import protocol as P


class OperatorError(RuntimeError):
    """The engine did not answer, or answered with an error."""


class OperatorClient:
    """A DEALER on the operator socket; one request, one reply, with a timeout."""

    def __init__(self, endpoint: str, timeout_s: float = 3.0, context: zmq.Context | None = None):
        self.endpoint = endpoint
        self.timeout_ms = int(timeout_s * 1000)
        self.sock = (context or zmq.Context.instance()).socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)

    def request(self, op: str, **args) -> dict:
        self.sock.send(P.encoder.encode(P.Request(op=op, args=args)))
        if not self.sock.poll(self.timeout_ms, zmq.POLLIN):
            raise OperatorError(f"no reply from {self.endpoint} within {self.timeout_ms / 1000:g} s "
                                "(is the engine running?)")
        reply = P.reply_decoder.decode(self.sock.recv())
        if not reply.ok:
            raise OperatorError(reply.error)
        return reply.result

    def close(self) -> None:
        self.sock.close(0)

    def __enter__(self) -> "OperatorClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
