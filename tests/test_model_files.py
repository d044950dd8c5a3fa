"""One model-folder format: saved whole, and every damaged file named by ModelFileError."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lgsid_pipeline.alignment.config import RewardConfig
from lgsid_pipeline.alignment.reward import RewardHead, load_reward_model, save_reward_model
from lgsid_pipeline.model_files import ModelFileError, ModelFiles

FILES = ModelFiles("test model", meta_file="meta.json", weights_file="weights.pt")


def _saved(tmp_path: Path) -> tuple[Path, nn.Module]:
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    folder = FILES.save(
        tmp_path / "m", model, {"in": 3, "out": 2}, arrays={"codes": np.arange(6).reshape(3, 2)}
    )
    return folder, model


def test_round_trip(tmp_path: Path) -> None:
    folder, model = _saved(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == ["codes.npy", "meta.json", "weights.pt"]
    meta = FILES.read_meta(folder)
    loaded = FILES.load_weights(folder, nn.Linear(meta["in"], meta["out"]))
    assert not loaded.training
    assert torch.equal(loaded.weight, model.weight)
    np.testing.assert_array_equal(FILES.read_array(folder, "codes"), np.arange(6).reshape(3, 2))


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (lambda f: (f / "meta.json").unlink(), "meta.json is missing"),
        (lambda f: (f / "meta.json").write_text("{not json"), "meta.json is corrupt"),
        (lambda f: (f / "meta.json").write_text("[1, 2]"), "meta.json is corrupt"),
        (lambda f: (f / "weights.pt").write_bytes(b"garbage"), "weights.pt is corrupt"),
        (lambda f: (f / "weights.pt").unlink(), "weights.pt is missing"),
        (lambda f: (f / "codes.npy").write_bytes(b"\x93NUMPY garbage"), "codes.npy is corrupt"),
    ],
)
def test_damaged_files_are_named(tmp_path: Path, damage, named: str) -> None:
    folder, _ = _saved(tmp_path)
    damage(folder)
    with pytest.raises(ModelFileError, match=named):
        meta = FILES.read_meta(folder)
        FILES.read_array(folder, "codes")
        FILES.load_weights(folder, nn.Linear(meta["in"], meta["out"]))


def test_weights_of_another_shape_do_not_match_the_config(tmp_path: Path) -> None:
    folder, _ = _saved(tmp_path)
    with pytest.raises(ModelFileError, match="does not match meta.json"):
        FILES.load_weights(folder, nn.Linear(4, 2))


def test_a_model_kind_uses_the_format(tmp_path: Path) -> None:
    config = RewardConfig(hidden=8)
    head = RewardHead(5, config.hidden, config.dropout)
    folder = save_reward_model(head, tmp_path / "reward", config, {"cities": "x"})
    assert torch.equal(load_reward_model(folder).net[0].weight, head.net[0].weight)
    (folder / "reward_config.json").write_text('{"dim": 5}')  # no config
    with pytest.raises(ModelFileError, match="reward_config.json is corrupt"):
        load_reward_model(folder)
    assert not issubclass(ModelFileError, FileNotFoundError)
