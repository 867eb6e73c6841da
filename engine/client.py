"""Clients of the engine's sockets: what an operator tool or a device uses."""

from __future__ import annotations

import zmq

from engine import protocol as P


class OperatorError(RuntimeError):
    """The engine did not answer, or answered with an error."""


class OperatorClient:
    """A DEALER on the operator socket; one request, one reply, with a timeout."""

    def __init__(self, endpoint: str, timeout_s: float = 3.0, context: zmq.Context | None = None,
                 keys_dir: str | None = None, name: str | None = None):
        """With ``keys_dir``, connects as CurveZMQ client ``name`` (``engine.security.secure_client``);
        without, ``name`` (if any) is sent as the unverified ``as`` of the ops that are audited."""
        self.endpoint = endpoint
        self.timeout_ms = int(timeout_s * 1000)
        self.name = name
        self.sock = (context or zmq.Context.instance()).socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        # a DEALER whose connection is not up (engine down, or CurveZMQ refusing the key) may
        # block on send: wait no longer than for the reply
        self.sock.setsockopt(zmq.SNDTIMEO, self.timeout_ms)
        if keys_dir is not None:
            from engine.security import secure_client

            if not name:
                self.sock.close(0)
                raise OperatorError("with keys, say which key to use (--as NAME)")
            try:
                secure_client(self.sock, keys_dir, name)
            except ValueError as exc:
                self.sock.close(0)
                raise OperatorError(str(exc)) from exc
        self.sock.connect(endpoint)

    def request(self, op: str, **args) -> dict:
        if self.name and "as" not in args:
            args["as"] = self.name
        try:
            self.sock.send(P.encoder.encode(P.Request(op=op, args=args)))
        except zmq.Again:
            raise OperatorError(f"no reply from {self.endpoint} within {self.timeout_ms / 1000:g} s: could not "
                                "even send (is the engine running, and does it accept this key?)") from None
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
