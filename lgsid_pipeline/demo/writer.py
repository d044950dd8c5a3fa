"""Generate a synthetic city and write its files (``SYNTHETIC_FILES``): the items (place,
category, chain, name), the Parquet tables, the admin GeoJSON and the manifest, each
written to a temporary name and renamed into place.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import shapely
from shapely.geometry import mapping
from shapely.geometry.base import BaseGeometry

from lgsid_pipeline.atomic import write_file_atomic
from lgsid_pipeline.demo.geometry import (
    _admin_levels,
    _Area,
    _assign_land_use,
    _item_points,
    _locate,
    _lonlat_geoms,
    _outline,
    _points_in,
    _Streets,
    _streets,
    _to_lonlat,
)
from lgsid_pipeline.demo.spec import START_DATE, SyntheticCitySpec, _sample_rows, _streams
from lgsid_pipeline.demo.visits import _visits
from lgsid_pipeline.demo.vocabulary import (
    _CAT_INDEX,
    CATEGORIES,
    CATEGORY_NAMES,
    CHAIN_SHARE,
    CHAINS,
    LAND_USES,
    _names,
    city_chains,
)
from lgsid_pipeline.demo.words import LANDMARK_WORDS

GENERATOR_VERSION = "2.0"
SYNTHETIC_FILES: tuple[str, ...] = (
    "items.parquet",
    "checkins.parquet",
    "users.parquet",
    "admin_level1.geojson",
    "admin_level2.geojson",
    "admin_level3.geojson",
    "manifest.json",
)


@dataclass
class _Items:
    xy: np.ndarray
    cell: np.ndarray  # level-3 index per item
    hood: np.ndarray
    use: np.ndarray
    category: np.ndarray  # index into CATEGORIES
    chain: np.ndarray  # index into CHAINS or -1
    names: list[str]
    brands: list[str | None]


def _items(
    streams: dict[str, np.random.Generator],
    spec: SyntheticCitySpec,
    xy: np.ndarray,
    levels: list[list[_Area]],
    streets: _Streets,
    landmarks: tuple[list[str], np.ndarray],
) -> _Items:
    rng, name_rng = streams["items"], streams["names"]
    districts, hoods, cells = levels
    n = len(xy)
    cell, count = _locate(xy, [c.geometry for c in cells])
    lost = np.flatnonzero(count == 0)
    if len(lost):  # on a cell boundary: the nearest cell
        cell[lost] = shapely.STRtree([c.geometry for c in cells]).query_nearest(
            shapely.points(xy[lost]), all_matches=False
        )[1]
    hood = np.array([cells[c].parent for c in cell])
    use = np.array([hoods[h].land_use for h in hood])
    # Chain branches prefer busy areas; each chain fits some land uses better.
    chain_keys = set(city_chains(spec))
    chains = [i for i, c in enumerate(CHAINS) if c.key in chain_keys]
    share = np.array([1.4, 1.1, 0.8, 1.3, 0.5])[use]
    n_chain = int(round(CHAIN_SHARE * n))
    branch = rng.choice(n, size=n_chain, replace=False, p=share / share.sum())
    fit = np.array(
        [
            [
                CHAINS[c].weight * CATEGORIES[_CAT_INDEX[CHAINS[c].category]].land_use[u]
                for c in chains
            ]
            for u in range(len(LAND_USES))
        ]
    )
    chain = np.full(n, -1)
    chain[branch] = np.array(chains)[_sample_rows(rng, fit[use[branch]])]
    # Independent places: category from the neighbourhood's land use.
    freq = np.array([c.frequency for c in CATEGORIES])
    mix = freq[None, :] * np.array([c.land_use for c in CATEGORIES]).T
    category = _sample_rows(rng, mix[use])
    is_chain = chain >= 0
    category[is_chain] = [_CAT_INDEX[CHAINS[c].category] for c in chain[is_chain]]
    names, brands = _names(name_rng, spec, xy, chain, category, hood, hoods, streets, landmarks)
    return _Items(xy, cell, hood, use, category, chain, names, brands)


def _place_items(
    lonlat: np.ndarray, items: _Items, levels: list[list[_Area]], geoms: list[list[BaseGeometry]]
) -> np.ndarray:
    """Item coordinates (7 decimals) that lie in exactly one polygon per level, nested.

    An item that rounding put on or across a boundary moves to a point inside its cell.
    """
    lonlat = np.round(lonlat, 7)
    cell_parent = np.array([c.parent for c in levels[2]])
    hood_parent = np.array([h.parent for h in levels[1]])
    for _ in range(3):
        ok = np.ones(len(lonlat), dtype=bool)
        found = []
        for level_geoms in geoms:
            idx, count = _locate(lonlat, level_geoms)
            ok &= count == 1
            found.append(idx)
        ok &= found[2] == items.cell
        ok &= found[1] == cell_parent[found[2]]
        ok &= found[0] == hood_parent[found[1]]
        bad = np.flatnonzero(~ok)
        if not len(bad):
            return lonlat
        inside = shapely.point_on_surface([geoms[2][c] for c in items.cell[bad]])
        lonlat[bad] = np.round(shapely.get_coordinates(inside), 7)
    raise RuntimeError("could not place every synthetic item inside its admin cells")


def _write_parquet(path: Path, table: pa.Table) -> None:
    write_file_atomic(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))


def _write_bytes(path: Path, data: bytes) -> None:
    write_file_atomic(path, lambda tmp: tmp.write_bytes(data))


def _geojson(areas: list[_Area], geoms: list[BaseGeometry], level: int) -> bytes:
    features = []
    for area, geom in zip(areas, geoms, strict=True):
        properties: dict[str, object] = {
            "code": area.code,
            "name": area.name,
            "parent_code": area.parent_code,
        }
        if level == 2:
            properties["land_use"] = LAND_USES[area.land_use]
        features.append({"type": "Feature", "properties": properties, "geometry": mapping(geom)})
    return json.dumps(
        {"type": "FeatureCollection", "features": features}, separators=(",", ":")
    ).encode()


def generate_city(spec: SyntheticCitySpec, out_dir: Path) -> dict[str, int]:
    """Write the city's files into ``out_dir`` (created if missing); return row counts.

    The counts are ``{"items", "checkins", "users", "admin_level1", "admin_level2",
    "admin_level3"}``. Every file is written to a temporary name and renamed into place;
    ``manifest.json`` goes last, so its presence means the folder is complete.
    """
    if spec.n_items < 50:
        raise ValueError(f"a synthetic city needs at least 50 items, got {spec.n_items}")
    if (
        spec.days < 1
        or spec.radius_km <= 0
        or spec.users < 1
        or not (-80 <= spec.center_lat <= 80 and -180 <= spec.center_lon <= 180)
    ):
        raise ValueError(f"invalid synthetic city spec: {spec}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "manifest.json").unlink(missing_ok=True)
    streams = _streams(spec)
    geo = streams["geometry"]
    outline = _outline(geo, spec.radius_km)
    streets = _streets(geo, spec)
    n_landmarks = min(8 + spec.n_items // 1500, len(LANDMARK_WORDS))
    landmark_xy = _points_in(geo, outline.buffer(-0.3 * spec.radius_km), n_landmarks)
    landmark_names = [LANDMARK_WORDS[i] for i in geo.permutation(len(LANDMARK_WORDS))]
    xy = _item_points(streams["items"], spec, outline.buffer(-0.02), streets)
    levels = _admin_levels(geo, spec, outline, xy)
    _assign_land_use(geo, levels[1], spec.radius_km)
    items = _items(streams, spec, xy, levels, streets, (landmark_names[:n_landmarks], landmark_xy))
    visits = _visits(streams["visits"], spec, items, outline)

    for parents, children in zip(levels[:-1], levels[1:], strict=True):
        for area in children:
            assert area.parent is not None  # every area below the top level has one
            area.parent_code = parents[area.parent].code
    geoms = [_lonlat_geoms(areas, spec) for areas in levels]
    lonlat = _place_items(_to_lonlat(xy, spec), items, levels, geoms)
    item_ids = np.array([f"it-{i:06d}" for i in range(len(xy))], dtype=object)
    user_ids = np.array([f"u-{u:05d}" for u in range(spec.users)], dtype=object)
    items_table = pa.table(
        {
            "item_id": pa.array(item_ids, pa.string()),
            "name": pa.array(items.names, pa.string()),
            "category": pa.array([CATEGORY_NAMES[c] for c in items.category], pa.string()),
            "brand": pa.array(items.brands, pa.string()),
            "latitude": pa.array(lonlat[:, 1], pa.float64()),
            "longitude": pa.array(lonlat[:, 0], pa.float64()),
        }
    )
    checkins_table = pa.table(
        {
            "user_id": pa.array(user_ids[visits.user], pa.string()),
            "item_id": pa.array(item_ids[visits.item], pa.string()),
            "timestamp": pa.array(visits.ts_us, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        }
    )
    homes = np.round(_to_lonlat(visits.homes, spec), 7)
    users_table = pa.table(
        {
            "user_id": pa.array(user_ids, pa.string()),
            "home_latitude": pa.array(homes[:, 1], pa.float64()),
            "home_longitude": pa.array(homes[:, 0], pa.float64()),
        }
    )
    _write_parquet(out_dir / "items.parquet", items_table)
    _write_parquet(out_dir / "checkins.parquet", checkins_table)
    _write_parquet(out_dir / "users.parquet", users_table)
    for n, (areas, level_geoms) in enumerate(zip(levels, geoms, strict=True), start=1):
        _write_bytes(out_dir / f"admin_level{n}.geojson", _geojson(areas, level_geoms, n))
    counts = {
        "items": items_table.num_rows,
        "checkins": checkins_table.num_rows,
        "users": users_table.num_rows,
        **{f"admin_level{n}": len(a) for n, a in enumerate(levels, start=1)},
    }
    manifest = {
        **asdict(spec),
        "n_users": spec.users,
        "counts": counts,
        "chains": list(city_chains(spec)),
        "start_date": START_DATE,
        "generator_version": GENERATOR_VERSION,
    }
    _write_bytes(out_dir / "manifest.json", json.dumps(manifest, indent=2).encode())
    return counts
