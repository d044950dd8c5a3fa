"""Reader for the Foursquare TSMC2014 check-in files (tab-separated, no header).

Fields: user id, venue id, venue category id, venue category name, latitude, longitude,
timezone offset (minutes), UTC time (``Mon Apr 03 18:00:09 +0000 2012``). Accepts the
original full files unchanged (hex ids, ISO-8859-1 or UTF-8 text) as well as re-indexed
extracts. Venues become items: location = median of the venue's valid check-in
coordinates (they jitter by up to ~100 m), content = the most frequent category.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from lgsid_pipeline.sources.base import (
    RAW_INTERACTION_COLUMNS,
    SourceData,
    SourceError,
    raw_frame,
    require_file,
    venue_items,
)

N_FIELDS = 8


def detect_encoding(data: bytes) -> str:
    """``utf-8`` if the file decodes as UTF-8 or holds UTF-8 multi-byte text, else latin-1.

    A file with valid UTF-8 multi-byte sequences and a few broken lines is UTF-8 with
    corrupt rows (those rows are flagged); a file with no multi-byte UTF-8 at all but high
    bytes is ISO-8859-1, as the original TSMC2014 release is.
    """
    try:
        data.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError:
        pass
    text = data.decode("utf-8", errors="ignore")
    return "utf-8" if any(ord(ch) > 0x7F for ch in text) else "latin-1"


def read_tsmc(path: Path, encoding: str = "auto") -> SourceData:
    """Read one TSMC2014 file into raw interactions and per-venue raw items."""
    require_file(path, "TSMC2014 check-in file")
    data = path.read_bytes()
    if encoding == "auto":
        encoding = detect_encoding(data)
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    columns: dict[str, list] = {c: [] for c in RAW_INTERACTION_COLUMNS}
    venue_rows: dict[str, list] = {
        "item_id": [],
        "category_id": [],
        "category": [],
        "latitude": [],
        "longitude": [],
        "encoding_error": [],
    }
    for number, raw_line in enumerate(lines, start=1):
        raw_line = raw_line.rstrip(b"\r")
        try:
            line = raw_line.decode(encoding)
            bad_encoding = False
        except UnicodeDecodeError:
            line = raw_line.decode(encoding, errors="replace")
            bad_encoding = True
        fields = line.split("\t")
        parse_error = None
        if len(fields) != N_FIELDS:
            parse_error = f"expected {N_FIELDS} tab-separated fields, got {len(fields)}"
            fields = (fields + [""] * N_FIELDS)[:N_FIELDS]
        values = [f.strip() or None for f in fields]
        user, venue, cat_id, cat_name, lat, lon, _tz, when = values
        columns["source_row"].append(f"{path.name}:{number}")
        columns["user_id"].append(user)
        columns["item_id"].append(venue)
        columns["timestamp"].append(when)
        columns["latitude"].append(lat)
        columns["longitude"].append(lon)
        columns["encoding_error"].append(bad_encoding)
        columns["parse_error"].append(parse_error)
        if parse_error is None and venue is not None:
            for key, value in (
                ("item_id", venue),
                ("category_id", cat_id),
                ("category", cat_name),
                ("latitude", lat),
                ("longitude", lon),
                ("encoding_error", bad_encoding),
            ):
                venue_rows[key].append(value)
    if not columns["source_row"]:
        raise SourceError(f"TSMC2014 check-in file has no rows: {path}")
    interactions = raw_frame(RAW_INTERACTION_COLUMNS, columns)
    return SourceData(
        items=venue_items(pd.DataFrame(venue_rows)),
        interactions=interactions,
        display_name=path.stem,
    )
