"""Tokenizers (global, one per kind) and the per-city semantic-ID tables they assign.

The three kinds share one asset factory each for the model and for the table, so LGSID and
the RQ-KMeans/RQ-VAE baselines go through exactly the same code path.
"""


from dataclasses import asdict, dataclass

import dagster as dg
import numpy as np
import pandas as pd

from lgsid_pipeline.defs.resources import (
    LgsidResource,
    city_partitions,
    config_class,
    png_metadata,
    settings_from,
)
from lgsid_pipeline.jsonio import write_json
from lgsid_pipeline.plots import curves_png, tokens_map_png
from lgsid_pipeline.registry import (
    ModelArtifactError,
    champion_folder,
    log_run_metrics,
    register_folder,
)
from lgsid_pipeline.tokenizer import (
    TOKENIZERS,
    Tokenizer,
    TokenizerConfig,
    incremental_semantic_ids,
    level_columns,
    tokenizer_report,
)
from lgsid_pipeline.tokenizer.codes import aligned_embeddings

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


TOKENIZER_ASSETS = (
    TokenizerAssets("lgsid", "tokenizer", "semantic_ids", "lgsid-tokenizer"),
    TokenizerAssets("rqkmeans", "rqkmeans_tokenizer", "rqkmeans_semantic_ids",
                    "rqkmeans-tokenizer"),
    TokenizerAssets("rqvae", "rqvae_tokenizer", "rqvae_semantic_ids", "rqvae-tokenizer"),
)


def _city_inputs(lgsid: LgsidResource, city: str, part: str) -> tuple[pd.DataFrame, np.ndarray]:
    items = lgsid.warehouse.read_table("items", city)
    vectors, _ = aligned_embeddings(items, lgsid.warehouse.read_arrow("item_embeddings", city,
                                                                      part))
    return items, vectors


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
    cls = TOKENIZERS[names.kind]

    @dg.asset(name=names.model_asset,
              deps=[dg.AssetDep("item_embeddings", partition_mapping=dg.AllPartitionMapping()),
                    "items"],
              group_name="models", kinds={"pytorch", "mlflow"},
              description=f"{cls.__doc__.splitlines()[0]} Registered as "
                          f"`{names.registered_name}`.")
    def _asset(context: dg.AssetExecutionContext, config: TokenizerFitConfig,
               lgsid: LgsidResource) -> dg.MaterializeResult:
        cities = [c.slug for c in lgsid.cities.all()
                  if lgsid.warehouse.has_table("item_embeddings", c.slug, cls.embedding_part)]
        if not cities:
            raise RuntimeError("no city has item_embeddings; materialize them first")
        inputs = {city: _city_inputs(lgsid, city, cls.embedding_part) for city in cities}
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

        tokenizer = cls(settings).fit(items, vectors, previous=previous, on_epoch=log_epoch,
                                      warm_start=config.warm_start)
        retrain_churn = None
        if previous is not None and previous.dim == tokenizer.dim \
                and previous.n_levels == tokenizer.n_levels:
            retrain_churn = float(np.mean(np.any(
                previous.assign(items, vectors) != tokenizer.assign(items, vectors), axis=1)))
        per_city = {c: tokenizer_report(tokenizer, *inputs[c]) for c in cities}
        folder = tokenizer.save(lgsid.model_dir(names.registered_name))
        images = {f"codes_map_{c}.png": tokens_map_png(
            inputs[c][0], tokenizer.assign(*inputs[c])[:, 0], f"{c} ({names.kind})")
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
            metrics=metrics, tags={"dagster_run_id": context.run.run_id,
                                   "tokenizer_version": tokenizer.version},
            images=images, home=lgsid.home_path)
        write_json(lgsid.report_path("tokenizers", f"{names.kind}.json"), {
            "version": tokenizer.version, "mlflow_version": registered.version,
            "fit_seconds": tokenizer.fit_seconds, "retrain_churn": retrain_churn,
            "warm_started": tokenizer.warm_started, "cities": per_city})
        metadata = {
            "tokenizer_version": tokenizer.version,
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
            metadata.update(png_metadata(
                png, lgsid.report_path("plots", "global", f"{names.kind}_{name}"), key=key))
        return dg.MaterializeResult(metadata=metadata)

    return _asset


def build_semantic_ids_asset(names: TokenizerAssets) -> dg.AssetsDefinition:
    """The per-city semantic-ID table of one tokenizer kind, assigned incrementally."""
    cls = TOKENIZERS[names.kind]
    checks = [dg.AssetCheckSpec(f"{names.ids_asset}_unique", asset=names.ids_asset,
                                description="every item has a distinct full code"),
              dg.AssetCheckSpec(f"{names.ids_asset}_utilisation", asset=names.ids_asset,
                                description="every level uses enough of its codebook"),
              dg.AssetCheckSpec(f"{names.ids_asset}_churn", asset=names.ids_asset,
                                description="codes changed by this run stay below the limit")]

    @dg.asset(name=names.ids_asset, deps=[names.model_asset, "item_embeddings", "items"],
              partitions_def=city_partitions, group_name="tokenization",
              kinds={"parquet", "duckdb"}, check_specs=checks,
              description=f"Semantic IDs of every item from `{names.registered_name}` "
                          "(only new or changed items are assigned).")
    def _asset(context: dg.AssetExecutionContext, config: SemanticIdsConfig,
               lgsid: LgsidResource) -> dg.MaterializeResult:
        city = context.partition_key
        warehouse = lgsid.warehouse
        tokenizer = Tokenizer.load(lgsid.champion_folder(names.registered_name))
        items = warehouse.read_table("items", city)
        embeddings = warehouse.read_arrow("item_embeddings", city, cls.embedding_part)
        previous = warehouse.read_table("semantic_ids", city, names.kind) \
            if warehouse.has_table("semantic_ids", city, names.kind) else None
        result = incremental_semantic_ids(city, items, embeddings, tokenizer, previous)
        warehouse.write_table("semantic_ids", city, result.table, part=names.kind)
        warehouse.refresh_catalog()
        context.log.info(f"{city}: assigned {result.assigned}, reused {result.reused}, "
                         f"churn {result.churn}")
        report_path = lgsid.report_path("tokenizers", city, f"{names.kind}.json")
        tokens = result.table[level_columns(tokenizer.n_levels)].to_numpy()
        metadata: dict = {
            "dagster/row_count": len(result.table),
            "assigned": result.assigned,
            "reused": result.reused,
            "churn": result.churn if result.churn is not None else 0.0,
            "tokenizer_version": tokenizer.version,
        }
        if result.assigned or not report_path.is_file():
            vectors, _ = aligned_embeddings(items, embeddings)
            figures = tokenizer_report(tokenizer, items, vectors, result.table["code"].tolist())
            figures.update(version=tokenizer.version, churn=result.churn)
            write_json(report_path, figures)
            log_run_metrics(names.registered_name,
                            {f"{city}.{k}": float(v) for k, v in figures.items()
                             if isinstance(v, int | float) and v is not None}, home=lgsid.home_path)
            metadata.update({k: figures[k] for k in ("utilisation_min", "collision_rate",
                                                     "largest_bucket", "nmi_level1",
                                                     "nmi_level2", "reconstruction_error")})
            metadata.update(png_metadata(
                tokens_map_png(items, tokens[:, 0], f"{city} ({names.kind})"),
                lgsid.report_path("plots", city, f"{names.kind}_codes_map.png")))
        codes = result.table["code"]
        duplicated = int(codes.duplicated().sum())
        utilisation = [len(np.unique(tokens[:, i])) / k
                       for i, k in enumerate(tokenizer.codebook_sizes)]
        churn = result.churn or 0.0
        check_results = [
            dg.AssetCheckResult(check_name=f"{names.ids_asset}_unique", passed=duplicated == 0,
                                severity=dg.AssetCheckSeverity.ERROR,
                                metadata={"duplicated_codes": duplicated}),
            dg.AssetCheckResult(check_name=f"{names.ids_asset}_utilisation",
                                passed=min(utilisation) >= config.min_utilisation,
                                severity=dg.AssetCheckSeverity.WARN,
                                metadata={"per_level": dg.MetadataValue.json(utilisation)}),
            dg.AssetCheckResult(check_name=f"{names.ids_asset}_churn",
                                passed=churn <= config.max_churn,
                                severity=dg.AssetCheckSeverity.WARN,
                                metadata={"churn": churn, "limit": config.max_churn}),
        ]
        return dg.MaterializeResult(metadata=metadata, check_results=check_results)

    return _asset


TOKENIZER_MODEL_ASSETS = [build_tokenizer_asset(names) for names in TOKENIZER_ASSETS]
SEMANTIC_ID_ASSETS = [build_semantic_ids_asset(names) for names in TOKENIZER_ASSETS]
