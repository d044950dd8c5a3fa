"""Next-item examples from a city's check-in timeline, their ranking metrics, and the two
floors every next-item model must beat: popularity near the last check-in, and the user's own
most visited items (numpy only: no model code).

Examples are split by the target's time: train < t1 <= valid < t2 <= test; a history holds
only check-ins at strictly earlier timeline positions, so no later-period event reaches a
training example.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from lgsid_pipeline.geo.distance import haversine_km
from lgsid_pipeline.metrics.ranking import TopKAccumulator, hit_at_k, ndcg_at_k

SPLITS = ("train", "valid", "test")
Examples = tuple[np.ndarray, np.ndarray]  # (histories (S, N), -1 = left padding; targets (S,))


# --------------------------------------------------------------------------- examples


def _event_times(timestamps: Any, *bounds: Any) -> tuple[np.ndarray, list[float]]:
    """Times and bounds on one comparable scale: numbers stay numbers; anything else is
    parsed as datetimes (naive = UTC) and compared as UTC nanoseconds."""
    raw = np.asarray(timestamps)
    if raw.dtype.kind in "iuf":
        if any(
            isinstance(b, bool) or not isinstance(b, int | float | np.integer | np.floating)
            for b in bounds
        ):
            raise ValueError(f"numeric timestamps need numeric split times, got {bounds}")
        times = raw.astype(np.float64)
        if np.isnan(times).any():
            raise ValueError("timestamps contain NaN")
        return times, [float(b) for b in bounds]
    index = pd.DatetimeIndex(pd.to_datetime(pd.Series(raw), utc=True)).as_unit("ns")
    if index.isna().any():
        raise ValueError("timestamps contain missing values")
    values = []
    for b in bounds:
        stamp = pd.Timestamp(b)
        stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
        values.append(float(stamp.as_unit("ns").value))
    return index.asi8.astype(np.float64), values


def _timeline(
    user_ids: Any, item_idx: Any, times: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Events sorted by user, time, item: (user codes, items, times, first position of each
    event's user, the user keys by code)."""
    users, keys = pd.factorize(pd.Series(np.asarray(user_ids)))
    items = np.asarray(item_idx)
    if not len(users) == len(items) == len(times):
        raise ValueError(f"{len(users)} users, {len(items)} items and {len(times)} timestamps")
    if items.dtype.kind not in "iu" or (len(items) and items.min() < 0):
        raise ValueError("item_idx must be non-negative integers")
    if (users < 0).any():
        raise ValueError("user_ids contain missing values")
    order = np.lexsort((items, times, users))
    users, items, times = users[order], items[order].astype(np.int64), times[order]
    position = np.arange(len(users))
    new_user = np.r_[True, users[1:] != users[:-1]] if len(users) else np.zeros(0, bool)
    first = np.maximum.accumulate(np.where(new_user, position, 0)) if len(users) else position
    return users, items, times, first, np.asarray(keys)


def _windows(items: np.ndarray, start: np.ndarray, end: np.ndarray, n: int) -> np.ndarray:
    """(len(end), n) items at timeline positions [max(start, end - n), end), left-padded -1."""
    positions = end[:, None] - n + np.arange(n)[None, :]
    valid = positions >= start[:, None]
    if not len(items):
        return np.full((len(end), n), -1, dtype=np.int64)
    return np.where(valid, items[np.clip(positions, 0, None)], -1).astype(np.int64)


def build_next_item_examples(
    user_ids: Any, item_idx: Any, timestamps: Any, t1: Any, t2: Any, max_history: int = 20
) -> dict[str, Examples]:
    """Next-item examples of every split: ``{split: (histories (S, N), targets (S,))}``.

    Each check-in with at least one earlier check-in of its user is a target; its history is
    the user's last ``max_history`` check-ins at strictly earlier positions of the timeline
    (sorted by time, then item), left-padded with -1. The split is by the target's time:
    train < t1 <= valid < t2 <= test. Timestamps are numbers (with numeric ``t1``/``t2``) or
    anything ``pd.to_datetime`` reads (naive = UTC).
    """
    if max_history < 1:
        raise ValueError(f"max_history must be >= 1, got {max_history}")
    times, (lo, hi) = _event_times(timestamps, t1, t2)
    if not lo < hi:
        raise ValueError(f"split times must satisfy t1 < t2, got {t1!r} and {t2!r}")
    _, items, times, first, _ = _timeline(user_ids, item_idx, times)
    has_history = np.arange(len(items)) > first
    period = np.where(times < lo, 0, np.where(times < hi, 1, 2))
    out: dict[str, Examples] = {}
    for split_id, name in enumerate(SPLITS):
        chosen = np.flatnonzero(has_history & (period == split_id))
        out[name] = (_windows(items, first[chosen], chosen, max_history), items[chosen])
    return out


def latest_histories(
    user_ids: Any, item_idx: Any, timestamps: Any, max_history: int = 20, before: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """(user ids (U,), histories (U, N)): each user's last ``max_history`` check-ins (only
    those before ``before`` when given), left-padded with -1: the input of a top-K cache."""
    if max_history < 1:
        raise ValueError(f"max_history must be >= 1, got {max_history}")
    bounds = () if before is None else (before,)
    times, cut = _event_times(timestamps, *bounds)
    users, items, times, first, keys = _timeline(user_ids, item_idx, times)
    keep = times < cut[0] if cut else np.ones(len(times), dtype=bool)
    users, items = users[keep], items[keep]
    first = np.searchsorted(users, users, side="left")  # users are sorted
    last = (
        np.flatnonzero(np.r_[users[1:] != users[:-1], True])
        if len(users)
        else np.zeros(0, dtype=np.int64)
    )
    return keys[users[last]], _windows(items, first[last], last + 1, max_history)


def fit_history(histories: Any, n: int, n_items: int) -> np.ndarray:
    """Histories as (S, n): the last n columns, or left-padded with -1."""
    hist = np.asarray(histories)
    if hist.ndim != 2 or (hist.size and hist.dtype.kind not in "iu"):
        raise ValueError(f"histories must be a 2-D integer array, got {hist.dtype} {hist.shape}")
    hist = hist.astype(np.int64)
    if hist.size and hist.max() >= n_items:
        raise ValueError(f"history item {hist.max()} out of range for {n_items} items")
    if hist.shape[1] >= n:
        return hist[:, hist.shape[1] - n :]
    return np.pad(hist, ((0, 0), (n - hist.shape[1], 0)), constant_values=-1)


def ranking_metrics(
    ranked: Sequence[Sequence[int]] | np.ndarray,
    targets: Sequence[int] | np.ndarray,
    ks: Sequence[int] = (5, 10),
) -> dict[str, float]:
    """``{"hit@k", "ndcg@k"}`` for each k of ranked item lists against single targets."""
    out: dict[str, float] = {}
    for k in ks:
        out[f"hit@{k}"] = hit_at_k(ranked, targets, k)
        out[f"ndcg@{k}"] = ndcg_at_k(ranked, targets, k)
    return out


# --------------------------------------------------------------------------- baseline


class PopularityNearLastBaseline:
    """Non-generative sanity baseline: items within ``radius_km`` of the user's last
    check-in, by training-period popularity (target counts), then every other item by
    popularity; ties go to the lower item index."""

    def __init__(self, item_lat: np.ndarray, item_lon: np.ndarray, radius_km: float = 2.0) -> None:
        self.lat = np.asarray(item_lat, dtype=np.float64)
        self.lon = np.asarray(item_lon, dtype=np.float64)
        if self.lat.shape != self.lon.shape or self.lat.ndim != 1 or not len(self.lat):
            raise ValueError("item_lat and item_lon must be equal-length non-empty 1-D arrays")
        if radius_km < 0:
            raise ValueError(f"radius_km must be >= 0, got {radius_km}")
        self.radius_km = radius_km
        self.popularity = np.zeros(len(self.lat), dtype=np.int64)

    def fit(self, train: Examples) -> PopularityNearLastBaseline:
        """Count each item's training targets."""
        targets = np.asarray(train[1], dtype=np.int64)
        if targets.size and (targets.min() < 0 or targets.max() >= len(self.lat)):
            raise ValueError(f"targets must be item indices in [0, {len(self.lat)})")
        self.popularity = np.bincount(targets, minlength=len(self.lat))
        return self

    def recommend(
        self, histories: np.ndarray, k: int, query_batch: int = 1024, item_batch: int = 8192
    ) -> tuple[np.ndarray, np.ndarray]:
        """Items (S, k) and scores (S, k), best first, for histories (S, N) (-1 = padding)."""
        n_items = len(self.lat)
        if not 1 <= k <= n_items:
            raise ValueError(f"need 1 <= k <= {n_items}, got {k}")
        hist = fit_history(histories, max(np.asarray(histories).shape[-1], 1), n_items)
        last = hist[:, -1]
        base = self.popularity + np.arange(n_items)[::-1] / (2.0 * n_items)  # tie-break
        bonus = float(self.popularity.max()) + 1.0
        items, scores = [np.zeros((0, k), dtype=np.int64)], [np.zeros((0, k))]
        for q in range(0, len(last), query_batch):
            where = last[q : q + query_batch]
            has_last = (where >= 0)[:, None]
            lat, lon = self.lat[where][:, None], self.lon[where][:, None]
            top = TopKAccumulator(k)
            for i in range(0, n_items, item_batch):
                ids = np.arange(i, min(i + item_batch, n_items))
                near = has_last & (
                    haversine_km(lat, lon, self.lat[ids][None], self.lon[ids][None])
                    <= self.radius_km
                )
                top.update(base[ids][None, :] + bonus * near, ids)
            got_scores, got_items = top.result()
            items.append(got_items)
            scores.append(got_scores)
        return np.concatenate(items), np.concatenate(scores)

    def evaluate(self, examples: Examples, ks: Sequence[int] = (5, 10)) -> dict[str, float]:
        """Hit@k and NDCG@k (for each k in ``ks``) on ``examples``."""
        histories, targets = examples
        items, _ = self.recommend(histories, max(ks))
        return ranking_metrics(items, np.asarray(targets), ks)


def visit_stats(histories: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row, the distinct history items (S, M) (-1 = none), their visit counts and how
    many check-ins ago each was last visited (0 = the latest), most visited first (ties:
    the most recent first)."""
    hist = np.asarray(histories, dtype=np.int64)
    n, width = hist.shape
    items = np.full((n, width), -1, dtype=np.int64)
    counts = np.zeros((n, width), dtype=np.int64)
    ago = np.zeros((n, width), dtype=np.int64)
    for row in range(n):
        valid = hist[row] >= 0
        seen = hist[row][valid]
        if not len(seen):
            continue
        uniq, inverse, count = np.unique(seen, return_inverse=True, return_counts=True)
        last = np.zeros(len(uniq), dtype=np.int64)
        np.maximum.at(last, inverse, np.arange(len(seen)))
        gap = len(seen) - 1 - last
        order = np.lexsort((gap, -count))
        m = len(uniq)
        items[row, :m], counts[row, :m], ago[row, :m] = uniq[order], count[order], gap[order]
    return items, counts, ago


class UserHistoryBaseline:
    """Floor (b): the user's own most visited items in the history (ties: the most recent
    visit first), then the popularity-within-2-km list without those items."""

    def __init__(self, near: PopularityNearLastBaseline) -> None:
        self.near = near

    def recommend(self, histories: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Items (S, k) and scores (S, k) (higher is better), best first."""
        hist = fit_history(histories, max(np.asarray(histories).shape[-1], 1), len(self.near.lat))
        own, counts, _ = visit_stats(hist)
        fill, _ = self.near.recommend(hist, min(2 * k, len(self.near.lat)))
        items = np.zeros((len(hist), k), dtype=np.int64)
        for row in range(len(hist)):
            mine = own[row][own[row] >= 0][:k]
            rest = fill[row][~np.isin(fill[row], mine)]
            items[row] = np.r_[mine, rest][:k]
        scores = np.broadcast_to(-np.arange(k, dtype=np.float64), items.shape).copy()
        return items, scores + np.where(np.arange(k) < (counts > 0).sum(1)[:, None], k, 0)

    def evaluate(self, examples: Examples, ks: Sequence[int] = (5, 10)) -> dict[str, float]:
        """Hit@k and NDCG@k (for each k in ``ks``) on ``examples``."""
        histories, targets = examples
        items, _ = self.recommend(histories, max(ks))
        return ranking_metrics(items, np.asarray(targets), ks)
