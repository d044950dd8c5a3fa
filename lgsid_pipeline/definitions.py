"""The Dagster code location: every asset, check, job and resource of lgsid_pipeline."""

import dagster as dg

from lgsid_pipeline.defs.ingest import interactions, items, raw_city_tables
from lgsid_pipeline.defs.resources import LgsidResource

CITY_JOB_NAME = "city_pipeline"
GLOBAL_JOB_NAME = "global_models"

CITY_ASSETS = [raw_city_tables, items, interactions]
GLOBAL_ASSETS: list = []

city_job = dg.define_asset_job(
    CITY_JOB_NAME,
    selection=dg.AssetSelection.assets(*CITY_ASSETS),
    description="Per-city assets, for one city partition.",
)

defs = dg.Definitions(
    assets=[*CITY_ASSETS, *GLOBAL_ASSETS],
    jobs=[city_job],
    resources={"lgsid": LgsidResource()},
)


def city_job_def() -> dg.JobDefinition:
    """The per-city job (module level so multiprocess runs can reconstruct it)."""
    return defs.resolve_job_def(CITY_JOB_NAME)


def global_job_def() -> dg.JobDefinition:
    """The job of global (all-city) models."""
    return defs.resolve_job_def(GLOBAL_JOB_NAME)  # defined once global models exist
