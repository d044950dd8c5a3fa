"""Vocabulary of the synthetic cities: land uses, categories, chain brands, and the names of
independent places and chain branches (made from the street, landmark, area and person words
and the name templates of :mod:`~lgsid_pipeline.demo.words`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy.spatial import cKDTree

from lgsid_pipeline.demo.spec import SyntheticCitySpec, _streams
from lgsid_pipeline.demo.words import (
    _ABBREVIATIONS,
    _DEFAULT_TEMPLATES,
    _SPECIAL_TEMPLATES,
    PERSON_NAMES,
)

if TYPE_CHECKING:
    from lgsid_pipeline.demo.geometry import _Area, _Streets

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
    Category(
        "Coffee Shop",
        1.6,
        (3, 1.5, 1.5, 2, 0.8),
        1.6,
        ("Cafe", "Coffee", "Coffee House", "Espresso Bar"),
        (3, 1.5, 1.2, 0.5, 0.1),
    ),
    Category(
        "Bakery",
        0.8,
        (1, 0.5, 2.5, 1, 0.5),
        1.0,
        ("Bakery", "Bakehouse", "Bread Co."),
        (3, 1.5, 0.8, 0.3, 0.05),
    ),
    Category(
        "Deli",
        0.7,
        (2, 0.8, 1.5, 1, 1),
        0.9,
        ("Deli", "Delicatessen", "Sandwiches"),
        (1, 2.5, 0.8, 0.3, 0.05),
    ),
    Category(
        "Pizza Place", 1.0, (1, 2, 2.5, 1, 0.8), 1.1, ("Pizza", "Pizzeria", "Pizza Co."), _MEAL
    ),
    Category(
        "Burger Joint", 0.8, (1.5, 2, 1.5, 1.5, 1), 1.1, ("Burgers", "Burger Bar", "Grill"), _MEAL
    ),
    Category("Sushi Restaurant", 0.6, (2, 2, 1, 1.5, 0.2), 1.0, ("Sushi", "Sushi Bar"), _MEAL),
    Category(
        "Italian Restaurant",
        0.7,
        (1, 2.5, 1, 2, 0.2),
        1.0,
        ("Trattoria", "Ristorante", "Osteria"),
        _MEAL,
    ),
    Category("Thai Restaurant", 0.5, (1.5, 2, 1.2, 1.5, 0.3), 0.9, ("Thai Kitchen", "Thai"), _MEAL),
    Category("Bar", 1.0, (0.8, 5, 0.8, 1.5, 0.3), 1.3, ("Bar", "Tavern", "Taproom"), _DRINK),
    Category("Pub", 0.6, (0.8, 3, 1.2, 1.2, 0.5), 1.1, ("Pub", "Arms", "Inn"), _DRINK),
    Category(
        "Nightclub", 0.3, (0.1, 5, 0.05, 1, 0.5), 1.2, ("Club", "Lounge"), (0.01, 0.05, 0.1, 1.5, 5)
    ),
    Category(
        "Supermarket",
        0.6,
        (0.5, 0.5, 3, 0.5, 1),
        1.5,
        ("Market", "Grocery", "Foods"),
        (1, 1.2, 1.5, 1.2, 0.1),
    ),
    Category(
        "Convenience Store",
        0.7,
        (1.5, 1.5, 2, 1, 1),
        1.0,
        ("Mini Mart", "Corner Store", "Convenience"),
        (1, 1, 1, 1, 0.6),
    ),
    Category("Pharmacy", 0.5, (1, 0.5, 2.5, 1, 0.5), 0.9, ("Pharmacy", "Drugstore", "Chemist")),
    Category(
        "Bank",
        0.4,
        (4, 0.5, 1, 1, 0.5),
        0.7,
        ("Savings Bank", "Credit Union"),
        (1.5, 1.5, 1, 0.1, 0.01),
    ),
    Category("Office", 1.2, (6, 0.3, 0.3, 0.3, 2), 1.4, ("Offices",), (2.5, 1.5, 1, 0.2, 0.02)),
    Category(
        "Coworking Space",
        0.3,
        (4, 1, 0.5, 0.5, 1),
        1.0,
        ("Coworking", "Hub", "Works"),
        (2, 1.5, 1, 0.3, 0.02),
    ),
    Category(
        "Gym",
        0.6,
        (2, 1, 2, 0.5, 1),
        1.2,
        ("Gym", "Fitness", "Athletic Club"),
        (2, 0.8, 1, 1.5, 0.1),
    ),
    Category(
        "Hair Salon",
        0.6,
        (1, 1, 2.5, 0.5, 0.3),
        0.7,
        ("Salon", "Barbers", "Hair Studio"),
        (0.8, 1.5, 1.5, 0.3, 0.01),
    ),
    Category("School", 0.4, (0.1, 0.1, 3, 0.1, 0.3), 1.0, ("School",), (2.5, 1, 0.8, 0.1, 0.01)),
    Category("Park", 0.5, (0.5, 0.5, 2, 2, 0.3), 1.3, ("Park",), (1, 2, 1.5, 0.5, 0.05)),
    Category("Museum", 0.15, (0.5, 0.5, 0.1, 6, 0.1), 2.0, ("Museum",), (0.8, 2, 1.5, 0.3, 0.01)),
    Category(
        "Art Gallery",
        0.25,
        (0.5, 1.5, 0.3, 4, 0.5),
        0.9,
        ("Gallery", "Art Space"),
        (0.8, 2, 1.5, 0.6, 0.01),
    ),
    Category("Hotel", 0.35, (2, 1, 0.2, 4, 0.3), 1.0, ("Hotel",), (1, 0.8, 1, 1.5, 1.5)),
    Category("Train Station", 0.06, (2, 1, 1, 1, 0.5), 12.0, ("Station",), (2.5, 1, 1.5, 1.2, 0.3)),
    Category("Bus Stop", 0.6, (1, 1, 2, 1, 1), 1.0, ("Stop",), (2, 1, 1.5, 1, 0.3)),
    Category("Bookstore", 0.3, (1, 1, 1, 2.5, 0.1), 0.7, ("Books", "Bookshop")),
    Category("Clothing Store", 0.7, (2, 1, 0.8, 3, 0.2), 0.9, ("Boutique", "Outfitters")),
    Category("Hardware Store", 0.3, (0.3, 0.1, 1.5, 0.1, 3), 0.6, ("Hardware", "Supply")),
    Category(
        "Warehouse", 0.35, (0.2, 0.1, 0.05, 0.05, 6), 0.4, ("Warehouse",), (2, 1.5, 1, 0.1, 0.02)
    ),
    Category(
        "Auto Repair",
        0.35,
        (0.2, 0.1, 1, 0.1, 4),
        0.5,
        ("Auto Repair", "Garage", "Motors"),
        (1.5, 1.5, 1, 0.1, 0.01),
    ),
    Category(
        "Cinema", 0.2, (1, 2, 1, 2, 0.2), 1.2, ("Cinema", "Picturehouse"), (0.1, 0.6, 1.2, 3, 0.8)
    ),
)
CATEGORY_NAMES: tuple[str, ...] = tuple(c.name for c in CATEGORIES)
_CAT_INDEX = {name: i for i, name in enumerate(CATEGORY_NAMES)}

# Categories people often visit next (restaurant -> bar, office -> coffee, ...).
NEXT_CATEGORY: dict[str, tuple[str, ...]] = {
    "Pizza Place": ("Bar", "Pub", "Cinema"),
    "Burger Joint": ("Cinema", "Pub", "Bar"),
    "Sushi Restaurant": ("Bar", "Cinema"),
    "Italian Restaurant": ("Bar", "Nightclub", "Cinema"),
    "Thai Restaurant": ("Bar", "Pub"),
    "Bar": ("Nightclub", "Pub", "Pizza Place"),
    "Pub": ("Bar", "Nightclub"),
    "Cinema": ("Bar", "Pizza Place", "Italian Restaurant"),
    "Office": ("Coffee Shop", "Deli", "Gym", "Sushi Restaurant"),
    "Coworking Space": ("Coffee Shop", "Deli"),
    "Train Station": ("Coffee Shop", "Office"),
    "Bus Stop": ("Coffee Shop", "Office", "Bakery"),
    "Museum": ("Art Gallery", "Coffee Shop", "Park", "Italian Restaurant"),
    "Art Gallery": ("Museum", "Coffee Shop", "Bar"),
    "Gym": ("Coffee Shop", "Supermarket"),
    "Supermarket": ("Pharmacy", "Bakery", "Convenience Store"),
    "Hair Salon": ("Clothing Store", "Coffee Shop"),
    "Clothing Store": ("Clothing Store", "Coffee Shop", "Bookstore"),
    "Park": ("Coffee Shop", "Bakery"),
    "Hotel": ("Museum", "Italian Restaurant", "Bar"),
    "Coffee Shop": ("Office", "Bookstore", "Park"),
    "Bakery": ("Park", "Supermarket"),
}


@dataclass(frozen=True)
class ChainBrand:
    """A chain shared by all cities; ``variants`` are raw spellings, most common first."""

    key: str
    category: str
    variants: tuple[str, ...]
    weight: float = 1.0


CHAINS: tuple[ChainBrand, ...] = (
    ChainBrand(
        "starbucks",
        "Coffee Shop",
        ("Starbucks", "Starbucks Coffee", "STARBUCKS", "Starbucks Coffee Company"),
        2.2,
    ),
    ChainBrand(
        "dunkin",
        "Coffee Shop",
        ("Dunkin' Donuts", "Dunkin Donuts", "Dunkin'", "DUNKIN' DONUTS"),
        1.3,
    ),
    ChainBrand(
        "mcdonalds",
        "Burger Joint",
        ("McDonald's", "McDonalds", "MCDONALD'S", "McDonald's Restaurant"),
        1.8,
    ),
    ChainBrand(
        "seven-eleven",
        "Convenience Store",
        ("7-Eleven", "7 Eleven", "7-ELEVEN", "7-Eleven Store"),
        1.5,
    ),
    ChainBrand("costa", "Coffee Shop", ("Costa Coffee", "Costa", "COSTA COFFEE"), 0.8),
    ChainBrand(
        "burger-king", "Burger Joint", ("Burger King", "BURGER KING", "Burger King Restaurant"), 1.0
    ),
    ChainBrand("five-guys", "Burger Joint", ("Five Guys", "FIVE GUYS", "Five Guys Burgers"), 0.5),
    ChainBrand("subway", "Deli", ("Subway", "SUBWAY", "Subway Restaurants"), 1.2),
    ChainBrand("dominos", "Pizza Place", ("Domino's Pizza", "Dominos Pizza", "Domino's"), 1.0),
    ChainBrand("pizza-hut", "Pizza Place", ("Pizza Hut", "PIZZA HUT", "Pizza Hut Express"), 0.8),
    ChainBrand("familymart", "Convenience Store", ("FamilyMart", "Family Mart", "FAMILYMART"), 0.8),
    ChainBrand("cvs", "Pharmacy", ("CVS", "CVS Pharmacy", "CVS/pharmacy"), 1.0),
    ChainBrand("walgreens", "Pharmacy", ("Walgreens", "Walgreens Pharmacy", "WALGREENS"), 0.9),
    ChainBrand("chase", "Bank", ("Chase", "Chase Bank", "CHASE BANK"), 0.8),
    ChainBrand("citibank", "Bank", ("Citibank", "Citi Bank", "CITIBANK"), 0.6),
    ChainBrand("hsbc", "Bank", ("HSBC", "HSBC Bank"), 0.5),
    ChainBrand(
        "planet-fitness", "Gym", ("Planet Fitness", "PLANET FITNESS", "Planet Fitness Gym"), 0.6
    ),
    ChainBrand("anytime-fitness", "Gym", ("Anytime Fitness", "ANYTIME FITNESS"), 0.5),
    ChainBrand(
        "whole-foods",
        "Supermarket",
        ("Whole Foods Market", "Whole Foods", "WHOLE FOODS MARKET"),
        0.6,
    ),
    ChainBrand("trader-joes", "Supermarket", ("Trader Joe's", "Trader Joes", "TRADER JOE'S"), 0.6),
    ChainBrand("aldi", "Supermarket", ("ALDI", "Aldi", "Aldi Markt"), 0.6),
    ChainBrand("hilton", "Hotel", ("Hilton", "Hilton Hotel", "HILTON"), 0.4),
    ChainBrand("marriott", "Hotel", ("Marriott", "Marriott Hotel", "MARRIOTT"), 0.4),
    ChainBrand("amc", "Cinema", ("AMC Theatres", "AMC", "AMC Theaters"), 0.3),
    ChainBrand("h-and-m", "Clothing Store", ("H&M", "H & M", "H and M"), 0.6),
    ChainBrand("uniqlo", "Clothing Store", ("Uniqlo", "UNIQLO"), 0.5),
    ChainBrand("zara", "Clothing Store", ("Zara", "ZARA"), 0.5),
    ChainBrand(
        "barnes-noble",
        "Bookstore",
        ("Barnes & Noble", "Barnes and Noble", "Barnes & Noble Booksellers"),
        0.3,
    ),
    ChainBrand("supercuts", "Hair Salon", ("Supercuts", "SuperCuts", "SUPERCUTS"), 0.5),
)
_ALWAYS_PRESENT = 4  # the first chains are in every city; each other one in most
CHAIN_SHARE = 0.2  # share of items that are chain branches


def city_chains(spec: SyntheticCitySpec) -> tuple[str, ...]:
    """Keys of the chains that have branches in this city (most of ``CHAINS``)."""
    rng = _streams(spec)["chains"]
    keep = rng.random(len(CHAINS)) < 0.85
    keep[:_ALWAYS_PRESENT] = True
    return tuple(c.key for c, k in zip(CHAINS, keep, strict=True) if k)


def _names(
    rng: np.random.Generator,
    spec: SyntheticCitySpec,
    xy: np.ndarray,
    chain: np.ndarray,
    category: np.ndarray,
    hood: np.ndarray,
    hoods: list[_Area],
    streets: _Streets,
    landmarks: tuple[list[str], np.ndarray],
) -> tuple[list[str], list[str | None]]:
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
                suffixes = (
                    f" - {kind} {_ABBREVIATIONS[word]}",
                    f" ({hoods[hood[i]].name})",
                    f" #{100 + int(u[i, 2] * 9900)}",
                    f" @ {landmark_names[landmark[i]]}",
                )
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
        names.append(
            template.format(
                street=street_name,
                street2=streets.names[other[i]],
                sword=street_name.rsplit(" ", 1)[0],
                landmark=landmark_names[landmark[i]],
                hood=hoods[hood[i]].name,
                person=PERSON_NAMES[int(u[i, 1] * len(PERSON_NAMES))],
                word=cat.words[int(u[i, 2] * len(cat.words)) % len(cat.words)],
                num=2 * int(1 + u[i, 3] * 240),
                city=spec.name,
            )
        )
        brands.append(None)
    return names, brands
