"""The alignment stage as plain functions: geo negatives, co-visit pairs, the reward model,
D_gc pairs, the G-DPO aligned encoder and the before/after geography of the embeddings.

Each takes a ``StageContext`` (the warehouse, the report store, the MLflow registry),
writes what the stage owns, and returns a small result; the assets in ``defs/alignment.py``
turn that into Dagster metadata. Torch and the encoder are imported by the functions that
compute.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lgsid_pipeline.alignment.config import GdpoConfig, RewardConfig
from lgsid_pipeline.catalog import (
    ALIGNED_ENCODER,
    ALIGNED_ENCODER_ASSET,
    REWARD_MODEL,
    REWARD_MODEL_ASSET,
)
from lgsid_pipeline.geo.negatives import GeoNegativeConfig, sample_geo_negatives
from lgsid_pipeline.plots import curves_png, distance_histogram_png
from lgsid_pipeline.registry import register_folder
from lgsid_pipeline.reports import GLOBAL
from lgsid_pipeline.stages.context import StageContext
from lgsid_pipeline.stages.outcome import (
    Link,
    Metadata,
    Plot,
)

if TYPE_CHECKING:
    from lgsid_pipeline.alignment.stage import GdpoTriples
    from lgsid_pipeline.encoder.model import TextEncoder


@dataclass
class TableResult:
    """A table a stage wrote for a city, and what to say about it."""

    rows: int
    metrics: dict[str, Any] = field(default_factory=dict)
    plots: dict[str, Plot] = field(default_factory=dict)

    @property
    def png(self) -> bytes | None:
        return next(iter(self.plots.values())).png if self.plots else None

    def metadata(self) -> Metadata:
        return {"dagster/row_count": self.rows, **self.metrics, **self.plots}


@dataclass
class TrainedModel:
    """A model a stage trained and registered, with its training curve."""

    metrics: dict[str, float]
    version: str
    run_url: str
    config: dict[str, Any]
    curve: Plot
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def png(self) -> bytes:
        return self.curve.png

    def metadata(self) -> Metadata:
        return {
            **self.metrics,
            "mlflow_version": self.version,
            "mlflow_run": Link(self.run_url),
            "config": self.config,
            **self.details,
            "training_curve": self.curve,
        }


def geo_negatives(ctx: StageContext, city: str, config: GeoNegativeConfig) -> TableResult:
    """K mismatched locations per anchor with soft labels (density-aware), written."""
    warehouse, log = ctx.warehouse, ctx.log
    sampled = sample_geo_negatives(warehouse.read_table("items", city), config)
    warehouse.write_table("geo_negatives", city, sampled.assign(city=city))
    kinds = sampled[sampled["slot"] > 0].groupby("kind")["distance_km"].median()
    anchors = int(sampled["anchor_item_id"].nunique())
    log(
        f"{city}: {anchors} anchors x {config.k} negatives; median km by kind "
        f"{kinds.round(2).to_dict()}"
    )
    png = distance_histogram_png(
        sampled["distance_km"], sampled["kind"], f"{city}: negative distances"
    )
    return TableResult(
        len(sampled),
        {
            "anchors": anchors,
            "median_km_by_kind": {k: round(float(v), 3) for k, v in kinds.items()},
        },
        {"distance_histogram": Plot(city, "geo_negatives", png)},
    )


def cooccurrence_pairs(
    ctx: StageContext, city: str, quantile: float, min_count: int
) -> TableResult:
    """D_dc: item pairs co-visited by a user on one day, written."""
    warehouse, log = ctx.warehouse, ctx.log
    pairs = warehouse.query(
        "cooccurrence_pairs.sql", {"city": city, "quantile": quantile, "min_count": min_count}
    )
    warehouse.write_table("cooccurrence_pairs", city, pairs)
    threshold = int(pairs["threshold"].iloc[0]) if len(pairs) else 0
    log(f"{city}: {len(pairs)} co-visit pairs (threshold {threshold})")
    return TableResult(len(pairs), {"threshold": threshold})


def train_reward_model(
    ctx: StageContext,
    encoder: TextEncoder,
    config: RewardConfig,
    cities: list[str] | None = None,
    dtype: str = "auto",
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> TrainedModel:
    """The list-wise reward model over the frozen encoder, on the negatives of ``cities``
    (default: every registered city that has them); saved, registered, and summarised in
    the report store."""
    from lgsid_pipeline.alignment.reward import save_reward_model
    from lgsid_pipeline.alignment.reward import train_reward_model as train
    from lgsid_pipeline.alignment.stage import reward_dataset

    warehouse, log, folder = ctx.warehouse, ctx.log, ctx.model_dir(REWARD_MODEL)
    cities = ctx.cities_with("geo_negatives") if cities is None else cities
    if not cities:
        raise RuntimeError("no city has geo_negatives; materialize them first")
    parts = []
    for city in cities:
        started = time.perf_counter()
        parts.append(
            reward_dataset(
                encoder,
                warehouse.read_table("items", city),
                warehouse.read_table("geo_negatives", city),
                dtype=dtype,
                progress=True,
            )
        )
        log(
            f"{city}: encoded {parts[-1][0].shape[0]} lists in {time.perf_counter() - started:.1f}s"
        )
    embeddings, labels, distances = (np.concatenate(p) for p in zip(*parts, strict=True))
    result = train(embeddings, labels, distances, config, on_epoch=on_epoch)
    log(f"reward model held-out: {result.metrics}")
    save_reward_model(
        result.model, folder, config, {"encoder_version": encoder.version, "cities": cities}
    )
    curve = curves_png(result.history, ["train_loss", "holdout_top1"], "epoch", "reward model")
    registered = register_folder(
        REWARD_MODEL,
        folder,
        params={**asdict(config), "cities": ",".join(cities), "encoder_version": encoder.version},
        metrics=result.metrics,
        dagster_run_id=ctx.run_id,
        images={"reward_training.png": curve},
        home=ctx.home,
    )
    ctx.reports.write(
        ctx.reports.global_model(REWARD_MODEL_ASSET),
        {**result.metrics, "version": registered.version, "run_id": registered.run_id},
    )
    return TrainedModel(
        {k: float(v) for k, v in result.metrics.items()},
        registered.version,
        registered.run_url,
        asdict(config),
        Plot(GLOBAL, "reward_training", curve),
        {"cities": cities},
    )


def geo_pairs(
    ctx: StageContext,
    city: str,
    encoder: TextEncoder,
    reward_folder: Path,
    candidates: dict[str, Any],
    seed: int,
    dtype: str = "auto",
) -> TableResult:
    """D_gc: a near item the reward model prefers against a far similar item it rejects,
    written."""
    from lgsid_pipeline.alignment.pairs import gc_triples
    from lgsid_pipeline.alignment.reward import load_reward_model
    from lgsid_pipeline.alignment.stage import reward_scorer

    warehouse, log = ctx.warehouse, ctx.log
    items = warehouse.read_table("items", city)
    found = warehouse.query("geo_pair_candidates.sql", {"city": city, **candidates})
    scorer = reward_scorer(encoder, load_reward_model(reward_folder), items, dtype=dtype)
    triples = gc_triples(found, items, scorer, seed=seed)
    warehouse.write_table("geo_pairs", city, triples.assign(city=city))
    log(f"{city}: {len(triples)} D_gc triples from {len(found)} candidates")
    return TableResult(
        len(triples),
        {
            "candidates": len(found),
            "mean_reward_margin": float(triples["margin"].mean()) if len(triples) else 0.0,
        },
    )


def align_encoder(
    ctx: StageContext,
    encoder: TextEncoder,
    config: GdpoConfig,
    max_gc_triples: int,
    max_dc_triples: int,
    cities: list[str] | None = None,
) -> tuple[list[dict[str, float]], GdpoTriples, list[str]]:
    """Train ``encoder``'s LoRA adapter in place with G-DPO on D_mix of ``cities`` (default:
    every registered city that has D_gc pairs), logging progress with an ETA; returns the
    per-step history, the triples and the cities used."""
    from lgsid_pipeline.alignment.gdpo import train_gdpo
    from lgsid_pipeline.alignment.stage import gdpo_triples

    log = ctx.log
    cities = ctx.cities_with("geo_pairs") if cities is None else cities
    if not cities:
        raise RuntimeError("no city has geo_pairs; materialize them first")
    triples = gdpo_triples(ctx.warehouse, cities, max_gc_triples, max_dc_triples, seed=config.seed)
    log(f"G-DPO (lambda {config.lam}) on {len(triples.anchors)} triples: {triples.counts}")
    started = time.perf_counter()

    def log_step(step: int, parts: dict[str, float]) -> None:
        if step % max(1, config.steps // 10) == 0 or step == config.steps:
            eta = (time.perf_counter() - started) / step * (config.steps - step)
            log(
                f"step {step}/{config.steps} loss {parts['loss']:.4f} dpo {parts['dpo']:.4f} "
                f"sim {parts['sim']:.4f} pref-acc {parts['preference_accuracy']:.2f} "
                f"ETA {eta:.0f}s"
            )

    history = train_gdpo(
        encoder,
        triples.anchors,
        triples.chosen,
        triples.rejected,
        config,
        margins=np.asarray(triples.margins),
        on_step=log_step,
    )
    return history, triples, cities


def train_aligned_encoder(
    ctx: StageContext,
    encoder: TextEncoder,
    config: GdpoConfig,
    max_gc_triples: int,
    max_dc_triples: int,
    cities: list[str] | None = None,
) -> TrainedModel:
    """G-DPO with LoRA on D_mix of ``cities`` (default: every registered city that has
    D_gc pairs); the adapter is saved, registered, and summarised in the report store."""
    folder = ctx.model_dir(ALIGNED_ENCODER)
    started = time.perf_counter()
    history, triples, cities = align_encoder(
        ctx, encoder, config, max_gc_triples, max_dc_triples, cities
    )
    counts = triples.counts
    encoder.save_adapter(folder)
    last = history[-max(1, len(history) // 10) :]
    metrics = {
        k: float(np.mean([h[k] for h in last]))
        for k in ("loss", "dpo", "sim", "preference_accuracy")
    }
    metrics["train_seconds"] = time.perf_counter() - started
    curve = curves_png(history, ["loss", "dpo", "sim", "preference_accuracy"], "step", "G-DPO")
    registered = register_folder(
        ALIGNED_ENCODER,
        folder,
        params={
            **asdict(config),
            "cities": ",".join(cities),
            "base_encoder": encoder.name_or_path,
            "triples": len(triples.anchors),
            "max_dc_triples": max_dc_triples,
            "max_gc_triples": max_gc_triples,
        },
        metrics=metrics,
        dagster_run_id=ctx.run_id,
        tags={"encoder_version": encoder.version},
        images={"gdpo_training.png": curve},
        home=ctx.home,
    )
    ctx.reports.write(
        ctx.reports.global_model(ALIGNED_ENCODER_ASSET),
        {
            **metrics,
            "version": registered.version,
            "run_id": registered.run_id,
            "encoder_version": encoder.version,
            "triples": counts,
        },
    )
    return TrainedModel(
        metrics,
        registered.version,
        registered.run_url,
        asdict(config),
        Plot(GLOBAL, "gdpo_training", curve),
        {"triples": counts, "encoder_version": encoder.version},
    )
