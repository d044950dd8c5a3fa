"""SASRec (Kang & McAuley, 2018): a self-attentive sequential recommender on raw item ids.

A trained floor for the generative recommenders: it reads the same examples
(:data:`~lgsid_pipeline.recommenders.next_item.Examples`: histories (S, N) of item indices,
oldest first, left-padded with -1; targets (S,)) but scores every item directly instead of
generating semantic-ID codes.

Model: item embeddings (``n_items + 1`` rows; row ``n_items`` is the padding row, so item
``i`` is row ``i`` and index -1 maps to the last row) scaled by ``sqrt(d_model)``, plus
learned absolute position embeddings over the last ``max_history`` positions. Histories are
always fitted to ``max_history`` columns (trimmed to the newest, or left-padded), so the
positions are aligned to the right end: the newest item always has position
``max_history - 1``. Then dropout, ``n_layers`` pre-LN causal self-attention blocks (own
small blocks on ``scaled_dot_product_attention``; point-wise feed-forward of width
``d_model`` as in the paper), and a final LayerNorm. The
score of item ``j`` after position ``t`` is the dot product of the hidden state at ``t`` with
item ``j``'s embedding (shared input / output embedding).

Attention: a query sees the real items at or before it; a padding query sees only itself, so
no softmax row is fully masked (no NaN, even for an all-padding history), and since padding
is never a key of a real position, the padding width does not change any real position's
output.

Training: for each example the sequence ``history + [target]`` is shifted by one, and the
loss is full-softmax cross-entropy over all items at every position whose input is a real
item (each next item; the final position predicts the example's target), averaged over
positions. The final position always counts, so an all-padding history still teaches the
target prior. The loss is formed ``LOSS_CHUNK_LOGITS`` logits at a time with both gradients
computed in the same pass, so a batch's (positions x items) logits never exist whole; the
three (positions x d x items) matrix products dominate the cost of a step. AdamW for
``steps`` steps with gradient clipping; every ``eval_every`` steps (and after the last)
Hit@10 on up to ``max_valid_eval`` sampled validation examples, early stopping after
``patience`` evaluations without improvement, best weights restored.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from lgsid_pipeline.model_files import ModelFiles
from lgsid_pipeline.recommenders.config import SasrecConfig
from lgsid_pipeline.recommenders.fitting import (
    VALID_K,
    fit_next_item,
    require_examples,
    validation_sample,
)
from lgsid_pipeline.recommenders.next_item import Examples, fit_history, ranking_metrics

SASREC_FILES = ModelFiles(
    "SASRec model", meta_file="sasrec_config.json", weights_file="sasrec_model.pt"
)
# the training loss holds at most this many logits (positions x items) at a time
LOSS_CHUNK_LOGITS = 1 << 26


# --------------------------------------------------------------------------- model


class _Block(nn.Module):
    """Pre-LN transformer block: x + attn(LN(x)), then x + ffn(LN(x))."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.ffn = nn.Sequential(
            nn.Linear(d_model, d_model), nn.ReLU(), nn.Dropout(dropout), nn.Linear(d_model, d_model)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """``x`` (B, L, d); ``allowed`` (B, 1, L, L) bool, True where a query sees a key."""
        b, n, d = x.shape
        q, k, v = (
            self.qkv(self.norm1(x))
            .view(b, n, 3, self.n_heads, d // self.n_heads)
            .permute(2, 0, 3, 1, 4)
        )
        att = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0
        )
        x = x + self.drop(self.out(att.transpose(1, 2).reshape(b, n, d)))
        return x + self.drop(self.ffn(self.norm2(x)))


class SasrecModel(nn.Module):
    """SASRec over ``n_items`` items; inputs are (B, max_history) indices, -1 = padding."""

    def __init__(self, config: SasrecConfig, n_items: int) -> None:
        super().__init__()
        if isinstance(n_items, bool) or not isinstance(n_items, int | np.integer) or n_items < 1:
            raise ValueError(f"n_items must be a positive integer, got {n_items!r}")
        self.config, self.n_items = config, int(n_items)
        d = config.d_model
        self.item_emb = nn.Embedding(self.n_items + 1, d, padding_idx=self.n_items)
        self.pos_emb = nn.Embedding(config.max_history, d)
        nn.init.normal_(self.item_emb.weight, std=d**-0.5)  # unit variance after * sqrt(d)
        nn.init.normal_(self.pos_emb.weight, std=0.02)
        with torch.no_grad():
            self.item_emb.weight[self.n_items].zero_()
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            _Block(d, config.n_heads, config.dropout) for _ in range(config.n_layers)
        )
        self.norm = nn.LayerNorm(d)

    def item_weights(self) -> torch.Tensor:
        """(n_items, d) output embeddings (the input embeddings without the padding row)."""
        return self.item_emb.weight[: self.n_items]

    def hidden(self, history: torch.Tensor) -> torch.Tensor:
        """Hidden states (B, L, d) for item indices ``history`` (B, L = max_history)."""
        n = self.config.max_history
        if history.ndim != 2 or history.shape[1] != n:
            raise ValueError(f"history must be (B, {n}), got {tuple(history.shape)}")
        real = history >= 0
        x = self.item_emb(torch.where(real, history, self.n_items)) * math.sqrt(self.config.d_model)
        x = self.drop(x + self.pos_emb.weight[None])
        eye = torch.eye(n, dtype=torch.bool, device=history.device)
        causal = torch.ones(n, n, dtype=torch.bool, device=history.device).tril()
        allowed = ((causal[None] & real[:, None, :]) | eye[None])[:, None]  # (B, 1, L, L)
        for block in self.blocks:
            x = block(x, allowed)
        return self.norm(x)

    def last_scores(self, history: torch.Tensor) -> torch.Tensor:
        """Scores (B, n_items) of every item after the newest position."""
        return self.hidden(history)[:, -1] @ self.item_weights().T

    def loss(self, history: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean next-item cross-entropy over the real positions of ``history + [target]``."""
        labels = torch.cat([history[:, 1:], targets[:, None]], dim=1)
        keep = history >= 0
        if self.config.loss_positions:
            keep[:, : -self.config.loss_positions] = False
        keep[:, -1] = True
        hidden = self.hidden(history)[keep]
        return _softmax_loss(hidden, self.item_weights(), labels[keep])


class _FusedSoftmaxLoss(torch.autograd.Function):
    """Mean full-softmax cross-entropy of ``hidden @ weights.T`` against ``labels``, with
    both gradients computed in the forward pass, ``rows`` positions at a time: the
    (positions x items) logits never exist whole, and nothing is recomputed."""

    @staticmethod
    def forward(
        ctx: Any, hidden: torch.Tensor, weights: torch.Tensor, labels: torch.Tensor, rows: int
    ) -> torch.Tensor:
        n = len(hidden)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden, grad_weights = torch.empty_like(hidden), torch.zeros_like(weights)
        for start in range(0, n, rows):
            h, y = hidden[start : start + rows], labels[start : start + rows]
            logits = (h @ weights.T).float()
            top = logits.amax(dim=1, keepdim=True)
            total -= (logits.gather(1, y[:, None]) - top).sum()
            probs = logits.sub_(top).exp_()  # softmax, in place
            norm = probs.sum(dim=1, keepdim=True)
            total += norm.log().sum()
            probs.div_(norm)[torch.arange(len(y), device=y.device), y] -= 1.0  # d(nll)/d(logits)
            probs = probs.to(hidden.dtype)
            grad_hidden[start : start + rows] = probs @ weights
            grad_weights.addmm_(probs.T, h)
        ctx.save_for_backward(grad_hidden / n, grad_weights / n)
        return total / n

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad_hidden, grad_weights = ctx.saved_tensors
        return grad_hidden * grad, grad_weights * grad, None, None


def _softmax_loss(
    hidden: torch.Tensor, weights: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Mean full-softmax cross-entropy of ``hidden`` (M, d) against item ``labels`` (M,)."""
    if not torch.is_grad_enabled() or not (hidden.requires_grad or weights.requires_grad):
        return F.cross_entropy((hidden @ weights.T).float(), labels)
    rows = max(1, LOSS_CHUNK_LOGITS // len(weights))
    return _FusedSoftmaxLoss.apply(hidden, weights, labels, rows)


# --------------------------------------------------------------------------- inputs


def _check_k(k: Any, n_items: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= n_items:
        raise ValueError(f"need an integer 1 <= k <= {n_items} (the number of items), got {k!r}")
    return int(k)


def _histories(histories: Any, config: SasrecConfig, n_items: int) -> np.ndarray:
    """(S, max_history) item indices, -1 = left padding; ValueError on anything else."""
    hist = fit_history(histories, config.max_history, n_items)
    if hist.size and hist.min() < -1:
        raise ValueError(f"history item {hist.min()} out of range (-1 is the padding)")
    real = hist >= 0
    if (real[:, :-1] & ~real[:, 1:]).any():
        raise ValueError("histories must be left-padded: -1 after an item")
    return hist


def _targets(targets: Any, n_rows: int, n_items: int) -> np.ndarray:
    tgt = np.asarray(targets)
    if tgt.shape != (n_rows,) or (tgt.size and tgt.dtype.kind not in "iu"):
        raise ValueError(f"targets must be ({n_rows},) integers, got {tgt.dtype} {tgt.shape}")
    tgt = tgt.astype(np.int64)
    if tgt.size and (tgt.min() < 0 or tgt.max() >= n_items):
        raise ValueError(f"targets must be item indices in [0, {n_items})")
    return tgt


def _examples(
    examples: Examples, config: SasrecConfig, n_items: int, name: str
) -> tuple[np.ndarray, np.ndarray]:
    try:
        histories, targets = examples
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a (histories, targets) pair") from exc
    hist = _histories(histories, config, n_items)
    return hist, _targets(targets, len(hist), n_items)


# --------------------------------------------------------------------------- training


@dataclass
class SasrecResult:
    """A trained model (best-validation weights, eval mode), its config and history."""

    model: SasrecModel
    config: SasrecConfig
    history: list[dict[str, float]] = field(default_factory=list)
    best_step: int = 0
    best_valid_hit10: float = float("nan")

    @property
    def n_items(self) -> int:
        return self.model.n_items


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def recommend_sasrec(result: SasrecResult, histories: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Items (S, k) int64 and scores (S, k) float32, best first, ranking all items, for
    histories (S, N) of item indices (-1 = left padding; trimmed to the newest
    ``max_history`` or left-padded). Runs in eval mode (restores the model's mode)."""
    model, config = result.model, result.config
    k = _check_k(k, model.n_items)
    hist = _histories(histories, config, model.n_items)
    items, scores = [np.zeros((0, k), dtype=np.int64)], [np.zeros((0, k), dtype=np.float32)]
    was_training, device = model.training, _device(model)
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(hist), config.eval_batch_size):
                chunk = torch.from_numpy(hist[start : start + config.eval_batch_size]).to(device)
                top = model.last_scores(chunk).float().topk(k, dim=1)
                items.append(top.indices.cpu().numpy().astype(np.int64))
                scores.append(top.values.cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(items), np.concatenate(scores)


def evaluate_sasrec(
    result: SasrecResult, examples: Examples, ks: Sequence[int] = (5, 10)
) -> dict[str, float]:
    """Hit@k and NDCG@k (for each k in ``ks``) of the full-ranking top-K on ``examples``."""
    if not len(ks):
        raise ValueError("ks must not be empty")
    hist, targets = _examples(examples, result.config, result.n_items, "examples")
    items, _ = recommend_sasrec(result, hist, max(ks))
    return ranking_metrics(items, targets, ks)


def train_sasrec(
    config: SasrecConfig,
    n_items: int,
    splits: dict[str, Examples],
    on_eval: Callable[[dict[str, float]], None] | None = None,
    device: torch.device | str = "cpu",
) -> SasrecResult:
    """Train a fresh SASRec on ``splits["train"]`` for ``config.steps`` steps (batches drawn
    from successive shuffles of the training examples); every ``eval_every`` steps and after
    the last, Hit@10 on up to ``max_valid_eval`` sampled ``splits["valid"]`` examples (ties
    broken by NDCG@10); stop after ``patience`` evaluations without improvement and keep the
    best evaluation's weights.

    ``on_eval`` gets each history entry: step, train_loss (mean since the previous
    evaluation), valid_hit@10, valid_ndcg@10, seconds (since the start) and eta_seconds (to
    ``steps``, an upper bound when early stopping ends the run sooner).
    """
    if isinstance(n_items, bool) or not isinstance(n_items, int | np.integer) or n_items < VALID_K:
        raise ValueError(f"need an integer n_items >= {VALID_K}, got {n_items!r}")
    n_items = int(n_items)
    for name in ("train", "valid"):
        if name not in splits:
            raise ValueError(f"splits needs a {name!r} split, got {sorted(splits)}")
    train_h, train_t = _examples(splits["train"], config, n_items, "splits['train']")
    valid_h, valid_t = _examples(splits["valid"], config, n_items, "splits['valid']")
    require_examples(len(train_t), len(valid_t))
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = SasrecModel(config, n_items).to(device)
    result = SasrecResult(model, config)
    pick = validation_sample(len(valid_t), config, rng)
    valid = (valid_h[pick], valid_t[pick])
    history, targets = torch.from_numpy(train_h), torch.from_numpy(train_t)
    fitted = fit_next_item(
        model,
        config,
        len(targets),
        lambda rows: model.loss(history[rows].to(device), targets[rows].to(device)),
        lambda: evaluate_sasrec(result, valid, ks=(VALID_K,)),
        rng,
        on_eval=on_eval,
    )
    result.history, result.best_step = fitted.history, fitted.best_step
    result.best_valid_hit10 = float(fitted.best_score[0])
    return result


# --------------------------------------------------------------------------- persistence


def save_sasrec(result: SasrecResult, folder: Path | str, extra: dict | None = None) -> Path:
    """Write ``sasrec_config.json`` (config, n_items, history) and ``sasrec_model.pt``
    (state dict) to ``folder`` as one folder."""
    return SASREC_FILES.save(
        folder,
        result.model,
        {
            "config": asdict(result.config),
            "n_items": result.n_items,
            "history": result.history,
            "best_step": result.best_step,
            "best_valid_hit10": result.best_valid_hit10,
            **(extra or {}),
        },
    )


def load_sasrec(folder: Path | str) -> SasrecResult:
    """Load what :func:`save_sasrec` wrote, on the CPU in eval mode; a missing or corrupt
    file raises :class:`~lgsid_pipeline.model_files.ModelFileError` naming it."""
    meta = SASREC_FILES.read_meta(folder)
    with SASREC_FILES.reading(Path(folder) / SASREC_FILES.meta_file):
        config = SasrecConfig(**meta["config"])
        model = SasrecModel(config, meta["n_items"])
    SASREC_FILES.load_weights(folder, model)
    return SasrecResult(
        model,
        config,
        meta.get("history", []),
        int(meta.get("best_step", 0)),
        float(meta.get("best_valid_hit10", float("nan"))),
    )
