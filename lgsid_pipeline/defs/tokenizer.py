"""Tokenizers (global, one per kind) and the per-city semantic-ID tables they assign.

The three kinds share one asset factory each for the model and for the table, so LGSID and
the RQ-KMeans/RQ-VAE baselines go through exactly the same code path.
"""

from dataclasses import dataclass

import dagster as dg

from lgsid_pipeline.catalog import (
    ALIGNED_ENCODER,
    COMPUTE_POOL,
    TOKENIZER_EMBEDDING_PARTS,
    TOKENIZER_KINDS,
    TOKENIZER_SUMMARIES,
    semantic_ids_asset,
    tokenizer_asset,
    tokenizer_model,
)
from lgsid_pipeline.defs.resources import (
    LgsidResource,
    blocking_failure,
    check_result,
    city_partitions,
    config_class,
    png_metadata,
    publish_audited,
    settings_from,
)
from lgsid_pipeline.reports import GLOBAL
from lgsid_pipeline.stages import tokenization as stage
from lgsid_pipeline.tokenizer.base import Tokenizer
from lgsid_pipeline.tokenizer.config import TokenizerConfig

TokenizerFitConfig = config_class(
    "TokenizerFitConfig",
    TokenizerConfig,
    "Codebook sizes, primary-feature weights and training of a tokenizer (METHOD section 4).",
    warm_start=(bool, True),
)


class SemanticIdsConfig(dg.Config):
    """Limits of the semantic-ID checks."""

    max_churn: float = 0.2  # warn when more than this share of codes changed in one run
    min_utilisation: float = 0.5  # warn when a level uses less of its codebook


@dataclass(frozen=True)
class TokenizerAssets:
    """Names of one tokenizer kind's model asset, table asset and registered model."""

    kind: str
    model_asset: str
    ids_asset: str
    registered_name: str


TOKENIZER_ASSETS = tuple(
    TokenizerAssets(kind, tokenizer_asset(kind), semantic_ids_asset(kind), tokenizer_model(kind))
    for kind in TOKENIZER_KINDS
)


def build_tokenizer_asset(names: TokenizerAssets) -> dg.AssetsDefinition:
    """The global asset that fits one kind of tokenizer on every city's embeddings."""
    part = TOKENIZER_EMBEDDING_PARTS[names.kind]

    @dg.asset(
        pool=COMPUTE_POOL,
        name=names.model_asset,
        deps=[dg.AssetDep("item_embeddings", partition_mapping=dg.AllPartitionMapping()), "items"],
        group_name="models",
        kinds={"pytorch", "mlflow"},
        check_specs=[
            dg.AssetCheckSpec(
                stage.inputs_check_name(names.kind),
                asset=names.model_asset,
                blocking=True,
                description="every embedding it fits on comes from the champion encoder "
                "(checked before fitting)",
            )
        ],
        description=f"{TOKENIZER_SUMMARIES[names.kind]} Registered as `{names.registered_name}`.",
    )
    def _asset(context: dg.AssetExecutionContext, config: TokenizerFitConfig, lgsid: LgsidResource):
        from lgsid_pipeline.encoder.model import adapter_encoder_versions

        lgsid.limit_threads(context)
        cities = [
            c.slug
            for c in lgsid.cities.all()
            if lgsid.warehouse.has_table("item_embeddings", c.slug, part)
        ]
        if not cities:
            raise RuntimeError("no city has item_embeddings; materialize them first")
        inputs = {city: stage.city_embeddings(lgsid.warehouse, city, names.kind) for city in cities}
        expected = adapter_encoder_versions(lgsid.champion_folder(ALIGNED_ENCODER))[part]
        audit = stage.inputs_audit(names.kind, inputs, expected)
        failure = blocking_failure(f"{names.kind} tokenizer", [audit])
        if failure is not None:
            yield check_result(audit.name, audit.asset, audit.outcome)
            raise failure
        settings = settings_from(config, TokenizerConfig)
        fitted = stage.fit_tokenizer(
            names.kind,
            inputs,
            settings,
            expected,
            config.warm_start,
            lgsid.model_dir(names.registered_name),
            lgsid.home_path,
            lgsid.reports,
            context.run.run_id,
            log=context.log.info,
        )
        tokenizer = fitted.tokenizer
        metadata = {
            "tokenizer_version": tokenizer.version,
            "encoder_version": expected,
            "fit_seconds": tokenizer.fit_seconds,
            "warm_started": tokenizer.warm_started,
            "retrain_churn": -1.0 if fitted.retrain_churn is None else fitted.retrain_churn,
            "codebook_sizes": dg.MetadataValue.json(settings.codebook_sizes),
            "per_city": dg.MetadataValue.md(stage.report_markdown(fitted.per_city)),
            "mlflow_version": fitted.mlflow_version,
            "mlflow_run": dg.MetadataValue.url(fitted.run_url),
        }
        for name, png in fitted.images.items():
            metadata.update(
                png_metadata(
                    lgsid.reports,
                    png,
                    GLOBAL,
                    f"{names.kind}_{name}",
                    key=name.removesuffix(".png"),
                )
            )
        yield dg.MaterializeResult(
            metadata=metadata, check_results=[check_result(audit.name, audit.asset, audit.outcome)]
        )

    return _asset


def build_semantic_ids_asset(names: TokenizerAssets) -> dg.AssetsDefinition:
    """The per-city semantic-ID table of one tokenizer kind, assigned incrementally, written
    to staging, audited as re-read from disk, and published only when the audit passes."""
    checks = [
        dg.AssetCheckSpec(
            f"{names.ids_asset}_unique",
            asset=names.ids_asset,
            blocking=True,
            description="every item has a distinct full code",
        ),
        dg.AssetCheckSpec(
            f"{names.ids_asset}_encoder_matches",
            asset=names.ids_asset,
            blocking=True,
            description="codes come from embeddings of the encoder the tokenizer was fitted on",
        ),
        dg.AssetCheckSpec(
            f"{names.ids_asset}_utilisation",
            asset=names.ids_asset,
            description="every level uses enough of its codebook",
        ),
        dg.AssetCheckSpec(
            f"{names.ids_asset}_churn",
            asset=names.ids_asset,
            description="codes changed by this run stay below the limit",
        ),
    ]

    @dg.asset(
        pool=COMPUTE_POOL,
        name=names.ids_asset,
        deps=[names.model_asset, "item_embeddings", "items"],
        partitions_def=city_partitions,
        group_name="tokenization",
        kinds={"parquet", "duckdb"},
        check_specs=checks,
        description=f"Semantic IDs of every item from `{names.registered_name}` "
        "(only new or changed items are assigned).",
    )
    def _asset(context: dg.AssetExecutionContext, config: SemanticIdsConfig, lgsid: LgsidResource):
        lgsid.limit_threads(context)
        city, warehouse = context.partition_key, lgsid.warehouse
        tokenizer = Tokenizer.load(lgsid.champion_folder(names.registered_name))
        items = warehouse.read_table("items", city)
        with warehouse.staging(city, "semantic_ids") as staged:
            codes = stage.stage_semantic_ids(warehouse, staged, city, names.kind, tokenizer, items)
            pointer = yield from publish_audited(
                warehouse,
                staged,
                f"{city} {names.ids_asset}",
                codes.audits,
                {"run_id": context.run.run_id, "tokenizer_version": tokenizer.version},
            )
        warehouse.refresh_catalog()
        result = codes.result
        context.log.info(
            f"{city}: published {names.ids_asset} in version "
            f"{pointer['version']}: assigned {result.assigned}, reused "
            f"{result.reused}, churn {result.churn}"
        )
        metadata: dict = {
            "dagster/row_count": len(codes.persisted),
            "version": pointer["version"],
            "assigned": result.assigned,
            "reused": result.reused,
            "churn": result.churn if result.churn is not None else 0.0,
            "tokenizer_version": tokenizer.version,
            "encoder_version": tokenizer.encoder_version or "",
        }
        report = stage.codes_report(
            lgsid.reports, lgsid.home_path, city, names.kind, tokenizer, items, codes
        )
        if report is not None:
            figures, codes_map = report
            metadata.update({k: figures[k] for k in stage.CODE_FIGURES})
            metadata.update(png_metadata(lgsid.reports, codes_map, city, f"{names.kind}_codes_map"))
        yield dg.MaterializeResult(
            metadata=metadata, check_results=_check_results(names, codes, tokenizer, config)
        )

    return _asset


def _check_results(
    names: TokenizerAssets,
    codes: stage.StagedCodes,
    tokenizer: Tokenizer,
    config: SemanticIdsConfig,
) -> list[dg.AssetCheckResult]:
    blocking = {a.name: check_result(a.name, a.asset, a.outcome) for a in codes.audits}
    if f"{names.ids_asset}_encoder_matches" not in blocking:
        blocking["encoder_matches"] = dg.AssetCheckResult(
            check_name=f"{names.ids_asset}_encoder_matches",
            passed=True,
            description="the tokenizer predates encoder tracking; not checked",
        )
    utilisation = stage.utilisation(codes.tokens(tokenizer.n_levels), tokenizer.codebook_sizes)
    churn = codes.result.churn or 0.0
    return [
        *blocking.values(),
        dg.AssetCheckResult(
            check_name=f"{names.ids_asset}_utilisation",
            passed=min(utilisation) >= config.min_utilisation,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"per_level": dg.MetadataValue.json(utilisation)},
        ),
        dg.AssetCheckResult(
            check_name=f"{names.ids_asset}_churn",
            passed=churn <= config.max_churn,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"churn": churn, "limit": config.max_churn},
        ),
    ]


TOKENIZER_ASSET_DEFS = [build_tokenizer_asset(names) for names in TOKENIZER_ASSETS]
SEMANTIC_ID_ASSET_DEFS = [build_semantic_ids_asset(names) for names in TOKENIZER_ASSETS]
