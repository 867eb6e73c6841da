"""The kernel caches are dropped together when any kernel package's source changes."""

from __future__ import annotations

from pathlib import Path

from engine import kernel_cache


def _tree(root: Path) -> list[Path]:
    caches = []
    for pkg in kernel_cache.PACKAGES:
        (root / pkg / "__pycache__").mkdir(parents=True)
        (root / pkg / "mod.py").write_text(f"X = '{pkg}'\n")
        for suffix in ("nbi", "nbc"):
            f = root / pkg / "__pycache__" / f"mod.kernel-1.py311.{suffix}"
            f.write_bytes(b"cached")
            caches.append(f)
    return caches


def test_caches_survive_unchanged_sources_and_go_when_one_file_changes(tmp_path):
    caches = _tree(tmp_path)
    assert kernel_cache.check(tmp_path)  # no stamp yet: dropped, stamp written
    assert not any(f.exists() for f in caches)
    for f in caches:
        f.write_bytes(b"cached again")
    assert not kernel_cache.check(tmp_path)  # nothing changed: kept
    assert all(f.exists() for f in caches)
    (tmp_path / "controllers" / "mod.py").write_text("X = 'changed'\n")  # e.g. the safety rules
    assert kernel_cache.check(tmp_path)
    assert not any(f.exists() for f in caches)  # every package's caches, not only controllers'
    (tmp_path / "network" / "new.py").write_text("Y = 1\n")  # a new file counts too
    assert kernel_cache.check(tmp_path)


def test_this_install_is_checked_once_per_process():
    assert kernel_cache._checked  # importing any kernel package ran it
    assert not kernel_cache.check()
