"""Generative recommenders per city (TIGER, OneRec-style decoder), the floors they must beat,
and the per-user top-K cache served by `lgsid recommend` (METHOD section 5).

Thin adapters over :mod:`lgsid_pipeline.stages.generative`: a trained model is registered in
MLflow and becomes ``champion`` only through the gate
(:func:`lgsid_pipeline.recommenders.serving.champion_gate`); the cache serves the champion
or, when no model beats floor (b), floor (b) itself.
"""

import dagster as dg

from lgsid_pipeline.catalog import (
    COMPUTE_POOL,
    GENERATIVE_KINDS,
    SEMANTIC_ID_ASSETS,
    SERVED_KIND,
    generative_model,
)
from lgsid_pipeline.defs.resources import (
    LgsidResource,
    city_partitions,
    config_class,
    png_metadata,
    settings_from,
)
from lgsid_pipeline.metrics.intervals import summarize_ranks
from lgsid_pipeline.recommenders.config import GenerativeStageConfig
from lgsid_pipeline.recommenders.datasets import split_times_of
from lgsid_pipeline.stages.generative import (
    build_topk_cache,
    city_catalogue,
    floor_ranks,
    next_item_splits,
    train_and_gate,
)

GenerativeTrainingConfig = config_class(
    "GenerativeTrainingConfig",
    GenerativeStageConfig,
    "Model size, training budget in optimizer steps, evaluation samples (early stopping and "
    "the re-ranker on validation; the test sample is drawn once with `seed` and shared by "
    "every model, variant and floor).",
)


class TopKCacheConfig(dg.Config):
    """How many items each user's cache holds, and how many latest check-ins it reads."""

    k: int = 10
    history_window: int = GenerativeStageConfig.history_window


def build_generative_asset(kind: str) -> dg.AssetsDefinition:
    """TIGER or the OneRec-style decoder for one city, one model per code variant, gated."""

    @dg.asset(
        pool=COMPUTE_POOL,
        name=kind,
        deps=["recommender_datasets", *SEMANTIC_ID_ASSETS],
        partitions_def=city_partitions,
        group_name="recommenders",
        kinds={"pytorch", "mlflow"},
        description=f"{kind} generative next-item model per code variant, with the "
        "history-aware ranking; promoted to champion only if it beats the "
        "champion and floor (b) on validation; Hit/NDCG on the test sample.",
    )
    def _asset(
        context: dg.AssetExecutionContext, config: GenerativeTrainingConfig, lgsid: LgsidResource
    ) -> dg.MaterializeResult:
        city = context.partition_key
        lgsid.limit_threads(context)

        def log_eval(variant: str, entry: dict) -> None:
            context.log.info(
                f"{city} {kind}/{variant} step {entry['step']:.0f}: loss "
                f"{entry['train_loss']:.4f} valid hit@10 "
                f"{entry['valid_hit@10']:.4f} ({entry['seconds']:.0f}s, "
                f"ETA {entry['eta_seconds']:.0f}s)"
            )

        t1, t2 = split_times_of(lgsid.warehouse, city)
        outcome = train_and_gate(
            lgsid.warehouse,
            lgsid.home_path,
            city,
            kind,
            t1,
            t2,
            settings_from(config, GenerativeStageConfig),
            lgsid.model_dir(generative_model(kind, city)),
            dagster_run_id=context.run.run_id,
            on_eval=log_eval,
        )
        decision = outcome.decision
        context.log.info(
            f"{city} {kind}: {decision.reason} ({outcome.champion_note}); "
            f"{'promoted' if decision.promote else 'not promoted'} "
            f"version {outcome.version}"
        )
        lgsid.reports.write(
            lgsid.reports.recommender(city, kind),
            {
                "kind": kind,
                **outcome.report(),
                "split": {"t1": t1.isoformat(), "t2": t2.isoformat()},
            },
        )
        results = outcome.variants
        return dg.MaterializeResult(
            metadata={
                **{f"hit@10_{v}": r["blended"]["hit@10"] for v, r in results.items()},
                **{f"hit@10_{v}_model_only": r["plain"]["hit@10"] for v, r in results.items()},
                "results": dg.MetadataValue.md(_markdown(results)),
                "examples": dg.MetadataValue.json(outcome.sizes),
                "gate": decision.reason,
                "promoted": decision.promote,
                "served_variant": outcome.served_variant,
                "mlflow_version": outcome.version,
                "mlflow_run": dg.MetadataValue.url(outcome.run_url),
                **png_metadata(
                    lgsid.reports,
                    outcome.curves_png,
                    city,
                    f"{kind}_training.png",
                    key="training_curve",
                ),
            }
        )

    return _asset


def _markdown(results: dict[str, dict]) -> str:
    rows = [
        "| variant | ranking | hit@5 | hit@10 (95% CI) | ndcg@10 | train s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for variant, r in results.items():
        for key in ("plain", "blended"):
            m = r[key]
            lo, hi = m["hit@10_ci95"]
            rows.append(
                f"| {variant} | {key} | {m['hit@5']:.4f} | {m['hit@10']:.4f} "
                f"({lo:.3f}-{hi:.3f}) | {m['ndcg@10']:.4f} | "
                f"{r.get('train_seconds', 0):.0f} |"
            )
    return "\n".join(rows)


GENERATIVE_ASSETS = [build_generative_asset(kind) for kind in GENERATIVE_KINDS]


@dg.asset(
    deps=["recommender_datasets"],
    partitions_def=city_partitions,
    group_name="recommenders",
    kinds={"python"},
)
def generative_baseline(
    context: dg.AssetExecutionContext, config: GenerativeTrainingConfig, lgsid: LgsidResource
) -> dg.MaterializeResult:
    """The floors every generative model must beat, on the same examples: (a) training
    popularity within 2 km of the last check-in, (b) the user's own most visited items, then
    list (a)."""
    city = context.partition_key
    settings = settings_from(config, GenerativeStageConfig)
    catalogue = city_catalogue(lgsid.warehouse, city)
    t1, t2 = split_times_of(lgsid.warehouse, city)
    floors = floor_ranks(catalogue, next_item_splits(catalogue, t1, t2, settings))
    metrics = {
        name: {split: summarize_ranks(r) for split, r in ranks.items()}
        for name, ranks in floors.items()
    }
    lgsid.reports.write(
        lgsid.reports.recommender(city, "baseline"), {"kind": "floors", "floors": metrics}
    )
    return dg.MaterializeResult(
        metadata={
            f"{name}.{split}.{key}": float(value)
            for name, by_split in metrics.items()
            for split, m in by_split.items()
            for key, value in m.items()
            if key in ("hit@10", "ndcg@10")
        }
    )


@dg.asset(
    pool=COMPUTE_POOL,
    deps=[SERVED_KIND, *SEMANTIC_ID_ASSETS],
    partitions_def=city_partitions,
    group_name="recommenders",
    kinds={"parquet", "duckdb"},
)
def user_topk_cache(
    context: dg.AssetExecutionContext, config: TopKCacheConfig, lgsid: LgsidResource
) -> dg.MaterializeResult:
    """Every user's top-K items (code, item id, score) given their latest check-ins, from
    the champion TIGER model with its history-aware ranking, or from floor (b) when no model
    has beaten it on validation: serving is a lookup (Semantic Convergence)."""
    city = context.partition_key
    lgsid.limit_threads(context)
    gate = (lgsid.reports.read(lgsid.reports.recommender(city, SERVED_KIND)) or {}).get("gate", {})
    outcome = build_topk_cache(
        lgsid.warehouse,
        lgsid.home_path,
        city,
        SERVED_KIND,
        config.k,
        config.history_window,
        gate.get("serve") == "floor",
        *split_times_of(lgsid.warehouse, city),
    )
    lgsid.warehouse.write_table("user_topk_cache", city, outcome.table)
    lgsid.warehouse.refresh_catalog()
    why = gate.get("reason", "no gate has run")
    context.log.info(
        f"{city}: cached top-{config.k} of {outcome.users} users from {outcome.served} ({why})"
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(outcome.table),
            "users": outcome.users,
            "k": config.k,
            "served": outcome.served,
            "why": why,
            "left_out_checkins": outcome.left_out_checkins,
        }
    )
