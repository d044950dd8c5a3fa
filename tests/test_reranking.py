"""The history-aware re-ranking: its candidate pool, the transition counts, what the fitted
classifier learns, persistence and its errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_generative import N_ITEMS, WALK_CODES, small_config, walk_events

from lgsid_pipeline.recommenders.generative import (
    recommend_top_k,
    save_generative,
    train_generative,
)
from lgsid_pipeline.recommenders.next_item import (
    PopularityNearLastBaseline,
    UserHistoryBaseline,
    build_next_item_examples,
    ranking_metrics,
)
from lgsid_pipeline.recommenders.reranking import (
    FEATURES,
    HistoryAwareRanker,
    TransitionCounts,
    load_ranker,
)


@pytest.fixture(scope="module")
def walk() -> dict:
    users, items, times = walk_events(n_users=120)
    splits = build_next_item_examples(users, items, times, 11.0, 14.0, max_history=4)
    result = train_generative(small_config("tiger", steps=60), WALK_CODES, splits)
    rng = np.random.default_rng(0)
    lat, lon = rng.uniform(40, 40.05, N_ITEMS), rng.uniform(-74, -73.95, N_ITEMS)
    near = PopularityNearLastBaseline(lat, lon).fit(splits["train"])
    moves = TransitionCounts(N_ITEMS).fit(splits["train"])
    return {
        "splits": splits,
        "result": result,
        "near": near,
        "lat": lat,
        "lon": lon,
        "ranker": HistoryAwareRanker(result, lat, lon, near, moves),
    }


def test_transition_counts_on_a_hand_made_example() -> None:
    histories = np.array([[-1, 0], [3, 0], [-1, 0], [2, 1], [-1, -1]])
    targets = np.array([1, 2, 1, 0, 3])  # 0 -> 1 twice, 0 -> 2 once, 1 -> 0 once
    moves = TransitionCounts(4).fit((histories, targets))
    assert moves.top(np.array([0, 1, 3, -1]), 2).tolist() == [[1, 2], [0, -1], [-1, -1], [-1, -1]]
    count, share = moves.lookup(np.array([0, -1]), np.array([[1, 2, 3, -1], [1, 2, 3, 0]]))
    assert count.tolist() == [[2, 1, 0, 0], [0, 0, 0, 0]]
    assert share[0].tolist() == pytest.approx([2 / 3, 1 / 3, 0, 0])


def test_candidates_pool_every_source_once(walk: dict) -> None:
    ranker, histories = walk["ranker"], walk["splits"]["valid"][0][:80]
    c = ranker.candidates(histories)
    assert c.features.shape == (*c.items.shape, len(FEATURES))
    beam, _ = recommend_top_k(walk["result"], WALK_CODES, histories, 10)
    floor, _ = UserHistoryBaseline(walk["near"]).recommend(histories, 10)
    moves = ranker.transitions.top(histories[:, -1], ranker.max_transitions)
    for row, items in enumerate(c.items):
        real = items[items >= 0]
        assert len(set(real)) == len(real)
        expected = set(beam[row]) | set(floor[row]) | set(moves[row][moves[row] >= 0])
        assert expected <= set(real.tolist())
    own = c.items == histories[:, -1:]
    assert (c.feature("is_last")[own] == 1).all() and (c.feature("visits")[own] > 0).all()


def test_fitted_ranker_learns_revisits_and_the_walk(walk: dict) -> None:
    ranker = walk["ranker"]
    histories, targets = walk["splits"]["valid"]
    tune, held = slice(0, len(targets) // 2), slice(len(targets) // 2, None)
    # the walk's next item is mostly item + 1: the re-ranking must not lose to the model
    ranker.fit((histories[tune], targets[tune]))
    plain, _ = recommend_top_k(walk["result"], WALK_CODES, histories[held], 10)
    mine = ranker.recommend(histories[held], 10)
    assert all(len(set(row)) == 10 for row in mine.tolist())
    hit = ranking_metrics(mine, targets[held], (10,))["hit@10"]
    assert hit >= ranking_metrics(plain, targets[held], (10,))["hit@10"] - 0.02
    # a target that is always the latest check-in: the classifier finds it first
    revisit = histories[:, -1]
    ranker.fit((histories[tune], revisit[tune]))
    got = ranker.recommend(histories[held], 10)
    assert ranking_metrics(got, revisit[held], (1,))["hit@1"] >= 0.95


def test_saved_ranker_recommends_the_same(walk: dict, tmp_path: Path) -> None:
    ranker = walk["ranker"]
    histories, targets = walk["splits"]["valid"]
    ranker.fit((histories, targets), drop=("distance",))
    save_generative(walk["result"], tmp_path / "model")
    ranker.save(tmp_path / "ranker")
    loaded = load_ranker(tmp_path / "ranker", tmp_path / "model", walk["lat"], walk["lon"])
    assert loaded.drop == ("distance",)
    assert (loaded.recommend(histories[:50], 10) == ranker.recommend(histories[:50], 10)).all()


def test_ranker_errors_are_clear(walk: dict) -> None:
    ranker = walk["ranker"]
    histories = walk["splits"]["valid"][0][:20]
    fresh = HistoryAwareRanker(
        walk["result"], walk["lat"], walk["lon"], walk["near"], ranker.transitions
    )
    with pytest.raises(RuntimeError, match="fit the ranker"):
        fresh.recommend(histories, 10)
    with pytest.raises(ValueError, match="only one class"):
        fresh.fit((histories, np.full(len(histories), -5)))
    with pytest.raises(ValueError, match="unknown feature groups"):
        fresh.fit((histories, histories[:, -1]), drop=("weather",))
    with pytest.raises(ValueError, match="item coordinates"):
        HistoryAwareRanker(
            walk["result"], walk["lat"][:3], walk["lon"][:3], walk["near"], ranker.transitions
        )
