"""The Dagster code location: every asset, check, job and resource of lgsid_pipeline."""

import dagster as dg

from lgsid_pipeline.catalog import CITY_JOB_NAME, GLOBAL_JOB_NAME, NIGHTLY_JOB_NAME
from lgsid_pipeline.defs.alignment import (
    aligned_encoder,
    cooccurrence_pairs,
    geo_negatives,
    geo_pairs,
    item_embeddings,
    reward_model,
)
from lgsid_pipeline.defs.automation import (
    STEP_RETRIES,
    build_retrain_sensor,
    landing_sensor,
    nightly_job,
    nightly_retokenization,
    weekly_global_models,
)
from lgsid_pipeline.defs.executor import pipeline_executor
from lgsid_pipeline.defs.generative import (
    GENERATIVE_ASSETS,
    generative_baseline,
    user_topk_cache,
)
from lgsid_pipeline.defs.ingest import ingest_tables
from lgsid_pipeline.defs.loggers import LOGGERS
from lgsid_pipeline.defs.recommenders import CTR_ASSETS, evaluation_report, recommender_datasets
from lgsid_pipeline.defs.resources import WorkspaceResource
from lgsid_pipeline.defs.tokenizer import SEMANTIC_ID_ASSET_DEFS, TOKENIZER_ASSET_DEFS

CITY_ASSETS = [
    ingest_tables,
    geo_negatives,
    cooccurrence_pairs,
    geo_pairs,
    item_embeddings,
    *SEMANTIC_ID_ASSET_DEFS,
    recommender_datasets,
    *CTR_ASSETS,
    *GENERATIVE_ASSETS,
    generative_baseline,
    user_topk_cache,
    evaluation_report,
]
GLOBAL_ASSETS = [reward_model, aligned_encoder, *TOKENIZER_ASSET_DEFS]

city_job = dg.define_asset_job(
    CITY_JOB_NAME,
    selection=dg.AssetSelection.assets(*CITY_ASSETS),
    description="Per-city assets, for one city partition.",
    op_retry_policy=STEP_RETRIES,
)
global_job = dg.define_asset_job(
    GLOBAL_JOB_NAME,
    selection=dg.AssetSelection.assets(*GLOBAL_ASSETS),
    description="Models trained on every city: reward model, aligned encoder, tokenizers.",
    op_retry_policy=STEP_RETRIES,
)

defs = dg.Definitions(
    assets=[*CITY_ASSETS, *GLOBAL_ASSETS],
    jobs=[city_job, global_job, nightly_job],
    schedules=[nightly_retokenization, weekly_global_models],
    sensors=[landing_sensor, build_retrain_sensor([city_job, global_job])],
    resources={"workspace": WorkspaceResource()},
    loggers=LOGGERS,
    executor=pipeline_executor(),  # LGSID_EXECUTOR=k8s: one pod per step
)


def city_job_def() -> dg.JobDefinition:
    """The per-city job (module level so multiprocess runs can reconstruct it)."""
    return defs.resolve_job_def(CITY_JOB_NAME)


def global_job_def() -> dg.JobDefinition:
    """The job of global (all-city) models."""
    return defs.resolve_job_def(GLOBAL_JOB_NAME)


def nightly_job_def() -> dg.JobDefinition:
    """The nightly re-tokenization job (also what the landing sensor requests)."""
    return defs.resolve_job_def(NIGHTLY_JOB_NAME)


# Dagster job name -> the module-level function ``runner`` reconstructs it from.
JOB_FUNCTIONS = {
    CITY_JOB_NAME: "city_job",
    GLOBAL_JOB_NAME: "global_job",
    NIGHTLY_JOB_NAME: "nightly_job",
}
