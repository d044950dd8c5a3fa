"""Model folders: written whole, swapped with no moment without a folder, leftovers swept."""

from __future__ import annotations

import os
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
    return sorted(
        p.name.split("-")[0] for p in folder.parent.iterdir() if p not in (folder, current)
    )


def test_swaps_keep_the_previous_version_and_sweep_older(tmp_path: Path) -> None:
    model = tmp_path / "model"
    for value in ("1", "2", "3", "4"):
        save(model, value)
        assert (model / "weights.txt").read_text() == value
    assert model.is_symlink() and model.is_dir()
    assert leftovers(model) == [".model.v"]  # the version before the current one


def test_readers_never_see_no_folder_or_half_a_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tmp_path / "model"
    save(model, "0")
    seen: list[tuple[str, str]] = []
    real = os.replace

    def replace_and_look(src, dst):  # what a reader finds at every step of a save
        seen.append(((model / "weights.txt").read_text(), (model / "config.txt").read_text()))
        real(src, dst)
        seen.append(((model / "weights.txt").read_text(), (model / "config.txt").read_text()))

    monkeypatch.setattr(atomic.os, "replace", replace_and_look)
    for value in ("1", "2", "3"):
        save(model, value)
    assert seen and all(weights == config for weights, config in seen)
    assert [w for w, _ in seen] == sorted(w for w, _ in seen)  # old, then new, never back
    assert seen[-1] == ("3", "3")


def test_a_failed_write_or_swap_keeps_the_old_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
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
