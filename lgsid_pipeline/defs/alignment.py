"""Alignment stage: geo negatives, pairs, reward model, aligned encoder, item embeddings."""

import dagster as dg

from lgsid_pipeline.alignment.config import (
    CooccurrenceSettings,
    GdpoConfig,
    GeoPairSettings,
    RewardConfig,
)
from lgsid_pipeline.catalog import ALIGNED_ENCODER, REWARD_MODEL
from lgsid_pipeline.defs.resources import WorkspaceResource as Workspace
from lgsid_pipeline.defs.resources import (
    audited,
    check_specs,
    city_asset,
    config_class,
    materialized,
    model_asset,
)
from lgsid_pipeline.geo.negatives import GeoNegativeConfig
from lgsid_pipeline.stages import alignment as stage
from lgsid_pipeline.stages import embeddings

Context = dg.AssetExecutionContext
GeoNegativesConfig = config_class("GeoNegativesConfig", GeoNegativeConfig)
CooccurrenceConfig = config_class("CooccurrenceConfig", CooccurrenceSettings)
GeoPairsConfig = config_class("GeoPairsConfig", GeoPairSettings)
RewardModelConfig = config_class("RewardModelConfig", RewardConfig)
AlignedEncoderConfig = config_class(
    "AlignedEncoderConfig", GdpoConfig, max_dc_triples=(int, 1500), max_gc_triples=(int, 1500)
)


@city_asset("alignment", {"parquet"}, ["items"])
def geo_negatives(context: Context, config: GeoNegativesConfig, workspace: Workspace):
    """K = 15 mismatched locations per anchor with soft labels (density-aware)."""
    ctx = workspace.stage_context(context)
    return materialized(
        workspace, stage.geo_negatives(ctx, context.partition_key, config.settings()).metadata()
    )


@city_asset("alignment", {"duckdb", "parquet"}, ["interactions"])
def cooccurrence_pairs(context: Context, config: CooccurrenceConfig, workspace: Workspace):
    """D_dc: item pairs co-visited by a user on one day (sql/cooccurrence_pairs.sql)."""
    result = stage.cooccurrence_pairs(
        workspace.stage_context(context), context.partition_key, config.quantile, config.min_count
    )
    return materialized(workspace, result.metadata())


@model_asset(["geo_negatives"], ["items"])
def reward_model(context: Context, config: RewardModelConfig, workspace: Workspace):
    """List-wise reward model over the frozen encoder, trained on every city's negatives."""
    model = stage.train_reward_model(
        workspace.stage_context(context, compute=True),
        workspace.base_encoder(),
        config.settings(),
        dtype=workspace.encode_dtype,
        on_epoch=lambda e: context.log.debug(f"epoch {e['epoch']:.0f}: {e}"),
    )
    return materialized(workspace, model.metadata())


@city_asset("alignment", {"duckdb", "parquet"}, ["reward_model", "items"], compute=True)
def geo_pairs(context: Context, config: GeoPairsConfig, workspace: Workspace):
    """D_gc: near item the reward model prefers vs far similar item it rejects."""
    result = stage.geo_pairs(
        workspace.stage_context(context, compute=True),
        context.partition_key,
        workspace.base_encoder(),
        workspace.champion_folder(REWARD_MODEL),
        config.model_dump(),
        config.seed,
        dtype=workspace.encode_dtype,
    )
    return materialized(workspace, result.metadata())


@model_asset(["geo_pairs", "cooccurrence_pairs"])
def aligned_encoder(context: Context, config: AlignedEncoderConfig, workspace: Workspace):
    """The encoder aligned with G-DPO (a LoRA adapter), trained on D_mix of every city."""
    model = stage.train_aligned_encoder(
        workspace.stage_context(context, compute=True),
        workspace.base_encoder(),
        config.settings(),
        config.max_gc_triples,
        config.max_dc_triples,
    )
    return materialized(workspace, model.metadata())


@city_asset(
    "alignment",
    {"parquet"},
    ["aligned_encoder", "items"],
    compute=True,
    check_specs=check_specs(embeddings.EMBEDDING_CHECKS, "item_embeddings", blocking=True),
)
def item_embeddings(context: Context, workspace: Workspace):
    """Reference and aligned embeddings of every item, encoded incrementally, with the
    before/after geography metrics; both parts are audited and published as one version."""
    published = yield from audited(
        embeddings.embed_city,
        workspace.stage_context(context, compute=True),
        context.partition_key,
        embeddings.ChampionEncoders(
            workspace.champion_folder(ALIGNED_ENCODER), workspace.encoder_path or None
        ),
        dtype=workspace.encode_dtype,
    )
    yield materialized(workspace, published.metadata(), published.staged.audits)
