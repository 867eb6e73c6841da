"""Runnable benchmarks: each prints its figures and takes --json FILE.

``parser`` and ``write_json`` are the parts of that contract every benchmark shares.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def parser(name: str, doc: str | None) -> argparse.ArgumentParser:
    """The command line of ``python -m benchmarks.NAME``, its module docstring as the help."""
    return argparse.ArgumentParser(prog=f"python -m benchmarks.{name}", description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def write_json(path: str | Path, figures) -> None:
    """Write a benchmark's figures (``--json FILE``) as indented JSON, creating the directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=2) + "\n")
