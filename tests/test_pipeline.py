"""End-to-end ingest through Dagster: parallel cities, bad input, blocking checks, reports."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import tiny_spec

from lgsid_pipeline.cities import CityConfig, CityRegistry
from lgsid_pipeline.demo import generate_city
from lgsid_pipeline.report import city_report
from lgsid_pipeline.reports import ReportStore
from lgsid_pipeline.runner import materialize, quarantine_config
from lgsid_pipeline.warehouse import Warehouse

INGEST = "group:ingest"


def register_tiny(home: Path, slug: str, seed: int, n_items: int = 250) -> None:
    folder = home / "synthetic" / slug
    generate_city(tiny_spec(name=slug.title(), seed=seed, n_items=n_items), folder)
    CityRegistry(home).add(CityConfig(slug=slug, source="synthetic", path=str(folder)))


@pytest.mark.slow
def test_two_cities_materialize_in_parallel(
    lgsid_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LGSID_EXECUTOR", "multiprocess")  # the city workers import it afresh
    register_tiny(lgsid_env, "alpha", seed=1)
    register_tiny(lgsid_env, "beta", seed=2, n_items=400)
    with dg.instance_for_test() as instance:
        results = materialize(["alpha", "beta"], select=INGEST, instance=instance, parallel=2)
        assert [(r.city, r.success, r.failed_checks) for r in results] == [
            ("alpha", True, []),
            ("beta", True, []),
        ]
        assert set(instance.get_dynamic_partitions("city")) == {"alpha", "beta"}
        for r in results:  # each city ran under the multiprocess executor
            events = instance.all_logs(r.run_id)
            assert any("Multiprocess executor" in (e.message or "") for e in events)
    warehouse = Warehouse(lgsid_env)
    for city, n_items in (("alpha", 250), ("beta", 400)):
        report = city_report(warehouse, city)
        assert report["items"]["rows"] + report["items"]["quarantined"] == n_items
        assert report["items"]["reconciles"] and report["interactions"]["reconciles"]
        assert report["items"]["admin_level1_share"] == 1.0
        assert report["items"]["admin_level2_share"] == 1.0
        assert report["interactions"]["rows"] > 0
    assert ReportStore(lgsid_env).plot("alpha", "items_map").stat().st_size > 1000


def write_bad_gowalla(folder: Path) -> None:
    folder.mkdir(parents=True)
    spots = pd.DataFrame(
        {
            "city": ["New York"] * 6,
            "spot_id": pd.array([1, 2, 3, 3, None, 5], dtype="Int64"),
            "spot_name": ["Starbucks", "Starbucks Coffee", "Joe's", "Joe's dup", "No id", "Far"],
            "latitude": [40.75, 40.76, 40.70, 40.70, 40.71, 200.0],
            "longitude": [-73.99, -73.98, -73.95, -73.95, -73.90, -73.9],
        }
    )
    checkins = pd.DataFrame(
        {
            "city": ["New York"] * 5,
            "user_id": pd.array([1, 1, 2, None, 2], dtype="Int64"),
            "utc_time": pd.to_datetime(
                ["2010-01-01", "2010-01-02", "2010-01-03", "2010-01-04", "2010-01-05"], utc=True
            ),
            "latitude": [40.75, 40.76, 40.70, 40.70, 0.0],
            "longitude": [-73.99, -73.98, -73.95, -73.95, 0.0],
            "spot_id": [1, 2, 3, 3, 5],
            "spot_name": ["Starbucks", "Starbucks Coffee", "Joe's", "Joe's", "Far"],
        }
    )
    for name, table in (("spots", spots), ("checkins", checkins)):
        pq.write_table(
            pa.Table.from_pandas(table, preserve_index=False), folder / f"{name}.parquet"
        )


def test_bad_input_is_quarantined_and_blocks_downstream(lgsid_env: Path, shared_data: Path) -> None:
    write_bad_gowalla(lgsid_env / "bad")
    CityRegistry(lgsid_env).add(
        CityConfig(slug="bad-city", source="gowalla", path=str(lgsid_env / "bad"), boundaries="nyc")
    )
    warehouse = Warehouse(lgsid_env)
    with dg.instance_for_test() as instance:
        # Half the items are bad: the blocking quarantine-rate check stops the run.
        strict = materialize(["bad-city"], select=INGEST, instance=instance)[0]
        assert not strict.success
        assert "items_quarantine_rate" in strict.failed_checks
        assert not warehouse.has_table("interactions", "bad-city")
        # With a looser limit the same data goes through, nothing lost.
        loose = materialize(
            ["bad-city"], select=INGEST, instance=instance, run_config=quarantine_config(0.9)
        )[0]
        assert loose.success, loose
    report = city_report(warehouse, "bad-city")
    assert report["quarantine_by_table"]["items"] == {
        "duplicate_id": 1,
        "missing_id": 1,
        "latitude_out_of_range": 1,
    }
    assert report["quarantine_by_table"]["interactions"] == {"missing_user_id": 1, "null_island": 1}
    assert report["items"]["rows"] == 3 and report["items"]["raw_rows"] == 6
    assert report["interactions"]["rows"] == 3 and report["interactions"]["reconciles"]
    assert sorted(warehouse.read_table("items", "bad-city")["item_id"]) == ["1", "2", "3"]


def test_events_go_to_a_file_and_each_stage_reports_progress(lgsid_env: Path) -> None:
    from lgsid_pipeline.demo.summary import demo_summary

    register_tiny(lgsid_env, "alpha", seed=1)
    events = lgsid_env / "logs" / "events.log"
    seen = []
    config = {
        "loggers": {
            "console": {"config": {"log_level": "ERROR"}},
            "file": {"config": {"path": str(events)}},
        }
    }
    with dg.instance_for_test() as instance:
        [result] = materialize(
            ["alpha"], select=INGEST, instance=instance, run_config=config, on_stage=seen.append
        )
    assert result.success
    [stage] = seen
    assert (stage.number, stage.total, stage.runs) == (1, 1, [result])
    assert stage.line().startswith("[1/1] ") and ": 1 run ok in " in stage.line()
    log = events.read_text()
    assert "STEP_SUCCESS" in log and "RUN_SUCCESS" in log and result.run_id in log
    summary = demo_summary(Warehouse(lgsid_env), ["alpha"], str(events))
    n_items = len(Warehouse(lgsid_env).read_table("items", "alpha"))
    assert f"alpha: {n_items} items" in summary
    assert str(events) in summary and "lgsid recommend --city alpha" in summary
