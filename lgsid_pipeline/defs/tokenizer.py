"""Tokenizers (global, one per kind) and the per-city semantic-ID tables they assign.

The three kinds share one asset factory each for the model and for the table, so LGSID and
the RQ-KMeans/RQ-VAE baselines go through exactly the same code path.
"""


from dataclasses import asdict, dataclass

import dagster as dg
import numpy as np
import pandas as pd

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
from lgsid_pipeline.plots import curves_png, tokens_map_png
from lgsid_pipeline.quality import Audit, check_encoder_version, check_unique
from lgsid_pipeline.registry import (
    ModelArtifactError,
    champion_folder,
    log_run_metrics,
    register_folder,
)
from lgsid_pipeline.reports import GLOBAL
from lgsid_pipeline.tokenizer.base import Tokenizer
from lgsid_pipeline.tokenizer.codes import (
    aligned_embeddings,
    incremental_semantic_ids,
    level_columns,
)
from lgsid_pipeline.tokenizer.config import TokenizerConfig

TokenizerFitConfig = config_class(
    "TokenizerFitConfig", TokenizerConfig,
    "Codebook sizes, primary-feature weights and training of a tokenizer (METHOD section 4).",
    warm_start=(bool, True))


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
    for kind in TOKENIZER_KINDS)


def _city_inputs(lgsid: LgsidResource, city: str,
                 part: str) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    items = lgsid.warehouse.read_table("items", city)
    vectors, versions = aligned_embeddings(
        items, lgsid.warehouse.read_arrow("item_embeddings", city, part))
    return items, vectors, versions


def inputs_check_name(names: TokenizerAssets) -> str:
    """The blocking check that the tokenizer's embeddings come from the champion encoder."""
    return f"{names.model_asset}_inputs_current"


def _report_markdown(per_city: dict[str, dict]) -> str:
    keys = ("items", "utilisation_min", "collision_rate", "largest_bucket", "nmi_level1",
            "nmi_level2", "reconstruction_error", "assign_items_per_s")
    rows = ["| city | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    for city, figures in per_city.items():
        cells = [f"{figures[k]:.3f}" if isinstance(figures[k], float) else str(figures[k])
                 for k in keys]
        rows.append(f"| {city} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _previous_tokenizer(names: TokenizerAssets, lgsid: LgsidResource) -> Tokenizer | None:
    try:
        return Tokenizer.load(champion_folder(names.registered_name, home=lgsid.home_path))
    except (ModelArtifactError, FileNotFoundError):
        return None


def build_tokenizer_asset(names: TokenizerAssets) -> dg.AssetsDefinition:
    """The global asset that fits one kind of tokenizer on every city's embeddings."""
    part = TOKENIZER_EMBEDDING_PARTS[names.kind]

    @dg.asset(pool=COMPUTE_POOL,
              name=names.model_asset,
              deps=[dg.AssetDep("item_embeddings", partition_mapping=dg.AllPartitionMapping()),
                    "items"],
              group_name="models", kinds={"pytorch", "mlflow"},
              check_specs=[dg.AssetCheckSpec(
                  inputs_check_name(names), asset=names.model_asset, blocking=True,
                  description="every embedding it fits on comes from the champion encoder "
                              "(checked before fitting)")],
              description=f"{TOKENIZER_SUMMARIES[names.kind]} Registered as "
                          f"`{names.registered_name}`.")
    def _asset(context: dg.AssetExecutionContext, config: TokenizerFitConfig,
               lgsid: LgsidResource):
        from lgsid_pipeline.encoder.model import adapter_encoder_versions
        from lgsid_pipeline.tokenizer.evaluate import tokenizer_report
        from lgsid_pipeline.tokenizer.models import TOKENIZERS

        lgsid.limit_threads(context)
        cities = [c.slug for c in lgsid.cities.all()
                  if lgsid.warehouse.has_table("item_embeddings", c.slug, part)]
        if not cities:
            raise RuntimeError("no city has item_embeddings; materialize them first")
        inputs = {city: _city_inputs(lgsid, city, part) for city in cities}
        expected = adapter_encoder_versions(
            lgsid.champion_folder(ALIGNED_ENCODER))[part]
        audit = Audit(inputs_check_name(names), names.model_asset, check_encoder_version(
            {city: inputs[city][2] for city in cities}, expected,
            "materialize item_embeddings for these cities with the champion encoder first"))
        failure = blocking_failure(f"{names.kind} tokenizer", [audit])
        if failure is not None:
            yield check_result(audit.name, audit.asset, audit.outcome)
            raise failure
        items = pd.concat([inputs[c][0] for c in cities], ignore_index=True)
        vectors = np.concatenate([inputs[c][1] for c in cities])
        settings = settings_from(config, TokenizerConfig)
        previous = _previous_tokenizer(names, lgsid)
        context.log.info(f"fitting {names.kind} on {len(items)} items of {cities}, codebooks "
                         f"{settings.codebook_sizes}, previous version "
                         f"{previous.version if previous else None}")

        def log_epoch(row: dict[str, float]) -> None:
            context.log.info(f"epoch {row['epoch']:.0f}/{settings.epochs} "
                             f"loss {row.get('loss', float('nan')):.4f} min utilisation "
                             f"{row['min_utilisation']:.2f} ({row['seconds']:.1f}s/epoch)")

        tokenizer = TOKENIZERS[names.kind](settings).fit(
            items, vectors, previous=previous, on_epoch=log_epoch,
            warm_start=config.warm_start, encoder_version=expected)
        retrain_churn = None
        if previous is not None and previous.dim == tokenizer.dim \
                and previous.n_levels == tokenizer.n_levels:
            retrain_churn = float(np.mean(np.any(
                previous.assign(items, vectors) != tokenizer.assign(items, vectors), axis=1)))
        per_city = {c: tokenizer_report(tokenizer, *inputs[c][:2]) for c in cities}
        folder = tokenizer.save(lgsid.model_dir(names.registered_name))
        images = {f"codes_map_{c}.png": tokens_map_png(
            inputs[c][0], tokenizer.assign(*inputs[c][:2])[:, 0], f"{c} ({names.kind})")
            for c in cities}
        if tokenizer.history:
            images["training.png"] = curves_png(tokenizer.history,
                                                ["loss", "min_utilisation"], "epoch",
                                                f"{names.kind} tokenizer")
        metrics = {f"{c}.{k}": float(v) for c, figures in per_city.items()
                   for k, v in figures.items()}
        metrics["fit_seconds"] = tokenizer.fit_seconds
        if retrain_churn is not None:
            metrics["retrain_churn"] = retrain_churn
        registered = register_folder(
            names.registered_name, folder,
            params={**asdict(settings), "cities": ",".join(cities),
                    "warm_started": tokenizer.warm_started},
            metrics=metrics, dagster_run_id=context.run.run_id,
            tags={"tokenizer_version": tokenizer.version, "encoder_version": expected},
            images=images, home=lgsid.home_path)
        lgsid.reports.write(lgsid.reports.tokenizer(names.kind), {
            "version": tokenizer.version, "mlflow_version": registered.version,
            "encoder_version": expected,
            "fit_seconds": tokenizer.fit_seconds, "retrain_churn": retrain_churn,
            "warm_started": tokenizer.warm_started, "cities": per_city})
        metadata = {
            "tokenizer_version": tokenizer.version,
            "encoder_version": expected,
            "fit_seconds": tokenizer.fit_seconds,
            "warm_started": tokenizer.warm_started,
            "retrain_churn": retrain_churn if retrain_churn is not None else -1.0,
            "codebook_sizes": dg.MetadataValue.json(settings.codebook_sizes),
            "per_city": dg.MetadataValue.md(_report_markdown(per_city)),
            "mlflow_version": registered.version,
            "mlflow_run": dg.MetadataValue.url(registered.run_url),
        }
        for name, png in images.items():
            key = name.removesuffix(".png")
            metadata.update(png_metadata(lgsid.reports, png, GLOBAL, f"{names.kind}_{name}",
                                         key=key))
        yield dg.MaterializeResult(metadata=metadata, check_results=[
            check_result(audit.name, audit.asset, audit.outcome)])

    return _asset


def semantic_ids_audits(names: TokenizerAssets, tokenizer: Tokenizer,
                        table: pd.DataFrame) -> list[Audit]:
    """The blocking checks of a semantic-ID table as persisted: distinct full codes, and
    every code assigned from embeddings of the encoder the tokenizer was fitted on."""
    audits = [Audit(f"{names.ids_asset}_unique", names.ids_asset,
                    check_unique(table, ["code"]))]
    if tokenizer.encoder_version is not None:
        versions = table["encoder_version"].astype(str).tolist()
        audits.append(Audit(f"{names.ids_asset}_encoder_matches", names.ids_asset,
                            check_encoder_version(
                                {table["city"].iloc[0] if len(table) else "": versions},
                                tokenizer.encoder_version,
                                f"refit {names.model_asset} on these embeddings first")))
    return audits


def build_semantic_ids_asset(names: TokenizerAssets) -> dg.AssetsDefinition:
    """The per-city semantic-ID table of one tokenizer kind, assigned incrementally, written
    to staging, audited as re-read from disk, and published only when the audit passes."""
    part = TOKENIZER_EMBEDDING_PARTS[names.kind]
    checks = [dg.AssetCheckSpec(f"{names.ids_asset}_unique", asset=names.ids_asset,
                                blocking=True, description="every item has a distinct full code"),
              dg.AssetCheckSpec(f"{names.ids_asset}_encoder_matches", asset=names.ids_asset,
                                blocking=True,
                                description="codes come from embeddings of the encoder the "
                                            "tokenizer was fitted on"),
              dg.AssetCheckSpec(f"{names.ids_asset}_utilisation", asset=names.ids_asset,
                                description="every level uses enough of its codebook"),
              dg.AssetCheckSpec(f"{names.ids_asset}_churn", asset=names.ids_asset,
                                description="codes changed by this run stay below the limit")]

    @dg.asset(pool=COMPUTE_POOL,
              name=names.ids_asset, deps=[names.model_asset, "item_embeddings", "items"],
              partitions_def=city_partitions, group_name="tokenization",
              kinds={"parquet", "duckdb"}, check_specs=checks,
              description=f"Semantic IDs of every item from `{names.registered_name}` "
                          "(only new or changed items are assigned).")
    def _asset(context: dg.AssetExecutionContext, config: SemanticIdsConfig,
               lgsid: LgsidResource):
        from lgsid_pipeline.tokenizer.evaluate import tokenizer_report

        lgsid.limit_threads(context)
        city = context.partition_key
        warehouse = lgsid.warehouse
        tokenizer = Tokenizer.load(lgsid.champion_folder(names.registered_name))
        items = warehouse.read_table("items", city)
        embeddings = warehouse.read_arrow("item_embeddings", city, part)
        previous = warehouse.read_table("semantic_ids", city, names.kind) \
            if warehouse.has_table("semantic_ids", city, names.kind) else None
        result = incremental_semantic_ids(city, items, embeddings, tokenizer, previous)
        with warehouse.staging(city, "semantic_ids") as staged:
            staged.write_table("semantic_ids", result.table, part=names.kind)
            persisted = staged.read_table("semantic_ids", part=names.kind)
            audits = semantic_ids_audits(names, tokenizer, persisted)
            pointer = yield from publish_audited(
                warehouse, staged, f"{city} {names.ids_asset}", audits,
                {"run_id": context.run.run_id, "tokenizer_version": tokenizer.version})
        warehouse.refresh_catalog()
        context.log.info(f"{city}: published {names.ids_asset} in version "
                         f"{pointer['version']}: assigned {result.assigned}, reused "
                         f"{result.reused}, churn {result.churn}")
        report_path = lgsid.reports.tokenizer_codes(city, names.kind)
        tokens = persisted[level_columns(tokenizer.n_levels)].to_numpy()
        metadata: dict = {
            "dagster/row_count": len(persisted),
            "version": pointer["version"],
            "assigned": result.assigned,
            "reused": result.reused,
            "churn": result.churn if result.churn is not None else 0.0,
            "tokenizer_version": tokenizer.version,
            "encoder_version": tokenizer.encoder_version or "",
        }
        if result.assigned or not report_path.is_file():
            vectors, _ = aligned_embeddings(items, embeddings)
            figures = tokenizer_report(tokenizer, items, vectors, persisted["code"].tolist())
            figures.update(version=tokenizer.version, churn=result.churn)
            lgsid.reports.write(report_path, figures)
            log_run_metrics(names.registered_name,
                            {f"{city}.{k}": float(v) for k, v in figures.items()
                             if isinstance(v, int | float) and v is not None}, home=lgsid.home_path)
            metadata.update({k: figures[k] for k in ("utilisation_min", "collision_rate",
                                                     "largest_bucket", "nmi_level1",
                                                     "nmi_level2", "reconstruction_error")})
            codes_map = tokens_map_png(items, tokens[:, 0], f"{city} ({names.kind})")
            metadata.update(png_metadata(lgsid.reports, codes_map, city,
                                         f"{names.kind}_codes_map"))
        utilisation = [len(np.unique(tokens[:, i])) / k
                       for i, k in enumerate(tokenizer.codebook_sizes)]
        churn = result.churn or 0.0
        blocking = {a.name: check_result(a.name, a.asset, a.outcome) for a in audits}
        if f"{names.ids_asset}_encoder_matches" not in blocking:
            blocking["encoder_matches"] = dg.AssetCheckResult(
                check_name=f"{names.ids_asset}_encoder_matches", passed=True,
                description="the tokenizer predates encoder tracking; not checked")
        check_results = [
            *blocking.values(),
            dg.AssetCheckResult(check_name=f"{names.ids_asset}_utilisation",
                                passed=min(utilisation) >= config.min_utilisation,
                                severity=dg.AssetCheckSeverity.WARN,
                                metadata={"per_level": dg.MetadataValue.json(utilisation)}),
            dg.AssetCheckResult(check_name=f"{names.ids_asset}_churn",
                                passed=churn <= config.max_churn,
                                severity=dg.AssetCheckSeverity.WARN,
                                metadata={"churn": churn, "limit": config.max_churn}),
        ]
        yield dg.MaterializeResult(metadata=metadata, check_results=check_results)

    return _asset


TOKENIZER_ASSET_DEFS = [build_tokenizer_asset(names) for names in TOKENIZER_ASSETS]
SEMANTIC_ID_ASSET_DEFS = [build_semantic_ids_asset(names) for names in TOKENIZER_ASSETS]
