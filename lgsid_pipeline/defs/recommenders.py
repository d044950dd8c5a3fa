"""Discriminative recommenders per city: datasets, the five backbones x four code variants,
and the evaluation report (METHOD section 5)."""

import dagster as dg

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
from lgsid_pipeline.recommenders.config import CtrConfig, DatasetConfig, TrainConfig
from lgsid_pipeline.recommenders.datasets import (
    build_city_ctr_data,
    file_split_times,
    save_ctr_data,
)
from lgsid_pipeline.stages import discriminative as stage
from lgsid_pipeline.stages.evaluation import (
    auc_markdown,
    discriminative_table,
    generative_markdown,
    generative_table,
)

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


CTR_ASSETS = [build_ctr_asset(backbone) for backbone in BACKBONES]


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
        "discriminative": discriminative_table(lgsid.reports, city),
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
        context.log.info(f"{city}: AUC table\n{auc_markdown(table)}")
        metadata["auc_table"] = dg.MetadataValue.md(auc_markdown(table))
        metadata["split"] = dg.MetadataValue.json(table["split"])
    if sections["generative"]:
        metadata["generative_table"] = dg.MetadataValue.md(
            generative_markdown(sections["generative"])
        )
    return dg.MaterializeResult(metadata=metadata)
