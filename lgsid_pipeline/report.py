"""`lgsid report`: the latest figures of one city, read from the warehouse."""

from __future__ import annotations

from typing import Any

import duckdb

from lgsid_pipeline.catalog import REWARD_MODEL_ASSET
from lgsid_pipeline.config import sql_text, validate_city_slug
from lgsid_pipeline.reports import ReportStore
from lgsid_pipeline.warehouse import TABLES, Warehouse


def _count(
    con: duckdb.DuckDBPyConnection, warehouse: Warehouse, table: str, city: str
) -> int | None:
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}")
    if not any(
        warehouse.has_table(table, city, part) for part in ("data", "items", "interactions")
    ):
        return None
    row = con.execute(sql_text("count_rows.sql").format(table=table), {"city": city}).fetchone()
    return int(row[0]) if row else 0


def _row(con: duckdb.DuckDBPyConnection, sql_file: str, city: str) -> dict[str, Any]:
    cursor = con.execute(sql_text(sql_file), {"city": city})
    names = [d[0] for d in cursor.description]
    values = cursor.fetchone() or (None,) * len(names)
    return {
        k: (v.isoformat() if hasattr(v, "isoformat") else v)
        for k, v in zip(names, values, strict=True)
    }


def city_report(warehouse: Warehouse, city: str, source: dict[str, Any] | None = None) -> dict:
    """Row counts, quarantine counts by reason, admin coverage and reconciliation of a city.

    Every table figure comes from one connection, whose views are pinned to the city's
    published ingest version when it opens: a publish meanwhile cannot mix two versions.
    """
    validate_city_slug(city)
    report: dict[str, Any] = {"city": city}
    if source:
        report["source"] = source
    quarantine_by_table: dict[str, dict[str, int]] = {}
    quarantine: dict[str, int] = {}
    with warehouse.connect() as con:
        if _count(con, warehouse, "quarantine", city) is not None:
            rows = con.execute(sql_text("report_quarantine.sql"), {"city": city}).df()
            for row in rows.itertuples():
                quarantine_by_table.setdefault(row.table_name, {})[row.reason] = int(row.rows)
                quarantine[row.reason] = quarantine.get(row.reason, 0) + int(row.rows)
        for table, sql_file in (
            ("items", "report_items.sql"),
            ("interactions", "report_interactions.sql"),
        ):
            if not warehouse.has_table(table, city):
                continue
            figures = _row(con, sql_file, city)
            raw_rows = _count(con, warehouse, f"raw_{table}", city)
            quarantined = sum(quarantine_by_table.get(table, {}).values())
            figures["raw_rows"] = raw_rows
            figures["quarantined"] = quarantined
            figures["reconciles"] = raw_rows == figures["rows"] + quarantined
            report[table] = figures
        published = warehouse.published(city, "ingest")
    if published:
        report["ingest_version"] = published["version"]
    report["quarantine"] = quarantine
    report["quarantine_by_table"] = quarantine_by_table
    alignment = alignment_report(warehouse, city)
    if alignment:
        report["alignment"] = alignment
    tokenizers = tokenizers_report(warehouse, city)
    if tokenizers:
        report["tokenizers"] = tokenizers
    reports = ReportStore(warehouse.home)
    results = reports.read(reports.city_summary(city)) or {}
    for section in ("discriminative", "generative"):
        if section in results:
            report[section] = results[section]
    return report


def tokenizers_report(warehouse: Warehouse, city: str) -> dict[str, dict]:
    """Per tokenizer kind, the health and geography of the city's latest semantic IDs."""
    return ReportStore(warehouse.home).tokenizer_codes_reports(city)


def alignment_report(warehouse: Warehouse, city: str) -> dict[str, Any] | None:
    """Before/after geography of the city's embeddings and the reward model's accuracy."""
    reports = ReportStore(warehouse.home)
    figures = reports.read(reports.alignment(city))
    reward = reports.read(reports.global_model(REWARD_MODEL_ASSET))
    if figures is None and reward is None:
        return None
    out: dict[str, Any] = {}
    if figures:
        out["before"] = figures["before"]
        out["after"] = figures["after"]
        out["encoder_version"] = figures.get("encoder_version")
    if reward:
        out["reward"] = {
            "top1_accuracy": reward["top1_accuracy"],
            "kendall_tau": reward["kendall_tau"],
        }
    return out
