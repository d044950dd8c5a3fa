"""Deterministic synthetic demo cities, written to disk in the synthetic source layout.

A city lives on a local kilometre grid around its centre and is written in lon/lat:

* a wobbly city outline cut into three nested admin levels (districts, neighbourhoods,
  fine cells) by Voronoi partitions clipped to their parent, so each level tiles the city;
* streets (radial roads and cross streets) and landmarks that name places and carry the
  high streets: items cluster in a dense centre, along high streets and in malls, with
  sparse outskirts;
* a land use per neighbourhood (business / nightlife / residential / tourist / industrial)
  that skews its category mix;
* independent places named after local streets, landmarks and areas (the same name recurs
  in different areas) and branches of chains shared by every city, whose raw names vary
  the way real data does ("Starbucks" / "Starbucks Coffee" / "STARBUCKS");
* users with homes where places are (and some in the outskirts), work places, favourite
  categories and places, heavy-tailed activity; outings of 1-5 nearby visits chosen with a
  distance-decaying, popularity- and taste-weighted choice, complementary categories
  (restaurant -> bar), revisits, and daily / weekly rhythms.

Files (``SYNTHETIC_FILES``): ``items.parquet``, ``checkins.parquet``, ``users.parquet``,
``admin_level{1,2,3}.geojson`` (properties ``code``, ``name``, ``parent_code``; level-2 areas
also carry their ``land_use``) and ``manifest.json`` (the spec, row counts, the city's chains,
``generator_version``), each written to a temporary name and renamed into place.

All randomness comes from ``numpy.random.SeedSequence(spec.seed)``; the same spec gives the
same files.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import shapely
from scipy.spatial import cKDTree
from shapely.geometry import mapping
from shapely.geometry.base import BaseGeometry

GENERATOR_VERSION = "2.0"
SYNTHETIC_FILES: tuple[str, ...] = (
    "items.parquet", "checkins.parquet", "users.parquet", "admin_level1.geojson",
    "admin_level2.geojson", "admin_level3.geojson", "manifest.json",
)
KM_PER_DEG_LAT = 111.32
START_DATE = "2025-01-01"  # a Wednesday
_START_US = int(np.datetime64(START_DATE, "us").astype(np.int64))
_START_WEEKDAY = 2  # Monday = 0


@dataclass(frozen=True)
class SyntheticCitySpec:
    """Name, seed, size, place and extent of one synthetic city."""

    name: str
    seed: int
    n_items: int
    n_users: int | None = None  # default: max(30, n_items // 4)
    days: int = 120  # length of the check-in timeline, from 2025-01-01 UTC
    center_lat: float = 40.0
    center_lon: float = -3.7
    radius_km: float = 8.0

    @property
    def users(self) -> int:
        """The number of users (``n_users`` or its default)."""
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
                             radius_km=float(np.clip(3.0 * np.sqrt(n_items / 300), 2.5, 10.0)))


# ------------------------------------------------------------------ vocabulary

LAND_USES: tuple[str, ...] = ("business", "nightlife", "residential", "tourist", "industrial")
BUSINESS, NIGHTLIFE, RESIDENTIAL, TOURIST, INDUSTRIAL = range(5)
# Day periods for the time-of-day fit of a category: morning 5-10 h, midday 11-14 h,
# afternoon 15-17 h, evening 18-22 h, night 23-4 h.
_PERIOD_OF_HOUR = np.array([4] * 5 + [0] * 6 + [1] * 4 + [2] * 3 + [3] * 5 + [4])


@dataclass(frozen=True)
class Category:
    """A place category: how common it is, where, how popular, how named, when visited."""

    name: str
    frequency: float
    land_use: tuple[float, float, float, float, float]  # fit per LAND_USES
    popularity: float
    words: tuple[str, ...]  # name words of independent places ("Pizzeria")
    hours: tuple[float, float, float, float, float] = (1.0, 1.3, 1.2, 0.7, 0.05)


_MEAL = (0.2, 2.5, 0.7, 2.5, 0.5)
_DRINK = (0.05, 0.5, 0.8, 3.0, 2.5)
CATEGORIES: tuple[Category, ...] = (
    Category("Coffee Shop", 1.6, (3, 1.5, 1.5, 2, 0.8), 1.6,
             ("Cafe", "Coffee", "Coffee House", "Espresso Bar"), (3, 1.5, 1.2, 0.5, 0.1)),
    Category("Bakery", 0.8, (1, 0.5, 2.5, 1, 0.5), 1.0, ("Bakery", "Bakehouse", "Bread Co."),
             (3, 1.5, 0.8, 0.3, 0.05)),
    Category("Deli", 0.7, (2, 0.8, 1.5, 1, 1), 0.9, ("Deli", "Delicatessen", "Sandwiches"),
             (1, 2.5, 0.8, 0.3, 0.05)),
    Category("Pizza Place", 1.0, (1, 2, 2.5, 1, 0.8), 1.1, ("Pizza", "Pizzeria", "Pizza Co."),
             _MEAL),
    Category("Burger Joint", 0.8, (1.5, 2, 1.5, 1.5, 1), 1.1, ("Burgers", "Burger Bar", "Grill"),
             _MEAL),
    Category("Sushi Restaurant", 0.6, (2, 2, 1, 1.5, 0.2), 1.0, ("Sushi", "Sushi Bar"), _MEAL),
    Category("Italian Restaurant", 0.7, (1, 2.5, 1, 2, 0.2), 1.0,
             ("Trattoria", "Ristorante", "Osteria"), _MEAL),
    Category("Thai Restaurant", 0.5, (1.5, 2, 1.2, 1.5, 0.3), 0.9, ("Thai Kitchen", "Thai"),
             _MEAL),
    Category("Bar", 1.0, (0.8, 5, 0.8, 1.5, 0.3), 1.3, ("Bar", "Tavern", "Taproom"), _DRINK),
    Category("Pub", 0.6, (0.8, 3, 1.2, 1.2, 0.5), 1.1, ("Pub", "Arms", "Inn"), _DRINK),
    Category("Nightclub", 0.3, (0.1, 5, 0.05, 1, 0.5), 1.2, ("Club", "Lounge"),
             (0.01, 0.05, 0.1, 1.5, 5)),
    Category("Supermarket", 0.6, (0.5, 0.5, 3, 0.5, 1), 1.5, ("Market", "Grocery", "Foods"),
             (1, 1.2, 1.5, 1.2, 0.1)),
    Category("Convenience Store", 0.7, (1.5, 1.5, 2, 1, 1), 1.0,
             ("Mini Mart", "Corner Store", "Convenience"), (1, 1, 1, 1, 0.6)),
    Category("Pharmacy", 0.5, (1, 0.5, 2.5, 1, 0.5), 0.9, ("Pharmacy", "Drugstore", "Chemist")),
    Category("Bank", 0.4, (4, 0.5, 1, 1, 0.5), 0.7, ("Savings Bank", "Credit Union"),
             (1.5, 1.5, 1, 0.1, 0.01)),
    Category("Office", 1.2, (6, 0.3, 0.3, 0.3, 2), 1.4, ("Offices",), (2.5, 1.5, 1, 0.2, 0.02)),
    Category("Coworking Space", 0.3, (4, 1, 0.5, 0.5, 1), 1.0, ("Coworking", "Hub", "Works"),
             (2, 1.5, 1, 0.3, 0.02)),
    Category("Gym", 0.6, (2, 1, 2, 0.5, 1), 1.2, ("Gym", "Fitness", "Athletic Club"),
             (2, 0.8, 1, 1.5, 0.1)),
    Category("Hair Salon", 0.6, (1, 1, 2.5, 0.5, 0.3), 0.7, ("Salon", "Barbers", "Hair Studio"),
             (0.8, 1.5, 1.5, 0.3, 0.01)),
    Category("School", 0.4, (0.1, 0.1, 3, 0.1, 0.3), 1.0, ("School",),
             (2.5, 1, 0.8, 0.1, 0.01)),
    Category("Park", 0.5, (0.5, 0.5, 2, 2, 0.3), 1.3, ("Park",), (1, 2, 1.5, 0.5, 0.05)),
    Category("Museum", 0.15, (0.5, 0.5, 0.1, 6, 0.1), 2.0, ("Museum",),
             (0.8, 2, 1.5, 0.3, 0.01)),
    Category("Art Gallery", 0.25, (0.5, 1.5, 0.3, 4, 0.5), 0.9, ("Gallery", "Art Space"),
             (0.8, 2, 1.5, 0.6, 0.01)),
    Category("Hotel", 0.35, (2, 1, 0.2, 4, 0.3), 1.0, ("Hotel",), (1, 0.8, 1, 1.5, 1.5)),
    Category("Train Station", 0.06, (2, 1, 1, 1, 0.5), 12.0, ("Station",),
             (2.5, 1, 1.5, 1.2, 0.3)),
    Category("Bus Stop", 0.6, (1, 1, 2, 1, 1), 1.0, ("Stop",), (2, 1, 1.5, 1, 0.3)),
    Category("Bookstore", 0.3, (1, 1, 1, 2.5, 0.1), 0.7, ("Books", "Bookshop")),
    Category("Clothing Store", 0.7, (2, 1, 0.8, 3, 0.2), 0.9, ("Boutique", "Outfitters")),
    Category("Hardware Store", 0.3, (0.3, 0.1, 1.5, 0.1, 3), 0.6, ("Hardware", "Supply")),
    Category("Warehouse", 0.35, (0.2, 0.1, 0.05, 0.05, 6), 0.4, ("Warehouse",),
             (2, 1.5, 1, 0.1, 0.02)),
    Category("Auto Repair", 0.35, (0.2, 0.1, 1, 0.1, 4), 0.5, ("Auto Repair", "Garage", "Motors"),
             (1.5, 1.5, 1, 0.1, 0.01)),
    Category("Cinema", 0.2, (1, 2, 1, 2, 0.2), 1.2, ("Cinema", "Picturehouse"),
             (0.1, 0.6, 1.2, 3, 0.8)),
)
CATEGORY_NAMES: tuple[str, ...] = tuple(c.name for c in CATEGORIES)
_CAT_INDEX = {name: i for i, name in enumerate(CATEGORY_NAMES)}

# Categories people often visit next (restaurant -> bar, office -> coffee, ...).
NEXT_CATEGORY: dict[str, tuple[str, ...]] = {
    "Pizza Place": ("Bar", "Pub", "Cinema"), "Burger Joint": ("Cinema", "Pub", "Bar"),
    "Sushi Restaurant": ("Bar", "Cinema"), "Italian Restaurant": ("Bar", "Nightclub", "Cinema"),
    "Thai Restaurant": ("Bar", "Pub"), "Bar": ("Nightclub", "Pub", "Pizza Place"),
    "Pub": ("Bar", "Nightclub"), "Cinema": ("Bar", "Pizza Place", "Italian Restaurant"),
    "Office": ("Coffee Shop", "Deli", "Gym", "Sushi Restaurant"),
    "Coworking Space": ("Coffee Shop", "Deli"), "Train Station": ("Coffee Shop", "Office"),
    "Bus Stop": ("Coffee Shop", "Office", "Bakery"),
    "Museum": ("Art Gallery", "Coffee Shop", "Park", "Italian Restaurant"),
    "Art Gallery": ("Museum", "Coffee Shop", "Bar"), "Gym": ("Coffee Shop", "Supermarket"),
    "Supermarket": ("Pharmacy", "Bakery", "Convenience Store"),
    "Hair Salon": ("Clothing Store", "Coffee Shop"),
    "Clothing Store": ("Clothing Store", "Coffee Shop", "Bookstore"),
    "Park": ("Coffee Shop", "Bakery"), "Hotel": ("Museum", "Italian Restaurant", "Bar"),
    "Coffee Shop": ("Office", "Bookstore", "Park"), "Bakery": ("Park", "Supermarket"),
}


@dataclass(frozen=True)
class ChainBrand:
    """A chain shared by all cities; ``variants`` are raw spellings, most common first."""

    key: str
    category: str
    variants: tuple[str, ...]
    weight: float = 1.0


CHAINS: tuple[ChainBrand, ...] = (
    ChainBrand("starbucks", "Coffee Shop",
               ("Starbucks", "Starbucks Coffee", "STARBUCKS", "Starbucks Coffee Company"), 2.2),
    ChainBrand("dunkin", "Coffee Shop",
               ("Dunkin' Donuts", "Dunkin Donuts", "Dunkin'", "DUNKIN' DONUTS"), 1.3),
    ChainBrand("mcdonalds", "Burger Joint",
               ("McDonald's", "McDonalds", "MCDONALD'S", "McDonald's Restaurant"), 1.8),
    ChainBrand("seven-eleven", "Convenience Store",
               ("7-Eleven", "7 Eleven", "7-ELEVEN", "7-Eleven Store"), 1.5),
    ChainBrand("costa", "Coffee Shop", ("Costa Coffee", "Costa", "COSTA COFFEE"), 0.8),
    ChainBrand("burger-king", "Burger Joint",
               ("Burger King", "BURGER KING", "Burger King Restaurant"), 1.0),
    ChainBrand("five-guys", "Burger Joint", ("Five Guys", "FIVE GUYS", "Five Guys Burgers"), 0.5),
    ChainBrand("subway", "Deli", ("Subway", "SUBWAY", "Subway Restaurants"), 1.2),
    ChainBrand("dominos", "Pizza Place", ("Domino's Pizza", "Dominos Pizza", "Domino's"), 1.0),
    ChainBrand("pizza-hut", "Pizza Place", ("Pizza Hut", "PIZZA HUT", "Pizza Hut Express"), 0.8),
    ChainBrand("familymart", "Convenience Store", ("FamilyMart", "Family Mart", "FAMILYMART"),
               0.8),
    ChainBrand("cvs", "Pharmacy", ("CVS", "CVS Pharmacy", "CVS/pharmacy"), 1.0),
    ChainBrand("walgreens", "Pharmacy", ("Walgreens", "Walgreens Pharmacy", "WALGREENS"), 0.9),
    ChainBrand("chase", "Bank", ("Chase", "Chase Bank", "CHASE BANK"), 0.8),
    ChainBrand("citibank", "Bank", ("Citibank", "Citi Bank", "CITIBANK"), 0.6),
    ChainBrand("hsbc", "Bank", ("HSBC", "HSBC Bank"), 0.5),
    ChainBrand("planet-fitness", "Gym", ("Planet Fitness", "PLANET FITNESS", "Planet Fitness Gym"),
               0.6),
    ChainBrand("anytime-fitness", "Gym", ("Anytime Fitness", "ANYTIME FITNESS"), 0.5),
    ChainBrand("whole-foods", "Supermarket", ("Whole Foods Market", "Whole Foods",
                                              "WHOLE FOODS MARKET"), 0.6),
    ChainBrand("trader-joes", "Supermarket", ("Trader Joe's", "Trader Joes", "TRADER JOE'S"), 0.6),
    ChainBrand("aldi", "Supermarket", ("ALDI", "Aldi", "Aldi Markt"), 0.6),
    ChainBrand("hilton", "Hotel", ("Hilton", "Hilton Hotel", "HILTON"), 0.4),
    ChainBrand("marriott", "Hotel", ("Marriott", "Marriott Hotel", "MARRIOTT"), 0.4),
    ChainBrand("amc", "Cinema", ("AMC Theatres", "AMC", "AMC Theaters"), 0.3),
    ChainBrand("h-and-m", "Clothing Store", ("H&M", "H & M", "H and M"), 0.6),
    ChainBrand("uniqlo", "Clothing Store", ("Uniqlo", "UNIQLO"), 0.5),
    ChainBrand("zara", "Clothing Store", ("Zara", "ZARA"), 0.5),
    ChainBrand("barnes-noble", "Bookstore", ("Barnes & Noble", "Barnes and Noble",
                                             "Barnes & Noble Booksellers"), 0.3),
    ChainBrand("supercuts", "Hair Salon", ("Supercuts", "SuperCuts", "SUPERCUTS"), 0.5),
)
_ALWAYS_PRESENT = 4  # the first chains are in every city; each other one in most
CHAIN_SHARE = 0.2  # share of items that are chain branches

STREET_WORDS: tuple[str, ...] = (
    "Harbor", "Oak", "Maple", "Cedar", "Mill", "River", "Bridge", "Church", "King", "Queen",
    "Station", "Market", "Park", "Lake", "Hill", "Elm", "Pine", "Water", "Garden", "Castle",
    "Union", "Spring", "Chapel", "Forest", "Meadow", "Orchard", "Willow", "Birch", "Granite",
    "Copper", "Silver", "Sunset", "Beacon", "Canal", "Victoria", "Albert", "Grove", "Ferry",
)
_RADIAL_KINDS = ("Road", "Avenue", "Boulevard", "Way")
_CROSS_KINDS = ("Street", "Street", "Lane", "Avenue")
_ABBREVIATIONS = {"Street": "St", "Road": "Rd", "Avenue": "Ave", "Boulevard": "Blvd",
                  "Lane": "Ln", "Way": "Way"}
LANDMARK_WORDS: tuple[str, ...] = (
    "Old Mill", "Clock Tower", "Riverside", "Harbor", "Castle", "Market Hall", "Old Bridge",
    "Lighthouse", "Cathedral", "Town Hall", "Windmill", "Old Quarry", "Gasworks",
    "Observatory", "Fountain", "Rose Garden", "Canal", "Tannery", "Brewery", "Foundry",
)
AREA_WORDS: tuple[str, ...] = (
    "Old Town", "Northgate", "Southbank", "Eastfield", "Westbrook", "Highbury", "Lowmoor",
    "Kingsway", "Fairview", "Greenhill", "Stonebridge", "Ashford", "Bellmont", "Clearwater",
    "Dunmore", "Elmwood", "Foxley", "Glenwood", "Hawthorne", "Ironside", "Juniper", "Kestrel",
    "Larkspur", "Marlow", "Newhaven", "Oakridge", "Pembroke", "Queensbury", "Rosedale",
    "Thornbury", "Upton", "Valemont", "Whitby", "Yarrow", "Brookside", "Cliffton", "Denholm",
    "Eversley", "Fernhill", "Gatewood", "Hollins", "Inverley", "Kirkdale", "Linwood",
    "Merriton", "Norbury", "Oxley", "Pinehurst", "Redcliff", "Sandown",
)
PERSON_NAMES: tuple[str, ...] = (
    "Rosa", "Marco", "Ana", "Luca", "Mia", "Omar", "Yuki", "Sven", "Nina", "Ravi", "Leo", "Ines",
    "Tom", "Hana", "Jonas", "Sofia", "Mateo", "Priya", "Kofi", "Elena", "Ivan", "Zoe", "Ali",
    "Greta", "Finn", "Lena", "Diego", "Mei", "Sam", "Aisha",
)
# Independent place names: template and weight; fields filled per item.
_DEFAULT_TEMPLATES: tuple[tuple[str, float], ...] = (
    ("{street} {word}", 0.40), ("{landmark} {word}", 0.18), ("{sword} {word}", 0.12),
    ("{hood} {word}", 0.14), ("{person}'s {word}", 0.16),
)
_SPECIAL_TEMPLATES: dict[str, tuple[str, ...]] = {
    "Park": ("{landmark} Park", "{hood} Park", "{sword} Park", "{sword} Gardens", "{hood} Green"),
    "Train Station": ("{hood} Station", "{street} Station", "{landmark} Station"),
    "Bus Stop": ("{street} & {street2}", "{street} / {street2}", "{landmark} Stop"),
    "School": ("{sword} Elementary School", "{hood} High School", "{landmark} Academy",
               "{person} Memorial School"),
    "Office": ("{num} {street}", "{sword} Tower", "{landmark} Business Center", "{hood} Plaza"),
    "Museum": ("{city} Museum of Art", "{landmark} Museum", "{city} History Museum",
               "{hood} Museum"),
    "Hotel": ("{landmark} Hotel", "{hood} Inn", "{street} Suites", "Hotel {sword}"),
    "Warehouse": ("{hood} Depot", "{street} Warehouse", "{sword} Logistics"),
}

# Visiting behaviour.
VISITS_PER_ITEM = 24.0  # check-ins per item on average
_SESSION_LENGTH_P = np.array([0.38, 0.28, 0.18, 0.10, 0.06])  # 1-5 visits per outing
_FAVOURITE_START = 0.6  # share of outings that start at one of the user's own places
_FAVOURITE_STEP = 0.35  # chance a later visit is a nearby own place
_STEP_SCALE_KM = 0.6  # distance scale of the next visit in an outing
_NEIGHBOURS = 32  # candidates for the next visit (nearest items to the current one)
_WEEKDAY_HOURS = np.array([0.3, 0.15, 0.1, 0.05, 0.05, 0.1, 0.4, 1.2, 1.6, 1.0, 0.9, 1.4, 2.4,
                           2.0, 1.0, 0.9, 1.0, 1.6, 2.2, 2.4, 2.0, 1.5, 1.0, 0.6])
_WEEKEND_HOURS = np.array([0.8, 0.6, 0.3, 0.1, 0.05, 0.05, 0.1, 0.2, 0.5, 1.0, 1.5, 1.8, 2.2,
                           2.2, 2.0, 1.8, 1.7, 1.8, 2.0, 2.2, 2.2, 2.0, 1.7, 1.2])
_CHUNK_CELLS = 2_000_000  # users x items weights held at once


def _streams(spec: SyntheticCitySpec) -> dict[str, np.random.Generator]:
    names = ("geometry", "items", "names", "chains", "users", "visits")
    children = np.random.SeedSequence(spec.seed).spawn(len(names))
    return {n: np.random.default_rng(s) for n, s in zip(names, children, strict=True)}


def city_chains(spec: SyntheticCitySpec) -> tuple[str, ...]:
    """Keys of the chains that have branches in this city (most of ``CHAINS``)."""
    rng = _streams(spec)["chains"]
    keep = rng.random(len(CHAINS)) < 0.85
    keep[:_ALWAYS_PRESENT] = True
    return tuple(c.key for c, k in zip(CHAINS, keep, strict=True) if k)


# ------------------------------------------------------------------ geometry (km grid)


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
    cells = shapely.get_parts(shapely.voronoi_polygons(shapely.multipoints(seeds),
                                                       extend_to=parent))
    pieces = shapely.intersection(cells, parent)
    return [_polygonal(p) for p in pieces if not p.is_empty and p.area > 1e-9]


def _seeds(rng: np.random.Generator, area: BaseGeometry, n: int, pool: np.ndarray,
           from_pool: float) -> np.ndarray:
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
    names = [f"{STREET_WORDS[w]} {_RADIAL_KINDS[rng.integers(len(_RADIAL_KINDS))]}"
             for w in words[:n_radial]]
    cross = [f"{STREET_WORDS[w]} {_CROSS_KINDS[rng.integers(len(_CROSS_KINDS))]}"
             for w in words[n_radial:]]
    cross[:2] = ["Main Street", "High Street"]  # near the centre, as everywhere
    return _Streets(np.concatenate([a_rad, a_cross]), np.concatenate([b_rad, b_cross]),
                    names + cross)


def _item_points(rng: np.random.Generator, spec: SyntheticCitySpec, inner: shapely.Polygon,
                 streets: _Streets) -> np.ndarray:
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
        pts = (centres[pick] + z[:, :1] * sd_along[pick, None] * along[pick]
               + z[:, 1:] * sd_across[pick, None] * across[pick])
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


def _admin_levels(rng: np.random.Generator, spec: SyntheticCitySpec, outline: shapely.Polygon,
                  xy: np.ndarray) -> list[list[_Area]]:
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
    districts = [_Area(f"D{i + 1}", f"{words[i]}", None, g)
                 for i, g in enumerate(_split(outline, seeds1))]
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
    weights = np.column_stack([3 * (1 - d) ** 2 + 0.2, 2 * (1 - d) + 0.2, 0.5 + 3 * d,
                               2 * (1 - d) ** 2 + 0.1, 0.1 + 2.5 * np.maximum(d - 0.4, 0)])
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


# ------------------------------------------------------------------ items


def _sample_rows(rng: np.random.Generator, weights: np.ndarray) -> np.ndarray:
    """One column index per row, drawn with probability proportional to the row's weights."""
    cdf = np.cumsum(weights, axis=1)
    target = rng.random(len(weights)) * cdf[:, -1]
    return np.minimum((cdf <= target[:, None]).sum(axis=1), weights.shape[1] - 1)


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


def _items(streams: dict[str, np.random.Generator], spec: SyntheticCitySpec, xy: np.ndarray,
           levels: list[list[_Area]], streets: _Streets, landmarks: tuple[list[str], np.ndarray]
           ) -> _Items:
    rng, name_rng = streams["items"], streams["names"]
    districts, hoods, cells = levels
    n = len(xy)
    cell, count = _locate(xy, [c.geometry for c in cells])
    lost = np.flatnonzero(count == 0)
    if len(lost):  # on a cell boundary: the nearest cell
        cell[lost] = shapely.STRtree([c.geometry for c in cells]).query_nearest(
            shapely.points(xy[lost]), all_matches=False)[1]
    hood = np.array([cells[c].parent for c in cell])
    use = np.array([hoods[h].land_use for h in hood])
    # Chain branches prefer busy areas; each chain fits some land uses better.
    chain_keys = set(city_chains(spec))
    chains = [i for i, c in enumerate(CHAINS) if c.key in chain_keys]
    share = np.array([1.4, 1.1, 0.8, 1.3, 0.5])[use]
    n_chain = int(round(CHAIN_SHARE * n))
    branch = rng.choice(n, size=n_chain, replace=False, p=share / share.sum())
    fit = np.array([[CHAINS[c].weight * CATEGORIES[_CAT_INDEX[CHAINS[c].category]].land_use[u]
                     for c in chains] for u in range(len(LAND_USES))])
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


def _names(rng: np.random.Generator, spec: SyntheticCitySpec, xy: np.ndarray, chain: np.ndarray,
           category: np.ndarray, hood: np.ndarray, hoods: list[_Area], streets: _Streets,
           landmarks: tuple[list[str], np.ndarray]) -> tuple[list[str], list[str | None]]:
    n = len(xy)
    street_rank = np.argsort(streets.distances(xy), axis=1)[:, :2]
    street = np.where(rng.random(n) < 0.75, street_rank[:, 0], street_rank[:, 1])
    other = np.where(street == street_rank[:, 0], street_rank[:, 1], street_rank[:, 0])
    landmark_names, landmark_xy = landmarks
    landmark = cKDTree(landmark_xy).query(xy)[1]
    default_p = np.array([w for _, w in _DEFAULT_TEMPLATES])
    default_t = [t for t, _ in _DEFAULT_TEMPLATES]
    u = rng.random((n, 6))
    names: list[str] = []
    brands: list[str | None] = []
    for i in range(n):
        street_name = streets.names[street[i]]
        if chain[i] >= 0:
            variants = CHAINS[chain[i]].variants
            p = 0.55 ** np.arange(len(variants))
            brand = variants[int(np.searchsorted(np.cumsum(p / p.sum()), u[i, 0]))]
            if u[i, 1] < 0.35:
                kind, word = street_name.rsplit(" ", 1)
                suffixes = (f" - {kind} {_ABBREVIATIONS[word]}", f" ({hoods[hood[i]].name})",
                            f" #{100 + int(u[i, 2] * 9900)}", f" @ {landmark_names[landmark[i]]}")
                brand_name = brand + suffixes[int(u[i, 3] * 4) % 4]
            else:
                brand_name = brand
            names.append(brand_name)
            brands.append(brand)
            continue
        cat = CATEGORIES[category[i]]
        special = _SPECIAL_TEMPLATES.get(cat.name)
        if special:
            template = special[int(u[i, 0] * len(special)) % len(special)]
        else:
            pick = int(np.searchsorted(np.cumsum(default_p), u[i, 0] * default_p.sum()))
            template = default_t[min(pick, len(default_t) - 1)]
        names.append(template.format(
            street=street_name, street2=streets.names[other[i]],
            sword=street_name.rsplit(" ", 1)[0], landmark=landmark_names[landmark[i]],
            hood=hoods[hood[i]].name, person=PERSON_NAMES[int(u[i, 1] * len(PERSON_NAMES))],
            word=cat.words[int(u[i, 2] * len(cat.words)) % len(cat.words)],
            num=2 * int(1 + u[i, 3] * 240), city=spec.name))
        brands.append(None)
    return names, brands


# ------------------------------------------------------------------ users and visits


@dataclass
class _Visits:
    homes: np.ndarray
    user: np.ndarray
    item: np.ndarray
    ts_us: np.ndarray


def _draw_near(rng: np.random.Generator, draw_user: np.ndarray, draw_work: np.ndarray,
               origins: tuple[np.ndarray, np.ndarray], xy: np.ndarray, base: np.ndarray,
               affinity: np.ndarray, category: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Items drawn with p ~ popularity x category affinity x exp(-distance / scale).

    The distance is from the user's home (``draw_work`` false) or work place; all items are
    candidates. Users are processed in chunks of one (users x items) weight matrix.
    """
    n = len(xy)
    out = np.zeros(len(draw_user), dtype=np.int64)
    u01 = rng.random(len(draw_user))
    order = np.argsort(draw_user, kind="stable")
    sorted_users = draw_user[order]
    n_users = len(scale)
    chunk = max(8, _CHUNK_CELLS // n)
    for a in range(0, n_users, chunk):
        b = min(a + chunk, n_users)
        lo, hi = np.searchsorted(sorted_users, [a, b])
        if lo == hi:
            continue
        idx = order[lo:hi]
        weight = base[None, :] * affinity[a:b][:, category]
        for at_work, origin in zip((False, True), origins, strict=True):
            sel = idx[draw_work[idx] == at_work]
            if not len(sel):
                continue
            o = origin[a:b]
            d = np.hypot(o[:, :1] - xy[None, :, 0], o[:, 1:] - xy[None, :, 1])
            cdf = np.cumsum(weight * np.exp(-d / scale[a:b, None]), axis=1)
            cdf /= cdf[:, -1:]
            cdf += np.arange(b - a)[:, None]
            rows = draw_user[sel] - a
            flat = np.searchsorted(cdf.ravel(), rows + u01[sel], side="right")
            out[sel] = np.clip(flat - rows * n, 0, n - 1)
    return out


def _visits(rng: np.random.Generator, spec: SyntheticCitySpec, items: _Items,
            outline: shapely.Polygon) -> _Visits:
    xy, cat, use = items.xy, items.category, items.use
    n, n_users, n_cat = len(xy), spec.users, len(CATEGORIES)
    r = spec.radius_km
    # Popularity: heavy-tailed, stations and museums draw crowds.
    popularity = (np.array([c.popularity for c in CATEGORIES])[cat]
                  * rng.lognormal(0, 1.0, n) * np.where(items.chain >= 0, 1.3, 1.0))
    # Homes where places are (residential areas first), some in the outskirts.
    home_w = np.array([0.6, 0.8, 4.0, 0.5, 0.3])[use]
    n_out = n_users // 5
    anchor = rng.choice(n, size=n_users - n_out, p=home_w / home_w.sum())
    near = xy[anchor] + rng.normal(0, 0.35, (n_users - n_out, 2))
    outside = ~shapely.contains_xy(outline, near[:, 0], near[:, 1])
    near[outside] = xy[anchor[outside]]
    outskirts = outline.difference(shapely.Point(0, 0).buffer(0.55 * r))
    homes = np.concatenate([near, _points_in(rng, outskirts, n_out)])
    homes = homes[rng.permutation(n_users)]
    office = np.isin(cat, [_CAT_INDEX["Office"], _CAT_INDEX["Coworking Space"]])
    work_w = np.where(office, 8.0, 1.0) * np.where(use == BUSINESS, 3.0, 1.0)
    works = xy[rng.choice(n, size=n_users, p=work_w / work_w.sum())]
    has_work = rng.random(n_users) < 0.7
    # Tastes: three favourite categories, some noise; personal distance scale of a few km.
    freq = np.array([c.frequency for c in CATEGORIES])
    keys = np.log(freq)[None, :] + rng.gumbel(size=(n_users, n_cat))
    favourite_cats = np.argsort(-keys, axis=1)[:, :3]
    affinity = rng.lognormal(0, 0.35, (n_users, n_cat))
    np.put_along_axis(affinity, favourite_cats,
                      np.take_along_axis(affinity, favourite_cats, axis=1) * 3.0, axis=1)
    scale = np.clip(rng.lognormal(np.log(1.8), 0.35, n_users), 0.6, 5.0)
    # Activity: heavy-tailed outings per user.
    activity = rng.pareto(1.3, n_users) + 1
    mean_len = float((_SESSION_LENGTH_P * np.arange(1, 6)).sum())
    total_sessions = VISITS_PER_ITEM * n / mean_len
    sessions = np.clip(np.round(activity / activity.sum() * total_sessions), 1, 4 * spec.days)
    sessions = sessions.astype(np.int64)
    # Own places (revisited): drawn once from the same distance-decaying choice.
    n_fav = np.clip(2 + np.round(1.5 * np.log1p(sessions)), 2, 10).astype(np.int64)
    fav_user = np.repeat(np.arange(n_users), n_fav)
    fav_work = has_work[fav_user] & (rng.random(len(fav_user)) < 0.4)
    origins = (homes, works)
    fav_items = _draw_near(rng, fav_user, fav_work, origins, xy, popularity, affinity, cat,
                           scale)
    favourites = np.zeros((n_users, int(n_fav.max())), dtype=np.int64)
    favourites[fav_user, np.arange(len(fav_user)) - np.repeat(np.cumsum(n_fav) - n_fav, n_fav)] \
        = fav_items
    # Outings: day, start time, origin, length.
    s_user = np.repeat(np.arange(n_users), sessions)
    n_s = len(s_user)
    weekday_of = (np.arange(spec.days) + _START_WEEKDAY) % 7
    day_w = np.where(weekday_of >= 5, 1.3, 1.0)
    day = rng.choice(spec.days, size=n_s, p=day_w / day_w.sum())
    weekend = weekday_of[day] >= 5
    u_hour = rng.random(n_s)
    hour = np.where(
        weekend,
        np.searchsorted(np.cumsum(_WEEKEND_HOURS) / _WEEKEND_HOURS.sum(), u_hour, side="right"),
        np.searchsorted(np.cumsum(_WEEKDAY_HOURS) / _WEEKDAY_HOURS.sum(), u_hour, side="right"),
    ).clip(0, 23)
    t = day * 86400 + hour * 3600 + rng.integers(0, 3600, n_s)
    at_work = has_work[s_user] & ~weekend & (hour >= 8) & (hour < 18) & (rng.random(n_s) < 0.75)
    length = rng.choice(5, size=n_s, p=_SESSION_LENGTH_P) + 1
    # First visit: one of the user's own places, or a new place near home / work that suits
    # the time of day (two candidates, the first kept with its time-of-day fit).
    hours_fit = np.array([c.hours for c in CATEGORIES]).T  # (period, category)
    hours_fit = hours_fit / hours_fit.max(axis=1, keepdims=True)
    own = rng.random(n_s) < _FAVOURITE_START
    pick = (rng.random(n_s) ** 2 * n_fav[s_user]).astype(np.int64)  # the first ones most
    current = favourites[s_user, pick]
    explore = np.flatnonzero(~own)
    cand = _draw_near(rng, np.repeat(s_user[explore], 2), np.repeat(at_work[explore], 2),
                      origins, xy, popularity, affinity, cat, scale).reshape(-1, 2)
    period = _PERIOD_OF_HOUR[hour[explore]]
    keep_first = rng.random(len(explore)) < hours_fit[period, cat[cand[:, 0]]]
    current[explore] = np.where(keep_first, cand[:, 0], cand[:, 1])
    rec_s, rec_item, rec_t = [np.arange(n_s)], [current.copy()], [t.copy()]
    # Later visits: near the previous one, complementary categories, own places nearby.
    nb_dist, nb = cKDTree(xy).query(xy, k=min(_NEIGHBOURS + 1, n))
    nb_dist, nb = nb_dist[:, 1:], nb[:, 1:]
    boost = np.ones((n_cat, n_cat))
    np.fill_diagonal(boost, 0.5)
    for src, targets in NEXT_CATEGORY.items():
        for dst in targets:
            boost[_CAT_INDEX[src], _CAT_INDEX[dst]] = 5.0
    for step in range(1, 5):
        act = np.flatnonzero(length > step)
        if not len(act):
            break
        gap = 900 + rng.gamma(2.0, 1300.0, len(act))
        t[act] += gap.astype(np.int64)
        cur, usr = current[act], s_user[act]
        cand = nb[cur]
        ccat = cat[cand]
        period = _PERIOD_OF_HOUR[(t[act] // 3600) % 24]
        w = (popularity[cand] * affinity[usr[:, None], ccat] * boost[cat[cur][:, None], ccat]
             * hours_fit[period[:, None], ccat] * np.exp(-nb_dist[cur] / _STEP_SCALE_KM))
        w[cand == cur[:, None]] = 0.0
        nxt = cand[np.arange(len(act)), _sample_rows(rng, w)]
        own_place = favourites[usr, (rng.random(len(act)) * n_fav[usr]).astype(np.int64)]
        close = np.linalg.norm(xy[own_place] - xy[cur], axis=1) < 1.5
        jump = close & (own_place != cur) & (rng.random(len(act)) < _FAVOURITE_STEP)
        nxt[jump] = own_place[jump]
        current[act] = nxt
        rec_s.append(act)
        rec_item.append(nxt)
        rec_t.append(t[act].copy())
    user = s_user[np.concatenate(rec_s)]
    item = np.concatenate(rec_item)
    ts = _START_US + np.concatenate(rec_t).astype(np.int64) * 1_000_000
    order = np.lexsort((item, user, ts))
    user, item, ts = user[order], item[order], ts[order]
    dup = np.zeros(len(ts), dtype=bool)
    dup[1:] = (ts[1:] == ts[:-1]) & (user[1:] == user[:-1]) & (item[1:] == item[:-1])
    return _Visits(homes, user[~dup], item[~dup], ts[~dup])


# ------------------------------------------------------------------ output


def _lonlat_geoms(areas: list[_Area], spec: SyntheticCitySpec) -> list[BaseGeometry]:
    geoms = shapely.transform(np.array([a.geometry for a in areas], dtype=object),
                              lambda c: _to_lonlat(c, spec))
    geoms = shapely.orient_polygons(geoms, exterior_cw=False)  # RFC 7946 winding
    bad = ~shapely.is_valid(geoms)
    geoms[bad] = [_polygonal(g) for g in geoms[bad]]
    return list(geoms)


def _place_items(lonlat: np.ndarray, items: _Items, levels: list[list[_Area]],
                 geoms: list[list[BaseGeometry]]) -> np.ndarray:
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


def _write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write via a temporary file in the same folder, then rename over ``path``."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_parquet(path: Path, table: pa.Table) -> None:
    _write_atomic(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))


def _write_bytes(path: Path, data: bytes) -> None:
    _write_atomic(path, lambda tmp: tmp.write_bytes(data))


def _geojson(areas: list[_Area], geoms: list[BaseGeometry], level: int) -> bytes:
    features = []
    for area, geom in zip(areas, geoms, strict=True):
        properties: dict[str, object] = {"code": area.code, "name": area.name,
                                         "parent_code": area.parent_code}
        if level == 2:
            properties["land_use"] = LAND_USES[area.land_use]
        features.append({"type": "Feature", "properties": properties,
                         "geometry": mapping(geom)})
    return json.dumps({"type": "FeatureCollection", "features": features},
                      separators=(",", ":")).encode()


def generate_city(spec: SyntheticCitySpec, out_dir: Path) -> dict[str, int]:
    """Write the city's files into ``out_dir`` (created if missing); return row counts.

    The counts are ``{"items", "checkins", "users", "admin_level1", "admin_level2",
    "admin_level3"}``. Every file is written to a temporary name and renamed into place;
    ``manifest.json`` goes last, so its presence means the folder is complete.
    """
    if spec.n_items < 50:
        raise ValueError(f"a synthetic city needs at least 50 items, got {spec.n_items}")
    if (spec.days < 1 or spec.radius_km <= 0 or spec.users < 1
            or not (-80 <= spec.center_lat <= 80 and -180 <= spec.center_lon <= 180)):
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
    items = _items(streams, spec, xy, levels, streets,
                   (landmark_names[:n_landmarks], landmark_xy))
    visits = _visits(streams["visits"], spec, items, outline)

    for parents, children in zip(levels[:-1], levels[1:], strict=True):
        for area in children:
            area.parent_code = parents[area.parent].code
    geoms = [_lonlat_geoms(areas, spec) for areas in levels]
    lonlat = _place_items(_to_lonlat(xy, spec), items, levels, geoms)
    item_ids = np.array([f"it-{i:06d}" for i in range(len(xy))], dtype=object)
    user_ids = np.array([f"u-{u:05d}" for u in range(spec.users)], dtype=object)
    items_table = pa.table({
        "item_id": pa.array(item_ids, pa.string()),
        "name": pa.array(items.names, pa.string()),
        "category": pa.array([CATEGORY_NAMES[c] for c in items.category], pa.string()),
        "brand": pa.array(items.brands, pa.string()),
        "latitude": pa.array(lonlat[:, 1], pa.float64()),
        "longitude": pa.array(lonlat[:, 0], pa.float64()),
    })
    checkins_table = pa.table({
        "user_id": pa.array(user_ids[visits.user], pa.string()),
        "item_id": pa.array(item_ids[visits.item], pa.string()),
        "timestamp": pa.array(visits.ts_us, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
    })
    homes = np.round(_to_lonlat(visits.homes, spec), 7)
    users_table = pa.table({
        "user_id": pa.array(user_ids, pa.string()),
        "home_latitude": pa.array(homes[:, 1], pa.float64()),
        "home_longitude": pa.array(homes[:, 0], pa.float64()),
    })
    _write_parquet(out_dir / "items.parquet", items_table)
    _write_parquet(out_dir / "checkins.parquet", checkins_table)
    _write_parquet(out_dir / "users.parquet", users_table)
    for n, (areas, level_geoms) in enumerate(zip(levels, geoms, strict=True), start=1):
        _write_bytes(out_dir / f"admin_level{n}.geojson", _geojson(areas, level_geoms, n))
    counts = {"items": items_table.num_rows, "checkins": checkins_table.num_rows,
              "users": users_table.num_rows,
              **{f"admin_level{n}": len(a) for n, a in enumerate(levels, start=1)}}
    manifest = {**asdict(spec), "n_users": spec.users, "counts": counts,
                "chains": list(city_chains(spec)), "start_date": START_DATE,
                "generator_version": GENERATOR_VERSION}
    _write_bytes(out_dir / "manifest.json", json.dumps(manifest, indent=2).encode())
    return counts
