"""Geometry of a synthetic city on its local kilometre grid: the outline, streets, item
locations, the three nested admin levels and their land use, polygon helpers, and the
conversion to lon/lat.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from lgsid_pipeline.demo.spec import SyntheticCitySpec
from lgsid_pipeline.demo.vocabulary import LAND_USES
from lgsid_pipeline.demo.words import _CROSS_KINDS, _RADIAL_KINDS, AREA_WORDS, STREET_WORDS

KM_PER_DEG_LAT = 111.32


def _to_lonlat(xy: np.ndarray, spec: SyntheticCitySpec) -> np.ndarray:
    lon = spec.center_lon + xy[:, 0] / (KM_PER_DEG_LAT * np.cos(np.radians(spec.center_lat)))
    lat = spec.center_lat + xy[:, 1] / KM_PER_DEG_LAT
    return np.column_stack([lon, lat])


def _outline(rng: np.random.Generator, radius: float) -> shapely.Polygon:
    angles = np.linspace(0, 2 * np.pi, 96, endpoint=False)
    phase = rng.uniform(0, 2 * np.pi, 2)
    r = radius * (1 + 0.1 * np.sin(3 * angles + phase[0]) + 0.05 * np.sin(5 * angles + phase[1]))
    return shapely.Polygon(np.column_stack([r * np.cos(angles), r * np.sin(angles)]))


def _points_in(rng: np.random.Generator, polygon: BaseGeometry, n: int) -> np.ndarray:
    """``n`` uniform random points inside ``polygon``."""
    minx, miny, maxx, maxy = polygon.bounds
    out: list[np.ndarray] = []
    got = 0
    while got < n:
        cand = rng.uniform((minx, miny), (maxx, maxy), size=(2 * n + 16, 2))
        cand = cand[shapely.contains_xy(polygon, cand[:, 0], cand[:, 1])]
        out.append(cand)
        got += len(cand)
    return np.concatenate(out)[:n]


def _polygon_parts(geom: BaseGeometry) -> Iterator[shapely.Polygon]:
    if isinstance(geom, shapely.Polygon):
        if not geom.is_empty and geom.area > 0:
            yield geom
    elif hasattr(geom, "geoms"):
        for part in geom.geoms:
            yield from _polygon_parts(part)


def _polygonal(geom: BaseGeometry) -> BaseGeometry:
    """The polygonal part of ``geom`` (drops stray points and lines of a clip)."""
    if isinstance(geom, shapely.Polygon | shapely.MultiPolygon) and geom.is_valid:
        return geom
    parts = list(_polygon_parts(shapely.make_valid(geom)))
    return parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts)


def _split(parent: BaseGeometry, seeds: np.ndarray) -> list[BaseGeometry]:
    """Voronoi partition of ``parent`` by ``seeds`` (cells clipped to the parent)."""
    if len(seeds) == 1:
        return [parent]
    cells = shapely.get_parts(
        shapely.voronoi_polygons(shapely.multipoints(seeds), extend_to=parent)
    )
    pieces = shapely.intersection(cells, parent)
    return [_polygonal(p) for p in pieces if not p.is_empty and p.area > 1e-9]


def _seeds(
    rng: np.random.Generator, area: BaseGeometry, n: int, pool: np.ndarray, from_pool: float
) -> np.ndarray:
    """``n`` partition seeds in ``area``: a share taken near ``pool`` points (density)."""
    k = min(int(round(n * from_pool)), len(pool))
    picked = pool[rng.choice(len(pool), size=k, replace=False)] if k else np.empty((0, 2))
    picked = picked + rng.normal(0, 0.01, size=picked.shape)
    picked = picked[shapely.contains_xy(area, picked[:, 0], picked[:, 1])]
    return np.concatenate([picked, _points_in(rng, area, n - len(picked))])


@dataclass
class _Streets:
    a: np.ndarray  # (S, 2) segment starts
    b: np.ndarray  # (S, 2) segment ends
    names: list[str]

    def distances(self, xy: np.ndarray) -> np.ndarray:
        """(n, S) distance of each point to each street segment."""
        ab = self.b - self.a
        rel = xy[:, None, :] - self.a[None, :, :]
        t = np.clip((rel * ab[None]).sum(axis=2) / (ab * ab).sum(axis=1)[None], 0, 1)
        return np.linalg.norm(rel - t[..., None] * ab[None], axis=2)


def _streets(rng: np.random.Generator, spec: SyntheticCitySpec) -> _Streets:
    r = spec.radius_km
    n_radial = min(6 + spec.n_items // 2000, 12)
    n_cross = min(6 + spec.n_items // 1000, len(STREET_WORDS) - n_radial)
    base = rng.uniform(0, 2 * np.pi)
    angles = base + 2 * np.pi * np.arange(n_radial) / n_radial + rng.normal(0, 0.15, n_radial)
    direction = np.column_stack([np.cos(angles), np.sin(angles)])
    a_rad = direction * rng.uniform(0, 0.12 * r, (n_radial, 1))
    b_rad = direction * 1.2 * r
    normal = rng.uniform(0, 2 * np.pi, n_cross)
    offset = r * np.concatenate([rng.uniform(0.0, 0.25, 2), rng.uniform(0.1, 0.8, n_cross - 2)])
    nvec = np.column_stack([np.cos(normal), np.sin(normal)])
    tvec = np.column_stack([-nvec[:, 1], nvec[:, 0]])
    half = np.sqrt(np.maximum((1.2 * r) ** 2 - offset**2, (0.3 * r) ** 2))[:, None]
    a_cross = nvec * offset[:, None] - tvec * half
    b_cross = nvec * offset[:, None] + tvec * half
    words = rng.permutation(len(STREET_WORDS))[: n_radial + n_cross]
    names = [
        f"{STREET_WORDS[w]} {_RADIAL_KINDS[rng.integers(len(_RADIAL_KINDS))]}"
        for w in words[:n_radial]
    ]
    cross = [
        f"{STREET_WORDS[w]} {_CROSS_KINDS[rng.integers(len(_CROSS_KINDS))]}"
        for w in words[n_radial:]
    ]
    cross[:2] = ["Main Street", "High Street"]  # near the centre, as everywhere
    return _Streets(
        np.concatenate([a_rad, a_cross]), np.concatenate([b_rad, b_cross]), names + cross
    )


def _item_points(
    rng: np.random.Generator, spec: SyntheticCitySpec, inner: shapely.Polygon, streets: _Streets
) -> np.ndarray:
    """Item locations: dense centre, high streets and malls, sparse background."""
    n, r = spec.n_items, spec.radius_km
    n_bg = int(0.12 * n)
    n_clustered = int(0.48 * n)
    n_centre = n - n_bg - n_clustered
    # High streets run along streets; malls are tight blobs.
    k = max(4, n // 110)
    street = rng.integers(0, len(streets.names), size=k)
    t = rng.uniform(0.05, 0.95, size=k)
    ab = streets.b[street] - streets.a[street]
    centres = streets.a[street] + t[:, None] * ab
    along = ab / np.linalg.norm(ab, axis=1, keepdims=True)
    across = np.column_stack([-along[:, 1], along[:, 0]])
    mall = rng.random(k) < 0.25
    sd_along = np.where(mall, rng.uniform(0.05, 0.1, k), rng.uniform(0.2, 0.7, k))
    sd_across = np.where(mall, sd_along, rng.uniform(0.03, 0.06, k))
    size = rng.lognormal(0, 0.7, k) * np.exp(-np.linalg.norm(centres, axis=1) / (0.5 * r))
    parts = []
    for factor in (2, 4, 8):  # oversample, keep what lies inside the city
        m = factor * n_clustered
        pick = rng.choice(k, size=m, p=size / size.sum())
        z = rng.normal(size=(m, 2))
        pts = (
            centres[pick]
            + z[:, :1] * sd_along[pick, None] * along[pick]
            + z[:, 1:] * sd_across[pick, None] * across[pick]
        )
        pts = pts[shapely.contains_xy(inner, pts[:, 0], pts[:, 1])]
        if len(pts) >= n_clustered:
            break
    parts.append(pts[:n_clustered])
    centre = rng.normal(0, 0.16 * r, size=(4 * n_centre, 2))
    centre = centre[shapely.contains_xy(inner, centre[:, 0], centre[:, 1])][:n_centre]
    parts.append(centre)
    parts.append(_points_in(rng, inner, n - len(parts[0]) - len(centre)))
    pts = np.concatenate(parts)
    return pts[rng.permutation(len(pts))]


@dataclass
class _Area:
    code: str
    name: str
    parent: int | None  # index of the parent area one level up
    geometry: BaseGeometry
    land_use: int = -1
    parent_code: str | None = None


def _admin_levels(
    rng: np.random.Generator, spec: SyntheticCitySpec, outline: shapely.Polygon, xy: np.ndarray
) -> list[list[_Area]]:
    """Districts, neighbourhoods and fine cells; each level tiles ``outline``."""
    r = spec.radius_km
    n1 = int(np.clip(2 + spec.n_items // 1600, 3, 6))
    base = rng.uniform(0, 2 * np.pi)
    ring = n1 - 1 if n1 >= 4 else n1
    angles = base + 2 * np.pi * np.arange(ring) / ring + rng.normal(0, 0.2, ring)
    radius = 0.6 * r if n1 >= 4 else 0.45 * r
    seeds1 = radius * np.column_stack([np.cos(angles), np.sin(angles)])
    if n1 >= 4:
        seeds1 = np.vstack([rng.normal(0, 0.05 * r, (1, 2)), seeds1])
    words = [AREA_WORDS[i] for i in rng.permutation(len(AREA_WORDS))]
    districts = [
        _Area(f"D{i + 1}", f"{words[i]}", None, g) for i, g in enumerate(_split(outline, seeds1))
    ]
    next_word = len(districts)
    hoods: list[_Area] = []
    cells: list[_Area] = []
    for di, district in enumerate(districts):
        inside = xy[shapely.contains_xy(district.geometry, xy[:, 0], xy[:, 1])]
        seeds2 = _seeds(rng, district.geometry, int(rng.integers(4, 8)), inside, 0.5)
        for hood_geom in _split(district.geometry, seeds2):
            word = words[next_word % len(words)]
            suffix = "" if next_word < len(words) else " Heights"
            next_word += 1
            hi = len(hoods)
            code = f"{district.code}-N{sum(h.parent == di for h in hoods) + 1}"
            hoods.append(_Area(code, word + suffix, di, hood_geom))
            in_hood = xy[shapely.contains_xy(hood_geom, xy[:, 0], xy[:, 1])]
            n3 = int(np.clip(len(in_hood) // 8, 15, 60))
            for k, cell in enumerate(_split(hood_geom, _seeds(rng, hood_geom, n3, in_hood, 0.6))):
                cells.append(_Area(f"{code}-C{k + 1}", f"{word}{suffix} Block {k + 1}", hi, cell))
    return [districts, hoods, cells]


def _assign_land_use(rng: np.random.Generator, hoods: list[_Area], radius: float) -> None:
    centres = np.array([h.geometry.centroid.coords[0] for h in hoods])
    d = np.clip(np.linalg.norm(centres, axis=1) / radius, 0, 1)
    weights = np.column_stack(
        [
            3 * (1 - d) ** 2 + 0.2,
            2 * (1 - d) + 0.2,
            0.5 + 3 * d,
            2 * (1 - d) ** 2 + 0.1,
            0.1 + 2.5 * np.maximum(d - 0.4, 0),
        ]
    )
    uses = np.array([rng.choice(5, p=w / w.sum()) for w in weights])
    if len(hoods) >= 2 * len(LAND_USES):  # every character somewhere in a city
        for use in range(len(LAND_USES)):
            if (uses == use).any():
                continue
            counts = np.bincount(uses, minlength=5)
            spare = np.flatnonzero(counts[uses] > 1)
            uses[spare[np.argmax(weights[spare, use])]] = use
    for hood, use in zip(hoods, uses, strict=True):
        hood.land_use = int(use)


def _locate(xy: np.ndarray, geoms: list[BaseGeometry]) -> tuple[np.ndarray, np.ndarray]:
    """Containing polygon per point (-1 if none) and the number of containing polygons."""
    tree = shapely.STRtree(geoms)
    point_idx, geom_idx = tree.query(shapely.points(xy), predicate="within")
    found = np.full(len(xy), -1)
    found[point_idx[::-1]] = geom_idx[::-1]  # the first match wins
    return found, np.bincount(point_idx, minlength=len(xy))


def _lonlat_geoms(areas: list[_Area], spec: SyntheticCitySpec) -> list[BaseGeometry]:
    geoms = shapely.transform(
        np.array([a.geometry for a in areas], dtype=object), lambda c: _to_lonlat(c, spec)
    )
    geoms = shapely.orient_polygons(geoms, exterior_cw=False)  # RFC 7946 winding
    bad = ~shapely.is_valid(geoms)
    geoms[bad] = [_polygonal(g) for g in geoms[bad]]
    return list(geoms)
