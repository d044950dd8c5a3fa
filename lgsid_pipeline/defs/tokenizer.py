"""Tokenizers (global, one per kind) and the per-city semantic-ID tables they assign.

The three kinds share one asset factory each for the model and for the table, so LGSID and
the RQ-KMeans/RQ-VAE baselines go through exactly the same code path.
"""

import dagster as dg

from lgsid_pipeline.catalog import (
    ALIGNED_ENCODER,
    TOKENIZER_KINDS,
    TOKENIZER_SUMMARIES,
    semantic_ids_asset,
    tokenizer_asset,
    tokenizer_model,
)
from lgsid_pipeline.defs.resources import WorkspaceResource as Workspace
from lgsid_pipeline.defs.resources import (
    audited,
    check_specs,
    city_asset,
    config_class,
    materialized,
    model_asset,
)
from lgsid_pipeline.stages import semantic_ids
from lgsid_pipeline.stages import tokenization as stage
from lgsid_pipeline.tokenizer.base import Tokenizer
from lgsid_pipeline.tokenizer.config import CodeCheckLimits, TokenizerConfig

Context = dg.AssetExecutionContext
TokenizerFitConfig = config_class("TokenizerFitConfig", TokenizerConfig, warm_start=(bool, True))
SemanticIdsConfig = config_class("SemanticIdsConfig", CodeCheckLimits)


def build_tokenizer_asset(kind: str) -> dg.AssetsDefinition:
    """The global asset that fits one kind of tokenizer on every city's embeddings."""
    asset, registered = tokenizer_asset(kind), tokenizer_model(kind)

    @model_asset(
        ["item_embeddings"],
        ["items"],
        name=asset,
        check_specs=check_specs(stage.tokenizer_checks(kind), asset, blocking=True),
        description=f"{TOKENIZER_SUMMARIES[kind]} Registered as `{registered}`.",
    )
    def _asset(context: Context, config: TokenizerFitConfig, workspace: Workspace):
        fitted = yield from audited(
            stage.fit_and_register,
            workspace.stage_context(context, compute=True),
            kind,
            workspace.champion_folder(ALIGNED_ENCODER),
            config.settings(),
            config.warm_start,
        )
        yield materialized(workspace, fitted.metadata(kind), fitted.audits)

    return _asset


def build_semantic_ids_asset(kind: str) -> dg.AssetsDefinition:
    """The per-city semantic-ID table of one tokenizer kind, assigned incrementally, written
    to staging, audited as re-read from disk, and published only when the audit passes."""
    asset, registered = semantic_ids_asset(kind), tokenizer_model(kind)
    blocking, warnings = semantic_ids.semantic_ids_checks(kind)

    @city_asset(
        "tokenization",
        {"parquet", "duckdb"},
        [tokenizer_asset(kind), "item_embeddings", "items"],
        compute=True,
        name=asset,
        check_specs=check_specs(blocking, asset, True) + check_specs(warnings, asset, False),
        description=f"Semantic IDs of every item from `{registered}` "
        "(only new or changed items are assigned).",
    )
    def _asset(context: Context, config: SemanticIdsConfig, workspace: Workspace):
        city = context.partition_key
        published = yield from audited(
            semantic_ids.assign_city_codes,
            workspace.stage_context(context, compute=True),
            city,
            kind,
            Tokenizer.load(workspace.champion_folder(registered)),
            config.settings(),
        )
        yield materialized(workspace, published.metadata(city, kind), published.audits)

    return _asset


TOKENIZER_ASSET_DEFS = [build_tokenizer_asset(kind) for kind in TOKENIZER_KINDS]
SEMANTIC_ID_ASSET_DEFS = [build_semantic_ids_asset(kind) for kind in TOKENIZER_KINDS]
