"""Discriminative recommenders per city: datasets, the five backbones x four code variants,
and the evaluation report (METHOD section 5)."""

import dagster as dg
import pandas as pd

from lgsid_pipeline.catalog import (
    BACKBONES,
    COMPUTE_POOL,
    CTR_VARIANTS,
    GENERATIVE_KINDS,
    SEMANTIC_ID_ASSETS,
    ctr_model,
)
from lgsid_pipeline.defs.resources import (
    LgsidResource,
    city_partitions,
    config_class,
    png_metadata,
    settings_from,
)
from lgsid_pipeline.plots import curves_png
from lgsid_pipeline.recommenders.config import CtrConfig, DatasetConfig, TrainConfig
from lgsid_pipeline.recommenders.datasets import (
    build_city_ctr_data,
    file_split_times,
    save_ctr_data,
)
from lgsid_pipeline.stages import discriminative as stage
from lgsid_pipeline.stages.generative import generative_markdown, generative_table

RecommenderDatasetsConfig = config_class(
    "RecommenderDatasetsConfig",
    DatasetConfig,
    "Time-based split (t1/t2 as ISO times, empty: quantiles q1/q2; a source with its own "
    "train/valid/test files sets both), negatives, sequences.",
)


CtrTrainingConfig = config_class(
    "CtrTrainingConfig",
    TrainConfig,
    "Training of one backbone for every code variant (early stopping on validation AUC). "
    "`seeds` models per variant, with seeds `seed, seed + 1, ...` on the same data: the "
    "reported test AUC is their mean, with a 95% interval from a joint bootstrap over seeds "
    "and test examples (one seed: over test examples); the first seed's model is registered.",
    variants=(list[str], list(CTR_VARIANTS)),
    dim=(int, CtrConfig.dim),
    top_k=(int, CtrConfig.top_k),
    seeds=(int, 1),
)


@dg.asset(
    deps=["interactions", "items", *SEMANTIC_ID_ASSETS],
    partitions_def=city_partitions,
    group_name="recommenders",
    kinds={"parquet"},
)
def recommender_datasets(
    context: dg.AssetExecutionContext, config: RecommenderDatasetsConfig, lgsid: LgsidResource
) -> dg.MaterializeResult:
    """Train/validation/test CTR samples split at absolute times, with near and random
    negatives and behaviour sequences (codes are joined at training time)."""
    city = context.partition_key
    warehouse = lgsid.warehouse
    interactions = warehouse.read_table("interactions", city)
    split_from = (
        "source files"
        if file_split_times(interactions) is not None
        else ("quantiles", "config and quantiles", "config")[bool(config.t1) + bool(config.t2)]
    )
    data = build_city_ctr_data(
        warehouse.read_table("items", city), interactions, DatasetConfig(**config.model_dump())
    )
    save_ctr_data(warehouse, city, data)
    warehouse.refresh_catalog()
    description = data.describe()
    context.log.info(
        f"{city}: split at {description['t1']} / {description['t2']} (from "
        f"{split_from}); samples "
        f"{[description[f'{s}_samples'] for s in ('train', 'valid', 'test')]}"
    )
    return dg.MaterializeResult(
        metadata={
            "t1": description["t1"],
            "t2": description["t2"],
            "split_from": split_from,
            **{k: v for k, v in description.items() if isinstance(v, int)},
            "users": data.n_users,
            "items_in_training": data.n_items,
        }
    )


def build_ctr_asset(backbone: str) -> dg.AssetsDefinition:
    """One backbone's asset: a model per code variant, registered in MLflow per city."""

    @dg.asset(
        pool=COMPUTE_POOL,
        name=backbone,
        deps=["recommender_datasets", *SEMANTIC_ID_ASSETS],
        partitions_def=city_partitions,
        group_name="recommenders",
        kinds={"pytorch", "mlflow"},
        description=f"{backbone.upper()} CTR model with item ids only and with each "
        "tokenizer's semantic IDs as extra features; test AUC/logloss.",
    )
    def _asset(
        context: dg.AssetExecutionContext, config: CtrTrainingConfig, lgsid: LgsidResource
    ) -> dg.MaterializeResult:
        lgsid.limit_threads(context)
        city = context.partition_key
        trained = stage.train_backbone(
            lgsid.warehouse,
            lgsid.reports,
            lgsid.home_path,
            city,
            backbone,
            config.variants,
            settings_from(config, TrainConfig),
            config.seeds,
            config.dim,
            config.top_k,
            lgsid.model_dir(ctr_model(backbone, city)),
            context.run.run_id,
            log=context.log.info,
        )
        results = trained.results
        return dg.MaterializeResult(
            metadata={
                **{f"auc_{v}": figures["auc"] for v, figures in results.items()},
                **{
                    f"auc_ci95_{v}": dg.MetadataValue.json(figures["auc_ci95"])
                    for v, figures in results.items()
                },
                "seeds": config.seeds,
                "results": dg.MetadataValue.md(stage.variants_markdown(results)),
                "mlflow_version": trained.mlflow_version,
                "mlflow_run": dg.MetadataValue.url(trained.run_url),
                **png_metadata(
                    lgsid.reports,
                    trained.png,
                    city,
                    f"{backbone}_training.png",
                    key="training_curve",
                ),
            }
        )

    return _asset


def _mlflow_metrics(results: dict[str, dict]) -> dict[str, float]:
    """The numeric figures of each variant, the interval as ``auc_ci95_lo`` / ``_hi``."""
    metrics = {}
    for v, figures in results.items():
        for k, x in figures.items():
            if isinstance(x, int | float) and not isinstance(x, bool):
                metrics[f"{v}.{k}"] = float(x)
        metrics[f"{v}.auc_ci95_lo"], metrics[f"{v}.auc_ci95_hi"] = map(float, figures["auc_ci95"])
    return metrics


def _variants_markdown(results: dict[str, dict]) -> str:
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


def _variant_curves_png(history: list[dict], title: str) -> bytes:
    frame = pd.DataFrame(history)
    rows = []
    for epoch, group in frame.groupby("epoch"):
        rows.append(
            {
                "epoch": epoch,
                **{
                    f"valid_auc_{v}": a
                    for v, a in zip(group["variant"], group["valid_auc"], strict=True)
                },
            }
        )
    keys = [f"valid_auc_{v}" for v in frame["variant"].unique()]
    return curves_png(rows, keys, "epoch", title)


CTR_ASSETS = [build_ctr_asset(backbone) for backbone in BACKBONES]


def discriminative_table(lgsid: LgsidResource, city: str) -> dict | None:
    """The backbone x variant AUC table of a city from the per-backbone reports: ``auc``
    (seed means), ``auc_ci95`` (``[lo, hi]``, None in reports from before intervals),
    ``logloss``, per backbone ``seeds``, ``interval`` and ``train_seconds`` (the variants'
    train seconds per model, summed)."""
    reports = {b: lgsid.reports.read(lgsid.reports.recommender(city, b)) for b in BACKBONES}
    reports = {b: r for b, r in reports.items() if r}
    if not reports:
        return None
    split = next(iter(reports.values()))["split"]
    return {
        "split": split,
        "auc": {b: {v: r["variants"][v]["auc"] for v in r["variants"]} for b, r in reports.items()},
        "auc_ci95": {
            b: {v: r["variants"][v].get("auc_ci95") for v in r["variants"]}
            for b, r in reports.items()
        },
        "logloss": {
            b: {v: r["variants"][v]["logloss"] for v in r["variants"]} for b, r in reports.items()
        },
        "seeds": {b: int(r.get("seeds", 1)) for b, r in reports.items()},
        "interval": {
            b: next(iter(r["variants"].values())).get("interval") for b, r in reports.items()
        },
        "train_seconds": {
            b: float(sum(v["train_seconds"] for v in r["variants"].values()))
            for b, r in reports.items()
        },
    }


def auc_markdown(table: dict) -> str:
    """backbone x variant test AUC with its 95% interval, best variant of each row in bold,
    and the number of seeds averaged per backbone."""
    variants = [v for v in CTR_VARIANTS if any(v in row for row in table["auc"].values())]
    intervals = table.get("auc_ci95", {})
    seeds = table.get("seeds", {})
    rows = [
        "| backbone | " + " | ".join(f"{v} AUC [95% CI]" for v in variants) + " | seeds |",
        "|---|" + "---:|" * (len(variants) + 1),
    ]
    for backbone, row in table["auc"].items():
        best = max(row.values())
        cells = []
        for v in variants:
            if v not in row:
                cells.append("-")
                continue
            cell = f"**{row[v]:.4f}**" if row[v] == best else f"{row[v]:.4f}"
            ci = intervals.get(backbone, {}).get(v)
            cells.append(cell + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else ""))
        rows.append(f"| {backbone} | " + " | ".join(cells) + f" | {seeds.get(backbone, 1)} |")
    return "\n".join(rows)


@dg.asset(
    deps=[*BACKBONES, *GENERATIVE_KINDS, "generative_baseline"],
    partitions_def=city_partitions,
    group_name="recommenders",
    kinds={"json"},
)
def evaluation_report(
    context: dg.AssetExecutionContext, lgsid: LgsidResource
) -> dg.MaterializeResult:
    """The city's results (``reports/<city>.json``): the backbone x variant AUC table and
    the generative Hit/NDCG table, whichever models have been trained."""
    city = context.partition_key
    sections = {
        "discriminative": stage.discriminative_table(lgsid.reports, city),
        "generative": generative_table(lgsid.reports, city),
    }
    if not any(sections.values()):
        raise RuntimeError(f"no trained recommenders for {city!r}; materialize them first")
    path = lgsid.reports.city_summary(city)
    report = lgsid.reports.read(path) or {}
    report.update({k: v for k, v in sections.items() if v})
    lgsid.reports.write(path, report)
    metadata: dict = {"report_path": dg.MetadataValue.path(str(path))}
    if sections["discriminative"]:
        table = sections["discriminative"]
        context.log.info(f"{city}: AUC table\n{stage.auc_markdown(table)}")
        metadata["auc_table"] = dg.MetadataValue.md(stage.auc_markdown(table))
        metadata["split"] = dg.MetadataValue.json(table["split"])
    if sections["generative"]:
        metadata["generative_table"] = dg.MetadataValue.md(
            generative_markdown(sections["generative"])
        )
    return dg.MaterializeResult(metadata=metadata)
