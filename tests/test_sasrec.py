"""SASRec on item ids: learning a deterministic next-item rule, padding invariance, full
ranking without duplicates, seeding, best-weights restore, persistence and input checks."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from lgsid_pipeline.model_files import ModelFileError
from lgsid_pipeline.recommenders import sasrec
from lgsid_pipeline.recommenders.config import SasrecConfig
from lgsid_pipeline.recommenders.next_item import Examples
from lgsid_pipeline.recommenders.sasrec import (
    SASREC_FILES,
    SasrecModel,
    SasrecResult,
    evaluate_sasrec,
    load_sasrec,
    recommend_sasrec,
    save_sasrec,
    train_sasrec,
)

# synthetic rule: the next item is (last + 1) % N_ITEMS; histories of random lengths
N_ITEMS, MAX_HISTORY = 50, 8
SMALL = {
    "d_model": 32,
    "n_layers": 1,
    "n_heads": 2,
    "dropout": 0.1,
    "max_history": MAX_HISTORY,
    "batch_size": 64,
    "lr": 3e-3,
    "eval_batch_size": 256,
}


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def cycle_examples(n: int, seed: int, width: int = MAX_HISTORY) -> Examples:
    """Histories of 1..width consecutive items (mod N_ITEMS), left-padded; target = next."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(N_ITEMS, size=n)
    lengths = rng.integers(1, width + 1, size=n)
    hist = np.full((n, width), -1, dtype=np.int64)
    for row, (start, length) in enumerate(zip(starts, lengths, strict=True)):
        hist[row, width - length :] = (start + np.arange(length)) % N_ITEMS
    return hist, (starts + lengths) % N_ITEMS


def splits(seed: int = 0) -> dict[str, Examples]:
    return {
        "train": cycle_examples(2000, seed),
        "valid": cycle_examples(200, seed + 1),
        "test": cycle_examples(300, seed + 2),
    }


def hit_at_1(result: SasrecResult, examples: Examples) -> float:
    items, _ = recommend_sasrec(result, examples[0], 1)
    return float(np.mean(items[:, 0] == examples[1]))


@pytest.fixture(scope="module")
def trained() -> tuple[SasrecResult, list[dict[str, float]]]:
    seen: list[dict[str, float]] = []
    config = SasrecConfig(**SMALL, steps=300, eval_every=100, patience=3)
    return train_sasrec(config, N_ITEMS, splits(), on_eval=seen.append), seen


def test_learns_the_next_item_rule(trained: tuple[SasrecResult, list]) -> None:
    result, seen = trained
    test = splits()["test"]
    assert hit_at_1(result, test) > 0.9
    metrics = evaluate_sasrec(result, test, ks=(1, 5))
    assert set(metrics) == {"hit@1", "ndcg@1", "hit@5", "ndcg@5"}
    assert metrics["hit@1"] > 0.9 and metrics["hit@5"] >= metrics["hit@1"]
    untrained = SasrecResult(SasrecModel(result.config, N_ITEMS).eval(), result.config)
    assert hit_at_1(untrained, test) < 0.2
    assert not result.model.training


def test_progress_and_best_weights_restored(trained: tuple[SasrecResult, list]) -> None:
    result, seen = trained
    assert seen == result.history and [e["step"] for e in seen] == [100.0, 200.0, 300.0]
    for entry in seen:
        assert {
            "step",
            "train_loss",
            "valid_hit@10",
            "valid_ndcg@10",
            "seconds",
            "eta_seconds",
        } <= set(entry)
        assert np.isfinite(entry["train_loss"]) and entry["eta_seconds"] >= 0
    assert seen[-1]["eta_seconds"] == 0 and seen[0]["train_loss"] > seen[-1]["train_loss"]
    best = max(seen, key=lambda e: (e["valid_hit@10"], e["valid_ndcg@10"]))
    assert result.best_step == best["step"]
    assert result.best_valid_hit10 == best["valid_hit@10"]
    # every validation example is sampled (200 < max_valid_eval): the restored weights
    # reproduce the best evaluation exactly
    again = evaluate_sasrec(result, splits()["valid"], ks=(10,))
    assert again["hit@10"] == best["valid_hit@10"]
    assert again["ndcg@10"] == pytest.approx(best["valid_ndcg@10"], abs=1e-12)


def test_early_stopping_keeps_the_best_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """Scripted validation scores: the run stops after ``patience`` evaluations without
    improvement and ends with the weights of the best evaluation."""
    script = iter([0.5, 0.9, 0.9, 0.3, 0.95])
    states: list[dict[str, torch.Tensor]] = []

    def fake_evaluate(result: SasrecResult, examples: Examples, ks: tuple = (10,)) -> dict:
        states.append(copy.deepcopy(result.model.state_dict()))
        return {"hit@10": next(script), "ndcg@10": 0.1}

    monkeypatch.setattr(sasrec, "evaluate_sasrec", fake_evaluate)
    config = SasrecConfig(**SMALL, steps=100, eval_every=5, patience=2)
    result = train_sasrec(config, N_ITEMS, splits())
    assert [e["step"] for e in result.history] == [5.0, 10.0, 15.0, 20.0]
    assert result.best_step == 10 and result.best_valid_hit10 == 0.9
    final = result.model.state_dict()
    assert all(torch.equal(final[name], states[1][name]) for name in final)
    assert not all(torch.equal(final[name], states[3][name]) for name in final)
    assert not result.model.training


def test_padding_width_and_batch_do_not_change_scores(trained: tuple[SasrecResult, list]) -> None:
    result, _ = trained
    hist = np.array([[-1, -1, -1, -1, -1, 7, 8, 9], [-1, -1, -1, -1, -1, -1, -1, 30]])
    items, scores = recommend_sasrec(result, hist, N_ITEMS)
    for extra in (1, 5, 40):
        wider = np.pad(hist, ((0, 0), (extra, 0)), constant_values=-1)
        got_items, got_scores = recommend_sasrec(result, wider, N_ITEMS)
        np.testing.assert_array_equal(got_items, items)
        np.testing.assert_array_equal(got_scores, scores)
    assert items[0, 0] == 10 and items[1, 0] == 31
    # a row's scores do not depend on the other rows of its batch (up to float rounding)
    alone_items, alone_scores = recommend_sasrec(result, hist[1:], N_ITEMS)
    np.testing.assert_allclose(alone_scores, scores[1:], rtol=1e-5, atol=1e-5)
    narrow_items, narrow_scores = recommend_sasrec(result, hist[1:, -3:], N_ITEMS)
    np.testing.assert_array_equal(narrow_items, alone_items)
    np.testing.assert_array_equal(narrow_scores, alone_scores)


def test_padding_is_never_attended(trained: tuple[SasrecResult, list]) -> None:
    """Real positions never see padding: noise in the padding row changes no real score."""
    result, _ = trained
    hist = np.vstack([cycle_examples(6, 4)[0], np.full((1, MAX_HISTORY), -1)])
    model = copy.deepcopy(result.model)
    with torch.no_grad():
        model.item_emb.weight[N_ITEMS] = torch.randn(model.config.d_model) * 10
    noisy = SasrecResult(model, result.config)
    _, scores = recommend_sasrec(result, hist, N_ITEMS)
    _, noisy_scores = recommend_sasrec(noisy, hist, N_ITEMS)
    full = (hist[:-1] >= 0).all(axis=1)
    assert not full.all()  # some rows are padded
    np.testing.assert_allclose(noisy_scores[:-1], scores[:-1], rtol=1e-5, atol=1e-5)
    assert not np.allclose(noisy_scores[-1], scores[-1])  # the all-padding row reads it


@pytest.mark.parametrize("limit", [7 * N_ITEMS, 1 << 26])
def test_fused_loss_matches_cross_entropy(monkeypatch: pytest.MonkeyPatch, limit: int) -> None:
    """The chunked loss (7 positions at a time, or one chunk) has cross-entropy's value and
    gradients."""
    monkeypatch.setattr(sasrec, "LOSS_CHUNK_LOGITS", limit)
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(30, 16, generator=gen, requires_grad=True)
    weights = torch.randn(N_ITEMS, 16, generator=gen, requires_grad=True)
    labels = torch.randint(N_ITEMS, (30,), generator=gen)
    expected = F.cross_entropy(hidden @ weights.T, labels)
    want = torch.autograd.grad(expected * 3, (hidden, weights))
    got = sasrec._softmax_loss(hidden, weights, labels)
    torch.testing.assert_close(got, expected)
    for a, b in zip(torch.autograd.grad(got * 3, (hidden, weights)), want, strict=True):
        torch.testing.assert_close(a, b)
    with torch.no_grad():
        torch.testing.assert_close(sasrec._softmax_loss(hidden, weights, labels), expected)


def test_full_ranking_distinct_and_all_padding(trained: tuple[SasrecResult, list]) -> None:
    result, _ = trained
    hist = np.vstack([cycle_examples(5, 9)[0], np.full((2, MAX_HISTORY), -1)])
    for k in (1, 10, N_ITEMS):
        items, scores = recommend_sasrec(result, hist, k)
        assert items.shape == scores.shape == (len(hist), k) and items.dtype == np.int64
        assert np.isfinite(scores).all() and (np.diff(scores, axis=1) <= 0).all()
        assert ((items >= 0) & (items < N_ITEMS)).all()
        assert all(len(set(row)) == k for row in items.tolist())
    empty_items, empty_scores = recommend_sasrec(result, np.zeros((3, 0), dtype=np.int64), 4)
    assert empty_items.shape == (3, 4) and np.isfinite(empty_scores).all()
    none_items, _ = recommend_sasrec(result, np.zeros((0, MAX_HISTORY), dtype=np.int64), 3)
    assert none_items.shape == (0, 3)


def test_all_padding_training_rows_are_finite() -> None:
    data = splits()
    hist, targets = data["train"]
    hist = hist.copy()
    hist[:500] = -1  # no history: only the final position (the target prior) is trained
    config = SasrecConfig(**SMALL, steps=5, eval_every=5)
    result = train_sasrec(config, N_ITEMS, {"train": (hist, targets), "valid": data["valid"]})
    assert np.isfinite(result.history[0]["train_loss"])
    assert all(torch.isfinite(p).all() for p in result.model.parameters())


def test_same_seed_same_result() -> None:
    config = SasrecConfig(**SMALL, steps=20, eval_every=10)
    runs = [train_sasrec(config, N_ITEMS, splits()) for _ in range(2)]
    other = train_sasrec(SasrecConfig(**SMALL, steps=20, eval_every=10, seed=1), N_ITEMS, splits())
    first, second = (run.model.state_dict() for run in runs)
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert [
        {k: v for k, v in e.items() if k not in ("seconds", "eta_seconds")} for e in runs[0].history
    ] == [
        {k: v for k, v in e.items() if k not in ("seconds", "eta_seconds")} for e in runs[1].history
    ]
    assert not torch.equal(first["item_emb.weight"], other.model.state_dict()["item_emb.weight"])


def test_save_and_load(trained: tuple[SasrecResult, list], tmp_path: Path) -> None:
    result, _ = trained
    folder = save_sasrec(result, tmp_path / "sasrec", extra={"note": "x"})
    loaded = load_sasrec(folder)
    assert loaded.config == result.config and loaded.best_step == result.best_step
    assert loaded.history == result.history and not loaded.model.training
    hist = splits()["test"][0][:20]
    np.testing.assert_array_equal(
        recommend_sasrec(loaded, hist, 5)[1], recommend_sasrec(result, hist, 5)[1]
    )
    (folder / SASREC_FILES.weights_file).write_bytes(b"not a torch file")
    with pytest.raises(ModelFileError, match=SASREC_FILES.weights_file):
        load_sasrec(folder)
    with pytest.raises(ModelFileError, match="missing"):
        load_sasrec(tmp_path / "nowhere")


@pytest.mark.parametrize(
    "bad",
    [
        {"d_model": 0},
        {"n_heads": 3},
        {"dropout": 1.0},
        {"lr": 0.0},
        {"weight_decay": -1.0},
        {"grad_clip": -0.5},
        {"steps": 0},
        {"eval_every": 0},
        {"patience": 0},
        {"max_history": 1.5},
        {"seed": -1},
        {"lr": float("nan")},
        {"batch_size": True},
    ],
)
def test_config_rejects_bad_values(bad: dict) -> None:
    with pytest.raises(ValueError):
        SasrecConfig(**bad)


def test_bad_inputs_raise(trained: tuple[SasrecResult, list]) -> None:
    result, _ = trained
    good = cycle_examples(4, 3)[0]
    for histories in (
        good[0],
        good[..., None],
        good.astype(np.float32),
        np.where(good < 0, -1, N_ITEMS),
        np.where(good < 0, -2, good),
        np.array([[3, 4, -1, 5, 6, 7, 8, 9]]),
    ):
        with pytest.raises(ValueError):
            recommend_sasrec(result, histories, 5)
    for k in (0, N_ITEMS + 1, 2.0, True):
        with pytest.raises(ValueError, match="k"):
            recommend_sasrec(result, good, k)
    with pytest.raises(ValueError):
        evaluate_sasrec(result, (good, np.zeros(3, dtype=np.int64)))
    data = splits()
    config = SasrecConfig(**SMALL, steps=1)
    hist, targets = data["train"]
    for bad in (
        {"train": (hist, targets[:-1]), "valid": data["valid"]},
        {"train": (hist, np.full_like(targets, N_ITEMS)), "valid": data["valid"]},
        {"train": (hist[:0], targets[:0]), "valid": data["valid"]},
        {"train": data["train"]},
    ):
        with pytest.raises(ValueError):
            train_sasrec(config, N_ITEMS, bad)
    with pytest.raises(ValueError, match="n_items"):
        train_sasrec(config, 5, data)


def test_loss_positions_one_is_the_cross_entropy_of_the_newest_position() -> None:
    torch.manual_seed(0)
    config = SasrecConfig(
        d_model=16, n_layers=1, n_heads=1, max_history=5, dropout=0.0, loss_positions=1
    )
    model = SasrecModel(config, 20).eval()
    history = torch.tensor([[1, 2, 3, 4, 5], [-1, -1, 6, 7, 8]])
    targets = torch.tensor([9, 10])
    expected = F.cross_entropy(model.last_scores(history), targets)
    assert torch.allclose(model.loss(history, targets), expected, atol=1e-5)
    every = SasrecModel(SasrecConfig(**{**config.__dict__, "loss_positions": 0}), 20).eval()
    every.load_state_dict(model.state_dict())
    assert not torch.allclose(every.loss(history, targets), expected, atol=1e-3)
    with pytest.raises(ValueError, match="loss_positions"):
        SasrecConfig(loss_positions=-1)
