"""The one training loop of the recommenders (CTR backbones, TIGER and OneRec, SASRec):
AdamW for a budget of optimizer steps, gradient clipping, a validation every ``eval_every``
steps and after the last, early stopping after ``patience`` validations without improvement,
and the best validation's weights restored. A CTR model validates once per epoch
(``eval_every`` = batches per epoch); the next-item models every few hundred steps.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import nn

VALID_K = 10  # the next-item models' early stopping watches validation Hit@10 (then NDCG@10)


class StepBudget(Protocol):
    """The training budget fields every next-item model config has."""

    steps: int
    eval_every: int
    patience: int
    batch_size: int
    lr: float
    weight_decay: float
    grad_clip: float
    max_valid_eval: int


@dataclass
class FitResult:
    """Per-validation history, and the step and score of the best validation."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_step: int = 0
    best_score: tuple[float, ...] = ()


def shuffled_batches(
    n: int,
    batch_size: int,
    steps: int,
    rng: np.random.Generator,
) -> Iterator[torch.Tensor]:
    """``steps`` batches of row indices: shuffled epochs over ``n`` rows one after another
    (the last batch of an epoch may be short)."""
    import torch

    done = 0
    while done < steps:
        order = torch.from_numpy(rng.permutation(n))
        for start in range(0, n, batch_size):
            if done >= steps:
                return
            yield order[start : start + batch_size]
            done += 1


def fit(
    model: nn.Module,
    batches: Iterator[Any],
    step_loss: Callable[[Any], torch.Tensor],
    validate: Callable[[], dict[str, float]],
    score: Callable[[dict[str, float]], tuple[float, ...]],
    *,
    steps: int,
    eval_every: int,
    patience: int,
    lr: float,
    weight_decay: float = 0.0,
    grad_clip: float = 0.0,
    extra: Callable[[int], dict[str, float]] | None = None,
    on_eval: Callable[[dict[str, float]], None] | None = None,
) -> FitResult:
    """Train ``model`` on ``batches`` (``steps`` of them) with ``step_loss(batch)``.

    Every ``eval_every`` steps and after the last, ``validate()`` gives metrics (the model in
    eval mode) and ``score(metrics)`` the tuple compared for early stopping (ties of the first
    element broken by the next). Each history entry holds the step, ``extra(step)``, the mean
    training loss since the last validation, ``valid_<metric>``, the seconds since the start
    and an ETA to ``steps``; ``on_eval`` gets it. The best validation's weights are restored
    and the model is left in eval mode.
    """
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    result = FitResult()
    best_state = copy.deepcopy(model.state_dict())
    best: tuple[float, ...] | None = None
    stale, losses, step = 0, [], 0
    started = time.perf_counter()
    for batch in batches:
        model.train()
        loss = step_loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        losses.append(loss.item())
        step += 1
        if step % eval_every and step < steps:
            continue
        model.eval()
        metrics = validate()
        seconds = time.perf_counter() - started
        entry = {
            "step": float(step),
            **(extra(step) if extra else {}),
            "train_loss": float(np.mean(losses)),
            **{f"valid_{name}": value for name, value in metrics.items()},
            "seconds": seconds,
            "eta_seconds": seconds / step * (steps - step),
        }
        losses = []
        result.history.append(entry)
        if on_eval:
            on_eval(entry)
        current = score(metrics)
        if best is None or current > best:
            best, stale, result.best_step = current, 0, step
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
            if stale >= patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    result.best_score = best or ()
    return result


def require_examples(train: int, valid: int) -> None:
    """ValueError unless both the train and the valid split hold examples."""
    if train == 0 or valid == 0:
        raise ValueError(
            f"train and valid splits must be non-empty, got {train} and {valid} examples"
        )


def validation_sample(n_valid: int, budget: StepBudget, rng: np.random.Generator) -> np.ndarray:
    """Rows (sorted) of the ``max_valid_eval`` validation examples early stopping scores."""
    return np.sort(rng.choice(n_valid, min(budget.max_valid_eval, n_valid), replace=False))


def fit_next_item(
    model: nn.Module,
    budget: StepBudget,
    n_train: int,
    step_loss: Callable[[torch.Tensor], torch.Tensor],
    validate: Callable[[], dict[str, float]],
    rng: np.random.Generator,
    extra: Callable[[int], dict[str, float]] | None = None,
    on_eval: Callable[[dict[str, float]], None] | None = None,
) -> FitResult:
    """:func:`fit` for a next-item model: shuffled batches of its ``n_train`` examples for
    ``budget.steps`` steps, early stopping on validation Hit@``VALID_K`` then NDCG."""
    return fit(
        model,
        shuffled_batches(n_train, budget.batch_size, budget.steps, rng),
        step_loss,
        validate,
        lambda m: (m[f"hit@{VALID_K}"], m[f"ndcg@{VALID_K}"]),
        steps=budget.steps,
        eval_every=budget.eval_every,
        patience=budget.patience,
        lr=budget.lr,
        weight_decay=budget.weight_decay,
        grad_clip=budget.grad_clip,
        extra=extra,
        on_eval=on_eval,
    )
