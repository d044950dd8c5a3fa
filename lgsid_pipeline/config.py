"""Paths, environment and identifier validation shared by every stage."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# The repository's sql/ (a checkout or an editable install), else the copy an installed
# package carries under <prefix>/share/lgsid_pipeline/sql.
SQL_DIR = (
    REPO_ROOT / "sql"
    if (REPO_ROOT / "sql").is_dir()
    else Path(sys.prefix) / "share" / "lgsid_pipeline" / "sql"
)

# Cities materialized at once (one run each) by `lgsid materialize` and `lgsid demo`.
PARALLEL_CITIES = 2

CITY_SLUG_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class InvalidCityError(ValueError):
    """A city key that is not a valid slug, or a city that is not registered."""


def validate_city_slug(slug: str) -> str:
    """Return ``slug`` if it is a safe city key (used in paths and SQL), else raise."""
    if not isinstance(slug, str) or not CITY_SLUG_PATTERN.fullmatch(slug):
        raise InvalidCityError(
            f"invalid city key {slug!r}: use 1-64 characters of a-z, 0-9, '_' and '-', "
            "starting with a letter or digit"
        )
    return slug


def lgsid_home() -> Path:
    """Root of warehouse, model store and reports (``LGSID_HOME``, default ``<repo>/.lgsid``)."""
    return Path(os.environ.get("LGSID_HOME", REPO_ROOT / ".lgsid")).expanduser().resolve()


def landing_root(home: Path) -> Path:
    """Where files for a city land (``<home>/landing/<city>/``), watched by the sensor."""
    return home / "landing"


def dagster_home() -> Path:
    """The Dagster instance folder (``DAGSTER_HOME``, default ``<repo>/dagster_home``)."""
    return Path(os.environ.get("DAGSTER_HOME", REPO_ROOT / "dagster_home")).expanduser().resolve()


def shared_data_dir() -> Path:
    """The real reference data (``LGSID_SHARED_DATA``, default ``<repo>/../shared/data``)."""
    default = REPO_ROOT.parent / "shared" / "data"
    return Path(os.environ.get("LGSID_SHARED_DATA", default)).expanduser().resolve()


def sql_text(name: str) -> str:
    """Read one SQL file from ``sql/``."""
    path = SQL_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"SQL file {path} is missing (the repository's sql/ folder)")
    return path.read_text(encoding="utf-8")
