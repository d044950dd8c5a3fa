"""The per-backbone CTR asset with several seeds: run config ``seeds``, seeds ``seed, seed + 1,
...`` on the same data, the seed-mean AUC with its joint 95% interval, the first seed's model
registered, and the city table. Training, data and MLflow are stand-ins (seconds, no torch
training); the real backbones are trained in test_recommenders.py."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import torch

import lgsid_pipeline.stages.discriminative as discriminative
from lgsid_pipeline.defs.recommenders import CTR_ASSETS, CtrTrainingConfig
from lgsid_pipeline.defs.resources import WorkspaceResource
from lgsid_pipeline.metrics.ranking import auc
from lgsid_pipeline.recommenders.training import TrainResult
from lgsid_pipeline.stages.evaluation import auc_markdown, discriminative_table

N_TEST = 2000
LABELS = (np.random.default_rng(0).random(N_TEST) < 0.25).astype(np.float32)


def seed_probs(seed: int) -> np.ndarray:
    """Test probabilities of the stand-in model of ``seed``: larger seeds separate better."""
    rng = np.random.default_rng(100 + seed)
    logits = rng.normal(size=N_TEST) + (0.3 + 0.4 * (seed % 3)) * LABELS
    return 1 / (1 + np.exp(-logits))


class FakeData:
    """What the asset reads of a city's CTR data."""

    n_users, n_items, n_categories = 10, 20, 3
    t1, t2 = pd.Timestamp("2025-01-01", tz="UTC"), pd.Timestamp("2025-02-01", tz="UTC")

    def code_matrix(self, table: object, levels: list[str]) -> np.ndarray:
        return np.zeros((self.n_items + 1, 0), dtype=np.int64)

    def with_codes(self, codes: np.ndarray) -> dict:
        test = SimpleNamespace(label=torch.from_numpy(LABELS))
        return {"train": "train", "valid": "valid", "test": test}


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, list]:
    """Stand-ins for data, training, prediction, saving and MLflow; records their calls."""
    seen: dict[str, list] = {"train": [], "saved": [], "registered": []}

    def train_ctr(model_config, train, valid, config, on_epoch=None) -> TrainResult:
        assert model_config.seed == config.seed
        seen["train"].append(config.seed)
        entry = {
            "epoch": 1.0,
            "train_loss": 0.5,
            "valid_auc": 0.6,
            "valid_logloss": 0.5,
            "seconds": 0.0,
        }
        if on_epoch:
            on_epoch(entry)
        return TrainResult(
            model=SimpleNamespace(seed=config.seed),
            model_config=model_config,
            train_config=config,
            history=[entry],
            best_epoch=config.seed,
            best_valid_auc=0.6 + 0.01 * config.seed,
        )

    def save_ctr_model(result: TrainResult, folder: Path, extra: dict | None = None) -> Path:
        seen["saved"].append((Path(folder).name, result.model.seed))
        Path(folder).mkdir(parents=True, exist_ok=True)
        return Path(folder)

    def register_folder(name: str, folder: Path, **kw: object) -> SimpleNamespace:
        seen["registered"].append({"name": name, **kw})
        return SimpleNamespace(version="1", run_url="http://mlflow/run")

    monkeypatch.setattr(discriminative, "load_ctr_data", lambda warehouse, city: FakeData())
    monkeypatch.setattr(
        discriminative,
        "variant_codes",
        lambda warehouse, city, variant, data: (data.code_matrix(None, []), []),
    )
    monkeypatch.setattr("lgsid_pipeline.recommenders.training.train_ctr", train_ctr)
    monkeypatch.setattr(
        "lgsid_pipeline.recommenders.training.predict_ctr",
        lambda model, data: seed_probs(model.seed),
    )
    # the asset imports the training module (torch) when it runs
    monkeypatch.setattr("lgsid_pipeline.recommenders.training.save_ctr_model", save_ctr_model)
    monkeypatch.setattr(discriminative, "register_folder", register_folder)
    monkeypatch.setattr(
        discriminative, "variant_curves_png", lambda history, x, metric, title: b"png"
    )
    return seen


def run_din(home: Path, config: dict) -> dg.ExecuteInProcessResult:
    din = next(a for a in CTR_ASSETS if a.key == dg.AssetKey("din"))
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("city", ["tiny"])
    return dg.materialize(
        [din],
        partition_key="tiny",
        instance=instance,
        resources={"workspace": WorkspaceResource(home=str(home))},
        run_config={"ops": {"din": {"config": config}}},
        raise_on_error=False,
    )


def test_seeds_is_a_config_field_with_default_one() -> None:
    assert CtrTrainingConfig().seeds == 1 and CtrTrainingConfig(seeds=3).seeds == 3
    din = next(a for a in CTR_ASSETS if a.key == dg.AssetKey("din"))
    assert "seeds" in din.op.config_schema.config_type.fields


def test_several_seeds_report_their_mean_and_a_joint_interval(
    tmp_path: Path, calls: dict[str, list]
) -> None:
    result = run_din(tmp_path, {"seeds": 3, "seed": 4, "variants": ["none", "lgsid"]})
    assert result.success
    assert calls["train"] == [4, 5, 6, 4, 5, 6]  # each variant: seeds 4, 5, 6
    assert calls["saved"] == [("none", 4), ("lgsid", 4)]  # the first seed's model
    registered = calls["registered"][0]
    assert registered["params"]["seeds"] == 3
    assert registered["metrics"]["none.auc_ci95_lo"] < registered["metrics"]["none.auc"]

    workspace = WorkspaceResource(home=str(tmp_path))
    per_seed = [auc(LABELS, seed_probs(s)) for s in (4, 5, 6)]
    table = discriminative_table(workspace.reports, "tiny")
    assert table is not None
    assert table["auc"]["din"]["none"] == pytest.approx(np.mean(per_seed))
    assert table["seeds"] == {"din": 3}
    assert table["interval"] == {"din": "bootstrap over seeds and test examples"}
    lo, hi = table["auc_ci95"]["din"]["none"]
    assert lo < np.mean(per_seed) < hi
    assert set(table["auc_ci95"]["din"]) == set(table["auc"]["din"]) == {"none", "lgsid"}
    figures = workspace.reports.read(workspace.reports.recommender("tiny", "din"))
    variant = figures["variants"]["none"]
    assert variant["auc_seeds"] == pytest.approx(per_seed) and variant["best_epoch"] == 4
    assert variant["valid_auc"] == pytest.approx(0.65)  # mean of 0.64, 0.65, 0.66
    markdown = auc_markdown(table)
    assert f"[{lo:.4f}, {hi:.4f}]" in markdown and "| 3 |" in markdown

    # one seed: an interval over test examples only, narrower than the one over seeds that
    # disagree (their AUCs differ by far more than the test-set noise)
    assert run_din(tmp_path, {"seeds": 1, "seed": 4, "variants": ["none"]}).success
    single = discriminative_table(workspace.reports, "tiny")
    assert single is not None and single["seeds"] == {"din": 1}
    assert single["interval"] == {"din": "bootstrap over test examples"}
    assert single["auc"]["din"]["none"] == pytest.approx(per_seed[0])
    one_lo, one_hi = single["auc_ci95"]["din"]["none"]
    assert one_lo < per_seed[0] < one_hi and one_hi - one_lo < hi - lo


def test_zero_seeds_fail_the_step(tmp_path: Path, calls: dict[str, list]) -> None:
    result = run_din(tmp_path, {"seeds": 0, "variants": ["none"]})
    assert not result.success and calls["train"] == []


def test_tables_from_reports_without_intervals_still_render() -> None:
    table = {"auc": {"din": {"none": 0.7, "lgsid": 0.72}}}
    assert "**0.7200** |" in auc_markdown(table)
