"""Runnable benchmarks: each prints its figures and takes --json FILE.

``parser`` and ``write_json`` are the parts of that contract every benchmark shares; ``names``
reads a comma-separated choice (controllers, kinds) off the command line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


# the code the closed loop's outcome depends on: a cached outcome is kept only for the same sources
SOURCES = ("benchmarks", "controllers", "detectors", "engine", "network", "sim")


def parser(name: str, doc: str | None) -> argparse.ArgumentParser:
    """The command line of ``python -m benchmarks.NAME``, its module docstring as the help."""
    return argparse.ArgumentParser(prog=f"python -m benchmarks.{name}", description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def write_json(path: str | Path, figures) -> None:
    """Write a benchmark's figures (``--json FILE``) as indented JSON, creating the directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=2) + "\n")


def names(p: argparse.ArgumentParser, text: str, allowed, what: str) -> list[str]:
    """The comma-separated names in ``text``; exits through ``p.error`` on one not in ``allowed``."""
    out = [x for x in text.split(",") if x]
    unknown = [x for x in out if x not in allowed]
    if unknown:
        p.error(f"unknown {what}(s) {', '.join(unknown)}; choose from {', '.join(allowed)}")
    return out
