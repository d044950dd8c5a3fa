"""The landing sensor under a real ``dagster-daemon`` (and the webserver beside it), on a
temporary instance configured like ``dagster_home/dagster.yaml``: files landed for a city
are picked up by a sensor tick, the run is queued, launched in its own process (forked from
the warm run worker) and gives
the new venues codes; later ticks over the same files launch nothing."""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from helpers import make_tiny_encoder, tiny_spec

from lgsid_pipeline.cities import CityConfig, CityRegistry
from lgsid_pipeline.config import REPO_ROOT
from lgsid_pipeline.defs.warm_runs import WORKER_TAG
from lgsid_pipeline.demo import generate_city
from lgsid_pipeline.runner import materialize
from lgsid_pipeline.warehouse import Warehouse

CITY = "dm"
UP_TO_CODES = "*semantic_ids,*rqkmeans_semantic_ids,*rqvae_semantic_ids"
TOKENIZERS = ("tokenizer", "rqkmeans_tokenizer", "rqvae_tokenizer")
SENSOR_INTERVAL_S = 3
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(what: str, ready, timeout: float, processes: list[subprocess.Popen]):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise AssertionError(f"{process.args[0]} exited with {process.returncode}")
        found = ready()
        if found:
            return found
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def _sensor_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    return list(
        instance.get_runs(filters=dg.RunsFilter(tags={"dagster/sensor_name": "landing_sensor"}))
    )


@pytest.mark.slow
def test_landing_sensor_under_the_real_daemon(lgsid_env: Path, tmp_path: Path) -> None:
    encoder = make_tiny_encoder(tmp_path / "encoder")
    folder = tmp_path / "source"
    generate_city(tiny_spec(name="Dm", seed=5, n_items=150), folder)
    CityRegistry(lgsid_env).add(CityConfig(slug=CITY, source="synthetic", path=str(folder)))
    ops = {
        "geo_negatives": {"config": {"max_anchors": 80}},
        "reward_model": {"config": {"epochs": 2}},
        "geo_pairs": {"config": {"n_anchors": 80}},
        "aligned_encoder": {"config": {"steps": 4}},
        **{name: {"config": {"codebook_sizes": [8, 8, 8], "epochs": 2}} for name in TOKENIZERS},
    }
    config = {"resources": {"workspace": {"config": {"encoder_path": str(encoder)}}}, "ops": ops}
    dagster_home = Path(os.environ["DAGSTER_HOME"])
    shutil.copy(REPO_ROOT / "dagster_home" / "dagster.yaml", dagster_home / "dagster.yaml")
    instance = dg.DagsterInstance.from_config(str(dagster_home))
    results = materialize([CITY], select=UP_TO_CODES, instance=instance, run_config=config)
    assert all(r.success for r in results), results
    warehouse = Warehouse(lgsid_env)
    before = warehouse.read_table("semantic_ids", CITY, "lgsid")

    landing = lgsid_env / "landing" / CITY
    landing.mkdir(parents=True)
    new = pd.read_parquet(folder / "items.parquet").head(8).copy()
    new["item_id"] = [f"landed-{i}" for i in range(len(new))]
    new["latitude"] = new["latitude"] + 0.001
    new.to_parquet(landing / "items-backfill.parquet", index=False)

    workspace = tmp_path / "workspace.yaml"
    workspace.write_text("load_from:\n  - python_module: lgsid_pipeline.definitions\n")
    env = {
        **os.environ,
        "LGSID_ENCODER_PATH": str(encoder),
        "LGSID_SENSOR_INTERVAL_S": str(SENSOR_INTERVAL_S),
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    port = _free_port()
    logs = tmp_path / "logs"
    logs.mkdir()
    processes = [
        subprocess.Popen(
            [str(BIN / name), *args, "-w", str(workspace)],
            env=env,
            cwd=tmp_path,
            stdout=open(logs / f"{name}.log", "w"),  # noqa: SIM115 - closed with the process
            stderr=subprocess.STDOUT,
        )
        for name, args in (
            ("dagster-daemon", ["run"]),
            ("dagster-webserver", ["-h", "127.0.0.1", "-p", str(port)]),
        )
    ]
    try:

        def webserver_up() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2):
                    return True
            except OSError:
                return False

        _wait("the webserver", webserver_up, 120, processes)

        def finished() -> list[dg.DagsterRun]:
            runs = _sensor_runs(instance)
            return [r for r in runs if r.is_finished] if runs else []

        [run] = _wait("the landing sensor's run to finish", finished, 300, processes)
        assert run.status == dg.DagsterRunStatus.SUCCESS, run.status
        assert run.tags["dagster/partition"] == CITY and run.job_name == "nightly_retokenization"
        # launched by the instance's WarmRunLauncher: forked from its warm worker
        assert run.tags[WORKER_TAG].startswith("warm pid "), run.tags
        logs = instance.all_logs(run.run_id)
        events = {e.dagster_event.event_type_value for e in logs if e.dagster_event}
        assert {"PIPELINE_ENQUEUED", "PIPELINE_STARTING", "PIPELINE_SUCCESS"} <= events
        after = warehouse.read_table("semantic_ids", CITY, "lgsid").set_index("item_id")
        assert set(new["item_id"]) <= set(after.index) and after["code"].is_unique
        old = before.set_index("item_id")["code"]
        assert (after.loc[old.index, "code"] == old).all()

        # more ticks over the same files: nothing more is launched
        time.sleep(3 * SENSOR_INTERVAL_S + 1)
        assert [r.run_id for r in _sensor_runs(instance)] == [run.run_id]
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
