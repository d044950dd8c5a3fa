"""Model folders written whole or not at all, and swapped with no moment without one.

A model folder ``<parent>/<name>`` is a symbolic link to a complete version folder
``<parent>/.<name>.v-<id>``. ``atomic_folder`` writes a new version into a temporary folder,
renames it to its version name, and swaps the link with one ``os.replace``: a reader sees the
old folder or the new one, never none and never half of one. The version before is kept (a
reader may still be in it); older versions, and leftovers of writers that crashed, are swept
on the next swap.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

STALE_SECONDS = 3600.0  # a temporary folder this old belongs to a writer that died


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _version_folders(target: Path) -> list[Path]:
    return sorted(target.parent.glob(f".{target.name}.v-*"), key=lambda p: p.stat().st_mtime)


def sweep_folder_versions(target: Path, keep_previous: int = 1,
                          max_age_s: float = STALE_SECONDS) -> list[Path]:
    """Remove what a model folder no longer needs: versions older than the current one and
    the ``keep_previous`` before it, folders a crashed swap left (``.old-*``, link files),
    and temporary folders older than ``max_age_s``. Returns what was removed."""
    current = target.parent / os.readlink(target) if target.is_symlink() else None
    others = [p for p in _version_folders(target) if current is None or p != current]
    doomed = others[:max(0, len(others) - keep_previous)]
    now = time.time()
    for pattern in (f".{target.name}.old-*", f".{target.name}.link-*",
                    f".{target.name}.tmp-*"):
        for path in target.parent.glob(pattern):
            try:
                if now - path.lstat().st_mtime > max_age_s or ".old-" in path.name:
                    doomed.append(path)
            except FileNotFoundError:
                continue
    for path in doomed:
        if path.is_symlink() or path.is_file():
            path.unlink(missing_ok=True)
        else:
            shutil.rmtree(path, ignore_errors=True)
    return doomed


def replace_folder(new: Path, target: Path) -> None:
    """Make the finished folder ``new`` the content of ``target`` (see the module doc)."""
    tag = uuid.uuid4().hex[:12]
    version = target.with_name(f".{target.name}.v-{tag}")
    os.replace(new, version)
    if target.exists() and not target.is_symlink():
        # A plain folder written before links were used: moved aside once, then swept.
        os.replace(target, target.with_name(f".{target.name}.old-{tag}"))
    link = target.with_name(f".{target.name}.link-{tag}")
    os.symlink(version.name, link)
    os.replace(link, target)
    _fsync_dir(target.parent)
    sweep_folder_versions(target)


@contextmanager
def atomic_folder(folder: Path | str) -> Iterator[Path]:
    """Yield a temporary folder beside ``folder`` to write into; when the block ends without
    an error it replaces ``folder`` whole, otherwise it is removed."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        tmp.chmod(0o755)
        yield tmp
        replace_folder(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
