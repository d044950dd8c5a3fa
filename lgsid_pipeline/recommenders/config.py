"""Settings of the recommender stages (datasets, CTR backbones and their training, SASRec,
the generative models and their stage), free of torch so that the Dagster code location can
build its config schemas without importing the training code."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from lgsid_pipeline.catalog import (
    BACKBONES,
    CODE_VARIANTS,
    GENERATIVE_KINDS,
    HISTORY_ENCODINGS,
    LONG_SEQUENCE_BACKBONES,
)


@dataclass
class DatasetConfig:
    """How samples are built. Empty ``t1``/``t2`` mean the ``q1``/``q2`` quantiles of the
    city's check-in times; a source with its own split (``file_split_times``) overrides both."""

    t1: str = ""
    t2: str = ""
    q1: float = 0.8
    q2: float = 0.9
    near_negatives: int = 2
    random_negatives: int = 2
    near_pool: int = 50  # nearest items a near negative is drawn from
    short_len: int = 20
    long_len: int = 100
    max_train_positives: int = 40_000  # most recent training positives kept (0: all)
    max_eval_positives: int = 10_000  # per validation/test split (0: all)
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.q1 < self.q2 < 1:
            raise ValueError(f"need 0 < q1 < q2 < 1, got {self.q1}, {self.q2}")
        for name in (
            "near_negatives",
            "random_negatives",
            "max_train_positives",
            "max_eval_positives",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.near_negatives + self.random_negatives < 1:
            raise ValueError("need at least one negative per positive")
        for name in ("short_len", "long_len", "near_pool"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")


@dataclass
class CtrConfig:
    """Model choices (recorded with every trained model)."""

    n_users: int
    n_items: int
    n_categories: int
    codebook_sizes: list[int] = field(default_factory=list)
    backbone: str = "din"
    dim: int = 32
    top_k: int = 20
    mlp_hidden: list[int] = field(default_factory=lambda: [64, 32])
    attention_hidden: int = 32
    dropout: float = 0.1
    hash_bits: int = 16  # ETA only
    aux_loss_weight: float = 0.5  # DIEN only; 0 turns the auxiliary loss off
    seed: int = 0

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {self.backbone!r}")
        self.codebook_sizes = [int(k) for k in self.codebook_sizes]
        self.mlp_hidden = [int(h) for h in self.mlp_hidden]
        for name in ("n_users", "n_categories"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("n_items", "dim", "top_k", "attention_hidden", "hash_bits"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if any(k < 1 for k in self.codebook_sizes):
            raise ValueError(f"codebook sizes must be >= 1, got {self.codebook_sizes}")
        if any(h < 1 for h in self.mlp_hidden):
            raise ValueError(f"mlp_hidden sizes must be >= 1, got {self.mlp_hidden}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.aux_loss_weight < 0:
            raise ValueError(f"aux_loss_weight must be >= 0, got {self.aux_loss_weight}")

    @property
    def uses_long_sequence(self) -> bool:
        """Whether the backbone reads the long sequence (SIM, TWIN, ETA)."""
        return self.backbone in LONG_SEQUENCE_BACKBONES


@dataclass
class TrainConfig:
    """Optimisation choices (recorded with the model)."""

    epochs: int = 8
    batch_size: int = 512
    lr: float = 2e-3
    weight_decay: float = 0.0
    patience: int = 2
    grad_clip: float = 5.0  # max gradient norm; 0 turns clipping off
    eval_batch_size: int = 4096
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "patience", "eval_batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError(
                f"need lr > 0, weight_decay >= 0, grad_clip >= 0; got {self.lr}, "
                f"{self.weight_decay}, {self.grad_clip}"
            )


@dataclass
class SasrecConfig:
    """Model size and training choices (recorded with the model)."""

    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 2
    dropout: float = 0.2
    max_history: int = 50
    steps: int = 1500
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # max gradient norm; 0 turns clipping off
    eval_every: int = 250
    patience: int = 3
    max_valid_eval: int = 1000  # validation examples sampled for early stopping
    eval_batch_size: int = 512
    # newest positions whose next item is in the loss (0 = every position, as the paper).
    # Examples from build_next_item_examples overlap, so every transition is already some
    # example's target and 1 costs far less on large catalogues (the softmax dominates).
    loss_positions: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if (
            isinstance(self.loss_positions, bool)
            or not isinstance(self.loss_positions, int | np.integer)
            or self.loss_positions < 0
        ):
            raise ValueError(f"loss_positions must be an integer >= 0, got {self.loss_positions!r}")
        for name in (
            "d_model",
            "n_layers",
            "n_heads",
            "max_history",
            "steps",
            "batch_size",
            "eval_every",
            "patience",
            "max_valid_eval",
            "eval_batch_size",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if (
            isinstance(self.seed, bool)
            or not isinstance(self.seed, int | np.integer)
            or self.seed < 0
        ):
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} must be divisible by n_heads {self.n_heads}")
        for name in ("dropout", "lr", "weight_decay", "grad_clip"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
            ):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.lr <= 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError(
                f"need lr > 0, weight_decay >= 0, grad_clip >= 0; got {self.lr}, "
                f"{self.weight_decay}, {self.grad_clip}"
            )


LEGACY_HISTORY_ENCODING = "tokens"  # what a saved config without the setting used


@dataclass
class GenerativeConfig:
    """Model size and training choices (recorded with the model).

    ``tiger``: ``n_layers`` encoder and ``n_layers`` decoder layers; ``onerec``: one causal
    stack of ``2 * n_layers`` layers (about the same size).
    """

    kind: str = "tiger"
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 256
    # Dropout's Bernoulli masks are a quarter of a CPU training step (measured with the torch
    # profiler on TIGER at d_model 64); early stopping guards the short step budgets instead.
    dropout: float = 0.0
    max_history: int = 20  # check-ins the model reads
    # how the model reads the history: "items", one position per check-in, the sum of its
    # code tokens' embeddings; "tokens", every code token of every check-in in one sequence
    # (the paper's TIGER). "items" is depth times shorter: a TIGER step at d_model 64 and
    # 20 check-ins of 4 to 5 tokens takes a quarter of the time at the same validation
    # Hit@10 (bench/results/generative_speed.json). Models saved before the setting existed
    # read tokens (LEGACY_HISTORY_ENCODING).
    history_encoding: str = "items"
    steps: int = 2000  # optimizer steps (the training budget)
    eval_every: int = 250  # steps between validations (early stopping, best weights)
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.01
    patience: int = 3  # validations without improvement before stopping
    grad_clip: float = 1.0  # max gradient norm; 0 turns clipping off
    beam_size: int = 20
    max_valid_eval: int = 1000  # validation examples sampled for early stopping
    eval_batch_size: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in GENERATIVE_KINDS:
            raise ValueError(f"kind must be one of {GENERATIVE_KINDS}, got {self.kind!r}")
        if self.history_encoding not in HISTORY_ENCODINGS:
            raise ValueError(
                f"history_encoding must be one of {HISTORY_ENCODINGS}, "
                f"got {self.history_encoding!r}"
            )
        for name in (
            "d_model",
            "n_layers",
            "n_heads",
            "d_ff",
            "max_history",
            "steps",
            "eval_every",
            "batch_size",
            "patience",
            "beam_size",
            "max_valid_eval",
            "eval_batch_size",
        ):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} must be divisible by n_heads {self.n_heads}")
        if not 0 <= self.dropout < 1 or self.lr <= 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("need 0 <= dropout < 1, lr > 0, weight_decay >= 0, grad_clip >= 0")


@dataclass
class GenerativeStageConfig:
    """Model size, training budget and evaluation samples of the generative stage."""

    variants: list[str] = field(default_factory=lambda: list(CODE_VARIANTS))
    # the model's settings, with the library's defaults (GenerativeConfig holds them once)
    d_model: int = GenerativeConfig.d_model
    n_layers: int = GenerativeConfig.n_layers
    dropout: float = GenerativeConfig.dropout
    steps: int = GenerativeConfig.steps
    eval_every: int = GenerativeConfig.eval_every
    patience: int = GenerativeConfig.patience
    batch_size: int = GenerativeConfig.batch_size
    lr: float = GenerativeConfig.lr
    beam_size: int = GenerativeConfig.beam_size
    max_history: int = GenerativeConfig.max_history
    history_encoding: str = GenerativeConfig.history_encoding
    history_window: int = 200  # check-ins floor (b) and the history-aware ranking count
    max_train_examples: int = 50_000  # seeded sample of the training examples (0: all)
    # validation sample; its halves: ``tune`` fits the re-ranking, ``gate`` scores models
    max_valid_eval: int = 3_000
    early_stop_examples: int = 500  # of those, scored at each early-stopping evaluation
    max_test_examples: int = 2_000  # test sample (0: all)
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = sorted(set(self.variants) - set(CODE_VARIANTS))
        if unknown or not self.variants:
            raise ValueError(f"variants must be some of {CODE_VARIANTS}, got {self.variants}")
        if self.history_window < self.max_history:
            raise ValueError(
                f"history_window {self.history_window} must be >= max_history {self.max_history}"
            )

    def model_config(self, kind: str, seed: int | None = None) -> GenerativeConfig:
        """The library model config of ``kind`` with these settings."""
        return GenerativeConfig(
            kind=kind,
            d_model=self.d_model,
            n_layers=self.n_layers,
            dropout=self.dropout,
            steps=self.steps,
            eval_every=self.eval_every,
            patience=self.patience,
            batch_size=self.batch_size,
            lr=self.lr,
            beam_size=self.beam_size,
            max_history=self.max_history,
            history_encoding=self.history_encoding,
            max_valid_eval=min(self.early_stop_examples, self.max_valid_eval),
            seed=self.seed if seed is None else seed,
        )


@dataclass(frozen=True)
class TopKCacheSettings:
    """How many items each user's cache holds, and how many latest check-ins it reads."""

    k: int = 10
    history_window: int = GenerativeStageConfig.history_window
