"""What is served: the champion gate (a worse model is refused and the cache stays on the
previous champion; with no model that beats floor (b), floor (b) is served), and intervals."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lgsid_pipeline.catalog import generative_model as model_name
from lgsid_pipeline.metrics.intervals import (
    bootstrap_interval,
    intervals_overlap,
    per_example,
    summarize_ranks,
    target_ranks,
)
from lgsid_pipeline.recommenders.config import GenerativeStageConfig
from lgsid_pipeline.recommenders.serving import FLOOR_SERVED, champion_gate
from lgsid_pipeline.registry import champion_version
from lgsid_pipeline.stages.cache import build_topk_cache
from lgsid_pipeline.stages.context import StageContext
from lgsid_pipeline.stages.generative import (
    city_catalogue,
    floor_models,
    next_item_splits,
    train_and_gate,
)
from lgsid_pipeline.warehouse import Warehouse

pytestmark = pytest.mark.slow  # seconds per test: left out of `make test-fast`

N_ITEMS = 64
T1, T2 = pd.Timestamp("2024-01-01 11:00", tz="UTC"), pd.Timestamp("2024-01-01 14:00", tz="UTC")


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_champion_gate_decisions() -> None:
    first = champion_gate(0.5, 0.4, None)
    assert first.promote and first.serve == "candidate"
    worse = champion_gate(0.45, 0.4, 0.5)
    assert not worse.promote and worse.serve == "champion" and "champion" in worse.reason
    below_floor = champion_gate(0.35, 0.4, 0.5)
    assert not below_floor.promote and below_floor.serve == "champion"
    assert "floor (b)" in below_floor.reason
    nobody = champion_gate(0.35, 0.4, None)
    assert not nobody.promote and nobody.serve == "floor"
    stale = champion_gate(0.35, 0.4, 0.38)  # the champion no longer beats the floor either
    assert stale.serve == "floor"
    tie = champion_gate(0.4, 0.4, None)  # a tie is not a win
    assert not tie.promote


def test_intervals_from_ranks() -> None:
    ranked = np.array([[3, 1, 2], [5, 6, 7], [9, 8, 7]])
    ranks = target_ranks(ranked, np.array([1, 4, 9]))
    assert ranks.tolist() == [1, -1, 0]
    assert per_example(ranks, "hit@1").tolist() == [0, 0, 1]
    assert per_example(ranks, "mrr").tolist() == [0.5, 0, 1]
    assert per_example(ranks, "ndcg@2") == pytest.approx([1 / np.log2(3), 0, 1])
    rng = np.random.default_rng(0)
    hits = (rng.random((3, 4000)) < 0.3).astype(float)
    lo, hi = bootstrap_interval(hits)
    assert lo < 0.3 < hi and 0.01 < hi - lo < 0.05  # about 0.3 +- 2 * sqrt(.21 / 12000)
    summary = summarize_ranks(np.where(hits > 0, 0, -1))
    assert summary["seeds"] == 3 and summary["hit@10"] == pytest.approx(hits.mean())
    assert intervals_overlap([0.1, 0.2], [0.15, 0.3]) and not intervals_overlap([0, 1], [2, 3])
    with pytest.raises(ValueError, match="metric"):
        per_example(ranks, "recall@3")


def walk_city(warehouse: Warehouse, city: str, seed: int = 0, revisit: bool = False) -> None:
    """A city of 64 items on a ring; each user mostly steps to the next item (so the next
    item is rarely one the user has visited: floor (b) is weak, a trained model strong).
    With ``revisit`` each user goes back and forth between three own items from the start
    (floor (b) is perfect: no model can beat it)."""
    rng = np.random.default_rng(seed)
    items = pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(N_ITEMS)],
            "latitude": rng.uniform(40, 40.05, N_ITEMS),
            "longitude": rng.uniform(-74, -73.95, N_ITEMS),
        }
    )
    rows = []
    for user in range(200):
        own = rng.choice(N_ITEMS, 3, replace=False)
        item, t = int(own[0]), rng.uniform(0, 2 if revisit else 10)
        for _ in range(12):
            rows.append(
                (f"u{user}", f"i{item}", T1 - pd.Timedelta(hours=11) + pd.Timedelta(hours=t))
            )
            if revisit:
                item = int(own[len(rows) % 3])
            elif rng.random() < 0.85:
                item = (item + 1) % N_ITEMS
            else:
                item = int(rng.integers(N_ITEMS))
            t += rng.uniform(0.5, 1.5)
    events = pd.DataFrame(rows, columns=["user_id", "item_id", "ts"])
    index = np.arange(N_ITEMS)
    codes = pd.DataFrame(
        {
            "item_id": items["item_id"],
            "level_1": index // 16,
            "level_2": (index // 2) % 8,
            "dedup": index % 2,
        }
    )
    codes["code"] = [
        f"{a}-{b}-{c}" for a, b, c in codes[["level_1", "level_2", "dedup"]].itertuples(index=False)
    ]
    warehouse.write_table("items", city, items)
    warehouse.write_table("interactions", city, events)
    warehouse.write_table("semantic_ids", city, codes, part="lgsid")


def stage_config(**overrides: object) -> GenerativeStageConfig:
    values: dict = {
        "variants": ["lgsid"],
        "d_model": 64,
        "steps": 150,
        "eval_every": 75,
        "batch_size": 64,
        "lr": 5e-3,
        "beam_size": 10,
        "max_history": 4,
        "history_window": 20,
        "max_valid_eval": 300,
        "max_test_examples": 300,
    }
    return GenerativeStageConfig(**{**values, **overrides})


def test_gate_refuses_a_worse_model_and_the_cache_stays_on_the_champion(tmp_path: Path) -> None:
    ctx = StageContext.at(tmp_path / "home")
    warehouse, home = ctx.warehouse, ctx.home
    walk_city(warehouse, "walk")
    name = model_name("tiger", "walk")

    good = train_and_gate(ctx, "walk", "tiger", T1, T2, stage_config(), tmp_path / "work-good")
    assert good.decision.promote, good.decision.reason
    assert champion_version(name, home) == good.version
    cache = build_topk_cache(ctx, "walk", "tiger", 10, 20, False, T1, T2)
    assert cache.served == f"tiger/lgsid v{good.version} + history"
    before = cache.table.drop(columns="refreshed_at")

    worse = train_and_gate(
        ctx,
        "walk",
        "tiger",
        T1,
        T2,
        stage_config(steps=1, eval_every=1, max_train_examples=30),
        tmp_path / "work-worse",
    )
    assert not worse.decision.promote and worse.decision.serve == "champion"
    assert worse.decision.champion is not None
    assert worse.decision.candidate < worse.decision.champion
    assert worse.version != good.version
    assert champion_version(name, home) == good.version  # still the first model
    again = build_topk_cache(ctx, "walk", "tiger", 10, 20, worse.decision.serve == "floor", T1, T2)
    assert again.served == cache.served
    pd.testing.assert_frame_equal(again.table.drop(columns="refreshed_at"), before)


def test_without_a_qualifying_model_the_cache_serves_floor_b(tmp_path: Path) -> None:
    ctx = StageContext.at(tmp_path / "home")
    warehouse, home = ctx.warehouse, ctx.home
    walk_city(warehouse, "walk", seed=1, revisit=True)
    # no model at all: floor (b), exactly as the floor ranks each user's latest history
    cache = build_topk_cache(ctx, "walk", "tiger", 10, 20, False, T1, T2)
    assert cache.served == FLOOR_SERVED
    catalogue = city_catalogue(warehouse, "walk")
    train = next_item_splits(catalogue, T1, T2, stage_config())["train"]
    floor = floor_models(catalogue, train)["user_history_2km"]
    user_rows = cache.table[cache.table["user_id"] == "u3"].sort_values("rank")
    events = catalogue.events[catalogue.events["user_id"] == "u3"].sort_values("ts")
    history = events["item_index"].to_numpy()[-20:]
    expected, _ = floor.recommend(
        np.pad(history, (20 - len(history), 0), constant_values=-1)[None], 10
    )
    assert user_rows["item_id"].tolist() == [catalogue.item_ids[i] for i in expected[0]]
    # floor (b) is perfect here: a trained model cannot beat it, so it is registered but
    # not promoted, and the cache keeps serving the floor
    model = train_and_gate(
        ctx,
        "walk",
        "tiger",
        T1,
        T2,
        stage_config(steps=20, eval_every=10),
        tmp_path / "work",
    )
    assert model.decision.floor == 1.0
    assert not model.decision.promote and model.decision.serve == "floor"
    again = build_topk_cache(ctx, "walk", "tiger", 10, 20, model.decision.serve == "floor", T1, T2)
    assert again.served == FLOOR_SERVED
    assert champion_version(model_name("tiger", "walk"), home) is None
