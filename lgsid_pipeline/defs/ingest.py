"""Ingest stage: raw_items, raw_interactions -> items, interactions (per city), with checks."""


import time

import dagster as dg

from lgsid_pipeline.cleaning import QUARANTINE_COLUMNS
from lgsid_pipeline.defs.resources import (
    LgsidResource,
    check_result,
    city_partitions,
    png_metadata,
)
from lgsid_pipeline.ingest import clean_interactions, clean_items, raw_tables
from lgsid_pipeline.plots import items_map_png
from lgsid_pipeline.quality import (
    check_coordinates,
    check_quarantine_rate,
    check_reconciles,
    check_schema,
    check_unique,
)

ITEM_COLUMNS = ("city", "item_id", "name", "category", "brand", "latitude", "longitude",
                "admin_l1_code", "admin_l2_code", "admin_l3_code", "h3_cell", "outside",
                "content_hash")
INTERACTION_COLUMNS = ("city", "user_id", "item_id", "ts")


def _checks(asset: str, names: tuple[str, ...]) -> list[dg.AssetCheckSpec]:
    return [dg.AssetCheckSpec(name, asset=asset, blocking=True) for name in names]


@dg.multi_asset(
    specs=[
        dg.AssetSpec("raw_items", group_name="ingest", kinds={"parquet"},
                     description="Every item row of the city's source, as text, nothing dropped."),
        dg.AssetSpec("raw_interactions", group_name="ingest", kinds={"parquet"},
                     description="Every check-in row of the city's source, as text."),
    ],
    partitions_def=city_partitions,
    can_subset=False,
    pool="source_read",
)
def raw_city_tables(context: dg.AssetExecutionContext, lgsid: LgsidResource):
    """Read the registered source of one city into the raw tables."""
    city = context.partition_key
    config = lgsid.cities.get(city)
    started = time.perf_counter()
    items, interactions = raw_tables(config, lgsid.home_path / "landing")
    lgsid.warehouse.write_table("raw_items", city, items)
    lgsid.warehouse.write_table("raw_interactions", city, interactions)
    lgsid.warehouse.refresh_catalog()
    seconds = time.perf_counter() - started
    context.log.info(f"{city}: read {len(items)} raw items and {len(interactions)} raw "
                     f"interactions from {config.source} {config.path} in {seconds:.1f}s")
    common = {"source": config.source, "source_path": dg.MetadataValue.path(config.path),
              "seconds": round(seconds, 2)}
    yield dg.MaterializeResult(asset_key="raw_items",
                               metadata={**common, "dagster/row_count": len(items)})
    yield dg.MaterializeResult(asset_key="raw_interactions",
                               metadata={**common, "dagster/row_count": len(interactions)})


@dg.asset(
    deps=["raw_items"],
    partitions_def=city_partitions,
    group_name="ingest",
    kinds={"parquet", "duckdb"},
    check_specs=_checks("items", ("items_schema", "items_coordinates_in_range",
                                  "items_unique_ids", "items_quarantine_rate",
                                  "items_counts_reconcile")),
)
def items(context: dg.AssetExecutionContext, lgsid: LgsidResource):
    """Clean items with admin levels (spatial join), H3 cell, brand key and content hash."""
    city = context.partition_key
    config = lgsid.cities.get(city)
    warehouse = lgsid.warehouse
    raw = warehouse.read_table("raw_items", city)
    display_name = str(raw["city_name"].iloc[0]) if len(raw) else city
    result = clean_items(raw.drop(columns=["city", "city_name"]), config, display_name)
    clean, quarantine = result.clean, result.quarantine
    warehouse.write_table("items", city, clean)
    warehouse.write_table("quarantine", city, quarantine[list(QUARANTINE_COLUMNS)], part="items")
    warehouse.refresh_catalog()
    reasons = quarantine["reason"].value_counts().to_dict()
    context.log.info(f"{city}: {len(clean)} clean items, {len(quarantine)} quarantined {reasons}")
    map_png = items_map_png(clean, display_name)
    metadata = {
        "dagster/row_count": len(clean),
        "raw_rows": len(raw),
        "quarantined": len(quarantine),
        "quarantine_by_reason": dg.MetadataValue.json(reasons),
        "admin_level1_share": float(clean["admin_l1_code"].notna().mean()) if len(clean) else 0.0,
        "admin_level2_share": float(clean["admin_l2_code"].notna().mean()) if len(clean) else 0.0,
        "outside_share": float(clean["outside"].mean()) if len(clean) else 0.0,
        "brands": int(clean["brand"].nunique()),
        **png_metadata(map_png, lgsid.home_path / "reports" / "plots" / city / "items_map.png"),
    }
    checks = [
        check_result("items_schema", "items", check_schema(clean, ITEM_COLUMNS)),
        check_result("items_coordinates_in_range", "items", check_coordinates(clean)),
        check_result("items_unique_ids", "items", check_unique(clean, ["item_id"])),
        check_result("items_quarantine_rate", "items",
                     check_quarantine_rate(len(clean), len(quarantine), lgsid.max_quarantine_rate)),
        check_result("items_counts_reconcile", "items",
                     check_reconciles(len(raw), len(clean), len(quarantine))),
    ]
    return dg.MaterializeResult(metadata=metadata, check_results=checks)


@dg.asset(
    deps=["raw_interactions", "items"],
    partitions_def=city_partitions,
    group_name="ingest",
    kinds={"parquet", "duckdb"},
    check_specs=_checks("interactions", ("interactions_schema", "interactions_quarantine_rate",
                                         "interactions_counts_reconcile")),
)
def interactions(context: dg.AssetExecutionContext, lgsid: LgsidResource):
    """Clean check-ins (user, item, UTC time) whose item is a clean item of the city."""
    city = context.partition_key
    warehouse = lgsid.warehouse
    raw = warehouse.read_table("raw_interactions", city)
    clean_item_table = warehouse.read_table("items", city)
    result = clean_interactions(raw.drop(columns=["city"]), clean_item_table, city)
    clean, quarantine = result.clean, result.quarantine
    warehouse.write_table("interactions", city, clean)
    warehouse.write_table("quarantine", city, quarantine[list(QUARANTINE_COLUMNS)],
                          part="interactions")
    warehouse.refresh_catalog()
    reasons = quarantine["reason"].value_counts().to_dict()
    context.log.info(f"{city}: {len(clean)} clean interactions, {len(quarantine)} quarantined "
                     f"{reasons}")
    metadata = {
        "dagster/row_count": len(clean),
        "raw_rows": len(raw),
        "quarantined": len(quarantine),
        "quarantine_by_reason": dg.MetadataValue.json(reasons),
        "users": int(clean["user_id"].nunique()),
        "items_visited": int(clean["item_id"].nunique()),
        "first_ts": str(clean["ts"].min()) if len(clean) else "",
        "last_ts": str(clean["ts"].max()) if len(clean) else "",
    }
    checks = [
        check_result("interactions_schema", "interactions",
                     check_schema(clean, INTERACTION_COLUMNS)),
        check_result("interactions_quarantine_rate", "interactions",
                     check_quarantine_rate(len(clean), len(quarantine), lgsid.max_quarantine_rate)),
        check_result("interactions_counts_reconcile", "interactions",
                     check_reconciles(len(raw), len(clean), len(quarantine))),
    ]
    return dg.MaterializeResult(metadata=metadata, check_results=checks)
