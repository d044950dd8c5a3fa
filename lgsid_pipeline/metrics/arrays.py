"""Input checks shared by the metric functions."""

from __future__ import annotations

import numpy as np


def to_numpy(x: object) -> np.ndarray:
    """A numpy array from a numpy array, a list or a (possibly GPU / grad) torch tensor."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def numeric_array(x: object, name: str, ndim: int, allow_empty: bool = False) -> np.ndarray:
    """A numeric array of the given rank without NaN (infinities are allowed)."""
    arr = to_numpy(x)
    if arr.ndim != ndim or (arr.size == 0 and not allow_empty):
        raise ValueError(f"{name} must be a non-empty {ndim}-D array, got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    if arr.dtype.kind == "f" and np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN")
    return arr
