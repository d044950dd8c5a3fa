"""Model folders: written whole, swapped with no moment without a folder, leftovers swept."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from lgsid_pipeline import atomic
from lgsid_pipeline.atomic import atomic_folder


def save(folder: Path, value: str) -> None:
    with atomic_folder(folder) as tmp:
        (tmp / "weights.txt").write_text(value)
        (tmp / "config.txt").write_text(value)


def leftovers(folder: Path) -> list[str]:
    """What lies beside the model folder besides it and the version it points at."""
    current = folder.resolve()
    return sorted(p.name.split("-")[0] for p in folder.parent.iterdir()
                  if p not in (folder, current))


def test_swaps_keep_the_previous_version_and_sweep_older(tmp_path: Path) -> None:
    model = tmp_path / "model"
    for value in ("1", "2", "3", "4"):
        save(model, value)
        assert (model / "weights.txt").read_text() == value
    assert model.is_symlink() and model.is_dir()
    assert leftovers(model) == [".model.v"]  # the version before the current one


def test_readers_never_see_no_folder_or_half_a_folder(tmp_path: Path) -> None:
    model = tmp_path / "model"
    save(model, "0")
    problems: list[str] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                weights = (model / "weights.txt").read_text()
                config = (model / "config.txt").read_text()
            except OSError as exc:
                problems.append(repr(exc))
                continue
            if int(config) < int(weights):  # config read later, so never from an older save
                problems.append(f"mixed {weights} {config}")

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for value in range(1, 60):
            save(model, str(value))
    finally:
        stop.set()
        reader.join()
    assert problems == []


def test_a_failed_write_or_swap_keeps_the_old_folder(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "model"
    save(model, "good")
    with pytest.raises(RuntimeError), atomic_folder(model) as tmp:
        (tmp / "weights.txt").write_text("half")
        raise RuntimeError("training crashed")
    assert (model / "weights.txt").read_text() == "good"

    real = os.replace

    def crash_on_link(src, dst):
        if ".link-" in str(src):
            raise OSError("killed during the swap")
        return real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", crash_on_link)
    with pytest.raises(OSError, match="killed"):
        save(model, "new")
    monkeypatch.undo()
    assert (model / "weights.txt").read_text() == "good"
    save(model, "next")
    save(model, "last")
    assert (model / "weights.txt").read_text() == "last"
    # the crashed swap's link file is swept at once, its version as an old version
    atomic.sweep_folder_versions(model, max_age_s=0)
    assert leftovers(model) == [".model.v"]


def test_a_plain_folder_from_before_is_moved_aside_and_swept(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.txt").write_text("legacy")
    save(model, "new")
    assert model.is_symlink() and (model / "weights.txt").read_text() == "new"
    assert leftovers(model) == []
