"""The landing folder source: item and check-in files dropped over time into one folder.

``LGSID_HOME/landing/<city>/`` holds any number of ``items*.parquet|csv`` and
``checkins*.parquet|csv`` files in the synthetic layout (items: ``item_id, name, category,
brand, latitude, longitude``; check-ins: ``user_id, item_id, timestamp`` and optionally
``latitude, longitude``). Every file is read on each ingest, so the city's tables always hold
everything landed so far; downstream work stays incremental (content hashes). An item id
landed twice is quarantined as a duplicate by the cleaning rules, never silently replaced.
"""

from __future__ import annotations

import hashlib
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
from lgsid_pipeline.sources.tables import SYNTHETIC_LAYOUT

ITEM_PATTERN = "items*"
CHECKIN_PATTERN = "checkins*"
SUFFIXES = (".parquet", ".csv")


def landing_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """(item files, check-in files) of a landing folder, in name order."""

    def matching(pattern: str) -> list[Path]:
        return sorted(p for p in folder.glob(pattern) if p.suffix in SUFFIXES and p.is_file())

    return matching(ITEM_PATTERN), matching(CHECKIN_PATTERN)


def landed_file_stats(folder: Path) -> dict[str, str]:
    """Every landed file of a folder, by name: ``"<size>:<mtime_ns>"`` (empty when none)."""
    if not folder.is_dir():
        return {}
    return {
        path.name: f"{path.stat().st_size}:{path.stat().st_mtime_ns}"
        for group in landing_files(folder)
        for path in group
    }


def landing_fingerprint(folder: Path) -> str:
    """Changes whenever a file is added, removed or rewritten (name, size, mtime)."""
    digest = hashlib.sha256()
    for path in sorted(p for group in landing_files(folder) for p in group):
        stat = path.stat()
        digest.update(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _read_file(path: Path, columns: dict[str, str], optional: tuple[str, ...]) -> dict[str, list]:
    """Our columns of one file as text lists (CSV values kept verbatim; empty = missing)."""
    if path.suffix == ".parquet":
        return read_parquet_columns(path, "landing file", columns, optional=optional)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise SourceError(f"landing file is not a readable CSV: {path} ({exc})") from exc
    missing = [
        src for ours, src in columns.items() if src not in frame.columns and ours not in optional
    ]
    if missing:
        raise SourceError(
            f"landing file {path} lacks column(s) {missing}; it has {list(frame.columns)}"
        )
    return {
        ours: [v if v != "" else None for v in frame[src].tolist()]
        for ours, src in columns.items()
        if src in frame.columns
    }


def read_landing_files(
    folder: Path, names: set[str] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Raw items and raw check-ins of every file in a landing folder (no derived rows), or
    of the files named in ``names`` only."""
    item_files, checkin_files = landing_files(folder)
    if names is not None:
        item_files = [p for p in item_files if p.name in names]
        checkin_files = [p for p in checkin_files if p.name in names]
    items = [
        raw_frame(
            RAW_ITEM_COLUMNS,
            {
                **(data := _read_file(path, SYNTHETIC_LAYOUT.item_columns, ("category", "brand"))),
                "source_row": [f"{path.name}:{i + 1}" for i in range(len(data["item_id"]))],
                "origin": [path.stem] * len(data["item_id"]),
            },
        )
        for path in item_files
    ]
    checkins = [
        raw_frame(
            RAW_INTERACTION_COLUMNS,
            {
                **(
                    data := _read_file(
                        path,
                        SYNTHETIC_LAYOUT.checkin_columns,
                        SYNTHETIC_LAYOUT.optional_checkin_columns,
                    )
                ),
                "source_row": [f"{path.name}:{i + 1}" for i in range(len(data["user_id"]))],
            },
        )
        for path in checkin_files
    ]
    item_table = pd.concat(items, ignore_index=True) if items else raw_frame(RAW_ITEM_COLUMNS, {})
    interactions = (
        pd.concat(checkins, ignore_index=True)
        if checkins
        else raw_frame(RAW_INTERACTION_COLUMNS, {})
    )
    return item_table, interactions


def read_landing_source(folder: Path, default_name: str) -> SourceData:
    """Every landed file of a city as raw items and raw interactions."""
    if not folder.is_dir():
        raise SourceError(f"landing folder not found: {folder}")
    item_files, checkin_files = landing_files(folder)
    if not item_files and not checkin_files:
        raise SourceError(
            f"landing folder {folder} has no items*.parquet|csv or checkins*.parquet|csv files"
        )
    items, interactions = read_landing_files(folder)
    extra = checkin_only_items(interactions, items["item_id"].dropna())
    return SourceData(
        items=pd.concat([items, extra], ignore_index=True),
        interactions=interactions,
        display_name=default_name,
    )


def with_landed_additions(data: SourceData, folder: Path) -> SourceData:
    """A city's source data plus what was landed for it in ``folder`` (if anything).

    Landed rows come after the source's own, so an item id landed again is quarantined as a
    duplicate and the source's row stays. Check-ins of items known to neither get the
    check-in-only item rows the source readers derive.
    """
    if not folder.is_dir() or not any(landing_files(folder)):
        return data
    items, interactions = read_landing_files(folder)
    known = pd.concat([data.items["item_id"], items["item_id"]]).dropna()
    extra = checkin_only_items(interactions, known)
    return SourceData(
        items=pd.concat([data.items, items, extra], ignore_index=True),
        interactions=pd.concat([data.interactions, interactions], ignore_index=True),
        display_name=data.display_name,
    )
