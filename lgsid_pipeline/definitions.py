"""The Dagster code location: every asset, check, job and resource of lgsid_pipeline."""

from __future__ import annotations

import dagster as dg

from lgsid_pipeline.defs.ingest import interactions, items, raw_city_tables
from lgsid_pipeline.defs.resources import LgsidResource

CITY_JOB_NAME = "city_pipeline"

city_job = dg.define_asset_job(
    CITY_JOB_NAME,
    selection=dg.AssetSelection.all(),
    description="Every per-city asset, for one city partition.",
)

defs = dg.Definitions(
    assets=[raw_city_tables, items, interactions],
    jobs=[city_job],
    resources={"lgsid": LgsidResource()},
)


def city_job_def() -> dg.JobDefinition:
    """The per-city job (module level so multiprocess runs can reconstruct it)."""
    return defs.resolve_job_def(CITY_JOB_NAME)
