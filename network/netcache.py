"""Read a network once: the graph of a ``.net.xml`` kept on disk between runs.

Reading a network computes every signal's conflicts and the geometry of every path through its
junctions (``network.sumo_net``): a few seconds for a RESCO city, 15 s for grid4x4 with its
three-lane approaches, and an engine start, an evaluation's bridge and each of a benchmark's
runs would each pay it again. :func:`cached_graph` keeps the graph under
``$TRAFFIC_ENGINE_CACHE`` (or ``~/.cache/traffic-engine``) in ``graphs/``, keyed by the SHA-256 of
the network file, the ``permissive_turns`` choice, the source of ``network/sumo_net.py`` and the
sumolib version: an edited network, a changed reader or another sumolib reads afresh. Files are
written under a temporary name and renamed into place, so parallel processes never read half a
file; one that cannot be read (truncated, from another Python) is read afresh and replaced; a
cache that cannot be written is skipped. ``TRAFFIC_ENGINE_NET_CACHE=0`` turns it off.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import pickle
import uuid
from pathlib import Path

import networkx as nx
import sumolib

from network import sumo_net

log = logging.getLogger("traffic_engine.network")

__all__ = ["cache_root", "cached_graph"]


def cache_root() -> Path:
    """The project's cache folder: ``$TRAFFIC_ENGINE_CACHE`` or ``~/.cache/traffic-engine``."""
    root = os.environ.get("TRAFFIC_ENGINE_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "traffic-engine"


@functools.lru_cache(maxsize=1)
def _reader_digest() -> str:
    src = Path(sumo_net.__file__).read_bytes()
    version = str(getattr(sumolib, "__version__", "?"))
    return hashlib.sha256(src + b"\0" + version.encode()).hexdigest()


def _key(path: Path, permissive_turns: bool) -> str:
    with path.open("rb") as f:
        h = hashlib.file_digest(f, "sha256")
    h.update(b"permissive" if permissive_turns else b"protected")
    h.update(_reader_digest().encode())
    return h.hexdigest()[:24]


def cached_graph(path: str | Path, *, permissive_turns: bool = True) -> nx.DiGraph:
    """:func:`network.sumo_net.read_sumo_net`, read from the cache when the same network was read
    before by the same reader (see the module docstring)."""
    path = Path(path)
    if os.environ.get("TRAFFIC_ENGINE_NET_CACHE", "1") == "0" or not path.is_file():
        return sumo_net.read_sumo_net(path, permissive_turns=permissive_turns)  # (its error for a missing file)
    folder = cache_root() / "graphs"
    file = folder / f"{path.name.removesuffix('.xml')}.{_key(path, permissive_turns)}.pickle"
    try:
        with file.open("rb") as f:
            g = pickle.load(f)
        if isinstance(g, nx.DiGraph):
            g.graph["source"] = str(path)  # (the same network may have been read from elsewhere)
            return g
        log.warning("network cache %s holds no graph: reading the network again", file)
    except FileNotFoundError:
        pass
    except Exception as exc:  # truncated, or written by another Python: read afresh and replace
        log.warning("network cache %s unreadable (%s): reading the network again", file, exc)
    g = sumo_net.read_sumo_net(path, permissive_turns=permissive_turns)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(f".{file.name}.{uuid.uuid4().hex}.tmp")
        with tmp.open("wb") as f:
            pickle.dump(g, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, file)
    except OSError as exc:
        log.warning("network cache not written (%s): the next run reads the network again", exc)
    return g
