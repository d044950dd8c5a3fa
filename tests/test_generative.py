"""Generative recommenders (TIGER, OneRec-style) over semantic-ID codes: example building,
the code trie and constrained beam search, metrics, learning on a synthetic walk, persistence
and consistency of the top-K cache with the model."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lgsid_pipeline.model_files import ModelFileError
from lgsid_pipeline.recommenders.config import GenerativeConfig
from lgsid_pipeline.recommenders.decoding import constrained_beam_search, score_items
from lgsid_pipeline.recommenders.generative import (
    GenerativeResult,
    build_generative_model,
    evaluate_generative,
    load_generative,
    recommend_top_k,
    save_generative,
    train_generative,
)
from lgsid_pipeline.recommenders.next_item import (
    PopularityNearLastBaseline,
    UserHistoryBaseline,
    build_next_item_examples,
    latest_histories,
    ranking_metrics,
)
from lgsid_pipeline.recommenders.trie import N_SPECIAL, CodeVocabulary, PrefixTrie

pytestmark = pytest.mark.slow  # seconds per test: left out of `make test-fast`

# synthetic walk: 64 items, code (i // 16, (i // 2) % 8, i % 2) - the last level plays the
# de-duplication token; each user steps to item i + 1 with probability 0.85, else jumps
N_ITEMS, STEP_P, MAX_HISTORY = 64, 0.85, 4
WALK_CODES = np.stack(
    [np.arange(N_ITEMS) // 16, (np.arange(N_ITEMS) // 2) % 8, np.arange(N_ITEMS) % 2], axis=1
)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def walk_events(
    n_users: int = 200, steps: int = 12, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    users, items, times = [], [], []
    for user in range(n_users):
        item, t = int(rng.integers(N_ITEMS)), rng.uniform(0, 10)
        for _ in range(steps):
            users.append(f"u{user}")
            items.append(item)
            times.append(t)
            item = (item + 1) % N_ITEMS if rng.random() < STEP_P else int(rng.integers(N_ITEMS))
            t += rng.uniform(0.5, 1.5)
    return np.array(users), np.array(items), np.array(times)


@pytest.fixture(scope="module")
def walk_splits(one_thread: None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    users, items, times = walk_events()
    return build_next_item_examples(users, items, times, 11.0, 14.0, max_history=MAX_HISTORY)


def small_config(kind: str, **overrides: object) -> GenerativeConfig:
    values: dict = {
        "kind": kind,
        "d_model": 64,
        "d_ff": 128,
        "dropout": 0.0,
        "max_history": MAX_HISTORY,
        "steps": 150,
        "eval_every": 50,
        "batch_size": 64,
        "lr": 5e-3,
        "beam_size": 10,
        "max_valid_eval": 100,
        "patience": 3,
        "seed": 0,
    }
    return GenerativeConfig(**{**values, **overrides})


# every model kind, reading the history as code tokens and (``<kind>/items``) as check-ins
TRAINED = ("tiger", "onerec", "tiger/items", "onerec/items")


@pytest.fixture(scope="module")
def trained(walk_splits: dict) -> dict[str, GenerativeResult]:
    out = {}
    for name in TRAINED:
        kind, _, encoding = name.partition("/")
        config = small_config(kind, history_encoding=encoding or "tokens")
        out[name] = train_generative(config, WALK_CODES, walk_splits)
    return out


def test_items_encoding_reads_one_position_per_check_in(trained: dict, walk_splits: dict) -> None:
    """The ``items`` encoding gives the network one position per check-in; a history that
    differs only in a check-in beyond the first ``max_history`` tokens' worth still differs
    in the model's scores (every check-in is read, not only the first tokens)."""
    tokens_model, items_model = trained["tiger"].model, trained["tiger/items"].model
    assert tokens_model.history_positions == MAX_HISTORY * WALK_CODES.shape[1]
    assert items_model.history_positions == MAX_HISTORY
    vocab = trained["tiger/items"].vocabulary
    histories = walk_splits["test"][0][:8].copy()
    changed = histories.copy()
    changed[:, 0] = (changed[:, 0] + 1) % N_ITEMS  # the oldest check-in only
    with torch.no_grad():
        a = items_model.prepare(torch.from_numpy(vocab.history_tokens(histories)))["hidden"]
        b = items_model.prepare(torch.from_numpy(vocab.history_tokens(changed)))["hidden"]
    assert a.shape[1] == MAX_HISTORY + 1  # the check-ins and EOS
    assert not torch.allclose(a[:, -1], b[:, -1])
    with pytest.raises(ValueError, match="history_encoding"):
        small_config("tiger", history_encoding="characters")


# ----------------------------------------------------------------- trie and beam search


def sparse_catalogue(seed: int = 0, n_items: int = 40, sizes: tuple = (5, 6, 3)) -> np.ndarray:
    """Unique codes covering only part of the code space (so many prefixes are invalid)."""
    rng = np.random.default_rng(seed)
    keys = rng.choice(int(np.prod(sizes)), n_items, replace=False)
    return np.stack(np.unravel_index(keys, sizes), axis=1).astype(np.int64)


def test_tokenizer_round_trip_and_errors() -> None:
    codes = sparse_catalogue()
    vocab = CodeVocabulary(codes)
    assert vocab.depth == 3 and vocab.vocab_size == N_SPECIAL + int((codes.max(0) + 1).sum())
    tokens = vocab.item_tokens(np.arange(len(codes)))
    assert (vocab.decode(tokens) == np.arange(len(codes))).all()
    assert (tokens >= N_SPECIAL).all() and (tokens < vocab.vocab_size).all()
    assert (vocab.history_tokens(np.array([[-1, 3]]))[0, :3] == 0).all()  # padding -> PAD
    bad = tokens[0].copy()
    bad[0] = bad[1]  # a level-1 token in the level-0 slot
    assert vocab.decode(bad[None])[0] == -1
    with pytest.raises(ValueError, match="unique"):
        CodeVocabulary(np.array([[0, 1], [0, 1]]))


def test_trie_accepts_exactly_the_catalogue() -> None:
    codes = sparse_catalogue()
    vocab = CodeVocabulary(codes)
    trie = PrefixTrie(vocab)
    code_set = {tuple(c) for c in codes.tolist()}
    for depth in range(3):
        prefixes = sorted({c[:depth] for c in code_set})
        batch = np.array(
            [vocab.offsets[:depth] + np.array(p, dtype=np.int64) for p in prefixes], dtype=np.int64
        ).reshape(len(prefixes), depth)
        mask = trie.allowed_mask(batch)
        for row, p in enumerate(prefixes):
            expected = sorted(
                {int(vocab.offsets[depth] + c[depth]) for c in code_set if c[:depth] == p}
            )
            assert trie.allowed(batch[row]).tolist() == expected
            assert mask[row].nonzero()[0].tolist() == expected
    missing = next(
        (a, b) for a in range(5) for b in range(6) if not any(c[:2] == (a, b) for c in code_set)
    )
    invalid = vocab.offsets[:2] + np.array(missing)
    assert trie.allowed(invalid).size == 0 and not trie.contains(invalid)
    assert not trie.allowed_mask(invalid[None]).any()
    assert trie.allowed([vocab.offsets[1]]).size == 0  # a level-1 token cannot come first
    assert trie.contains(vocab.item_tokens(np.array(7)))
    with pytest.raises(ValueError, match="prefix"):
        trie.allowed(vocab.item_tokens(np.array(7)))  # a full code has no continuation


@pytest.mark.parametrize("kind", TRAINED)
def test_untrained_beam_search_yields_only_valid_distinct_items(kind: str) -> None:
    codes = sparse_catalogue(seed=1)
    vocab = CodeVocabulary(codes)
    trie = PrefixTrie(vocab)
    kind, _, encoding = kind.partition("/")
    config = small_config(
        kind, max_history=3, d_model=32, d_ff=64, history_encoding=encoding or "tokens"
    )
    torch.manual_seed(1)
    model = build_generative_model(config, vocab)  # random weights
    rng = np.random.default_rng(1)
    histories = rng.integers(-1, len(codes), (12, 3))
    histories[0] = -1  # a user without history
    batch = torch.from_numpy(vocab.history_tokens(histories))
    for beam, top_k in ((8, 8), (12, 5), (len(codes), len(codes))):
        items, scores = constrained_beam_search(model, batch, trie, beam, top_k)
        assert items.shape == scores.shape == (len(histories), top_k)
        assert ((items >= 0) & (items < len(codes))).all()
        assert all(len(set(row)) == top_k for row in items.tolist())
        full_codes = {tuple(c) for c in codes.tolist()}
        assert all(tuple(c) in full_codes for c in codes[items].reshape(-1, 3).tolist())
        assert (vocab.decode(vocab.item_tokens(items)) == items).all()
        assert np.isfinite(scores).all() and (np.diff(scores, axis=1) <= 1e-6).all()
    # a beam as wide as the catalogue returns every item, each once
    assert all(sorted(row) == list(range(len(codes))) for row in items.tolist())
    with pytest.raises(ValueError, match="beam_size"):
        constrained_beam_search(model, batch, trie, 4, 5)
    with pytest.raises(ValueError, match="exceeds"):
        constrained_beam_search(model, batch, trie, 50, 41)


# ----------------------------------------------------------------- metrics


def test_metrics_match_hand_calculation() -> None:
    assert ranking_metrics([[5, 7, 9]], [9], ks=(1, 3)) == {
        "hit@1": 0.0,
        "ndcg@1": 0.0,
        "hit@3": 1.0,
        "ndcg@3": pytest.approx(1 / math.log2(4)),
    }
    # items 0-2 within metres of each other, 3-5 about 110 km away
    lat = np.array([40.0, 40.001, 40.002, 41.0, 41.001, 41.002])
    lon = np.full(6, -74.0)
    train_targets = np.repeat([3, 4, 0, 1, 2], [5, 4, 3, 2, 1])  # popularity 3 > 4 > 0 > 1 > 2
    baseline = PopularityNearLastBaseline(lat, lon, radius_km=1.0).fit(
        (np.full((len(train_targets), 2), -1), train_targets)
    )
    histories = np.array([[3, 0], [3, 0], [-1, 0], [-1, -1]])  # last check-in: column -1
    targets = np.array([0, 2, 5, 3])  # ranks 1, 3, 6 (near 0 first) and 1 (no history)
    items, _ = baseline.recommend(histories, 5)
    assert items[0].tolist() == [0, 1, 2, 3, 4] and items[3].tolist() == [3, 4, 0, 1, 2]
    metrics = baseline.evaluate((histories, targets), ks=(2, 5))
    assert metrics == pytest.approx(
        {"hit@2": 0.5, "ndcg@2": 0.5, "hit@5": 0.75, "ndcg@5": (1 + 1 / math.log2(4) + 0 + 1) / 4}
    )


def test_evaluate_generative_matches_its_top_k(trained: dict, walk_splits: dict) -> None:
    result = trained["tiger"]
    histories, targets = (a[:60] for a in walk_splits["test"])
    items, _ = recommend_top_k(result, WALK_CODES, histories, 10)
    expected = {}
    for k in (5, 10):
        ranks = [
            row[:k].tolist().index(t) if t in row[:k] else None
            for row, t in zip(items, targets, strict=True)
        ]
        expected[f"hit@{k}"] = np.mean([r is not None for r in ranks])
        expected[f"ndcg@{k}"] = np.mean([0 if r is None else 1 / math.log2(r + 2) for r in ranks])
    got = evaluate_generative(result, WALK_CODES, (histories, targets))
    assert got == pytest.approx(expected)


# ----------------------------------------------------------------- learning


def test_generative_models_learn_the_walk(trained: dict, walk_splits: dict) -> None:
    """Bound: Hit@10 >= 0.45 and >= baseline + 0.2. Random lists hit 10/64 = 0.16; the
    next item is i + 1 with probability 0.85, so the ceiling is about 0.85 + 0.15 * 0.16
    = 0.87. Popularity near the last check-in ignores the walk (items are placed at random),
    so it stays near the random rate."""
    rng = np.random.default_rng(0)
    lat, lon = rng.uniform(40, 40.05, N_ITEMS), rng.uniform(-74, -73.95, N_ITEMS)
    baseline = PopularityNearLastBaseline(lat, lon, radius_km=1.0).fit(walk_splits["train"])
    base = baseline.evaluate(walk_splits["test"])
    for kind, result in trained.items():
        metrics = evaluate_generative(result, WALK_CODES, walk_splits["test"])
        print(kind, metrics, "baseline", base, "best step", result.best_step)
        assert metrics["hit@10"] >= max(0.45, base["hit@10"] + 0.2), kind
        assert metrics["ndcg@10"] > base["ndcg@10"], kind
        assert result.best_valid_hit10 == max(h["valid_hit@10"] for h in result.history)
        assert result.best_step in [h["step"] for h in result.history]
        assert result.history[-1]["step"] <= result.config.steps


# ----------------------------------------------------------------- splits


def test_split_never_leaks_future_events() -> None:
    rng = np.random.default_rng(3)
    n_users, per_user = 30, 20
    users = np.repeat([f"user{u}" for u in range(n_users)], per_user)
    times = rng.uniform(0, 100, len(users))
    items = np.arange(len(users))  # one item per event, so an item tells its event
    shuffle = rng.permutation(len(users))
    users, times, items = users[shuffle], times[shuffle], items[shuffle]
    time_of, user_of = np.empty(len(items)), np.empty(len(items), dtype=object)
    time_of[items], user_of[items] = times, users
    splits = build_next_item_examples(users, items, times, 60.0, 80.0, max_history=5)
    assert sum(len(t) for _, t in splits.values()) == len(users) - n_users
    bounds = {"train": (-np.inf, 60.0), "valid": (60.0, 80.0), "test": (80.0, np.inf)}
    for name, (histories, targets) in splits.items():
        lo, hi = bounds[name]
        assert histories.shape == (len(targets), 5) and histories.dtype == np.int64
        assert ((time_of[targets] >= lo) & (time_of[targets] < hi)).all(), name
        for hist, target in zip(histories, targets, strict=True):
            past = hist[hist >= 0]
            assert len(past) >= 1 and (hist[: 5 - len(past)] == -1).all()  # left padding
            assert (user_of[past] == user_of[target]).all()
            expected = [
                i
                for i in np.argsort(time_of)
                if user_of[i] == user_of[target] and time_of[i] < time_of[target]
            ][-5:]
            assert past.tolist() == expected
            if name == "train":
                assert (time_of[past] < 60.0).all()
    # datetimes and string split times give the same examples
    stamps = pd.Timestamp("2024-01-01") + pd.to_timedelta(times, unit="h")
    dated = build_next_item_examples(
        users, items, stamps, "2024-01-03T12:00", "2024-01-04T08:00", max_history=5
    )
    for name in splits:
        assert np.array_equal(dated[name][1], splits[name][1])
    keys, latest = latest_histories(users, items, times, max_history=5, before=60.0)
    assert len(keys) == n_users
    for key, hist in zip(keys, latest, strict=True):
        mine = [i for i in np.argsort(time_of) if user_of[i] == key and time_of[i] < 60.0]
        assert hist[hist >= 0].tolist() == mine[-5:]
    with pytest.raises(ValueError, match="t1 < t2"):
        build_next_item_examples(users, items, times, 80.0, 60.0)


# ----------------------------------------------------------------- persistence and cache


@pytest.mark.parametrize("kind", ["tiger/items", "onerec"])
def test_save_load_reproduces_top_k(
    trained: dict, walk_splits: dict, tmp_path: Path, kind: str
) -> None:
    result = trained[kind]
    histories = walk_splits["test"][0][:40]
    folder = save_generative(result, tmp_path / "tiger", extra={"codes_variant": "walk"})
    loaded = load_generative(folder)
    assert loaded.config == result.config and loaded.best_step == result.best_step
    items, scores = recommend_top_k(result, WALK_CODES, histories, 10)
    items2, scores2 = recommend_top_k(loaded, WALK_CODES, histories, 10)
    assert np.array_equal(items, items2) and np.allclose(scores, scores2, atol=1e-5)
    # a model saved before history_encoding existed read the history as tokens
    meta_path = folder / "generative_config.json"
    meta = json.loads(meta_path.read_text())
    del meta["config"]["history_encoding"]
    meta_path.write_text(json.dumps(meta))
    assert load_generative(folder).config.history_encoding == "tokens"
    with pytest.raises(ModelFileError, match="generative_config.json"):
        load_generative(tmp_path / "nowhere")
    (folder / "generative_model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelFileError, match="generative_model.pt"):
        load_generative(folder)
    with pytest.raises(ValueError, match="codes differ"):
        recommend_top_k(result, WALK_CODES[::-1], histories, 10)


@pytest.mark.parametrize("kind", TRAINED)
def test_recommend_top_k_equals_beam_search(trained: dict, walk_splits: dict, kind: str) -> None:
    result = trained[kind]
    histories = walk_splits["valid"][0][:50].copy()
    histories[0] = -1  # a user without history
    histories[1, :2] = -1
    items, scores = recommend_top_k(result, WALK_CODES, histories, 5)
    tokens = torch.from_numpy(result.vocabulary.history_tokens(histories))
    beam_items, beam_scores = constrained_beam_search(
        result.model, tokens, result.trie, result.config.beam_size, 5
    )
    assert np.array_equal(items, beam_items)
    assert np.allclose(scores, beam_scores, atol=1e-5) and np.isfinite(scores).all()
    # shorter histories are left-padded; k above the configured beam widens the beam
    wide, _ = recommend_top_k(result, WALK_CODES, histories[:, 2:], 15)
    assert wide.shape == (50, 15) and all(len(set(row)) == 15 for row in wide.tolist())


@pytest.mark.parametrize("kind", TRAINED)
def test_cached_beam_search_returns_what_the_uncached_one_does(
    trained: dict, walk_splits: dict, kind: str
) -> None:
    result = trained[kind]
    histories = walk_splits["test"][0][:40].copy()
    histories[0] = -1
    tokens = torch.from_numpy(result.vocabulary.history_tokens(histories))
    for beam, top_k in ((10, 10), (30, 7)):
        cached = constrained_beam_search(
            result.model, tokens, result.trie, beam, top_k, use_cache=True
        )
        plain = constrained_beam_search(
            result.model, tokens, result.trie, beam, top_k, use_cache=False
        )
        assert np.array_equal(cached[0], plain[0])
        assert np.allclose(cached[1], plain[1], atol=1e-5)
    # teacher-forced scoring gives each beam item the score the beam search summed
    scored = score_items(result.model, tokens, result.vocabulary, cached[0])
    assert np.allclose(scored, cached[1], atol=1e-4)
    # a first-level prior that forbids every first token but one keeps the beam inside it
    bias = torch.full((len(histories), int(result.vocabulary.sizes[0])), -1e9)
    bias[:, 2] = 0.0
    items, _ = constrained_beam_search(result.model, tokens, result.trie, 10, 10, first_bias=bias)
    assert (WALK_CODES[items][..., 0] == 2).all()


def test_user_history_floor_on_a_hand_made_example() -> None:
    # items 0-2 within metres of each other, 3-5 about 110 km away
    lat = np.array([40.0, 40.001, 40.002, 41.0, 41.001, 41.002])
    lon = np.full(6, -74.0)
    train_targets = np.repeat([3, 4, 0, 1, 2], [5, 4, 3, 2, 1])  # popularity 3 > 4 > 0 > 1 > 2
    near = PopularityNearLastBaseline(lat, lon, radius_km=1.0).fit(
        (np.full((len(train_targets), 2), -1), train_targets)
    )
    floor = UserHistoryBaseline(near)
    histories = np.array(
        [
            [5, 1, 5, 1, 2],  # 5 and 1 twice (1 more recently), then 2; last check-in near 0-2
            [-1, -1, -1, 4, 4],  # only item 4; the 2 km list around item 4 is 3, 4, 5
            [-1, -1, -1, -1, -1],  # no history: the plain popularity list
        ]
    )
    items, scores = floor.recommend(histories, 5)
    assert items[0].tolist() == [1, 5, 2, 0, 3]
    assert items[1].tolist() == [4, 3, 5, 0, 1]
    assert items[2].tolist() == [3, 4, 0, 1, 2]
    assert (np.diff(scores, axis=1) < 0).all()
    metrics = floor.evaluate((histories, np.array([5, 0, 2])), ks=(1, 2))
    assert metrics == pytest.approx(
        {"hit@1": 0.0, "ndcg@1": 0.0, "hit@2": 1 / 3, "ndcg@2": 1 / 3 / math.log2(3)}
    )
