"""CTR backbones (DIN, DIEN, SIM, TWIN, ETA) on a tiny synthetic dataset whose clicks depend
on whether the target's level-1 semantic-ID token matches the user's history."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from lgsid_pipeline.catalog import BACKBONES
from lgsid_pipeline.model_files import ModelFileError
from lgsid_pipeline.recommenders import (
    CtrBatch,
    CtrModel,
    TrainResult,
    batch_from_numpy,
    evaluate_ctr,
    load_ctr_model,
    predict_ctr,
    save_ctr_model,
    train_ctr,
)
from lgsid_pipeline.recommenders.blocks import AUGRUCell, run_augru, run_masked_gru
from lgsid_pipeline.recommenders.config import CtrConfig, TrainConfig

pytestmark = pytest.mark.slow  # seconds per test: left out of `make test-fast`

N_USERS, N_ITEMS, N_CATEGORIES, SIZES = 300, 400, 6, [8, 8]
SHORT, LONG, SAMPLES_PER_USER = 10, 50, 25


def make_dataset(seed: int = 0) -> dict[str, np.ndarray]:
    """Users prefer two level-1 codes; a click is likely when many of the user's
    behaviours share the target's level-1 code. Sequences are left-padded."""
    rng = np.random.default_rng(seed)
    c1 = rng.integers(0, SIZES[0], N_ITEMS + 1)
    c2 = rng.integers(0, SIZES[1], N_ITEMS + 1)
    codes = np.stack([c1, c2], axis=1)
    category = (
        np.where(
            rng.random(N_ITEMS + 1) < 0.7,
            c1 % N_CATEGORIES,
            rng.integers(0, N_CATEGORIES, N_ITEMS + 1),
        )
        + 1
    )
    by_code = [np.flatnonzero(c1[1:] == c) + 1 for c in range(SIZES[0])]
    long_items = np.zeros((N_USERS + 1, LONG), dtype=np.int64)
    for u in range(1, N_USERS + 1):
        liked = rng.choice(SIZES[0], 2, replace=False)
        length = rng.integers(20, LONG + 1)
        picks = [
            rng.choice(by_code[rng.choice(liked)])
            if rng.random() < 0.8
            else rng.integers(1, N_ITEMS + 1)
            for _ in range(length)
        ]
        long_items[u, LONG - length :] = picks
    users = np.repeat(np.arange(1, N_USERS + 1), SAMPLES_PER_USER)
    target = rng.integers(1, N_ITEMS + 1, len(users))
    hist = long_items[users]
    mask = hist > 0
    share = ((c1[hist] == c1[target][:, None]) & mask).sum(1) / mask.sum(1)
    distance = rng.exponential(2.0, len(users))
    p = 1 / (1 + np.exp(-(6 * share - 1.5 - 0.3 * np.log1p(distance))))
    return {
        "user": users,
        "target_item": target,
        "target_codes": codes[target],
        "target_category": category[target],
        "distance_km": distance,
        "long_items": hist,
        "long_codes": codes[hist] * mask[..., None],
        "long_category": category[hist] * mask,
        "long_mask": mask,
        "label": (rng.random(len(users)) < p).astype(np.float32),
    }


def to_batch(data: dict[str, np.ndarray], with_codes: bool = True) -> CtrBatch:
    short = {
        "hist_items": data["long_items"][:, -SHORT:],
        "hist_category": data["long_category"][:, -SHORT:],
        "hist_mask": data["long_mask"][:, -SHORT:],
    }
    codes = {}
    if with_codes:
        codes = {
            "target_codes": data["target_codes"],
            "hist_codes": data["long_codes"][:, -SHORT:],
            "long_codes": data["long_codes"],
        }
    return batch_from_numpy(
        data["user"],
        data["target_item"],
        data["target_category"],
        data["distance_km"],
        short["hist_items"],
        short["hist_category"],
        hist_mask=short["hist_mask"],
        long_items=data["long_items"],
        long_category=data["long_category"],
        long_mask=data["long_mask"],
        label=data["label"],
        **codes,
    )


def splits(batch: CtrBatch) -> tuple[CtrBatch, CtrBatch, CtrBatch]:
    order = np.random.default_rng(1).permutation(len(batch))
    a, b = int(0.6 * len(order)), int(0.8 * len(order))
    return batch.index(order[:a]), batch.index(order[a:b]), batch.index(order[b:])


def model_config(backbone: str, sizes: list[int] | None = None, **kw: object) -> CtrConfig:
    return CtrConfig(
        n_users=N_USERS,
        n_items=N_ITEMS,
        n_categories=N_CATEGORIES,
        codebook_sizes=SIZES if sizes is None else sizes,
        backbone=backbone,
        dim=16,
        top_k=10,
        mlp_hidden=[32],
        attention_hidden=16,
        **kw,
    )


TRAIN = TrainConfig(epochs=10, batch_size=256, lr=3e-3, patience=3, seed=0)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """These models are tiny: one thread is faster, and far faster on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    return make_dataset()


@pytest.fixture(scope="module")
def coded(data: dict[str, np.ndarray]) -> tuple[CtrBatch, CtrBatch, CtrBatch]:
    return splits(to_batch(data))


_TRAINED: dict[str, TrainResult] = {}


def trained(backbone: str, coded: tuple[CtrBatch, CtrBatch, CtrBatch]) -> TrainResult:
    """Each backbone is trained once per test session and shared by the tests below."""
    if backbone not in _TRAINED:
        _TRAINED[backbone] = train_ctr(model_config(backbone), coded[0], coded[1], TRAIN)
    return _TRAINED[backbone]


@pytest.mark.parametrize("backbone", BACKBONES)
def test_backbone_learns_code_signal(
    backbone: str, coded: tuple[CtrBatch, CtrBatch, CtrBatch]
) -> None:
    result = trained(backbone, coded)
    test_auc = evaluate_ctr(result.model, coded[2])["auc"]
    print(
        f"{backbone}: test AUC {test_auc:.3f}, best epoch {result.best_epoch}, "
        f"{sum(h['seconds'] for h in result.history):.1f}s"
    )
    assert test_auc > 0.64
    assert result.best_valid_auc == max(h["valid_auc"] for h in result.history)
    assert {"train_loss", "valid_auc", "valid_logloss", "seconds"} <= set(result.history[0])
    # the best epoch's weights are the ones restored
    assert evaluate_ctr(result.model, coded[1])["auc"] == pytest.approx(result.best_valid_auc)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_code_features_are_used(backbone: str, coded: tuple[CtrBatch, CtrBatch, CtrBatch]) -> None:
    model, test = trained(backbone, coded).model, coded[2]
    rng = np.random.default_rng(2)

    def shuffled(codes: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(rng.integers(0, min(SIZES), tuple(codes.shape)))

    scrambled = replace(
        test,
        target_codes=shuffled(test.target_codes),
        hist_codes=shuffled(test.hist_codes),
        long_codes=shuffled(test.long_codes),
    )
    missing = replace(
        test,
        target_codes=torch.full_like(test.target_codes, -1),
        hist_codes=torch.full_like(test.hist_codes, -1),
        long_codes=torch.full_like(test.long_codes, -1),
    )
    base = predict_ctr(model, test)
    shifts = [np.abs(predict_ctr(model, variant) - base).mean() for variant in (scrambled, missing)]
    aucs = [evaluate_ctr(model, variant)["auc"] for variant in (test, scrambled)]
    print(
        f"{backbone}: mean |change| {shifts[0]:.3f} scrambled, {shifts[1]:.3f} missing; "
        f"AUC {aucs[0]:.3f} -> {aucs[1]:.3f} scrambled"
    )
    assert min(shifts) > 0.02
    assert aucs[1] < aucs[0] - 0.03


@pytest.mark.parametrize("backbone", BACKBONES)
def test_item_id_only_variant(
    backbone: str, data: dict[str, np.ndarray], coded: tuple[CtrBatch, CtrBatch, CtrBatch]
) -> None:
    train, valid, test = splits(to_batch(data, with_codes=False))
    assert train.n_levels == 0 and train.hist_codes.shape[-1] == 0
    result = train_ctr(model_config(backbone, sizes=[]), train, valid, TRAIN)
    probs = predict_ctr(result.model, test)
    assert probs.shape == (len(test),)
    assert np.isfinite(probs).all() and ((probs > 0) & (probs < 1)).all()
    ids_only = evaluate_ctr(result.model, test)["auc"]
    with_codes = evaluate_ctr(trained(backbone, coded).model, coded[2])["auc"]
    print(f"{backbone}: test AUC item ids only {ids_only:.3f}, with codes {with_codes:.3f}")
    assert ids_only > 0.5
    # the clicks follow the level-1 code, so semantic IDs must help (METHOD section 5)
    assert with_codes > ids_only + 0.03


def test_save_load_round_trip(tmp_path: Path, coded: tuple[CtrBatch, CtrBatch, CtrBatch]) -> None:
    result = trained("eta", coded)
    folder = save_ctr_model(result, tmp_path / "eta")
    loaded = load_ctr_model(folder)
    assert loaded.config == result.model_config
    np.testing.assert_allclose(
        predict_ctr(loaded, coded[2]), predict_ctr(result.model, coded[2]), rtol=0, atol=1e-6
    )
    with pytest.raises(ModelFileError, match="ctr_config.json"):
        load_ctr_model(tmp_path / "nowhere")
    (folder / "ctr_model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelFileError, match="ctr_model.pt"):
        load_ctr_model(folder)


def test_bad_inputs_raise_clear_errors(coded: tuple[CtrBatch, CtrBatch, CtrBatch]) -> None:
    model = CtrModel(model_config("sim"))
    sample = coded[2].index(slice(0, 8))
    with pytest.raises(ValueError, match=r"hist_codes has shape \(8, 10, 1\), expected"):
        replace(sample, hist_codes=sample.hist_codes[..., :1])
    three_levels = replace(
        sample,
        target_codes=torch.zeros(8, 3, dtype=torch.long),
        hist_codes=torch.zeros(8, SHORT, 3, dtype=torch.long),
        long_codes=torch.zeros(8, LONG, 3, dtype=torch.long),
    )
    with pytest.raises(ValueError, match="3 code levels but the model was configured with 2"):
        model(three_levels)
    too_big = sample.target_codes.clone()
    too_big[0, 1] = 8
    with pytest.raises(ValueError, match="target_codes level 2 holds token 8"):
        model(replace(sample, target_codes=too_big))
    with pytest.raises(ValueError, match="hist_items"):
        model(replace(sample, hist_items=sample.hist_items + N_ITEMS))
    with pytest.raises(ValueError, match="distance_km"):
        model(replace(sample, distance_km=-sample.distance_km - 1))
    with pytest.raises(ValueError, match="int64"):
        replace(sample, user=sample.user.float())
    with pytest.raises(ValueError, match="backbone"):
        model_config("transformer")
    bad_labels = replace(sample, label=torch.full((8,), 0.5))
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        train_ctr(model_config("din"), bad_labels, sample, TrainConfig(epochs=1))


def test_batch_helpers_and_missing_long_sequence(data: dict[str, np.ndarray]) -> None:
    full = to_batch(data)
    head, tail = full.index(slice(0, 10)), full.index(np.arange(10, 20))
    both = CtrBatch.concat([head, tail])
    assert len(both) == 20 and torch.equal(both.long_codes, full.long_codes[:20])
    pick = np.zeros(len(full), dtype=bool)
    pick[[3, 5]] = True
    assert torch.equal(full.index(pick).target_item, full.target_item[[3, 5]])
    with pytest.raises(ValueError, match="cannot concatenate"):
        CtrBatch.concat([head, to_batch(data, with_codes=False).index(slice(0, 5))])
    # without a long sequence M = 0: DIN ignores it, the long-sequence backbones add zeros
    hist = data["long_items"][:16, -SHORT:]
    short_only = batch_from_numpy(
        data["user"][:16],
        data["target_item"][:16],
        data["target_category"][:16],
        data["distance_km"][:16],
        hist,
        data["long_category"][:16, -SHORT:],
        target_codes=data["target_codes"][:16],
        hist_codes=data["long_codes"][:16, -SHORT:],
    )
    assert short_only.long_items.shape == (16, 0) and short_only.long_codes.shape == (16, 0, 2)
    assert torch.equal(short_only.hist_mask, torch.from_numpy(hist > 0))
    for backbone in BACKBONES:
        assert torch.isfinite(CtrModel(model_config(backbone))(short_only)).all()
    with pytest.raises(ValueError, match="hist_codes is missing"):
        batch_from_numpy(
            data["user"][:4],
            data["target_item"][:4],
            data["target_category"][:4],
            data["distance_km"][:4],
            hist[:4],
            data["long_category"][:4, -SHORT:],
            target_codes=data["target_codes"][:4],
        )


def test_sim_hard_search_keeps_recent_matches(coded: tuple[CtrBatch, CtrBatch, CtrBatch]) -> None:
    model = CtrModel(model_config("sim"))
    batch = coded[2].index(slice(0, 64))
    positions, real = model.selected_positions(batch)
    for row in range(len(batch)):
        match = (
            ((batch.long_codes[row, :, 0] == batch.target_codes[row, 0]) & batch.long_mask[row])
            .nonzero()
            .flatten()
        )
        expected = match.flip(0)[: model.config.top_k]
        assert int(real[row].sum()) == len(expected)
        assert torch.equal(positions[row][real[row]], expected)


@pytest.mark.parametrize("backbone", ["twin", "eta"])
def test_long_selectors_pick_real_behaviours(
    backbone: str, coded: tuple[CtrBatch, CtrBatch, CtrBatch]
) -> None:
    model = CtrModel(model_config(backbone))
    batch = coded[2].index(slice(0, 64))
    positions, real = model.selected_positions(batch)
    assert positions.shape == (64, model.config.top_k)
    n_valid = batch.long_mask.sum(1).clamp(max=model.config.top_k)
    assert torch.equal(real.sum(1), n_valid)
    assert batch.long_mask.gather(1, positions)[real].all()


def test_dien_auxiliary_loss(coded: tuple[CtrBatch, CtrBatch, CtrBatch]) -> None:
    batch = coded[0].index(slice(0, 32))
    model = CtrModel(model_config("dien", aux_loss_weight=0.5))
    aux = model.forward_with_aux(batch)[1]
    assert aux.item() > 0 and aux.requires_grad
    aux.backward()
    assert model.aux_head[0].weight.grad is not None
    assert model.extractor.weight_hh.grad.abs().sum() > 0
    model.eval()
    assert model.forward_with_aux(batch)[1].item() == 0
    assert CtrModel(model_config("dien", aux_loss_weight=0.0)).forward_with_aux(batch)[1] == 0


def test_masked_recurrence_skips_padding() -> None:
    torch.manual_seed(0)
    cell, augru = torch.nn.GRUCell(4, 4), AUGRUCell(4, 4)
    x = torch.randn(2, 5, 4)
    mask = torch.tensor([[False, False, True, True, True], [True, True, True, True, True]])
    states = run_masked_gru(cell, x, mask)
    compact = run_masked_gru(cell, x[:1, 2:], mask[:1, 2:])
    torch.testing.assert_close(states[0, -1], compact[0, -1])
    att = torch.rand(2, 5)
    final = run_augru(augru, x, att, mask)
    torch.testing.assert_close(final[:1], run_augru(augru, x[:1, 2:], att[:1, 2:], mask[:1, 2:]))
    # zero attention freezes the AUGRU state at its start (zeros)
    assert run_augru(augru, x, torch.zeros(2, 5), mask).abs().max() == 0
