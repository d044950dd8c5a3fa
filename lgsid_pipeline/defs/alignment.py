"""Alignment stage: geo negatives, pairs, reward model, aligned encoder, item embeddings."""

from typing import TYPE_CHECKING

import dagster as dg

from lgsid_pipeline.alignment.config import GdpoConfig, RewardConfig
from lgsid_pipeline.catalog import (
    ALIGNED_ENCODER,
    COMPUTE_POOL,
    REWARD_MODEL,
)
from lgsid_pipeline.defs.resources import (
    LgsidResource,
    check_result,
    city_partitions,
    config_class,
    png_metadata,
    publish_audited,
    settings_from,
)
from lgsid_pipeline.embeddings import embedding_matrix
from lgsid_pipeline.geo.negatives import GeoNegativeConfig
from lgsid_pipeline.reports import GLOBAL
from lgsid_pipeline.stages import alignment as stage
from lgsid_pipeline.stages.alignment import (
    EMBEDDING_PARTS,
    TrainedModel,
    cities_with,
    embeddings_check_name,
)

if TYPE_CHECKING:
    pass

GeoNegativesConfig = config_class(
    "GeoNegativesConfig", GeoNegativeConfig, "Density-aware list-wise sampling (METHOD section 1)."
)
RewardModelConfig = config_class(
    "RewardModelConfig", RewardConfig, "List-wise reward model training (METHOD section 2)."
)
AlignedEncoderConfig = config_class(
    "AlignedEncoderConfig",
    GdpoConfig,
    "G-DPO with LoRA (METHOD section 3).",
    max_dc_triples=(int, 1500),
    max_gc_triples=(int, 1500),
)


class CooccurrenceConfig(dg.Config):
    """D_dc: same-user same-day co-visits at or above the count quantile."""

    quantile: float = 0.9
    min_count: int = 2


class GeoPairsConfig(dg.Config):
    """D_gc candidate generation."""

    n_anchors: int = 3000
    near_km: float = 1.5
    per_side: int = 8
    cell_deg: float = 0.02
    seed: int = 0


def _cities_with(lgsid: LgsidResource, table: str) -> list[str]:
    return cities_with(lgsid.warehouse, [c.slug for c in lgsid.cities.all()], table)


def _model_metadata(model: TrainedModel) -> dict:
    return {
        **model.metrics,
        "mlflow_version": model.version,
        "mlflow_run": dg.MetadataValue.url(model.run_url),
        "config": dg.MetadataValue.json(model.config),
    }


@dg.asset(deps=["items"], partitions_def=city_partitions, group_name="alignment", kinds={"parquet"})
def geo_negatives(
    context: dg.AssetExecutionContext, config: GeoNegativesConfig, lgsid: LgsidResource
) -> dg.MaterializeResult:
    """K = 15 mismatched locations per anchor with soft labels (density-aware)."""
    city = context.partition_key
    result = stage.geo_negatives(
        lgsid.warehouse, city, settings_from(config, GeoNegativeConfig), log=context.log.info
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": result.rows,
            "anchors": result.metrics["anchors"],
            "median_km_by_kind": dg.MetadataValue.json(result.metrics["median_km_by_kind"]),
            **png_metadata(
                lgsid.reports, result.png, city, "geo_negatives", key="distance_histogram"
            ),
        }
    )


@dg.asset(
    deps=["interactions"],
    partitions_def=city_partitions,
    group_name="alignment",
    kinds={"duckdb", "parquet"},
)
def cooccurrence_pairs(
    context: dg.AssetExecutionContext, config: CooccurrenceConfig, lgsid: LgsidResource
) -> dg.MaterializeResult:
    """D_dc: item pairs co-visited by a user on one day (sql/cooccurrence_pairs.sql)."""
    result = stage.cooccurrence_pairs(
        lgsid.warehouse,
        context.partition_key,
        config.quantile,
        config.min_count,
        log=context.log.info,
    )
    return dg.MaterializeResult(metadata={"dagster/row_count": result.rows, **result.metrics})


@dg.asset(
    pool=COMPUTE_POOL,
    deps=[dg.AssetDep("geo_negatives", partition_mapping=dg.AllPartitionMapping()), "items"],
    group_name="models",
    kinds={"pytorch", "mlflow"},
)
def reward_model(
    context: dg.AssetExecutionContext, config: RewardModelConfig, lgsid: LgsidResource
) -> dg.MaterializeResult:
    """List-wise reward model over the frozen encoder, trained on every city's negatives."""
    lgsid.limit_threads(context)
    model = stage.train_reward_model(
        lgsid.warehouse,
        lgsid.reports,
        lgsid.home_path,
        lgsid.base_encoder(),
        _cities_with(lgsid, "geo_negatives"),
        settings_from(config, RewardConfig),
        lgsid.model_dir(REWARD_MODEL),
        context.run.run_id,
        dtype=lgsid.encode_dtype,
        log=context.log.info,
        on_epoch=lambda e: context.log.debug(f"epoch {e['epoch']:.0f}: {e}"),
    )
    return dg.MaterializeResult(
        metadata={
            **_model_metadata(model),
            "cities": ", ".join(model.details["cities"]),
            **png_metadata(
                lgsid.reports, model.png, GLOBAL, "reward_training", key="training_curve"
            ),
        }
    )


@dg.asset(
    pool=COMPUTE_POOL,
    deps=["reward_model", "items"],
    partitions_def=city_partitions,
    group_name="alignment",
    kinds={"duckdb", "parquet"},
)
def geo_pairs(
    context: dg.AssetExecutionContext, config: GeoPairsConfig, lgsid: LgsidResource
) -> dg.MaterializeResult:
    """D_gc: near item the reward model prefers vs far similar item it rejects."""
    lgsid.limit_threads(context)
    result = stage.geo_pairs(
        lgsid.warehouse,
        context.partition_key,
        lgsid.base_encoder(),
        lgsid.champion_folder(REWARD_MODEL),
        config.model_dump(),
        config.seed,
        dtype=lgsid.encode_dtype,
        log=context.log.info,
    )
    return dg.MaterializeResult(metadata={"dagster/row_count": result.rows, **result.metrics})


@dg.asset(
    pool=COMPUTE_POOL,
    deps=[
        dg.AssetDep("geo_pairs", partition_mapping=dg.AllPartitionMapping()),
        dg.AssetDep("cooccurrence_pairs", partition_mapping=dg.AllPartitionMapping()),
    ],
    group_name="models",
    kinds={"pytorch", "mlflow"},
)
def aligned_encoder(
    context: dg.AssetExecutionContext, config: AlignedEncoderConfig, lgsid: LgsidResource
) -> dg.MaterializeResult:
    """The encoder aligned with G-DPO (a LoRA adapter), trained on D_mix of every city."""
    lgsid.limit_threads(context)
    model = stage.train_aligned_encoder(
        lgsid.warehouse,
        lgsid.reports,
        lgsid.home_path,
        lgsid.base_encoder(),
        _cities_with(lgsid, "geo_pairs"),
        settings_from(config, GdpoConfig),
        config.max_gc_triples,
        config.max_dc_triples,
        lgsid.model_dir(ALIGNED_ENCODER),
        context.run.run_id,
        log=context.log.info,
    )
    return dg.MaterializeResult(
        metadata={
            **_model_metadata(model),
            "triples": dg.MetadataValue.json(model.details["triples"]),
            "encoder_version": model.details["encoder_version"],
            **png_metadata(lgsid.reports, model.png, GLOBAL, "gdpo_training", key="training_curve"),
        }
    )


@dg.asset(
    pool=COMPUTE_POOL,
    deps=["aligned_encoder", "items"],
    partitions_def=city_partitions,
    group_name="alignment",
    kinds={"parquet"},
    check_specs=[
        dg.AssetCheckSpec(
            embeddings_check_name(part),
            asset="item_embeddings",
            blocking=True,
            description=f"one {part} embedding per item, of its current content",
        )
        for part in EMBEDDING_PARTS
    ],
)
def item_embeddings(context: dg.AssetExecutionContext, lgsid: LgsidResource):
    """Reference and aligned embeddings of every item, encoded incrementally, with the
    before/after geography metrics; both parts are audited and published as one version."""
    lgsid.limit_threads(context)
    city, warehouse = context.partition_key, lgsid.warehouse
    items = warehouse.read_table("items", city)
    aligned = lgsid.base_encoder()
    aligned.load_adapter(lgsid.champion_folder(ALIGNED_ENCODER))
    with warehouse.staging(city, "embeddings") as staged:
        encoded = stage.stage_item_embeddings(
            warehouse,
            staged,
            city,
            items,
            {"reference": lgsid.base_encoder(), "aligned": aligned},
            dtype=lgsid.encode_dtype,
            log=context.log.info,
        )
        pointer = yield from publish_audited(
            warehouse,
            staged,
            f"{city} item_embeddings",
            encoded.audits,
            {"run_id": context.run.run_id, "encoder_version": aligned.version},
        )
    figures = stage.geography_before_after(
        lgsid.reports,
        lgsid.home_path,
        city,
        items,
        embedding_matrix(encoded.results["reference"].table),
        embedding_matrix(encoded.results["aligned"].table),
        aligned.version,
        encoded.encoded > 0,
    )
    warehouse.refresh_catalog()
    metadata = {
        "dagster/row_count": len(items),
        "version": pointer["version"],
        "encoder_version": aligned.version,
        **encoded.metadata(),
    }
    if figures:
        metadata["geography"] = dg.MetadataValue.md(stage.before_after_markdown(figures))
    yield dg.MaterializeResult(
        metadata=metadata,
        check_results=[check_result(a.name, a.asset, a.outcome) for a in encoded.audits],
    )
