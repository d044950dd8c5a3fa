"""Tables as Parquet files per city, plus a DuckDB catalog of views over them.

Layout: ``<home>/warehouse/<table>/city=<slug>/<part>.parquet``. Every write goes to a
temporary file in the same folder and is renamed into place, so a crash never leaves half a
table; temp files of writers that died (killed mid-write) are swept by the next write to the
same folder. Readers use short-lived in-memory DuckDB connections over the Parquet files, so
parallel city steps never contend for the catalog file; only ``refresh_catalog`` opens it
for writing, under an exclusive file lock.

Versioned stages (write, audit, publish). The tables of each stage in ``VERSIONED_STAGES``
are written as one immutable version per run::

    warehouse/_versions/<stage>/city=<slug>/.staging-<version>-<host>-<pid>/   (being written)
    warehouse/_versions/<stage>/city=<slug>/<version>/<table>/<part>.parquet   (complete)
    warehouse/_versions/<stage>/city=<slug>/<version>/manifest.json
    warehouse/_published/<city>/<stage>.json                                   (the pointer)

A stage writes into a staging folder (``Warehouse.staging``), audits what it re-reads from
there, and ``Warehouse.publish`` renames the folder to its version name and then switches the
pointer with one ``os.replace``. Readers (``read_table``, ``read_arrow``, ``has_table``, the
DuckDB views) resolve the pointer once and read the files it names, so they see the old set
or the new set, never a mix. The pointer keeps the previous versions (``keep_versions``, newest
first) for ``rollback``; older ones are swept. ``write_table`` of one table part is a version
of its own (the stage's other parts carried forward). A table is read from its plain path
only in a home written before versioning, for a city with no published version of its stage.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lgsid_pipeline.atomic import (
    file_sha256,
    fsync_dir,
    pid_alive,
    write_file_atomic,
    writer_pid,
    writer_tag,
)
from lgsid_pipeline.config import lgsid_home, validate_city_slug
from lgsid_pipeline.duckdb_views import DuckDbViews

TABLES = ("raw_items", "raw_interactions", "items", "interactions", "quarantine")
DATA_PART = "data"
# Every table belongs to one stage whose tables are published together as one version per
# city. A stage whose assets each write some of its parts (the three semantic-ID kinds, the
# two embedding parts) publishes what one step wrote and carries the other parts forward.
VERSIONED_STAGES: dict[str, tuple[str, ...]] = {
    "ingest": TABLES,
    "alignment_samples": ("geo_negatives", "cooccurrence_pairs", "geo_pairs"),
    "embeddings": ("item_embeddings",),
    "semantic_ids": ("semantic_ids",),
    "recommender_datasets": (
        "recommender_samples",
        "recommender_timeline",
        "recommender_items",
        "recommender_meta",
    ),
    "cache": ("user_topk_cache",),
}
STAGE_OF_TABLE = {t: stage for stage, tables in VERSIONED_STAGES.items() for t in tables}
KEEP_VERSIONS = 3  # previous versions kept for rollback, besides the published one
MANIFEST_FORMAT = 1
# A temp file this old is swept even when its writer cannot be checked (another host).
STALE_TEMP_SECONDS = 3600.0


class TableNotFoundError(FileNotFoundError):
    """A table that has not been materialized for a city yet."""


class VersionError(ValueError):
    """A publish or rollback that cannot be done (nothing to roll back to, unknown stage)."""


def sweep_stale_temp_files(folder: Path, max_age_s: float = STALE_TEMP_SECONDS) -> list[Path]:
    """Remove the temp files of dead writers in one table folder; return what was removed.

    A temp file is stale when its writer ran on this host and that process is gone, or when it
    has not been written to for ``max_age_s``. Temp files of live writers (other processes
    writing the same table right now) are left alone.
    """
    removed: list[Path] = []
    now = time.time()
    for tmp in folder.glob(".*.tmp"):
        pid = writer_pid(tmp.name)
        try:
            if (pid is not None and not pid_alive(pid)) or now - tmp.stat().st_mtime > max_age_s:
                tmp.unlink()
                removed.append(tmp)
        except FileNotFoundError:
            continue  # renamed into place or swept by another writer meanwhile
    return removed


def parquet_compression(arrow: pa.Table) -> str:
    """zstd, except for tables of float vectors (embeddings): those shrink by a fifth under
    zstd but read four times slower than under lz4, and every incremental run re-reads them."""
    vectors = any(
        pa.types.is_fixed_size_list(field.type) and pa.types.is_floating(field.type.value_type)
        for field in arrow.schema
    )
    return "lz4" if vectors else "zstd"


def _write_parquet(arrow: pa.Table, path: Path) -> None:
    """Write a Parquet file atomically, sweeping dead writers' temp files beside it first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temp_files(path.parent)
    compression = parquet_compression(arrow)
    write_file_atomic(path, lambda tmp: pq.write_table(arrow, tmp, compression=compression))


def _write_json(data: dict[str, Any], path: Path) -> None:
    """Write a JSON file atomically (sorted keys), sweeping dead writers' temp files beside
    it first (a writer killed before its pointer switch leaves one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temp_files(path.parent)
    write_file_atomic(
        path,
        lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8"),
    )


def _as_arrow(frame: pd.DataFrame | pa.Table) -> pa.Table:
    return (
        frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
    )


def _check_name(name: str, what: str) -> None:
    if not name or not name.replace("_", "").isalnum():
        raise ValueError(f"invalid {what} name: {name!r}")


class StagedVersion:
    """A version of one stage's tables for one city, being written; not visible to readers.

    Write its tables with ``write_table``, re-read them with ``read_arrow``/``read_table`` to
    audit what was persisted, then hand it to ``Warehouse.publish``.
    """

    def __init__(
        self,
        warehouse: Warehouse,
        city: str,
        stage: str,
        version: str,
        folder: Path,
        carry_forward: bool,
    ) -> None:
        self.warehouse, self.city, self.stage = warehouse, city, stage
        self.version, self.folder = version, folder
        self.carry_forward = carry_forward
        self.published = False

    def table_path(self, table: str, part: str = DATA_PART) -> Path:
        """Path of one staged table part (the table must belong to the stage)."""
        if table not in VERSIONED_STAGES[self.stage]:
            raise ValueError(f"table {table!r} is not part of stage {self.stage!r}")
        _check_name(part, "part")
        return self.folder / table / f"{part}.parquet"

    def write_table(
        self, table: str, frame: pd.DataFrame | pa.Table, part: str = DATA_PART
    ) -> Path:
        """Write one table part into the staged version (atomically, fsynced)."""
        path = self.table_path(table, part)
        _write_parquet(_as_arrow(frame), path)
        return path

    def read_arrow(
        self, table: str, part: str = DATA_PART, columns: list[str] | None = None
    ) -> pa.Table:
        """Re-read one staged table part (or only ``columns`` of it) from disk."""
        return pq.read_table(self.table_path(table, part), columns=columns)

    def read_table(self, table: str, part: str = DATA_PART) -> pd.DataFrame:
        return self.read_arrow(table, part).to_pandas()

    def files(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Every staged table part: ``{table: {part: {file, rows, bytes, sha256}}}``."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for path in sorted(self.folder.glob("*/*.parquet")):
            out.setdefault(path.parent.name, {})[path.stem] = {
                "file": f"{path.parent.name}/{path.name}",
                "rows": pq.ParquetFile(path).metadata.num_rows,
                "bytes": path.stat().st_size,
                "sha256": file_sha256(path),
            }
        return out


class Warehouse(DuckDbViews):
    """Parquet tables per city under one home folder, with a DuckDB catalog."""

    stage_of_table = STAGE_OF_TABLE

    def __init__(self, home: Path | str | None = None, keep_versions: int = KEEP_VERSIONS) -> None:
        self.home = Path(home).resolve() if home is not None else lgsid_home()
        self.root = self.home / "warehouse"
        self.catalog_path = self.home / "catalog.duckdb"
        if keep_versions < 0:
            raise ValueError(f"keep_versions must be >= 0, not {keep_versions}")
        self.keep_versions = keep_versions

    def table_path(self, table: str, city: str, part: str = DATA_PART) -> Path:
        """Path of one table part for one city (validates the city key and part name)."""
        validate_city_slug(city)
        if not table.replace("_", "").isalnum() or not part.replace("_", "").isalnum():
            raise ValueError(f"invalid table or part name: {table!r}/{part!r}")
        return self.root / table / f"city={city}" / f"{part}.parquet"

    def has_table(self, table: str, city: str, part: str = DATA_PART) -> bool:
        path = self.resolve_table(table, city, part)
        return path is not None and path.is_file()

    def resolve_table(self, table: str, city: str, part: str = DATA_PART) -> Path | None:
        """The file readers see for one table part: the published version's file for a table
        of a versioned stage with a published version (None if that version lacks the part),
        otherwise the plain path of ``table_path``."""
        plain = self.table_path(table, city, part)
        stage = STAGE_OF_TABLE.get(table)
        manifest = self.published(city, stage) if stage else None
        if manifest is None:
            return plain
        info = manifest["tables"].get(table, {}).get(part)
        if info is None:
            return None
        return self.version_folder(city, manifest["stage"], manifest["version"]) / info["file"]

    def write_table(
        self, table: str, city: str, frame: pd.DataFrame | pa.Table, part: str = DATA_PART
    ) -> Path:
        """Publish one table part as a new version of its stage (the stage's other parts are
        carried forward); return the published file. A step that writes several parts, or
        audits before publishing, uses ``staging`` and ``publish`` itself."""
        stage = STAGE_OF_TABLE.get(table)
        if stage is None:
            path = self.table_path(table, city, part)
            _write_parquet(_as_arrow(frame), path)
            return path
        with self.staging(city, stage) as staged:
            staged.write_table(table, frame, part)
            pointer = self.publish(staged)
        return (
            self.version_folder(city, stage, pointer["version"])
            / pointer["tables"][table][part]["file"]
        )

    def read_arrow(self, table: str, city: str, part: str = DATA_PART) -> pa.Table:
        """Read one table part as an Arrow table, or raise ``TableNotFoundError``."""
        path = self.resolve_table(table, city, part) or self.table_path(table, city, part)
        if not path.is_file():
            raise TableNotFoundError(
                f"table {table!r} ({part}) has not been materialized for city {city!r} "
                f"(expected {path}); materialize it first, e.g. "
                f"`lgsid materialize --city {city} --select '*{table}'`"
            )
        try:
            return pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise TableNotFoundError(
                f"table file {path} is unreadable ({exc}); re-materialize {table!r} for {city!r}"
            ) from exc

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
        for folder in [
            self.root / "_published" / city,
            *self.root.glob(f"_versions/*/city={city}"),
        ]:
            if folder.is_dir():
                removed += sum(1 for f in folder.rglob("*") if f.is_file())
                shutil.rmtree(folder)
        return removed

    # ------------------------------------------------------------ versioned stages

    def version_root(self, city: str, stage: str) -> Path:
        """Folder of every version of one stage for one city."""
        validate_city_slug(city)
        if stage not in VERSIONED_STAGES:
            raise VersionError(
                f"unknown versioned stage {stage!r} (known: {', '.join(VERSIONED_STAGES)})"
            )
        return self.root / "_versions" / stage / f"city={city}"

    def version_folder(self, city: str, stage: str, version: str) -> Path:
        _check_name(version.replace("-", "_"), "version")
        return self.version_root(city, stage) / version

    def pointer_path(self, city: str, stage: str) -> Path:
        """The published pointer of one stage for one city."""
        self.version_root(city, stage)  # validates both
        return self.root / "_published" / city / f"{stage}.json"

    def published(self, city: str, stage: str) -> dict[str, Any] | None:
        """The published manifest of a stage for a city, or None if none was published."""
        try:
            text = self.pointer_path(city, stage).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        return json.loads(text)

    @contextmanager
    def staging(self, city: str, stage: str, carry_forward: bool = True) -> Iterator[StagedVersion]:
        """A new version of ``stage`` for ``city`` to write, audit and publish; when the block
        ends, an unpublished staging folder is removed (a failed audit publishes nothing).

        With ``carry_forward`` the published version's parts that this one does not write
        are kept (linked, not copied) when it is published; without it the new version holds
        only what was written (a stage that rewrites its whole table set)."""
        root = self.version_root(city, stage)
        root.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        version = f"{stamp}-{uuid.uuid4().hex[:8]}"
        folder = root / f".staging-{version}.{writer_tag()}"
        folder.mkdir()
        staged = StagedVersion(self, city, stage, version, folder, carry_forward)
        try:
            yield staged
        finally:
            if folder.exists():
                shutil.rmtree(folder, ignore_errors=True)

    @contextmanager
    def _stage_lock(self, city: str, stage: str) -> Iterator[None]:
        pointer = self.pointer_path(city, stage)
        pointer.parent.mkdir(parents=True, exist_ok=True)
        with open(pointer.with_name(f".{stage}.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def publish(self, staged: StagedVersion, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Publish a staged version: its manifest, then the folder renamed to its version
        name, then the pointer switched with one ``os.replace``; then old versions are swept.

        Until the pointer switch readers see the previous version; after it, the new one. A
        crash before the switch leaves an unreferenced folder that a later sweep removes.
        """
        city, stage = staged.city, staged.stage
        tables = staged.files()
        final = self.version_folder(city, stage, staged.version)
        with self._stage_lock(city, stage):
            current = self.published(city, stage)
            if staged.carry_forward:
                if current is not None:
                    self._carry_forward(current, staged.folder, tables)
                else:
                    self._adopt_plain_files(staged, tables)
            manifest = {
                "format": MANIFEST_FORMAT,
                "city": city,
                "stage": stage,
                "version": staged.version,
                "published_at": datetime.now(UTC).isoformat(),
                "tables": tables,
                **(extra or {}),
            }
            _write_json(manifest, staged.folder / "manifest.json")
            self._promote(staged.folder, final)
            history = [] if current is None else [current["version"], *current["history"]]
            pointer = {**manifest, "history": history[: self.keep_versions]}
            self._switch_pointer(city, stage, pointer)
            staged.published = True
            self.sweep_versions(city, stage)
        return pointer

    def _carry_forward(
        self, current: dict[str, Any], folder: Path, tables: dict[str, dict[str, dict[str, Any]]]
    ) -> None:
        """Link the published parts that ``tables`` lacks into a staging folder (under the
        stage lock, so parallel steps writing different parts never lose each other's)."""
        source = self.version_folder(current["city"], current["stage"], current["version"])
        for table, parts in current["tables"].items():
            for part, info in parts.items():
                if part in tables.get(table, {}):
                    continue
                target = folder / info["file"]
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(source / info["file"], target)
                except OSError:
                    shutil.copy2(source / info["file"], target)
                tables.setdefault(table, {})[part] = info

    def _adopt_plain_files(
        self, staged: StagedVersion, tables: dict[str, dict[str, dict[str, Any]]]
    ) -> None:
        """The first version of a stage in a home written before versioning: the stage's
        parts that exist only as plain files (and that this version does not write) are
        linked into it, so publishing one part never hides the others."""
        for table in VERSIONED_STAGES[staged.stage]:
            folder = self.table_path(table, staged.city).parent
            for plain in sorted(folder.glob("*.parquet")) if folder.is_dir() else []:
                if plain.stem in tables.get(table, {}):
                    continue
                target = staged.table_path(table, plain.stem)
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(plain, target)
                except OSError:
                    shutil.copy2(plain, target)
                tables.setdefault(table, {})[plain.stem] = {
                    "file": f"{table}/{target.name}",
                    "rows": pq.ParquetFile(target).metadata.num_rows,
                    "bytes": target.stat().st_size,
                    "sha256": file_sha256(target),
                }

    def _promote(self, staging_folder: Path, final: Path) -> None:
        """Rename a complete staging folder to its version name (one rename)."""
        os.replace(staging_folder, final)
        fsync_dir(final.parent)

    def _switch_pointer(self, city: str, stage: str, pointer: dict[str, Any]) -> None:
        """The atomic switch: readers see the old pointer or this one."""
        _write_json(pointer, self.pointer_path(city, stage))

    def rollback(self, city: str, stage: str = "ingest") -> dict[str, Any]:
        """Point ``stage`` of ``city`` back at its previous version; return the new pointer.

        The version rolled back from is no longer referenced and is swept.
        """
        with self._stage_lock(city, stage):
            current = self.published(city, stage)
            if current is None:
                raise VersionError(f"city {city!r} has no published {stage} version")
            if not current["history"]:
                raise VersionError(
                    f"city {city!r} has no {stage} version before "
                    f"{current['version']} to roll back to"
                )
            previous, *older = current["history"]
            manifest_path = self.version_folder(city, stage, previous) / "manifest.json"
            try:
                manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            except FileNotFoundError as exc:
                raise VersionError(
                    f"version {previous} of {stage} for {city!r} is gone ({manifest_path} missing)"
                ) from exc
            pointer = {
                **manifest,
                "history": older,
                "rolled_back_from": current["version"],
                "rolled_back_at": datetime.now(UTC).isoformat(),
            }
            self._switch_pointer(city, stage, pointer)
            self.sweep_versions(city, stage)
        return pointer

    def versions(self, city: str, stage: str) -> list[str]:
        """Complete version folders of a stage for a city, oldest first."""
        root = self.version_root(city, stage)
        if not root.is_dir():
            return []
        return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def sweep_versions(
        self, city: str, stage: str, max_age_s: float = STALE_TEMP_SECONDS
    ) -> list[Path]:
        """Remove versions the pointer no longer keeps and staging folders of dead writers."""
        current = self.published(city, stage)
        keep = set() if current is None else {current["version"], *current["history"]}
        root = self.version_root(city, stage)
        removed: list[Path] = []
        now = time.time()
        for folder in sorted(root.iterdir()) if root.is_dir() else []:
            if folder.name.startswith(".staging-"):
                pid = writer_pid(folder.name)
                try:
                    stale = (
                        pid is not None and not pid_alive(pid)
                    ) or now - folder.stat().st_mtime > max_age_s
                except FileNotFoundError:
                    continue
                if not stale:
                    continue
            elif folder.name in keep or current is None:
                continue  # nothing published yet: a promoted folder may be about to be
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        return removed
