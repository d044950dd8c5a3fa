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
from lgsid_pipeline.cleaning import QUARANTINE_COLUMNS
from lgsid_pipeline.defs.resources import (
    LgsidResource,
    check_result,
    city_partitions,
    png_metadata,
    publish_audited,
)
from lgsid_pipeline.ingest import (
    INTERACTION_COLUMNS,
    ITEM_COLUMNS,
    audit_ingest,
    clean_interactions,
    clean_items,
    raw_tables,
)
from lgsid_pipeline.plots import items_map_png

__all__ = ["INTERACTION_COLUMNS", "ITEM_COLUMNS", "ingest_tables"]

STAGE = "ingest"
ITEM_CHECKS = ("items_schema", "items_coordinates_in_range", "items_unique_ids",
               "items_quarantine_rate", "items_counts_reconcile")
INTERACTION_CHECKS = ("interactions_schema", "interactions_quarantine_rate",
                      "interactions_counts_reconcile")


def _checks(asset: str, names: tuple[str, ...]) -> list[dg.AssetCheckSpec]:
    return [dg.AssetCheckSpec(name, asset=asset, blocking=True) for name in names]


@dg.multi_asset(
    specs=[
        dg.AssetSpec("raw_items", group_name="ingest", kinds={"parquet"},
                     description="Every item row of the city's source, as text, nothing dropped."),
        dg.AssetSpec("raw_interactions", group_name="ingest", kinds={"parquet"},
                     description="Every check-in row of the city's source, as text."),
        dg.AssetSpec("items", deps=["raw_items"], group_name="ingest",
                     kinds={"parquet", "duckdb"},
                     description="Clean items with admin levels (spatial join), H3 cell, brand "
                                 "key and content hash."),
        dg.AssetSpec("interactions", deps=["raw_interactions", "items"], group_name="ingest",
                     kinds={"parquet", "duckdb"},
                     description="Clean check-ins (user, item, UTC time) whose item is a clean "
                                 "item of the city."),
    ],
    check_specs=[*_checks("items", ITEM_CHECKS), *_checks("interactions", INTERACTION_CHECKS)],
    partitions_def=city_partitions,
    can_subset=False,
    pool=SOURCE_READ_POOL,
)
def ingest_tables(context: dg.AssetExecutionContext, lgsid: LgsidResource):
    """Read the city's source, clean it, audit the staged tables, publish them as one version."""
    city = context.partition_key
    config = lgsid.cities.get(city)
    warehouse = lgsid.warehouse
    started = time.perf_counter()
    with warehouse.staging(city, STAGE, carry_forward=False) as staged:
        raw_items, raw_events = raw_tables(config, lgsid.home_path / "landing")
        staged.write_table("raw_items", raw_items)
        staged.write_table("raw_interactions", raw_events)
        raw_items = staged.read_table("raw_items")
        display_name = str(raw_items["city_name"].iloc[0]) if len(raw_items) else city
        items = clean_items(raw_items.drop(columns=["city", "city_name"]), config, display_name)
        staged.write_table("items", items.clean)
        staged.write_table("quarantine", items.quarantine[list(QUARANTINE_COLUMNS)],
                           part="items")
        events = clean_interactions(staged.read_table("raw_interactions").drop(columns=["city"]),
                                    staged.read_table("items"), city)
        staged.write_table("interactions", events.clean)
        staged.write_table("quarantine", events.quarantine[list(QUARANTINE_COLUMNS)],
                           part="interactions")
        audits = audit_ingest(staged, lgsid.max_quarantine_rate)
        pointer = yield from publish_audited(warehouse, staged, f"{city} ingest", audits, {
            "run_id": context.run.run_id,
            "checks": {a.name: {"passed": a.outcome.passed, "description": a.outcome.description}
                       for a in audits}})
    warehouse.refresh_catalog()
    seconds = time.perf_counter() - started
    clean, quarantine = items.clean, items.quarantine
    item_reasons = quarantine["reason"].value_counts().to_dict()
    event_reasons = events.quarantine["reason"].value_counts().to_dict()
    context.log.info(
        f"{city}: published ingest version {pointer['version']}: {len(raw_items)} raw items "
        f"({len(clean)} clean, {len(quarantine)} quarantined {item_reasons}), "
        f"{len(raw_events)} raw interactions ({len(events.clean)} clean, "
        f"{len(events.quarantine)} quarantined {event_reasons}) in {seconds:.1f}s")
    common = {"version": pointer["version"], "seconds": round(seconds, 2)}
    checks = {a.name: check_result(a.name, a.asset, a.outcome) for a in audits}
    yield dg.MaterializeResult(
        asset_key="raw_items",
        metadata={**common, "source": config.source,
                  "source_path": dg.MetadataValue.path(config.path),
                  "dagster/row_count": len(raw_items)})
    yield dg.MaterializeResult(
        asset_key="raw_interactions",
        metadata={**common, "source": config.source, "dagster/row_count": len(raw_events)})
    map_png = items_map_png(clean, display_name)

    def share(column: str) -> float:
        return float(clean[column].notna().mean()) if len(clean) else 0.0

    yield dg.MaterializeResult(
        asset_key="items",
        metadata={
            **common,
            "dagster/row_count": len(clean),
            "raw_rows": len(raw_items),
            "quarantined": len(quarantine),
            "quarantine_by_reason": dg.MetadataValue.json(item_reasons),
            "admin_level1_share": share("admin_l1_code"),
            "admin_level2_share": share("admin_l2_code"),
            "outside_share": float(clean["outside"].mean()) if len(clean) else 0.0,
            "brands": int(clean["brand"].nunique()),
            **png_metadata(lgsid.reports, map_png, city, "items_map"),
        },
        check_results=[checks[name] for name in ITEM_CHECKS])
    clean_events = events.clean
    yield dg.MaterializeResult(
        asset_key="interactions",
        metadata={
            **common,
            "dagster/row_count": len(clean_events),
            "raw_rows": len(raw_events),
            "quarantined": len(events.quarantine),
            "quarantine_by_reason": dg.MetadataValue.json(event_reasons),
            "users": int(clean_events["user_id"].nunique()),
            "items_visited": int(clean_events["item_id"].nunique()),
            "first_ts": str(clean_events["ts"].min()) if len(clean_events) else "",
            "last_ts": str(clean_events["ts"].max()) if len(clean_events) else "",
        },
        check_results=[checks[name] for name in INTERACTION_CHECKS])
