"""Per-example ranking outcomes and 95% intervals: a bootstrap over test examples for one
run, and a joint bootstrap over seeds and test examples for a mean over seeds.

Every figure the benchmarks publish comes from :func:`summarize_ranks`, so a mean and its
interval are always computed from the same per-example ranks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

N_BOOTSTRAP = 1000


def target_ranks(ranked: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based position of each target in its ranked row (S, K), or -1 when absent."""
    lists = np.asarray(ranked)
    goal = np.asarray(targets)
    if lists.ndim != 2 or goal.shape != (len(lists),):
        raise ValueError(f"need ranked lists (S, K) and S targets, got {lists.shape} and "
                         f"{goal.shape}")
    if not len(goal):
        raise ValueError("no queries")
    match = lists == goal[:, None]
    return np.where(match.any(axis=1), match.argmax(axis=1), -1)


def per_example(ranks: np.ndarray, name: str) -> np.ndarray:
    """One metric per example from 0-based ranks (-1 = not in the list): ``hit@k``,
    ``acc@k`` (the same), ``ndcg@k`` or ``mrr`` (reciprocal rank within the list)."""
    r = np.asarray(ranks)
    found = r >= 0
    if name == "mrr":
        return np.where(found, 1.0 / (np.clip(r, 0, None) + 1.0), 0.0)
    kind, _, k_text = name.partition("@")
    if not k_text.isdigit() or int(k_text) < 1:
        raise ValueError(f"unknown metric {name!r}")
    inside = found & (r < int(k_text))
    if kind in ("hit", "acc"):
        return inside.astype(np.float64)
    if kind == "ndcg":
        return np.where(inside, 1.0 / np.log2(np.clip(r, 0, None) + 2.0), 0.0)
    raise ValueError(f"unknown metric {name!r}")


def bootstrap_interval(values: np.ndarray, n_boot: int = N_BOOTSTRAP, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the mean: rows (seeds) and columns (examples) of ``values``
    (n_seeds, n_examples) are resampled together; a 1-D array is one seed."""
    v = np.atleast_2d(np.asarray(values, dtype=np.float64))
    if v.ndim != 2 or v.size == 0:
        raise ValueError(f"values must be a non-empty (n_seeds, n_examples) array, got "
                         f"{np.shape(values)}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    n_seeds, n_examples = v.shape
    means = np.empty(n_boot)
    for b in range(n_boot):
        seeds = rng.integers(0, n_seeds, n_seeds) if n_seeds > 1 else np.zeros(1, dtype=int)
        examples = rng.integers(0, n_examples, n_examples)
        means[b] = v[np.ix_(seeds, examples)].mean()
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


def summarize_ranks(ranks: np.ndarray | Sequence[np.ndarray],
                    metrics: Sequence[str] = ("hit@5", "hit@10", "ndcg@5", "ndcg@10"),
                    interval_of: Sequence[str] = ("hit@10",), seed: int = 0
                    ) -> dict[str, float | list[float] | int]:
    """Seed means of ``metrics`` plus ``<metric>_ci95`` for each of ``interval_of`` and
    ``seeds``, from 0-based ranks of shape (n_examples,) or (n_seeds, n_examples)."""
    r = np.atleast_2d(np.asarray(ranks))
    out: dict[str, float | list[float] | int] = {}
    for name in metrics:
        out[name] = float(per_example(r, name).mean())
    for name in interval_of:
        out[f"{name}_ci95"] = list(bootstrap_interval(per_example(r, name), seed=seed))
    out["seeds"] = int(r.shape[0])
    return out


def intervals_overlap(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether two intervals ``[lo, hi]`` share a point ("better" needs them apart)."""
    return not (a[1] < b[0] or b[1] < a[0])
