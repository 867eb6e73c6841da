"""Helpers for running SUMO binaries and SUMO's python tools.

SUMO comes from the ``eclipse-sumo`` wheel, so everything is located through
``sumo.SUMO_HOME``; the ``SUMO_HOME`` environment variable is only a fallback
for an environment without the wheel.  Tools run with ``SUMO_HOME`` set in
their environment (SUMO's python tools and XML validation look for it).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

__all__ = [
    "ToolError",
    "sumo_home",
    "sumo_binary",
    "sumo_tool",
    "sumo_env",
    "run_tool",
    "run_python_tool",
]


class ToolError(RuntimeError):
    """A SUMO binary or tool exited with a non-zero status."""

    def __init__(self, cmd: Sequence[str], returncode: int, stdout: str, stderr: str):
        self.cmd = list(cmd)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        tail = (stderr or stdout or "").strip()
        super().__init__(
            f"{Path(cmd[0]).name} exited with status {returncode}\n"
            f"command: {' '.join(map(str, cmd))}\n{tail}"
        )


def sumo_home() -> Path:
    """Root of the SUMO installation (contains ``bin/`` and ``tools/``).

    The ``eclipse-sumo`` wheel wins, so the binaries always match the pinned
    ``libsumo``/``traci``; ``$SUMO_HOME`` is only a fallback without it.
    """
    try:
        import sumo  # the eclipse-sumo wheel
    except ImportError:
        sumo = None
    if sumo is not None:
        return Path(sumo.SUMO_HOME)
    env = os.environ.get("SUMO_HOME")
    if env and (Path(env) / "bin").is_dir():
        return Path(env)
    raise RuntimeError("SUMO not found: install the 'eclipse-sumo' package or set SUMO_HOME")


def sumo_binary(name: str) -> str:
    """Absolute path of the SUMO binary ``name`` (e.g. ``"sumo"``, ``"netconvert"``)."""
    bindir = sumo_home() / "bin"
    for candidate in (bindir / name, bindir / f"{name}.exe"):
        if candidate.is_file():
            return str(candidate)
    raise FileNotFoundError(f"SUMO binary {name!r} not found in {bindir}")


def sumo_tool(relpath: str) -> str:
    """Absolute path of a script below ``SUMO_HOME/tools`` (e.g. ``"randomTrips.py"``)."""
    path = sumo_home() / "tools" / relpath
    if not path.is_file():
        raise FileNotFoundError(f"SUMO tool {relpath!r} not found at {path}")
    return str(path)


def sumo_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of the environment with ``SUMO_HOME`` set."""
    env = dict(os.environ if base is None else base)
    env["SUMO_HOME"] = str(sumo_home())
    return env


def _run(cmd: list[str], check: bool, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("env", sumo_env())
    proc = subprocess.run(cmd, **kw)
    if check and proc.returncode != 0:
        raise ToolError(cmd, proc.returncode, proc.stdout or "", proc.stderr or "")
    return proc


def run_tool(
    name: str, args: Sequence[str | os.PathLike] = (), *, check: bool = True, **kw
) -> subprocess.CompletedProcess:
    """Run SUMO binary ``name`` with ``args``.

    Output is captured as text unless overridden through ``kw`` (passed to
    :func:`subprocess.run`).  Raises :class:`ToolError` (carrying stderr) on a
    non-zero exit status when ``check`` is true.
    """
    cmd = [sumo_binary(name), *map(str, args)]
    return _run(cmd, check, **kw)


def run_python_tool(
    relpath: str, args: Sequence[str | os.PathLike] = (), *, check: bool = True, **kw
) -> subprocess.CompletedProcess:
    """Run a python script from ``SUMO_HOME/tools`` with the current interpreter."""
    cmd = [sys.executable, sumo_tool(relpath), *map(str, args)]
    return _run(cmd, check, **kw)
