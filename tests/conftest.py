"""Shared fixtures: an isolated LGSID_HOME and Dagster home per test, the shared data folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

# Steps run in their run's process: a multiprocess step first imports the whole code location
# (torch, transformers, MLflow: seconds of CPU each). Set before the code location is imported;
# tests of the multiprocess executor set LGSID_EXECUTOR=multiprocess for their own runs.
os.environ.setdefault("LGSID_EXECUTOR", "in_process")

# Under pytest-xdist the workers share the cores: each one's torch gets cores / workers threads
# (read by torch when it starts, so set before anything imports it).
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    from lgsid_pipeline.threads import available_cores, threads_per_step

    os.environ.setdefault(
        "OMP_NUM_THREADS",
        str(threads_per_step(available_cores(), int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))),
    )

from lgsid_pipeline.config import shared_data_dir  # noqa: E402

# The files whose tests run the pipeline end to end, a minute or more each, longest first.
# `make test` hands files to its workers in collection order (--no-loadscope-reorder): a
# long file dealt out last would leave one worker running it alone at the end.
LONGEST_FILES = (
    "test_alignment.py",
    "test_retrain.py",
    "test_daemon.py",
    "test_tokenization_stage.py",
    "test_reliability.py",
    "test_source_fuzz.py",
    "test_deploy.py",
    "test_serving.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the longest files first, then the other files with slow tests, then the rest
    (each file's tests keep their order)."""
    slow_files = {item.path.name for item in items if item.get_closest_marker("slow")}

    def rank(item: pytest.Item) -> int:
        name = item.path.name
        if name in LONGEST_FILES:
            return LONGEST_FILES.index(name)
        return len(LONGEST_FILES) + (0 if name in slow_files else 1)

    items.sort(key=rank)  # stable: collection order within a rank


@pytest.fixture(scope="session")
def mlflow_store_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite store with MLflow's schema already migrated: creating one runs
    every migration (about 4 s), which each test's fresh home would otherwise pay again."""
    import mlflow

    store = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{store}").search_experiments()
    return store


@pytest.fixture
def lgsid_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlflow_store_template: Path) -> Path:
    """A fresh LGSID_HOME and DAGSTER_HOME under tmp_path; returns the LGSID home. Its MLflow
    store is a copy of the migrated empty one (no experiments or models in it)."""
    home = tmp_path / "lgsid_home"
    dagster_home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "mlflow").mkdir()
    shutil.copy(mlflow_store_template, home / "mlflow" / "mlflow.db")
    dagster_home.mkdir()
    monkeypatch.setenv("LGSID_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    for name in ("LGSID_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real reference data (``../shared/data`` or ``LGSID_SHARED_DATA``). CI has it beside
    the clone, so there (``CI=true``) a missing folder fails the test; elsewhere the test is
    skipped with the path it looked in."""
    folder = shared_data_dir()
    if not (folder / "boundaries").is_dir():
        message = (
            f"shared data not found at {folder} (set LGSID_SHARED_DATA to the folder "
            "holding boundaries/, gowalla_nyc/, foursquare_tky/)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI runs with ../shared beside the clone", pytrace=False)
        pytest.skip(message)
    return folder
