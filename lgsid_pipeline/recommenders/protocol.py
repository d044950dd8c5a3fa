"""The STHGCN evaluation protocol on a source's own train/valid/test files.

STHGCN (Yan et al., SIGIR 2023), and LLM4POI and later papers after it, evaluate GETNext's
Foursquare New York split with one target per trajectory: the last check-in of each
trajectory of the validation or test file, kept when its user and its POI were seen in
training; the candidates are all POIs. The rules below are those of STHGCN's preprocessing
(``preprocess_nyc``, ``ignore_first``, ``only_keep_last``, ``remove_unseen_user_poi``):

* check-ins are ordered by time, ties in input order; a trajectory is one user's rows with
  one ``trajectory_id`` across all three files;
* a target is the last check-in of a trajectory of at least two check-ins, when that
  check-in is in the evaluated split (a trajectory that runs on into the next file has its
  target there);
* "seen in training" means in a training row that is not the first of its trajectory (the
  rows STHGCN trains on), so a POI seen only as a trajectory's first check-in is unseen.

STHGCN reports 1,400 validation and 1,347 test targets on the published files; with the
reconstructed training file of ``shared/data`` these rules give 1,399 / 1,348. The history
is every check-in of the user strictly before the target in time, across all files.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

EVAL_SPLITS: tuple[str, ...] = ("valid", "test")


def _times(timestamps: Any) -> np.ndarray:
    """Comparable times: numbers as they are, anything else as UTC nanoseconds."""
    raw = np.asarray(timestamps)
    if raw.dtype.kind in "iuf":
        times = raw.astype(np.float64)
        if np.isnan(times).any():
            raise ValueError("timestamps contain NaN")
        return times
    parsed = pd.DatetimeIndex(pd.to_datetime(pd.Series(raw), utc=True))
    if parsed.isna().any():
        raise ValueError("timestamps contain missing values")
    return parsed.as_unit("ns").asi8.astype(np.float64)


def trajectory_last_targets(
    user_ids: Any,
    item_idx: Any,
    timestamps: Any,
    trajectory_ids: Any,
    splits: Any,
    split: str = "test",
    max_history: int = 20,
) -> tuple[np.ndarray, np.ndarray]:
    """STHGCN's targets of ``split`` (``valid`` or ``test``) and their histories.

    Returns ``(histories (S, max_history) int64, targets (S,) int64)`` of item indices, the
    format of ``build_next_item_examples``: each history holds the user's last
    ``max_history`` check-ins strictly before the target, oldest first, left-padded with -1.
    Targets come by user (in order of first appearance), then time. ``splits`` holds
    ``train``/``valid``/``test`` per check-in; a row without a trajectory id or split is
    history only.
    """
    frame, chosen, positions = _trajectory_targets(
        user_ids, item_idx, timestamps, trajectory_ids, splits, split, max_history
    )
    timeline_items = frame["item"].to_numpy(np.int64)
    histories = np.where(positions >= 0, timeline_items[np.clip(positions, 0, None)], -1)
    return histories.astype(np.int64), timeline_items[chosen]


def trajectory_last_target_times(
    user_ids: Any,
    item_idx: Any,
    timestamps: Any,
    trajectory_ids: Any,
    splits: Any,
    split: str = "test",
    max_history: int = 20,
) -> tuple[np.ndarray, np.ndarray]:
    """The times (ns since the epoch, UTC) of what ``trajectory_last_targets`` returns, row
    for row: ``(history times (S, max_history), NaN for padding; target times (S,))``."""
    frame, chosen, positions = _trajectory_targets(
        user_ids, item_idx, timestamps, trajectory_ids, splits, split, max_history
    )
    times = frame["time"].to_numpy(np.float64)
    return np.where(positions >= 0, times[np.clip(positions, 0, None)], np.nan), times[chosen]


def _trajectory_targets(
    user_ids: Any,
    item_idx: Any,
    timestamps: Any,
    trajectory_ids: Any,
    splits: Any,
    split: str,
    max_history: int,
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The check-ins on the users' timelines, the rows of ``split``'s targets, and each
    one's history rows (S, max_history), -1 before the user's first check-in."""
    if split not in EVAL_SPLITS:
        raise ValueError(f"split must be one of {EVAL_SPLITS}, got {split!r}")
    if max_history < 1:
        raise ValueError(f"max_history must be >= 1, got {max_history}")
    users, _ = pd.factorize(pd.Series(np.asarray(user_ids, dtype=object)))
    items = np.asarray(item_idx)
    times = _times(timestamps)
    trajectories = np.asarray(trajectory_ids, dtype=object)
    labels = np.asarray(splits, dtype=object)
    if len({len(users), len(items), len(times), len(trajectories), len(labels)}) > 1:
        raise ValueError(
            "user_ids, item_idx, timestamps, trajectory_ids and splits must have "
            "one value per check-in"
        )
    if (users < 0).any():
        raise ValueError("user_ids contain missing values")
    if len(items) and (items.dtype.kind not in "iu" or items.min() < 0):
        raise ValueError("item_idx must be non-negative integers")
    frame = pd.DataFrame(
        {"user": users, "item": items, "time": times, "trajectory": trajectories, "split": labels}
    )

    # The user's timeline: by user, then time, then input order.
    timeline = np.lexsort((np.arange(len(frame)), times, users))
    frame = frame.iloc[timeline].reset_index(drop=True)
    trips = frame[frame["trajectory"].notna()].groupby(["user", "trajectory"], sort=False)
    rank = trips.cumcount().reindex(frame.index)
    size = trips["time"].transform("size").reindex(frame.index)
    first = rank.eq(0) | rank.isna()
    last = rank.eq(size - 1) & size.ge(2)
    seen = frame[frame["split"].eq("train") & ~first]
    chosen = np.flatnonzero(
        (
            last
            & frame["split"].eq(split)
            & frame["user"].isin(set(seen["user"]))
            & frame["item"].isin(set(seen["item"]))
        ).to_numpy()
    )

    # History window: the user's rows before the first row at the target's time.
    _, time_rank = np.unique(frame["time"].to_numpy(), return_inverse=True)
    stride = int(time_rank.max(initial=0)) + 1
    key = frame["user"].to_numpy(np.int64) * stride + time_rank  # sorted, as the timeline is
    end = np.searchsorted(key, key[chosen], side="left")
    start = np.searchsorted(key, frame["user"].to_numpy(np.int64)[chosen] * stride, side="left")
    positions = end[:, None] - max_history + np.arange(max_history)[None, :]
    return frame, chosen, np.where(positions >= start[:, None], positions, -1)
