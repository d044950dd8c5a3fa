"""Ranking metrics: reward-model list accuracy, CTR (AUC, log-loss), next-item Hit/NDCG@K."""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import islice

import numpy as np

from lgsid_pipeline.metrics.arrays import numeric_array, to_numpy


def _binary(labels: object, name: str = "labels") -> np.ndarray:
    arr = numeric_array(labels, name, 1)
    if not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name} must hold only 0 and 1")
    return arr.astype(bool)


def _check_positive_int(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def top1_accuracy(scores: np.ndarray, true_index: int | np.ndarray = 0) -> float:
    """Share of lists (rows of ``scores``) whose true item has the unique highest score.

    A tie for the top counts as a miss. ``true_index`` is one index for all lists or one per
    list.
    """
    s = numeric_array(scores, "scores", 2)
    n_lists, list_len = s.shape
    true = np.asarray(true_index)
    if true.dtype.kind not in "iu" or true.ndim > 1 or true.size not in (1, n_lists):
        raise ValueError(f"true_index must be an integer or {n_lists} integers, got {true_index!r}")
    if true.min() < 0 or true.max() >= list_len:
        raise ValueError(f"true_index must be in [0, {list_len}), got {true_index!r}")
    rows = np.arange(n_lists)
    true = np.broadcast_to(true.reshape(-1), (n_lists,))
    others = s.astype(np.float64)
    others[rows, true] = -np.inf
    return float(np.mean(s[rows, true] > others.max(axis=1)))


def mean_kendall_tau(scores: np.ndarray, distances: np.ndarray) -> float:
    """Mean over lists of Kendall's tau-b between scores and -distances (1 = the reward
    orders every list from nearest to farthest). Lists with constant scores or constant
    distances are skipped; an error if every list is."""
    s = numeric_array(scores, "scores", 2).astype(np.float64)
    d = numeric_array(distances, "distances", 2).astype(np.float64)
    if s.shape != d.shape:
        raise ValueError(f"scores have shape {s.shape} but distances {d.shape}")
    # tau-b from the pairwise sign matrices, all lists at once (scipy's kendalltau per list
    # was most of a short reward training): (concordant - discordant) over the square root
    # of the pairs untied in each variable. Chunked so that memory stays bounded.
    taus = []
    chunk = max(1, 2**22 // max(1, s.shape[1] ** 2))
    for start in range(0, len(s), chunk):
        sx = np.sign(s[start : start + chunk, :, None] - s[start : start + chunk, None, :])
        sy = np.sign(d[start : start + chunk, None, :] - d[start : start + chunk, :, None])
        untied_x, untied_y = (sx * sx).sum(axis=(1, 2)), (sy * sy).sum(axis=(1, 2))
        defined = (untied_x > 0) & (untied_y > 0)
        score = (sx * sy).sum(axis=(1, 2))[defined]
        taus.append(score / np.sqrt(untied_x[defined] * untied_y[defined]))
    values = np.concatenate(taus)
    if not len(values):
        raise ValueError("Kendall tau is undefined for every list (constant scores or distances)")
    return float(values.mean())


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Binary ROC AUC from ranks (Mann-Whitney U); tied scores get their average rank."""
    from scipy.stats import rankdata

    y = _binary(labels)
    s = numeric_array(scores, "scores", 1)
    if len(y) != len(s):
        raise ValueError(f"{len(y)} labels but {len(s)} scores")
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs both positive and negative labels")
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def logloss(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy (natural log), with probabilities clipped to [eps, 1 - eps]."""
    y = _binary(labels)
    p = numeric_array(probs, "probs", 1).astype(np.float64)
    if len(y) != len(p):
        raise ValueError(f"{len(y)} labels but {len(p)} probabilities")
    if p.min() < 0 or p.max() > 1:
        raise ValueError("probs must lie in [0, 1]")
    if not 0 < eps < 0.5:
        raise ValueError(f"eps must be in (0, 0.5), got {eps}")
    p = np.clip(p, eps, 1 - eps)
    return float(-np.mean(np.where(y, np.log(p), np.log1p(-p))))


def _target_ranks(ranked: Sequence[Sequence], targets: Sequence, k: int) -> list[int | None]:
    """0-based position of each query's target within its first k recommendations, or None."""
    _check_positive_int(k, "k")
    if len(ranked) != len(targets):
        raise ValueError(f"{len(ranked)} ranked lists but {len(targets)} targets")
    if len(targets) == 0:
        raise ValueError("no queries")
    positions: list[int | None] = []
    for row, target in zip(ranked, targets, strict=True):
        hits = (pos for pos, item in enumerate(islice(row, k)) if item == target)
        positions.append(next(hits, None))
    return positions


def hit_at_k(ranked: Sequence[Sequence], targets: Sequence, k: int) -> float:
    """Share of queries whose single target is among the first k recommended ids."""
    return float(np.mean([pos is not None for pos in _target_ranks(ranked, targets, k)]))


def ndcg_at_k(ranked: Sequence[Sequence], targets: Sequence, k: int) -> float:
    """NDCG@k with one relevant item per query: 1 / log2(rank + 2) for a 0-based rank < k."""
    gains = [
        0.0 if pos is None else 1.0 / math.log2(pos + 2)
        for pos in _target_ranks(ranked, targets, k)
    ]
    return float(np.mean(gains))


class TopKAccumulator:
    """Each query's k best (score, id) pairs over streaming batches of candidates.

    ``update`` takes scores of shape (n_queries, batch) and ids of shape (batch,), shared by
    all queries, or (n_queries, batch); numpy arrays or torch tensors. Ties at the cut-off
    are broken arbitrarily.
    """

    def __init__(self, k: int) -> None:
        _check_positive_int(k, "k")
        self.k = k
        self._scores: np.ndarray | None = None
        self._ids: np.ndarray | None = None

    def update(self, scores: np.ndarray, ids: np.ndarray) -> None:
        s = numeric_array(scores, "scores", 2, allow_empty=True)  # an empty batch is a no-op
        if len(s) == 0:
            raise ValueError("scores must have at least one query row")
        i = to_numpy(ids)
        if i.shape not in ((s.shape[1],), s.shape):
            raise ValueError(f"ids must have shape ({s.shape[1]},) or {s.shape}, got {i.shape}")
        i = np.broadcast_to(i, s.shape)
        if self._scores is not None and self._ids is not None:
            if len(s) != len(self._scores):
                raise ValueError(f"batch has {len(s)} queries, earlier ones {len(self._scores)}")
            s = np.concatenate([self._scores, s], axis=1)
            i = np.concatenate([self._ids, i], axis=1)
        if s.shape[1] > self.k:
            keep = np.argpartition(s, s.shape[1] - self.k, axis=1)[:, -self.k :]
            s, i = np.take_along_axis(s, keep, axis=1), np.take_along_axis(i, keep, axis=1)
        # copies: s may be the caller's array and i a read-only broadcast view
        self._scores, self._ids = s.copy(), i.copy()

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (n_queries, min(k, candidates seen)), best first."""
        if self._scores is None or self._ids is None:
            raise ValueError("no batch has been added")
        order = np.argsort(self._scores, axis=1)[:, ::-1]
        return (
            np.take_along_axis(self._scores, order, axis=1),
            np.take_along_axis(self._ids, order, axis=1),
        )
