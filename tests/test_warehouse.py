"""Warehouse: atomic writes, clear errors, catalog views, concurrent catalog refresh."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest

from lgsid_pipeline.config import InvalidCityError
from lgsid_pipeline.warehouse import TableNotFoundError, Warehouse


def frame(n: int, city: str = "c1") -> pd.DataFrame:
    return pd.DataFrame({"city": [city] * n, "item_id": [str(i) for i in range(n)]})


def test_write_and_read_roundtrip(tmp_path: Path) -> None:
    wh = Warehouse(tmp_path)
    wh.write_table("items", "c1", frame(3))
    assert wh.read_table("items", "c1")["item_id"].tolist() == ["0", "1", "2"]
    assert wh.table_path("items", "c1") == tmp_path / "warehouse/items/city=c1/data.parquet"


def test_crash_during_write_keeps_the_old_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wh = Warehouse(tmp_path)
    wh.write_table("items", "c1", frame(3))

    def crash(table, where, **kwargs):
        Path(where).write_bytes(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", crash)
    with pytest.raises(OSError, match="disk full"):
        wh.write_table("items", "c1", frame(10))
    monkeypatch.undo()
    assert len(wh.read_table("items", "c1")) == 3
    # nothing of the failed write is left: only the published version's folder
    leftovers = [p.name for p in wh.version_root("c1", "ingest").iterdir()]
    assert leftovers == [wh.published("c1", "ingest")["version"]]


@pytest.mark.parametrize("bad", ["../etc", "a'b", "", "A", "x/y", "a b", "-lead"])
def test_city_keys_are_validated_before_any_path(tmp_path: Path, bad: str) -> None:
    wh = Warehouse(tmp_path)
    with pytest.raises(InvalidCityError):
        wh.write_table("items", bad, frame(1))
    assert not (tmp_path / "warehouse").exists()


def test_missing_table_error_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(TableNotFoundError, match="lgsid materialize --city c9"):
        Warehouse(tmp_path).read_table("items", "c9")


def test_catalog_views_span_cities(tmp_path: Path) -> None:
    wh = Warehouse(tmp_path)
    wh.write_table("items", "c1", frame(2, "c1"))
    wh.write_table("items", "c2", frame(5, "c2"))
    assert wh.refresh_catalog()
    con = duckdb.connect(str(wh.catalog_path), read_only=True)
    counts = dict(con.execute("SELECT city, count(*) FROM items GROUP BY city").fetchall())
    con.close()
    assert counts == {"c1": 2, "c2": 5}


def _refresh_many(home: str, city: str) -> None:
    wh = Warehouse(home)
    for i in range(10):
        wh.write_table("items", city, frame(i + 1, city))
        assert wh.refresh_catalog()


def test_concurrent_catalog_refresh_from_processes(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_refresh_many, args=(str(tmp_path), c)) for c in ("c1", "c2")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    with Warehouse(tmp_path).connect() as con:
        assert con.execute("SELECT count(*) FROM items").fetchone()[0] == 20


def test_first_version_in_an_old_home_keeps_the_plain_parts(tmp_path: Path) -> None:
    """A home written before versioning holds plain files; publishing one table of their
    stage must not hide the others."""
    wh = Warehouse(tmp_path)
    for table, n in (("geo_negatives", 4), ("cooccurrence_pairs", 6), ("geo_pairs", 2)):
        path = wh.table_path(table, "c1")
        path.parent.mkdir(parents=True)
        frame(n).to_parquet(path)
    wh.write_table("geo_pairs", "c1", frame(3))
    assert wh.published("c1", "alignment_samples") is not None
    assert wh.has_table("geo_negatives", "c1") and wh.has_table("cooccurrence_pairs", "c1")
    assert [
        len(wh.read_table(t, "c1")) for t in ("geo_negatives", "cooccurrence_pairs", "geo_pairs")
    ] == [4, 6, 3]
    with wh.connect() as con:
        assert con.execute("select count(*) from geo_negatives").fetchone()[0] == 4
        assert con.execute("select count(*) from geo_pairs").fetchone()[0] == 3
