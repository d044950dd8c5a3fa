"""Tokenizer health: how evenly codewords are used and how well full codes tell items apart."""

from __future__ import annotations

import numpy as np

from lgsid_pipeline.frames import row_groups
from lgsid_pipeline.metrics.arrays import numeric_array


def _usage(tokens: np.ndarray, codebook_size: int) -> np.ndarray:
    """How often each codeword occurs in ``tokens`` (any shape)."""
    is_int = isinstance(codebook_size, int | np.integer) and not isinstance(codebook_size, bool)
    if not is_int or codebook_size < 1:
        raise ValueError(f"codebook_size must be a positive integer, got {codebook_size!r}")
    arr = np.asarray(tokens)
    if arr.size == 0:
        raise ValueError("tokens are empty")
    if arr.dtype.kind not in "iu":
        raise ValueError(f"tokens must be integers, got dtype {arr.dtype}")
    if arr.min() < 0 or arr.max() >= codebook_size:
        raise ValueError(f"tokens must lie in [0, {codebook_size}), got [{arr.min()}, {arr.max()}]")
    return np.bincount(arr.ravel(), minlength=codebook_size)


def utilisation(tokens: np.ndarray, codebook_size: int) -> float:
    """Share of the codebook's codewords used at least once."""
    return float(np.count_nonzero(_usage(tokens, codebook_size)) / codebook_size)


def perplexity(tokens: np.ndarray, codebook_size: int) -> float:
    """exp(entropy) of codeword usage: the effective number of codewords, 1 to codebook_size."""
    counts = _usage(tokens, codebook_size)
    shares = counts[counts > 0] / counts.sum()
    return float(np.exp(-np.sum(shares * np.log(shares))))


def _codes(codes: np.ndarray, name: str = "codes") -> np.ndarray:
    """A non-empty numeric (n_items, n_levels) array without NaN."""
    return numeric_array(codes, name, 2)


def _bucket_sizes(codes: np.ndarray) -> np.ndarray:
    """For each item, how many items (itself included) share its full code."""
    groups = row_groups(_codes(codes))
    return np.bincount(groups)[groups]


def collision_rate(codes: np.ndarray) -> float:
    """Share of items whose full code is shared with at least one other item."""
    return float(np.mean(_bucket_sizes(codes) > 1))


def largest_bucket(codes: np.ndarray) -> int:
    """Size of the biggest group of items sharing one full code."""
    return int(_bucket_sizes(codes).max())


def code_churn(old_codes: np.ndarray, new_codes: np.ndarray) -> float:
    """Share of items (rows) whose full code differs between two tokenizer versions."""
    old, new = _codes(old_codes, "old_codes"), _codes(new_codes, "new_codes")
    if old.shape != new.shape:
        raise ValueError(f"old_codes have shape {old.shape} but new_codes {new.shape}")
    return float(np.mean(np.any(old != new, axis=1)))
