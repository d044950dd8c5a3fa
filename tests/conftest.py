"""Shared fixtures: an isolated LGSID_HOME and Dagster home per test, the shared data folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from lgsid_pipeline.config import shared_data_dir


@pytest.fixture
def lgsid_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh LGSID_HOME and DAGSTER_HOME under tmp_path; returns the LGSID home."""
    home = tmp_path / "lgsid_home"
    dagster_home = tmp_path / "dagster_home"
    home.mkdir()
    dagster_home.mkdir()
    monkeypatch.setenv("LGSID_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    return home


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real reference data (``../shared/data``); tests that need it skip without it."""
    folder = shared_data_dir()
    if not (folder / "boundaries").is_dir():
        pytest.skip(f"shared data not found at {folder}")
    return folder
