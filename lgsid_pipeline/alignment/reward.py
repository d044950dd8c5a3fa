"""List-wise reward model (METHOD section 2): r_ij = MLP(E(prompt(c_i, l_j))).

The encoder is frozen, so training works on precomputed prompt embeddings of shape
(lists, K + 1, dim) with soft labels of the same list shape; slot 0 is the true location.
Loss: weighted binary cross-entropy over the whole list,
L = - sum_ij [ p_ij log s(r_ij) + (1 - p_ij) log(1 - s(r_ij)) ].
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lgsid_pipeline.alignment.config import RewardConfig
from lgsid_pipeline.metrics.ranking import mean_kendall_tau, top1_accuracy
from lgsid_pipeline.model_files import ModelFiles

REWARD_FILES = ModelFiles(
    "reward model", meta_file="reward_config.json", weights_file="reward_head.pt"
)


class RewardHead(nn.Module):
    """Two-layer MLP from a prompt embedding to a scalar reward (logit)."""

    def __init__(self, dim: int, hidden: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.dim = dim
        self.net = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, 1)
        )

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.net(embeddings).squeeze(-1)


@dataclass
class RewardTrainingResult:
    """The trained head, its per-epoch history and held-out metrics."""

    model: RewardHead
    history: list[dict[str, float]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)


def listwise_bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Weighted BCE over every slot of every list, summed per list, averaged over lists."""
    per_slot = nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    return per_slot.sum(dim=-1).mean()


def split_lists(n_lists: int, holdout_share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train / held-out list indices (whole anchors go to one side)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_lists)
    n_hold = max(1, int(round(n_lists * holdout_share))) if n_lists > 1 else 0
    return np.sort(order[n_hold:]), np.sort(order[:n_hold])


def score_lists(model: RewardHead, embeddings: np.ndarray, batch: int = 4096) -> np.ndarray:
    """Rewards (logits) for embeddings of any leading shape (..., dim)."""
    model.eval()
    flat = torch.from_numpy(np.ascontiguousarray(embeddings, dtype=np.float32)).reshape(
        -1, embeddings.shape[-1]
    )
    with torch.inference_mode():
        chunks = [model(flat[i : i + batch]) for i in range(0, len(flat), batch)]
    out = torch.cat(chunks) if chunks else torch.zeros(0)
    return out.numpy().reshape(embeddings.shape[:-1])


def evaluate_reward(
    model: RewardHead, embeddings: np.ndarray, distances: np.ndarray
) -> dict[str, float]:
    """True-location top-1 accuracy and Kendall tau between reward and -distance."""
    scores = score_lists(model, embeddings)
    return {
        "top1_accuracy": top1_accuracy(scores, 0),
        "kendall_tau": mean_kendall_tau(scores, distances),
        "lists": float(len(scores)),
        "chance_top1": 1.0 / embeddings.shape[1],
    }


def train_reward_model(
    embeddings: np.ndarray,
    labels: np.ndarray,
    distances: np.ndarray,
    config: RewardConfig,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> RewardTrainingResult:
    """Train the reward head on list-wise samples; evaluate on held-out anchors."""
    if embeddings.ndim != 3 or embeddings.shape[:2] != labels.shape != distances.shape:
        raise ValueError(
            f"expected embeddings (lists, slots, dim) and labels/distances "
            f"(lists, slots); got {embeddings.shape}, {labels.shape}, "
            f"{distances.shape}"
        )
    if not np.isfinite(embeddings).all():
        raise ValueError("reward-model embeddings contain NaN or inf")
    torch.manual_seed(config.seed)
    train_idx, hold_idx = split_lists(len(embeddings), config.holdout_share, config.seed)
    model = RewardHead(embeddings.shape[-1], config.hidden, config.dropout)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    x = torch.from_numpy(np.ascontiguousarray(embeddings, dtype=np.float32))
    y = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.float32))
    rng = np.random.default_rng(config.seed)
    result = RewardTrainingResult(model=model)
    for epoch in range(config.epochs):
        model.train()
        losses = []
        order = rng.permutation(train_idx)
        for start in range(0, len(order), config.batch_lists):
            batch = order[start : start + config.batch_lists]
            loss = listwise_bce(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        entry = {"epoch": float(epoch + 1), "train_loss": float(np.mean(losses))}
        if len(hold_idx):
            entry["holdout_top1"] = evaluate_reward(
                model, embeddings[hold_idx], distances[hold_idx]
            )["top1_accuracy"]
        result.history.append(entry)
        if on_epoch:
            on_epoch(entry)
    evaluated = hold_idx if len(hold_idx) else train_idx
    result.metrics = evaluate_reward(model, embeddings[evaluated], distances[evaluated])
    return result


def save_reward_model(
    model: RewardHead, folder: Path, config: RewardConfig, extra: dict | None = None
) -> Path:
    """Write weights and config to ``folder`` as one folder."""
    return REWARD_FILES.save(
        folder, model, {"dim": model.dim, "config": asdict(config), **(extra or {})}
    )


def load_reward_model(folder: Path) -> RewardHead:
    """Load a saved reward head in eval mode; a missing or corrupt file raises
    :class:`~lgsid_pipeline.model_files.ModelFileError` naming it."""
    meta = REWARD_FILES.read_meta(folder)
    with REWARD_FILES.reading(Path(folder) / REWARD_FILES.meta_file):
        config = RewardConfig(**meta["config"])
        model = RewardHead(int(meta["dim"]), config.hidden, config.dropout)
    return REWARD_FILES.load_weights(folder, model)
