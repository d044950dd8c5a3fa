"""Ingest: raw_items, raw_interactions -> items, interactions (per city), with checks.

The four assets are one step (a non-subsettable multi-asset): their tables and the
quarantine are written, audited and published as one version of the city's ``ingest``
stage (:func:`lgsid_pipeline.stages.ingest.ingest_city`). Dagster would run blocking asset
checks after the tables were replaced, so the audit runs inside the step, on the staged
files: a failed check is reported, the step fails naming it, and nothing is published.
"""

import dagster as dg

from lgsid_pipeline.catalog import SOURCE_READ_POOL
from lgsid_pipeline.cities import CityRegistry
from lgsid_pipeline.defs.resources import (
    WorkspaceResource,
    audited,
    check_specs,
    city_partitions,
    materialized,
)
from lgsid_pipeline.ingest import INGEST_CHECKS, INGEST_TABLES
from lgsid_pipeline.stages.ingest import ingest_city


class IngestConfig(dg.Config):
    """``full``: read and clean the whole source even when no input file changed."""

    full: bool = False


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            name,
            deps=deps,
            group_name="ingest",
            kinds={"parquet", "duckdb"} if deps else {"parquet"},
            description=description,
        )
        for name, (deps, description) in INGEST_TABLES.items()
    ],
    check_specs=[
        spec
        for asset, checks in INGEST_CHECKS.items()
        for spec in check_specs(checks, asset, blocking=True)
    ],
    partitions_def=city_partitions,
    can_subset=False,
    pool=SOURCE_READ_POOL,
)
def ingest_tables(
    context: dg.AssetExecutionContext, config: IngestConfig, workspace: WorkspaceResource
):
    """Read the city's source, clean it, audit the staged tables, publish them as one version
    (nothing is read when no source, landed or boundary file changed, unless ``full``)."""
    store = workspace.stage_context(context)
    published = yield from audited(
        ingest_city,
        store,
        CityRegistry(store.home).get(context.partition_key),
        workspace.max_quarantine_rate,
        full=config.full,
    )
    for asset, metadata in published.asset_metadata().items():
        yield materialized(workspace, metadata, published.audits_of(asset), asset_key=asset)
