"""The engine: configuration, clock, the tick loop, its sockets and the command line.

``core.Engine`` runs one tick through the stages (detectors -> network -> controllers ->
safety) with no I/O; ``server.Server`` binds the four ZeroMQ sockets around it (ingest PULL,
adapters ROUTER, feed PUB, operators ROUTER) and runs the loop on the wall clock or, for a
simulator in lockstep, on the watermarks it sends. ``client`` holds the peers' side.
``feed`` is the public feed (every message numbered and kept as state; snapshots for late
joiners on a fifth socket, ROUTER; ``FeedClient`` for subscribers) and ``gateway`` serves it
over HTTP.
"""

from engine import kernel_cache

kernel_cache.check()  # before any kernel loads a cache compiled against older sources

