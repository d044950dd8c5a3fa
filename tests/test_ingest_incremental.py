"""Incremental ingest: files landed for a city are merged into its published tables without
reading the source again, and give the same tables as a whole-source rebuild; a run with
nothing new reads nothing and writes no version; a rewritten landed file reads everything."""

import os
from pathlib import Path

import pandas as pd
from helpers import tiny_spec

from lgsid_pipeline.cities import CityConfig
from lgsid_pipeline.demo import generate_city
from lgsid_pipeline.stages import ingest as stage
from lgsid_pipeline.stages.context import StageContext
from lgsid_pipeline.warehouse import Warehouse

CITY = "tiny"
TABLES = [
    ("raw_items", None),
    ("raw_interactions", None),
    ("items", None),
    ("interactions", None),
    ("quarantine", "items"),
    ("quarantine", "interactions"),
]


def land(source: Path, landing: Path, tag: str, n: int, duplicate: bool = False) -> None:
    """Land ``n`` new venues (copies of existing ones, moved 100 m) with check-ins at them,
    plus, with ``duplicate``, a row re-using an existing item's id (quarantined)."""
    items = pd.read_parquet(source / "items.parquet")
    new = items.head(n).copy()
    new["item_id"] = [f"{tag}-{i:04d}" for i in range(n)]
    new["latitude"] = new["latitude"] + 0.001
    if duplicate:
        new = pd.concat([new, items.tail(1)], ignore_index=True)
    checkins = pd.read_parquet(source / "checkins.parquet").head(3 * n).copy()
    checkins["item_id"] = [f"{tag}-{i % n:04d}" for i in range(len(checkins))]
    checkins["timestamp"] = pd.Timestamp("2025-03-01", tz="UTC") + pd.to_timedelta(
        range(len(checkins)), unit="min"
    )
    landing.mkdir(parents=True, exist_ok=True)
    new.to_parquet(landing / f"items-{tag}.parquet", index=False)
    checkins.to_parquet(landing / f"checkins-{tag}.parquet", index=False)


def tables(warehouse: Warehouse) -> dict[str, pd.DataFrame]:
    """Every ingest table, rows in ``source_row`` order, values as text."""
    out = {}
    for table, part in TABLES:
        frame = (
            warehouse.read_table(table, CITY, part) if part else warehouse.read_table(table, CITY)
        )
        out[f"{table}/{part}"] = (
            frame.astype("string").sort_values("source_row").reset_index(drop=True)
        )
    return out


def test_landed_files_merge_like_a_full_rebuild(tmp_path: Path) -> None:
    source, home = tmp_path / "source", tmp_path / "home"
    generate_city(tiny_spec(n_items=150), source)
    config = CityConfig(CITY, "synthetic", str(source))
    ctx = StageContext.at(home)
    warehouse, landing = ctx.warehouse, ctx.landing
    first = stage.ingest_city(ctx, config, 0.25)
    assert not first.unchanged

    # nothing new: nothing read, the same version
    again = stage.ingest_city(ctx, config, 0.25)
    assert again.unchanged and again.staged is None and again.version == first.version
    assert {a.name for a in again.audits_of("items")} == set(stage.INGEST_CHECKS["items"])

    # two new files: merged, not read from the source
    land(source, landing / CITY, "a", 12, duplicate=True)
    merged = stage.ingest_city(ctx, config, 0.25)
    assert merged.staged is not None and merged.staged.merged == [
        "checkins-a.parquet",
        "items-a.parquet",
    ]
    items = warehouse.read_table("items", CITY)
    assert {f"a-{i:04d}" for i in range(12)} <= set(items["item_id"])
    quarantined = warehouse.read_table("quarantine", CITY, "items")
    assert (quarantined["reason"] == "duplicate_id").sum() == 1
    figures = merged.asset_metadata()["items"]
    assert figures["raw_rows"] == figures["dagster/row_count"] + figures["quarantined"]

    # the same files read from scratch give the same tables
    rebuilt_ctx = StageContext.at(tmp_path / "rebuilt")  # another home, the same landed files
    rebuilt_ctx.home.mkdir(parents=True, exist_ok=True)
    rebuilt_ctx.landing.symlink_to(landing, target_is_directory=True)
    rebuilt = rebuilt_ctx.warehouse
    full = stage.ingest_city(rebuilt_ctx, config, 0.25, full=True)
    assert full.staged is not None and full.staged.merged == []
    merged_tables, full_tables = tables(warehouse), tables(rebuilt)
    for name, frame in full_tables.items():
        pd.testing.assert_frame_equal(merged_tables[name], frame, check_like=True, obj=name)

    # a landed file rewritten: everything is read again
    rewritten = landing / CITY / "items-a.parquet"
    os.utime(rewritten, ns=(rewritten.stat().st_atime_ns, rewritten.stat().st_mtime_ns + 10**9))
    reread = stage.ingest_city(ctx, config, 0.25)
    assert reread.staged is not None and reread.staged.merged == []
    assert stage.ingest_city(ctx, config, 0.25).unchanged  # and then nothing
