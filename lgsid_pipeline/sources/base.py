"""The raw-table contract every source reader fills, and shared reading helpers.

Raw tables keep every source row as it came (values as text), with a ``source_row`` that
points back into the source, so validation can quarantine a row with a reason instead of
dropping it. Items that exist only in check-ins are derived here, with ``origin`` saying so.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lgsid_pipeline.frames import is_in

RAW_ITEM_COLUMNS: tuple[str, ...] = (
    "source_row",
    "item_id",
    "name",
    "category",
    "category_id",
    "brand",
    "latitude",
    "longitude",
    "origin",
    "encoding_error",
    "parse_error",
)
RAW_INTERACTION_COLUMNS: tuple[str, ...] = (
    "source_row",
    "user_id",
    "item_id",
    "timestamp",
    "latitude",
    "longitude",
    "encoding_error",
    "parse_error",
)
# Interaction columns only some sources have (a trip id and the source's own split); a source
# that has them appends them to RAW_INTERACTION_COLUMNS and cleaning keeps them.
OPTIONAL_INTERACTION_COLUMNS: tuple[str, ...] = ("trajectory_id", "split")


class SourceError(ValueError):
    """A source that cannot be read at all: missing or empty file, wrong layout."""


@dataclass
class SourceData:
    """What a reader returns: raw items and raw interactions, every value as text."""

    items: pd.DataFrame
    interactions: pd.DataFrame
    display_name: str


# ``origin`` of the items derived from check-ins whose item the source does not list
CHECKIN_ONLY_ORIGIN = "checkins"


def raw_frame(columns: Sequence[str], data: Mapping[str, Iterable[object]]) -> pd.DataFrame:
    """Build a raw table with exactly ``columns``: text columns as nullable strings."""
    lengths = {len(list(v)) for k, v in data.items() if k in columns}
    n_rows = lengths.pop() if lengths else 0
    if lengths:
        raise ValueError(f"raw columns of different lengths: {sorted(lengths | {n_rows})}")
    frame = pd.DataFrame(
        {col: list(data[col]) if col in data else [None] * n_rows for col in columns},
        index=pd.RangeIndex(n_rows),
    )
    for col in columns:
        if col == "encoding_error":
            frame[col] = frame[col].fillna(False).astype(bool)
        else:
            frame[col] = frame[col].astype("string")
    return frame


def decode_text(values: Sequence[bytes | None], encoding: str = "utf-8") -> tuple[list, list]:
    """Decode byte strings; return (texts, encoding_error flags). Undecodable -> lossy text."""
    texts: list[str | None] = []
    errors: list[bool] = []
    for value in values:
        if value is None:
            texts.append(None)
            errors.append(False)
            continue
        try:
            texts.append(value.decode(encoding))
            errors.append(False)
        except UnicodeDecodeError:
            texts.append(value.decode(encoding, errors="replace"))
            errors.append(True)
    return texts, errors


def require_file(path: Path, what: str) -> Path:
    """Return ``path`` if it is a non-empty file, else raise a ``SourceError`` naming it."""
    if not path.exists():
        raise SourceError(f"{what} not found: {path}")
    if not path.is_file():
        raise SourceError(f"{what} is not a file: {path}")
    if path.stat().st_size == 0:
        raise SourceError(f"{what} is empty: {path}")
    return path


def read_parquet_columns(
    path: Path, what: str, columns: dict[str, str], optional: Sequence[str] = ()
) -> dict[str, list]:
    """Read selected Parquet columns as text lists, keyed by our names.

    ``columns`` maps our name -> the file's column. String columns are decoded from bytes
    so invalid UTF-8 becomes a flagged value, not a crash; the flag is returned under
    ``encoding_error``. Other types are rendered as text (timestamps in ISO 8601).
    """
    require_file(path, what)
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceError(f"{what} is not a readable Parquet file: {path} ({exc})") from exc
    missing = [
        src for ours, src in columns.items() if src not in schema.names and ours not in optional
    ]
    if missing:
        raise SourceError(f"{what} {path} lacks column(s) {missing}; it has {schema.names}")
    present = {ours: src for ours, src in columns.items() if src in schema.names}
    table = pq.read_table(path, columns=list(dict.fromkeys(present.values())))
    out: dict[str, list] = {}
    flags = np.zeros(table.num_rows, dtype=bool)
    for ours, src in present.items():
        column = table.column(src)
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            texts, errors = decode_text(column.cast(pa.large_binary()).to_pylist())
            flags |= np.asarray(errors, dtype=bool)
            out[ours] = texts
        elif pa.types.is_timestamp(column.type):
            values = column.to_pandas()
            if values.dt.tz is None:
                values = values.dt.tz_localize("UTC")
            out[ours] = [None if pd.isna(v) else v.isoformat() for v in values]
        else:
            out[ours] = [
                None if v is None else repr(v) if isinstance(v, float) else str(v)
                for v in column.to_pylist()
            ]
    for ours in optional:
        out.setdefault(ours, [None] * table.num_rows)
    out["encoding_error"] = flags.tolist()
    return out


def checkin_only_items(interactions: pd.DataFrame, known_item_ids: Iterable[str]) -> pd.DataFrame:
    """Items referenced by check-ins but absent from the item file.

    Location is the median of their check-in coordinates (valid ones only); they have no
    name. Returns a raw item table (``origin`` = ``checkins``).
    """
    item_id = interactions["item_id"]
    refs = interactions[item_id.notna().to_numpy() & ~is_in(item_id, known_item_ids)]
    if refs.empty:
        return raw_frame(RAW_ITEM_COLUMNS, {})
    lat = pd.to_numeric(refs["latitude"], errors="coerce")
    lon = pd.to_numeric(refs["longitude"], errors="coerce")
    ok = lat.between(-90, 90) & lon.between(-180, 180)
    coords = pd.DataFrame({"item_id": refs["item_id"], "lat": lat.where(ok), "lon": lon.where(ok)})
    grouped = coords.groupby("item_id", sort=True)[["lat", "lon"]].median()
    return raw_frame(
        RAW_ITEM_COLUMNS,
        {
            "source_row": [f"checkins:item_id={i}" for i in grouped.index],
            "item_id": grouped.index,
            "latitude": [None if pd.isna(v) else repr(float(v)) for v in grouped["lat"]],
            "longitude": [None if pd.isna(v) else repr(float(v)) for v in grouped["lon"]],
            "origin": [CHECKIN_ONLY_ORIGIN] * len(grouped),
        },
    )


def venue_items(rows: pd.DataFrame) -> pd.DataFrame:
    """One raw item per venue id from its well-formed check-in rows.

    ``rows`` has ``item_id, category, category_id, latitude, longitude, encoding_error`` (text).
    Location = median of the venue's valid check-in coordinates, content = its most frequent
    category (rows with undecodable text do not vote); ``origin`` = ``checkins``.
    """
    if rows.empty:
        return raw_frame(RAW_ITEM_COLUMNS, {})
    lat = pd.to_numeric(rows["latitude"], errors="coerce")
    lon = pd.to_numeric(rows["longitude"], errors="coerce")
    ok = lat.between(-90, 90) & lon.between(-180, 180)
    rows = rows.assign(lat=lat.where(ok), lon=lon.where(ok))
    clean_text = rows[~rows["encoding_error"]]
    grouped = rows.groupby("item_id", sort=True)
    medians = grouped[["lat", "lon"]].median()
    category = _mode(clean_text, "category").reindex(medians.index)
    category_id = _mode(clean_text, "category_id").reindex(medians.index)
    all_bad_text = grouped["encoding_error"].all()
    return raw_frame(
        RAW_ITEM_COLUMNS,
        {
            "source_row": [f"venue:{v}" for v in medians.index],
            "item_id": medians.index,
            "category": category.where(category.notna(), None),
            "category_id": category_id.where(category_id.notna(), None),
            "latitude": [None if pd.isna(v) else repr(float(v)) for v in medians["lat"]],
            "longitude": [None if pd.isna(v) else repr(float(v)) for v in medians["lon"]],
            "origin": [CHECKIN_ONLY_ORIGIN] * len(medians),
            "encoding_error": all_bad_text.values,
        },
    )


def _mode(rows: pd.DataFrame, column: str) -> pd.Series:
    """Most frequent non-null value of ``column`` per venue (ties: alphabetical)."""
    counts = rows.dropna(subset=[column]).groupby(["item_id", column]).size().reset_index(name="n")
    counts = counts.sort_values(["item_id", "n", column], ascending=[True, False, True])
    return counts.drop_duplicates("item_id").set_index("item_id")[column]
