"""Preference triples for G-DPO: D_dc (co-visits) and D_gc (geographically constrained)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

TRIPLE_COLUMNS = ("anchor_item_id", "chosen_item_id", "rejected_item_id", "source", "margin")


def _far_items(
    items: pd.DataFrame, anchor_ids: np.ndarray, rng: np.random.Generator, per_anchor: int
) -> pd.DataFrame:
    """Random items of another level-1 area for each anchor (candidate rejected items)."""
    l1 = items.set_index("item_id")["admin_l1_code"].astype("string").fillna("")
    ids = items["item_id"].to_numpy()
    item_l1 = l1.to_numpy()
    rows = []
    for anchor in anchor_ids:
        pool = ids[item_l1 != l1[anchor]]
        if len(pool) == 0:
            pool = ids[ids != anchor]
        for j in rng.choice(pool, size=min(per_anchor, len(pool)), replace=False):
            rows.append((anchor, j))
    return pd.DataFrame(rows, columns=["anchor_item_id", "candidate_item_id"])


def dc_triples(
    pairs: pd.DataFrame, items: pd.DataFrame, max_triples: int, seed: int = 0
) -> pd.DataFrame:
    """D_dc: (a, b co-visited with a, a random item of another level-1 area)."""
    rng = np.random.default_rng(seed)
    if pairs.empty:
        return pd.DataFrame(columns=list(TRIPLE_COLUMNS))
    take = pairs.sort_values(["co_visits", "item_a", "item_b"], ascending=[False, True, True])
    take = take.head(max_triples)
    flip = rng.random(len(take)) < 0.5  # both directions of a pair serve as anchors
    anchor = np.where(flip, take["item_b"], take["item_a"])
    chosen = np.where(flip, take["item_a"], take["item_b"])
    far = _far_items(items, anchor, rng, 1).drop_duplicates("anchor_item_id")
    rejected = pd.Series(far["candidate_item_id"].to_numpy(), index=far["anchor_item_id"])
    return pd.DataFrame(
        {
            "anchor_item_id": anchor,
            "chosen_item_id": chosen,
            "rejected_item_id": rejected.reindex(anchor).to_numpy(),
            "source": "dc",
            "margin": np.nan,
        }
    )


def gc_triples(
    candidates: pd.DataFrame,
    items: pd.DataFrame,
    reward_of: Callable[[pd.DataFrame], np.ndarray],
    seed: int = 0,
    far_fallback: int = 8,
) -> pd.DataFrame:
    """D_gc: per anchor, the near candidate the reward model likes most for the anchor's
    content (related content first) and the far candidate it likes least.

    ``reward_of`` scores rows with ``anchor_item_id`` and ``candidate_item_id`` as
    r(content of anchor, location of candidate).
    """
    rng = np.random.default_rng(seed)
    near = candidates[candidates["side"] == "near"]
    far = candidates[candidates["side"] == "far"][["anchor_item_id", "candidate_item_id"]]
    missing = np.setdiff1d(near["anchor_item_id"].unique(), far["anchor_item_id"].unique())
    if len(missing):
        far = pd.concat([far, _far_items(items, missing, rng, far_fallback)], ignore_index=True)
    near = near[near["anchor_item_id"].isin(far["anchor_item_id"])]
    if near.empty:
        return pd.DataFrame(columns=list(TRIPLE_COLUMNS))
    scored_near = near.assign(reward=reward_of(near))
    scored_far = far.assign(reward=reward_of(far))
    best = (
        scored_near.sort_values(
            ["anchor_item_id", "same_content", "reward"], ascending=[True, False, False]
        )
        .drop_duplicates("anchor_item_id")
        .set_index("anchor_item_id")
    )
    worst = (
        scored_far.sort_values(["anchor_item_id", "reward"])
        .drop_duplicates("anchor_item_id")
        .set_index("anchor_item_id")
    )
    anchors = best.index.intersection(worst.index)
    return pd.DataFrame(
        {
            "anchor_item_id": anchors.to_numpy(),
            "chosen_item_id": best.loc[anchors, "candidate_item_id"].to_numpy(),
            "rejected_item_id": worst.loc[anchors, "candidate_item_id"].to_numpy(),
            "source": "gc",
            "margin": (best.loc[anchors, "reward"] - worst.loc[anchors, "reward"]).to_numpy(),
        }
    )
