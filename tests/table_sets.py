"""A small ingest table set published straight through the warehouse (no Dagster), and what
readers see of it: shared by the write-audit-publish tests and the SIGKILL test's child
process, so it imports only pandas and the warehouse."""

from __future__ import annotations

import pandas as pd

from lgsid_pipeline.warehouse import TABLES, Warehouse

CITY = "wap"
PARTS = [(t, "data") for t in TABLES if t != "quarantine"] + [
    ("quarantine", "items"),
    ("quarantine", "interactions"),
]


def frames(n: int, city: str = CITY) -> dict[tuple[str, str], pd.DataFrame]:
    """A table set whose every table has ``n`` rows (so a mix of sets is visible)."""
    return {
        (table, part): pd.DataFrame(
            {"city": [city] * n, "source_row": [str(i) for i in range(n)], "table_name": [part] * n}
        )
        for table, part in PARTS
    }


def publish(warehouse: Warehouse, n: int) -> dict:
    with warehouse.staging(CITY, "ingest") as staged:
        for (table, part), frame in frames(n).items():
            staged.write_table(table, frame, part)
        return warehouse.publish(staged)


def visible_sizes(warehouse: Warehouse) -> set[int]:
    """Row counts readers see across the whole set, via the library and the DuckDB views."""
    sizes = {warehouse.read_arrow(table, CITY, part).num_rows for table, part in PARTS}
    with warehouse.connect() as con:
        for table in TABLES:
            n = con.execute(f"select count(*) from {table}").fetchone()[0]
            sizes.add(n // 2 if table == "quarantine" else n)
    return sizes
