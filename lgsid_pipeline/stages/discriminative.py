"""The discriminative stage of one city as plain functions: a code variant's features and
its models over several seeds, summarized with an AUC interval (the CTR assets and the
benchmark's ablations call these)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from lgsid_pipeline.metrics.intervals import summarize_auc
from lgsid_pipeline.metrics.ranking import logloss
from lgsid_pipeline.recommenders.config import CtrConfig, TrainConfig
from lgsid_pipeline.recommenders.datasets import CityCtrData
from lgsid_pipeline.tokenizer import level_columns

if TYPE_CHECKING:  # torch is imported by the steps that train
    from lgsid_pipeline.recommenders.training import TrainResult
from lgsid_pipeline.warehouse import Warehouse

NO_CODES = "none"  # the variant with item ids only


def variant_codes(warehouse: Warehouse, city: str, variant: str, data: CityCtrData
                  ) -> tuple[np.ndarray, list[int]]:
    """The code matrix of ``data``'s items from the ``semantic_ids`` part ``variant`` (none
    for :data:`NO_CODES`) and the codebook size of each level."""
    if variant == NO_CODES:
        return data.code_matrix(None, []), []
    table = warehouse.read_table("semantic_ids", city, variant)
    levels = level_columns(sum(c.startswith("level_") for c in table.columns))
    sizes = [int(table[c].max()) + 1 for c in levels]
    return data.code_matrix(table, levels), sizes


def variant_results(labels: np.ndarray, probs: np.ndarray,
                    runs: list[tuple[TrainResult, float]]) -> dict:
    """One variant's figures from its seeds' test probabilities ``probs`` (n_seeds, n) and
    (trained model, train seconds) per seed: the seed means of test AUC, log-loss and valid
    AUC, ``auc_ci95``, ``auc_seeds``, ``seeds``, ``interval``, the first seed's best epoch,
    and train seconds per model (the mean over seeds) and in all."""
    if len(runs) != len(probs):
        raise ValueError(f"{len(runs)} runs but test probabilities of {len(probs)} seeds")
    summary = summarize_auc(labels, probs)
    seconds = [s for _, s in runs]
    return {**summary,
            "logloss": float(np.mean([logloss(labels, p) for p in probs])),
            "valid_auc": float(np.mean([r.best_valid_auc for r, _ in runs])),
            "best_epoch": runs[0][0].best_epoch,
            "train_seconds": float(np.mean(seconds)),
            "train_seconds_total": float(np.sum(seconds))}


def train_variant_seeds(data: CityCtrData, codes: np.ndarray, sizes: list[int], backbone: str,
                        train_config: TrainConfig, seeds: Sequence[int], dim: int, top_k: int,
                        on_epoch: Callable[[int, dict], None] | None = None
                        ) -> tuple[dict, list[tuple[TrainResult, float]]]:
    """Train ``backbone`` with ``codes`` once per seed on the same data; returns
    :func:`variant_results` on the test period and (model, train seconds) per seed.
    ``on_epoch(seed, entry)`` sees each epoch."""
    from lgsid_pipeline.recommenders.training import predict_ctr, train_ctr

    splits = data.with_codes(codes)
    runs: list[tuple[TrainResult, float]] = []
    probs = []
    for seed in seeds:
        model_config = CtrConfig(n_users=data.n_users, n_items=max(data.n_items, 1),
                                 n_categories=data.n_categories, codebook_sizes=sizes,
                                 backbone=backbone, dim=dim, top_k=top_k, seed=seed)
        started = time.perf_counter()
        result = train_ctr(model_config, splits["train"], splits["valid"],
                           replace(train_config, seed=seed),
                           on_epoch=(lambda e, s=seed: on_epoch(s, e)) if on_epoch else None)
        runs.append((result, time.perf_counter() - started))
        probs.append(predict_ctr(result.model, splits["test"]))
    labels = splits["test"].label.cpu().numpy()
    return variant_results(labels, np.stack(probs), runs), runs
