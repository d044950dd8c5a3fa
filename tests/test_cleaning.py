"""Validation rules, quarantine reasons, brand normalisation and timestamp parsing."""

from __future__ import annotations

import pandas as pd
import pytest

from lgsid_pipeline.cleaning import (
    assign_brands,
    brand_key,
    content_hash,
    parse_timestamps,
    validate_interactions,
    validate_items,
)
from lgsid_pipeline.sources.base import RAW_INTERACTION_COLUMNS, RAW_ITEM_COLUMNS, raw_frame


def raw_items(rows: list[dict]) -> pd.DataFrame:
    data = {c: [r.get(c) for r in rows] for c in RAW_ITEM_COLUMNS}
    data["source_row"] = [f"row:{i}" for i in range(len(rows))]
    data["encoding_error"] = [bool(r.get("encoding_error", False)) for r in rows]
    return raw_frame(RAW_ITEM_COLUMNS, data)


def raw_interactions(rows: list[dict]) -> pd.DataFrame:
    data = {c: [r.get(c) for r in rows] for c in RAW_INTERACTION_COLUMNS}
    data["source_row"] = [f"row:{i}" for i in range(len(rows))]
    data["encoding_error"] = [bool(r.get("encoding_error", False)) for r in rows]
    return raw_frame(RAW_INTERACTION_COLUMNS, data)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Starbucks Coffee", "Starbucks"),
        ("STARBUCKS - 5th Ave", "Starbucks"),
        ("Dunkin' Donuts", "Dunkin Donuts"),
        ("McDonald's", "McDonalds"),
        ("Café Grumpy", "Cafe Grumpy"),
        ("7-Eleven", "7 Eleven"),
        ("FamilyMart", "Family Mart"),
        ("Chase Bank", "Chase"),
        ("AMC Theatres", "AMC"),
    ],
)
def test_brand_variants_share_one_key(a: str, b: str) -> None:
    assert brand_key(a) == brand_key(b) is not None


def test_different_chains_keep_different_keys() -> None:
    assert brand_key("Starbucks") != brand_key("Dunkin' Donuts")
    assert brand_key("Pizza Hut") == "pizzahut"
    assert brand_key(None) is None


def test_brands_from_names_need_several_branches() -> None:
    items = pd.DataFrame(
        {
            "name": [
                "Starbucks",
                "Starbucks Coffee",
                "STARBUCKS #12",
                "Joe's Diner",
                "Home",
                "Home",
                "Home",
            ],
            "brand_raw": pd.Series([None] * 7, dtype="string"),
        }
    )
    brands = assign_brands(items)
    assert brands.iloc[:3].tolist() == ["starbucks"] * 3
    assert brands.iloc[3:].isna().all()  # a single place and a generic word are not chains


def test_a_landed_file_with_brands_leaves_name_derived_brands_alone() -> None:
    items = pd.DataFrame(
        {
            "name": ["Starbucks", "Starbucks", "Starbucks", "Cafe Nero", "Starbucks"],
            "brand_raw": pd.Series([None, None, None, "Nero", None], dtype="string"),
            "origin": ["source", "source", "source", "items-landed", "items-landed"],
        }
    )
    brands = assign_brands(items)
    assert brands.iloc[:3].tolist() == ["starbucks"] * 3  # the source names no brands
    assert brands.iloc[3] == "nero" and pd.isna(brands.iloc[4])  # the landed file does


GOOD = {"item_id": "a", "name": "Cafe", "latitude": "40.7", "longitude": "-74.0"}


def test_items_quarantine_reasons_and_reconcile() -> None:
    rows = [
        GOOD,
        {**GOOD, "item_id": "b", "latitude": "200"},
        {**GOOD, "item_id": "c", "longitude": "-190"},
        {**GOOD, "item_id": None},
        {**GOOD, "item_id": "  "},
        {**GOOD, "item_id": "d", "encoding_error": True},
        {**GOOD, "item_id": "e", "latitude": "north"},
        {**GOOD, "item_id": "f", "latitude": None},
        {**GOOD, "item_id": "a"},  # duplicate of the first
        {**GOOD, "item_id": "g", "latitude": "0", "longitude": "0"},
        {**GOOD, "item_id": "h", "parse_error": "expected 8 fields, got 3"},
        {**GOOD, "item_id": "i"},
    ]
    raw = raw_items(rows)
    result = validate_items(raw, "test-city")
    assert len(raw) == len(result.clean) + len(result.quarantine)
    assert result.clean["item_id"].tolist() == ["a", "i"]
    reasons = dict(zip(result.quarantine["source_row"], result.quarantine["reason"], strict=True))
    assert reasons == {
        "row:1": "latitude_out_of_range",
        "row:2": "longitude_out_of_range",
        "row:3": "missing_id",
        "row:4": "missing_id",
        "row:5": "invalid_utf8",
        "row:6": "unparseable_coordinates",
        "row:7": "missing_coordinates",
        "row:8": "duplicate_id",
        "row:9": "null_island",
        "row:10": "malformed_row",
    }
    assert (result.quarantine["city"] == "test-city").all()
    assert result.quarantine["detail"].str.contains('"latitude"').all()


def test_duplicate_of_a_quarantined_row_is_kept() -> None:
    raw = raw_items([{**GOOD, "latitude": "200"}, GOOD])
    result = validate_items(raw, "c")
    assert result.clean["item_id"].tolist() == ["a"]
    assert result.quarantine["reason"].tolist() == ["latitude_out_of_range"]


def test_parse_timestamps_iso_and_tsmc() -> None:
    parsed = parse_timestamps(
        pd.Series(
            ["2010-08-01T17:35:00+00:00", "Mon Dec 10 13:21:15 +0000 2012", "yesterday", None],
            dtype="string",
        )
    )
    assert parsed.iloc[0] == pd.Timestamp("2010-08-01 17:35", tz="UTC")
    assert parsed.iloc[1] == pd.Timestamp("2012-12-10 13:21:15", tz="UTC")
    assert parsed.iloc[2:].isna().all()


def test_interactions_quarantine_reasons_and_reconcile() -> None:
    good = {"user_id": "u1", "item_id": "a", "timestamp": "2012-01-01T10:00:00Z"}
    rows = [
        good,
        {**good, "user_id": None},
        {**good, "item_id": None},
        {**good, "timestamp": "not a time"},
        {**good, "item_id": "zzz"},
        {**good, "latitude": "200", "longitude": "10"},
        good,  # exact repeat
        {**good, "encoding_error": True},
        {**good, "timestamp": "2012-01-02T10:00:00Z"},
    ]
    raw = raw_interactions(rows)
    result = validate_interactions(raw, pd.Series(["a"]), "c")
    assert len(raw) == len(result.clean) + len(result.quarantine)
    assert len(result.clean) == 2
    assert result.quarantine["reason"].tolist() == [
        "missing_user_id",
        "missing_item_id",
        "unparseable_timestamp",
        "unknown_item",
        "latitude_out_of_range",
        "duplicate_event",
        "invalid_utf8",
    ]
    assert str(result.clean["ts"].dt.tz) == "UTC"


def test_content_hash_reuses_only_the_hashes_of_unchanged_rows():
    frame = pd.DataFrame(
        {"name": ["Cafe", "Deli", None, "Bar"], "latitude": [40.1, 40.2, 40.3, 40.4]}
    )
    fresh = content_hash(frame, ["name", "latitude"])
    assert fresh.str.fullmatch("[0-9a-f]{16}").all() and fresh.is_unique
    # earlier values: row 0 and 2 unchanged (a missing name equals a missing name), row 1
    # renamed since, row 3 new; the earlier hashes are marked to see which were reused
    known = pd.DataFrame(
        {
            "name": ["Cafe", "Old Deli", None, None],
            "latitude": [40.1, 40.2, 40.3, None],
            "content_hash": ["reused-0", "stale-1", "reused-2", None],
        }
    )
    mixed = content_hash(frame, ["name", "latitude"], known)
    assert mixed.tolist() == ["reused-0", fresh[1], "reused-2", fresh[3]]
