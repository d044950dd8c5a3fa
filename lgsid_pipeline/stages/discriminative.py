"""The discriminative stage of one city as plain functions: a code variant's features and
its models over several seeds, summarized with an AUC interval (the CTR assets and the
benchmark's ablations call these)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from lgsid_pipeline.catalog import CTR_VARIANTS, ctr_model
from lgsid_pipeline.metrics.intervals import summarize_auc
from lgsid_pipeline.metrics.ranking import logloss
from lgsid_pipeline.plots import variant_curves_png
from lgsid_pipeline.recommenders.config import CtrConfig, DatasetConfig, TrainConfig
from lgsid_pipeline.recommenders.datasets import (
    CityCtrData,
    build_city_ctr_data,
    file_split_times,
    load_ctr_data,
    save_ctr_data,
)
from lgsid_pipeline.registry import register_folder
from lgsid_pipeline.stages.context import StageContext
from lgsid_pipeline.stages.outcome import Link, Markdown, Metadata, Plot
from lgsid_pipeline.tokenizer import level_columns

if TYPE_CHECKING:  # torch is imported by the steps that train
    from lgsid_pipeline.recommenders.training import TrainResult
from lgsid_pipeline.warehouse import Warehouse

NO_CODES = "none"  # the variant with item ids only


def variant_codes(
    warehouse: Warehouse, city: str, variant: str, data: CityCtrData
) -> tuple[np.ndarray, list[int]]:
    """The code matrix of ``data``'s items from the ``semantic_ids`` part ``variant`` (none
    for :data:`NO_CODES`) and the codebook size of each level."""
    if variant == NO_CODES:
        return data.code_matrix(None, []), []
    table = warehouse.read_table("semantic_ids", city, variant)
    levels = level_columns(sum(c.startswith("level_") for c in table.columns))
    sizes = [int(table[c].max()) + 1 for c in levels]
    return data.code_matrix(table, levels), sizes


def variant_results(
    labels: np.ndarray, probs: np.ndarray, runs: list[tuple[TrainResult, float]]
) -> dict:
    """One variant's figures from its seeds' test probabilities ``probs`` (n_seeds, n) and
    (trained model, train seconds) per seed: the seed means of test AUC, log-loss and valid
    AUC, ``auc_ci95``, ``auc_seeds``, ``seeds``, ``interval``, the first seed's best epoch,
    and train seconds per model (the mean over seeds) and in all."""
    if len(runs) != len(probs):
        raise ValueError(f"{len(runs)} runs but test probabilities of {len(probs)} seeds")
    summary = summarize_auc(labels, probs)
    seconds = [s for _, s in runs]
    return {
        **summary,
        "logloss": float(np.mean([logloss(labels, p) for p in probs])),
        "valid_auc": float(np.mean([r.best_valid_auc for r, _ in runs])),
        "best_epoch": runs[0][0].best_epoch,
        "train_seconds": float(np.mean(seconds)),
        "train_seconds_total": float(np.sum(seconds)),
    }


def train_variant_seeds(
    data: CityCtrData,
    codes: np.ndarray,
    sizes: list[int],
    backbone: str,
    train_config: TrainConfig,
    seeds: Sequence[int],
    dim: int,
    top_k: int,
    on_epoch: Callable[[int, dict], None] | None = None,
) -> tuple[dict, list[tuple[TrainResult, float]]]:
    """Train ``backbone`` with ``codes`` once per seed on the same data; returns
    :func:`variant_results` on the test period and (model, train seconds) per seed.
    ``on_epoch(seed, entry)`` sees each epoch."""
    from lgsid_pipeline.recommenders.training import predict_ctr, train_ctr

    splits = data.with_codes(codes)
    runs: list[tuple[TrainResult, float]] = []
    probs = []
    for seed in seeds:
        model_config = CtrConfig(
            n_users=data.n_users,
            n_items=max(data.n_items, 1),
            n_categories=data.n_categories,
            codebook_sizes=sizes,
            backbone=backbone,
            dim=dim,
            top_k=top_k,
            seed=seed,
        )
        started = time.perf_counter()
        result = train_ctr(
            model_config,
            splits["train"],
            splits["valid"],
            replace(train_config, seed=seed),
            on_epoch=(lambda e, s=seed: on_epoch(s, e)) if on_epoch else None,
        )
        runs.append((result, time.perf_counter() - started))
        probs.append(predict_ctr(result.model, splits["test"]))
    labels = splits["test"].label.cpu().numpy()
    return variant_results(labels, np.stack(probs), runs), runs


@dataclass
class BackboneResult:
    """One backbone's models of a city (a model per code variant, several seeds each)."""

    results: dict[str, dict]  # variant -> test AUC (seed mean), interval, logloss, ...
    mlflow_version: str
    run_url: str
    png: bytes
    city: str = ""
    backbone: str = ""
    seeds: int = 1

    def metadata(self) -> Metadata:
        return {
            **{f"auc_{v}": figures["auc"] for v, figures in self.results.items()},
            **{f"auc_ci95_{v}": list(figures["auc_ci95"]) for v, figures in self.results.items()},
            "seeds": self.seeds,
            "results": Markdown(variants_markdown(self.results)),
            "mlflow_version": self.mlflow_version,
            "mlflow_run": Link(self.run_url),
            "training_curve": Plot(self.city, f"{self.backbone}_training.png", self.png),
        }


def train_backbone(
    ctx: StageContext,
    city: str,
    backbone: str,
    variants: Sequence[str],
    train_config: TrainConfig,
    seeds: int,
    dim: int,
    top_k: int,
) -> BackboneResult:
    """Train ``backbone`` on the city's CTR samples for every code variant and ``seeds``
    seeds (``train_config.seed``, +1, ...); save and register the first seed's models and
    write the backbone's report."""
    from lgsid_pipeline.recommenders.training import save_ctr_model

    warehouse, reports, log = ctx.warehouse, ctx.reports, ctx.log
    folder = ctx.model_dir(ctr_model(backbone, city))
    unknown = sorted(set(variants) - set(CTR_VARIANTS))
    if unknown:
        raise ValueError(f"unknown variants {unknown}; choose from {CTR_VARIANTS}")
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    data = load_ctr_data(warehouse, city)
    results: dict[str, dict] = {}
    curves = []
    for variant in variants:
        codes, sizes = variant_codes(warehouse, city, variant, data)

        def log_epoch(seed: int, entry: dict, variant: str = variant) -> None:
            tag = f"{backbone}/{variant}" + (f" seed {seed}" if seeds > 1 else "")
            log(
                f"{city} {tag} epoch {entry['epoch']:.0f}: loss {entry['train_loss']:.4f} "
                f"valid AUC {entry['valid_auc']:.4f} ({entry['seconds']:.0f}s)"
            )

        results[variant], runs = train_variant_seeds(
            data,
            codes,
            sizes,
            backbone,
            train_config,
            range(train_config.seed, train_config.seed + seeds),
            dim,
            top_k,
            on_epoch=log_epoch,
        )
        # the first seed's model is the one registered
        save_ctr_model(runs[0][0], folder / variant, extra={"city": city, "variant": variant})
        curves += [{**h, "variant": variant} for h in runs[0][0].history]
    png = variant_curves_png(curves, "epoch", "valid_auc", f"{city}: {backbone}")
    registered = register_folder(
        ctr_model(backbone, city),
        folder,
        params={
            "backbone": backbone,
            "city": city,
            "variants": ",".join(variants),
            **asdict(train_config),
            "dim": dim,
            "top_k": top_k,
            "seeds": seeds,
        },
        metrics=_mlflow_metrics(results),
        dagster_run_id=ctx.run_id,
        tags={"city": city},
        images={"training.png": png},
        home=ctx.home,
    )
    reports.write(
        reports.recommender(city, backbone),
        {
            "backbone": backbone,
            "variants": results,
            "seeds": seeds,
            "mlflow_version": registered.version,
            "split": {"t1": data.t1.isoformat(), "t2": data.t2.isoformat()},
        },
    )
    return BackboneResult(
        results, registered.version, registered.run_url, png, city, backbone, seeds
    )


def _mlflow_metrics(results: dict[str, dict]) -> dict[str, float]:
    """The numeric figures of each variant, the interval as ``auc_ci95_lo`` / ``_hi``."""
    metrics = {}
    for v, figures in results.items():
        for k, x in figures.items():
            if isinstance(x, int | float) and not isinstance(x, bool):
                metrics[f"{v}.{k}"] = float(x)
        metrics[f"{v}.auc_ci95_lo"], metrics[f"{v}.auc_ci95_hi"] = map(float, figures["auc_ci95"])
    return metrics


def variants_markdown(results: dict[str, dict]) -> str:
    rows = [
        "| variant | test AUC | 95% CI | seeds | test logloss | valid AUC | best epoch | train s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows += [
        f"| {v} | {r['auc']:.4f} | [{r['auc_ci95'][0]:.4f}, {r['auc_ci95'][1]:.4f}] | "
        f"{r['seeds']} | {r['logloss']:.4f} | {r['valid_auc']:.4f} | {r['best_epoch']} | "
        f"{r['train_seconds']:.0f} |"
        for v, r in results.items()
    ]
    return "\n".join(rows)


def build_datasets(ctx: StageContext, city: str, config: DatasetConfig) -> Metadata:
    """Write the city's train/validation/test CTR samples (split at absolute times: the
    source's own files, else ``config.t1``/``t2``, else quantiles) and describe them."""
    warehouse = ctx.warehouse
    interactions = warehouse.read_table("interactions", city)
    split_from = (
        "source files"
        if file_split_times(interactions) is not None
        else ("quantiles", "config and quantiles", "config")[bool(config.t1) + bool(config.t2)]
    )
    data = build_city_ctr_data(warehouse.read_table("items", city), interactions, config)
    save_ctr_data(warehouse, city, data)
    warehouse.refresh_catalog()
    description = data.describe()
    samples = [description[f"{s}_samples"] for s in ("train", "valid", "test")]
    ctx.log(
        f"{city}: split at {description['t1']} / {description['t2']} (from {split_from}); "
        f"samples {samples}"
    )
    return {
        "t1": description["t1"],
        "t2": description["t2"],
        "split_from": split_from,
        **{k: v for k, v in description.items() if isinstance(v, int)},
        "users": data.n_users,
        "items_in_training": data.n_items,
    }
