"""The stages after alignment through Dagster: three tokenizers, semantic IDs, backfill,
retrain, `lgsid lookup`, the recommenders and `lgsid report` (tiny random encoder, small
synthetic city)."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from helpers import make_tiny_encoder, tiny_spec

from lgsid_pipeline.catalog import BACKBONES, CITY_CODE_ASSETS, NIGHTLY_JOB_NAME
from lgsid_pipeline.cities import CityConfig, CityRegistry
from lgsid_pipeline.cli import main
from lgsid_pipeline.demo import generate_city
from lgsid_pipeline.recommenders.config import GenerativeStageConfig
from lgsid_pipeline.recommenders.datasets import split_times_of
from lgsid_pipeline.recommenders.next_item import latest_histories
from lgsid_pipeline.recommenders.serving import FLOOR_SERVED
from lgsid_pipeline.registry import champion_folder
from lgsid_pipeline.report import city_report
from lgsid_pipeline.runner import execute_run_request, materialize, tick_sensor
from lgsid_pipeline.stages.generative import (
    city_catalogue,
    floor_models,
    next_item_splits,
    served_ranker,
)
from lgsid_pipeline.tokenizer import SUMMARY_KEYS
from lgsid_pipeline.warehouse import Warehouse

TOKENIZER_CONFIG = {"codebook_sizes": [16, 8, 8], "epochs": 6, "batch_size": 128}
KINDS = {
    "lgsid": "semantic_ids",
    "rqkmeans": "rqkmeans_semantic_ids",
    "rqvae": "rqvae_semantic_ids",
}
CODE_ASSETS = ",".join(KINDS.values())
GENERATIVE_CONFIG = {
    "variants": ["lgsid"],
    "steps": 40,
    "eval_every": 20,
    "d_model": 32,
    "beam_size": 10,
    "max_train_examples": 800,
    "max_valid_eval": 60,
    "max_test_examples": 100,
}


def assert_cache_is_what_was_served(
    warehouse: Warehouse, home: Path, user: str, served: list[dict]
) -> None:
    """The cached list is exactly what the model (or floor) it names gives the user."""
    catalogue = city_catalogue(warehouse, "tiny")
    settings = GenerativeStageConfig()
    item_ids = catalogue.item_ids
    if served[0]["model"] != FLOOR_SERVED:
        ranker, _, item_ids, _ = served_ranker(
            champion_folder("gen-tiger-tiny", home=home), catalogue
        )
    index = {item: i for i, item in enumerate(item_ids)}
    events = catalogue.events[catalogue.events["item_id"].astype(str).isin(index)]
    users, histories = latest_histories(
        events["user_id"].astype(str).to_numpy(),
        events["item_id"].astype(str).map(index).to_numpy(),
        events["ts"],
        settings.history_window,
    )
    mine = histories[list(users).index(user)][None]
    if served[0]["model"] == FLOOR_SERVED:
        train = next_item_splits(catalogue, *split_times_of(warehouse, "tiny"), settings)["train"]
        items, _ = floor_models(catalogue, train)["user_history_2km"].recommend(mine, 10)
    else:
        items = ranker.recommend(mine, 10)
    assert [item_ids[i] for i in items[0]] == [r["item_id"] for r in served]


def _run_config(encoder: Path) -> dict:
    return {
        "resources": {"workspace": {"config": {"encoder_path": str(encoder)}}},
        "ops": {
            "geo_negatives": {"config": {"max_anchors": 150}},
            "reward_model": {"config": {"epochs": 5}},
            "geo_pairs": {"config": {"n_anchors": 150}},
            "aligned_encoder": {"config": {"steps": 10}},
            **{
                name: {"config": TOKENIZER_CONFIG}
                for name in ("tokenizer", "rqkmeans_tokenizer", "rqvae_tokenizer")
            },
            "recommender_datasets": {
                "config": {
                    "max_train_positives": 1500,
                    "max_eval_positives": 400,
                    "short_len": 10,
                    "long_len": 30,
                }
            },
            **{
                backbone: {"config": {"variants": ["none", "lgsid"], "epochs": 2, "dim": 16}}
                for backbone in BACKBONES
            },
            **{
                name: {"config": GENERATIVE_CONFIG}
                for name in ("tiger", "onerec", "generative_baseline")
            },
        },
    }


def _metadata(instance: dg.DagsterInstance, run_id: str, asset: str) -> dict:
    for event in instance.all_logs(run_id):
        if event.dagster_event and event.dagster_event.event_type_value == "ASSET_MATERIALIZATION":
            materialization = event.dagster_event.event_specific_data.materialization
            if materialization.asset_key.to_user_string() == asset:
                return {k: v.value for k, v in materialization.metadata.items()}
    raise AssertionError(f"no materialization of {asset} in run {run_id}")


def _land_items(folder: Path, landing: Path, n: int) -> list[str]:
    """Land ``n`` new venues (copies of existing ones, moved 100 m) for the city."""
    items = pd.read_parquet(folder / "items.parquet")
    new = items.head(n).copy()
    new["item_id"] = [f"new-{i:03d}" for i in range(n)]
    new["name"] = new["name"] + " Annex"
    new["latitude"] = new["latitude"] + 0.001
    landing.mkdir(parents=True)
    new.to_parquet(landing / "items-backfill.parquet")
    return new["item_id"].tolist()


@pytest.mark.slow
def test_tokenization_stage(
    lgsid_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = lgsid_env / "synthetic" / "tiny"
    generate_city(tiny_spec(n_items=300), folder)
    CityRegistry(lgsid_env).add(CityConfig("tiny", "synthetic", str(folder)))
    run_config = _run_config(make_tiny_encoder(tmp_path / "encoder"))
    warehouse = Warehouse(lgsid_env)
    with dg.instance_for_test() as instance:
        results = materialize(["tiny"], instance=instance, run_config=run_config)
        assert all(r.success for r in results), results
        assert not any(r.failed_checks for r in results), results
        first = {kind: warehouse.read_table("semantic_ids", "tiny", kind) for kind in KINDS}
        n_items = len(warehouse.read_table("items", "tiny"))
        for kind, table in first.items():
            assert len(table) == n_items and table["code"].is_unique, kind
            assert (table["tokenizer"] == kind).all()

        # Nightly re-tokenization with nothing new: nothing assigned, nothing changed.
        nightly = materialize(
            ["tiny"], select=CODE_ASSETS, instance=instance, run_config=run_config
        )
        meta = _metadata(instance, nightly[0].run_id, "semantic_ids")
        assert (meta["assigned"], meta["reused"], meta["churn"]) == (0, n_items, 0.0)

        # The whole nightly selection with nothing new: no source is read again, nothing is
        # encoded, and no stage writes a new table version.
        stages = ("ingest", "embeddings", "semantic_ids")
        before = {stage: warehouse.published("tiny", stage)["version"] for stage in stages}
        noop = materialize(
            ["tiny"], select=",".join(CITY_CODE_ASSETS), instance=instance, run_config=run_config
        )
        assert all(r.success for r in noop), noop
        assert {stage: warehouse.published("tiny", stage)["version"] for stage in stages} == before
        metadata = {
            e.dagster_event.event_specific_data.materialization.asset_key.to_user_string(): {
                k: v.value
                for k, v in e.dagster_event.event_specific_data.materialization.metadata.items()
            }
            for r in noop
            for e in instance.all_logs(r.run_id)
            if e.dagster_event and e.dagster_event.event_type_value == "ASSET_MATERIALIZATION"
        }
        assert metadata["items"]["unchanged"] and metadata["items"]["version"] == before["ingest"]
        assert metadata["item_embeddings"]["encoded"] == 0
        assert metadata["item_embeddings"]["unchanged"] and metadata["semantic_ids"]["unchanged"]

        # Backfill: venues landed for the city are picked up by the sensor; they get codes
        # from the frozen tokenizers, old codes stay.
        new_ids = _land_items(folder, lgsid_env / "landing" / "tiny", 12)
        tick = tick_sensor("landing_sensor", instance)
        assert [r.partition_key for r in tick.run_requests] == ["tiny"]
        backfill = execute_run_request(tick.run_requests[0], NIGHTLY_JOB_NAME, instance, run_config)
        assert backfill.success, backfill
        meta = _metadata(instance, backfill.run_id, "semantic_ids")
        assert (meta["assigned"], meta["reused"]) == (12, n_items)
        after = warehouse.read_table("semantic_ids", "tiny", "lgsid").set_index("item_id")
        assert after["code"].is_unique
        assert set(new_ids) <= set(after.index)
        old = first["lgsid"].set_index("item_id")["code"]
        assert (after.loc[old.index, "code"] == old).all()
        assert after["tokenizer_version"].nunique() == 1

        # Retraining (warm start from the champion) keeps codes stable.
        retrain = materialize(
            ["tiny"], select="tokenizer,semantic_ids", instance=instance, run_config=run_config
        )
        assert all(r.success for r in retrain), retrain
        model_meta = _metadata(instance, retrain[0].run_id, "tokenizer")
        assert model_meta["warm_started"] and 0 <= model_meta["retrain_churn"] <= 0.05
        ids_meta = _metadata(instance, retrain[1].run_id, "semantic_ids")
        assert ids_meta["churn"] <= 0.05

    full_report = city_report(warehouse, "tiny")
    auc = full_report["discriminative"]["auc"]
    assert set(auc) == set(BACKBONES)
    assert all(0.55 < row[v] <= 1 for row in auc.values() for v in ("none", "lgsid")), auc
    generative = full_report["generative"]
    assert set(generative) >= {"tiger", "tiger_model_only", "onerec", "floors", "gate"}
    assert all(0 <= generative[m]["lgsid"]["hit@10"] <= 1 for m in ("tiger", "onerec"))
    assert set(generative["floors"]) == {"popularity_2km", "user_history_2km"}
    assert generative["gate"]["tiger"]["serve"] in ("candidate", "champion", "floor")
    report = full_report["tokenizers"]
    assert set(report) == set(KINDS)
    for figures in report.values():
        assert set(SUMMARY_KEYS) <= set(figures) and figures["unique_after_dedup"]
    assert report["lgsid"]["nmi_level2"] > report["rqkmeans"]["nmi_level2"]

    # lookup: an item, then the items under its two-token prefix.
    item_id = new_ids[0]
    capsys.readouterr()
    assert main(["lookup", "--city", "tiny", "--item", item_id, "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["item_id"] == item_id and row["code"] == after.loc[item_id, "code"]
    assert row["name"].endswith("Annex") and row["admin_path"]
    prefix = "-".join(row["code"].split("-")[:2])
    assert main(["lookup", "--city", "tiny", "--code", prefix, "--json", "--limit", "500"]) == 0
    under = json.loads(capsys.readouterr().out)
    assert item_id in {r["item_id"] for r in under["items"]}
    assert all(r["code"].startswith(prefix + "-") for r in under["items"])
    expected = (after["code"].str.startswith(prefix + "-")).sum()
    assert under["matches"] == expected
    assert main(["lookup", "--city", "tiny", "--code", row["code"]]) == 0
    assert main(["lookup", "--city", "nowhere", "--item", "x"]) == 2
    assert "unknown city 'nowhere'" in capsys.readouterr().err
    assert main(["lookup", "--city", "tiny", "--item", "no-such-item"]) == 2
    assert main(["lookup", "--city", "tiny", "--code", "1-x"]) == 2
    assert "invalid code" in capsys.readouterr().err

    # The per-user cache: `lgsid recommend` serves what the gate chose, and says which.
    interactions = warehouse.read_table("interactions", "tiny")
    user = str(interactions["user_id"].iloc[0])
    assert main(["recommend", "--city", "tiny", "--user", user, "--json"]) == 0
    served = json.loads(capsys.readouterr().out)["items"]
    assert [r["rank"] for r in served] == list(range(1, 11))
    assert_cache_is_what_was_served(warehouse, lgsid_env, user, served)
    assert main(["recommend", "--city", "tiny", "--user", user]) == 0
    assert f"served by {served[0]['model']}" in capsys.readouterr().out
    assert main(["recommend", "--city", "tiny", "--user", "nobody"]) == 1
    assert "no cached recommendations" in capsys.readouterr().err
