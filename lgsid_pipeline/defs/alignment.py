"""Alignment stage: geo negatives, pairs, reward model, aligned encoder, item embeddings."""

import time
from dataclasses import asdict
from typing import TYPE_CHECKING

import dagster as dg
import numpy as np

from lgsid_pipeline.alignment.config import GdpoConfig, RewardConfig
from lgsid_pipeline.catalog import ALIGNED_ENCODER, COMPUTE_POOL, REWARD_MODEL
from lgsid_pipeline.defs.resources import (
    LgsidResource,
    check_result,
    city_partitions,
    config_class,
    png_metadata,
    publish_audited,
    settings_from,
)
from lgsid_pipeline.embeddings import embedding_matrix, incremental_embeddings
from lgsid_pipeline.geo.negatives import GeoNegativeConfig, sample_geo_negatives
from lgsid_pipeline.jsonio import write_json
from lgsid_pipeline.plots import curves_png, distance_histogram_png
from lgsid_pipeline.quality import Audit, check_covers
from lgsid_pipeline.registry import log_run_metrics, register_folder

if TYPE_CHECKING:
    from lgsid_pipeline.encoder.model import TextEncoder

GeoNegativesConfig = config_class(
    "GeoNegativesConfig", GeoNegativeConfig,
    "Density-aware list-wise sampling (METHOD section 1).")
RewardModelConfig = config_class(
    "RewardModelConfig", RewardConfig, "List-wise reward model training (METHOD section 2).")
AlignedEncoderConfig = config_class(
    "AlignedEncoderConfig", GdpoConfig, "G-DPO with LoRA (METHOD section 3).",
    max_dc_triples=(int, 1500), max_gc_triples=(int, 1500))


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
    return [c.slug for c in lgsid.cities.all() if lgsid.warehouse.has_table(table, c.slug)]


@dg.asset(deps=["items"], partitions_def=city_partitions, group_name="alignment",
          kinds={"parquet"})
def geo_negatives(context: dg.AssetExecutionContext, config: GeoNegativesConfig,
                  lgsid: LgsidResource) -> dg.MaterializeResult:
    """K = 15 mismatched locations per anchor with soft labels (density-aware)."""
    city = context.partition_key
    items = lgsid.warehouse.read_table("items", city)
    sampled = sample_geo_negatives(items, settings_from(config, GeoNegativeConfig))
    lgsid.warehouse.write_table("geo_negatives", city, sampled.assign(city=city))
    kinds = sampled[sampled["slot"] > 0].groupby("kind")["distance_km"].median()
    context.log.info(f"{city}: {sampled['anchor_item_id'].nunique()} anchors x "
                     f"{config.k} negatives; median km by kind {kinds.round(2).to_dict()}")
    png = distance_histogram_png(sampled["distance_km"], sampled["kind"],
                                 f"{city}: negative distances")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": len(sampled),
        "anchors": int(sampled["anchor_item_id"].nunique()),
        "median_km_by_kind": dg.MetadataValue.json({k: round(float(v), 3)
                                                    for k, v in kinds.items()}),
        **png_metadata(png, lgsid.report_path("plots", city, "geo_negatives.png"),
                       key="distance_histogram"),
    })


@dg.asset(deps=["interactions"], partitions_def=city_partitions, group_name="alignment",
          kinds={"duckdb", "parquet"})
def cooccurrence_pairs(context: dg.AssetExecutionContext, config: CooccurrenceConfig,
                       lgsid: LgsidResource) -> dg.MaterializeResult:
    """D_dc: item pairs co-visited by a user on one day (sql/cooccurrence_pairs.sql)."""
    city = context.partition_key
    pairs = lgsid.warehouse.query("cooccurrence_pairs.sql", {
        "city": city, "quantile": config.quantile, "min_count": config.min_count})
    lgsid.warehouse.write_table("cooccurrence_pairs", city, pairs)
    threshold = int(pairs["threshold"].iloc[0]) if len(pairs) else None
    context.log.info(f"{city}: {len(pairs)} co-visit pairs (threshold {threshold})")
    return dg.MaterializeResult(metadata={"dagster/row_count": len(pairs),
                                          "threshold": threshold if threshold else 0})


@dg.asset(pool=COMPUTE_POOL,
          deps=[dg.AssetDep("geo_negatives", partition_mapping=dg.AllPartitionMapping()),
                "items"],
          group_name="models", kinds={"pytorch", "mlflow"})
def reward_model(context: dg.AssetExecutionContext, config: RewardModelConfig,
                 lgsid: LgsidResource) -> dg.MaterializeResult:
    """List-wise reward model over the frozen encoder, trained on every city's negatives."""
    lgsid.limit_threads(context)
    from lgsid_pipeline.alignment.reward import save_reward_model, train_reward_model
    from lgsid_pipeline.alignment.stage import reward_dataset

    cities = _cities_with(lgsid, "geo_negatives")
    if not cities:
        raise RuntimeError("no city has geo_negatives; materialize them first")
    encoder = lgsid.base_encoder()
    parts = []
    for city in cities:
        started = time.perf_counter()
        parts.append(reward_dataset(encoder, lgsid.warehouse.read_table("items", city),
                                    lgsid.warehouse.read_table("geo_negatives", city),
                                    dtype=lgsid.encode_dtype, progress=True))
        context.log.info(f"{city}: encoded {parts[-1][0].shape[0]} lists in "
                         f"{time.perf_counter() - started:.1f}s")
    embeddings, labels, distances = (np.concatenate(p) for p in zip(*parts, strict=True))
    reward_config = settings_from(config, RewardConfig)
    result = train_reward_model(
        embeddings, labels, distances, reward_config,
        on_epoch=lambda e: context.log.debug(f"epoch {e['epoch']:.0f}: {e}"))
    context.log.info(f"reward model held-out: {result.metrics}")
    folder = save_reward_model(result.model, lgsid.model_dir(REWARD_MODEL), reward_config,
                               {"encoder_version": encoder.version, "cities": cities})
    curve = curves_png(result.history, ["train_loss", "holdout_top1"], "epoch", "reward model")
    registered = register_folder(
        REWARD_MODEL, folder, params={**asdict(reward_config), "cities": ",".join(cities),
                                      "encoder_version": encoder.version},
        metrics=result.metrics, dagster_run_id=context.run.run_id,
        images={"reward_training.png": curve}, home=lgsid.home_path)
    write_json(lgsid.report_path("global", "reward_model.json"),
               {**result.metrics, "version": registered.version, "run_id": registered.run_id})
    return dg.MaterializeResult(metadata={
        **{k: float(v) for k, v in result.metrics.items()},
        "cities": ", ".join(cities),
        "mlflow_version": registered.version,
        "mlflow_run": dg.MetadataValue.url(registered.run_url),
        "config": dg.MetadataValue.json(asdict(reward_config)),
        **png_metadata(curve, lgsid.report_path("plots", "global", "reward_training.png"),
                       key="training_curve"),
    })


@dg.asset(pool=COMPUTE_POOL,
          deps=["reward_model", "items"], partitions_def=city_partitions,
          group_name="alignment", kinds={"duckdb", "parquet"})
def geo_pairs(context: dg.AssetExecutionContext, config: GeoPairsConfig,
              lgsid: LgsidResource) -> dg.MaterializeResult:
    """D_gc: near item the reward model prefers vs far similar item it rejects."""
    lgsid.limit_threads(context)
    from lgsid_pipeline.alignment.pairs import gc_triples
    from lgsid_pipeline.alignment.reward import load_reward_model
    from lgsid_pipeline.alignment.stage import reward_scorer

    city = context.partition_key
    items = lgsid.warehouse.read_table("items", city)
    candidates = lgsid.warehouse.query("geo_pair_candidates.sql", {
        "city": city, **config.model_dump()})
    head = load_reward_model(lgsid.champion_folder(REWARD_MODEL))
    scorer = reward_scorer(lgsid.base_encoder(), head, items, dtype=lgsid.encode_dtype)
    triples = gc_triples(candidates, items, scorer, seed=config.seed)
    lgsid.warehouse.write_table("geo_pairs", city, triples.assign(city=city))
    context.log.info(f"{city}: {len(triples)} D_gc triples from {len(candidates)} candidates")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": len(triples),
        "candidates": len(candidates),
        "mean_reward_margin": float(triples["margin"].mean()) if len(triples) else 0.0,
    })


@dg.asset(pool=COMPUTE_POOL,
          deps=[dg.AssetDep("geo_pairs", partition_mapping=dg.AllPartitionMapping()),
                dg.AssetDep("cooccurrence_pairs", partition_mapping=dg.AllPartitionMapping())],
          group_name="models", kinds={"pytorch", "mlflow"})
def aligned_encoder(context: dg.AssetExecutionContext, config: AlignedEncoderConfig,
                    lgsid: LgsidResource) -> dg.MaterializeResult:
    """The encoder aligned with G-DPO (a LoRA adapter), trained on D_mix of every city."""
    lgsid.limit_threads(context)
    from lgsid_pipeline.alignment.gdpo import train_gdpo
    from lgsid_pipeline.alignment.stage import gdpo_triples

    cities = _cities_with(lgsid, "geo_pairs")
    if not cities:
        raise RuntimeError("no city has geo_pairs; materialize them first")
    triples = gdpo_triples(lgsid.warehouse, cities, config.max_gc_triples,
                           config.max_dc_triples, seed=config.seed)
    counts = triples.counts
    context.log.info(f"G-DPO on {len(triples.anchors)} triples: {counts}")
    encoder = lgsid.base_encoder()
    gdpo_config = settings_from(config, GdpoConfig)
    started = time.perf_counter()

    def log_step(step: int, parts: dict[str, float]) -> None:
        if step % max(1, gdpo_config.steps // 10) == 0 or step == gdpo_config.steps:
            eta = (time.perf_counter() - started) / step * (gdpo_config.steps - step)
            context.log.info(f"step {step}/{gdpo_config.steps} loss {parts['loss']:.4f} "
                             f"dpo {parts['dpo']:.4f} sim {parts['sim']:.4f} "
                             f"pref-acc {parts['preference_accuracy']:.2f} ETA {eta:.0f}s")

    history = train_gdpo(encoder, triples.anchors, triples.chosen, triples.rejected,
                         gdpo_config, margins=np.asarray(triples.margins), on_step=log_step)
    folder = lgsid.model_dir(ALIGNED_ENCODER)
    encoder.save_adapter(folder)
    last = history[-max(1, len(history) // 10):]
    metrics = {k: float(np.mean([h[k] for h in last]))
               for k in ("loss", "dpo", "sim", "preference_accuracy")}
    metrics["train_seconds"] = time.perf_counter() - started
    curve = curves_png(history, ["loss", "dpo", "sim", "preference_accuracy"], "step", "G-DPO")
    registered = register_folder(
        ALIGNED_ENCODER, folder,
        params={**asdict(gdpo_config), "cities": ",".join(cities),
                "base_encoder": encoder.name_or_path, "triples": len(triples.anchors),
                "max_dc_triples": config.max_dc_triples, "max_gc_triples": config.max_gc_triples},
        metrics=metrics, dagster_run_id=context.run.run_id,
        tags={"encoder_version": encoder.version},
        images={"gdpo_training.png": curve}, home=lgsid.home_path)
    write_json(lgsid.report_path("global", "aligned_encoder.json"),
               {**metrics, "version": registered.version, "run_id": registered.run_id,
                "encoder_version": encoder.version, "triples": counts})
    return dg.MaterializeResult(metadata={
        **metrics,
        "triples": dg.MetadataValue.json(counts),
        "encoder_version": encoder.version,
        "mlflow_version": registered.version,
        "mlflow_run": dg.MetadataValue.url(registered.run_url),
        "config": dg.MetadataValue.json(asdict(gdpo_config)),
        **png_metadata(curve, lgsid.report_path("plots", "global", "gdpo_training.png"),
                       key="training_curve"),
    })


def _encode_items(encoder: "TextEncoder", dtype: str):
    from lgsid_pipeline.encoder.prompt import item_prompts

    return lambda frame: encoder.encode(item_prompts(frame), dtype=dtype, progress=True)


EMBEDDING_PARTS = ("reference", "aligned")


def embeddings_check_name(part: str) -> str:
    return f"item_embeddings_{part}_complete"


@dg.asset(pool=COMPUTE_POOL,
          deps=["aligned_encoder", "items"], partitions_def=city_partitions,
          group_name="alignment", kinds={"parquet"},
          check_specs=[dg.AssetCheckSpec(embeddings_check_name(part), asset="item_embeddings",
                                         blocking=True,
                                         description=f"one {part} embedding per item, of its "
                                                     "current content")
                       for part in EMBEDDING_PARTS])
def item_embeddings(context: dg.AssetExecutionContext, lgsid: LgsidResource):
    """Reference and aligned embeddings of every item, encoded incrementally, with the
    before/after geography metrics; both parts are audited and published as one version."""
    lgsid.limit_threads(context)
    from lgsid_pipeline.alignment.evaluate import geography_metrics

    city = context.partition_key
    warehouse = lgsid.warehouse
    items = warehouse.read_table("items", city)
    base = lgsid.base_encoder()
    aligned = lgsid.base_encoder()
    adapter = lgsid.champion_folder(ALIGNED_ENCODER)
    aligned.load_adapter(adapter)
    results, encode_seconds = {}, 0.0
    with warehouse.staging(city, "embeddings") as staged:
        for part, encoder in zip(EMBEDDING_PARTS, (base, aligned), strict=True):
            previous = warehouse.read_arrow("item_embeddings", city, part) \
                if warehouse.has_table("item_embeddings", city, part) else None
            started = time.perf_counter()
            result = incremental_embeddings(city, items, previous, encoder.version,
                                            _encode_items(encoder, lgsid.encode_dtype))
            encode_seconds += time.perf_counter() - started
            staged.write_table("item_embeddings", result.table, part=part)
            results[part] = result
            context.log.info(f"{city} {part}: encoded {result.encoded}, reused "
                             f"{result.reused}")
        audits = [Audit(embeddings_check_name(part), "item_embeddings", check_covers(
            items, staged.read_arrow("item_embeddings", part)
            .select(["item_id", "content_hash"]).to_pandas())) for part in EMBEDDING_PARTS]
        pointer = yield from publish_audited(
            warehouse, staged, f"{city} item_embeddings", audits,
            {"run_id": context.run.run_id, "encoder_version": aligned.version})
    reference = embedding_matrix(results["reference"].table)
    after = embedding_matrix(results["aligned"].table)
    changed = results["reference"].encoded + results["aligned"].encoded
    metrics_path = lgsid.report_path("alignment", f"{city}.json")
    figures = None
    if changed or not metrics_path.is_file():
        figures = {"before": geography_metrics(reference, items, reference),
                   "after": geography_metrics(after, items, reference),
                   "encoder_version": aligned.version, "items": len(items)}
        write_json(metrics_path, figures)
        log_run_metrics(ALIGNED_ENCODER, {f"{city}.{stage}.{k}": v
                                          for stage in ("before", "after")
                                          for k, v in figures[stage].items()},
                        home=lgsid.home_path)
    warehouse.refresh_catalog()
    metadata = {
        "dagster/row_count": len(items),
        "version": pointer["version"],
        "encoded": results["aligned"].encoded,
        "reused": results["aligned"].reused,
        "reference_encoded": results["reference"].encoded,
        "encoder_version": aligned.version,
        "encode_seconds": round(encode_seconds, 3),
    }
    if changed:
        metadata["encoded_items_per_s"] = round(changed / encode_seconds, 1)
    if figures:
        metadata["geography"] = dg.MetadataValue.md(_before_after_markdown(figures))
    yield dg.MaterializeResult(metadata=metadata, check_results=[
        check_result(a.name, a.asset, a.outcome) for a in audits])


def _before_after_markdown(figures: dict) -> str:
    rows = ["| metric | before | after |", "|---|---:|---:|"]
    rows += [f"| {k} | {figures['before'][k]:.3f} | {figures['after'][k]:.3f} |"
             for k in figures["before"]]
    return "\n".join(rows)
