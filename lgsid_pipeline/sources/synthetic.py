"""Deterministic synthetic demo cities, written to disk in the synthetic source layout.

A city has a dense centre and sparse outskirts with local high streets; three admin levels
of polygons (districts, neighbourhoods, fine cells) that nest and tile the city; land use per
neighbourhood that skews its category mix; independent places named after local streets
(the same name recurs in different areas); chains shared by every city whose raw names vary
the way real data does ("Starbucks" / "Starbucks Coffee" / "STARBUCKS"); users with homes
and work places, heavy-tailed activity, favourite categories; sessions of nearby co-visits
with distance-decaying choice and revisits; daily and weekly rhythms.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import shapely
from scipy.spatial import cKDTree
from shapely.geometry import MultiPoint, Polygon, mapping

GENERATOR_VERSION = "1"
SYNTHETIC_FILES: tuple[str, ...] = (
    "items.parquet", "checkins.parquet", "users.parquet", "admin_level1.geojson",
    "admin_level2.geojson", "admin_level3.geojson", "manifest.json",
)
KM_PER_DEG_LAT = 111.32


@dataclass(frozen=True)
class SyntheticCitySpec:
    """Size, place and seed of one synthetic city."""

    name: str
    seed: int
    n_items: int
    n_users: int | None = None
    days: int = 120
    center_lat: float = 40.0
    center_lon: float = -3.7
    radius_km: float = 8.0

    @property
    def users(self) -> int:
        return self.n_users if self.n_users is not None else max(30, self.n_items // 4)


DEMO_CITIES: dict[str, SyntheticCitySpec] = {
    "harborview": SyntheticCitySpec("Harborview", seed=11, n_items=6500,
                                    center_lat=47.61, center_lon=-122.33, radius_km=10.0),
    "lakeside": SyntheticCitySpec("Lakeside", seed=22, n_items=5000,
                                  center_lat=41.88, center_lon=-87.63, radius_km=8.0),
    "millbrook": SyntheticCitySpec("Millbrook", seed=33, n_items=3500,
                                   center_lat=52.52, center_lon=13.40, radius_km=6.0),
}


def tiny_spec(name: str = "Tinyville", seed: int = 7, n_items: int = 300) -> SyntheticCitySpec:
    """A small city for unit tests (a few hundred items, generated in well under a second)."""
    return SyntheticCitySpec(name, seed=seed, n_items=n_items, days=60,
                             center_lat=45.0 + seed % 10, center_lon=7.0 + seed % 13,
                             radius_km=4.0)


# Category -> (land-use weights: business, nightlife, residential, tourist, industrial; base
# popularity). Land use skews where each category appears.
CATEGORIES: dict[str, tuple[tuple[float, ...], float]] = {
    "Coffee Shop": ((3, 2, 2, 2, 1), 1.5), "Pizza Place": ((1, 2, 3, 1, 1), 1.2),
    "Bakery": ((1, 1, 3, 1, 0.5), 1.0), "Deli": ((2, 1, 2, 1, 1), 0.9),
    "Burger Joint": ((2, 2, 2, 2, 1), 1.1), "Sushi Restaurant": ((2, 2, 1, 2, 0.2), 1.0),
    "Italian Restaurant": ((1, 3, 1, 2, 0.2), 1.0), "Bar": ((1, 5, 1, 2, 0.3), 1.3),
    "Nightclub": ((0.2, 4, 0.1, 1, 0.5), 1.2), "Pub": ((1, 4, 1, 1, 0.5), 1.1),
    "Supermarket": ((0.5, 0.5, 4, 0.5, 1), 1.4), "Pharmacy": ((1, 0.5, 3, 1, 0.5), 0.9),
    "Convenience Store": ((2, 2, 2, 1, 1), 1.0), "Bank": ((4, 0.5, 1, 1, 0.5), 0.7),
    "Office": ((6, 0.2, 0.5, 0.2, 2), 1.3), "Gym": ((2, 1, 2, 0.5, 1), 1.1),
    "Hair Salon": ((1, 1, 3, 0.5, 0.3), 0.7), "School": ((0.2, 0.1, 3, 0.1, 0.2), 0.9),
    "Park": ((0.5, 0.5, 2, 2, 0.3), 1.2), "Museum": ((0.5, 0.5, 0.2, 5, 0.1), 1.2),
    "Art Gallery": ((0.5, 1, 0.3, 4, 0.3), 0.8), "Hotel": ((2, 1, 0.2, 4, 0.3), 0.9),
    "Train Station": ((2, 1, 1, 1, 1), 3.0), "Bus Stop": ((1, 1, 2, 1, 1), 1.0),
    "Bookstore": ((1, 1, 1, 2, 0.1), 0.7), "Clothing Store": ((2, 1, 1, 3, 0.2), 0.9),
    "Hardware Store": ((0.3, 0.1, 1.5, 0.1, 3), 0.6), "Warehouse": ((0.2, 0.1, 0.1, 0.1, 5), 0.4),
    "Auto Repair": ((0.2, 0.1, 1, 0.1, 4), 0.5), "Cinema": ((1, 2, 1, 2, 0.2), 1.1),
}
LAND_USES = ("business", "nightlife", "residential", "tourist", "industrial")
# Categories people tend to visit next (restaurant -> bar, office -> coffee, ...).
NEXT_CATEGORY = {
    "Pizza Place": ("Bar", "Pub", "Cinema"), "Italian Restaurant": ("Bar", "Nightclub"),
    "Sushi Restaurant": ("Bar", "Cinema"), "Burger Joint": ("Cinema", "Pub"),
    "Office": ("Coffee Shop", "Deli", "Gym"), "Train Station": ("Coffee Shop", "Office"),
    "Museum": ("Art Gallery", "Coffee Shop", "Hotel"), "Bar": ("Nightclub", "Pub"),
    "Gym": ("Coffee Shop", "Supermarket"), "Supermarket": ("Pharmacy", "Bakery"),
}
# Chains shared by every city: (category, raw name variants as they appear in messy data).
CHAINS: dict[str, tuple[str, tuple[str, ...]]] = {
    "starbucks": ("Coffee Shop", ("Starbucks", "Starbucks Coffee", "STARBUCKS")),
    "dunkin": ("Coffee Shop", ("Dunkin' Donuts", "Dunkin Donuts", "Dunkin'")),
    "mcdonalds": ("Burger Joint", ("McDonald's", "McDonalds", "MCDONALD'S")),
    "burger-king": ("Burger Joint", ("Burger King", "BURGER KING")),
    "seven-eleven": ("Convenience Store", ("7-Eleven", "7 Eleven", "7-ELEVEN")),
    "family-mart": ("Convenience Store", ("FamilyMart", "Family Mart")),
    "cvs": ("Pharmacy", ("CVS", "CVS Pharmacy", "CVS/pharmacy")),
    "walgreens": ("Pharmacy", ("Walgreens", "Walgreens Pharmacy")),
    "chase": ("Bank", ("Chase", "Chase Bank", "JPMorgan Chase Bank")),
    "citibank": ("Bank", ("Citibank", "Citi Bank")),
    "planet-fitness": ("Gym", ("Planet Fitness", "Planet Fitness Gym")),
    "anytime": ("Gym", ("Anytime Fitness", "ANYTIME FITNESS")),
    "dominos": ("Pizza Place", ("Domino's Pizza", "Dominos Pizza", "Domino's")),
    "pizza-hut": ("Pizza Place", ("Pizza Hut", "PizzaHut")),
    "subway": ("Deli", ("Subway", "SUBWAY", "Subway Restaurants")),
    "whole-foods": ("Supermarket", ("Whole Foods Market", "Whole Foods")),
    "trader-joes": ("Supermarket", ("Trader Joe's", "Trader Joes")),
    "hilton": ("Hotel", ("Hilton", "Hilton Hotel")),
    "marriott": ("Hotel", ("Marriott", "Marriott Hotel")),
    "amc": ("Cinema", ("AMC Theatres", "AMC")),
    "h-and-m": ("Clothing Store", ("H&M", "H & M")),
    "uniqlo": ("Clothing Store", ("Uniqlo", "UNIQLO")),
    "barnes": ("Bookstore", ("Barnes & Noble", "Barnes and Noble")),
    "supercuts": ("Hair Salon", ("Supercuts", "SuperCuts")),
}
STREET_WORDS = ("Harbor", "Oak", "Maple", "Cedar", "Mill", "River", "Bridge", "Church", "King",
                "Queen", "Station", "Market", "Park", "Lake", "Hill", "Elm", "Pine", "Main",
                "High", "Water", "Garden", "Castle", "Union", "Spring", "Chapel", "Forest",
                "Meadow", "Orchard", "Willow", "Birch", "Granite", "Copper", "Silver", "Sunset")
STREET_KINDS = ("Street", "Avenue", "Road", "Lane", "Square", "Boulevard")
AREA_WORDS = ("Old Town", "Riverside", "Northgate", "Southbank", "Eastfield", "Westbrook",
              "Highbury", "Lowmoor", "Kingsway", "Fairview", "Greenhill", "Stonebridge",
              "Ashford", "Bellmont", "Clearwater", "Dunmore", "Elmwood", "Foxley", "Glenwood",
              "Hawthorne", "Ironside", "Juniper", "Kestrel", "Larkspur", "Marlow", "Newhaven",
              "Oakridge", "Pembroke", "Queensbury", "Rosedale", "Sheffield", "Thornbury",
              "Upton", "Valemont", "Whitby", "Yarrow")
HOOD_SUFFIXES = ("North", "South", "Central", "East", "West", "Park", "Heights", "Village")
CATEGORY_WORDS = {c: c.split()[-1] if c not in ("Coffee Shop", "Train Station") else
                  {"Coffee Shop": "Cafe", "Train Station": "Station"}[c] for c in CATEGORIES}


def _km_to_lonlat(x: np.ndarray, y: np.ndarray, spec: SyntheticCitySpec
                  ) -> tuple[np.ndarray, np.ndarray]:
    lat = spec.center_lat + y / KM_PER_DEG_LAT
    lon = spec.center_lon + x / (KM_PER_DEG_LAT * np.cos(np.radians(spec.center_lat)))
    return lon, lat


def _city_outline(rng: np.random.Generator, radius: float) -> Polygon:
    angles = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    wobble = 1 + 0.12 * np.sin(3 * angles + rng.uniform(0, 6)) + rng.normal(0, 0.03, 72)
    return Polygon(np.column_stack([radius * wobble * np.cos(angles),
                                    radius * wobble * np.sin(angles)])).buffer(0)


def _points_in(rng: np.random.Generator, polygon: Polygon, n: int) -> np.ndarray:
    minx, miny, maxx, maxy = polygon.bounds
    out: list[np.ndarray] = []
    while sum(len(o) for o in out) < n:
        cand = rng.uniform((minx, miny), (maxx, maxy), size=(max(4 * n, 16), 2))
        out.append(cand[shapely.contains_xy(polygon, cand[:, 0], cand[:, 1])])
    return np.concatenate(out)[:n]


def _split(rng: np.random.Generator, parent: Polygon, n: int) -> list[Polygon]:
    """Voronoi partition of ``parent`` into ``n`` cells (each a valid polygon)."""
    seeds = _points_in(rng, parent, n)
    cells = shapely.voronoi_polygons(MultiPoint(seeds), extend_to=parent.envelope.buffer(1))
    parts = []
    for cell in cells.geoms:
        piece = shapely.make_valid(cell.intersection(parent))
        if not piece.is_empty and piece.area > 1e-9:
            parts.append(piece)
    return parts


def _admin_levels(rng: np.random.Generator, spec: SyntheticCitySpec
                  ) -> tuple[Polygon, list[list[dict]]]:
    """City outline and three nested levels of areas (km coordinates)."""
    outline = _city_outline(rng, spec.radius_km)
    area_names = list(rng.permutation(AREA_WORDS))
    levels: list[list[dict]] = [[], [], []]
    n1 = int(np.clip(round(spec.radius_km / 2), 3, 6))
    for i, district in enumerate(_split(rng, outline, n1)):
        d_code = f"D{i + 1}"
        levels[0].append({"code": d_code, "name": f"{area_names[i % len(area_names)]} District",
                          "parent_code": None, "geometry": district})
        for j, hood in enumerate(_split(rng, district, int(rng.integers(4, 8)))):
            h_code = f"{d_code}-N{j + 1}"
            word = area_names[(n1 + i * 8 + j) % len(area_names)]
            levels[1].append({"code": h_code, "name": f"{word} {HOOD_SUFFIXES[j % 8]}",
                              "parent_code": d_code, "geometry": hood})
            n3 = int(np.clip(hood.area / 0.35, 6, 40))
            for k, cell in enumerate(_split(rng, hood, n3)):
                levels[2].append({"code": f"{h_code}-C{k + 1}", "name": f"{h_code} cell {k + 1}",
                                  "parent_code": h_code, "geometry": cell})
    return outline, levels


def _locate(x: np.ndarray, y: np.ndarray, areas: list[dict]) -> np.ndarray:
    """Index of the area containing each point (the nearest area for boundary slivers)."""
    found = np.full(len(x), -1)
    for n, area in enumerate(areas):
        inside = shapely.contains_xy(area["geometry"], x, y) & (found < 0)
        found[inside] = n
    missing = np.flatnonzero(found < 0)
    for m in missing:
        point = shapely.Point(x[m], y[m])
        found[m] = int(np.argmin([a["geometry"].distance(point) for a in areas]))
    return found


def _item_locations(rng: np.random.Generator, outline: Polygon, spec: SyntheticCitySpec
                    ) -> np.ndarray:
    n = spec.n_items
    n_centre, n_streets = int(n * 0.45), int(n * 0.4)
    centre = rng.normal(0, spec.radius_km * 0.22, size=(n_centre * 2, 2))
    streets = _points_in(rng, outline, max(8, n // 200))
    pick = rng.integers(0, len(streets), size=n_streets * 2)
    spread = rng.uniform(0.15, 0.6, size=(len(streets), 1))[pick]
    clustered = streets[pick] + rng.normal(size=(n_streets * 2, 2)) * spread
    pts = np.concatenate([centre, clustered])
    pts = pts[shapely.contains_xy(outline, pts[:, 0], pts[:, 1])]
    pts = np.concatenate([pts[rng.permutation(len(pts))][: n_centre + n_streets],
                          _points_in(rng, outline, n)])
    return pts[:n]


def _items(rng: np.random.Generator, spec: SyntheticCitySpec, outline: Polygon,
           levels: list[list[dict]]) -> pd.DataFrame:
    pts = _item_locations(rng, outline, spec)
    hood = _locate(pts[:, 0], pts[:, 1], levels[1])
    radius = np.hypot(pts[:, 0], pts[:, 1]) / spec.radius_km
    # Land use per neighbourhood: central areas lean business/nightlife/tourist.
    hood_centres = np.array([a["geometry"].centroid.coords[0] for a in levels[1]])
    hood_r = np.hypot(hood_centres[:, 0], hood_centres[:, 1]) / spec.radius_km
    use_weights = np.column_stack([2.5 - 2 * hood_r, 2 - 1.5 * hood_r, 0.5 + 2 * hood_r,
                                   1.8 - 1.6 * hood_r, 0.2 + 1.2 * hood_r]).clip(0.05)
    hood_use = np.array([rng.choice(5, p=w / w.sum()) for w in use_weights])
    names = list(CATEGORIES)
    cat_by_use = np.array([[CATEGORIES[c][0][u] for c in names] for u in range(5)])
    cat_by_use /= cat_by_use.sum(axis=1, keepdims=True)
    streets = [f"{w} {k}" for w in STREET_WORDS for k in STREET_KINDS[:2]]
    # Each neighbourhood has a few streets; street names recur across districts.
    hood_streets = [list(rng.choice(len(streets), size=4, replace=False))
                    for _ in levels[1]]
    chain_keys = list(CHAINS)
    city_chains = [c for c in chain_keys if rng.random() < 0.85]
    rows = []
    for n in range(spec.n_items):
        use = hood_use[hood[n]]
        street = streets[hood_streets[hood[n]][rng.integers(0, 4)]]
        if rng.random() < 0.2 and city_chains:
            chain = city_chains[rng.integers(0, len(city_chains))]
            category, variants = CHAINS[chain]
            brand = variants[rng.integers(0, len(variants))]
            name = brand if rng.random() < 0.6 else f"{brand} - {street}"
        else:
            category = names[rng.choice(len(names), p=cat_by_use[use])]
            brand = None
            word = CATEGORY_WORDS[category]
            style = rng.random()
            if style < 0.55:
                name = f"{street.split()[0]} {street.split()[1]} {word}"
            elif style < 0.8:
                name = f"{STREET_WORDS[rng.integers(0, len(STREET_WORDS))]} {word}"
            else:
                name = f"{levels[1][hood[n]]['name'].split()[0]} {word}"
        rows.append((f"it-{n:06d}", name, category, brand))
    lon, lat = _km_to_lonlat(pts[:, 0], pts[:, 1], spec)
    frame = pd.DataFrame(rows, columns=["item_id", "name", "category", "brand"])
    frame["latitude"] = np.round(lat, 6)
    frame["longitude"] = np.round(lon, 6)
    frame["_x"], frame["_y"], frame["_radius"] = pts[:, 0], pts[:, 1], radius
    return frame


def _checkins(rng: np.random.Generator, spec: SyntheticCitySpec, items: pd.DataFrame
              ) -> tuple[pd.DataFrame, pd.DataFrame]:
    xy = items[["_x", "_y"]].to_numpy()
    tree = cKDTree(xy)
    n_items = len(items)
    categories = items["category"].to_numpy()
    base_pop = np.array([CATEGORIES[c][1] for c in categories])
    popularity = base_pop * rng.lognormal(0, 1.0, size=n_items)
    n_users = spec.users
    homes = xy[rng.integers(0, n_items, size=n_users)] + rng.normal(0, 0.6, size=(n_users, 2))
    works = xy[rng.choice(n_items, size=n_users, p=popularity / popularity.sum())]
    activity = np.clip(rng.pareto(1.6, size=n_users) + 1, 1, 60)
    target_visits = n_items * 25
    sessions_per_user = np.maximum(1, np.round(activity / activity.sum() * target_visits / 2.6))
    cat_names = list(CATEGORIES)
    favourite = [set(rng.choice(cat_names, size=3, replace=False)) for _ in range(n_users)]
    k_start = min(150, n_items)
    _, near_home = tree.query(homes, k=k_start)
    _, near_work = tree.query(works, k=k_start)
    k_next = min(40, n_items)
    _, near_item = tree.query(xy, k=k_next)
    start = pd.Timestamp("2025-01-01", tz="UTC")
    hours = np.array([0.2, 0.1, 0.05, 0.05, 0.05, 0.1, 0.4, 1.0, 1.5, 1.2, 1.0, 1.3, 2.2, 1.8,
                      1.1, 1.0, 1.1, 1.5, 2.0, 2.2, 2.0, 1.6, 1.0, 0.5])
    hours /= hours.sum()
    user_ids, item_ids, stamps = [], [], []
    scale_km = 1.5

    def choose(candidates: np.ndarray, origin: np.ndarray, fav: set, boost: tuple = ()) -> int:
        d = np.hypot(*(xy[candidates] - origin).T)
        affinity = np.array([2.5 if c in fav else (2.0 if c in boost else 1.0)
                             for c in categories[candidates]])
        w = popularity[candidates] * affinity * np.exp(-d / scale_km)
        return int(candidates[rng.choice(len(candidates), p=w / w.sum())])

    for u in range(n_users):
        visited: list[int] = []
        uid = f"u-{u:05d}"
        for _ in range(int(sessions_per_user[u])):
            day = int(rng.integers(0, spec.days))
            weekend = (start + pd.Timedelta(days=day)).day_of_week >= 5
            hour = rng.choice(24, p=hours) if not weekend else int(rng.integers(9, 23))
            when = start + pd.Timedelta(days=day, hours=int(hour),
                                        minutes=int(rng.integers(0, 60)))
            at_work = rng.random() < 0.4 and not weekend
            origin = works[u] if at_work else homes[u]
            length = min(int(rng.geometric(0.45)), 5)
            if visited and rng.random() < 0.45:
                current = visited[int(rng.integers(0, len(visited)))]
            else:
                current = choose(near_work[u] if at_work else near_home[u], origin, favourite[u])
            for step in range(length):
                if step:
                    nxt = NEXT_CATEGORY.get(categories[current], ())
                    current = choose(near_item[current][1:], xy[current], favourite[u], nxt)
                    when = when + pd.Timedelta(minutes=int(rng.integers(25, 120)))
                visited.append(current)
                user_ids.append(uid)
                item_ids.append(items.at[current, "item_id"])
                stamps.append(when)
    checkins = pd.DataFrame({"user_id": user_ids, "item_id": item_ids,
                             "timestamp": pd.to_datetime(stamps, utc=True).astype(
                                 "datetime64[us, UTC]")})
    checkins = checkins.sort_values(["timestamp", "user_id"], kind="stable")
    lon, lat = _km_to_lonlat(homes[:, 0], homes[:, 1], spec)
    users = pd.DataFrame({"user_id": [f"u-{u:05d}" for u in range(n_users)],
                          "home_latitude": np.round(lat, 6), "home_longitude": np.round(lon, 6)})
    return checkins.reset_index(drop=True), users


def _write_atomic(path: Path, data: bytes | pa.Table) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        if isinstance(data, pa.Table):
            pq.write_table(data, tmp, compression="zstd")
        else:
            tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _geojson(areas: list[dict], spec: SyntheticCitySpec) -> bytes:
    features = []
    for area in areas:
        geometry = shapely.transform(area["geometry"], lambda c: np.column_stack(
            _km_to_lonlat(c[:, 0], c[:, 1], spec)))
        geometry = shapely.set_precision(geometry, 1e-7)
        features.append({"type": "Feature", "geometry": mapping(shapely.make_valid(geometry)),
                         "properties": {k: area[k] for k in ("code", "name", "parent_code")}})
    return json.dumps({"type": "FeatureCollection", "features": features}).encode()


def generate_city(spec: SyntheticCitySpec, out_dir: Path) -> dict[str, int]:
    """Write the city's files into ``out_dir``; return row counts per file."""
    if spec.n_items < 20:
        raise ValueError(f"a synthetic city needs at least 20 items, got {spec.n_items}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    outline, levels = _admin_levels(rng, spec)
    items = _items(rng, spec, outline, levels)
    checkins, users = _checkins(rng, spec, items)
    items = items.drop(columns=["_x", "_y", "_radius"])
    _write_atomic(out_dir / "items.parquet", pa.Table.from_pandas(items, preserve_index=False))
    _write_atomic(out_dir / "checkins.parquet",
                  pa.Table.from_pandas(checkins, preserve_index=False))
    _write_atomic(out_dir / "users.parquet", pa.Table.from_pandas(users, preserve_index=False))
    for n, areas in enumerate(levels, start=1):
        _write_atomic(out_dir / f"admin_level{n}.geojson", _geojson(areas, spec))
    counts = {"items": len(items), "checkins": len(checkins), "users": len(users),
              **{f"admin_level{n}": len(a) for n, a in enumerate(levels, start=1)}}
    manifest = {**asdict(spec), "n_users": spec.users, "counts": counts,
                "generator_version": GENERATOR_VERSION}
    _write_atomic(out_dir / "manifest.json", json.dumps(manifest, indent=2).encode())
    return counts
