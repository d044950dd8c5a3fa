"""Geo negatives, reward model, G-DPO and the alignment stage end to end (tiny encoder)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import torch
from helpers import make_tiny_encoder, tiny_spec
from scipy.stats import binomtest

from lgsid_pipeline.alignment.config import GdpoConfig, RewardConfig
from lgsid_pipeline.alignment.gdpo import gdpo_loss
from lgsid_pipeline.alignment.reward import train_reward_model
from lgsid_pipeline.alignment.stage import reward_dataset
from lgsid_pipeline.cities import CityConfig, CityRegistry
from lgsid_pipeline.demo import generate_city
from lgsid_pipeline.embeddings import embedding_matrix
from lgsid_pipeline.encoder import TextEncoder, item_prompts
from lgsid_pipeline.geo.negatives import (
    GeoNegativeConfig,
    location_keys,
    sample_geo_negatives,
    soft_labels,
)
from lgsid_pipeline.ingest import clean_items, read_city_source
from lgsid_pipeline.registry import ModelArtifactError, champion_folder
from lgsid_pipeline.report import city_report
from lgsid_pipeline.runner import materialize
from lgsid_pipeline.warehouse import Warehouse

pytestmark = pytest.mark.slow  # seconds per test: left out of `make test-fast`


@pytest.fixture(scope="module")
def tiny_city(tmp_path_factory: pytest.TempPathFactory) -> tuple[CityConfig, pd.DataFrame]:
    folder = tmp_path_factory.mktemp("city")
    generate_city(tiny_spec(n_items=400), folder)
    config = CityConfig("tiny", "synthetic", str(folder))
    data = read_city_source(config)
    return config, clean_items(data.items, config, "Tinyville").clean


@pytest.fixture(scope="module")
def tiny_encoder_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_encoder(tmp_path_factory.mktemp("encoder"))


def test_rank_soft_labels() -> None:
    # K = 3 negatives at 5, 1 and 3 km: ranks 3, 1, 2 -> (3 - r + 1) / 4.
    labels = soft_labels(np.array([5.0, 1.0, 3.0]), GeoNegativeConfig(k=3))
    assert labels.tolist() == [0.25, 0.75, 0.5]
    exp = soft_labels(np.array([0.0, 3.0]), GeoNegativeConfig(k=2, label="exp", sigma_km=3.0))
    assert exp == pytest.approx([1.0, np.exp(-1.0)])


def test_geo_negatives_lists(tiny_city: tuple[CityConfig, pd.DataFrame]) -> None:
    _, items = tiny_city
    config = GeoNegativeConfig(k=15, max_anchors=200)
    sampled = sample_geo_negatives(items, config)
    assert len(sampled) == 200 * 16
    assert (sampled.groupby("anchor_item_id").size() == 16).all()
    true = sampled[sampled["slot"] == 0]
    assert (true["anchor_item_id"] == true["location_item_id"]).all()
    assert (true["soft_label"] == 1.0).all() and (true["distance_km"] == 0).all()
    # Every mismatched prompt names another area than the true one.
    key = dict(zip(items["item_id"], location_keys(items), strict=True))
    neg = sampled[sampled["slot"] > 0]
    assert (neg["anchor_item_id"].map(key) != neg["location_item_id"].map(key)).mean() > 0.98
    by_kind = neg.groupby("kind")["distance_km"].median()
    assert by_kind["near"] < by_kind["far"]
    assert neg["soft_label"].between(0, 1, inclusive="neither").all()


def test_gdpo_loss_starts_at_log2_and_prefers_chosen() -> None:
    torch.manual_seed(0)
    ref = tuple(torch.nn.functional.normalize(torch.randn(8, 16), dim=-1) for _ in range(3))
    policy = tuple(r.clone().requires_grad_(True) for r in ref)
    config = GdpoConfig(lam=0.0)
    loss, parts = gdpo_loss(policy, ref, config)
    assert parts["dpo"] == pytest.approx(np.log(2), abs=1e-5)
    loss.backward()
    # One gradient step on the anchors raises the chosen item's log-probability margin.
    stepped = (policy[0] - 0.5 * policy[0].grad, policy[1], policy[2])
    _, after = gdpo_loss(tuple(t.detach() for t in stepped), ref, config)
    assert after["dpo"] < parts["dpo"]
    _, with_sim = gdpo_loss(ref, ref, GdpoConfig(lam=1.0))
    assert with_sim["sim"] < 0  # own reference is closer than the others'


def test_reward_model_beats_chance(
    tiny_city: tuple[CityConfig, pd.DataFrame], tiny_encoder_path: Path
) -> None:
    _, items = tiny_city
    encoder = TextEncoder.load(tiny_encoder_path)
    negatives = sample_geo_negatives(items, GeoNegativeConfig(max_anchors=400))
    embeddings, labels, distances = reward_dataset(encoder, items, negatives)
    result = train_reward_model(embeddings, labels, distances, RewardConfig(epochs=80, lr=3e-3))
    metrics = result.metrics
    assert metrics["chance_top1"] == pytest.approx(1 / 16)
    # Held-out anchors: the true location is ranked first far more often than 1 in 16.
    hits = round(metrics["top1_accuracy"] * metrics["lists"])
    assert metrics["top1_accuracy"] > 2.5 / 16
    assert binomtest(hits, int(metrics["lists"]), 1 / 16, alternative="greater").pvalue < 1e-3
    assert metrics["kendall_tau"] > 0.2


def test_missing_model_is_a_clear_error(lgsid_env: Path) -> None:
    with pytest.raises(ModelArtifactError, match="no registered model 'lgsid-nothing'"):
        champion_folder("lgsid-nothing")


def _materialization(instance: dg.DagsterInstance, run_id: str, asset: str) -> dict:
    for event in instance.all_logs(run_id):
        if event.dagster_event and event.dagster_event.event_type_value == "ASSET_MATERIALIZATION":
            materialization = event.dagster_event.event_specific_data.materialization
            if materialization.asset_key.to_user_string() == asset:
                return {k: v.value for k, v in materialization.metadata.items()}
    raise AssertionError(f"no materialization of {asset} in run {run_id}")


@pytest.mark.slow
def test_alignment_stage_end_to_end(lgsid_env: Path, tiny_encoder_path: Path) -> None:
    folder = lgsid_env / "synthetic" / "tiny"
    generate_city(tiny_spec(n_items=800), folder)
    CityRegistry(lgsid_env).add(CityConfig("tiny", "synthetic", str(folder)))
    run_config = {
        "resources": {"workspace": {"config": {"encoder_path": str(tiny_encoder_path)}}},
        "ops": {
            "geo_negatives": {"config": {"max_anchors": 400}},
            "reward_model": {"config": {"epochs": 60, "lr": 3e-3}},
            "geo_pairs": {"config": {"n_anchors": 400}},
            "cooccurrence_pairs": {"config": {"quantile": 0.5}},
            "aligned_encoder": {"config": {"steps": 200, "lr": 2e-3, "lam": 1.4}},
        },
    }
    with dg.instance_for_test() as instance:
        results = materialize(
            ["tiny"], select="*item_embeddings", instance=instance, run_config=run_config
        )
        assert [r.success for r in results] == [True] * 5, results
        assert [r.city for r in results] == ["tiny", "(global)", "tiny", "(global)", "tiny"]
        first = _materialization(instance, results[-1].run_id, "item_embeddings")
        assert first["encoded"] == 800
        again = materialize(
            ["tiny"], select="item_embeddings", instance=instance, run_config=run_config
        )
        assert again[0].success
        second = _materialization(instance, again[0].run_id, "item_embeddings")
        assert (second["encoded"], second["reused"]) == (0, 800)
    report = city_report(Warehouse(lgsid_env), "tiny")["alignment"]
    before, after = report["before"], report["after"]
    assert after["nmi_level2"] > before["nmi_level2"]
    assert after["c_at_10"] > before["c_at_10"]
    # Semantics kept: former semantic neighbours stay close. Stated bound for this tiny random
    # encoder: mean cosine 0.7 (the real encoder's figure is in bench/results/alignment.json).
    assert after["similarity_at_10"] > 0.7
    assert report["reward"]["top1_accuracy"] > 1.5 / 16
    # The registered adapter, loaded on a fresh base, reproduces the stored embeddings.
    encoder = TextEncoder.load(tiny_encoder_path)
    encoder.load_adapter(champion_folder("lgsid-aligned-encoder", home=lgsid_env))
    warehouse = Warehouse(lgsid_env)
    stored = warehouse.read_arrow("item_embeddings", "tiny", "aligned")
    items = warehouse.read_table("items", "tiny")
    fresh = encoder.encode(item_prompts(items.head(50)))
    np.testing.assert_allclose(fresh, embedding_matrix(stored)[:50], atol=2e-2)


@pytest.mark.slow
def test_pipeline_with_the_real_encoder_on_a_small_city(lgsid_env: Path) -> None:
    """The whole stage with the bundled all-MiniLM-L6-v2 weights (the default encoder)."""
    folder = lgsid_env / "synthetic" / "small"
    generate_city(tiny_spec(n_items=300, seed=5), folder)
    CityRegistry(lgsid_env).add(CityConfig("small", "synthetic", str(folder)))
    run_config = {
        "ops": {
            "geo_negatives": {"config": {"max_anchors": 120}},
            "reward_model": {"config": {"epochs": 20}},
            "geo_pairs": {"config": {"n_anchors": 120}},
            "aligned_encoder": {"config": {"steps": 20, "batch_size": 16, "lr": 1e-3}},
        }
    }
    with dg.instance_for_test() as instance:
        results = materialize(
            ["small"], select="*item_embeddings", instance=instance, run_config=run_config
        )
    assert all(r.success for r in results), results
    warehouse = Warehouse(lgsid_env)
    aligned = embedding_matrix(warehouse.read_arrow("item_embeddings", "small", "aligned"))
    assert aligned.shape == (300, 384)
    report = city_report(warehouse, "small")["alignment"]
    assert report["after"]["c_at_10"] > report["before"]["c_at_10"]
    assert report["after"]["similarity_at_10"] > 0.7 * report["before"]["similarity_at_10"]
