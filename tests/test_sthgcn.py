"""The GETNext/STHGCN Foursquare New York source, its file split and the STHGCN protocol."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lgsid_pipeline.cities import CityRegistry, check_source_path
from lgsid_pipeline.cleaning import validate_interactions, validate_items
from lgsid_pipeline.cli import main
from lgsid_pipeline.ingest import clean_interactions, clean_items, read_city_source
from lgsid_pipeline.recommenders.config import DatasetConfig
from lgsid_pipeline.recommenders.datasets import file_split_times, split_times
from lgsid_pipeline.recommenders.protocol import (
    trajectory_last_target_times,
    trajectory_last_targets,
)
from lgsid_pipeline.sources.base import SourceError
from lgsid_pipeline.sources.sthgcn import read_sthgcn

HEADER = (
    "user_id,POI_id,POI_catid,POI_catid_code,POI_catname,latitude,longitude,timezone,"
    "UTC_time,local_time,day_of_week,norm_in_day_time,trajectory_id,norm_day_shift,"
    "norm_relative_time"
)
# (user, POI, category, latitude, longitude, UTC time, trajectory) per file, in file order.
ROWS = {
    "NYC_train.csv": [
        ("1", "poi-A", "Cafe", "40.7500", "-73.9900", "2012-04-03 18:00:00", "1_1"),
        ("1", "poi-B", "Bar", "40.6900", "-73.9500", "2012-04-03 19:00:00", "1_1"),
        ("1", "poi-A", "Cafe", "40.7510", "-73.9910", "2012-04-03 20:00:00", "1_1"),
        ("2", "poi-A", "Coffee Shop", "40.7530", "-73.9930", "2012-04-04 10:00:00", "2_1"),
        ("2", "poi-C", "Museum", "40.7790", "-73.9630", "2012-04-04 11:00:00", "2_1"),
    ],
    "NYC_val.csv": [
        ("1", "poi-C", "Museum", "40.7791", "-73.9631", "2012-05-01 09:00:00", "1_2"),
        ("1", "poi-B", "Bar", "40.6910", "-73.9510", "2012-05-01 10:00:00", "1_2"),
        ("2", "poi-B", "Bar", "abc", "-73.9500", "2012-05-02 08:00:00", "2_2"),  # line 4
        ("2", "poi-A", "Cafe", "40.7520", "-73.9920", "2012-05-02 09:00:00", "2_2"),
    ],
    "NYC_test.csv": [
        ("1", "poi-A", "Cafe", "40.7500", "-73.9900", "2012-06-01 09:00:00", "1_3"),
        ("1", "poi-Z", "Park", "40.7800", "-73.9700", "2012-06-01 10:00:00", "1_3"),
        ("2", "poi-C", "Museum", "40.7790", "-73.9630", "2012-06-02 09:00:00", "2_3"),
        ("2", "poi-A", "Cafe", "40.7500", "-73.9900", "2012-06-02 11:00:00", "2_3"),
        ("2", "poi-B", "Bar", "40.6900", "-73.9500", "2012-06-02 10:00:00", "2_3"),
    ],
}
A, B, C, Z = range(4)  # item indices: clean items come sorted by id


def csv_line(
    user: str, poi: str, category: str, lat: str, lon: str, utc: str, trajectory: str
) -> str:
    cat_id = f"cat-{category.lower().replace(' ', '-')}"
    return (
        f"{user},{poi},{cat_id},7,{category},{lat},{lon},-240,{utc}+00:00,{utc}-04:00,1,"
        f"0.5,{trajectory},0,0.5"
    )


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """The three split files, GETNext's layout, 14 rows (one with unparseable coordinates)."""
    out = tmp_path / "foursquare_nyc_sthgcn"
    out.mkdir()
    for name, rows in ROWS.items():
        (out / name).write_text("\n".join([HEADER, *(csv_line(*r) for r in rows)]) + "\n")
    return out


def cleaned(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Clean items and interactions of the folder (cleaning rules only, no admin join)."""
    data = read_sthgcn(folder)
    items = validate_items(data.items, "nyc-sthgcn").clean
    return items, validate_interactions(data.interactions, items["item_id"], "nyc-sthgcn").clean


def test_reader_items_and_interactions(folder: Path) -> None:
    data = read_sthgcn(folder)
    inter = data.interactions
    assert len(inter) == 14
    assert inter["source_row"].tolist()[:2] == ["NYC_train.csv:2", "NYC_train.csv:3"]
    assert inter["source_row"].iloc[-1] == "NYC_test.csv:6"
    assert inter["split"].tolist() == ["train"] * 5 + ["valid"] * 4 + ["test"] * 5
    assert inter["trajectory_id"].tolist()[5:9] == ["1_2", "1_2", "2_2", "2_2"]
    assert inter["timestamp"].iloc[0] == "2012-04-03 18:00:00+00:00"
    assert not inter["parse_error"].notna().any()
    items = data.items.set_index("item_id")
    assert items.index.tolist() == ["poi-A", "poi-B", "poi-C", "poi-Z"]
    # Median of the POI's six check-ins; the most frequent category (5 x Cafe, 1 x Coffee Shop).
    assert float(items.loc["poi-A", "latitude"]) == pytest.approx(40.7505)
    assert float(items.loc["poi-B", "latitude"]) == pytest.approx(40.69)  # "abc" ignored
    assert items.loc["poi-A", "category"] == "Cafe"
    assert items.loc["poi-A", "category_id"] == "cat-cafe"
    assert items["name"].isna().all()


def test_bad_rows_are_quarantined_and_the_split_columns_survive(folder: Path) -> None:
    with (folder / "NYC_test.csv").open("a") as handle:
        handle.write("3,poi-Q,cat-x\n")  # line 7: too few fields
    data = read_sthgcn(folder)
    assert "poi-Q" not in set(data.items["item_id"])
    items = validate_items(data.items, "nyc-sthgcn")
    inter = validate_interactions(data.interactions, items.clean["item_id"], "nyc-sthgcn")
    assert len(data.interactions) == 15 == len(inter.clean) + len(inter.quarantine)
    assert dict(zip(inter.quarantine["source_row"], inter.quarantine["reason"], strict=True)) == {
        "NYC_val.csv:4": "unparseable_coordinates",
        "NYC_test.csv:7": "malformed_row",
    }
    clean = inter.clean
    assert {"trajectory_id", "split"} <= set(clean.columns)
    assert clean["split"].value_counts().to_dict() == {"train": 5, "valid": 3, "test": 5}
    row = clean.set_index("source_row").loc["NYC_test.csv:5"]
    assert (row["trajectory_id"], row["split"]) == ("2_3", "test")


def test_other_sources_keep_their_interaction_columns(folder: Path) -> None:
    data = read_sthgcn(folder)
    plain = data.interactions.drop(columns=["trajectory_id", "split"])
    items = validate_items(data.items, "x").clean
    clean = validate_interactions(plain, items["item_id"], "x").clean
    assert list(clean.columns) == ["city", "user_id", "item_id", "ts", "source_row"]
    assert file_split_times(clean) is None


def test_missing_file_or_column_is_a_source_error(folder: Path) -> None:
    (folder / "NYC_test.csv").write_text(HEADER.replace(",trajectory_id", "") + "\n")
    with pytest.raises(SourceError, match=r"NYC_test\.csv.*\['trajectory_id'\]"):
        read_sthgcn(folder)
    (folder / "NYC_val.csv").unlink()
    with pytest.raises(SourceError, match=r"not found: .*NYC_val\.csv"):
        read_sthgcn(folder)


def test_split_times_come_from_the_files(folder: Path) -> None:
    _, clean = cleaned(folder)
    t1, t2 = file_split_times(clean)
    assert t1 == pd.Timestamp("2012-05-01 09:00:00", tz="UTC")
    assert t2 == pd.Timestamp("2012-06-01 09:00:00", tz="UTC")
    config = DatasetConfig(t1="2012-04-10", t2="2012-04-20")  # the files win over the config
    assert split_times(clean["ts"], config, (t1, t2)) == (t1, t2)
    assert split_times(clean["ts"], config)[0] == pd.Timestamp("2012-04-10", tz="UTC")
    late = clean.copy()
    late.loc[late["split"] == "train", "ts"] = pd.Timestamp("2012-05-01 09:00:00", tz="UTC")
    with pytest.raises(ValueError, match="not a time split: 5 train rows"):
        file_split_times(late)


def test_protocol_on_the_files(folder: Path) -> None:
    items, clean = cleaned(folder)
    index = pd.Series(range(len(items)), index=items["item_id"])
    args = (
        clean["user_id"],
        index.loc[clean["item_id"]].to_numpy(),
        clean["ts"],
        clean["trajectory_id"],
        clean["split"],
    )
    hist, targets = trajectory_last_targets(*args, split="valid", max_history=5)
    # 1_2 ends at B; 2_2 lost its bad row, a single check-in is no target.
    assert targets.tolist() == [B]
    assert hist.tolist() == [[-1, A, B, A, C]]  # user 1 before 2012-05-01 10:00, two files
    hist, targets = trajectory_last_targets(*args, split="test", max_history=4)
    # 1_3 ends at poi-Z, never seen in training: dropped. 2_3 ends at A by time (11:00), not
    # at its last line; the history is user 2's last four check-ins before it.
    assert targets.tolist() == [A]
    assert hist.tolist() == [[C, A, C, B]]
    # the times of those check-ins, row for row, from the same timeline
    hist_times, target_times = trajectory_last_target_times(*args, split="test", max_history=6)
    hist, _ = trajectory_last_targets(*args, split="test", max_history=6)
    at = pd.to_datetime(target_times, utc=True)
    assert at.tolist() == [pd.Timestamp("2012-06-02 11:00:00", tz="UTC")]
    assert np.isnan(hist_times[hist < 0]).all() and not np.isnan(hist_times[hist >= 0]).any()
    known = hist_times[0][hist[0] >= 0]
    assert (np.diff(known) >= 0).all() and known[-1] < target_times[0]


def test_protocol_hand_checked_example() -> None:
    # (user, item, time, trajectory, split); given out of time order.
    rows = [
        ("u1", 2, 20.0, "a2", "test"),  # a2 runs on from valid: its target is here
        ("u1", 0, 1.0, "a1", "train"),
        ("u1", 1, 2.0, "a1", "train"),
        ("u1", 2, 3.0, "a1", "train"),
        ("u1", 3, 10.0, "a2", "valid"),
        ("u1", 1, 11.0, "a2", "valid"),
        ("u1", 4, 30.0, "a3", "test"),
        ("u1", 4, 31.0, "a3", "test"),  # item 4 never in training: dropped
        ("u2", 5, 1.5, "b1", "train"),  # item 5 only first of a train trajectory: unseen
        ("u2", 1, 2.5, "b1", "train"),
        ("u2", 0, 12.0, "b2", "valid"),
        ("u2", 2, 13.0, "b2", "valid"),  # valid target of u2
        ("u2", 0, 21.0, "b3", "test"),
        ("u2", 5, 22.0, "b3", "test"),  # unseen item 5: dropped
        ("u2", 1, 40.0, "b4", "test"),  # a single check-in: no target
        ("u2", 1, 51.0, "b5", "test"),
        ("u2", 0, 50.0, "b5", "test"),
        ("u2", 3, 50.5, None, None),  # a row without trajectory: history only
    ]
    users, items, times, trips, splits = (list(c) for c in zip(*rows, strict=True))
    hist, targets = trajectory_last_targets(
        users, np.array(items), np.array(times), trips, splits, split="valid", max_history=4
    )
    assert targets.tolist() == [2]
    assert hist.tolist() == [[-1, 5, 1, 0]]
    hist, targets = trajectory_last_targets(
        users, np.array(items), np.array(times), trips, splits, split="test", max_history=6
    )
    assert targets.tolist() == [2, 1]  # by user, then time
    assert hist.dtype == np.int64 and hist.shape == (2, 6)
    assert hist.tolist() == [[-1, 0, 1, 2, 3, 1], [2, 0, 5, 1, 0, 3]]
    with pytest.raises(ValueError, match="split must be one of"):
        trajectory_last_targets(users, np.array(items), np.array(times), trips, splits, "train")


def test_city_registration_and_nyc_admin_levels(
    folder: Path, lgsid_env: Path, shared_data: Path
) -> None:
    with pytest.raises(FileNotFoundError, match="foursquare-sthgcn expects the folder"):
        check_source_path("foursquare-sthgcn", folder / "NYC_train.csv")
    assert (
        main(["add-city", "nyc-sthgcn", "--source", "foursquare-sthgcn", "--path", str(folder)])
        == 0
    )
    config = CityRegistry().get("nyc-sthgcn")
    data = read_city_source(config)
    items = clean_items(data.items, config, "New York").clean.set_index("item_id")
    assert items.loc["poi-A", "admin_l1_name"] == "Manhattan"
    assert items.loc["poi-B", "admin_l1_name"] == "Brooklyn"
    assert items["admin_l2_code"].notna().all()
    inter = clean_interactions(data.interactions, items.reset_index(), config.slug)
    assert len(inter.clean) + len(inter.quarantine) == len(data.interactions) == 14


def test_real_split_gives_the_published_target_counts(shared_data: Path) -> None:
    folder = shared_data / "foursquare_nyc_sthgcn"
    if not (folder / "NYC_train.csv").is_file():
        pytest.skip(f"no STHGCN split at {folder}")
    items, clean = cleaned(folder)
    assert len(clean) == 104_034  # 104,049 rows, 15 repeated (user, POI, time) in train
    t1, t2 = file_split_times(clean)
    assert (t1, t2) == (
        pd.Timestamp("2012-11-09 21:54:47", tz="UTC"),
        pd.Timestamp("2012-12-21 13:29:31", tz="UTC"),
    )
    index = pd.Series(range(len(items)), index=items["item_id"])
    args = (
        clean["user_id"],
        index.loc[clean["item_id"]].to_numpy(),
        clean["ts"],
        clean["trajectory_id"],
        clean["split"],
    )
    counts = {s: len(trajectory_last_targets(*args, split=s)[1]) for s in ("valid", "test")}
    assert counts == {"valid": 1399, "test": 1348}  # shared/data README, this training file
