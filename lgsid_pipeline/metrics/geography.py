"""How much geography an embedding space holds (METHOD section 6).

NMI between K-Means clusters and admin labels, P/C/T@K coverage (share of cosine nearest
neighbours in the same admin area) and Similarity@K (whether semantic neighbourhoods survive
alignment). A missing label (None, NaN, pd.NA: the item lies outside every polygon) is one
label of its own, "outside", so two outside items count as a match (a real area named
"outside" stays a separate label).

Nearest neighbours are exact: rows are L2-normalised, then blocks of query rows are multiplied
with the whole matrix and the top K picked with ``torch.topk``, so memory stays bounded
(about 64 MiB of similarities per block) however many items there are.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import torch

from lgsid_pipeline.frames import row_groups

_OUTSIDE = -1  # code shared by every missing label
_LEVEL_PREFIX = {"level1": "p", "level2": "c", "level3": "t"}
_MAX_BLOCK_ROWS = 2048
_BLOCK_ELEMENTS = 1 << 24  # similarity entries per block: 64 MiB of float32
_MINIBATCH_ABOVE = 20_000


def _encode(
    values: Sequence, name: str, n: int | None = None, missing_ok: bool = True
) -> np.ndarray:
    """One integer code per distinct value; missing values share ``_OUTSIDE``.

    A 2-D array is read as one tuple per row (a full multi-level code).
    """
    if isinstance(values, np.ndarray) and values.ndim == 2:
        if values.dtype.kind in "iub" and len(values):  # integer tokens: no missing value
            _check_length(len(values), name, n)
            return row_groups(values)
        values = [tuple(row) for row in values.tolist()]
    objects = np.fromiter(values, dtype=object)  # tuples stay one element each
    _check_length(len(objects), name, n)
    missing = pd.isna(objects)  # element by element: None, NaN, NaT, pd.NA
    if missing.any() and not missing_ok:
        raise ValueError(f"{name} has a missing value at position {int(np.argmax(missing))}")
    codes, _ = pd.factorize(objects)
    codes[missing] = _OUTSIDE
    return codes.astype(np.int64)


def _check_length(length: int, name: str, n: int | None) -> None:
    if not length:
        raise ValueError(f"{name} is empty")
    if n is not None and length != n:
        raise ValueError(f"{name} has {length} entries but there are {n} items")


def _as_matrix(x: np.ndarray, name: str) -> np.ndarray:
    """A finite numeric 2-D array with at least two rows."""
    arr = np.asarray(x)
    if arr.ndim != 2 or arr.shape[0] < 2 or arr.shape[1] == 0:
        raise ValueError(
            f"{name} must be 2-D with at least 2 rows and 1 column, got shape {arr.shape}"
        )
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _unit_rows(x: np.ndarray, name: str = "embeddings") -> np.ndarray:
    """Rows scaled to unit length, as float32; an all-zero row stays zero (cosine 0)."""
    arr = _as_matrix(x, name).astype(np.float64)
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    return (arr / np.maximum(norms, np.finfo(np.float64).tiny)).astype(np.float32)


def _paired_unit_rows(
    embeddings: np.ndarray, reference: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    new, ref = _unit_rows(embeddings, "embeddings"), _unit_rows(reference, "reference")
    if len(new) != len(ref):
        raise ValueError(f"embeddings have {len(new)} rows but reference has {len(ref)}")
    return new, ref


def _row_blocks(n: int, per_row: int) -> Iterator[slice]:
    """Consecutive row slices holding at most ``_BLOCK_ELEMENTS`` entries of ``per_row`` each."""
    size = max(1, min(_MAX_BLOCK_ROWS, _BLOCK_ELEMENTS // max(per_row, 1)))
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _check_k(k: int, n: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k < n:
        raise ValueError(f"k must be an integer between 1 and {n - 1} (items - 1), got {k!r}")


def _knn(unit: np.ndarray, k: int) -> np.ndarray:
    """Indices of each row's k most cosine-similar other rows, most similar first.

    Ties are broken arbitrarily.
    """
    n = len(unit)
    _check_k(k, n)
    neighbours = np.empty((n, k), dtype=np.int64)
    for rows in _row_blocks(n, n):
        sims = unit[rows] @ unit.T
        local = np.arange(rows.stop - rows.start)
        sims[local, local + rows.start] = -np.inf  # an item is not its own neighbour
        # torch.topk rather than np.argpartition: about 9x faster here, and already sorted
        neighbours[rows] = torch.topk(torch.from_numpy(sims), k, dim=1).indices.numpy()
    return neighbours


def _same_label_share(neighbours: np.ndarray, codes: np.ndarray) -> float:
    # every item has exactly k neighbours, so the overall mean is the mean of per-item shares
    return float((codes[neighbours] == codes[:, None]).mean())


def normalized_mutual_info(a: np.ndarray, b: np.ndarray) -> float:
    """NMI of two labelings, mutual information over the arithmetic mean of their entropies
    (scikit-learn's default normalisation), in numpy: a nightly code report needs no
    scikit-learn (a second to import in a fresh run process). 1.0 when both hold one label."""
    a_codes = np.unique(np.asarray(a), return_inverse=True)[1].ravel()
    b_codes = np.unique(np.asarray(b), return_inverse=True)[1].ravel()
    if len(a_codes) != len(b_codes):
        raise ValueError(f"labelings of {len(a_codes)} and {len(b_codes)} items")
    n_a, n_b, n = int(a_codes.max(initial=-1)) + 1, int(b_codes.max(initial=-1)) + 1, len(a_codes)
    if n_a <= 1 and n_b <= 1:
        return 1.0
    counts = np.bincount(a_codes * n_b + b_codes, minlength=n_a * n_b).reshape(n_a, n_b)
    rows, cols = np.nonzero(counts)
    joint = counts[rows, cols] / n
    p_a, p_b = counts.sum(axis=1) / n, counts.sum(axis=0) / n
    mutual = float((joint * (np.log(joint) - np.log(p_a[rows]) - np.log(p_b[cols]))).sum())
    entropy_a = float(-(p_a[p_a > 0] * np.log(p_a[p_a > 0])).sum())
    entropy_b = float(-(p_b[p_b > 0] * np.log(p_b[p_b > 0])).sum())
    mean_entropy = (entropy_a + entropy_b) / 2
    if mutual <= 0 or mean_entropy <= 0:
        return 0.0
    return min(1.0, mutual / mean_entropy)


def _kmeans_clusters(x: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans, MiniBatchKMeans

    model: KMeans | MiniBatchKMeans
    if len(x) > _MINIBATCH_ABOVE:
        model = MiniBatchKMeans(n_clusters=n_clusters, n_init=3, random_state=seed, batch_size=4096)
    else:
        model = KMeans(n_clusters=n_clusters, n_init=3, random_state=seed)
    return model.fit_predict(x)


def nmi_vs_labels(
    embeddings: np.ndarray, labels: Sequence, n_clusters: int | None = None, seed: int = 0
) -> float:
    """NMI between K-Means clusters of the embeddings and the labels.

    k defaults to the number of distinct labels (missing = "outside"), capped at items - 1;
    MiniBatchKMeans above 20,000 items. NaN when the labels hold a single value (NMI is
    undefined there).
    """
    x = _as_matrix(embeddings, "embeddings")
    codes = _encode(labels, "labels", len(x))
    n_labels = len(np.unique(codes))
    if n_labels < 2:
        return float("nan")
    k = min(n_labels, len(x) - 1) if n_clusters is None else n_clusters
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= len(x):
        raise ValueError(f"n_clusters must be an integer between 1 and {len(x)}, got {k!r}")
    return normalized_mutual_info(codes, _kmeans_clusters(x, int(k), seed))


def nmi_of_assignment(assignment: Sequence, labels: Sequence) -> float:
    """NMI between a given token/cluster assignment and the labels (missing = "outside").

    A 2-D array assignment is read as one full code per row. NaN when the labels hold a
    single value.
    """
    clusters = _encode(assignment, "assignment", missing_ok=False)
    codes = _encode(labels, "labels", len(clusters))
    if len(np.unique(codes)) < 2:
        return float("nan")
    return normalized_mutual_info(codes, clusters)


def coverage_at_k(embeddings: np.ndarray, labels: Sequence, k: int) -> float:
    """Mean share of each item's k cosine nearest neighbours (itself excluded) with its label."""
    unit = _unit_rows(embeddings)
    codes = _encode(labels, "labels", len(unit))
    return _same_label_share(_knn(unit, k), codes)


def coverage_by_level(
    embeddings: np.ndarray, labels_by_level: dict[str, Sequence], ks: Sequence[int] = (5, 10)
) -> dict[str, float]:
    """Coverage@k per admin level: ``p_at_k`` (level1), ``c_at_k`` (level2), ``t_at_k`` (level3).

    ``labels_by_level`` holds some of the keys "level1", "level2", "level3". The neighbours
    are searched once, for the largest k; each smaller k reads a prefix of that sorted list.
    """
    unknown = sorted(set(labels_by_level) - set(_LEVEL_PREFIX))
    if not labels_by_level or unknown:
        raise ValueError(
            f"labels_by_level needs keys among {sorted(_LEVEL_PREFIX)}, "
            f"got {sorted(labels_by_level)}"
        )
    if len(ks) == 0:
        raise ValueError("ks is empty")
    unit = _unit_rows(embeddings)
    for k in ks:
        _check_k(k, len(unit))
    codes = {
        level: _encode(labels, f"labels of {level}", len(unit))
        for level, labels in labels_by_level.items()
    }
    neighbours = _knn(unit, max(ks))
    return {
        f"{_LEVEL_PREFIX[level]}_at_{k}": _same_label_share(neighbours[:, :k], level_codes)
        for level, level_codes in codes.items()
        for k in ks
    }


def similarity_at_k(embeddings: np.ndarray, reference: np.ndarray, k: int = 10) -> float:
    """Similarity@k: mean cosine, in the new space, between each item and its top-k
    neighbours of the reference space (itself excluded).

    It measures whether items that were semantic neighbours before alignment are still close
    after it: 1.0 means they still point the same way (neighbourhoods fully kept in cosine
    terms); on the reference space itself it is the mean top-k neighbour cosine, the baseline.
    """
    new, ref = _paired_unit_rows(embeddings, reference)
    neighbours = _knn(ref, k)
    total = 0.0
    for rows in _row_blocks(len(new), k * new.shape[1]):
        cosines = np.einsum("bd,bkd->bk", new[rows], new[neighbours[rows]])
        total += float(cosines.sum(dtype=np.float64))
    return total / neighbours.size


def neighbour_overlap_at_k(embeddings: np.ndarray, reference: np.ndarray, k: int = 10) -> float:
    """Mean share of each item's reference top-k neighbours still among its new top-k
    (cosine, itself excluded): a stricter figure than Similarity@k; 1.0 = all kept."""
    new, ref = _paired_unit_rows(embeddings, reference)
    new_nb, ref_nb = _knn(new, k), _knn(ref, k)
    kept = 0
    # neighbours within a row are distinct, so the count of equal pairs is the intersection
    for rows in _row_blocks(len(new), k * k):
        kept += int((new_nb[rows, :, None] == ref_nb[rows, None, :]).sum())
    return kept / ref_nb.size
