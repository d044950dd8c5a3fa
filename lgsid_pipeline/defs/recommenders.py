"""Discriminative recommenders per city: datasets, the five backbones x four code variants,
and the evaluation report (METHOD section 5)."""

import dagster as dg

from lgsid_pipeline.catalog import BACKBONES, CTR_VARIANTS, GENERATIVE_KINDS, SEMANTIC_ID_ASSETS
from lgsid_pipeline.defs.resources import WorkspaceResource as Workspace
from lgsid_pipeline.defs.resources import city_asset, config_class, materialized
from lgsid_pipeline.recommenders.config import CtrConfig, DatasetConfig, TrainConfig
from lgsid_pipeline.stages import discriminative as stage
from lgsid_pipeline.stages.evaluation import write_city_report

Context = dg.AssetExecutionContext
RecommenderDatasetsConfig = config_class("RecommenderDatasetsConfig", DatasetConfig)
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


@city_asset("recommenders", {"parquet"}, ["interactions", "items", *SEMANTIC_ID_ASSETS])
def recommender_datasets(context: Context, config: RecommenderDatasetsConfig, workspace: Workspace):
    """Train/validation/test CTR samples split at absolute times, with near and random
    negatives and behaviour sequences (codes are joined at training time)."""
    ctx = workspace.stage_context(context)
    return materialized(
        workspace, stage.build_datasets(ctx, context.partition_key, config.settings())
    )


def build_ctr_asset(backbone: str) -> dg.AssetsDefinition:
    """One backbone's asset: a model per code variant, registered in MLflow per city."""

    @city_asset(
        "recommenders",
        {"pytorch", "mlflow"},
        ["recommender_datasets", *SEMANTIC_ID_ASSETS],
        compute=True,
        name=backbone,
        description=f"{backbone.upper()} CTR model with item ids only and with each "
        "tokenizer's semantic IDs as extra features; test AUC/logloss.",
    )
    def _asset(context: Context, config: CtrTrainingConfig, workspace: Workspace):
        trained = stage.train_backbone(
            workspace.stage_context(context, compute=True),
            context.partition_key,
            backbone,
            config.variants,
            config.settings(),
            config.seeds,
            config.dim,
            config.top_k,
        )
        return materialized(workspace, trained.metadata())

    return _asset


CTR_ASSETS = [build_ctr_asset(backbone) for backbone in BACKBONES]


@city_asset("recommenders", {"json"}, [*BACKBONES, *GENERATIVE_KINDS, "generative_baseline"])
def evaluation_report(context: Context, workspace: Workspace):
    """The city's results (``reports/<city>.json``): the backbone x variant AUC table and
    the generative Hit/NDCG table, whichever models have been trained."""
    report = write_city_report(workspace.stage_context(context), context.partition_key)
    return materialized(workspace, report)
