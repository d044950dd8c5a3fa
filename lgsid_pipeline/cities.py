"""The city registry: which cities exist and where each one's data comes from.

Persisted as ``<LGSID_HOME>/cities.json`` (atomic writes under a file lock). The Dagster
``city`` partitions mirror it; ``lgsid add-city`` updates both.
"""

from __future__ import annotations

import fcntl
import json
import os
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from lgsid_pipeline.config import InvalidCityError, lgsid_home, validate_city_slug

SOURCES: tuple[str, ...] = (
    "synthetic",
    "gowalla",
    "foursquare-tsmc",
    "foursquare-sthgcn",
    "landing",
)
ENCODINGS: tuple[str, ...] = ("auto", "utf-8", "latin-1")


@dataclass(frozen=True)
class CityConfig:
    """Where one city's data comes from and how to read it."""

    slug: str
    source: str
    path: str
    boundaries: str | None = None  # "nyc", "tokyo", a folder of admin_level*.geojson, or auto
    encoding: str = "auto"
    display_name: str | None = None

    def __post_init__(self) -> None:
        validate_city_slug(self.slug)
        if self.source not in SOURCES:
            raise ValueError(f"unknown source {self.source!r}; choose one of {', '.join(SOURCES)}")
        if self.encoding not in ENCODINGS:
            raise ValueError(f"unknown encoding {self.encoding!r}; choose one of {ENCODINGS}")


def check_source_path(source: str, path: Path) -> Path:
    """Resolve and check a source path for its kind; raise ``FileNotFoundError`` if wrong."""
    path = path.expanduser().resolve()
    if not path.exists():
        raise FileNotFoundError(f"source path not found: {path}")
    if source == "foursquare-tsmc" and not path.is_file():
        raise FileNotFoundError(f"foursquare-tsmc expects a TSMC2014 .txt file, got folder {path}")
    if source == "foursquare-sthgcn" and not path.is_dir():
        raise FileNotFoundError(
            "foursquare-sthgcn expects the folder of NYC_train.csv, "
            f"NYC_val.csv and NYC_test.csv, got file {path}"
        )
    if source in ("gowalla", "synthetic", "landing") and not path.is_dir():
        raise FileNotFoundError(f"{source} expects a folder of Parquet files, got file {path}")
    return path


class CityRegistry:
    """Registered cities, stored as JSON under the LGSID home."""

    def __init__(self, home: Path | str | None = None) -> None:
        self.home = Path(home).resolve() if home is not None else lgsid_home()
        self.path = self.home / "cities.json"

    def _read(self) -> dict[str, dict]:
        if not self.path.is_file():
            return {}
        return json.loads(self.path.read_text(encoding="utf-8"))

    def _write(self, data: dict[str, dict]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.path)

    def _locked(self):
        self.home.mkdir(parents=True, exist_ok=True)
        handle = open(self.home / ".cities.lock", "a")  # noqa: SIM115 - closed by caller
        fcntl.flock(handle, fcntl.LOCK_EX)
        return handle

    def add(self, config: CityConfig, replace: bool = True) -> None:
        """Register (or update) a city."""
        handle = self._locked()
        try:
            data = self._read()
            if config.slug in data and not replace:
                raise InvalidCityError(f"city {config.slug!r} is already registered")
            data[config.slug] = asdict(config)
            self._write(data)
        finally:
            handle.close()

    def remove(self, slug: str) -> None:
        """Forget a city (its tables stay until deleted)."""
        handle = self._locked()
        try:
            data = self._read()
            data.pop(self.get(slug).slug)
            self._write(data)
        finally:
            handle.close()

    def get(self, slug: str) -> CityConfig:
        """The config of a registered city, or a clear error listing the known ones."""
        validate_city_slug(slug)
        data = self._read()
        if slug not in data:
            known = ", ".join(sorted(data)) or "none yet"
            raise InvalidCityError(
                f"unknown city {slug!r} (registered: {known}); add it with `lgsid add-city`"
            )
        return CityConfig(**data[slug])

    def all(self) -> list[CityConfig]:
        return [CityConfig(**v) for _, v in sorted(self._read().items())]
