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

Modules: ``spec`` (the spec, the demo cities, random streams), ``vocabulary`` (categories,
chains, place names), ``words`` (street, landmark, area and person words, name templates),
``geometry`` (outline, streets, admin areas, item points, lon/lat), ``visits`` (users and
check-ins) and ``writer`` (``generate_city`` and the files).
"""

from lgsid_pipeline.demo.spec import DEMO_CITIES, SyntheticCitySpec
from lgsid_pipeline.demo.vocabulary import CATEGORY_NAMES, CHAINS, city_chains
from lgsid_pipeline.demo.writer import GENERATOR_VERSION, SYNTHETIC_FILES, generate_city

__all__ = [
    "CATEGORY_NAMES",
    "CHAINS",
    "DEMO_CITIES",
    "GENERATOR_VERSION",
    "SYNTHETIC_FILES",
    "SyntheticCitySpec",
    "city_chains",
    "generate_city",
]
