"""Synthetic demo cities: files, determinism, admin polygons, geography, names and visits."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely
from helpers import tiny_spec
from scipy.stats import chi2_contingency
from shapely.geometry import shape

from lgsid_pipeline.demo import (
    CATEGORY_NAMES,
    CHAINS,
    DEMO_CITIES,
    GENERATOR_VERSION,
    SYNTHETIC_FILES,
    SyntheticCitySpec,
    city_chains,
    generate_city,
    writer,
)

pytestmark = pytest.mark.slow  # seconds per test: left out of `make test-fast`

VARIANT_TO_CHAIN = {v: c.key for c in CHAINS for v in c.variants}
RESTAURANTS = {
    "Pizza Place",
    "Burger Joint",
    "Sushi Restaurant",
    "Italian Restaurant",
    "Thai Restaurant",
}
NIGHTLIFE = {"Bar", "Pub", "Nightclub"}


@dataclass
class City:
    spec: SyntheticCitySpec
    folder: Path
    counts: dict[str, int]
    seconds: float
    items: pd.DataFrame
    checkins: pd.DataFrame
    users: pd.DataFrame
    levels: list[pd.DataFrame]  # code, name, parent_code, (land_use), geometry per level

    def km(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        """Local kilometre coordinates (equirectangular around the city centre)."""
        kx = 111.32 * np.cos(np.radians(self.spec.center_lat))
        return np.column_stack(
            [
                (np.asarray(lon) - self.spec.center_lon) * kx,
                (np.asarray(lat) - self.spec.center_lat) * 111.32,
            ]
        )

    def item_km(self) -> np.ndarray:
        return self.km(self.items["latitude"], self.items["longitude"])

    def locate(self, level: int) -> tuple[np.ndarray, np.ndarray]:
        """Index of the containing polygon per item at ``level`` (1-3) and the match count."""
        points = shapely.points(self.items[["longitude", "latitude"]].to_numpy())
        tree = shapely.STRtree(self.levels[level - 1]["geometry"].to_numpy())
        point_idx, geom_idx = tree.query(points, predicate="within")
        found = np.full(len(points), -1)
        found[point_idx] = geom_idx
        return found, np.bincount(point_idx, minlength=len(points))

    def item_codes(self, level: int) -> np.ndarray:
        found, count = self.locate(level)
        assert (count == 1).all()
        return self.levels[level - 1]["code"].to_numpy()[found]


def load_city(spec: SyntheticCitySpec, folder: Path) -> City:
    start = time.perf_counter()
    counts = generate_city(spec, folder)
    seconds = time.perf_counter() - start
    levels = []
    for n in (1, 2, 3):
        features = json.loads((folder / f"admin_level{n}.geojson").read_text())["features"]
        frame = pd.DataFrame([f["properties"] for f in features])
        frame["geometry"] = [shape(f["geometry"]) for f in features]
        levels.append(frame)
    return City(
        spec,
        folder,
        counts,
        seconds,
        pd.read_parquet(folder / "items.parquet"),
        pd.read_parquet(folder / "checkins.parquet"),
        pd.read_parquet(folder / "users.parquet"),
        levels,
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, City]:
    """All three demo cities, generated once (the timing is checked below)."""
    root = tmp_path_factory.mktemp("demo")
    return {slug: load_city(spec, root / slug) for slug, spec in DEMO_CITIES.items()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> City:
    return load_city(tiny_spec(), tmp_path_factory.mktemp("tiny") / "city")


def visit_frame(city: City) -> pd.DataFrame:
    """Check-ins with item and home positions (km) and item category, in user-time order."""
    frame = city.checkins.merge(city.items, on="item_id").merge(city.users, on="user_id")
    frame[["ix", "iy"]] = city.km(frame["latitude"], frame["longitude"])
    frame[["hx", "hy"]] = city.km(frame["home_latitude"], frame["home_longitude"])
    return frame.sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True)


# ------------------------------------------------------------------ specs, files, speed


def test_demo_specs_are_three_cities_of_different_size_in_different_places() -> None:
    assert len(DEMO_CITIES) == 3
    sizes = [s.n_items for s in DEMO_CITIES.values()]
    assert len(set(sizes)) == 3 and 4000 <= np.mean(sizes) <= 6000
    assert len({s.seed for s in DEMO_CITIES.values()}) == 3
    centres = [(s.center_lat, s.center_lon) for s in DEMO_CITIES.values()]
    for i, a in enumerate(centres):
        assert -90 < a[0] < 90 and -180 < a[1] < 180
        for b in centres[i + 1 :]:
            assert abs(a[0] - b[0]) + abs(a[1] - b[1]) > 5  # far apart on Earth
    spec = tiny_spec()
    assert (spec.name, spec.seed, spec.n_items, spec.users) == ("Tinyville", 7, 300, 75)
    assert SyntheticCitySpec("X", 1, 100).users == 30
    assert SyntheticCitySpec("X", 1, 1000, n_users=12).users == 12


def test_demo_cities_have_the_requested_sizes(demo: dict[str, City]) -> None:
    # (generation time is not asserted: timers belong in bench/, not in tests)
    for city in demo.values():
        spec = city.spec
        assert sorted(p.name for p in city.folder.iterdir()) == sorted(SYNTHETIC_FILES)
        manifest = json.loads((city.folder / "manifest.json").read_text())
        assert manifest["counts"] == city.counts
        assert manifest["generator_version"] == GENERATOR_VERSION
        assert {k: manifest[k] for k in ("name", "seed", "n_items", "days")} == {
            "name": spec.name,
            "seed": spec.seed,
            "n_items": spec.n_items,
            "days": spec.days,
        }
        assert city.counts == {
            "items": spec.n_items,
            "checkins": len(city.checkins),
            "users": spec.users,
            **{f"admin_level{n}": len(city.levels[n - 1]) for n in (1, 2, 3)},
        }
        assert len(city.items) == spec.n_items and len(city.users) == spec.users
        assert 15 <= len(city.checkins) / spec.n_items <= 40
        assert 3 <= len(city.levels[0]) <= 6
        per_district = city.levels[1]["parent_code"].value_counts()
        assert len(per_district) == len(city.levels[0]) and per_district.min() >= 3
        per_hood = city.levels[2]["parent_code"].value_counts()
        assert len(per_hood) == len(city.levels[1])
        assert per_hood.min() >= 15 and per_hood.max() <= 60


def test_tiny_city_schema_ids_and_timeline(tiny: City) -> None:
    schemas = {
        name: pq.read_schema(tiny.folder / f"{name}.parquet")
        for name in ("items", "checkins", "users")
    }
    assert [(f.name, f.type) for f in schemas["items"]] == [
        ("item_id", pa.string()),
        ("name", pa.string()),
        ("category", pa.string()),
        ("brand", pa.string()),
        ("latitude", pa.float64()),
        ("longitude", pa.float64()),
    ]
    assert [(f.name, f.type) for f in schemas["checkins"]] == [
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("timestamp", pa.timestamp("us", tz="UTC")),
    ]
    assert [(f.name, f.type) for f in schemas["users"]] == [
        ("user_id", pa.string()),
        ("home_latitude", pa.float64()),
        ("home_longitude", pa.float64()),
    ]
    items, checkins = tiny.items, tiny.checkins
    assert items["item_id"].is_unique and items["item_id"].str.fullmatch(r"it-\d{6}").all()
    assert tiny.users["user_id"].str.fullmatch(r"u-\d{5}").all()
    assert items["name"].str.len().min() > 2 and items["category"].notna().all()
    assert set(checkins["item_id"]) <= set(items["item_id"])
    assert set(checkins["user_id"]) == set(tiny.users["user_id"])  # everyone goes out
    assert checkins["timestamp"].is_monotonic_increasing
    start = pd.Timestamp("2025-01-01", tz="UTC")
    assert checkins["timestamp"].min() >= start
    assert checkins["timestamp"].max() < start + pd.Timedelta(days=tiny.spec.days + 1)
    assert not checkins.duplicated().any()


def test_same_seed_gives_the_same_city_and_another_seed_a_different_one(
    tiny: City, tmp_path: Path
) -> None:
    again = load_city(tiny_spec(), tmp_path / "again")
    for attr in ("items", "checkins", "users"):
        pd.testing.assert_frame_equal(getattr(tiny, attr), getattr(again, attr))
    for name in SYNTHETIC_FILES:
        if not name.endswith(".parquet"):
            assert (tiny.folder / name).read_bytes() == (again.folder / name).read_bytes()
    other = load_city(tiny_spec(seed=8), tmp_path / "other")
    assert len(other.items) == len(tiny.items)
    assert not np.allclose(
        other.items["latitude"] - other.items["latitude"].mean(),
        tiny.items["latitude"] - tiny.items["latitude"].mean(),
    )
    assert (other.items["name"] != tiny.items["name"]).mean() > 0.5
    assert not other.checkins["item_id"].equals(tiny.checkins["item_id"])


def test_failed_generation_leaves_no_partial_files(
    tiny: City, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "city"
    generate_city(tiny_spec(), folder)

    def broken(*args: object, **kwargs: object) -> bytes:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(writer, "_geojson", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        generate_city(tiny_spec(seed=9), folder)
    names = {p.name for p in folder.iterdir()}
    assert "manifest.json" not in names  # an incomplete folder is not mistaken for a city
    assert names <= set(SYNTHETIC_FILES)  # no temporary files left behind
    pd.read_parquet(folder / "items.parquet")  # what was written is whole


def test_invalid_specs_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least"):
        generate_city(SyntheticCitySpec("X", 1, n_items=10), tmp_path)
    with pytest.raises(ValueError, match="invalid"):
        generate_city(SyntheticCitySpec("X", 1, n_items=100, days=0), tmp_path)


# ------------------------------------------------------------------ admin polygons


def test_admin_polygons_are_valid_nested_and_tile_the_city(
    demo: dict[str, City], tiny: City
) -> None:
    for city in [*demo.values(), tiny]:
        levels = city.levels
        assert levels[0]["parent_code"].isna().all()
        totals = []
        for n, level in enumerate(levels, start=1):
            geoms = level["geometry"].to_numpy()
            assert shapely.is_valid(geoms).all()
            assert set(shapely.get_type_id(geoms)) <= {3, 6}  # (multi)polygons
            assert level["code"].is_unique and level["name"].notna().all()
            area = shapely.area(geoms)
            union = shapely.union_all(geoms).area
            assert area.sum() == pytest.approx(union, rel=1e-6)  # no overlaps
            totals.append(union)
            if n == 1:
                continue
            parents = levels[n - 2].set_index("code")["geometry"]
            assert set(level["parent_code"]) == set(parents.index)
            parent_geoms = parents.loc[level["parent_code"]].to_numpy()
            inside = shapely.area(shapely.intersection(geoms, parent_geoms)) / area
            assert inside.min() >= 0.99
            child_sum = pd.Series(area).groupby(level["parent_code"].to_numpy()).sum()
            np.testing.assert_allclose(
                child_sum.to_numpy(),
                shapely.area(parents.loc[child_sum.index].to_numpy()),
                rtol=1e-6,
            )  # no gaps inside a parent
        assert totals == pytest.approx([totals[0]] * 3, rel=1e-6)


def test_every_item_is_in_exactly_one_polygon_per_level(demo: dict[str, City], tiny: City) -> None:
    for city in [*demo.values(), tiny]:
        codes = []
        for level in (1, 2, 3):
            found, count = city.locate(level)
            assert (count == 1).all(), f"{city.spec.name}: level {level}"
            codes.append(city.levels[level - 1]["code"].to_numpy()[found])
        for n in (1, 2):  # the item's cells nest
            parent = city.levels[n].set_index("code")["parent_code"]
            assert (parent.loc[codes[n]].to_numpy() == codes[n - 1]).all()


# ------------------------------------------------------------------ where places are


def test_density_varies_by_an_order_of_magnitude(demo: dict[str, City]) -> None:
    for city in demo.values():
        xy = city.item_km()
        r = np.hypot(xy[:, 0], xy[:, 1]) / city.spec.radius_km
        centre = (r < 0.25).sum() / (np.pi * 0.25**2)
        outskirts = (r > 0.7).sum() / (np.pi * (1 - 0.7**2))
        assert centre > 10 * outskirts
        found, _ = city.locate(3)
        kx = 111.32 * np.cos(np.radians(city.spec.center_lat))
        area_km2 = shapely.area(city.levels[2]["geometry"].to_numpy()) * kx * 111.32
        density = np.bincount(found, minlength=len(area_km2)) / area_km2
        assert np.percentile(density, 90) > 10 * max(np.percentile(density, 25), 0.1)


def test_category_mix_follows_land_use(demo: dict[str, City]) -> None:
    city = demo["lakeside"]
    assert 25 <= city.items["category"].nunique() <= 40
    assert set(city.items["category"]) <= set(CATEGORY_NAMES)
    use_of = city.levels[1].set_index("code")["land_use"]
    assert use_of.nunique() >= 4
    items = city.items.assign(use=use_of.loc[city.item_codes(2)].to_numpy())
    share = pd.crosstab(items["use"], items["category"], normalize="index")
    assert share.loc["business", "Office"] > 3 * share.loc["residential", "Office"]
    nightlife = share[sorted(NIGHTLIFE)].sum(axis=1)
    assert nightlife["nightlife"] > 2 * nightlife["residential"]
    assert share.loc["residential", "School"] > 3 * share.loc["business", "School"]
    # Without the land-use labels: areas differ far more than a random shuffle would make them.
    hoods = city.item_codes(2)

    def cramers_v(labels: np.ndarray) -> float:
        table = pd.crosstab(labels, items["category"].to_numpy())
        chi2 = chi2_contingency(table.to_numpy())[0]
        return float(np.sqrt(chi2 / (table.to_numpy().sum() * (min(table.shape) - 1))))

    shuffled = np.random.default_rng(0).permutation(hoods)
    assert cramers_v(hoods) > 1.5 * cramers_v(shuffled)


def test_users_live_where_places_are_and_some_in_the_outskirts(demo: dict[str, City]) -> None:
    city = demo["harborview"]
    homes = city.km(city.users["home_latitude"], city.users["home_longitude"])
    r = np.hypot(homes[:, 0], homes[:, 1]) / city.spec.radius_km
    assert r.max() < 1.3
    assert 0.1 < (r > 0.55).mean() < 0.6
    items = city.item_km()
    nearest = np.min(
        np.hypot(homes[:, None, 0] - items[None, :, 0], homes[:, None, 1] - items[None, :, 1]),
        axis=1,
    )
    assert np.median(nearest) < 0.4


# ------------------------------------------------------------------ names and chains


def test_chains_are_shared_by_all_cities(demo: dict[str, City]) -> None:
    assert 20 <= len(CHAINS) <= 30 and len({c.key for c in CHAINS}) == len(CHAINS)
    assert {c.category for c in CHAINS} <= set(CATEGORY_NAMES)
    present = {}
    for slug, city in demo.items():
        brands = city.items["brand"].dropna()
        assert set(brands) <= set(VARIANT_TO_CHAIN)  # raw brands are known variants
        present[slug] = set(brands.map(VARIANT_TO_CHAIN))
        assert present[slug] == set(city_chains(city.spec))
        assert len(present[slug]) >= 0.7 * len(CHAINS)
        assert 0.15 <= city.items["brand"].notna().mean() <= 0.25
        chain_rows = city.items[city.items["brand"].notna()]
        expected = {c.key: c.category for c in CHAINS}
        assert (
            chain_rows["brand"].map(VARIANT_TO_CHAIN).map(expected) == chain_rows["category"]
        ).all()
    assert len(set.intersection(*present.values())) >= 15
    assert {"starbucks", "dunkin", "mcdonalds", "seven-eleven"} <= set.intersection(
        *present.values()
    )


def test_chain_branches_spread_and_raw_names_vary(demo: dict[str, City]) -> None:
    city = demo["lakeside"]
    items = city.items.assign(l1=city.item_codes(1))
    branches = items[items["brand"].notna()].assign(
        chain=lambda f: f["brand"].map(VARIANT_TO_CHAIN)
    )
    districts = branches.groupby("chain")["l1"].nunique()
    assert districts["starbucks"] >= 3
    assert (districts >= 3).sum() >= 15
    raw = branches.groupby("chain")["brand"].agg(set)
    assert {"Starbucks", "Starbucks Coffee"} <= raw["starbucks"]
    assert {"Dunkin' Donuts", "Dunkin Donuts"} <= raw["dunkin"]
    assert {"McDonald's", "McDonalds"} <= raw["mcdonalds"]
    assert {"7-Eleven", "7 Eleven"} <= raw["seven-eleven"]
    names = branches["name"]
    assert all(n.startswith(b) for n, b in zip(names, branches["brand"], strict=True))
    suffixed = names[names != branches["brand"]]
    assert 0.2 < len(suffixed) / len(names) < 0.5
    assert suffixed.str.contains(" - ").any()
    # Across cities too: the same raw spellings turn up in each city.
    for other in demo.values():
        assert {"Starbucks", "Starbucks Coffee"} <= set(other.items["brand"].dropna())


def test_independent_names_recur_in_different_areas(demo: dict[str, City]) -> None:
    city = demo["lakeside"]
    items = city.items.assign(l1=city.item_codes(1), l2=city.item_codes(2))
    independent = items[items["brand"].isna()]
    areas = independent.groupby("name")[["l1", "l2"]].nunique()
    assert (areas["l2"] >= 2).sum() >= 30
    assert (areas["l1"] >= 2).sum() >= 10
    assert independent["name"].nunique() > 0.5 * len(independent)  # but mostly distinct
    street_names = (
        independent["name"]
        .str.extract(r"^(\w+ (?:Street|Avenue|Road|Lane|Boulevard|Way)) ")[0]
        .dropna()
    )
    assert street_names.nunique() >= 10  # named after local streets


# ------------------------------------------------------------------ visits


def test_visits_decay_with_distance_from_home(demo: dict[str, City]) -> None:
    for city in demo.values():
        visits = visit_frame(city)
        visited = np.hypot(visits["ix"] - visits["hx"], visits["iy"] - visits["hy"])
        rng = np.random.default_rng(1)
        xy = city.item_km()[rng.integers(0, len(city.items), len(visits))]
        random = np.hypot(xy[:, 0] - visits["hx"], xy[:, 1] - visits["hy"])
        assert np.median(visited) < 0.65 * np.median(random)


def test_consecutive_visits_in_an_outing_are_close_and_complementary(demo: dict[str, City]) -> None:
    for city in demo.values():
        visits = visit_frame(city)
        same = (visits["user_id"].to_numpy()[1:] == visits["user_id"].to_numpy()[:-1]) & (
            np.diff(visits["timestamp"].to_numpy()) < np.timedelta64(5, "h")
        )
        step = np.hypot(np.diff(visits["ix"]), np.diff(visits["iy"]))[same]
        assert same.mean() > 0.3  # many outings have several visits
        xy = city.item_km()
        rng = np.random.default_rng(2)
        a, b = rng.integers(0, len(xy), (2, 20000))
        random = np.hypot(*(xy[a] - xy[b]).T)
        assert np.median(step) < 0.2 * np.median(random)
        assert np.percentile(step, 75) < np.median(random) / 2
        prev = visits["category"].to_numpy()[:-1][same]
        nxt = visits["category"].to_numpy()[1:][same]
        after_meal = np.isin(nxt[np.isin(prev, list(RESTAURANTS))], list(NIGHTLIFE)).mean()
        assert after_meal > 1.6 * np.isin(visits["category"], list(NIGHTLIFE)).mean()


def test_revisits_popularity_and_activity_are_realistic(demo: dict[str, City]) -> None:
    for city in demo.values():
        checkins = city.checkins
        revisit = checkins.duplicated(["user_id", "item_id"]).mean()
        assert 0.30 <= revisit <= 0.60
        per_item = checkins["item_id"].value_counts().reindex(city.items["item_id"], fill_value=0)
        assert (per_item == 0).mean() < 0.15
        top = per_item.sort_values(ascending=False)
        assert top.iloc[: len(top) // 100].sum() > 0.06 * len(checkins)  # heavy tail
        assert top.iloc[0] > 10 * per_item.mean()
        stations = city.items.loc[city.items["category"] == "Train Station", "item_id"]
        assert per_item.loc[stations].median() > 2 * per_item.median()
        per_user = checkins["user_id"].value_counts()
        assert per_user.iloc[: len(per_user) // 10].sum() > 0.3 * len(checkins)
        assert per_user.max() > 10 * per_user.median()


def test_daily_and_weekly_rhythms(demo: dict[str, City]) -> None:
    ts = demo["harborview"].checkins["timestamp"]
    hours = ts.dt.hour.to_numpy()
    weekend = ts.dt.day_of_week.to_numpy() >= 5
    weekday_hours = np.bincount(hours[~weekend], minlength=24) / (~weekend).sum()
    weekend_hours = np.bincount(hours[weekend], minlength=24) / weekend.sum()
    night = weekday_hours[3:6].mean()
    assert weekday_hours[12:14].mean() > 5 * night  # lunchtime
    assert weekday_hours[18:21].mean() > 5 * night  # evening
    assert weekday_hours[7:10].sum() > 2 * weekend_hours[7:10].sum()  # no commute on weekends
    assert 0.5 * np.abs(weekday_hours - weekend_hours).sum() > 0.1
    per_day = ts.dt.floor("D").value_counts()
    weekend_day = per_day.index.day_of_week >= 5
    assert per_day[weekend_day].mean() > per_day[~weekend_day].mean()
