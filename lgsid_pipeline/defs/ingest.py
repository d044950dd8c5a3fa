"""Ingest stage: raw_items, raw_interactions -> items, interactions (per city), with checks.

Write, audit, publish. The four assets are one step (a non-subsettable multi-asset), because
their tables (and the quarantine table) are published together as one version of the city's
``ingest`` stage: the step writes every table to a staging folder, runs the blocking checks on
the tables re-read from disk, and only when all of them pass switches the city's pointer to
the new version (``Warehouse.publish``). Dagster runs blocking asset checks after an asset's
materialization, which would be after the tables were replaced, so the audit runs inside the
step: a failing check is still reported as a failed asset check, then the step raises a
``Failure`` naming each failed check and its figures; nothing is published and no downstream
step runs. When every check passes, the reported check results are those of the published
version (the same files).
"""

import time

import dagster as dg

from lgsid_pipeline.catalog import SOURCE_READ_POOL
from lgsid_pipeline.defs.resources import (
    LgsidResource,
    check_result,
    city_partitions,
    png_metadata,
    publish_audited,
)
from lgsid_pipeline.ingest import INTERACTION_COLUMNS, ITEM_COLUMNS
from lgsid_pipeline.stages.ingest import STAGE, stage_ingest

__all__ = ["INTERACTION_COLUMNS", "ITEM_COLUMNS", "ingest_tables"]

ITEM_CHECKS = (
    "items_schema",
    "items_coordinates_in_range",
    "items_unique_ids",
    "items_quarantine_rate",
    "items_counts_reconcile",
)
INTERACTION_CHECKS = (
    "interactions_schema",
    "interactions_quarantine_rate",
    "interactions_counts_reconcile",
)


def _checks(asset: str, names: tuple[str, ...]) -> list[dg.AssetCheckSpec]:
    return [dg.AssetCheckSpec(name, asset=asset, blocking=True) for name in names]


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "raw_items",
            group_name="ingest",
            kinds={"parquet"},
            description="Every item row of the city's source, as text, nothing dropped.",
        ),
        dg.AssetSpec(
            "raw_interactions",
            group_name="ingest",
            kinds={"parquet"},
            description="Every check-in row of the city's source, as text.",
        ),
        dg.AssetSpec(
            "items",
            deps=["raw_items"],
            group_name="ingest",
            kinds={"parquet", "duckdb"},
            description="Clean items with admin levels (spatial join), H3 cell, brand "
            "key and content hash.",
        ),
        dg.AssetSpec(
            "interactions",
            deps=["raw_interactions", "items"],
            group_name="ingest",
            kinds={"parquet", "duckdb"},
            description="Clean check-ins (user, item, UTC time) whose item is a clean "
            "item of the city.",
        ),
    ],
    check_specs=[*_checks("items", ITEM_CHECKS), *_checks("interactions", INTERACTION_CHECKS)],
    partitions_def=city_partitions,
    can_subset=False,
    pool=SOURCE_READ_POOL,
)
def ingest_tables(context: dg.AssetExecutionContext, lgsid: LgsidResource):
    """Read the city's source, clean it, audit the staged tables, publish them as one version."""
    city, warehouse = context.partition_key, lgsid.warehouse
    config = lgsid.cities.get(city)
    started = time.perf_counter()
    with warehouse.staging(city, STAGE, carry_forward=False) as staged:
        ingest = stage_ingest(
            config, staged, lgsid.home_path / "landing", lgsid.max_quarantine_rate
        )
        pointer = yield from publish_audited(
            warehouse,
            staged,
            f"{city} ingest",
            ingest.audits,
            {
                "run_id": context.run.run_id,
                "checks": {
                    a.name: {"passed": a.outcome.passed, "description": a.outcome.description}
                    for a in ingest.audits
                },
            },
        )
    warehouse.refresh_catalog()
    seconds = time.perf_counter() - started
    context.log.info(
        f"{city}: published ingest version {pointer['version']}: "
        f"{ingest.summary()} in {seconds:.1f}s"
    )
    common = {"version": pointer["version"], "seconds": round(seconds, 2)}
    checks = {a.name: check_result(a.name, a.asset, a.outcome) for a in ingest.audits}
    for asset, rows in (
        ("raw_items", len(ingest.raw_items)),
        ("raw_interactions", len(ingest.raw_events)),
    ):
        yield dg.MaterializeResult(
            asset_key=asset,
            metadata={
                **common,
                "source": config.source,
                "dagster/row_count": rows,
                **(
                    {"source_path": dg.MetadataValue.path(config.path)}
                    if asset == "raw_items"
                    else {}
                ),
            },
        )
    for asset, figures, names, extra in (
        (
            "items",
            ingest.item_figures(),
            ITEM_CHECKS,
            png_metadata(lgsid.reports, ingest.items_map(), city, "items_map"),
        ),
        ("interactions", ingest.interaction_figures(), INTERACTION_CHECKS, {}),
    ):
        rows = figures.pop("rows")
        reasons = dg.MetadataValue.json(figures.pop("quarantine_by_reason"))
        yield dg.MaterializeResult(
            asset_key=asset,
            metadata={
                **common,
                "dagster/row_count": rows,
                "quarantine_by_reason": reasons,
                **figures,
                **extra,
            },
            check_results=[checks[name] for name in names],
        )
