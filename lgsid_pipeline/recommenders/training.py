"""Training, evaluation and persistence of the CTR backbones.

Training minimises binary cross-entropy on the click label (plus DIEN's auxiliary loss
when configured), evaluates validation AUC after every epoch, stops after ``patience``
epochs without improvement and restores the best-validation-AUC weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from lgsid_pipeline.metrics.ranking import auc, logloss
from lgsid_pipeline.model_files import ModelFiles
from lgsid_pipeline.recommenders.blocks import CtrBatch
from lgsid_pipeline.recommenders.config import CtrConfig, TrainConfig
from lgsid_pipeline.recommenders.discriminative import CtrModel
from lgsid_pipeline.recommenders.fitting import fit, shuffled_batches

CTR_FILES = ModelFiles("CTR model", meta_file="ctr_config.json", weights_file="ctr_model.pt")


@dataclass
class TrainResult:
    """The trained model (best-validation-AUC weights), its configs and per-epoch history."""

    model: CtrModel
    model_config: CtrConfig
    train_config: TrainConfig
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_valid_auc: float = float("nan")


class CtrData(Protocol):
    """A whole split: a ``CtrBatch``, or samples that gather batches lazily (``CtrSamples``)."""

    label: torch.Tensor

    def __len__(self) -> int: ...

    def index(self, idx: Any) -> CtrBatch: ...


def _check_labels(data: CtrData, name: str) -> None:
    labels = data.label
    if len(data) == 0:
        raise ValueError(f"{name} split is empty")
    if not ((labels == 0) | (labels == 1)).all():
        raise ValueError(f"{name} labels must be 0 or 1")
    if labels.min() == labels.max():
        raise ValueError(f"{name} split has only label {labels[0].item():g}; AUC needs both")


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def predict_ctr(model: CtrModel, data: CtrData, batch_size: int = 4096) -> np.ndarray:
    """Click probabilities (B,) as float64, in eval mode (no dropout)."""
    was_training = model.training
    model.eval()
    device = _device(model)
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(data), batch_size):
            chunk = data.index(slice(start, start + batch_size)).to(device)
            logits, _ = model.forward_with_aux(chunk, check=True)
            chunks.append(torch.sigmoid(logits).double().cpu().numpy())
    model.train(was_training)
    return np.concatenate(chunks) if chunks else np.zeros(0)


def evaluate_ctr(model: CtrModel, data: CtrData, batch_size: int = 4096) -> dict[str, float]:
    """AUC and log-loss of ``model`` on ``data`` (needs both labels present)."""
    probs = predict_ctr(model, data, batch_size)
    labels = data.label.cpu().numpy()
    return {"auc": auc(labels, probs), "logloss": logloss(labels, probs)}


def train_ctr(
    model_config: CtrConfig,
    train: CtrData,
    valid: CtrData,
    config: TrainConfig,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    device: torch.device | str = "cpu",
) -> TrainResult:
    """Train a fresh :class:`CtrModel`; early-stop on validation AUC, keep the best epoch."""
    model = CtrModel(model_config).to(device)
    _check_labels(train, "train")
    _check_labels(valid, "valid")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    bce = nn.functional.binary_cross_entropy_with_logits
    result = TrainResult(model=model, model_config=model_config, train_config=config)
    per_epoch = math.ceil(len(train) / config.batch_size)

    def step_loss(rows: torch.Tensor) -> torch.Tensor:
        batch = train.index(rows).to(device)
        logits, aux = model.forward_with_aux(batch, check=True)
        return bce(logits, batch.label) + model_config.aux_loss_weight * aux

    fitted = fit(
        model,
        shuffled_batches(len(train), config.batch_size, config.epochs * per_epoch, rng),
        step_loss,
        lambda: evaluate_ctr(model, valid, config.eval_batch_size),
        lambda m: (m["auc"],),
        steps=config.epochs * per_epoch,
        eval_every=per_epoch,
        patience=config.patience,
        lr=config.lr,
        weight_decay=config.weight_decay,
        grad_clip=config.grad_clip,
        extra=lambda step: {"epoch": float(step // per_epoch)},
        on_eval=on_epoch,
    )
    result.history = fitted.history
    result.best_epoch = fitted.best_step // per_epoch
    result.best_valid_auc = float(fitted.best_score[0])
    return result


def save_ctr_model(result: TrainResult, folder: Path, extra: dict | None = None) -> Path:
    """Write ``ctr_config.json`` (configs, history) and ``ctr_model.pt`` (state dict) to
    ``folder`` as one folder."""
    return CTR_FILES.save(
        folder,
        result.model,
        {
            "model_config": asdict(result.model_config),
            "train_config": asdict(result.train_config),
            "history": result.history,
            "best_epoch": result.best_epoch,
            "best_valid_auc": result.best_valid_auc,
            **(extra or {}),
        },
    )


def load_ctr_model(folder: Path) -> CtrModel:
    """Load a model saved by :func:`save_ctr_model`, in eval mode; a missing or corrupt file
    raises :class:`~lgsid_pipeline.model_files.ModelFileError` naming it."""
    meta = CTR_FILES.read_meta(folder)
    with CTR_FILES.reading(Path(folder) / CTR_FILES.meta_file):
        model = CtrModel(CtrConfig(**meta["model_config"]))
    return CTR_FILES.load_weights(folder, model)
