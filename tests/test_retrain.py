"""Lineage-consistent retraining: the staged weekly retrain, and the blocking checks that stop
a tokenizer or a semantic-ID table from mixing encoder versions (tiny encoder, small city)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
from helpers import make_tiny_encoder, tiny_spec
from test_reliability import failure_text
from test_write_audit_publish import step_events

from lgsid_pipeline.catalog import ALIGNED_ENCODER, GLOBAL_MODEL_ASSETS, RETRAIN_SENSOR_NAME
from lgsid_pipeline.cities import CityConfig, CityRegistry
from lgsid_pipeline.definitions import defs
from lgsid_pipeline.defs.automation import retrain_statuses
from lgsid_pipeline.demo import generate_city
from lgsid_pipeline.embeddings import IncrementalResult
from lgsid_pipeline.encoder.model import adapter_encoder_versions
from lgsid_pipeline.provenance import git_sha
from lgsid_pipeline.registry import (
    DAGSTER_RUN_TAG,
    GIT_SHA_TAG,
    champion_folder,
    champion_version,
    tracking_uri,
)
from lgsid_pipeline.retrain import RETRAIN_STAGES, RETRAIN_TAG, STAGE_TAG, next_step
from lgsid_pipeline.runner import execute_run_request, materialize, retrain, tick_sensor
from lgsid_pipeline.stages import embeddings as embeddings_stage
from lgsid_pipeline.stages import semantic_ids as semantic_ids_stage
from lgsid_pipeline.tokenizer import Tokenizer
from lgsid_pipeline.warehouse import Warehouse

pytestmark = pytest.mark.slow  # seconds per test: left out of `make test-fast`

CITY = "rt"
TOKENIZERS = {"tokenizer": "lgsid", "rqkmeans_tokenizer": "rqkmeans", "rqvae_tokenizer": "rqvae"}
UP_TO_CODES = "*semantic_ids,*rqkmeans_semantic_ids,*rqvae_semantic_ids"


def run_config(encoder: Path, seed: int = 0) -> dict:
    return {
        "resources": {"workspace": {"config": {"encoder_path": str(encoder)}}},
        "ops": {
            "geo_negatives": {"config": {"max_anchors": 100}},
            "reward_model": {"config": {"epochs": 3}},
            "geo_pairs": {"config": {"n_anchors": 100}},
            "aligned_encoder": {"config": {"steps": 6, "seed": seed}},
            **{name: {"config": {"codebook_sizes": [8, 8, 8], "epochs": 3}} for name in TOKENIZERS},
        },
    }


def build_city(
    home: Path, encoder_folder: Path, instance: dg.DagsterInstance, select: str = UP_TO_CODES
) -> dict:
    folder = home / "synthetic" / CITY
    generate_city(tiny_spec(name="Rt", seed=3, n_items=200), folder)
    CityRegistry(home).add(CityConfig(slug=CITY, source="synthetic", path=str(folder)))
    config = run_config(make_tiny_encoder(encoder_folder))
    results = materialize([CITY], select=select, instance=instance, run_config=config)
    assert all(r.success for r in results), results  # warnings (utilisation) may fire
    return config


def published_bytes(warehouse: Warehouse, stage: str, table: str, part: str) -> str:
    path = warehouse.resolve_table(table, CITY, part)
    assert path is not None
    pointer = warehouse.pointer_path(CITY, stage).read_bytes()
    return hashlib.sha256(pointer + path.read_bytes()).hexdigest()


def encoder_versions(home: Path) -> dict[str, str]:
    return adapter_encoder_versions(champion_folder(ALIGNED_ENCODER, home=home))


def assert_mlflow_lineage(home: Path, instance: dg.DagsterInstance) -> None:
    """Every registered champion's MLflow run names this commit and the Dagster run (in this
    instance) that materialized the asset which trained it."""
    from mlflow.tracking import MlflowClient

    tracking_uri(home)
    client = MlflowClient()
    for name, asset in GLOBAL_MODEL_ASSETS.items():
        version = client.get_model_version(name, champion_version(name, home=home))
        tags = client.get_run(version.run_id).data.tags
        assert tags[GIT_SHA_TAG] == git_sha() and git_sha() != "unknown", (name, tags)
        run = instance.get_run_by_id(tags[DAGSTER_RUN_TAG])
        assert run is not None, (name, tags)
        assert asset in step_events(instance, run.run_id, "STEP_SUCCESS"), (name, asset)


def test_next_step_runs_stages_strictly_in_order() -> None:
    cities = ["a", "b"]
    first, pairs = RETRAIN_STAGES[0], RETRAIN_STAGES[1]
    step = next_step({}, cities)
    assert (step.state, step.stage, step.partitions) == ("launch", first, [None])
    step = next_step({(first.name, None): "STARTED"}, cities)
    assert step.state == "wait"
    step = next_step({(first.name, None): "SUCCESS"}, cities)
    assert (step.state, step.stage, step.partitions) == ("launch", pairs, ["a", "b"])
    # One city's run of a per-city stage still running: the next global stage waits.
    step = next_step(
        {(first.name, None): "SUCCESS", (pairs.name, "a"): "SUCCESS", (pairs.name, "b"): "QUEUED"},
        cities,
    )
    assert (step.state, step.partitions) == ("wait", ["b"])
    step = next_step(
        {(first.name, None): "SUCCESS", (pairs.name, "a"): "SUCCESS", (pairs.name, "b"): "FAILURE"},
        cities,
    )
    assert (step.state, step.partitions) == ("halted", ["b"])
    assert "later stages do not run" in step.reason
    done = {
        (s.name, p): "SUCCESS" for s in RETRAIN_STAGES for p in (cities if s.per_city else [None])
    }
    assert next_step(done, cities).state == "done"
    assert next_step({}, []).state == "launch"  # the first stage is global
    assert next_step({(first.name, None): "SUCCESS"}, []).state == "halted"
    # A city without alignment samples adds no geo pairs, but gets new embeddings and codes.
    samples_only_in_a = lambda table, city: city == "a" or table == "items"  # noqa: E731
    step = next_step({(first.name, None): "SUCCESS"}, cities, samples_only_in_a)
    assert (step.stage, step.partitions) == (pairs, ["a"])
    statuses = {
        (first.name, None): "SUCCESS",
        (pairs.name, "a"): "SUCCESS",
        (RETRAIN_STAGES[2].name, None): "SUCCESS",
    }
    step = next_step(statuses, cities, samples_only_in_a)
    assert (step.stage.name, step.partitions) == ("item_embeddings", ["a", "b"])


def test_weekly_retrain_runs_in_lineage_order_and_blocks_mixed_encoders(
    lgsid_env: Path, tmp_path: Path
) -> None:
    warehouse = Warehouse(lgsid_env)
    with dg.instance_for_test() as instance:
        config = build_city(lgsid_env, tmp_path / "encoder", instance)
        assert_mlflow_lineage(lgsid_env, instance)
        old = encoder_versions(lgsid_env)
        old_tokenizer = Tokenizer.load(champion_folder("lgsid-tokenizer", home=lgsid_env))
        assert old_tokenizer.encoder_version == old["aligned"]
        codes_before = published_bytes(warehouse, "semantic_ids", "semantic_ids", "lgsid")

        # The old weekly job: a new encoder and the tokenizers in one run. The tokenizer
        # refuses embeddings of the previous encoder before it fits anything.
        reseeded = run_config(tmp_path / "encoder", seed=1)
        [mixed] = materialize(
            [CITY], select="aligned_encoder,tokenizer", instance=instance, run_config=reseeded
        )
        assert not mixed.success and mixed.failed_checks == ["tokenizer_inputs_current"]
        text = failure_text(mixed.run_id, instance)
        assert "tokenizer_inputs_current" in text and f"{CITY}: 200 of 200" in text, text
        new = encoder_versions(lgsid_env)
        assert new["aligned"] != old["aligned"] and new["reference"] == old["reference"]
        assert (
            Tokenizer.load(champion_folder("lgsid-tokenizer", home=lgsid_env)).version
            == old_tokenizer.version
        )

        # The nightly job re-encodes with the new champion, but the frozen tokenizer was fitted
        # on the old one: the codes are not published.
        [nightly] = materialize(
            [CITY], select="item_embeddings,semantic_ids", instance=instance, run_config=reseeded
        )
        assert not nightly.success and nightly.failed_checks == ["semantic_ids_encoder_matches"]
        assert "200 embeddings are not from encoder" in failure_text(nightly.run_id, instance)
        assert published_bytes(warehouse, "semantic_ids", "semantic_ids", "lgsid") == codes_before

        # The staged retrain, as the daemon runs it: the schedule starts the first stage, the
        # sensor launches each next stage once the one before has succeeded everywhere.
        schedule = defs.get_schedule_def("weekly_global_models")
        tick = schedule.evaluate_tick(
            dg.build_schedule_context(
                instance=instance,
                repository_def=defs.get_repository_def(),
                scheduled_execution_time=datetime(2026, 12, 6, 3, tzinfo=UTC),
            )
        )
        [request] = tick.run_requests
        assert request.tags[RETRAIN_TAG] == "retrain-20261206"
        assert request.tags[STAGE_TAG] == "reward_model"
        executed = [execute_run_request(request, request.job_name, instance, reseeded)]
        cursor = None
        while True:
            result = tick_sensor(RETRAIN_SENSOR_NAME, instance, cursor)
            cursor = result.cursor
            if not result.run_requests:
                break
            executed += [
                execute_run_request(r, r.job_name, instance, reseeded) for r in result.run_requests
            ]
        assert all(r.success for r in executed), executed
        retrain_name = request.tags[RETRAIN_TAG]
        assert retrain_name in cursor  # finished: later ticks launch nothing for it
        statuses = retrain_statuses(instance, retrain_name)
        assert set(statuses.values()) == {"SUCCESS"}
        runs = instance.get_runs(filters=dg.RunsFilter(tags={RETRAIN_TAG: retrain_name}))
        order = [r.tags[STAGE_TAG] for r in reversed(runs)]  # get_runs: newest first
        assert order == [s.name for s in RETRAIN_STAGES]

        final = encoder_versions(lgsid_env)
        for registered in ("lgsid-tokenizer", "rqkmeans-tokenizer", "rqvae-tokenizer"):
            fitted = Tokenizer.load(champion_folder(registered, home=lgsid_env))
            assert fitted.encoder_version == final[fitted.embedding_part], registered
        codes = warehouse.read_table("semantic_ids", CITY, "lgsid")
        assert set(codes["encoder_version"]) == {final["aligned"]}
        assert codes["code"].is_unique
        assert set(codes["tokenizer_version"]) == {
            Tokenizer.load(champion_folder("lgsid-tokenizer", home=lgsid_env)).version
        }

        # `lgsid retrain` drives the same stages in one process.
        results, step = retrain(instance=instance, run_config=config)
        assert step.state == "done" and all(r.success for r in results)
        assert [r.city for r in results] == ["(global)", CITY, "(global)", CITY, "(global)", CITY]


def test_embedding_and_code_audits_block_publish(
    lgsid_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    warehouse = Warehouse(lgsid_env)
    with dg.instance_for_test() as instance:
        config = build_city(lgsid_env, tmp_path / "encoder", instance, select="*semantic_ids")
        embeddings = published_bytes(warehouse, "embeddings", "item_embeddings", "aligned")
        codes = published_bytes(warehouse, "semantic_ids", "semantic_ids", "lgsid")

        # An embedding lost on the way: the audit of the staged version stops the step, and
        # the semantic IDs downstream of it do not run.
        real = embeddings_stage.incremental_embeddings

        def lossy(*args, **kwargs) -> IncrementalResult:
            result = real(*args, **kwargs)
            return IncrementalResult(
                result.table.slice(0, result.table.num_rows - 1), result.encoded, result.reused
            )

        with monkeypatch.context() as patched:
            patched.setattr(embeddings_stage, "incremental_embeddings", lossy)
            # nothing is new, so the step would keep the published version without staging;
            # make it stage, as a run with a changed item does
            patched.setattr(embeddings_stage, "nothing_to_encode", lambda *a, **k: None)
            [bad] = materialize(
                [CITY], select="item_embeddings,semantic_ids", instance=instance, run_config=config
            )
        assert not bad.success
        assert set(bad.failed_checks) == {
            "item_embeddings_reference_complete",
            "item_embeddings_aligned_complete",
        }, bad
        assert "1 items missing" in failure_text(bad.run_id, instance)
        assert "semantic_ids" not in step_events(instance, bad.run_id, "STEP_START")
        assert published_bytes(warehouse, "embeddings", "item_embeddings", "aligned") == embeddings

        # Two items given the same code: nothing published.
        real_ids = semantic_ids_stage.incremental_semantic_ids

        def colliding(*args, **kwargs):
            result = real_ids(*args, **kwargs)
            result.table.loc[1, "code"] = result.table.loc[0, "code"]
            return result

        with monkeypatch.context() as patched:
            patched.setattr(semantic_ids_stage, "incremental_semantic_ids", colliding)
            [bad] = materialize([CITY], select="semantic_ids", instance=instance, run_config=config)
        assert not bad.success and bad.failed_checks == ["semantic_ids_unique"], bad
        assert "1 duplicate code values" in failure_text(bad.run_id, instance)
        assert step_events(instance, bad.run_id, "ASSET_MATERIALIZATION") == []
        assert published_bytes(warehouse, "semantic_ids", "semantic_ids", "lgsid") == codes
        assert [p.name for p in warehouse.version_root(CITY, "semantic_ids").iterdir()] == [
            warehouse.published(CITY, "semantic_ids")["version"]
        ]
