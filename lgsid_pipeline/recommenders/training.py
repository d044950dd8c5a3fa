"""Training, evaluation and persistence of the CTR backbones.

Training minimises binary cross-entropy on the click label (plus DIEN's auxiliary loss
when configured), evaluates validation AUC after every epoch, stops after ``patience``
epochs without improvement and restores the best-validation-AUC weights.
"""

from __future__ import annotations

import copy
import json
import pickle
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from lgsid_pipeline.atomic import atomic_folder
from lgsid_pipeline.metrics.ranking import auc, logloss
from lgsid_pipeline.recommenders.blocks import CtrBatch
from lgsid_pipeline.recommenders.config import CtrConfig, TrainConfig
from lgsid_pipeline.recommenders.discriminative import CtrModel

CONFIG_FILE = "ctr_config.json"
WEIGHTS_FILE = "ctr_model.pt"


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
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr,
                                  weight_decay=config.weight_decay)
    bce = nn.functional.binary_cross_entropy_with_logits
    result = TrainResult(model=model, model_config=model_config, train_config=config)
    best_state = copy.deepcopy(model.state_dict())
    best_auc, stale = -np.inf, 0
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        model.train()
        losses = []
        order = torch.from_numpy(rng.permutation(len(train)))
        for start in range(0, len(order), config.batch_size):
            batch = train.index(order[start:start + config.batch_size]).to(device)
            logits, aux = model.forward_with_aux(batch, check=True)
            loss = bce(logits, batch.label) + model_config.aux_loss_weight * aux
            optimizer.zero_grad()
            loss.backward()
            if config.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            losses.append(loss.item())
        metrics = evaluate_ctr(model, valid, config.eval_batch_size)
        entry = {"epoch": float(epoch), "train_loss": float(np.mean(losses)),
                 "valid_auc": metrics["auc"], "valid_logloss": metrics["logloss"],
                 "seconds": time.perf_counter() - started}
        result.history.append(entry)
        if on_epoch:
            on_epoch(entry)
        if metrics["auc"] > best_auc:
            best_auc, stale, result.best_epoch = metrics["auc"], 0, epoch
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
            if stale >= config.patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    result.best_valid_auc = float(best_auc)
    return result


def save_ctr_model(result: TrainResult, folder: Path, extra: dict | None = None) -> Path:
    """Write ``ctr_config.json`` (configs, history) and ``ctr_model.pt`` (state dict) to
    ``folder`` atomically (temp folder, then rename)."""
    folder = Path(folder)
    with atomic_folder(folder) as tmp:
        torch.save(result.model.state_dict(), tmp / WEIGHTS_FILE)
        meta = {"model_config": asdict(result.model_config),
                "train_config": asdict(result.train_config), "history": result.history,
                "best_epoch": result.best_epoch, "best_valid_auc": result.best_valid_auc,
                **(extra or {})}
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
    return folder


def load_ctr_model(folder: Path) -> CtrModel:
    """Load a model saved by :func:`save_ctr_model`, in eval mode.

    Raises FileNotFoundError naming the file when it is missing or unreadable.
    """
    folder = Path(folder)
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"CTR model file {path} is missing")
    try:
        model = CtrModel(CtrConfig(**json.loads(config_path.read_text())["model_config"]))
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise FileNotFoundError(f"CTR model config {config_path} is corrupt: {exc}") from exc
    try:
        model.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        raise FileNotFoundError(f"CTR model weights {weights_path} are corrupt or do not "
                                f"match {config_path}: {exc}") from exc
    model.eval()
    return model
