"""Figures people would rather see than read, rendered to PNG bytes (matplotlib, no display)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def _codes_to_colors(labels: pd.Series) -> np.ndarray:
    """Stable colour per label (tab20 cycled); missing labels grey."""
    palette = plt.get_cmap("tab20").colors
    codes, _ = pd.factorize(labels.astype("string").fillna("\0outside"), sort=True)
    colors = np.array([palette[c % len(palette)] for c in codes])
    colors[labels.isna().to_numpy()] = (0.75, 0.75, 0.75)
    return colors


def items_map_png(items: pd.DataFrame, title: str, max_points: int = 40_000) -> bytes:
    """Scatter map of a city's items, coloured by admin level 1 and by level 2 (grey: outside)."""
    sample = items.sample(max_points, random_state=0) if len(items) > max_points else items
    fig, axes = plt.subplots(1, 2, figsize=(12, 6), dpi=80)
    for ax, level in zip(axes, (1, 2), strict=True):
        labels = sample[f"admin_l{level}_code"]
        ax.scatter(sample["longitude"], sample["latitude"], s=2, c=_codes_to_colors(labels),
                   linewidths=0)
        ax.set_title(f"{title}: admin level {level} ({labels.nunique()} areas, "
                     f"{labels.isna().mean():.1%} outside)")
        ax.set_xlabel("longitude")
        ax.set_ylabel("latitude")
        ax.set_aspect(1 / max(np.cos(np.radians(sample["latitude"].median())), 0.1)
                      if len(sample) else "auto")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()
