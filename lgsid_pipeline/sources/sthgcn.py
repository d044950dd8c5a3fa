"""Reader for GETNext's Foursquare New York split, the one STHGCN and later papers evaluate on.

A folder with ``NYC_train.csv``, ``NYC_val.csv`` and ``NYC_test.csv`` (comma-separated, with
a header; columns ``user_id, POI_id, POI_catid, POI_catid_code, POI_catname, latitude,
longitude, timezone, UTC_time, local_time, day_of_week, norm_in_day_time, trajectory_id,
norm_day_shift, norm_relative_time``). Every row of the three files is a raw interaction
that keeps its ``trajectory_id`` and the file it came from (``split`` = train / valid / test);
``source_row`` is ``<file>:<line>`` (line 1 is the header). POIs become items as in TSMC2014:
location = median of the POI's valid check-in coordinates, content = its most frequent
category (``POI_catname``, ``POI_catid``); the files have no venue names.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd

from lgsid_pipeline.sources.base import (
    OPTIONAL_INTERACTION_COLUMNS,
    RAW_INTERACTION_COLUMNS,
    SourceData,
    SourceError,
    decode_text,
    raw_frame,
    require_file,
    venue_items,
)

SPLIT_FILES: dict[str, str] = {
    "train": "NYC_train.csv",
    "valid": "NYC_val.csv",
    "test": "NYC_test.csv",
}
# Our raw column -> the file's column (the others are derived features we do not need).
COLUMNS: dict[str, str] = {
    "user_id": "user_id",
    "item_id": "POI_id",
    "category_id": "POI_catid",
    "category": "POI_catname",
    "latitude": "latitude",
    "longitude": "longitude",
    "timestamp": "UTC_time",
    "trajectory_id": "trajectory_id",
}
INTERACTION_COLUMNS: tuple[str, ...] = (*RAW_INTERACTION_COLUMNS, *OPTIONAL_INTERACTION_COLUMNS)
VENUE_COLUMNS: tuple[str, ...] = ("item_id", "category_id", "category", "latitude", "longitude")


def _fields(line: str) -> tuple[list[str], str | None]:
    """The comma-separated fields of one line (CSV quoting), or why it cannot be split."""
    try:
        return next(csv.reader([line]), []), None
    except csv.Error as exc:
        return [], f"unparseable CSV line: {exc}"


def read_split_file(path: Path, split: str) -> tuple[dict[str, list], dict[str, list]]:
    """(raw interaction columns, venue rows) of one split file: one row per line after the
    header, ``source_row`` = ``<file>:<line>``.

    A line that cannot be split into the header's number of fields is kept with a
    ``parse_error``; a line that is not valid UTF-8 is kept with ``encoding_error``. A missing
    or empty file, or a header without one of the columns we read, raises ``SourceError``.
    """
    require_file(path, f"STHGCN {split} file")
    lines = path.read_bytes().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    texts, bad_text = decode_text([line.rstrip(b"\r") for line in lines])
    header, error = _fields(texts[0]) if texts else ([], "no header line")
    header = [name.strip().lstrip("\ufeff") for name in header]
    missing = [src for src in COLUMNS.values() if src not in header]
    if error or missing:
        raise SourceError(
            f"STHGCN {split} file {path} lacks column(s) {missing}; "
            f"it has {header} {error or ''}".rstrip()
        )
    position = {ours: header.index(src) for ours, src in COLUMNS.items()}
    out: dict[str, list] = {c: [] for c in INTERACTION_COLUMNS}
    venues: dict[str, list] = {c: [] for c in (*VENUE_COLUMNS, "encoding_error")}
    for number, text in enumerate(texts[1:], start=2):
        fields, parse_error = _fields(text)
        if parse_error is None and len(fields) != len(header):
            parse_error = f"expected {len(header)} comma-separated fields, got {len(fields)}"
        fields = (fields + [""] * len(header))[: len(header)]
        value = {ours: fields[i].strip() or None for ours, i in position.items()}
        value.update(
            source_row=f"{path.name}:{number}",
            encoding_error=bad_text[number - 1],
            parse_error=parse_error,
            split=split,
        )
        for column in INTERACTION_COLUMNS:
            out[column].append(value[column])
        if parse_error is None and value["item_id"] is not None:
            for column in venues:
                venues[column].append(value[column])
    return out, venues


def read_sthgcn(folder: Path) -> SourceData:
    """Read the three split files of a folder into raw interactions and per-POI raw items."""
    if not folder.is_dir():
        raise SourceError(f"STHGCN folder not found: {folder}")
    columns: dict[str, list] = {c: [] for c in INTERACTION_COLUMNS}
    venues: dict[str, list] = {c: [] for c in (*VENUE_COLUMNS, "encoding_error")}
    for split, name in SPLIT_FILES.items():
        rows, venue_rows = read_split_file(folder / name, split)
        for column, values in rows.items():
            columns[column].extend(values)
        for column, values in venue_rows.items():
            venues[column].extend(values)
    if not columns["source_row"]:
        raise SourceError(f"STHGCN files in {folder} have no data rows")
    return SourceData(
        items=venue_items(pd.DataFrame(venues)),
        interactions=raw_frame(INTERACTION_COLUMNS, columns),
        display_name=folder.name,
    )
