"""Validation of raw tables into clean tables plus quarantine rows with reasons.

Every raw row ends up in exactly one place: the clean table or the quarantine table, so
``raw = clean + quarantined`` always holds. The first failing rule names the reason.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lgsid_pipeline.frames import is_in
from lgsid_pipeline.sources.base import OPTIONAL_INTERACTION_COLUMNS

QUARANTINE_COLUMNS: tuple[str, ...] = ("city", "table_name", "source_row", "reason", "detail")

# Words that name the kind of place rather than the chain ("Starbucks Coffee" = "Starbucks").
GENERIC_BRAND_WORDS = frozenset(
    {
        "coffee",
        "cafe",
        "donuts",
        "doughnuts",
        "restaurant",
        "restaurants",
        "store",
        "stores",
        "shop",
        "co",
        "company",
        "inc",
        "llc",
        "ltd",
        "corp",
        "pharmacy",
        "bakery",
        "bar",
        "grill",
        "kitchen",
        "market",
        "markt",
        "supermarket",
        "express",
        "bank",
        "hotel",
        "hotels",
        "gym",
        "fitness",
        "theatre",
        "theatres",
        "theater",
        "theaters",
        "cinema",
        "cinemas",
        "booksellers",
        "bookstore",
        "books",
    }
)
BRANCH_SUFFIX = re.compile(
    r"\s+(?:-|@|–|—|\||#|at)\s+.*$|\s+#\s*\d+.*$|\s*\(.*\)\s*$", re.IGNORECASE
)
# Names that many unrelated places share without being one chain.
NOT_BRANDS = frozenset(
    {
        "home",
        "my home",
        "house",
        "my house",
        "work",
        "office",
        "the office",
        "my office",
        "school",
        "apartment",
        "my apartment",
        "gym",
        "parking",
        "parking lot",
        "park",
        "church",
        "library",
        "post office",
        "bus stop",
        "playground",
        "pool",
        "mall",
    }
)
# A name key that is shared by this many items in a city is treated as a chain brand.
MIN_CHAIN_BRANCHES = 3


@dataclass
class Validated:
    """Clean rows and quarantine rows of one table."""

    clean: pd.DataFrame
    quarantine: pd.DataFrame


def brand_key(name: str | None) -> str | None:
    """Normalised chain key: ``Starbucks Coffee - 5th Ave`` and ``STARBUCKS`` -> ``starbucks``."""
    if name is None or pd.isna(name):
        return None
    text = BRANCH_SUFFIX.sub("", str(name))
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    text = text.replace("&", " and ").replace("'", "").replace("\u2019", "")
    words = re.sub(r"[^a-z0-9]+", " ", text).split()
    if words and words[0] == "the":
        words = words[1:]
    # Drop trailing generic words ("Starbucks Coffee" -> "starbucks", but keep "Pizza Hut").
    while len(words) > 1 and words[-1] in GENERIC_BRAND_WORDS:
        words = words[:-1]
    key = "".join(words)  # "Family Mart" = "FamilyMart", "7 Eleven" = "7-Eleven"
    return key or None


def content_hash(
    frame: pd.DataFrame, columns: list[str], known: pd.DataFrame | None = None
) -> pd.Series:
    """Stable 16-hex digest of each row's content columns (for incremental work).

    ``known`` (rows aligned with ``frame``, all NA where there is none) holds earlier values of
    ``columns`` and their ``content_hash``: a row whose content equals its earlier one takes
    that hash instead of being hashed again."""

    def digest(row: tuple) -> str:
        payload = json.dumps(
            [None if pd.isna(v) else v for v in row], ensure_ascii=False, default=str
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]

    hashes = pd.Series(pd.NA, index=frame.index, dtype="string")
    if known is not None:
        same = known["content_hash"].notna().to_numpy().copy()
        for column in columns:
            now, before = frame[column], known[column]
            same &= ((now == before).fillna(False) | (now.isna() & before.isna())).to_numpy()
        hashes[same] = known["content_hash"].to_numpy()[same]
    todo = hashes.isna().to_numpy()
    rows = frame.loc[todo, columns].itertuples(index=False, name=None)
    hashes[todo] = [digest(r) for r in rows]
    return hashes


def _reasons(rules: list[tuple[str, pd.Series]], index: pd.Index) -> pd.Series:
    """First failing rule per row (None where every rule passes)."""
    reason = pd.Series(pd.NA, index=index, dtype="string")
    for name, failed in rules:
        reason = reason.mask(reason.isna() & failed.fillna(False).astype(bool), name)
    return reason


def _later_duplicates(keys: pd.Series | pd.DataFrame, candidates: pd.Series) -> pd.Series:
    """True for every repeat of a key among the still-valid rows (the first one stays)."""
    repeated = keys[candidates].duplicated(keep="first")
    return repeated.reindex(candidates.index, fill_value=False).astype(bool)


def _quarantine(raw: pd.DataFrame, reason: pd.Series, city: str, table: str) -> pd.DataFrame:
    bad = raw[reason.notna()]
    detail_cols = [c for c in raw.columns if c not in ("source_row",)]
    details = [
        json.dumps(
            {k: (None if pd.isna(v) else v) for k, v in zip(detail_cols, row, strict=True)},
            ensure_ascii=False,
            default=str,
        )
        for row in bad[detail_cols].itertuples(index=False, name=None)
    ]
    return pd.DataFrame(
        {
            "city": pd.Series([city] * len(bad), dtype="string"),
            "table_name": pd.Series([table] * len(bad), dtype="string"),
            "source_row": bad["source_row"].astype("string").values,
            "reason": reason[reason.notna()].astype("string").values,
            "detail": pd.Series(details, dtype="string"),
        }
    )


def _blank(series: pd.Series) -> pd.Series:
    return series.isna() | (series.astype("string").str.strip() == "")


def _coordinate_rules(raw: pd.DataFrame, required: bool) -> tuple[list, pd.Series, pd.Series]:
    lat = pd.to_numeric(raw["latitude"], errors="coerce")
    lon = pd.to_numeric(raw["longitude"], errors="coerce")
    missing = _blank(raw["latitude"]) | _blank(raw["longitude"])
    present = ~missing
    rules = [
        ("unparseable_coordinates", present & (lat.isna() | lon.isna())),
        ("latitude_out_of_range", present & ~lat.between(-90, 90) & lat.notna()),
        ("longitude_out_of_range", present & ~lon.between(-180, 180) & lon.notna()),
        ("null_island", present & (lat == 0) & (lon == 0)),
    ]
    if required:
        rules.insert(0, ("missing_coordinates", missing))
    return rules, lat, lon


def validate_items(raw: pd.DataFrame, city: str) -> Validated:
    """Clean items (typed, deduplicated by id) and quarantined item rows."""
    coord_rules, lat, lon = _coordinate_rules(raw, required=True)
    rules = [
        ("malformed_row", raw["parse_error"].notna()),
        ("missing_id", _blank(raw["item_id"])),
        ("invalid_utf8", raw["encoding_error"]),
        *coord_rules,
    ]
    reason = _reasons(rules, raw.index)
    reason = reason.mask(
        _later_duplicates(raw["item_id"].str.strip(), reason.isna()), "duplicate_id"
    )
    good = raw[reason.isna()]
    clean = pd.DataFrame(
        {
            "city": pd.Series([city] * len(good), dtype="string"),
            "item_id": good["item_id"].str.strip().values,
            "name": _nullable_text(good["name"]),
            "category": _nullable_text(good["category"]),
            "category_id": _nullable_text(good["category_id"]),
            "brand_raw": _nullable_text(good["brand"]),
            "latitude": lat[good.index].astype(float).values,
            "longitude": lon[good.index].astype(float).values,
            "origin": good["origin"].astype("string").values,
            "source_row": good["source_row"].astype("string").values,
        }
    )
    return Validated(clean=clean, quarantine=_quarantine(raw, reason, city, "items"))


def _nullable_text(series: pd.Series) -> pd.Series:
    text = series.astype("string").str.strip()
    return text.mask(text == "", pd.NA).reset_index(drop=True)


def assign_brands(items: pd.DataFrame) -> pd.Series:
    """Chain brand key per item.

    From the raw brand column where the item's origin (its source file) names brands;
    otherwise (Gowalla) from the name, when at least ``MIN_CHAIN_BRANCHES`` items of the city
    share the normalised name. Deciding per origin keeps the brands of a city's existing items
    stable when a later landed file does name brands.
    """

    def keys(column: str) -> pd.Series:
        codes, values = pd.factorize(items[column])  # each distinct name normalised once
        normalised = np.asarray([brand_key(v) for v in values.tolist()] + [None], dtype=object)
        return pd.Series(normalised[codes], index=items.index, dtype="string")

    from_brand = keys("brand_raw")
    origin = items["origin"] if "origin" in items else pd.Series("", index=items.index)
    origin_names_brands = from_brand.notna().groupby(origin.fillna("")).transform("any")
    from_name = keys("name")
    counts = from_name.value_counts()
    chains = [k for k in counts[counts >= MIN_CHAIN_BRANCHES].index if k not in NOT_BRANDS]
    from_name = from_name.where(from_name.isin(chains))
    return from_brand.where(origin_names_brands.astype(bool), from_name)


def parse_timestamps(values: pd.Series) -> pd.Series:
    """UTC timestamps from ISO 8601 or TSMC2014 text (``Mon Dec 10 13:21:15 +0000 2012``)."""
    iso = pd.to_datetime(values, errors="coerce", utc=True, format="ISO8601")
    rest = iso.isna() & values.notna()
    if rest.any():
        tsmc = pd.to_datetime(
            values[rest], errors="coerce", utc=True, format="%a %b %d %H:%M:%S %z %Y"
        )
        iso = iso.copy()
        iso[rest] = tsmc
    return iso


def validate_interactions(raw: pd.DataFrame, known_items: pd.Series, city: str) -> Validated:
    """Clean interactions (user, item, UTC time) and quarantined rows.

    Check-in coordinates, where the source has them, only need to be sane; the item's own
    location is the canonical one. The optional ``trajectory_id`` and ``split`` columns are
    kept when the raw table has them (they are not rules: a missing value stays missing).
    """
    coord_rules, _, _ = _coordinate_rules(raw, required=False)
    when = parse_timestamps(raw["timestamp"])
    item_id = raw["item_id"].astype("string").str.strip()
    rules = [
        ("malformed_row", raw["parse_error"].notna()),
        ("missing_user_id", _blank(raw["user_id"])),
        ("missing_item_id", _blank(raw["item_id"])),
        ("invalid_utf8", raw["encoding_error"]),
        ("unparseable_timestamp", when.isna()),
        *coord_rules,
        ("unknown_item", pd.Series(~is_in(item_id, known_items), index=raw.index)),
    ]
    reason = _reasons(rules, raw.index)
    keys = pd.DataFrame({"u": raw["user_id"].str.strip(), "i": item_id, "t": when})
    reason = reason.mask(_later_duplicates(keys, reason.isna()), "duplicate_event")
    good = reason.isna()
    clean = (
        pd.DataFrame(
            {
                "city": pd.Series([city] * int(good.sum()), dtype="string"),
                "user_id": raw.loc[good, "user_id"].str.strip().values,
                "item_id": item_id[good].values,
                "ts": when[good].reset_index(drop=True),
                "source_row": raw.loc[good, "source_row"].astype("string").values,
                **{
                    column: _nullable_text(raw.loc[good, column]).values
                    for column in OPTIONAL_INTERACTION_COLUMNS
                    if column in raw.columns
                },
            }
        )
        .sort_values(["ts", "user_id"], kind="stable")
        .reset_index(drop=True)
    )
    return Validated(clean=clean, quarantine=_quarantine(raw, reason, city, "interactions"))


def empty_quarantine() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="string") for c in QUARANTINE_COLUMNS})
