"""Per-example ranking outcomes and 95% intervals: a bootstrap over test examples for one
run, and a joint bootstrap over seeds and test examples for a mean over seeds.

Every figure the benchmarks publish comes from :func:`summarize_ranks` (next-item metrics)
or :func:`summarize_auc` (CTR), so a mean and its interval are always computed from the same
per-example ranks or scores.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lgsid_pipeline.metrics.arrays import numeric_array, to_numpy
from lgsid_pipeline.metrics.ranking import auc

N_BOOTSTRAP = 1000


def target_ranks(ranked: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based position of each target in its ranked row (S, K), or -1 when absent."""
    lists = np.asarray(ranked)
    goal = np.asarray(targets)
    if lists.ndim != 2 or goal.shape != (len(lists),):
        raise ValueError(
            f"need ranked lists (S, K) and S targets, got {lists.shape} and {goal.shape}"
        )
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


def bootstrap_interval(
    values: np.ndarray, n_boot: int = N_BOOTSTRAP, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of the mean: rows (seeds) and columns (examples) of ``values``
    (n_seeds, n_examples) are resampled together; a 1-D array is one seed."""
    v = np.atleast_2d(np.asarray(values, dtype=np.float64))
    if v.ndim != 2 or v.size == 0:
        raise ValueError(
            f"values must be a non-empty (n_seeds, n_examples) array, got {np.shape(values)}"
        )
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


def summarize_ranks(
    ranks: np.ndarray | Sequence[np.ndarray],
    metrics: Sequence[str] = ("hit@5", "hit@10", "ndcg@5", "ndcg@10"),
    interval_of: Sequence[str] = ("hit@10",),
    seed: int = 0,
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


def paired_difference(
    ranks: np.ndarray, reference: np.ndarray, name: str = "hit@10", seed: int = 0
) -> dict[str, float | list[float]]:
    """Mean of ``name`` under ``ranks`` (n_examples,) or (n_seeds, n_examples) minus under
    ``reference`` (n_examples,) on the same examples, with a 95% interval that resamples
    the examples of both together (and the seeds): the paired comparison."""
    r = np.atleast_2d(np.asarray(ranks))
    ref = np.asarray(reference)
    if ref.ndim != 1 or r.shape[1] != len(ref):
        raise ValueError(
            f"need reference ranks of the same {r.shape[1]} examples, got shape {ref.shape}"
        )
    diff = per_example(r, name) - per_example(ref, name)[None, :]
    return {"mean": float(diff.mean()), "ci95": list(bootstrap_interval(diff, seed=seed))}


def intervals_overlap(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether two intervals ``[lo, hi]`` share a point ("better" needs them apart)."""
    return not (a[1] < b[0] or b[1] < a[0])


def _draw(rng: np.random.Generator, n_seeds: int, n_examples: int) -> tuple[np.ndarray, np.ndarray]:
    """One joint resample: seed indices and example indices, drawn as in
    :func:`bootstrap_interval` (a single seed is never resampled)."""
    seeds = rng.integers(0, n_seeds, n_seeds) if n_seeds > 1 else np.zeros(1, dtype=int)
    return seeds, rng.integers(0, n_examples, n_examples)


def _auc_inputs(labels: object, scores: object) -> tuple[np.ndarray, np.ndarray]:
    y = numeric_array(labels, "labels", 1)
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must hold only 0 and 1")
    arr = to_numpy(scores)
    if arr.ndim not in (1, 2):
        raise ValueError(f"scores must be (n,) or (n_seeds, n), got shape {arr.shape}")
    s = np.atleast_2d(numeric_array(arr, "scores", arr.ndim)).astype(np.float64)
    if s.shape[1] != len(y):
        raise ValueError(f"{len(y)} labels but scores of shape {arr.shape}")
    if y.min() == y.max():
        raise ValueError("AUC needs both positive and negative labels")
    return y.astype(bool), s


def auc_replicates(
    labels: np.ndarray, scores: np.ndarray, n_boot: int = N_BOOTSTRAP, seed: int = 0
) -> np.ndarray:
    """Bootstrap replicates (n_boot,) of the seed-mean AUC: each resamples seeds (rows of
    ``scores``, (n_seeds, n) or (n,)) and test examples together and averages, over the
    drawn seeds, each seed's AUC on the drawn examples (ties count one half). A replicate
    whose examples lack a class is NaN (the intervals drop them, and refuse more than 1%).

    Each seed's negatives are sorted once and each positive's place among them found once;
    a replicate is then the Mann-Whitney statistic weighted by how often each example was
    drawn: O(n) per seed (a cumulative sum over the negatives' weights).
    """
    y, s = _auc_inputs(labels, scores)
    if isinstance(n_boot, bool) or int(n_boot) != n_boot or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    n_seeds, n = s.shape
    positives, negatives = np.flatnonzero(y), np.flatnonzero(~y)
    sorted_negatives, below, up_to = [], [], []
    for row in s:
        order = negatives[np.argsort(row[negatives], kind="stable")]
        ranked = row[order]
        sorted_negatives.append(order)
        below.append(np.searchsorted(ranked, row[positives], side="left"))
        up_to.append(np.searchsorted(ranked, row[positives], side="right"))
    rng = np.random.default_rng(seed)
    out = np.empty(int(n_boot))
    per_seed = np.empty(n_seeds)
    cumulative = np.zeros(len(negatives) + 1)  # [0, w_1, w_1 + w_2, ...] of sorted negatives
    for b in range(int(n_boot)):
        seeds, examples = _draw(rng, n_seeds, n)
        weights = np.bincount(examples, minlength=n).astype(np.float64)
        w_pos = weights[positives]
        n_pos = w_pos.sum()
        for k in np.unique(seeds):
            np.cumsum(weights[sorted_negatives[k]], out=cumulative[1:])
            n_neg = cumulative[-1]
            wins = 0.5 * (w_pos @ (cumulative[below[k]] + cumulative[up_to[k]]))
            per_seed[k] = wins / (n_pos * n_neg) if n_pos and n_neg else np.nan
        out[b] = per_seed[seeds].mean()
    return out


def _percentiles(replicates: np.ndarray, level: float) -> tuple[float, float]:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    finite = replicates[np.isfinite(replicates)]
    if len(finite) < 0.99 * len(replicates):
        raise ValueError(
            f"{len(replicates) - len(finite)} of {len(replicates)} bootstrap "
            "resamples lack a class: too few positives or negatives"
        )
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(finite, [tail, 100 - tail])
    return float(lo), float(hi)


def auc_interval(
    labels: np.ndarray,
    scores: np.ndarray,
    n_boot: int = N_BOOTSTRAP,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of one model's AUC, resampling test examples."""
    if np.ndim(scores) != 1:
        raise ValueError(
            f"scores must be 1-D (one seed), got shape {np.shape(scores)}; "
            "use mean_auc_interval for several seeds"
        )
    return _percentiles(auc_replicates(labels, scores, n_boot, seed), level)


def mean_auc_interval(
    labels: np.ndarray,
    scores: np.ndarray,
    n_boot: int = N_BOOTSTRAP,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile interval of the mean AUC over seeds trained on the same test set:
    ``scores`` (n_seeds, n), ``labels`` (n,); seeds and test examples are resampled
    together (one seed: the same as :func:`auc_interval`)."""
    if np.ndim(scores) != 2:
        raise ValueError(f"scores must be (n_seeds, n), got shape {np.shape(scores)}")
    return _percentiles(auc_replicates(labels, scores, n_boot, seed), level)


def summarize_auc(
    labels: np.ndarray, scores: np.ndarray, n_boot: int = N_BOOTSTRAP, seed: int = 0
) -> dict[str, float | list[float] | int | str]:
    """Mean test AUC over seeds (``scores`` (n,) or (n_seeds, n)), each seed's AUC, the 95%
    interval ``auc_ci95``, ``seeds`` and which bootstrap gave the interval."""
    y, s = _auc_inputs(labels, scores)
    per_seed = [auc(y.astype(np.int8), row) for row in s]
    lo, hi = _percentiles(auc_replicates(y, s, n_boot, seed), 0.95)
    return {
        "auc": float(np.mean(per_seed)),
        "auc_seeds": per_seed,
        "auc_ci95": [lo, hi],
        "seeds": len(s),
        "interval": interval_kind(len(s)),
    }


def interval_kind(n_seeds: int) -> str:
    """How an interval over ``n_seeds`` seeds was bootstrapped, in words."""
    return (
        "bootstrap over seeds and test examples" if n_seeds > 1 else "bootstrap over test examples"
    )
