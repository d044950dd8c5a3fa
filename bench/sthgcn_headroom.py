"""How much room floor (b) leaves on the standard STHGCN split of Foursquare New York.

Usage: .venv/bin/python bench/sthgcn_headroom.py (writes bench/results/sthgcn_headroom.json;
ingests the split into a temporary home, a minute on 2 cores; no model is trained).

On the protocol's test targets (the last check-in of each test trajectory whose user and POI
were seen in training; history = the user's check-ins before it, as bench/generative.py
builds them) it counts:
- ``repeat_share``: targets the user had already visited in the history, and ``new_share``;
- floor (b)'s Acc@1/5/10 (the user's own most visited items, then popularity within 2 km of
  the last check-in) over all targets, over the repeats and over the new places;
- ``repeat_oracle_acc@10``: the best Acc@10 of any list that keeps floor (b)'s picks for new
  places and orders each user's history perfectly (every repeat target ranked first);
- ``acc@10_to_separate``: the Acc@10 whose 95% bootstrap interval (same examples, same
  width as floor (b)'s) starts above the top of floor (b)'s: what "better, with intervals
  that do not overlap" asks for, as hits beside the repeats floor (b) misses and the new
  places it finds;
- ``history_reranker``: how far re-ranking alone goes, without a generative model. The
  served ranker's classifier and every feature of it but the model's (the user's visits
  and their recency, distance, popularity, transitions), over the user's own items, the
  2 km list and the transitions, fitted on the validation targets and scored on the test
  targets (``SEEDS`` seeds); and the same with time-of-day features (the user's visits of
  the candidate within 2 hours of the last check-in's hour of day, or on the same kind of
  day, and the hours since the last one).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from common import isolated_home, write_results
from generative import STHGCN, city_setup, register_sthgcn

from lgsid_pipeline.metrics.intervals import bootstrap_interval, paired_difference, target_ranks

SEEDS = 3
MAX_OWN, MAX_NEARBY, MAX_TRANSITIONS = 30, 40, 20  # candidates per source
HOUR_WINDOW = 2.0  # hours either side of the last check-in's hour of day
NS_PER_HOUR = 3.6e12


def acc(ranks: np.ndarray, k: int) -> float:
    return float(np.mean((ranks >= 0) & (ranks < k)))


def headroom(histories, targets: np.ndarray, floor_ranks: np.ndarray) -> dict:
    """The counts of the module docstring from the test histories (-1 padded), targets and
    floor (b)'s 0-based target ranks (-1 = not in its list)."""
    repeat = np.array(
        [bool((np.asarray(h) == t).any()) for h, t in zip(histories, targets, strict=True)]
    )
    hits10 = (floor_ranks >= 0) & (floor_ranks < 10)
    floor_ci = list(bootstrap_interval(hits10.astype(float)))
    half_width = (floor_ci[1] - floor_ci[0]) / 2
    mean = float(hits10.mean())
    to_separate = floor_ci[1] + half_width
    n = len(targets)
    hits_needed = int(np.ceil(to_separate * n))
    return {
        "test_targets": int(n),
        "repeat_share": float(repeat.mean()),
        "new_share": float((~repeat).mean()),
        "floor_b": {
            "all": {f"acc@{k}": acc(floor_ranks, k) for k in (1, 5, 10)},
            "repeats": {f"acc@{k}": acc(floor_ranks[repeat], k) for k in (1, 5, 10)},
            "new": {f"acc@{k}": acc(floor_ranks[~repeat], k) for k in (1, 5, 10)},
            "acc@10_ci95": floor_ci,
        },
        "repeat_oracle_acc@10": float(repeat.mean() + hits10[~repeat].mean() * (~repeat).mean()),
        "acc@10_to_separate": float(to_separate),
        "gain_to_separate": float(to_separate - mean),
        "hits@10_to_separate": {
            "needed": hits_needed,
            "floor_b": int(hits10.sum()),
            "more_than_floor_b": hits_needed - int(hits10.sum()),
            "repeats_floor_b_misses": int((repeat & ~hits10).sum()),
            "new_places": int((~repeat).sum()),
            "new_places_floor_b_finds": int((~repeat & hits10).sum()),
        },
    }


def time_features(
    hist: np.ndarray, items: np.ndarray, hist_times: np.ndarray, visits: np.ndarray
) -> list[np.ndarray]:
    """Per candidate: the user's visits of it near the last check-in's hour of day (count
    and share), on the same kind of day (weekend or not; count and share), and the log
    hours since the last visit (large if never)."""
    now = hist_times[:, -1]

    def hour(t: np.ndarray) -> np.ndarray:
        return (t / NS_PER_HOUR) % 24

    def weekend(t: np.ndarray) -> np.ndarray:
        return ((np.nan_to_num(t) / (24 * NS_PER_HOUR)).astype(np.int64) + 3) % 7 >= 5

    apart = np.abs(hour(hist_times) - hour(now)[:, None])
    real = hist >= 0
    near_hour = (np.minimum(apart, 24 - apart) <= HOUR_WINDOW) & real
    same_day = (weekend(hist_times) == weekend(now)[:, None]) & real
    match = hist[:, None, :] == items[:, :, None]
    at_hour = (match & near_hour[:, None, :]).sum(axis=2)
    on_day = (match & same_day[:, None, :]).sum(axis=2)
    latest = np.where(match, hist_times[:, None, :], -np.inf).max(axis=2)
    hours = np.where(np.isfinite(latest), (now[:, None] - latest) / NS_PER_HOUR, 1e5)
    share = np.maximum(visits, 1.0)
    return [
        np.log1p(at_hour),
        at_hour / share,
        np.log1p(on_day),
        on_day / share,
        np.log1p(np.maximum(hours, 0.0)),
    ]


@dataclass
class RerankContext:
    """What the model-free re-ranker needs: the floors' fitted parts, item coordinates, the
    history windows, and the protocol's valid and test examples with their times."""

    near: Any
    transitions: Any
    lat: np.ndarray
    lon: np.ndarray
    history_window: int
    recent_window: int
    protocol: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]  # histories, targets, times
    floor_b: np.ndarray  # floor (b)'s test ranks


def reranker_inputs(ctx: RerankContext, split: str, with_time: bool):
    """Candidates (S, C) of ``split``'s examples and their features (S, C, F)."""
    from lgsid_pipeline.recommenders.next_item import fit_history, visit_stats
    from lgsid_pipeline.recommenders.reranking import context_features, first_occurrence

    histories, _, times = ctx.protocol[split]
    hist = fit_history(histories, ctx.history_window, len(ctx.lat))
    own, counts, ago = (a[:, :MAX_OWN] for a in visit_stats(hist))
    nearby = ctx.near.recommend(hist, MAX_NEARBY)[0]
    items = first_occurrence(
        np.concatenate([own, nearby, ctx.transitions.top(hist[:, -1], MAX_TRANSITIONS)], 1)
    )
    named = context_features(
        hist,
        items,
        counts,
        ago,
        ctx.recent_window,
        ctx.lat,
        ctx.lon,
        ctx.near,
        ctx.transitions,
    )
    columns = list(named.values())
    if with_time:  # the "visits" feature is log(1 + visits)
        columns += time_features(hist, items, times, np.expm1(named["visits"]))
    return items, np.where((items >= 0)[..., None], np.stack(columns, axis=-1), 0.0)


def history_reranker(ctx: RerankContext, with_time: bool) -> dict:
    """Test Acc@10 (seed mean, interval over seeds and examples) of the model-free
    re-ranker fitted on the validation targets, and its paired difference to floor (b)."""
    from lgsid_pipeline.recommenders.reranking import ranking_classifier

    fit_items, fit_features = reranker_inputs(ctx, "valid", with_time)
    items, features = reranker_inputs(ctx, "test", with_time)
    real, fit_real = items >= 0, fit_items >= 0
    labels = (fit_items == ctx.protocol["valid"][1][:, None]) & fit_real
    ranks = []
    for seed in range(SEEDS):
        classifier = ranking_classifier(seed).fit(fit_features[fit_real], labels[fit_real])
        score = np.full(items.shape, -np.inf)
        score[real] = classifier.predict_proba(features[real])[:, 1]
        top = np.take_along_axis(items, np.argsort(-score, axis=1, kind="stable")[:, :10], 1)
        ranks.append(target_ranks(top, ctx.protocol["test"][1]))
    hits = (np.asarray(ranks) >= 0).astype(np.float64)
    return {
        "acc@10": float(hits.mean()),
        "acc@10_ci95": list(bootstrap_interval(hits)),
        "acc@10_by_seed": [float(h.mean()) for h in hits],
        "vs_floor_b": paired_difference(np.asarray(ranks), ctx.floor_b, "acc@10"),
        "seeds": SEEDS,
        "fitted_on": int(len(labels)),
    }


def reranker_context(setup) -> RerankContext:
    """The re-ranker's context for a city set up by bench/generative.py's ``city_setup``."""
    from lgsid_pipeline.recommenders.protocol import (
        trajectory_last_target_times,
        trajectory_last_targets,
    )
    from lgsid_pipeline.recommenders.reranking import TransitionCounts
    from lgsid_pipeline.stages.generative import floor_models

    catalogue, events = setup.catalogue, setup.catalogue.events
    args = (
        events["user_id"].astype(str).to_numpy(),
        events["item_index"].to_numpy(),
        events["ts"],
        events["trajectory_id"],
        events["split"],
    )
    window = setup.settings.history_window
    protocol = {}
    for split in ("valid", "test"):
        histories, targets = trajectory_last_targets(*args, split, window)
        times = trajectory_last_target_times(*args, split, window)[0]
        protocol[split] = (histories, targets, times)
    if not np.array_equal(protocol["test"][1], np.asarray(setup.splits["test"][1])):
        raise SystemExit("the protocol's test targets differ from the bench's: ranks unpaired")
    return RerankContext(
        near=floor_models(catalogue, setup.splits["train"])["popularity_2km"],
        transitions=TransitionCounts(len(catalogue.item_ids)).fit(setup.splits["train"]),
        lat=catalogue.lat,
        lon=catalogue.lon,
        history_window=window,
        recent_window=setup.settings.max_history,
        protocol=protocol,
        floor_b=setup.floor_b,
    )


def main() -> None:
    isolated_home("lgsid-headroom-")
    from lgsid_pipeline.runner import get_instance, materialize

    began = time.perf_counter()
    register_sthgcn()
    results = materialize([STHGCN], select="group:ingest", instance=get_instance())
    if not all(r.success for r in results):
        raise SystemExit(f"ingest of {STHGCN} failed: {results}")
    setup = city_setup(STHGCN, quick=False, began=began)
    histories, targets = setup.splits["test"]
    out = headroom(histories, np.asarray(targets), setup.floor_b)
    ctx = reranker_context(setup)
    out["history_reranker"] = {
        "history_distance_popularity_transitions": history_reranker(ctx, with_time=False),
        "with_time_of_day": history_reranker(ctx, with_time=True),
    }
    print(out, flush=True)
    config = {
        "city": STHGCN,
        "seeds": SEEDS,
        "candidates": {"own": MAX_OWN, "nearby": MAX_NEARBY, "transitions": MAX_TRANSITIONS},
        "hour_window": HOUR_WINDOW,
        "history_window": setup.settings.history_window,
    }
    write_results("sthgcn_headroom", out, config)


if __name__ == "__main__":
    main()
