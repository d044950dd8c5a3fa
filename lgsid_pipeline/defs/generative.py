"""Generative recommenders per city (TIGER, OneRec-style decoder), the floors they must beat,
and the per-user top-K cache served by `lgsid recommend` (METHOD section 5). A trained model
becomes ``champion`` only through the gate (``recommenders.serving.champion_gate``)."""

import dagster as dg

from lgsid_pipeline.catalog import GENERATIVE_KINDS, SEMANTIC_ID_ASSETS, SERVED_KIND
from lgsid_pipeline.defs.resources import WorkspaceResource as Workspace
from lgsid_pipeline.defs.resources import city_asset, config_class, materialized
from lgsid_pipeline.recommenders.config import GenerativeStageConfig, TopKCacheSettings
from lgsid_pipeline.stages.cache import serve_city
from lgsid_pipeline.stages.evaluation import score_floors
from lgsid_pipeline.stages.generative import train_city_generative

Context = dg.AssetExecutionContext
GenerativeTrainingConfig = config_class(
    "GenerativeTrainingConfig",
    GenerativeStageConfig,
    "Model size, training budget in optimizer steps, evaluation samples (early stopping and "
    "the re-ranker on validation; the test sample is drawn once with `seed` and shared by "
    "every model, variant and floor).",
)
TopKCacheConfig = config_class("TopKCacheConfig", TopKCacheSettings)


def build_generative_asset(kind: str) -> dg.AssetsDefinition:
    """TIGER or the OneRec-style decoder for one city, one model per code variant, gated."""

    @city_asset(
        "recommenders",
        {"pytorch", "mlflow"},
        ["recommender_datasets", *SEMANTIC_ID_ASSETS],
        compute=True,
        name=kind,
        description=f"{kind} generative next-item model per code variant, with the "
        "history-aware ranking; promoted to champion only if it beats the "
        "champion and floor (b) on validation; Hit/NDCG on the test sample.",
    )
    def _asset(context: Context, config: GenerativeTrainingConfig, workspace: Workspace):
        city, ctx = context.partition_key, workspace.stage_context(context, compute=True)
        outcome = train_city_generative(ctx, city, kind, config.settings())
        return materialized(workspace, outcome.metadata(city, kind))

    return _asset


GENERATIVE_ASSETS = [build_generative_asset(kind) for kind in GENERATIVE_KINDS]


@city_asset("recommenders", {"python"}, ["recommender_datasets"])
def generative_baseline(context: Context, config: GenerativeTrainingConfig, workspace: Workspace):
    """The floors every generative model must beat, on the same examples: (a) training
    popularity within 2 km of the last check-in, (b) the user's own most visited items, then
    list (a)."""
    ctx = workspace.stage_context(context)
    return materialized(workspace, score_floors(ctx, context.partition_key, config.settings()))


@city_asset("recommenders", {"parquet", "duckdb"}, [SERVED_KIND, *SEMANTIC_ID_ASSETS], compute=True)
def user_topk_cache(context: Context, config: TopKCacheConfig, workspace: Workspace):
    """Every user's top-K items (code, item id, score) given their latest check-ins, from
    the champion TIGER model with its history-aware ranking, or from floor (b) when no model
    has beaten it on validation: serving is a lookup (Semantic Convergence)."""
    ctx, settings = workspace.stage_context(context, compute=True), config.settings()
    served = serve_city(
        ctx, context.partition_key, SERVED_KIND, settings.k, settings.history_window
    )
    return materialized(workspace, served)
