"""Write, audit, publish of the ingest stage: every blocking check can fail and then nothing is
published; a crash at any point of a publish leaves the old or the new table set, never a mix;
old versions are swept; rollback goes back one version (library and CLI)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow.parquet as pq
import pytest
from helpers import tiny_spec
from table_sets import CITY, PARTS, publish, visible_sizes
from test_reliability import failure_text

from lgsid_pipeline import warehouse as warehouse_module
from lgsid_pipeline.cities import CityConfig, CityRegistry
from lgsid_pipeline.cleaning import Validated
from lgsid_pipeline.cli import main
from lgsid_pipeline.demo import generate_city
from lgsid_pipeline.report import city_report
from lgsid_pipeline.runner import materialize, quarantine_config
from lgsid_pipeline.stages import ingest as ingest_stage
from lgsid_pipeline.warehouse import StagedVersion, VersionError, Warehouse

pytestmark = pytest.mark.slow  # seconds per test: left out of `make test-fast`

# `geo_negatives` stands for the downstream steps: it must not run after a failed audit.
SELECT = "items,geo_negatives"


def register(home: Path) -> None:
    folder = home / "synthetic" / CITY
    generate_city(tiny_spec(name="Wap", seed=5, n_items=60), folder)
    CityRegistry(home).add(CityConfig(slug=CITY, source="synthetic", path=str(folder)))


def published_hashes(warehouse: Warehouse) -> dict[str, str]:
    """Hash of the pointer and of every file it names."""
    pointer = warehouse.pointer_path(CITY, "ingest")
    out = {"pointer": hashlib.sha256(pointer.read_bytes()).hexdigest()}
    for table, part in PARTS:
        path = warehouse.resolve_table(table, CITY, part)
        assert path is not None and path.is_file(), (table, part)
        out[f"{table}/{part}"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def step_events(instance: dg.DagsterInstance, run_id: str, kind: str) -> list[str]:
    return [
        e.step_key
        for e in instance.all_logs(run_id)
        if e.dagster_event and e.dagster_event.event_type_value == kind
    ]


def _move_first_to_quarantine(result: Validated, table: str) -> Validated:
    """A valid-looking split with one clean row moved to the quarantine (rate > 0)."""
    first = result.clean.iloc[:1]
    moved = pd.DataFrame(
        {
            "city": first["city"].astype("string").values,
            "table_name": pd.Series([table], dtype="string"),
            "source_row": first["source_row"].astype("string").values,
            "reason": pd.Series(["test"], dtype="string"),
            "detail": pd.Series(["{}"], dtype="string"),
        }
    )
    return Validated(
        result.clean.iloc[1:].reset_index(drop=True),
        pd.concat([result.quarantine, moved], ignore_index=True),
    )


def _drop_column(column: str):
    return lambda r: Validated(r.clean.drop(columns=[column]), r.quarantine)


def _bad_latitude(r: Validated) -> Validated:
    clean = r.clean.copy()
    clean.loc[0, "latitude"] = 95.0
    return Validated(clean, r.quarantine)


def _duplicate_id(r: Validated) -> Validated:
    clean = r.clean.copy()
    clean.loc[1, "item_id"] = clean.loc[0, "item_id"]
    return Validated(clean, r.quarantine)


# check -> (which cleaning result is broken, how, run with a zero quarantine limit, expected text)
BREAKS = {
    "items_schema": ("items", _drop_column("h3_cell"), False, "missing columns: ['h3_cell']"),
    "items_coordinates_in_range": (
        "items",
        _bad_latitude,
        False,
        "1 rows with coordinates out of range",
    ),
    "items_unique_ids": ("items", _duplicate_id, False, "1 duplicate item_id values"),
    "items_quarantine_rate": (
        "items",
        lambda r: _move_first_to_quarantine(r, "items"),
        True,
        "limit 0.0000",
    ),
    "items_counts_reconcile": ("items_file", None, False, "1 missing"),
    "interactions_schema": ("interactions", _drop_column("ts"), False, "missing columns: ['ts']"),
    "interactions_quarantine_rate": (
        "interactions",
        lambda r: _move_first_to_quarantine(r, "interactions"),
        True,
        "limit 0.0000",
    ),
    "interactions_counts_reconcile": ("interactions_file", None, False, "1 missing"),
}


@pytest.mark.parametrize("check", sorted(BREAKS))
def test_each_blocking_check_fails_and_publishes_nothing(
    check: str, lgsid_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    register(lgsid_env)
    warehouse = Warehouse(lgsid_env)
    target, corrupt, strict, expected = BREAKS[check]
    with dg.instance_for_test() as instance:
        [good] = materialize([CITY], select=SELECT, instance=instance)
        assert good.success, good
        before = published_hashes(warehouse)
        version = warehouse.published(CITY, "ingest")["version"]

        if target in ("items", "interactions"):
            real = getattr(ingest_stage, f"clean_{target}")
            monkeypatch.setattr(
                ingest_stage, f"clean_{target}", lambda *a, **k: corrupt(real(*a, **k))
            )
        else:  # the frames are right; the file persisted on disk loses its last row
            table = target.removesuffix("_file")
            real_write = StagedVersion.write_table

            def lossy_write(self, name, frame, part="data"):
                if name == table:
                    frame = frame.iloc[:-1]
                return real_write(self, name, frame, part)

            monkeypatch.setattr(StagedVersion, "write_table", lossy_write)
        # the sources did not change, so only a full ingest reads them with the broken code
        config = quarantine_config(0.0) if strict else {}
        config.setdefault("ops", {})["ingest_tables"] = {"config": {"full": True}}
        [bad] = materialize([CITY], select=SELECT, instance=instance, run_config=config)
        assert not bad.success
        # A quarantined item also quarantines its check-ins: both rates exceed a zero limit.
        also = {"interactions_quarantine_rate"} if check == "items_quarantine_rate" else set()
        assert set(bad.failed_checks) == {check} | also, bad
        assert bad.failed_steps == ["ingest_tables"]
        text = failure_text(bad.run_id, instance)
        assert check in text and expected in text and "nothing published" in text, text
        assert "geo_negatives" not in step_events(instance, bad.run_id, "STEP_START")
        assert step_events(instance, bad.run_id, "ASSET_MATERIALIZATION") == []
    assert published_hashes(warehouse) == before  # byte for byte what was published
    assert warehouse.published(CITY, "ingest")["version"] == version
    assert city_report(warehouse, CITY)["items"]["reconciles"]
    root = warehouse.version_root(CITY, "ingest")
    assert [p.name for p in root.iterdir()] == [version]  # the staged version is gone


def _fail_nth_parquet_write(monkeypatch: pytest.MonkeyPatch) -> None:
    real, calls = pq.write_table, []

    def write(table, where, *args, **kwargs):
        calls.append(where)
        if len(calls) == 3:
            Path(where).write_bytes(b"PAR1 half")
            raise OSError("disk full")
        return real(table, where, *args, **kwargs)

    monkeypatch.setattr(pq, "write_table", write)


def _fail_json(name: str):
    def patch(monkeypatch: pytest.MonkeyPatch) -> None:
        real = warehouse_module._write_json

        def write(data, path):
            if path.name == name:
                raise OSError("crash")
            return real(data, path)

        monkeypatch.setattr(warehouse_module, "_write_json", write)

    return patch


def _fail_pointer_rename(monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.replace

    def replace(src, dst):
        if str(dst).endswith("/_published/wap/ingest.json"):
            assert Path(src).stat().st_size > 0  # the new pointer is written, not yet in place
            raise OSError("crash")
        return real(src, dst)

    monkeypatch.setattr(warehouse_module.os, "replace", replace)


def _fail_method(name: str):
    def patch(monkeypatch: pytest.MonkeyPatch) -> None:
        def crash(*args, **kwargs):
            raise OSError("crash")

        monkeypatch.setattr(Warehouse, name, crash)

    return patch


# crash point -> (how, which set readers see afterwards)
CRASHES = {
    "staged_table_write": (_fail_nth_parquet_write, 3),
    "version_manifest": (_fail_json("manifest.json"), 3),
    "promote_rename": (_fail_method("_promote"), 3),
    "pointer_write": (_fail_json("ingest.json"), 3),
    "pointer_rename": (_fail_pointer_rename, 3),
    "sweep_after_switch": (_fail_method("sweep_versions"), 5),
}


@pytest.mark.parametrize("point", sorted(CRASHES))
def test_crash_at_each_publish_point_leaves_one_whole_set(
    point: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    warehouse = Warehouse(tmp_path)
    publish(warehouse, 3)
    inject, seen = CRASHES[point]
    with monkeypatch.context() as patched:
        inject(patched)
        with pytest.raises(OSError):
            publish(warehouse, 5)
    assert visible_sizes(warehouse) == {seen}
    assert visible_sizes(Warehouse(tmp_path)) == {seen}  # a fresh reader too
    # The next publish succeeds and sweeps what the crash left behind.
    final = publish(warehouse, 7)
    assert visible_sizes(warehouse) == {7}
    assert warehouse.versions(CITY, "ingest") == sorted([final["version"], *final["history"]])
    assert not list(warehouse.version_root(CITY, "ingest").glob(".staging-*"))


def test_old_versions_swept_and_rollback(tmp_path: Path) -> None:
    warehouse = Warehouse(tmp_path, keep_versions=2)
    pointers = [publish(warehouse, n) for n in (1, 2, 3, 4)]
    assert warehouse.versions(CITY, "ingest") == [p["version"] for p in pointers[1:]]
    assert pointers[-1]["history"] == [pointers[2]["version"], pointers[1]["version"]]
    back = warehouse.rollback(CITY, "ingest")
    assert back["version"] == pointers[2]["version"] and visible_sizes(warehouse) == {3}
    assert back["rolled_back_from"] == pointers[3]["version"]
    assert warehouse.rollback(CITY, "ingest")["version"] == pointers[1]["version"]
    assert visible_sizes(warehouse) == {2}
    with pytest.raises(VersionError, match="no ingest version before"):
        warehouse.rollback(CITY, "ingest")
    assert warehouse.versions(CITY, "ingest") == [pointers[1]["version"]]
    assert warehouse.delete_city(CITY) > 0 and warehouse.published(CITY, "ingest") is None


def test_rollback_cli(lgsid_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    register(lgsid_env)
    warehouse = Warehouse(lgsid_env)
    assert main(["rollback", "--city", CITY]) == 2  # nothing published yet
    assert capsys.readouterr().err.count("\n") == 1
    first, second = publish(warehouse, 2), publish(warehouse, 4)
    assert main(["rollback", "--city", CITY, "--stage", "ingest"]) == 0
    out = capsys.readouterr().out
    assert second["version"] in out and first["version"] in out
    assert visible_sizes(warehouse) == {2}
    assert main(["rollback", "--city", "nowhere"]) == 2  # not registered
    assert "nowhere" in capsys.readouterr().err
    for argv in (
        ["rollback", "--city", "../x"],
        ["rollback", "--city", CITY, "--stage", "x"],
        ["rollback"],
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert capsys.readouterr().err.count("\n") == 1
