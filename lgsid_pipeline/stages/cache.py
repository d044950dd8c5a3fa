"""The cache stage: every user's top-K items, looked up at serving time (``lgsid
recommend``), from the champion generative model with its history-aware ranking, or from
floor (b) when no model has beaten it on validation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from lgsid_pipeline.catalog import generative_model
from lgsid_pipeline.recommenders.config import GenerativeStageConfig
from lgsid_pipeline.recommenders.datasets import split_times_of
from lgsid_pipeline.recommenders.next_item import latest_histories
from lgsid_pipeline.recommenders.serving import FLOOR_SERVED, cache_rows
from lgsid_pipeline.registry import champion_folder, champion_version
from lgsid_pipeline.stages.context import StageContext
from lgsid_pipeline.stages.generative import (
    city_catalogue,
    city_codes,
    floor_models,
    next_item_splits,
    served_ranker,
)
from lgsid_pipeline.stages.outcome import Metadata

CACHE_TABLE = "user_topk_cache"


@dataclass
class CacheOutcome:
    """The per-user top-K table and what produced it."""

    table: pd.DataFrame
    served: str
    users: int
    left_out_checkins: int


def build_topk_cache(
    ctx: StageContext,
    city: str,
    kind: str,
    k: int,
    history_window: int,
    serve_floor: bool,
    t1: pd.Timestamp,
    t2: pd.Timestamp,
) -> CacheOutcome:
    """Every user's top-``k`` items given their latest ``history_window`` check-ins, from
    the champion of ``kind`` with its history-aware ranking, or from floor (b) when there is
    no champion or ``serve_floor`` (the last gate found that no model beats floor (b))."""
    warehouse, home = ctx.warehouse, ctx.home
    catalogue = city_catalogue(warehouse, city)
    name = generative_model(kind, city)
    version = champion_version(name, home)
    use_model = version is not None and not serve_floor
    item_ids = catalogue.item_ids
    if use_model:
        ranker, variant, item_ids, code_strings = served_ranker(
            champion_folder(name, home), catalogue
        )
    index = pd.Series(np.arange(len(item_ids)), index=item_ids)
    events = catalogue.events
    known = events["item_id"].astype(str).isin(index.index)
    events = events[known]  # items newer than the model wait for its retrain
    users, histories = latest_histories(
        events["user_id"].astype(str).to_numpy(),
        index.loc[events["item_id"].astype(str)].to_numpy(),
        events["ts"],
        history_window,
    )
    if use_model:
        items = ranker.recommend(histories, k)
        scores = np.broadcast_to(-np.arange(k, dtype=float), items.shape)
        served = f"{kind}/{variant} v{version} + history"
    else:
        settings = GenerativeStageConfig(history_window=history_window)
        train = next_item_splits(catalogue, t1, t2, settings)["train"]
        items, scores = floor_models(catalogue, train)["user_history_2km"].recommend(histories, k)
        _, code_strings = city_codes(warehouse, city, "lgsid", item_ids)
        served = FLOOR_SERVED
    table = cache_rows(
        city, users, items, np.asarray(item_ids), np.asarray(code_strings), scores, served
    )
    return CacheOutcome(table, served, len(users), int((~known).sum()))


def serve_city(ctx: StageContext, city: str, kind: str, k: int, history_window: int) -> Metadata:
    """Rebuild and publish ``city``'s top-``k`` cache from what the last gate of ``kind``
    chose to serve (the champion, or floor (b)), and say which and why."""
    warehouse, reports = ctx.warehouse, ctx.reports
    gate = (reports.read(reports.recommender(city, kind)) or {}).get("gate", {})
    outcome = build_topk_cache(
        ctx,
        city,
        kind,
        k,
        history_window,
        gate.get("serve") == "floor",
        *split_times_of(warehouse, city),
    )
    warehouse.write_table(CACHE_TABLE, city, outcome.table)
    warehouse.refresh_catalog()
    why = gate.get("reason", "no gate has run")
    ctx.log(f"{city}: cached top-{k} of {outcome.users} users from {outcome.served} ({why})")
    return {
        "dagster/row_count": len(outcome.table),
        "users": outcome.users,
        "k": k,
        "served": outcome.served,
        "why": why,
        "left_out_checkins": outcome.left_out_checkins,
    }
