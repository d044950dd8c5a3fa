"""CTR datasets from a synthetic city: time split without leakage, negatives, unseen items,
persistence, and a backbone trained on them with semantic-ID features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import tiny_spec

from lgsid_pipeline.catalog import BACKBONES
from lgsid_pipeline.cities import CityConfig
from lgsid_pipeline.demo import generate_city
from lgsid_pipeline.ingest import clean_interactions, clean_items, read_city_source
from lgsid_pipeline.recommenders import evaluate_ctr, train_ctr
from lgsid_pipeline.recommenders.config import CtrConfig, DatasetConfig, TrainConfig
from lgsid_pipeline.recommenders.datasets import build_city_ctr_data, load_ctr_data, save_ctr_data
from lgsid_pipeline.tokenizer import LgsidTokenizer, TokenizerConfig
from lgsid_pipeline.warehouse import Warehouse

pytestmark = pytest.mark.slow  # seconds per test: left out of `make test-fast`

CONFIG = DatasetConfig(short_len=10, long_len=40, max_train_positives=6000, max_eval_positives=1500)


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, pd.DataFrame]:
    folder = tmp_path_factory.mktemp("city")
    generate_city(tiny_spec(n_items=500), folder)
    config = CityConfig("tiny", "synthetic", str(folder))
    source = read_city_source(config)
    items = clean_items(source.items, config, "Tinyville").clean.reset_index(drop=True)
    interactions = clean_interactions(source.interactions, items, "tiny").clean
    return items, interactions


@pytest.fixture(scope="module")
def data(city):
    return build_city_ctr_data(*city, CONFIG)


def test_split_never_leaks_later_check_ins_into_training(city, data) -> None:
    _, interactions = city
    times = pd.to_datetime(interactions["ts"], utc=True)
    assert (times < data.t1).mean() == pytest.approx(0.8, abs=0.02)
    train = data.splits["train"]
    ordered = interactions.assign(ts=times).sort_values(["user_id", "ts", "item_id"], kind="stable")
    timeline_times = ordered["ts"].dt.tz_convert(None).to_numpy()
    t1 = data.t1.tz_convert(None).to_datetime64()
    positives = train.labels == 1
    # the positive itself and every behaviour in its sequence happened before t1
    assert (timeline_times[train.history_end[positives]] < t1).all()
    batch = train.index(np.flatnonzero(positives)[:500])
    assert batch.long_mask.any()
    latest = train.history_end[positives][:500] - 1
    assert (timeline_times[latest] < t1).all()
    # sequences hold earlier check-ins only: the last behaviour precedes the sample
    test = data.splits["test"]
    assert (test.history_end > test.history_start).all()
    assert (timeline_times[test.history_end - 1] <= timeline_times[test.history_end]).all()


def test_negatives_are_unvisited_and_near_ones_are_near(data) -> None:
    train = data.splits["train"]
    per = 1 + CONFIG.near_negatives + CONFIG.random_negatives
    assert len(train) == per * data.stats["train_positives"]
    labels = train.labels.reshape(-1, per)
    assert labels[:, 0].all() and not labels[:, 1:].any()
    for k in range(0, data.stats["train_positives"], 97):
        sample = k * per
        seen = set(train.timeline_rows[train.history_start[sample] : train.history_end[sample] + 1])
        negatives = train.target_row[sample + 1 : sample + per]
        assert not seen & set(negatives.tolist())
    distance = train.distance_km.reshape(-1, per)
    assert np.median(distance[:, 1 : 1 + CONFIG.near_negatives]) < np.median(
        distance[:, 1 + CONFIG.near_negatives :]
    )


def test_items_unseen_in_training_keep_their_codes(city, data) -> None:
    items, _ = city
    x = np.random.default_rng(0).normal(size=(len(items), 16)).astype(np.float32)
    tokenizer = LgsidTokenizer(TokenizerConfig(codebook_sizes=[8, 8], epochs=2)).fit(items, x)
    table = pd.DataFrame(
        {
            "item_id": items["item_id"],
            "level_1": tokenizer.assign(items, x)[:, 0],
            "level_2": tokenizer.assign(items, x)[:, 1],
        }
    )
    codes = data.code_matrix(table, ["level_1", "level_2"])
    test = data.splits["test"].with_codes(codes)
    unseen = np.flatnonzero(test.row_item_index[test.target_row] == 0)
    assert data.stats["items_unseen_in_training"] > 0 and len(unseen) > 0
    batch = test.index(unseen[:50])
    assert (batch.target_item == 0).all()
    assert (batch.target_codes >= 0).all()  # represented by its codes, not dropped


def test_save_and_load_round_trip(tmp_path: Path, data) -> None:
    warehouse = Warehouse(tmp_path)
    save_ctr_data(warehouse, "tiny", data)
    loaded = load_ctr_data(warehouse, "tiny")
    assert loaded.t1 == data.t1 and loaded.stats == data.stats
    for name, split in data.splits.items():
        a, b = split.index(np.arange(64)), loaded.splits[name].index(np.arange(64))
        for field in ("user", "target_item", "hist_items", "long_items", "distance_km", "label"):
            assert torch.equal(getattr(a, field), getattr(b, field)), (name, field)


def test_bad_split_times_are_clear_errors(city) -> None:
    with pytest.raises(ValueError, match="t1 < t2"):
        build_city_ctr_data(*city, DatasetConfig(t1="2025-03-01", t2="2025-02-01"))
    with pytest.raises(ValueError, match="empty train or test period"):
        build_city_ctr_data(*city, DatasetConfig(t1="2030-01-01", t2="2030-02-01"))


@pytest.fixture(scope="module")
def city_codes(city, data) -> np.ndarray:
    """Two-level codes from a small LGSID tokenizer fitted on the city's items."""
    items, _ = city
    x = np.random.default_rng(0).normal(size=(len(items), 16)).astype(np.float32)
    tokenizer = LgsidTokenizer(TokenizerConfig(codebook_sizes=[8, 8], epochs=2)).fit(items, x)
    tokens = tokenizer.assign(items, x)
    table = pd.DataFrame(
        {"item_id": items["item_id"], "level_1": tokens[:, 0], "level_2": tokens[:, 1]}
    )
    return data.code_matrix(table, ["level_1", "level_2"])


@pytest.mark.parametrize("backbone", BACKBONES)
def test_every_backbone_learns_from_the_city(data, city_codes, backbone: str) -> None:
    """Each backbone, with geographic codes of the city, reaches a test AUC well above 0.5."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        splits = data.with_codes(city_codes)
        model_config = CtrConfig(
            n_users=data.n_users,
            n_items=data.n_items,
            n_categories=data.n_categories,
            codebook_sizes=[8, 8],
            backbone=backbone,
            dim=16,
            top_k=10,
        )
        result = train_ctr(
            model_config,
            splits["train"],
            splits["valid"],
            TrainConfig(epochs=2, batch_size=512, lr=3e-3),
        )
        assert evaluate_ctr(result.model, splits["test"])["auc"] > 0.7
    finally:
        torch.set_num_threads(threads)
