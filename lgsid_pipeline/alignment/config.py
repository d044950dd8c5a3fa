"""Settings of the alignment stage (reward model, G-DPO), free of torch so that the Dagster
code location can build its config schemas without importing the training code."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CooccurrenceSettings:
    """D_dc: same-user same-day co-visits at or above the count quantile."""

    quantile: float = 0.9
    min_count: int = 2


@dataclass(frozen=True)
class GeoPairSettings:
    """D_gc candidate generation (sql/geo_pair_candidates.sql) and the triples' seed."""

    n_anchors: int = 3000
    near_km: float = 1.5
    per_side: int = 8
    cell_deg: float = 0.02
    seed: int = 0


@dataclass(frozen=True)
class RewardConfig:
    """List-wise reward-model training (METHOD section 2; recorded with the model)."""

    hidden: int = 256
    dropout: float = 0.1
    epochs: int = 40
    lr: float = 2e-3
    weight_decay: float = 1e-4
    batch_lists: int = 128
    holdout_share: float = 0.2
    seed: int = 0


@dataclass(frozen=True)
class GdpoConfig:
    """G-DPO with LoRA (METHOD section 3; recorded with the aligned encoder)."""

    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    beta: float = 0.9
    lam: float = 1.4
    tau: float = 0.05
    steps: int = 200
    batch_size: int = 32
    lr: float = 5e-4
    weight_by_margin: bool = False
    seed: int = 0
