"""The DuckDB side of the warehouse: a view per table over the Parquet files readers see
(each city's published version of a versioned stage), in short-lived in-memory connections
for queries, and in the catalog file ``<home>/catalog.duckdb`` for people."""

from __future__ import annotations

import fcntl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from lgsid_pipeline.config import sql_text


class DuckDbViews:
    """Views over a warehouse's files; mixed into :class:`~lgsid_pipeline.warehouse.Warehouse`,
    which provides the layout (``root``, ``home``, ``catalog_path``, ``published``,
    ``version_folder``)."""

    root: Path
    home: Path
    catalog_path: Path
    stage_of_table: dict[str, str]  # table -> the versioned stage it is published in

    def published(self, city: str, stage: str) -> dict[str, Any] | None:
        raise NotImplementedError

    def version_folder(self, city: str, stage: str, version: str) -> Path:
        raise NotImplementedError

    def existing_tables(self) -> list[str]:
        """Tables with at least one Parquet file that readers see."""
        return sorted(table for table, source in self._table_sources().items() if source)

    def _table_sources(self) -> dict[str, str | list[str]]:
        """Per table, what its view reads: a glob (plain tables) or a list of files (tables of
        versioned stages: each city's published files, or its plain files if unpublished)."""
        sources: dict[str, str | list[str]] = {}
        if not self.root.is_dir():
            return sources
        published: dict[str, dict[str, dict]] = {}  # stage -> city -> manifest
        for pointer in self.root.glob("_published/*/*.json"):
            manifest = self.published(pointer.parent.name, pointer.stem)
            if manifest is not None:
                published.setdefault(pointer.stem, {})[pointer.parent.name] = manifest
        for folder in sorted(self.root.iterdir()):
            if folder.name.startswith(("_", ".")) or folder.name in self.stage_of_table:
                continue
            if any(folder.glob("city=*/*.parquet")):
                sources[folder.name] = str(folder / "city=*" / "*.parquet")
        for table, stage in self.stage_of_table.items():
            manifests = published.get(stage, {})
            files = [
                str(self.version_folder(city, stage, m["version"]) / info["file"])
                for city, m in sorted(manifests.items())
                for _, info in sorted(m["tables"].get(table, {}).items())
            ]
            for plain in sorted(self.root.glob(f"{table}/city=*/*.parquet")):
                if plain.parent.name.removeprefix("city=") not in manifests:
                    files.append(str(plain))
            if files:
                sources[table] = files
        return sources

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived in-memory DuckDB connection with a view per existing table."""
        con = duckdb.connect(":memory:")
        try:
            self._create_views(con)
            yield con
        finally:
            con.close()

    def query(self, sql_file: str, params: dict[str, object] | None = None) -> pd.DataFrame:
        """Run one query from ``sql/`` with named parameters against the warehouse views."""
        with self.connect() as con:
            return con.execute(sql_text(sql_file), params or {}).df()

    def _create_views(self, con: duckdb.DuckDBPyConnection) -> None:
        template = sql_text("views.sql")
        for table, source in sorted(self._table_sources().items()):
            paths = [source] if isinstance(source, str) else source
            files = ", ".join("'" + p.replace("'", "''") + "'" for p in paths)
            con.execute(template.format(table=table, files=f"[{files}]"))

    def refresh_catalog(self, retries: int = 20, wait_s: float = 0.25) -> bool:
        """Recreate the catalog's views; True on success, False if the file stayed locked.

        The catalog is a convenience for people (``duckdb .lgsid/catalog.duckdb``); the Parquet
        files are the truth, so a catalog held open elsewhere must not fail a pipeline step.
        """
        self.home.mkdir(parents=True, exist_ok=True)
        lock_path = self.home / ".catalog.lock"
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                for attempt in range(retries):
                    try:
                        con = duckdb.connect(str(self.catalog_path))
                    except duckdb.IOException:
                        time.sleep(wait_s * (attempt + 1))
                        continue
                    try:
                        self._create_views(con)
                    finally:
                        con.close()
                    return True
                return False
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
