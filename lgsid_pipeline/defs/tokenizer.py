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
from lgsid_pipeline.defs.resources import (
    WorkspaceResource,
    audited,
    check_specs,
    city_asset,
    config_class,
    materialized,
    model_asset,
    settings_from,
)
from lgsid_pipeline.stages import semantic_ids
from lgsid_pipeline.stages import tokenization as stage
from lgsid_pipeline.tokenizer.base import Tokenizer
from lgsid_pipeline.tokenizer.config import CodeCheckLimits, TokenizerConfig

TokenizerFitConfig = config_class(
    "TokenizerFitConfig",
    TokenizerConfig,
    "Codebook sizes, primary-feature weights and training of a tokenizer (METHOD section 4).",
    warm_start=(bool, True),
)
SemanticIdsConfig = config_class(
    "SemanticIdsConfig", CodeCheckLimits, "Limits of the semantic-ID warning checks."
)


def build_tokenizer_asset(kind: str) -> dg.AssetsDefinition:
    """The global asset that fits one kind of tokenizer on every city's embeddings."""
    asset, registered = tokenizer_asset(kind), tokenizer_model(kind)
    inputs_check = {
        stage.inputs_check_name(kind): "every embedding it fits on comes from the champion "
        "encoder (checked before fitting)"
    }

    @model_asset(
        ["item_embeddings"],
        ["items"],
        name=asset,
        check_specs=check_specs(inputs_check, asset, blocking=True),
        description=f"{TOKENIZER_SUMMARIES[kind]} Registered as `{registered}`.",
    )
    def _asset(
        context: dg.AssetExecutionContext, config: TokenizerFitConfig, workspace: WorkspaceResource
    ):
        workspace.limit_threads(context)
        fitted = yield from audited(
            stage.fit_and_register,
            workspace.stage_context(context),
            kind,
            workspace.champion_folder(ALIGNED_ENCODER),
            settings_from(config, TokenizerConfig),
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
        check_specs=[
            *check_specs(blocking, asset, blocking=True),
            *check_specs(warnings, asset, blocking=False),
        ],
        description=f"Semantic IDs of every item from `{registered}` "
        "(only new or changed items are assigned).",
    )
    def _asset(
        context: dg.AssetExecutionContext, config: SemanticIdsConfig, workspace: WorkspaceResource
    ):
        workspace.limit_threads(context)
        city = context.partition_key
        published = yield from audited(
            semantic_ids.assign_city_codes,
            workspace.stage_context(context),
            city,
            kind,
            Tokenizer.load(workspace.champion_folder(registered)),
            settings_from(config, CodeCheckLimits),
        )
        yield materialized(workspace, published.metadata(city, kind), published.audits)

    return _asset


TOKENIZER_ASSET_DEFS = [build_tokenizer_asset(kind) for kind in TOKENIZER_KINDS]
SEMANTIC_ID_ASSET_DEFS = [build_semantic_ids_asset(kind) for kind in TOKENIZER_KINDS]
