"""The alignment stage as plain functions over warehouse frames (the assets call these)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lgsid_pipeline.alignment.pairs import dc_triples
from lgsid_pipeline.alignment.reward import RewardHead, score_lists
from lgsid_pipeline.encoder import TextEncoder, item_prompts
from lgsid_pipeline.warehouse import Warehouse

LOCATION_COLUMNS = ["admin_l2_name", "admin_l1_name", "city_name"]


def cross_prompts(
    items: pd.DataFrame, content_ids: pd.Series, location_ids: pd.Series
) -> list[str]:
    """prompt(content of item a, location of item b) for aligned id pairs of one city."""
    by_id = items.set_index("item_id")
    content = by_id.loc[content_ids.to_numpy()].reset_index()
    location = by_id.loc[location_ids.to_numpy(), LOCATION_COLUMNS].reset_index(drop=True)
    return item_prompts(content, location=location)


def encode_unique(
    encoder: TextEncoder, texts: list[str], dtype: str = "auto", progress: bool = False
) -> np.ndarray:
    """Encode each distinct text once and scatter back to the input order."""
    unique, inverse = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
    vectors = encoder.encode(list(unique), dtype=dtype, progress=progress)
    return vectors[inverse]


def reward_dataset(
    encoder: TextEncoder,
    items: pd.DataFrame,
    negatives: pd.DataFrame,
    dtype: str = "auto",
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(embeddings (lists, K+1, dim), soft labels, distances) for one city's negatives."""
    negatives = negatives.sort_values(["anchor_item_id", "slot"])
    slots = int(negatives["slot"].max()) + 1
    n_lists = len(negatives) // slots
    if n_lists * slots != len(negatives):
        raise ValueError("geo negatives are not complete lists of K + 1 slots")
    texts = cross_prompts(items, negatives["anchor_item_id"], negatives["location_item_id"])
    vectors = encode_unique(encoder, texts, dtype=dtype, progress=progress)
    shape = (n_lists, slots)
    return (
        vectors.reshape(*shape, -1),
        negatives["soft_label"].to_numpy().reshape(shape),
        negatives["distance_km"].to_numpy().reshape(shape),
    )


def reward_scorer(
    encoder: TextEncoder, head: RewardHead, items: pd.DataFrame, dtype: str = "auto"
) -> Callable[[pd.DataFrame], np.ndarray]:
    """A function scoring r(content of anchor, location of candidate) for candidate rows."""

    def score(rows: pd.DataFrame) -> np.ndarray:
        if rows.empty:
            return np.zeros(0)
        texts = cross_prompts(items, rows["anchor_item_id"], rows["candidate_item_id"])
        return score_lists(head, encode_unique(encoder, texts, dtype=dtype))

    return score


def triple_texts(
    triples: pd.DataFrame, items: pd.DataFrame
) -> tuple[list[str], list[str], list[str]]:
    """Prompts (each item at its own location) of anchor, chosen and rejected items."""
    by_id = items.set_index("item_id")
    prompt_of = dict(zip(by_id.index, item_prompts(by_id.reset_index()), strict=True))
    return tuple(
        [prompt_of[i] for i in triples[col]]  # type: ignore[return-value]
        for col in ("anchor_item_id", "chosen_item_id", "rejected_item_id")
    )


@dataclass
class GdpoTriples:
    """D_mix of every city as prompts: anchor, chosen and rejected texts, reward margins
    and how many geographic (``gc``) and co-visit (``dc``) triples each city gave."""

    anchors: list[str] = field(default_factory=list)
    chosen: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    margins: list[float] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)


def gdpo_triples(
    warehouse: Warehouse, cities: list[str], max_gc: int, max_dc: int, seed: int = 0
) -> GdpoTriples:
    """The G-DPO training triples: each city's first ``max_gc`` geo pairs and up to
    ``max_dc`` co-visit triples (when the city has co-occurrence pairs)."""
    out = GdpoTriples()
    for city in cities:
        items = warehouse.read_table("items", city)
        gc = warehouse.read_table("geo_pairs", city).head(max_gc)
        dc = pd.DataFrame()
        if warehouse.has_table("cooccurrence_pairs", city):
            dc = dc_triples(
                warehouse.read_table("cooccurrence_pairs", city), items, max_dc, seed=seed
            )
        triples = pd.concat([gc, dc], ignore_index=True)
        anchors, chosen, rejected = triple_texts(triples, items)
        out.anchors += anchors
        out.chosen += chosen
        out.rejected += rejected
        out.margins += triples["margin"].fillna(0.0).astype(float).tolist()
        out.counts[city] = {"gc": len(gc), "dc": len(dc)}
    return out
