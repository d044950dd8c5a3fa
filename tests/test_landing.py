"""The landing folder: files read as a city's source, and the sensor that registers new cities
and requests runs only when files change."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from helpers import tiny_spec

from lgsid_pipeline.cities import CityConfig, CityRegistry
from lgsid_pipeline.definitions import defs
from lgsid_pipeline.defs.resources import WorkspaceResource
from lgsid_pipeline.demo import generate_city
from lgsid_pipeline.ingest import clean_interactions, clean_items, read_city_source
from lgsid_pipeline.sources.base import SourceError


@pytest.fixture(scope="module")
def synthetic_city(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("source")
    generate_city(tiny_spec(n_items=200), folder)
    return folder


def _land(synthetic_city: Path, folder: Path) -> None:
    """Land the synthetic city as a Parquet item file, a CSV item file and a CSV check-in file
    (with one broken row each), plus its admin polygons."""
    folder.mkdir(parents=True)
    items = pd.read_parquet(synthetic_city / "items.parquet")
    items.iloc[:150].to_parquet(folder / "items-2026-11-01.parquet")
    late = items.iloc[150:].astype({"latitude": object})
    late.loc[late.index[0], "latitude"] = "not a number"
    late.to_csv(folder / "items-2026-11-02.csv", index=False)
    checkins = pd.read_parquet(synthetic_city / "checkins.parquet")
    checkins = checkins.astype({"user_id": object})
    checkins.loc[checkins.index[0], "user_id"] = None
    checkins.to_csv(folder / "checkins-2026-11-02.csv", index=False)
    for level in (1, 2, 3):
        shutil.copy(synthetic_city / f"admin_level{level}.geojson", folder)


def test_landing_source_reads_every_file_and_reconciles(
    synthetic_city: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "landing" / "newtown"
    _land(synthetic_city, folder)
    config = CityConfig("newtown", "landing", str(folder))
    data = read_city_source(config)
    assert len(data.items) >= 200
    assert set(data.items["source_row"].str.split(":").str[0]) >= {
        "items-2026-11-01.parquet",
        "items-2026-11-02.csv",
    }
    items = clean_items(data.items, config, "Newtown")
    assert len(items.clean) + len(items.quarantine) == len(data.items)
    assert "not a number" not in set(items.clean["latitude"].astype(str))
    assert len(items.quarantine) >= 1
    assert items.clean["admin_l1_code"].notna().mean() > 0.9  # its own polygons were used
    inter = clean_interactions(data.interactions, items.clean, "newtown")
    assert len(inter.clean) + len(inter.quarantine) == len(data.interactions)
    assert len(inter.quarantine) >= 1
    (folder / "empty").mkdir()
    with pytest.raises(SourceError, match="no items"):
        read_city_source(CityConfig("empty", "landing", str(folder / "empty")))


def test_sensor_registers_new_cities_and_requests_runs_on_change(
    synthetic_city: Path, lgsid_env: Path
) -> None:
    _land(synthetic_city, lgsid_env / "landing" / "newtown")
    (lgsid_env / "landing" / "Bad Name").mkdir(parents=True)
    sensor = defs.get_sensor_def("landing_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    resources = {"workspace": WorkspaceResource(home=str(lgsid_env))}
    repository = defs.get_repository_def()
    with dg.instance_for_test() as instance:

        def tick(cursor: str | None) -> dg.SensorResult:
            context = dg.build_sensor_context(
                instance=instance, cursor=cursor, resources=resources, repository_def=repository
            )
            return sensor(context)

        first = tick(None)
        assert [(r.partition_key, r.job_name) for r in first.run_requests] == [("newtown", None)]
        assert first.dynamic_partitions_requests[0].partition_keys == ["newtown"]
        assert CityRegistry(lgsid_env).get("newtown").source == "landing"
        assert tick(first.cursor).run_requests == []  # nothing changed, nothing to do
        more = pd.read_parquet(synthetic_city / "checkins.parquet").head(5)
        more.to_parquet(lgsid_env / "landing" / "newtown" / "checkins-2026-11-03.parquet")
        again = tick(first.cursor)
        assert [r.partition_key for r in again.run_requests] == ["newtown"]
        assert again.run_requests[0].run_key != first.run_requests[0].run_key
        assert not again.dynamic_partitions_requests  # already registered
        assert json.loads(again.cursor)["newtown"] != json.loads(first.cursor)["newtown"]


def test_files_landed_for_a_registered_city_are_additions(
    synthetic_city: Path, lgsid_env: Path
) -> None:
    from lgsid_pipeline.ingest import raw_tables

    config = CityConfig("oldtown", "synthetic", str(synthetic_city))
    CityRegistry(lgsid_env).add(config)
    source_items, source_checkins = raw_tables(config)
    items = pd.read_parquet(synthetic_city / "items.parquet")
    new = items.head(10).assign(
        item_id=[f"new-{i}" for i in range(10)], latitude=items["latitude"].head(10) + 1e-4
    )
    landed = pd.concat([new, items.head(1)])  # the last row re-lands a known id
    folder = lgsid_env / "landing" / "oldtown"
    folder.mkdir(parents=True)
    landed.to_csv(folder / "items-new.csv", index=False)
    visits = pd.DataFrame(
        {
            "user_id": ["u-new"] * 3,
            "item_id": ["new-1", "new-2", "ghost"],
            "timestamp": ["2026-11-20T10:00:00Z"] * 3,
        }
    )
    visits.to_parquet(folder / "checkins-new.parquet")

    raw_items, raw_checkins = raw_tables(config, lgsid_env / "landing")
    assert len(raw_items) == len(source_items) + 11 + 1  # + the check-in-only "ghost"
    assert len(raw_checkins) == len(source_checkins) + 3
    cleaned = clean_items(raw_items, config, "Oldtown")
    assert len(cleaned.clean) + len(cleaned.quarantine) == len(raw_items)
    assert {f"new-{i}" for i in range(10)} <= set(cleaned.clean["item_id"])
    landed_rows = cleaned.quarantine[cleaned.quarantine["source_row"].str.startswith("items-new")]
    assert landed_rows["source_row"].tolist() == ["items-new.csv:11"]
    assert "duplicate" in landed_rows["reason"].iloc[0]

    sensor = defs.get_sensor_def("landing_sensor")
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(
            instance=instance,
            resources={"workspace": WorkspaceResource(home=str(lgsid_env))},
            repository_def=defs.get_repository_def(),
        )
        result = sensor(context)
    assert [r.partition_key for r in result.run_requests] == ["oldtown"]
    assert not result.dynamic_partitions_requests
    assert CityRegistry(lgsid_env).get("oldtown").source == "synthetic"
