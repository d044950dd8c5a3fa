"""The ingest stage function runs without Dagster on a synthetic city: raw = clean +
quarantined on the staged files, and a broken source fails the audits before publishing."""

from pathlib import Path

import pandas as pd
from helpers import tiny_spec

from lgsid_pipeline.cities import CityConfig
from lgsid_pipeline.demo import generate_city
from lgsid_pipeline.stages.ingest import STAGE, stage_ingest
from lgsid_pipeline.warehouse import Warehouse

CITY = "tiny"


def test_ingest_stage_without_dagster(tmp_path: Path) -> None:
    source = tmp_path / "source"
    generate_city(tiny_spec(n_items=200), source)
    config = CityConfig(CITY, "synthetic", str(source))
    warehouse = Warehouse(tmp_path / "home")
    with warehouse.staging(CITY, STAGE, carry_forward=False) as staged:
        ingest = stage_ingest(config, staged, tmp_path / "landing", max_quarantine_rate=0.25)
        assert all(a.outcome.passed for a in ingest.audits), [
            a.outcome.description for a in ingest.audits
        ]
        warehouse.publish(staged, {})
    figures = ingest.item_figures()
    assert figures["raw_rows"] == figures["rows"] + figures["quarantined"] == 200
    assert len(warehouse.read_table("items", CITY)) == figures["rows"]
    events = ingest.interaction_figures()
    assert events["raw_rows"] == events["rows"] + events["quarantined"]
    assert ingest.items_map().startswith(b"\x89PNG") and "200 raw items" in ingest.summary()

    # a flood of duplicated item ids: quarantined, and the rate check fails before publish
    items_file = source / "items.parquet"
    frame = pd.read_parquet(items_file)
    pd.concat([frame, frame, frame]).to_parquet(items_file, index=False)
    before = warehouse.read_table("items", CITY)
    with warehouse.staging(CITY, STAGE, carry_forward=False) as staged:
        broken = stage_ingest(config, staged, tmp_path / "landing", max_quarantine_rate=0.25)
    failed = {a.name for a in broken.audits if not a.outcome.passed}
    assert "items_quarantine_rate" in failed
    pd.testing.assert_frame_equal(warehouse.read_table("items", CITY), before)
