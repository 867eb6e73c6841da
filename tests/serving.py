"""An engine serving in a thread of the test process, on free loopback ports."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from engine.config import Endpoints
from engine.core import Engine
from engine.server import Server

ANY = Endpoints(ingest="tcp://127.0.0.1:*", adapters="tcp://127.0.0.1:*", feed="tcp://127.0.0.1:*",
                operators="tcp://127.0.0.1:*", snapshot="tcp://127.0.0.1:*")


@contextmanager
def serving(engine: Engine) -> Iterator[Server]:
    """``engine`` warmed up (as ``serve`` does: no kernel compiles while a test waits for a reply)
    behind a :class:`Server` whose loop runs in a thread; stopped and closed on exit."""
    engine.warm_up()
    server = Server(engine)
    th = threading.Thread(target=server.serve_forever, daemon=True)
    th.start()
    try:
        yield server
    finally:
        server.stopping.set()
        th.join(10)
        server.close()
