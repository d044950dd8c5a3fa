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
  places it finds.
"""

from __future__ import annotations

import time

import numpy as np
from common import isolated_home, write_results
from generative import STHGCN, city_setup, register_sthgcn

INTERVAL_RESAMPLES = 2000


def acc(ranks: np.ndarray, k: int) -> float:
    return float(np.mean((ranks >= 0) & (ranks < k)))


def bootstrap_ci(hits: np.ndarray, seed: int = 0) -> list[float]:
    """95% percentile interval of the mean of ``hits`` over resampled examples."""
    rng = np.random.default_rng(seed)
    means = hits[rng.integers(0, len(hits), (INTERVAL_RESAMPLES, len(hits)))].mean(axis=1)
    return [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))]


def headroom(histories, targets: np.ndarray, floor_ranks: np.ndarray) -> dict:
    """The counts of the module docstring from the test histories (-1 padded), targets and
    floor (b)'s 0-based target ranks (-1 = not in its list)."""
    repeat = np.array(
        [bool((np.asarray(h) == t).any()) for h, t in zip(histories, targets, strict=True)]
    )
    hits10 = (floor_ranks >= 0) & (floor_ranks < 10)
    floor_ci = bootstrap_ci(hits10.astype(float))
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
    print(out)
    write_results("sthgcn_headroom", out, {"city": STHGCN, "resamples": INTERVAL_RESAMPLES})


if __name__ == "__main__":
    main()
