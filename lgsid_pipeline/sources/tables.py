"""Readers for sources that come as an item table plus a check-in table in Parquet.

Gowalla New York (``spots.parquet`` + ``checkins.parquet``) and the synthetic demo cities
(``items.parquet`` + ``checkins.parquet``) share this path; they differ only in file and
column names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from lgsid_pipeline.sources.base import (
    RAW_INTERACTION_COLUMNS,
    RAW_ITEM_COLUMNS,
    SourceData,
    SourceError,
    checkin_only_items,
    raw_frame,
    read_parquet_columns,
)


@dataclass(frozen=True)
class TableLayout:
    """File and column names of one two-table Parquet source."""

    items_file: str
    checkins_file: str
    item_columns: dict[str, str]
    checkin_columns: dict[str, str]
    optional_checkin_columns: tuple[str, ...] = field(default=())
    display_name_column: str | None = None


GOWALLA_LAYOUT = TableLayout(
    items_file="spots.parquet",
    checkins_file="checkins.parquet",
    item_columns={
        "item_id": "spot_id",
        "name": "spot_name",
        "latitude": "latitude",
        "longitude": "longitude",
    },
    checkin_columns={
        "user_id": "user_id",
        "item_id": "spot_id",
        "timestamp": "utc_time",
        "latitude": "latitude",
        "longitude": "longitude",
    },
    display_name_column="city",
)

SYNTHETIC_LAYOUT = TableLayout(
    items_file="items.parquet",
    checkins_file="checkins.parquet",
    item_columns={
        "item_id": "item_id",
        "name": "name",
        "category": "category",
        "brand": "brand",
        "latitude": "latitude",
        "longitude": "longitude",
    },
    checkin_columns={
        "user_id": "user_id",
        "item_id": "item_id",
        "timestamp": "timestamp",
        "latitude": "latitude",
        "longitude": "longitude",
    },
    optional_checkin_columns=("latitude", "longitude"),
)


def read_table_source(folder: Path, layout: TableLayout, default_name: str) -> SourceData:
    """Read a two-table source folder into raw items and raw interactions."""
    if not folder.exists():
        raise SourceError(f"source folder not found: {folder}")
    if not folder.is_dir():
        raise SourceError(
            f"source path must be a folder holding {layout.items_file} and "
            f"{layout.checkins_file}: {folder}"
        )
    item_cols = dict(layout.item_columns)
    if layout.display_name_column:
        item_cols["display_name"] = layout.display_name_column
    item_data = read_parquet_columns(
        folder / layout.items_file, "item file", item_cols, optional=("display_name",)
    )
    checkin_data = read_parquet_columns(
        folder / layout.checkins_file,
        "check-in file",
        layout.checkin_columns,
        optional=layout.optional_checkin_columns,
    )
    n_items = len(item_data["item_id"])
    items = raw_frame(
        RAW_ITEM_COLUMNS,
        {
            **item_data,
            "source_row": [f"{layout.items_file}:{i + 1}" for i in range(n_items)],
            "origin": [layout.items_file.removesuffix(".parquet")] * n_items,
        },
    )
    n_checkins = len(checkin_data["user_id"])
    interactions = raw_frame(
        RAW_INTERACTION_COLUMNS,
        {
            **checkin_data,
            "source_row": [f"{layout.checkins_file}:{i + 1}" for i in range(n_checkins)],
        },
    )
    extra = checkin_only_items(interactions, items["item_id"].dropna())
    items = pd.concat([items, extra], ignore_index=True)
    names = [n for n in item_data.get("display_name", []) if n]
    display_name = max(set(names), key=names.count) if names else default_name
    return SourceData(items=items, interactions=interactions, display_name=display_name)
