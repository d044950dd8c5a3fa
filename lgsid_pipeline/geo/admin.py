"""Admin levels for items: polygon spatial joins (geopandas) plus a fine H3 grid cell.

Level 1 and level 2 come from polygon files (borough / neighbourhood, prefecture /
municipality, or a synthetic city's districts). Level 3 is a polygon file where the source
has one, else an H3 cell. Items outside every level-1 polygon are kept and marked
``outside``; they still get their grid cell.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import h3
import numpy as np
import pandas as pd

if TYPE_CHECKING:  # geopandas (and shapely) load with the first spatial join
    import geopandas as gpd

H3_RESOLUTION = 8
ADMIN_COLUMNS: tuple[str, ...] = (
    "admin_l1_code",
    "admin_l1_name",
    "admin_l2_code",
    "admin_l2_name",
    "admin_l3_code",
    "h3_cell",
    "outside",
)


class BoundaryError(ValueError):
    """A boundary file that is missing or lacks the expected columns."""


@dataclass(frozen=True)
class BoundaryLevel:
    """One polygon file and the columns that name its areas."""

    path: Path
    code_column: str
    name_column: str
    parent_column: str | None = None


@dataclass(frozen=True)
class BoundarySet:
    """The admin hierarchy of one region: two or three polygon levels."""

    name: str
    level1: BoundaryLevel
    level2: BoundaryLevel
    level3: BoundaryLevel | None = None


def named_boundary_sets(folder: Path) -> dict[str, BoundarySet]:
    """The real regions whose boundary files live in ``folder`` (``shared/data/boundaries``)."""
    return {
        "nyc": BoundarySet(
            "nyc",
            BoundaryLevel(folder / "nyc_boroughs.geojson", "boro_code", "boro_name"),
            BoundaryLevel(
                folder / "nyc_neighborhoods.geojson", "nta_code", "nta_name", "boro_code"
            ),
        ),
        "tokyo": BoundarySet(
            "tokyo",
            BoundaryLevel(folder / "tokyo_prefectures.geojson", "pref_code", "pref_name_en"),
            BoundaryLevel(
                folder / "tokyo_municipalities.geojson", "muni_code", "name_en", "pref_code"
            ),
        ),
    }


def folder_boundary_set(folder: Path, name: str = "synthetic") -> BoundarySet:
    """Three polygon levels ``admin_level{1,2,3}.geojson`` with code/name/parent_code."""
    levels = [
        BoundaryLevel(
            folder / f"admin_level{i}.geojson", "code", "name", None if i == 1 else "parent_code"
        )
        for i in (1, 2, 3)
    ]
    return BoundarySet(name, levels[0], levels[1], levels[2])


@lru_cache(maxsize=32)
def _load_level_cached(
    path: str, mtime: float, code: str, name: str, parent: str | None
) -> gpd.GeoDataFrame:
    import geopandas as gpd

    frame = gpd.read_file(path)
    missing = [c for c in (code, name, parent) if c and c not in frame.columns]
    if missing:
        raise BoundaryError(f"boundary file {path} lacks column(s) {missing}")
    if frame.crs is not None and frame.crs.to_epsg() != 4326:
        frame = frame.to_crs(4326)
    out = gpd.GeoDataFrame(
        {
            # Areas without an official code (e.g. undetermined land) get one from their name.
            "code": frame[code].astype("string").fillna("nocode:" + frame[name].astype("string")),
            "name": frame[name].astype("string"),
            "parent": frame[parent].astype("string") if parent else pd.NA,
        },
        geometry=frame.geometry.make_valid(),
        crs=4326,
    )
    return out


def load_level(level: BoundaryLevel) -> gpd.GeoDataFrame:
    """Read one polygon level (cached by path and modification time)."""
    if not level.path.is_file():
        raise BoundaryError(f"boundary file not found: {level.path}")
    return _load_level_cached(
        str(level.path),
        level.path.stat().st_mtime,
        level.code_column,
        level.name_column,
        level.parent_column,
    )


def _join(points: gpd.GeoDataFrame, polygons: gpd.GeoDataFrame) -> pd.DataFrame:
    """First polygon containing or touching each point (index aligned with ``points``): a
    point exactly on a border between two areas (a rounded coordinate) still gets one."""
    import geopandas as gpd

    joined = gpd.sjoin(points, polygons, how="left", predicate="intersects")
    joined = joined[~joined.index.duplicated(keep="first")]
    return joined[["code", "name", "parent"]]


def assign_admin(lat: np.ndarray, lon: np.ndarray, boundaries: BoundarySet) -> pd.DataFrame:
    """Admin levels 1-3, H3 cell and the ``outside`` flag for each (lat, lon)."""
    import geopandas as gpd

    lat = np.asarray(lat, dtype=float)
    lon = np.asarray(lon, dtype=float)
    points = gpd.GeoDataFrame(geometry=gpd.points_from_xy(lon, lat), crs=4326)
    l1_polys = load_level(boundaries.level1)
    l2_polys = load_level(boundaries.level2)
    l1 = _join(points, l1_polys)
    l2 = _join(points, l2_polys)
    # A point on a level-2 area but just off the simplified level-1 outline takes its parent.
    names_by_code = dict(zip(l1_polys["code"], l1_polys["name"], strict=False))
    fill = l1["code"].isna() & l2["parent"].notna() & l2["parent"].isin(names_by_code.keys())
    l1.loc[fill, "code"] = l2.loc[fill, "parent"]
    l1.loc[fill, "name"] = l2.loc[fill, "parent"].map(names_by_code)
    cells = [h3.latlng_to_cell(a, b, H3_RESOLUTION) for a, b in zip(lat, lon, strict=True)]
    if boundaries.level3 is not None:
        l3_code = _join(points, load_level(boundaries.level3))["code"]
    else:
        l3_code = pd.Series(cells, index=points.index, dtype="string")
    return pd.DataFrame(
        {
            "admin_l1_code": l1["code"].astype("string").values,
            "admin_l1_name": l1["name"].astype("string").values,
            "admin_l2_code": l2["code"].astype("string").values,
            "admin_l2_name": l2["name"].astype("string").values,
            "admin_l3_code": l3_code.astype("string").values,
            "h3_cell": pd.array(cells, dtype="string"),
            "outside": l1["code"].isna().values,
        }
    )


def coverage_share(boundaries: BoundarySet, lat: np.ndarray, lon: np.ndarray) -> float:
    """Share of points inside the union of the level-1 polygons' bounding box."""
    polygons = load_level(boundaries.level1)
    minx, miny, maxx, maxy = polygons.total_bounds
    inside = (lon >= minx) & (lon <= maxx) & (lat >= miny) & (lat <= maxy)
    return float(np.mean(inside)) if len(lat) else 0.0


def detect_boundary_set(
    candidates: dict[str, BoundarySet], lat: np.ndarray, lon: np.ndarray
) -> BoundarySet:
    """The region whose level-1 extent holds the most points; error if none holds any."""
    scores = {
        name: coverage_share(b, lat, lon)
        for name, b in candidates.items()
        if b.level1.path.is_file()
    }
    if not scores or max(scores.values()) == 0.0:
        raise BoundaryError(
            f"no known admin boundaries cover these items (checked {sorted(candidates)}); "
            "pass --boundaries with a folder of admin_level{1,2,3}.geojson files"
        )
    return candidates[max(scores, key=lambda name: scores[name])]


def geojson_feature_count(path: Path) -> int:
    """Number of features in a GeoJSON file (for reports)."""
    return len(json.loads(path.read_text(encoding="utf-8"))["features"])
