"""Tables as Parquet files per city, plus a DuckDB catalog of views over them.

Layout: ``<home>/warehouse/<table>/city=<slug>/<part>.parquet``. Every write goes to a
temporary file in the same folder and is renamed into place, so a crash never leaves half a
table; temp files of writers that died (killed mid-write) are swept by the next write to the
same folder. Readers use short-lived in-memory DuckDB connections over the Parquet files, so
parallel city steps never contend for the catalog file; only ``refresh_catalog`` opens it
for writing, under an exclusive file lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lgsid_pipeline.config import lgsid_home, sql_text, validate_city_slug

TABLES = ("raw_items", "raw_interactions", "items", "interactions", "quarantine")
DATA_PART = "data"
# A temp file this old is swept even when its writer cannot be checked (another host).
STALE_TEMP_SECONDS = 3600.0
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


class TableNotFoundError(FileNotFoundError):
    """A table that has not been materialized for a city yet."""


def sweep_stale_temp_files(folder: Path, max_age_s: float = STALE_TEMP_SECONDS) -> list[Path]:
    """Remove the temp files of dead writers in one table folder; return what was removed.

    A temp file is stale when its writer ran on this host and that process is gone, or when it
    has not been written to for ``max_age_s``. Temp files of live writers (other processes
    writing the same table right now) are left alone.
    """
    removed: list[Path] = []
    now = time.time()
    for tmp in folder.glob(".*.tmp"):
        pid = _writer_pid(tmp.name)
        try:
            if (pid is not None and not _pid_alive(pid)) or now - tmp.stat().st_mtime > max_age_s:
                tmp.unlink()
                removed.append(tmp)
        except FileNotFoundError:
            continue  # renamed into place or swept by another writer meanwhile
    return removed


def _writer_pid(name: str) -> int | None:
    """Writer pid of a temp file written on this host (``.<file>.<host>-<pid>-<id>.tmp``)."""
    host, _, rest = name.removesuffix(".tmp").rsplit(".", 1)[-1].partition("-")
    pid = rest.partition("-")[0]
    return int(pid) if host == _HOST and pid.isdigit() else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Warehouse:
    """Parquet tables per city under one home folder, with a DuckDB catalog."""

    def __init__(self, home: Path | str | None = None) -> None:
        self.home = Path(home).resolve() if home is not None else lgsid_home()
        self.root = self.home / "warehouse"
        self.catalog_path = self.home / "catalog.duckdb"

    def table_path(self, table: str, city: str, part: str = DATA_PART) -> Path:
        """Path of one table part for one city (validates the city key and part name)."""
        validate_city_slug(city)
        if not table.replace("_", "").isalnum() or not part.replace("_", "").isalnum():
            raise ValueError(f"invalid table or part name: {table!r}/{part!r}")
        return self.root / table / f"city={city}" / f"{part}.parquet"

    def has_table(self, table: str, city: str, part: str = DATA_PART) -> bool:
        return self.table_path(table, city, part).is_file()

    def write_table(
        self, table: str, city: str, frame: pd.DataFrame | pa.Table, part: str = DATA_PART
    ) -> Path:
        """Atomically write one table part (temp file, fsync, rename)."""
        path = self.table_path(table, city, part)
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(frame, pa.Table):
            arrow = frame
        else:
            arrow = pa.Table.from_pandas(frame, preserve_index=False)
        sweep_stale_temp_files(path.parent)
        tmp = path.with_name(f".{path.name}.{_HOST}-{os.getpid()}-{uuid.uuid4().hex}.tmp")
        try:
            pq.write_table(arrow, tmp, compression="zstd")
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        return path

    def read_arrow(self, table: str, city: str, part: str = DATA_PART) -> pa.Table:
        """Read one table part as an Arrow table, or raise ``TableNotFoundError``."""
        path = self.table_path(table, city, part)
        if not path.is_file():
            raise TableNotFoundError(
                f"table {table!r} ({part}) has not been materialized for city {city!r} "
                f"(expected {path}); materialize it first, e.g. "
                f"`lgsid materialize --city {city} --select '*{table}'`"
            )
        try:
            return pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise TableNotFoundError(f"table file {path} is unreadable ({exc}); "
                                     f"re-materialize {table!r} for {city!r}") from exc

    def read_table(self, table: str, city: str, part: str = DATA_PART) -> pd.DataFrame:
        """Read one table part as a DataFrame, or raise ``TableNotFoundError``."""
        return self.read_arrow(table, city, part).to_pandas()

    def delete_city(self, city: str) -> int:
        """Remove every table part of one city; return the number of files removed."""
        validate_city_slug(city)
        removed = 0
        for folder in self.root.glob(f"*/city={city}"):
            for file in [*folder.glob("*.parquet"), *folder.glob(".*.tmp")]:
                file.unlink()
                removed += 1
            folder.rmdir()
        return removed

    def existing_tables(self) -> list[str]:
        """Tables with at least one Parquet file."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if any(p.glob("city=*/*.parquet")))

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
        for table in self.existing_tables():
            pattern = str(self.root / table / "city=*" / "*.parquet").replace("'", "''")
            con.execute(template.format(table=table, pattern=pattern))

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
