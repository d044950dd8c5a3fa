"""Metrics: hand-checked small cases, behaviour on synthetic spaces, input validation."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from lgsid_pipeline.metrics import (
    TopKAccumulator,
    auc,
    code_churn,
    collision_rate,
    coverage_at_k,
    coverage_by_level,
    hit_at_k,
    largest_bucket,
    logloss,
    mean_kendall_tau,
    ndcg_at_k,
    neighbour_overlap_at_k,
    nmi_of_assignment,
    nmi_vs_labels,
    perplexity,
    similarity_at_k,
    top1_accuracy,
    utilisation,
)
from lgsid_pipeline.metrics.intervals import (
    auc_interval,
    auc_replicates,
    intervals_overlap,
    mean_auc_interval,
    paired_difference,
    summarize_auc,
    summarize_ranks,
)

# ---------------------------------------------------------------- synthetic spaces


def area_blobs(
    n_areas: int = 8, per_area: int = 60, dim: int = 32, noise: float = 0.05, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Items scattered tightly around one lat/lon centre per area, lifted to ``dim`` features.

    Each item's (lat, lon) is mapped to Gaussian bumps around a grid of anchor points, so
    items of one area get nearly the same feature vector and distant areas near-orthogonal
    ones. Returns (embeddings, area index per item).
    """
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 10, size=(n_areas, 2))
    area = np.repeat(np.arange(n_areas), per_area)
    latlon = centres[area] + rng.normal(scale=noise, size=(len(area), 2))
    anchors = rng.uniform(0, 10, size=(dim, 2))
    sq_dist = ((latlon[:, None, :] - anchors[None, :, :]) ** 2).sum(axis=2)
    return np.exp(-sq_dist / 2.0), area


# (1, 0), (0.9, 0.1), (0, 1), (0.1, 0.9): two pairs, each pair the other's nearest neighbour
FOUR_POINTS = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])


# ---------------------------------------------------------------- geography: hand examples


def test_coverage_hand_example_with_outside_labels() -> None:
    # k=1: a<->b share "x"; c<->d are both missing (None / NaN = "outside") -> 4/4 = 1.0
    assert coverage_at_k(FOUR_POINTS, ["x", "x", None, np.nan], k=1) == 1.0
    # labels x, x, y, outside; k=1 -> a, b match; c (y) vs d (outside) do not -> 2/4
    assert coverage_at_k(FOUR_POINTS, ["x", "x", "y", pd.NA], k=1) == 0.5
    # k=2: cos(a,d)=0.11 > cos(a,c)=0, cos(b,d)=0.22 > cos(b,c)=0.11, so a,b -> {other, d};
    # c -> {d, b}, d -> {c, b}; shares 1/2, 1/2, 0, 0 -> 0.25
    assert coverage_at_k(FOUR_POINTS, ["x", "x", "y", None], k=2) == 0.25


def test_missing_label_is_not_the_string_outside() -> None:
    # a real area called "outside" is its own label, distinct from a missing one
    assert coverage_at_k(FOUR_POINTS, ["x", "x", "outside", None], k=1) == 0.5


def test_coverage_by_level_keys_and_values() -> None:
    labels = {
        "level1": ["r", "r", "r", "r"],
        "level2": ["x", "x", "y", None],
        "level3": ["x1", "x2", "y1", None],
    }
    result = coverage_by_level(FOUR_POINTS, labels, ks=(1, 2))
    assert list(result) == ["p_at_1", "p_at_2", "c_at_1", "c_at_2", "t_at_1", "t_at_2"]
    # level1 is a single region: every neighbour matches
    assert result["p_at_1"] == result["p_at_2"] == 1.0
    # level2 as in the hand example above: k=1 -> 2/4, k=2 -> 0.25
    assert result["c_at_1"] == 0.5 and result["c_at_2"] == 0.25
    # level3: every item has its own label (the missing one too) -> 0
    assert result["t_at_1"] == result["t_at_2"] == 0.0


def test_nmi_of_assignment_hand_examples() -> None:
    assert nmi_of_assignment([0, 0, 1, 1], ["a", "a", "b", "b"]) == pytest.approx(1.0)
    assert nmi_of_assignment([7, 7, 3, 3], ["a", "a", "b", "b"]) == pytest.approx(1.0)
    # clusters cut across the labels: mutual information 0
    assert nmi_of_assignment([0, 1, 0, 1], ["a", "a", "b", "b"]) == pytest.approx(0.0)
    # None and NaN are the same label "outside"
    assert nmi_of_assignment([0, 0, 1, 1], [None, np.nan, "b", "b"]) == pytest.approx(1.0)
    # labels a, outside, b, b: H(L) = 1.5 bits, H(C) = 1 bit, I = H(L) - H(L|C) = 1.5 - 0.5 = 1;
    # NMI = I / mean(H(L), H(C)) = 1 / 1.25 = 0.8
    assert nmi_of_assignment([0, 0, 1, 1], ["a", None, "b", "b"]) == pytest.approx(0.8)
    # a 2-D array is one full code per row: rows (0,1), (0,1), (1,0), (1,0) -> perfect
    codes = np.array([[0, 1], [0, 1], [1, 0], [1, 0]])
    assert nmi_of_assignment(codes, ["a", "a", "b", "b"]) == pytest.approx(1.0)


def test_nmi_single_label_is_nan() -> None:
    assert math.isnan(nmi_of_assignment([0, 1, 0], ["a", "a", "a"]))
    assert math.isnan(nmi_vs_labels(FOUR_POINTS, ["a"] * 4))


def test_similarity_and_overlap_hand_example() -> None:
    # reference: a=(1,0), b=(0.8,0.6), c=(0,1); cos(a,b)=0.8, cos(b,c)=0.6, cos(a,c)=0,
    # so the k=1 neighbours are a->b, b->a, c->b
    reference = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    # new: a=(1,0), b=(0.6,0.8), c=(0,1); cos(a,b)=0.6, cos(b,c)=0.8, cos(a,c)=0
    new = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    # new cosines along the reference pairs: a-b 0.6, b-a 0.6, c-b 0.8 -> 2.0 / 3
    assert similarity_at_k(new, reference, k=1) == pytest.approx(2.0 / 3)
    # reference against itself: 0.8, 0.8, 0.6 -> 2.2 / 3
    assert similarity_at_k(reference, reference, k=1) == pytest.approx(2.2 / 3)
    # new neighbours a->b (kept), b->c (lost, was a), c->b (kept) -> 2/3
    assert neighbour_overlap_at_k(new, reference, k=1) == pytest.approx(2.0 / 3)


# ---------------------------------------------------------------- geography: behaviour


def test_geographic_blobs_score_near_one() -> None:
    embeddings, area = area_blobs()
    level2 = [f"area{a}" for a in area]
    level2 = [None if a == 0 else lab for a, lab in zip(area, level2, strict=True)]  # outside
    level1 = [f"region{a // 4}" for a in area]
    assert nmi_vs_labels(embeddings, level2, seed=0) > 0.95
    result = coverage_by_level(embeddings, {"level1": level1, "level2": level2}, ks=(5, 10))
    assert result["c_at_10"] > 0.97
    assert result["p_at_10"] >= result["c_at_10"]  # a coarser level can only match more


def test_random_embeddings_get_chance_coverage() -> None:
    rng = np.random.default_rng(1)
    n = 2000
    embeddings = rng.standard_normal((n, 32))
    labels = rng.choice(["a", "b", "c"], size=n, p=[0.5, 0.3, 0.2]).tolist()
    shares = pd.Series(labels).value_counts(normalize=True).to_numpy()
    chance = float((shares**2).sum())  # about 0.25 + 0.09 + 0.04 = 0.38
    assert coverage_at_k(embeddings, labels, k=10) == pytest.approx(chance, abs=0.02)
    assert nmi_vs_labels(embeddings, labels, seed=0) < 0.05


def test_coverage_is_independent_of_block_size(monkeypatch: pytest.MonkeyPatch) -> None:
    import lgsid_pipeline.metrics.geography as geography

    rng = np.random.default_rng(2)
    embeddings = rng.standard_normal((300, 8))
    labels = rng.integers(0, 4, size=300).tolist()
    whole = coverage_at_k(embeddings, labels, k=7)
    monkeypatch.setattr(geography, "_BLOCK_ELEMENTS", 300 * 13)  # blocks of 13 rows
    assert coverage_at_k(embeddings, labels, k=7) == whole


def test_knn_matches_brute_force() -> None:
    rng = np.random.default_rng(3)
    embeddings = rng.standard_normal((200, 16))
    labels = rng.integers(0, 5, size=200)
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    top = np.argsort(-sims, axis=1)[:, :6]
    expected = float((labels[top] == labels[:, None]).mean())
    assert coverage_at_k(embeddings, labels.tolist(), k=6) == pytest.approx(expected)


def test_similarity_of_identical_spaces_is_mean_neighbour_cosine() -> None:
    rng = np.random.default_rng(4)
    reference = rng.standard_normal((300, 16))
    unit = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    expected = float(np.sort(sims, axis=1)[:, -10:].mean())
    assert similarity_at_k(reference, reference, k=10) == pytest.approx(expected, rel=1e-5)
    assert neighbour_overlap_at_k(reference, reference, k=10) == 1.0


def test_rotation_keeps_neighbourhoods_and_shuffling_destroys_them() -> None:
    rng = np.random.default_rng(5)
    n, k = 1000, 10
    reference = rng.standard_normal((n, 16))
    rotation, _ = np.linalg.qr(rng.standard_normal((16, 16)))
    rotated = reference @ rotation
    assert neighbour_overlap_at_k(rotated, reference, k=k) == 1.0
    assert similarity_at_k(rotated, reference, k=k) == pytest.approx(
        similarity_at_k(reference, reference, k=k), rel=1e-5
    )
    shuffled = reference[rng.permutation(n)]
    assert neighbour_overlap_at_k(shuffled, reference, k=k) == pytest.approx(k / (n - 1), abs=0.01)
    # unrelated neighbours of random vectors: cosine near 0
    assert abs(similarity_at_k(shuffled, reference, k=k)) < 0.05


@pytest.mark.parametrize(
    "call",
    [
        lambda: coverage_at_k(np.zeros((0, 3)), [], k=1),
        lambda: coverage_at_k(FOUR_POINTS[:, 0], ["a"] * 4, k=1),  # 1-D
        lambda: coverage_at_k(FOUR_POINTS, ["a"] * 3, k=1),  # length mismatch
        lambda: coverage_at_k(FOUR_POINTS, ["a"] * 4, k=4),  # k >= items
        lambda: coverage_at_k(FOUR_POINTS, ["a"] * 4, k=0),
        lambda: coverage_at_k(np.where(FOUR_POINTS > 0.5, np.nan, FOUR_POINTS), ["a"] * 4, k=1),
        lambda: coverage_by_level(FOUR_POINTS, {"level9": ["a"] * 4}),
        lambda: coverage_by_level(FOUR_POINTS, {"level1": ["a"] * 4}, ks=()),
        lambda: nmi_vs_labels(FOUR_POINTS, ["a", "b", "a", "b"], n_clusters=5),
        lambda: nmi_of_assignment([0, None, 1, 1], ["a", "a", "b", "b"]),  # missing cluster
        lambda: nmi_of_assignment([0, 1], ["a", "a", "b"]),
        lambda: similarity_at_k(FOUR_POINTS, FOUR_POINTS[:3], k=1),
        lambda: neighbour_overlap_at_k(FOUR_POINTS, FOUR_POINTS, k=10),
    ],
)
def test_geography_rejects_bad_input(call) -> None:
    with pytest.raises(ValueError):
        call()


# ---------------------------------------------------------------- ranking


def test_top1_accuracy_counts_ties_as_misses() -> None:
    scores = np.array(
        [
            [3.0, 1.0, 2.0],  # true 0 is the unique max: hit
            [1.0, 3.0, 2.0],  # max is index 1: miss for true 0
            [2.0, 2.0, 1.0],  # tie at the top: miss
            [5.0, 5.0, 5.0],
        ]
    )  # all tied: miss
    assert top1_accuracy(scores) == 0.25
    # per-list true index 0, 1, 0, 2 -> hit, hit, tie, tie -> 0.5
    assert top1_accuracy(scores, np.array([0, 1, 0, 2])) == 0.5
    assert top1_accuracy(np.array([[1.0], [2.0]])) == 1.0  # a one-item list is trivially right


def test_mean_kendall_tau() -> None:
    # scores rise exactly as distance falls: tau(scores, -distance) = 1
    assert mean_kendall_tau(np.array([[1.0, 2, 3, 4]]), np.array([[4.0, 3, 2, 1]])) == 1.0
    # second list: -distance = (1, 3, 2) vs scores (1, 2, 3): 2 concordant, 1 discordant
    # pair -> 1/3; a list with constant scores is skipped -> mean(1, 1/3) = 2/3
    scores = np.array([[1.0, 2, 3], [1.0, 2, 3], [5.0, 5, 5]])
    distances = np.array([[3.0, 2, 1], [-1.0, -3, -2], [1.0, 2, 3]])
    assert mean_kendall_tau(scores, distances) == pytest.approx(2.0 / 3)
    with pytest.raises(ValueError, match="undefined"):
        mean_kendall_tau(np.ones((2, 3)), np.arange(6.0).reshape(2, 3))


def test_mean_kendall_tau_matches_scipy_with_ties() -> None:
    from scipy.stats import kendalltau

    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(300, 16)).astype(float)  # many ties in both
    distances = rng.integers(0, 5, size=(300, 16)).astype(float)
    pairs = zip(scores, distances, strict=True)
    expected = np.mean([kendalltau(s, -d).statistic for s, d in pairs])
    assert mean_kendall_tau(scores, distances) == pytest.approx(expected, abs=1e-12)


def test_auc_hand_example_and_sklearn() -> None:
    # positives 0.35, 0.8 vs negatives 0.1, 0.4: 0.35 beats 0.1 only, 0.8 beats both -> 3/4
    assert auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == 0.75
    assert auc(np.array([0, 1]), np.array([0.5, 0.5])) == 0.5  # a tie is half a win
    rng = np.random.default_rng(6)
    for _ in range(5):
        labels = rng.integers(0, 2, size=500)
        scores = np.round(rng.random(500) + 0.3 * labels, 1)  # coarse: many ties
        assert auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))


def test_logloss() -> None:
    # -(ln 0.8 + ln 0.6) / 2 = (0.22314 + 0.51083) / 2
    assert logloss(np.array([1, 0]), np.array([0.8, 0.4])) == pytest.approx(0.366985, abs=1e-6)
    # a certain, wrong prediction is clipped at eps: -ln(1e-7)
    assert logloss(np.array([0]), np.array([1.0])) == pytest.approx(-math.log(1e-7), rel=1e-6)


def test_hit_and_ndcg_hand_example() -> None:
    ranked = [[5, 3, 9], np.array([1, 2, 3]), (7, 8, 9)]
    targets = [3, 4, 7]
    # k=2: query 1 hits at rank 1, query 2 misses, query 3 hits at rank 0
    assert hit_at_k(ranked, targets, k=2) == pytest.approx(2 / 3)
    assert ndcg_at_k(ranked, targets, k=2) == pytest.approx((1 / math.log2(3) + 0 + 1) / 3)
    # k=1: only query 3
    assert hit_at_k(ranked, targets, k=1) == pytest.approx(1 / 3)
    assert ndcg_at_k(ranked, targets, k=1) == pytest.approx(1 / 3)


def test_topk_accumulator_matches_full_sort() -> None:
    rng = np.random.default_rng(7)
    n_queries, k = 5, 8
    batches = [rng.standard_normal((n_queries, size)) for size in (3, 20, 1, 50, 0, 7)]
    ids = np.arange(sum(b.shape[1] for b in batches))
    acc = TopKAccumulator(k)
    start = 0
    for i, batch in enumerate(batches):
        batch_ids = ids[start : start + batch.shape[1]]
        if i % 2:  # alternate numpy and torch, shared and per-query ids
            acc.update(torch.from_numpy(batch), np.tile(batch_ids, (n_queries, 1)))
        else:
            acc.update(batch, batch_ids)
        start += batch.shape[1]
    scores, got_ids = acc.result()
    everything = np.concatenate(batches, axis=1)
    order = np.argsort(-everything, axis=1)[:, :k]
    np.testing.assert_array_equal(got_ids, order)
    np.testing.assert_array_equal(scores, np.take_along_axis(everything, order, axis=1))


def test_topk_accumulator_with_fewer_candidates_than_k() -> None:
    acc = TopKAccumulator(5)
    acc.update(np.array([[0.1, 0.9]]), np.array([10, 20]))
    scores, ids = acc.result()
    np.testing.assert_array_equal(ids, [[20, 10]])
    np.testing.assert_array_equal(scores, [[0.9, 0.1]])


@pytest.mark.parametrize(
    "call",
    [
        lambda: top1_accuracy(np.array([1.0, 2.0])),  # 1-D
        lambda: top1_accuracy(np.array([[1.0, np.nan]])),
        lambda: top1_accuracy(np.ones((2, 3)), 3),  # index out of range
        lambda: top1_accuracy(np.ones((2, 3)), np.array([0, 1, 2])),  # one index too many
        lambda: mean_kendall_tau(np.ones((2, 3)), np.ones((3, 3))),
        lambda: auc(np.array([1, 1]), np.array([0.2, 0.3])),  # one class
        lambda: auc(np.array([0, 2]), np.array([0.2, 0.3])),  # not binary
        lambda: auc(np.array([0, 1]), np.array([0.2])),
        lambda: logloss(np.array([0, 1]), np.array([0.2, 1.3])),
        lambda: hit_at_k([[1]], [1, 2], k=1),
        lambda: ndcg_at_k([[1]], [1], k=0),
        lambda: hit_at_k([], [], k=1),
        lambda: TopKAccumulator(0),
        lambda: TopKAccumulator(2).result(),
        lambda: TopKAccumulator(2).update(np.ones((2, 3)), np.arange(4)),
    ],
)
def test_ranking_rejects_bad_input(call) -> None:
    with pytest.raises(ValueError):
        call()


# ---------------------------------------------------------------- AUC intervals


def binormal(
    n: int, separations: list[float], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Labels (n,) with 30% positives and one row of scores per separation d (positives
    N(d, 1), negatives N(0, 1)): the true AUC of a row is Phi(d / sqrt(2))."""
    labels = (rng.random(n) < 0.3).astype(int)
    scores = np.stack([rng.normal(size=n) + d * labels for d in separations])
    return labels, scores


def test_auc_replicates_match_explicit_resampling() -> None:
    """The weighted O(n) replicates equal the AUC of each explicitly drawn resample, ties
    included, for one seed and for a mean over resampled seeds."""
    rng = np.random.default_rng(3)
    labels, scores = binormal(400, [0.5, 1.0, 1.5], rng)
    scores = np.round(scores, 1)  # many ties
    for rows, n_seeds in ((scores[0], 1), (scores, 3)):
        fast = auc_replicates(labels, rows, n_boot=25, seed=7)
        draws = np.random.default_rng(7)
        slow = []
        for _ in range(25):
            seeds = draws.integers(0, n_seeds, n_seeds) if n_seeds > 1 else [0]
            examples = draws.integers(0, len(labels), len(labels))
            slow.append(
                np.mean([auc(labels[examples], np.atleast_2d(rows)[k][examples]) for k in seeds])
            )
        np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-12)


def test_auc_interval_covers_the_true_auc_and_shrinks_with_data() -> None:
    rng = np.random.default_rng(11)
    truth = norm.cdf(1 / np.sqrt(2))  # 0.760
    covered = 0
    for _ in range(20):
        labels, scores = binormal(1000, [1.0], rng)
        lo, hi = auc_interval(labels, scores[0], n_boot=300, seed=1)
        assert lo < auc(labels, scores[0]) < hi
        covered += lo <= truth <= hi
    assert covered >= 16  # 95% nominal: 19 of 20 expected, under 16 has chance < 2%
    widths = []
    for n in (500, 8000):
        labels, scores = binormal(n, [1.0], rng)
        lo, hi = auc_interval(labels, scores[0], n_boot=300)
        widths.append(hi - lo)
    assert 0.01 < widths[1] < 0.5 * widths[0]  # about 1 / sqrt(16) of it


def test_mean_auc_interval_is_wider_when_seeds_disagree() -> None:
    rng = np.random.default_rng(5)
    labels, scores = binormal(3000, [0.6, 1.0, 1.4], rng)  # AUCs about 0.66, 0.76, 0.84
    single = auc_interval(labels, scores[1], n_boot=400)
    joint = mean_auc_interval(labels, scores, n_boot=400)
    assert joint[1] - joint[0] > 2 * (single[1] - single[0])
    summary = summarize_auc(labels, scores, n_boot=400)
    assert summary["auc"] == pytest.approx(np.mean([auc(labels, row) for row in scores]))
    assert summary["auc_ci95"] == list(joint) and summary["seeds"] == 3
    assert summary["interval"] == "bootstrap over seeds and test examples"
    # seeds that agree add no width: three copies of one seed give its own interval
    same = mean_auc_interval(labels, np.repeat(scores[1:2], 3, axis=0), n_boot=400)
    assert same[1] - same[0] == pytest.approx(single[1] - single[0], rel=0.2)
    one = summarize_auc(labels, scores[1], n_boot=400)
    assert one["interval"] == "bootstrap over test examples" and one["seeds"] == 1
    assert one["auc_ci95"] == list(single)


@pytest.mark.parametrize(
    "call",
    [
        lambda: auc_interval(np.array([0, 1]), np.ones((2, 2))),  # several seeds
        lambda: mean_auc_interval(np.array([0, 1]), np.array([0.2, 0.3])),  # one seed
        lambda: mean_auc_interval(np.array([0, 1, 1]), np.ones((2, 2))),  # length mismatch
        lambda: auc_interval(np.array([1, 1]), np.array([0.2, 0.3])),  # one class
        lambda: auc_interval(np.array([0, 2]), np.array([0.2, 0.3])),  # not binary
        lambda: auc_interval(np.array([0, 1]), np.array([0.2, np.nan])),
        lambda: auc_interval(np.array([0, 1]), np.array([0.2, 0.3]), n_boot=0),
        lambda: auc_interval(np.array([0, 1] * 20), np.arange(40.0), level=1.0),
        lambda: auc_interval(np.array([0, 1]), np.array([0.2, 0.3])),  # resamples lack a class
    ],
)
def test_auc_intervals_reject_bad_input(call) -> None:
    with pytest.raises(ValueError):
        call()


def test_topk_accumulator_rejects_a_change_of_queries() -> None:
    acc = TopKAccumulator(2)
    acc.update(np.ones((2, 3)), np.arange(3))
    with pytest.raises(ValueError, match="queries"):
        acc.update(np.ones((3, 3)), np.arange(3))


# ---------------------------------------------------------------- codebook


def test_utilisation_and_perplexity_hand_example() -> None:
    tokens = np.array([0, 0, 1, 3])
    # codewords 0, 1, 3 of 4 used
    assert utilisation(tokens, 4) == 0.75
    # shares 1/2, 1/4, 1/4: entropy = 1.5 bits -> perplexity 2 ** 1.5
    assert perplexity(tokens, 4) == pytest.approx(2**1.5)
    assert perplexity(np.arange(8).reshape(2, 4), 8) == pytest.approx(8.0)  # uniform
    assert perplexity(np.zeros(5, dtype=int), 8) == pytest.approx(1.0)


def test_collisions_buckets_and_churn_hand_example() -> None:
    codes = np.array([[0, 1], [0, 1], [0, 2], [1, 1], [0, 1]])
    # (0,1) is shared by 3 of 5 items
    assert collision_rate(codes) == pytest.approx(0.6)
    assert largest_bucket(codes) == 3
    unique = np.array([[0, 1], [1, 0], [1, 1]])
    assert collision_rate(unique) == 0.0 and largest_bucket(unique) == 1
    old = np.array([[0, 1], [0, 2], [1, 1]])
    new = np.array([[0, 1], [0, 3], [2, 2]])
    assert code_churn(old, new) == pytest.approx(2 / 3)  # rows 2 and 3 changed
    assert code_churn(old, old) == 0.0


@pytest.mark.parametrize(
    "call",
    [
        lambda: utilisation(np.array([], dtype=int), 4),
        lambda: utilisation(np.array([0, 4]), 4),  # out of range
        lambda: utilisation(np.array([0.0, 1.0]), 4),  # not integers
        lambda: perplexity(np.array([0, 1]), 0),
        lambda: collision_rate(np.array([0, 1, 1])),  # 1-D
        lambda: largest_bucket(np.array([[0.0, np.nan]])),
        lambda: code_churn(np.zeros((3, 2), dtype=int), np.zeros((3, 3), dtype=int)),
    ],
)
def test_codebook_rejects_bad_input(call) -> None:
    with pytest.raises(ValueError):
        call()


def test_paired_difference_sees_a_small_consistent_gain() -> None:
    rng = np.random.default_rng(0)
    floor = np.where(rng.random(2000) < 0.5, 0, -1)  # hit@10 about 0.5
    better = floor.copy()
    better[np.flatnonzero(floor < 0)[:60]] = 3  # 60 more hits: +0.03 on the same examples
    out = paired_difference(np.stack([better, better]), floor)
    assert out["mean"] == pytest.approx(0.03)
    assert 0 < out["ci95"][0] < 0.03 < out["ci95"][1]
    # the unpaired intervals of the two means overlap at this gain
    assert intervals_overlap(
        summarize_ranks(better)["hit@10_ci95"], summarize_ranks(floor)["hit@10_ci95"]
    )
    with pytest.raises(ValueError, match="same 2000 examples"):
        paired_difference(better, floor[:10])


@pytest.mark.parametrize("seed", range(5))
def test_numpy_nmi_equals_scikit_learns(seed: int) -> None:
    from sklearn.metrics import normalized_mutual_info_score

    from lgsid_pipeline.metrics.geography import normalized_mutual_info

    rng = np.random.default_rng(seed)
    a = rng.integers(0, 1 + seed * 3, 500)
    b = (a + rng.integers(0, 3, 500)) % 7 if seed % 2 else rng.integers(0, 9, 500)
    assert normalized_mutual_info(a, b) == pytest.approx(
        normalized_mutual_info_score(a, b), abs=1e-12
    )
    labels = np.array(["x", "y", "z"] * 50)
    assert normalized_mutual_info(labels, labels) == pytest.approx(1.0)
    assert normalized_mutual_info(np.zeros(9), np.zeros(9)) == 1.0  # as scikit-learn
    assert normalized_mutual_info(np.zeros(9), np.arange(9)) == 0.0
    with pytest.raises(ValueError, match="labelings of 3 and 2"):
        normalized_mutual_info(np.arange(3), np.arange(2))
