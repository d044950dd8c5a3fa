"""Reliability drills: kill -9 mid-write, three cities at once, broken model artifacts.

Runs use the in-process executor (no step subprocesses) to stay fast; the Dagster instance is
configured like the repository's (``dagster_home/dagster.yaml``: run and pool limits).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from helpers import make_tiny_encoder, tiny_spec

from lgsid_pipeline import atomic
from lgsid_pipeline.alignment.reward import load_reward_model
from lgsid_pipeline.cities import CityConfig, CityRegistry
from lgsid_pipeline.defs.alignment import REWARD_MODEL
from lgsid_pipeline.demo import generate_city
from lgsid_pipeline.model_files import ModelFileError
from lgsid_pipeline.registry import ModelArtifactError, champion_folder
from lgsid_pipeline.report import city_report
from lgsid_pipeline.runner import get_instance, materialize
from lgsid_pipeline.warehouse import Warehouse

pytestmark = pytest.mark.slow  # seconds per test: left out of `make test-fast`

REPO = Path(__file__).resolve().parents[1]
INGEST = "raw_items,raw_interactions,items,interactions"


def in_process(**executor: object) -> dict:
    """Run config running the steps in the run's process (whichever executor the jobs use)."""
    if os.environ.get("LGSID_EXECUTOR") == "in_process":  # tests/conftest.py sets it
        return {"execution": {"config": executor}}
    return {"execution": {"config": {"in_process": executor}}}


IN_PROCESS = in_process()
TABLES = ("raw_items", "raw_interactions", "items", "interactions", "quarantine")

# Test driver for the kill drill: the real `lgsid materialize`, except that Parquet writes of
# one table write half the file, then hang until the test kills the process group.
STALLING_DRIVER = """
import io, os, sys, time
import pyarrow.parquet as pq
stall, real = os.environ["RELIABILITY_STALL_TABLE"], pq.write_table
def write_half_then_hang(table, where, *args, **kwargs):
    if f"/{stall}/" in str(where) and str(where).endswith(".tmp"):
        buffer = io.BytesIO()
        real(table, buffer, *args, **kwargs)
        data = buffer.getvalue()
        with open(where, "wb") as handle:
            handle.write(data[:len(data) // 2])
            handle.flush()
            os.fsync(handle.fileno())
        time.sleep(600)
    return real(table, where, *args, **kwargs)
pq.write_table = write_half_then_hang
from lgsid_pipeline.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture
def repo_instance_config(lgsid_env: Path) -> Path:
    """The test's DAGSTER_HOME configured like the repository's instance."""
    home = Path(os.environ["DAGSTER_HOME"])
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    return home


def register_city(home: Path, slug: str, seed: int, n_items: int) -> Path:
    folder = home / "synthetic" / slug
    generate_city(tiny_spec(name=slug.title(), seed=seed, n_items=n_items), folder)
    CityRegistry(home).add(CityConfig(slug=slug, source="synthetic", path=str(folder)))
    return folder


def temp_files(warehouse: Warehouse) -> list[Path]:
    return sorted(warehouse.root.rglob(".*.tmp"))


def rows(warehouse: Warehouse, table: str, city: str, part: str = "data") -> int:
    return warehouse.read_arrow(table, city, part).num_rows


def assert_every_table_readable(warehouse: Warehouse) -> None:
    for path in warehouse.root.rglob("*.parquet"):
        pq.read_table(path)  # raises on a half-written file


def assert_reconciles(warehouse: Warehouse, city: str, n_items: int) -> None:
    report = city_report(warehouse, city)
    assert report["items"]["raw_rows"] == n_items
    assert report["items"]["rows"] + report["items"]["quarantined"] == n_items
    assert report["items"]["reconciles"] and report["interactions"]["reconciles"], report
    assert report["interactions"]["rows"] > 0


def failure_text(run_id: str, instance: dg.DagsterInstance | None = None) -> str:
    """Every step-failure message of a run (in ``instance``, default the configured one),
    with the chain of causes."""
    texts = []
    for event in (instance or get_instance()).all_logs(run_id):
        if event.dagster_event and event.dagster_event.event_type_value == "STEP_FAILURE":
            error = event.dagster_event.event_specific_data.error
            while error is not None:
                texts.append(error.message)
                error = error.cause or error.context
    return "\n".join(texts)


@pytest.mark.slow
def test_kill_9_mid_write_leaves_no_half_table(
    repo_instance_config: Path, lgsid_env: Path, tmp_path: Path
) -> None:
    folder = register_city(lgsid_env, "kc", seed=3, n_items=250)
    warehouse = Warehouse(lgsid_env)
    assert all(r.success for r in materialize(["kc"], select=INGEST, run_config=IN_PROCESS))
    before = {t: warehouse.read_arrow(t, "kc") for t in ("items", "interactions")}
    assert_reconciles(warehouse, "kc", 250)

    # The source grows; the next run is killed while it writes the new `items` table.
    generate_city(tiny_spec(name="Kc", seed=3, n_items=320), folder)
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text(yaml.safe_dump(IN_PROCESS))
    log = tmp_path / "killed_run.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                STALLING_DRIVER,
                "materialize",
                "--city",
                "kc",
                "--select",
                INGEST,
                "--config",
                str(run_yaml),
            ],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RELIABILITY_STALL_TABLE": "items"},
            start_new_session=True,
        )
    # The run writes its new version in a staging folder; readers see the published one.
    staged_items = "_versions/ingest/city=kc/.staging-*/items/.*.tmp"
    try:
        deadline = time.monotonic() + 120
        while not list(warehouse.root.glob(staged_items)):
            assert proc.poll() is None, f"run ended before the write:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"no temp file appeared:\n{log.read_text()}"
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL

    # The half-written file is there, but no reader sees it.
    [half] = temp_files(warehouse)
    assert half in list(warehouse.root.glob(staged_items)) and half.stat().st_size > 0
    with pytest.raises(pa.ArrowInvalid):
        pq.read_table(half)
    assert_every_table_readable(warehouse)
    assert warehouse.read_arrow("items", "kc").equals(before["items"])  # the previous version
    assert warehouse.read_arrow("interactions", "kc").equals(before["interactions"])
    # The new raw tables were staged before the kill, but the set is published whole or not
    # at all: raw and clean stay in step.
    assert rows(warehouse, "raw_items", "kc") == 250
    assert_reconciles(warehouse, "kc", 250)
    with warehouse.connect() as con:
        assert con.execute("select count(*) from items").fetchone()[0] == before["items"].num_rows
    assert warehouse.refresh_catalog()
    with duckdb.connect(str(warehouse.catalog_path), read_only=True) as con:
        assert con.execute("select count(*) from items").fetchone()[0] == before["items"].num_rows

    # Rerun to success: counts are right and the dead writer's temp file is swept.
    results = materialize(["kc"], select=INGEST, run_config=IN_PROCESS)
    assert [(r.success, r.failed_checks) for r in results] == [(True, [])], results
    assert_reconciles(warehouse, "kc", 320)
    assert rows(warehouse, "raw_interactions", "kc") == (
        rows(warehouse, "interactions", "kc") + rows(warehouse, "quarantine", "kc", "interactions")
    )
    assert temp_files(warehouse) == []
    assert_every_table_readable(warehouse)


def test_stale_staging_swept_but_live_writers_spared(lgsid_env: Path) -> None:
    warehouse = Warehouse(lgsid_env)
    warehouse.write_table("items", "c1", pa.table({"city": ["c1"], "item_id": ["a"]}))
    root = warehouse.version_root("c1", "ingest")
    dead = subprocess.Popen(["true"])
    dead.wait()
    host = atomic.HOST  # staging folders name their writer: host hash and pid
    live = root / f".staging-v1.{host}-{os.getpid()}-x"
    crashed = root / f".staging-v2.{host}-{dead.pid}-x"
    other_host = root / ".staging-v3.0000beef-1-x"
    abandoned = root / ".staging-v4.0000beef-2-x"
    for folder in (live, crashed, other_host, abandoned):
        (folder / "items").mkdir(parents=True)
        (folder / "items" / "data.parquet").write_bytes(b"PAR1 half")
    os.utime(abandoned, (time.time() - 7200, time.time() - 7200))
    warehouse.write_table("items", "c1", pa.table({"city": ["c1"] * 2, "item_id": ["a", "b"]}))
    assert sorted(root.glob(".staging-*")) == sorted([live, other_host])
    assert rows(warehouse, "items", "c1") == 2
    with warehouse.connect() as con:  # staged files are invisible to the views
        assert con.execute("select count(*) from items").fetchone()[0] == 2
    # Leftover staging folders do not stop a city's data from being deleted.
    assert warehouse.delete_city("c1") > 0
    assert not root.exists()
    assert not warehouse.has_table("items", "c1")


@pytest.mark.slow
def test_three_cities_backfilled_at_once(repo_instance_config: Path, lgsid_env: Path) -> None:
    sizes = {"north": 150, "south": 210, "east": 180}
    for seed, (slug, n_items) in enumerate(sizes.items(), start=11):
        register_city(lgsid_env, slug, seed=seed, n_items=n_items)
    results = materialize(list(sizes), select=INGEST, parallel=3, run_config=IN_PROCESS)
    assert sorted((r.city, r.success, r.failed_checks) for r in results) == [
        (c, True, []) for c in sorted(sizes)
    ]
    instance = get_instance()
    assert len({r.run_id for r in results}) == 3
    messages = [e.message or "" for r in results for e in instance.all_logs(r.run_id)]
    assert not [m for m in messages if "could not set lock" in m.lower() or "IOException" in m]
    warehouse = Warehouse(lgsid_env)
    own: dict[str, dict[str, int]] = {}
    for city, n_items in sizes.items():
        assert_reconciles(warehouse, city, n_items)
        own[city] = {t: rows(warehouse, t, city) for t in TABLES[:4]}
        own[city]["quarantine"] = sum(
            rows(warehouse, "quarantine", city, part) for part in ("items", "interactions")
        )
    assert_every_table_readable(warehouse)
    assert warehouse.refresh_catalog()
    with duckdb.connect(str(warehouse.catalog_path), read_only=True) as con:
        for table in TABLES:
            counts = dict(
                con.execute(f"select city, count(*) from {table} group by city").fetchall()
            )
            assert set(counts) <= set(sizes), table  # nothing but the three cities
            assert {c: counts.get(c, 0) for c in sizes} == {c: own[c][table] for c in sizes}
        # Each city's clean interactions point at that city's own clean items.
        orphans = con.execute(
            "select count(*) from interactions x anti join items i "
            "on i.city = x.city and i.item_id = x.item_id"
        ).fetchone()[0]
        assert orphans == 0


def test_missing_or_corrupt_model_artifact_is_named(
    repo_instance_config: Path, lgsid_env: Path, tmp_path: Path
) -> None:
    register_city(lgsid_env, "mc", seed=5, n_items=200)
    run_config = {
        **IN_PROCESS,
        "resources": {
            "workspace": {"config": {"encoder_path": str(make_tiny_encoder(tmp_path / "encoder"))}}
        },
        "ops": {
            "geo_negatives": {"config": {"max_anchors": 60}},
            "reward_model": {"config": {"epochs": 3}},
            "geo_pairs": {"config": {"n_anchors": 30}},
        },
    }

    def geo_pairs_error() -> str:
        [result] = materialize(["mc"], select="geo_pairs", run_config=run_config)
        assert not result.success and result.failed_steps == ["geo_pairs"]
        # A broken artifact fails the same way on every try: the job's retries are skipped.
        events = {
            e.dagster_event.event_type_value
            for e in get_instance().all_logs(result.run_id)
            if e.dagster_event
        }
        assert "STEP_UP_FOR_RETRY" not in events
        return failure_text(result.run_id)

    assert all(
        r.success for r in materialize(["mc"], select="*geo_negatives", run_config=run_config)
    )
    # No champion at all: the error says which asset to materialize.
    error = geo_pairs_error()
    assert "no registered model 'lgsid-reward-model'" in error
    assert "materialize the `reward_model` asset" in error
    assert all(r.success for r in materialize(["mc"], select="reward_model", run_config=run_config))
    folder = champion_folder(REWARD_MODEL, home=lgsid_env)
    assert sorted(p.name for p in folder.iterdir()) == ["reward_config.json", "reward_head.pt"]
    backup = tmp_path / "backup"
    shutil.copytree(folder, backup)

    # (a) A deleted weights file.
    (folder / "reward_head.pt").unlink()
    error = geo_pairs_error()
    assert "model 'lgsid-reward-model' version 1" in error
    assert "'reward_head.pt' is missing" in error and "`reward_model`" in error
    with pytest.raises(ModelArtifactError, match=r"lgsid-reward-model.*reward_head\.pt"):
        champion_folder(REWARD_MODEL, home=lgsid_env)
    with pytest.raises(ModelFileError, match=r"reward model file .*reward_head\.pt is missing"):
        load_reward_model(folder)  # the loader alone names the file too
    shutil.copy(backup / "reward_head.pt", folder / "reward_head.pt")

    # (b) A truncated config, then truncated weights.
    config = folder / "reward_config.json"
    config.write_bytes(config.read_bytes()[:20])
    error = geo_pairs_error()
    assert "model 'lgsid-reward-model' version 1" in error
    assert "'reward_config.json' is corrupt" in error
    with pytest.raises(ModelFileError, match=r"reward_config\.json is corrupt"):
        load_reward_model(folder)
    shutil.copy(backup / "reward_config.json", config)
    weights = folder / "reward_head.pt"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ModelArtifactError, match=r"'reward_head\.pt' is corrupt"):
        champion_folder(REWARD_MODEL, home=lgsid_env)
    with pytest.raises(ModelFileError, match=r"reward_head\.pt is corrupt"):
        load_reward_model(folder)

    # Restored, the same asset runs: the errors above came from the damage alone.
    shutil.copy(backup / "reward_head.pt", weights)
    [result] = materialize(["mc"], select="geo_pairs", run_config=run_config)
    assert result.success, failure_text(result.run_id)
