"""Generation that knows the user's history and location: a learned re-ranking of candidates.

Next-visit data in local life is dominated by returns: floor (b), the user's own most
visited places and then what is popular nearby, beats every generative model we trained on
its own (``bench/results/generative.json``). The generative model still knows things the
floor does not (where people go next from here, which new places match this user), so the
served ranking pools four candidate sources,

- the user's own items (most visited first),
- the model's constrained beam,
- the popularity-within-2-km list of the last check-in,
- the items most often visited next after the last check-in in training (transitions),

describes every candidate by the features in :data:`FEATURE_GROUPS` (the model's
log-probability of the candidate's code among them), and ranks them with a gradient-boosted
classifier fitted on validation examples (candidate = target). Dropping a feature group
(``drop``) is how the ablations measure what the model, the history or geography buy.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import sparse
from sklearn.ensemble import HistGradientBoostingClassifier

from lgsid_pipeline.atomic import atomic_folder
from lgsid_pipeline.geo.distance import haversine_km
from lgsid_pipeline.recommenders.decoding import score_items
from lgsid_pipeline.recommenders.fitting import VALID_K
from lgsid_pipeline.recommenders.generative import (
    GenerativeResult,
    load_generative,
    recommend_top_k,
)
from lgsid_pipeline.recommenders.next_item import (
    Examples,
    PopularityNearLastBaseline,
    fit_history,
    visit_stats,
)

# feature name -> group; a group is what an ablation drops
FEATURE_GROUPS: dict[str, str] = {
    "logp": "model",  # log-probability of the candidate's code under the generative model
    "logp_gap": "model",  # ... minus the best candidate's
    "visits": "history",  # log(1 + the user's visits of the candidate in the history)
    "visit_share": "history",  # visits / history length
    "since_visit": "history",  # log(1 + check-ins since the last visit); large if never
    "recent_visits": "history",  # visits among the model's max_history latest check-ins
    "is_last": "history",  # the candidate is the last check-in
    "log_km": "distance",  # log(1 + km from the last check-in)
    "popularity": "popularity",  # log(1 + training targets of the candidate)
    "transitions": "transitions",  # log(1 + training moves last check-in -> candidate)
    "transition_share": "transitions",  # ... over all moves out of the last check-in
    "history_length": "context",  # log(1 + check-ins in the history)
}
FEATURES = tuple(FEATURE_GROUPS)
GROUPS = tuple(dict.fromkeys(FEATURE_GROUPS.values()))
NEVER_VISITED = 1_000.0  # since_visit of an item the user has not visited
RANKER_FILE = "ranker.pkl"
RANKER_META_FILE = "ranker.json"
POPULARITY_FILE = "popularity.npy"
TRANSITIONS_FILE = "transitions.npz"


class TransitionCounts:
    """How often, in the training examples, the target followed each last check-in."""

    def __init__(self, n_items: int) -> None:
        self.n_items = n_items
        self.counts = sparse.csr_matrix((n_items, n_items), dtype=np.float64)

    def fit(self, train: Examples) -> TransitionCounts:
        """Count (last history item, target) pairs of ``train``."""
        histories, targets = train
        last = np.asarray(histories)[:, -1]
        targets = np.asarray(targets, dtype=np.int64)
        ok = last >= 0
        self.counts = sparse.coo_matrix(
            (np.ones(int(ok.sum())), (last[ok], targets[ok])), shape=(self.n_items, self.n_items)
        ).tocsr()
        self.counts.sum_duplicates()
        return self

    def top(self, last: np.ndarray, k: int) -> np.ndarray:
        """The ``k`` most frequent next items (S, k) after each of ``last`` (-1 = none)."""
        out = np.full((len(last), k), -1, dtype=np.int64)
        for row, item in enumerate(np.asarray(last)):
            if item < 0:
                continue
            start, end = self.counts.indptr[item], self.counts.indptr[item + 1]
            nxt, count = self.counts.indices[start:end], self.counts.data[start:end]
            best = nxt[np.lexsort((nxt, -count))][:k]
            out[row, : len(best)] = best
        return out

    def lookup(self, last: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Counts of moves ``last`` -> each of ``items`` (S, C) and their share of all moves
        out of ``last``."""
        safe_last, safe = np.clip(last, 0, None), np.clip(items, 0, None)
        rows = np.repeat(safe_last, items.shape[1])
        count = np.asarray(self.counts[rows, safe.ravel()]).reshape(items.shape)
        count = np.where((items >= 0) & (last >= 0)[:, None], count, 0.0)
        out = np.asarray(self.counts.sum(axis=1)).ravel()[safe_last]
        return count, count / np.maximum(out, 1.0)[:, None]

    def save(self, path: Path) -> None:
        """Write the counts as a scipy ``.npz``."""
        sparse.save_npz(path, self.counts)

    @classmethod
    def load(cls, path: Path) -> TransitionCounts:
        """Counts written by :meth:`save`."""
        counts = sparse.load_npz(path).tocsr()
        out = cls(counts.shape[0])
        out.counts = counts
        return out


@dataclass
class Candidates:
    """Per-example candidate items (S, C) (-1 = padding), their features (S, C, F) in
    :data:`FEATURES` order, and the model's own beam (S, beam_size), best first."""

    items: np.ndarray
    features: np.ndarray
    beam: np.ndarray

    def feature(self, name: str) -> np.ndarray:
        """One feature (S, C)."""
        return self.features[..., FEATURES.index(name)]


def context_features(
    hist: np.ndarray,
    items: np.ndarray,
    counts: np.ndarray,
    ago: np.ndarray,
    recent_window: int,
    lat: np.ndarray,
    lon: np.ndarray,
    near: PopularityNearLastBaseline,
    transitions: TransitionCounts,
) -> dict[str, np.ndarray]:
    """The features of candidates ``items`` (S, C) that need no model (every group but
    ``model``): ``counts`` and ``ago`` (from ``visit_stats``) describe the first columns of
    ``items``, the user's own items; the last ``recent_window`` check-ins are the recent
    ones."""
    last = hist[:, -1]
    real = items >= 0
    pad = np.zeros((len(items), items.shape[1] - counts.shape[1]), dtype=np.int64)
    visits = np.concatenate([counts, pad], axis=1).astype(np.float64)
    gap = np.concatenate([ago, pad], axis=1).astype(np.float64)
    length = (hist >= 0).sum(axis=1, keepdims=True).astype(np.float64)
    recent = hist[:, -recent_window:]
    recent_visits = (recent[:, None, :] == items[:, :, None]).sum(axis=2)
    safe, safe_last = np.clip(items, 0, None), np.clip(last, 0, None)
    km = haversine_km(lat[safe_last][:, None], lon[safe_last][:, None], lat[safe], lon[safe])
    moves, move_share = transitions.lookup(last, items)
    columns = {
        "visits": np.log1p(visits),
        "visit_share": visits / np.maximum(length, 1.0),
        "since_visit": np.log1p(np.where(visits > 0, gap, NEVER_VISITED)),
        "recent_visits": recent_visits.astype(np.float64),
        "is_last": (items == last[:, None]).astype(np.float64),
        "log_km": np.where((last >= 0)[:, None], np.log1p(km), 0.0),
        "popularity": np.log1p(near.popularity[safe].astype(np.float64)),
        "transitions": np.log1p(moves),
        "transition_share": move_share,
        "history_length": np.broadcast_to(np.log1p(length), items.shape),
    }
    return {name: np.where(real, value, 0.0) for name, value in columns.items()}


def ranking_classifier(seed: int = 0) -> HistGradientBoostingClassifier:
    """The unfitted classifier that scores candidates (label: the candidate is the target)."""
    return HistGradientBoostingClassifier(
        max_iter=200, learning_rate=0.05, max_leaf_nodes=15, random_state=seed
    )


def first_occurrence(items: np.ndarray) -> np.ndarray:
    """``items`` with every repeat of an item in its row replaced by -1."""
    order = np.argsort(items, axis=1, kind="stable")
    ordered = np.take_along_axis(items, order, axis=1)
    repeat = np.zeros_like(items, dtype=bool)
    np.put_along_axis(
        repeat,
        order,
        np.c_[np.zeros((len(items), 1), dtype=bool), ordered[:, 1:] == ordered[:, :-1]],
        axis=1,
    )
    return np.where(repeat & (items >= 0), -1, items)


class HistoryAwareRanker:
    """The generative model's candidates and the user's, re-ranked by a classifier fitted
    on validation examples (:meth:`fit`) over the features not in ``drop``."""

    def __init__(
        self,
        result: GenerativeResult,
        item_lat: np.ndarray,
        item_lon: np.ndarray,
        near: PopularityNearLastBaseline,
        transitions: TransitionCounts,
        max_own: int = 30,
        max_transitions: int = 20,
    ) -> None:
        self.result = result
        self.lat = np.asarray(item_lat, dtype=np.float64)
        self.lon = np.asarray(item_lon, dtype=np.float64)
        n_items = result.vocabulary.n_items
        if self.lat.shape != (n_items,) or self.lon.shape != self.lat.shape:
            raise ValueError(
                f"need {n_items} item coordinates, got {self.lat.shape} and {self.lon.shape}"
            )
        if near.lat.shape != self.lat.shape or transitions.n_items != n_items:
            raise ValueError(
                f"the 2 km list ranks {len(near.lat)} items and the transitions "
                f"count {transitions.n_items}; the model knows {n_items}"
            )
        self.near, self.transitions = near, transitions
        self.max_own, self.max_transitions = max_own, max_transitions
        self.classifier: HistGradientBoostingClassifier | None = None
        self.drop: tuple[str, ...] = ()

    def candidates(self, histories: np.ndarray) -> Candidates:
        """The pooled candidates of each history, each once, with their features."""
        result, config = self.result, self.result.config
        vocab = result.vocabulary
        hist = fit_history(histories, max(np.asarray(histories).shape[-1], 1), vocab.n_items)
        last = hist[:, -1]
        own, counts, ago = (a[:, : self.max_own] for a in visit_stats(hist))
        beam, _ = recommend_top_k(result, vocab.codes, hist, config.beam_size)
        # twice the beam, so floor (b)'s top beam_size items are always candidates
        nearby = self.near.recommend(hist, min(2 * config.beam_size, vocab.n_items))[0]
        items = first_occurrence(
            np.concatenate(
                [own, beam, nearby, self.transitions.top(last, self.max_transitions)], axis=1
            )
        )
        logp = np.zeros(items.shape, dtype=np.float64)
        tokens = vocab.history_tokens(fit_history(hist, config.max_history, vocab.n_items))
        for start in range(0, len(items), config.eval_batch_size):
            chunk = slice(start, start + config.eval_batch_size)
            logp[chunk] = score_items(
                result.model, torch.from_numpy(tokens[chunk]), vocab, items[chunk]
            )
        real = items >= 0
        best = np.where(real, logp, -np.inf).max(axis=1, keepdims=True)
        columns = {
            "logp": logp,
            "logp_gap": logp - np.where(np.isfinite(best), best, 0.0),
            **context_features(
                hist,
                items,
                counts,
                ago,
                config.max_history,
                self.lat,
                self.lon,
                self.near,
                self.transitions,
            ),
        }
        features = np.stack([columns[name] for name in FEATURES], axis=-1)
        return Candidates(items, np.where(real[..., None], features, 0.0), beam)

    def _kept(self, drop: tuple[str, ...]) -> list[int]:
        unknown = sorted(set(drop) - set(GROUPS))
        if unknown:
            raise ValueError(f"unknown feature groups {unknown}; known: {GROUPS}")
        return [i for i, name in enumerate(FEATURES) if FEATURE_GROUPS[name] not in drop]

    def fit(
        self,
        valid: Examples,
        drop: tuple[str, ...] = (),
        seed: int = 0,
        candidates: Candidates | None = None,
    ) -> HistoryAwareRanker:
        """Fit the classifier on the candidates of ``valid`` (label: the candidate is the
        target) without the feature groups in ``drop``; ``candidates`` of ``valid`` may be
        passed in when already computed."""
        histories, targets = valid
        c = candidates if candidates is not None else self.candidates(histories)
        kept = self._kept(drop)
        real = c.items >= 0
        labels = (c.items == np.asarray(targets)[:, None]) & real
        if not labels.any() or labels[real].all():
            raise ValueError(
                f"the {len(targets)} validation examples give the re-ranker "
                "only one class (no target among the candidates, or only "
                "targets); use more validation examples"
            )
        self.classifier = ranking_classifier(seed)
        self.classifier.fit(c.features[real][:, kept], labels[real])
        self.drop = tuple(drop)
        return self

    def rank(self, c: Candidates, k: int) -> np.ndarray:
        """Items (S, k) of ``c`` by the classifier's score (ties: the model's
        log-probability), padded with -1 where there are fewer than ``k`` candidates."""
        if self.classifier is None:
            raise RuntimeError("fit the ranker (or load a fitted one) before ranking")
        real = c.items >= 0
        score = np.full(c.items.shape, -np.inf)
        if real.any():
            score[real] = self.classifier.predict_proba(c.features[real][:, self._kept(self.drop)])[
                :, 1
            ]
        order = np.lexsort((-c.feature("logp"), -score), axis=1)[:, :k]
        return np.where(
            np.take_along_axis(score, order, axis=1) > -np.inf,
            np.take_along_axis(c.items, order, axis=1),
            -1,
        )

    def recommend(self, histories: np.ndarray, k: int = VALID_K) -> np.ndarray:
        """Items (S, k), best first (padded with -1 if fewer candidates than k)."""
        return self.rank(self.candidates(histories), k)

    def save(self, folder: Path) -> Path:
        """Write the fitted classifier, the 2 km list's popularity and the transitions
        (the model itself is saved with ``save_generative``)."""
        if self.classifier is None:
            raise RuntimeError("nothing to save: the ranker is not fitted")
        with atomic_folder(Path(folder)) as tmp:
            (tmp / RANKER_FILE).write_bytes(pickle.dumps(self.classifier))
            (tmp / RANKER_META_FILE).write_text(
                json.dumps(
                    {
                        "drop": list(self.drop),
                        "features": list(FEATURES),
                        "max_own": self.max_own,
                        "max_transitions": self.max_transitions,
                    }
                )
            )
            np.save(tmp / POPULARITY_FILE, self.near.popularity)
            self.transitions.save(tmp / TRANSITIONS_FILE)
        return Path(folder)


def load_ranker(
    folder: Path, model_folder: Path, item_lat: np.ndarray, item_lon: np.ndarray
) -> HistoryAwareRanker:
    """A ranker written by :meth:`HistoryAwareRanker.save` over the model in
    ``model_folder``, for items at ``item_lat`` / ``item_lon`` (the model's item order)."""
    folder = Path(folder)
    meta = json.loads((folder / RANKER_META_FILE).read_text())
    if meta["features"] != list(FEATURES):
        raise ValueError(
            f"{folder} was fitted on features {meta['features']}, this version "
            f"computes {list(FEATURES)}; retrain the model"
        )
    near = PopularityNearLastBaseline(item_lat, item_lon)
    near.popularity = np.load(folder / POPULARITY_FILE, allow_pickle=False)
    ranker = HistoryAwareRanker(
        load_generative(model_folder),
        item_lat,
        item_lon,
        near,
        TransitionCounts.load(folder / TRANSITIONS_FILE),
        meta["max_own"],
        meta["max_transitions"],
    )
    ranker.classifier = pickle.loads((folder / RANKER_FILE).read_bytes())
    ranker.drop = tuple(meta["drop"])
    return ranker
