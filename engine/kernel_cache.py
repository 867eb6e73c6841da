"""Numba's on-disk kernel cache, kept honest across modules.

``@njit(cache=True)`` keys a kernel's cache on its own source file only. A kernel that calls a
kernel of another module (``engine.spat._look_ahead`` runs ``controllers.safety._enforce``;
controllers call ``controllers.base.phase_pressure``) keeps the callee it was compiled with after
the callee's file changes: an upgraded install would run the old safety rules inside the SPaT
look-ahead. So the caches of all kernels are dropped together whenever any source file of the
kernel packages changes: :func:`check` hashes them, compares with the stamp written beside the
caches last time, and on a difference deletes every ``*.nbi``/``*.nbc`` in those packages'
``__pycache__`` directories. It runs once per process, from each kernel package's
``__init__`` (before any kernel can load its cache); it costs a few milliseconds.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("controllers", "detectors", "engine", "network")
STAMP = ROOT / "engine" / "__pycache__" / "kernel-sources.sha256"
_checked = False


def sources_digest(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> str:
    """SHA-256 over the names and contents of every .py file of ``packages`` (the kernel packages)."""
    h = hashlib.sha256()
    for pkg in packages:
        for path in sorted((root / pkg).glob("*.py")):
            h.update(f"{pkg}/{path.name}\0".encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def check(root: Path | None = None) -> bool:
    """Drop every kernel cache if a kernel source changed since the last check; True if dropped.
    Without ``root`` (this install), once per process."""
    global _checked
    if root is None:
        if _checked:
            return False
        _checked = True
    root = ROOT if root is None else Path(root)
    stamp = root / STAMP.relative_to(ROOT)
    digest = sources_digest(root)
    try:
        if stamp.read_text() == digest:
            return False
    except OSError:
        pass
    for pkg in PACKAGES:
        for pattern in ("*.nbi", "*.nbc"):
            for f in (root / pkg / "__pycache__").glob(pattern):
                f.unlink(missing_ok=True)
    try:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        tmp = stamp.with_name(f"{stamp.name}.{os.getpid()}.tmp")
        tmp.write_text(digest)
        os.replace(tmp, stamp)
    except OSError:  # a read-only install: the caches were dropped, numba recompiles
        pass
    return True
