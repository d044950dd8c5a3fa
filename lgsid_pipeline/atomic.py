"""Files and model folders written whole or not at all.

A file is written to a temporary file beside it (named with the writer's host and pid, so a
later sweep can tell a dead writer's leftovers from a live one's), fsynced, and renamed over
the target (``write_file_atomic``).

Model folders are also swapped with no moment without one.

A model folder ``<parent>/<name>`` is a symbolic link to a complete version folder
``<parent>/.<name>.v-<id>``. ``atomic_folder`` writes a new version into a temporary folder,
renames it to its version name, and swaps the link with one ``os.replace``: a reader sees the
old folder or the new one, never none and never half of one. The version before is kept (a
reader may still be in it); older versions, and leftovers of writers that crashed, are swept
on the next swap.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

STALE_SECONDS = 3600.0  # a temporary file or folder this old belongs to a writer that died
HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def writer_tag() -> str:
    """``<host>-<pid>-<random>``: names a temporary file or folder after its writer."""
    return f"{HOST}-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def writer_pid(name: str) -> int | None:
    """The writer pid in a name ending ``.<host>-<pid>-<random>[.tmp]``, if the writer ran on
    this host (None otherwise: its liveness cannot be checked from here)."""
    host, _, rest = name.removesuffix(".tmp").rsplit(".", 1)[-1].partition("-")
    pid = rest.partition("-")[0]
    return int(pid) if host == HOST and pid.isdigit() else None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new entry in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_atomic(path: Path, write: Callable[[Path], object]) -> Path:
    """Write ``path`` whole or not at all: ``write(tmp)`` fills a temporary file beside it,
    which is fsynced and renamed over ``path`` (mode 0644); on any error it is removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{writer_tag()}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _version_folders(target: Path) -> list[Path]:
    return sorted(target.parent.glob(f".{target.name}.v-*"), key=lambda p: p.stat().st_mtime)


def sweep_folder_versions(
    target: Path, keep_previous: int = 1, max_age_s: float = STALE_SECONDS
) -> list[Path]:
    """Remove what a model folder no longer needs: versions older than the current one and
    the ``keep_previous`` before it, folders a crashed swap left (``.old-*``, link files),
    and temporary folders older than ``max_age_s``. Returns what was removed."""
    current = target.parent / os.readlink(target) if target.is_symlink() else None
    others = [p for p in _version_folders(target) if current is None or p != current]
    doomed = others[: max(0, len(others) - keep_previous)]
    now = time.time()
    for pattern in (f".{target.name}.old-*", f".{target.name}.link-*", f".{target.name}.tmp-*"):
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
    fsync_dir(target.parent)
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
