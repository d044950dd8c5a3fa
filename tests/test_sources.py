"""Source readers on crafted bad input and on the real shared data."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lgsid_pipeline.cities import CityConfig
from lgsid_pipeline.ingest import clean_interactions, clean_items, read_city_source
from lgsid_pipeline.sources.base import SourceError
from lgsid_pipeline.sources.tables import GOWALLA_LAYOUT, read_table_source
from lgsid_pipeline.sources.tsmc import detect_encoding, read_tsmc

GOOD_LINE = "7\ttky-1\tcat-1\tCafé\t35.69\t139.70\t540\tMon Dec 10 13:21:15 +0000 2012"


def write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_tsmc_bad_rows_are_flagged_not_dropped(tmp_path: Path, shared_data: Path) -> None:
    good = GOOD_LINE.encode()
    lines = [
        good,
        good.replace(b"35.69", b"200"),  # latitude out of range
        good.replace(b"Mon Dec 10", b"Xyz Foo 99"),  # unparseable time
        b"\t".join(good.split(b"\t")[:5]),  # too few fields
        good.replace(b"tky-1", b"tky-2").replace("Café".encode(), b"Caf\xff"),  # bad UTF-8
        good.replace(b"7\t", b"\t", 1),  # missing user id
        good.replace(b"tky-1", b"tky-3"),
    ]
    data = read_tsmc(write_lines(tmp_path / "tky.txt", lines))
    assert len(data.interactions) == len(lines)
    assert data.interactions["parse_error"].notna().sum() == 1
    assert data.interactions["encoding_error"].sum() == 1
    config = CityConfig("tky-test", "foursquare-tsmc", str(tmp_path / "tky.txt"), "tokyo")
    items = clean_items(data.items, config, "Tokyo")
    assert len(data.items) == len(items.clean) + len(items.quarantine)
    assert set(items.clean["item_id"]) == {"tky-1", "tky-3"}
    assert items.quarantine["reason"].tolist() == ["invalid_utf8"]
    # The venue median ignores the out-of-range check-in.
    assert items.clean.set_index("item_id").loc["tky-1", "latitude"] == pytest.approx(35.69)
    assert items.clean.set_index("item_id").loc["tky-1", "category"] == "Café"
    inter = clean_interactions(data.interactions, items.clean, "tky-test")
    assert len(data.interactions) == len(inter.clean) + len(inter.quarantine)
    assert sorted(inter.quarantine["reason"]) == sorted(
        [
            "latitude_out_of_range",
            "unparseable_timestamp",
            "malformed_row",
            "invalid_utf8",
            "missing_user_id",
        ]
    )


def test_tsmc_original_latin1_file_with_hex_ids(tmp_path: Path) -> None:
    line = (
        "470\t49bbd6c0f964a520f4531fe3\t4bf58dd8d48988d127951735\tArts & Crafts Store\t"
        "40.719810375488535\t-74.00258103213994\t-240\tTue Apr 03 18:00:09 +0000 2012"
    )
    cafe = line.replace("Arts & Crafts Store", "Café").replace("49bbd6c0", "4a43c0aef9")
    path = write_lines(
        tmp_path / "dataset_TSMC2014_NYC.txt", [line.encode("latin-1"), cafe.encode("latin-1")]
    )
    assert detect_encoding(path.read_bytes()) == "latin-1"
    data = read_tsmc(path)
    assert not data.interactions["encoding_error"].any()
    assert "Café" in set(data.items["category"])
    assert data.items["item_id"].str.len().min() == 24


def test_tsmc_utf8_file_with_one_corrupt_line_stays_utf8() -> None:
    assert detect_encoding("Café\n".encode() + b"Caf\xe9\n") == "utf-8"


def test_empty_and_missing_files_give_clear_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(SourceError, match="is empty"):
        read_tsmc(empty)
    with pytest.raises(SourceError, match="not found"):
        read_tsmc(tmp_path / "missing.txt")
    with pytest.raises(SourceError, match="not found"):
        read_table_source(tmp_path / "nope", GOWALLA_LAYOUT, "x")


def write_gowalla(folder: Path, spots: pd.DataFrame, checkins: pd.DataFrame) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(spots, preserve_index=False), folder / "spots.parquet")
    pq.write_table(
        pa.Table.from_pandas(checkins, preserve_index=False), folder / "checkins.parquet"
    )
    return folder


def test_gowalla_layout_derives_checkin_only_items(tmp_path: Path) -> None:
    spots = pd.DataFrame(
        {
            "city": ["New York"] * 2,
            "spot_id": [1, 2],
            "spot_name": ["Starbucks", "Joe's"],
            "latitude": [40.75, 40.70],
            "longitude": [-73.99, -73.95],
        }
    )
    checkins = pd.DataFrame(
        {
            "city": ["New York"] * 4,
            "user_id": [1, 1, 2, 2],
            "utc_time": pd.to_datetime(
                ["2010-01-01", "2010-01-02", "2010-01-03", "2010-01-04"], utc=True
            ),
            "latitude": [40.75, 40.80, 40.81, 40.70],
            "longitude": [-73.99, -73.90, -73.91, -73.95],
            "spot_id": [1, 3, 3, 2],
            "spot_name": ["Starbucks", None, None, "Joe's"],
        }
    )
    data = read_table_source(write_gowalla(tmp_path / "g", spots, checkins), GOWALLA_LAYOUT, "x")
    assert data.display_name == "New York"
    assert data.items["item_id"].tolist() == ["1", "2", "3"]
    derived = data.items.set_index("item_id").loc["3"]
    assert derived["origin"] == "checkins"
    assert float(derived["latitude"]) == pytest.approx(40.805)


def test_gowalla_layout_missing_column_is_a_clear_error(tmp_path: Path) -> None:
    spots = pd.DataFrame({"spot_id": [1], "latitude": [40.7]})
    checkins = pd.DataFrame({"user_id": [1]})
    folder = write_gowalla(tmp_path / "g", spots, checkins)
    with pytest.raises(SourceError, match="lacks column"):
        read_table_source(folder, GOWALLA_LAYOUT, "x")


def test_real_tokyo_file_ingests_with_admin_levels(shared_data: Path) -> None:
    config = CityConfig(
        "tokyo",
        "foursquare-tsmc",
        str(shared_data / "foursquare_tky" / "dataset_TSMC2014_TKY_valtest.txt"),
    )
    data = read_city_source(config)
    items = clean_items(data.items, config, "Tokyo")
    assert len(items.clean) == 6349
    both = items.clean["admin_l1_code"].notna() & items.clean["admin_l2_code"].notna()
    assert both.mean() >= 0.99
    assert items.clean.groupby("admin_l1_name").size().idxmax() == "Tokyo"
    inter = clean_interactions(data.interactions, items.clean, "tokyo")
    assert len(inter.clean) + len(inter.quarantine) == 76890


def test_real_new_york_spots_ingest_with_admin_levels(shared_data: Path) -> None:
    config = CityConfig("new-york", "gowalla", str(shared_data / "gowalla_nyc"))
    data = read_city_source(config)
    items = clean_items(data.items, config, "New York")
    assert len(items.clean) + len(items.quarantine) == len(data.items) >= 28042
    both = items.clean["admin_l1_code"].notna() & items.clean["admin_l2_code"].notna()
    assert both.mean() >= 0.78
    assert items.clean["outside"].any()  # New Jersey and shore points are kept, marked
    brands = items.clean.set_index("name")["brand"]
    assert brands.get("Starbucks Coffee").iloc[0] == brands.get("Starbucks").iloc[0]
