"""The interface every tokenizer implements: fit, assign, reconstruct, save, load.

A tokenizer maps items (their table rows and one embedding each) to ``L`` tokens, one per
codebook level. State is a dict of numpy arrays plus JSON metadata, saved as
``tokenizer.json`` + ``state.npz`` in one folder (the folder MLflow registers).
"""

from __future__ import annotations

import hashlib
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from lgsid_pipeline.atomic import atomic_folder
from lgsid_pipeline.model_files import ModelFileError
from lgsid_pipeline.tokenizer.config import TokenizerConfig

MANIFEST = "tokenizer.json"
STATE = "state.npz"
EpochCallback = Callable[[dict[str, float]], None]


class TokenizerNotFittedError(RuntimeError):
    """A tokenizer used before ``fit`` or ``load``."""


def check_embeddings(embeddings: np.ndarray, n_items: int, dim: int | None = None) -> np.ndarray:
    """A finite float32 (n_items, dim) matrix, or a clear ValueError."""
    x = np.asarray(embeddings)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D (items, dim) array, got shape {x.shape}")
    if len(x) != n_items:
        raise ValueError(f"{n_items} items but {len(x)} embeddings")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(
            f"embeddings have dimension {x.shape[1]} but the tokenizer was "
            f"fitted on dimension {dim}"
        )
    if x.dtype.kind not in "fiu":
        raise ValueError(f"embeddings must be numeric, got dtype {x.dtype}")
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise ValueError(
            f"{int(bad.sum())} of {len(x)} embeddings contain NaN or inf "
            f"(first at row {int(np.argmax(bad))})"
        )
    return x.astype(np.float32, copy=False)


def city_weights(cities: pd.Series, balance: float) -> np.ndarray:
    """Per-item weights ~ n_city^-balance, mean 1: with balance 1 every city counts the same,
    so a small city is not left a handful of codewords by a large one."""
    per_city = cities.map(cities.value_counts()).to_numpy(dtype=np.float64)
    weights = per_city**-balance
    return weights / weights.mean()


def match_codebooks(new: np.ndarray, old: np.ndarray) -> np.ndarray:
    """Hungarian matching of codewords: ``order`` such that ``new[order][j]`` is closest (in
    total squared distance) to ``old[j]``. Codebooks must have the same size."""
    from scipy.optimize import linear_sum_assignment

    if new.shape != old.shape:
        raise ValueError(f"cannot match codebooks of shapes {new.shape} and {old.shape}")
    cost = ((new[:, None, :] - old[None, :, :]) ** 2).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    order = np.empty(len(new), dtype=np.int64)
    order[cols] = rows
    return order


class Tokenizer(ABC):
    """Base of every tokenizer; subclasses implement the model-specific parts."""

    kind: ClassVar[str]
    embedding_part: ClassVar[str]  # which item_embeddings part it reads: aligned or reference
    registry: ClassVar[dict[str, type[Tokenizer]]] = {}

    def __init__(self, config: TokenizerConfig | None = None) -> None:
        self.config = config or TokenizerConfig()
        self.dim: int | None = None
        self.cities: list[str] = []
        self.history: list[dict[str, float]] = []
        self.fit_seconds = 0.0
        self.warm_started = False
        self.encoder_version: str | None = None  # of the embeddings it was fitted on

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Tokenizer.registry[cls.kind] = cls

    @property
    def codebook_sizes(self) -> list[int]:
        return list(self.config.codebook_sizes)

    @property
    def n_levels(self) -> int:
        return len(self.config.codebook_sizes)

    @property
    def fitted(self) -> bool:
        return self.dim is not None

    def _require_fitted(self) -> None:
        if not self.fitted:
            raise TokenizerNotFittedError(f"{self.kind} tokenizer is not fitted; fit or load it")

    @property
    def fitted_dim(self) -> int:
        """The embedding dimension it was fitted on (``TokenizerNotFittedError`` before)."""
        if self.dim is None:
            raise TokenizerNotFittedError(f"{self.kind} tokenizer is not fitted; fit or load it")
        return self.dim

    def fit(
        self,
        items: pd.DataFrame,
        embeddings: np.ndarray,
        previous: Tokenizer | None = None,
        on_epoch: EpochCallback | None = None,
        warm_start: bool = True,
        encoder_version: str | None = None,
    ) -> Tokenizer:
        """Fit on the items and their embeddings (rows aligned), recording the version of the
        encoder that computed them.

        With ``previous`` (an earlier fit of the same kind), training starts from its codebooks
        where shapes allow (unless ``warm_start`` is off), and codewords are then matched to
        its codewords, so a retrain keeps codes stable where it can.
        """
        if "city" not in items.columns:
            raise ValueError("items need a 'city' column")
        x = check_embeddings(embeddings, len(items))
        if len(x) < max(self.codebook_sizes):
            raise ValueError(
                f"{len(x)} items cannot fill codebooks of size "
                f"{self.codebook_sizes}; use smaller codebooks"
            )
        if previous is not None and (previous.kind != self.kind or not previous.fitted):
            previous = None
        started = time.perf_counter()
        self.dim = x.shape[1]
        self.cities = sorted(items["city"].astype(str).unique().tolist())
        self.encoder_version = encoder_version
        self.warm_started = warm_start and previous is not None and self._compatible(previous)
        weights = city_weights(items["city"], self.config.city_balance)
        self._fit(items, x, previous if self.warm_started else None, on_epoch, weights)
        if previous is not None and self._compatible(previous):
            self.match_to(previous)
        self.fit_seconds = time.perf_counter() - started
        return self

    def assign(self, items: pd.DataFrame, embeddings: np.ndarray) -> np.ndarray:
        """Tokens (n_items, n_levels) of items with the frozen tokenizer (no training)."""
        self._require_fitted()
        x = check_embeddings(embeddings, len(items), self.dim)
        if len(x) == 0:
            return np.zeros((0, self.n_levels), dtype=np.int64)
        return self._assign(items, x)

    def reconstruct(self, items: pd.DataFrame, embeddings: np.ndarray) -> np.ndarray:
        """The tokenizer's reconstruction of each embedding from its tokens."""
        tokens = self.assign(items, embeddings)
        return self._decode(tokens)

    def match_to(self, previous: Tokenizer) -> None:
        """Relabel codewords level by level to their Hungarian match in ``previous``."""
        new_levels, old_levels = self.codewords(), previous.codewords()
        orders = [
            match_codebooks(n, o) if n.shape == o.shape else np.arange(len(n))
            for n, o in zip(new_levels, old_levels, strict=True)
        ]
        self._permute(orders)

    @property
    def version(self) -> str:
        """Content hash of the fitted state and config (changes when codes can change)."""
        self._require_fitted()
        digest = hashlib.sha256(json.dumps(asdict(self.config), sort_keys=True).encode())
        if self.encoder_version is not None:
            digest.update(f"encoder:{self.encoder_version}".encode())
        for name, array in sorted(self._state().items()):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()[:12]

    def save(self, folder: Path) -> Path:
        """Write ``tokenizer.json`` and ``state.npz`` into ``folder`` (replaced whole)."""
        self._require_fitted()
        folder = Path(folder)
        with atomic_folder(folder) as tmp:
            state: dict[str, Any] = self._state()
            np.savez(tmp / STATE, **state)
            manifest = {
                "kind": self.kind,
                "config": asdict(self.config),
                "dim": self.dim,
                "cities": self.cities,
                "version": self.version,
                "encoder_version": self.encoder_version,
                "fit_seconds": self.fit_seconds,
                "warm_started": self.warm_started,
                "extra": self._extra(),
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        return folder

    @staticmethod
    def load(folder: Path) -> Tokenizer:
        """Load any kind of tokenizer saved by ``save``; clear error naming a bad file."""
        # every kind registers itself when its module is imported; a fresh process (a run
        # launched by the daemon) may not have imported them yet
        import lgsid_pipeline.tokenizer.kinds  # noqa: F401

        folder = Path(folder)
        manifest_path, state_path = folder / MANIFEST, folder / STATE
        try:
            manifest = json.loads(manifest_path.read_text())
            kind = manifest["kind"]
            cls = Tokenizer.registry[kind]
        except (OSError, ValueError, KeyError) as exc:
            raise ModelFileError(
                f"tokenizer manifest {manifest_path} is missing or corrupt: {exc}"
            ) from exc
        try:
            with np.load(state_path, allow_pickle=False) as data:
                state = {k: data[k] for k in data.files}
            tokenizer = cls(TokenizerConfig(**manifest["config"]))
            tokenizer.dim = int(manifest["dim"])
            tokenizer.cities = list(manifest["cities"])
            tokenizer.fit_seconds = float(manifest.get("fit_seconds", 0.0))
            tokenizer.encoder_version = manifest.get("encoder_version")
            tokenizer.warm_started = bool(manifest.get("warm_started", False))
            tokenizer._load_state(state, manifest["extra"])
        except Exception as exc:  # noqa: BLE001 - numpy/zip raise many types for a bad file
            raise ModelFileError(
                f"tokenizer state {state_path} is missing or corrupt: {exc}"
            ) from exc
        if tokenizer.version != manifest["version"]:
            raise ModelFileError(
                f"tokenizer state {state_path} does not match its manifest "
                f"(version {tokenizer.version} != {manifest['version']})"
            )
        return tokenizer

    def learning_rate(self, warm: bool) -> float:
        """Fitting's learning rate: smaller when fine-tuning a previous fit."""
        return self.config.lr * (self.config.warm_start_lr_scale if warm else 1.0)

    def epochs(self, warm: bool) -> int:
        """Training epochs: a third of them when fine-tuning a previous fit."""
        return max(1, self.config.epochs // 3) if warm else self.config.epochs

    def _compatible(self, previous: Tokenizer) -> bool:
        return (
            previous.kind == self.kind
            and previous.dim == self.dim
            and previous.codebook_sizes == self.codebook_sizes
        )

    @abstractmethod
    def _fit(
        self,
        items: pd.DataFrame,
        x: np.ndarray,
        previous: Tokenizer | None,
        on_epoch: EpochCallback | None,
        weights: np.ndarray,
    ) -> None:
        """Fit on ``x``; ``weights`` (mean 1) are how much each item counts in clustering and
        training (equal weight per city by default)."""

    @abstractmethod
    def _assign(self, items: pd.DataFrame, x: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def _decode(self, tokens: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def codewords(self) -> list[np.ndarray]:
        """Per level, the codewords used to match a retrained tokenizer to its predecessor."""

    @abstractmethod
    def _permute(self, orders: list[np.ndarray]) -> None: ...

    @abstractmethod
    def _state(self) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def _load_state(self, state: dict[str, np.ndarray], extra: dict) -> None: ...

    def _extra(self) -> dict:
        return {}
