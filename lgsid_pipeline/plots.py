"""Figures people would rather see than read, rendered to PNG bytes (matplotlib, no display)."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend, imported on first use (it takes a second)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _codes_to_colors(labels: pd.Series) -> np.ndarray:
    """Stable colour per label (tab20 cycled); missing labels grey."""
    plt = _pyplot()
    palette = plt.get_cmap("tab20").colors
    codes, _ = pd.factorize(labels.astype("string").fillna("\0outside"), sort=True)
    colors = np.asarray(palette)[codes % len(palette)]
    colors[labels.isna().to_numpy()] = (0.75, 0.75, 0.75)
    return colors


# Points drawn on a map at most: a 560-pixel-wide panel shows the same picture with more,
# and drawing costs about 0.4 s per 10,000 points.
MAP_POINTS = 10_000


def _shown(n: int, max_points: int) -> str:
    return f", {max_points:,} of {n:,} shown" if n > max_points else ""


def items_map_png(items: pd.DataFrame, title: str, max_points: int = MAP_POINTS) -> bytes:
    """Scatter map of a city's items, coloured by admin level 1 and by level 2 (grey: outside);
    the title's counts are of every item, the points a fixed sample of ``max_points``."""
    plt = _pyplot()
    sample = items.sample(max_points, random_state=0) if len(items) > max_points else items
    fig, axes = plt.subplots(1, 2, figsize=(12, 6), dpi=80)
    for ax, level in zip(axes, (1, 2), strict=True):
        labels = items[f"admin_l{level}_code"]
        ax.scatter(
            sample["longitude"],
            sample["latitude"],
            s=2,
            c=_codes_to_colors(labels.loc[sample.index]),
            linewidths=0,
        )
        ax.set_title(
            f"{title}: admin level {level} ({labels.nunique()} areas, "
            f"{labels.isna().mean():.1%} outside{_shown(len(items), max_points)})"
        )
        ax.set_xlabel("longitude")
        ax.set_ylabel("latitude")
        ax.set_aspect(
            1 / max(np.cos(np.radians(sample["latitude"].median())), 0.1) if len(sample) else "auto"
        )
    return _png(fig)


def warm_up() -> None:
    """Render one tiny figure: a process's first render loads fonts and sets up the Agg
    backend (about 0.3 s), which a warm run worker then pays once instead of every run."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1, 1), dpi=20)
    ax.scatter([0.0, 1.0], [0.0, 1.0], s=2, c=[(0.0, 0.0, 0.0), (1.0, 0.0, 0.0)])
    ax.set_title("warm-up")
    ax.set_xlabel("x")
    _png(fig)


def _png(fig: Figure) -> bytes:
    plt = _pyplot()
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def curves_png(history: list[dict[str, float]], keys: list[str], x: str, title: str) -> bytes:
    """Training curves: one panel per key of the per-step/epoch history."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), dpi=80, squeeze=False)
    xs = [h[x] for h in history]
    for ax, key in zip(axes[0], keys, strict=True):
        ax.plot(xs, [h.get(key, np.nan) for h in history])
        ax.set_title(key)
        ax.set_xlabel(x)
    fig.suptitle(title)
    return _png(fig)


def variant_curves_png(history: list[dict], x: str, metric: str, title: str) -> bytes:
    """One panel per code variant of ``metric`` against ``x`` (step or epoch), from a
    history whose rows carry a ``variant``."""
    frame = pd.DataFrame(history)
    rows = [
        {x: at, **{f"{metric}_{v}": m for v, m in zip(g["variant"], g[metric], strict=True)}}
        for at, g in frame.groupby(x)
    ]
    return curves_png(rows, [f"{metric}_{v}" for v in frame["variant"].unique()], x, title)


def distance_histogram_png(distances_km: pd.Series, kinds: pd.Series, title: str) -> bytes:
    """Histogram of negative distances (km, log-spaced bins) by sampling kind."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=80)
    positive = distances_km[distances_km > 0]
    if len(positive):
        bins = np.logspace(np.log10(max(positive.min(), 0.01)), np.log10(positive.max()), 40)
        for kind in sorted(kinds[distances_km > 0].unique()):
            ax.hist(positive[kinds[distances_km > 0] == kind], bins=bins, alpha=0.6, label=kind)
        ax.set_xscale("log")
        ax.legend()
    ax.set_xlabel("distance to anchor (km)")
    ax.set_ylabel("negatives")
    ax.set_title(title)
    return _png(fig)


def tokens_map_png(
    items: pd.DataFrame, level1_tokens: np.ndarray, title: str, max_points: int = MAP_POINTS
) -> bytes:
    """Items on the map (longitude/latitude) coloured by their level-1 token (a fixed sample
    of ``max_points``; the title counts every item's tokens)."""
    plt = _pyplot()
    tokens = pd.Series(np.asarray(level1_tokens), index=items.index)
    n_tokens, shown = tokens.nunique(), _shown(len(items), max_points)
    if len(items) > max_points:
        items = items.sample(max_points, random_state=0)
        tokens = tokens.loc[items.index]
    fig, ax = plt.subplots(figsize=(7, 6.5), dpi=80)
    # A fixed shuffle of a cyclic map: neighbouring token numbers get distant colours.
    hues = np.random.default_rng(0).permutation(max(int(tokens.max()) + 1, 1))
    colors = plt.get_cmap("hsv")(hues[tokens.to_numpy()] / max(len(hues), 1))
    ax.scatter(items["longitude"], items["latitude"], s=2, c=colors, linewidths=0)
    ax.set_title(f"{title}: {n_tokens} level-1 tokens{shown}")
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    if len(items):
        ax.set_aspect(1 / max(np.cos(np.radians(items["latitude"].median())), 0.1))
    return _png(fig)
